"""Which switch counters make each session's figures on this chassis (pure).

Cookies name the object behind every flow, so the flow statistics of brtap,
summed by cookie, give: the copies a session mirrored (its forward flow), the
hits of each filter rule (its flows, or its conjunctive match's ``conj_id``
flow, which counts for every feed it judges), and per source hook the copies
that no rule of any session took, or that a reject rule took (its two flows in
the verdict table). The copies a hook's Mirror handed over come from OVS's
``Mirror.statistics``.

A session's counters are a map of integer values, keyed with words separated
by blanks (names and iface-ids have none):

- ``packets``, ``bytes``: copies mirrored (bytes of the frames before any
  truncation);
- ``rule DIRECTION PRIORITY packets|bytes``: frames this rule decided
  (accept or reject) at this session's sources;
- ``source KEY packets|bytes``: copies its Mirrors handed to brtap
  (``Mirror.statistics`` tx), whichever session took them;
- ``source KEY unmatched`` and ``source KEY rejected``: of the copies that
  entered brtap from its hooks, those that no rule of any session took, and
  those that a reject rule took.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sdnagent import model
from sdnagent.compile import flows
from sdnagent.compile.compiler import PortPlan

Counts = tuple[int, int]  # packets, bytes


@dataclasses.dataclass(frozen=True)
class HookCookies:
    """What a hook's verdict flows are called: copies no rule took, copies a reject took."""

    unmatched: int
    rejected: int


@dataclasses.dataclass(frozen=True)
class CounterPlan:
    # session -> counter key -> the cookies whose flows' counts add up to it
    flows: Mapping[str, Mapping[str, tuple[int, ...]]]
    # session -> source key -> its hooks here (Mirror names)
    sources: Mapping[str, Mapping[str, tuple[str, ...]]]
    hooks: Mapping[str, HookCookies]

    @property
    def cookies(self) -> frozenset[int]:
        """Every cookie whose counts are needed."""
        out = {c for keys in self.flows.values() for cs in keys.values() for c in cs}
        for h in self.hooks.values():
            out.update((h.unmatched, h.rejected))
        return frozenset(out)


def plan_counters(intent: model.Intent, plan: PortPlan) -> CounterPlan:
    """The counters of every session with a hook on this chassis."""
    hooks = {h.name: h for h in plan.hooks}
    by_session: dict[str, dict[str, tuple[int, ...]]] = {}
    sources: dict[str, dict[str, tuple[str, ...]]] = {}
    for (sname, key), names in sorted(plan.source_hooks.items()):
        names = tuple(n for n in names if n in hooks)
        if not names:
            continue
        sess = intent.sessions[sname]
        mine = by_session.setdefault(sname, {})
        forward = flows.cookie("forward", sname)
        mine["packets"] = mine["bytes"] = (forward,)
        sources.setdefault(sname, {})[key] = names
        if sess.filter is None:
            continue
        for direction in {hooks[n].rules for n in names}:
            for rule in intent.filters[sess.filter].rules(direction):
                c = flows.cookie("rule", f"{sname}/{direction}/{rule.priority}")
                for what in ("packets", "bytes"):
                    mine[f"rule {direction} {rule.priority} {what}"] = (c,)
    hook_cookies = {h: HookCookies(flows.cookie("verdict", f"{h}/unmatched"),
                                   flows.cookie("verdict", f"{h}/rejected"))
                    for names in sources.values() for ns in names.values() for h in ns}
    return CounterPlan(by_session, sources, hook_cookies)


def counters(cp: CounterPlan, by_cookie: Mapping[int, Counts],
             mirrors: Mapping[str, Counts]) -> dict[str, dict[str, int]]:
    """Each session's counters from the switch's figures: flow counts summed by cookie,
    and each Mirror's (by name) tx counts."""
    def total(cookies: tuple[int, ...], i: int) -> int:
        return sum(by_cookie.get(c, (0, 0))[i] for c in cookies)

    out: dict[str, dict[str, int]] = {}
    for sname, keys in cp.flows.items():
        mine = out[sname] = {k: total(cs, 1 if k.endswith("bytes") else 0)
                             for k, cs in keys.items()}
        for key, names in cp.sources.get(sname, {}).items():
            mine[f"source {key} packets"] = sum(mirrors.get(n, (0, 0))[0] for n in names)
            mine[f"source {key} bytes"] = sum(mirrors.get(n, (0, 0))[1] for n in names)
            mine[f"source {key} unmatched"] = total(tuple(cp.hooks[n].unmatched for n in names),
                                                    0)
            mine[f"source {key} rejected"] = total(tuple(cp.hooks[n].rejected for n in names), 0)
    return out
