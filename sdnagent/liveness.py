"""Which chassis are silent, and what that makes of the statuses they wrote (pure).

Every agent writes its heartbeat into ``Chassis_Private`` (which agents
monitor only for their own row, so this costs nothing at 1,000 chassis); only
readers such as tapctl look at all of them.  A chassis that missed 3
heartbeats is silent: a status it wrote may no longer be true, so it is shown
as ``stale``, never ``active``; a source whose target lives on a silent
chassis is stale too, since its copies go to a host that may be gone.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Optional

from sdnagent import model

MISSED = 3  # heartbeats missed before a chassis counts as silent
# how far ahead of the reader's clock a heartbeat may be and still count: clocks of
# NTP-synchronised hosts differ by far less; a chassis further ahead is not believed
# (its heartbeat would otherwise keep it "alive" long after it stopped)
AHEAD = 10


@dataclasses.dataclass(frozen=True)
class Liveness:
    """When a chassis last said it was alive, and how often it says so."""

    heartbeat: int  # Unix seconds
    interval: int  # seconds


def silence(name: str, beats: Mapping[str, Liveness], now: float) -> Optional[str]:
    """Why ``name`` counts as silent, or None while it beats.  A heartbeat from the
    future is the chassis's word against the reader's clock: it does not count."""
    beat = beats.get(name)
    if beat is None:
        return f"chassis {name} has no heartbeat recorded"
    age = now - beat.heartbeat
    if age < -AHEAD:
        return f"chassis {name} clock ahead by {int(-age)} s"
    if age > MISSED * beat.interval:
        return f"chassis {name} silent for {int(age)} s"
    return None


def ahead(name: str, beats: Mapping[str, Liveness], now: float) -> bool:
    """Whether ``name``'s heartbeat is further in the future than clocks differ."""
    beat = beats.get(name)
    return beat is not None and beat.heartbeat - now > AHEAD


def lagging(generation: int, applied: Mapping[str, int], beats: Mapping[str, Liveness],
            now: float) -> dict[str, int]:
    """The live chassis that have not applied ``generation`` yet, with what they have."""
    return {name: applied.get(name, 0) for name in sorted(beats)
            if silence(name, beats, now) is None and applied.get(name, 0) < generation}


def behind(generation: int, waited: Iterable[str], applied: Mapping[str, int],
           beats: Mapping[str, Liveness], now: float) -> dict[str, tuple[int, Optional[str]]]:
    """Of the chassis a ``--wait`` waits for (fixed when it began), those that have not
    applied ``generation``: the generation each has, and why it no longer counts (silent,
    clock ahead, deleted), None while it may still apply.  Nothing leaves ``waited``: a
    chassis that falls silent is named, never taken for one that had nothing to do."""
    out: dict[str, tuple[int, Optional[str]]] = {}
    for name in sorted(waited):
        at = applied.get(name, 0)
        if at < generation:
            out[name] = (at, f"chassis {name} was deleted" if name not in beats
                         else silence(name, beats, now))
    return out


def _stale(status: tuple[tuple[str, str], ...], why: str) -> tuple[tuple[str, str], ...]:
    st = dict(status)
    out = {"state": "stale", "reason": why, "was": st.get("state", "pending")}
    if "chassis" in st:
        out["chassis"] = st["chassis"]
    return tuple(sorted(out.items()))


def target_chassis(target: model.Target, bindings: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The chassis a target lives on, as far as tapdb knows (its kind says)."""
    return target.kind.hosts(target, bindings)


def apply(intent: model.Intent, bindings: Mapping[str, tuple[str, ...]],
          beats: Mapping[str, Liveness], now: float) -> model.Intent:
    """``intent`` with the statuses that a silence makes stale rewritten as such."""
    def judged(status: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        writer = dict(status).get("chassis")
        why = silence(writer, beats, now) if writer else None
        return _stale(status, why) if why else status

    targets = {t.name: dataclasses.replace(t, status=judged(t.status))
               for t in intent.targets.values()}
    gone: dict[str, str] = {}  # target -> why its copies may go nowhere
    for t in intent.targets.values():
        hosts = target_chassis(t, bindings)
        whys = [silence(c, beats, now) for c in hosts]
        if hosts and all(whys):
            gone[t.name] = f"target {t.name} is on {whys[0]}"
    sessions = []
    for s in intent.sessions.values():
        sources = []
        for src in s.sources:
            status = judged(src.status)
            if dict(status).get("state") == "active" and s.target in gone:
                status = _stale(status, gone[s.target])
            sources.append(dataclasses.replace(src, status=status))
        sessions.append(dataclasses.replace(s, sources=tuple(sources)))
    return model.Intent.of(targets.values(), intent.filters.values(), sessions)
