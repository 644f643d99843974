"""Which switch counters make each session's figures on this chassis (pure).

Cookies name the object behind every flow, so the flow statistics of brtap,
summed by cookie, give: the copies a session mirrored (its forward flow), the
hits of each filter rule (its flows, or its conjunctive match's ``conj_id``
flow, which counts for every feed it judges), and per source feed (a port and
direction, or a bridge) the copies brtap took in for it (its entry flow in
classify), of which those that no rule of any session took, or that a reject
rule took (its two flows in the verdict table).

A session's counters are a map of integer values, keyed with words separated
by blanks (names and iface-ids have none):

- ``packets``, ``bytes``: copies mirrored (bytes of the frames before any
  truncation);
- ``rule DIRECTION PRIORITY packets|bytes``: frames this rule decided
  (accept or reject) at this session's sources;
- ``source KEY packets|bytes``: copies brtap took in from it (its feeds' entry
  flows), whichever session took them;
- ``source KEY unmatched`` and ``source KEY rejected``: of the copies that
  entered brtap from its hooks, those that no rule of any session took, and
  those that a reject rule took;
- ``member IP packets|bytes``: for a collector group, the copies sent to each
  enabled member (its member flow);
- ``dropped``: for a capped session, the copies its caps dropped (its meters' drop
  bands), and ``capped``: 1 while they are dropping copies (set by the agent, which
  compares readings).  OVS credits a datapath flow's packets to every OpenFlow flow
  that made it, the meter dropping some or not: a capped session's ``packets`` and
  ``bytes`` are its forward flows' less what its meters dropped, and its members'
  counters (a group target) include the copies the caps dropped;
- ``unsampled``: for a sampled session, the copies of connections it did not sample.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from sdnagent import model
from sdnagent.compile import compiler, flows, hooks
from sdnagent.compile.compiler import PortPlan

Counts = tuple[int, int]  # packets, bytes


@dataclasses.dataclass(frozen=True)
class FeedCookies:
    """What a feed's flows are called: its entry (copies brtap took in for it), its
    verdicts (copies no rule took, copies a reject took)."""

    entry: int
    unmatched: int
    rejected: int


@dataclasses.dataclass(frozen=True)
class CounterPlan:
    # session -> counter key -> the cookies whose flows' counts add up to it
    flows: Mapping[str, Mapping[str, tuple[int, ...]]]
    # session -> source key -> its feeds here
    sources: Mapping[str, Mapping[str, tuple[str, ...]]]
    feeds: Mapping[str, FeedCookies]
    # session -> the ids of its meters here (its caps)
    meters: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)


def plan_counters(intent: model.Intent, plan: PortPlan) -> CounterPlan:
    """The counters of every session with a feed on this chassis."""
    by_session: dict[str, dict[str, tuple[int, ...]]] = {}
    sources: dict[str, dict[str, tuple[str, ...]]] = {}
    meters: dict[str, tuple[int, ...]] = {}
    for (sname, key), names in sorted(plan.source_feeds.items()):
        if not names:
            continue
        sess = intent.sessions[sname]
        mine = by_session.setdefault(sname, {})
        forward = flows.cookie("forward", sname)
        mine["packets"] = mine["bytes"] = (forward,)
        sources.setdefault(sname, {})[key] = names
        if sess.sample:
            mine["unsampled"] = (flows.cookie("unsampled", sname),)
        caps = compiler.meter_ids(sess)
        ids = tuple(i for i, on in zip(caps, (sess.max_pps, sess.max_kbps)) if on)
        if ids:
            meters[sname] = ids
        d = plan.deliveries.get(sname)
        for leg in d.legs if d is not None and d.balanced else ():
            mine[f"member {leg.member} packets"] = mine[f"member {leg.member} bytes"] = (
                flows.cookie("member", f"{sname}/{leg.member}"),)
        if sess.filter is None:
            continue
        for direction in {plan.feeds[n].rules for n in names}:
            for rule in intent.filters[sess.filter].rules(direction):
                c = flows.cookie("rule", f"{sname}/{direction}/{rule.priority}")
                for what in ("packets", "bytes"):
                    mine[f"rule {direction} {rule.priority} {what}"] = (c,)
    feed_cookies = {n: FeedCookies(flows.cookie("source", n),
                                   flows.cookie("verdict", hooks.verdict_obj(n, "unmatched")),
                                   flows.cookie("verdict", hooks.verdict_obj(n, "rejected")))
                    for names in sources.values() for ns in names.values() for n in ns}
    return CounterPlan(by_session, sources, feed_cookies, meters)


def counters(cp: CounterPlan, by_cookie: Mapping[int, Counts],
             drops: Mapping[int, Counts] = MappingProxyType({}),
             carried: Mapping[str, Counts] = MappingProxyType({})
             ) -> dict[str, dict[str, int]]:
    """Each session's counters from the switch's flow counts, summed by cookie, and what
    its meters dropped (``drops``: packets and bytes, by meter id; ``carried``: by session,
    what its meters dropped before they were last changed or deleted)."""
    def total(cookies: Iterable[int], i: int) -> int:
        return sum(by_cookie.get(c, (0, 0))[i] for c in cookies)

    out: dict[str, dict[str, int]] = {}
    for sname, keys in cp.flows.items():
        mine = out[sname] = {k: total(cs, 1 if k.endswith("bytes") else 0)
                             for k, cs in keys.items()}
        if sname in cp.meters or sname in carried:
            lost = [carried.get(sname, (0, 0)),
                    *(drops.get(i, (0, 0)) for i in cp.meters.get(sname, ()))]
            mine["dropped"] = sum(p for p, _ in lost)
            mine["packets"] = max(0, mine["packets"] - mine["dropped"])
            mine["bytes"] = max(0, mine["bytes"] - sum(b for _, b in lost))
        for key, names in cp.sources.get(sname, {}).items():
            feeds = [cp.feeds[n] for n in names]
            mine[f"source {key} packets"] = total((f.entry for f in feeds), 0)
            mine[f"source {key} bytes"] = total((f.entry for f in feeds), 1)
            mine[f"source {key} unmatched"] = total((f.unmatched for f in feeds), 0)
            mine[f"source {key} rejected"] = total((f.rejected for f in feeds), 0)
    return out
