"""Silent chassis and the statuses they make stale."""
from __future__ import annotations

import dataclasses

from sdnagent import liveness, model
from sdnagent.liveness import Liveness
from tests.unit.test_model import example

ACTIVE_A = (("chassis", "host-a"), ("state", "active"))
ACTIVE_B = (("chassis", "host-b"), ("state", "active"))


def written(intent: model.Intent) -> model.Intent:
    """target-01 on host-b says active; vm-230 (host-a) of both sessions says active."""
    targets = [dataclasses.replace(t, status=ACTIVE_B if t.name == "target-01" else ())
               for t in intent.targets.values()]
    sessions = [dataclasses.replace(s, sources=(model.Source("port", "in", iface_id="vm-230",
                                                             status=ACTIVE_A),))
                for s in intent.sessions.values()]
    return model.Intent.of(targets, intent.filters.values(), sessions)


def test_three_missed_heartbeats_make_a_chassis_silent():
    beats = {"host-b": Liveness(1000, 10)}
    assert liveness.silence("host-b", beats, 1030) is None
    assert liveness.silence("host-b", beats, 1031) == "chassis host-b silent for 31 s"
    assert liveness.silence("host-c", beats, 1000) == "chassis host-c has no heartbeat recorded"


def test_statuses_of_a_silent_chassis_are_stale_never_active():
    intent = written(example())
    bindings = {"vm-164": ("host-b",), "vm-230": ("host-a",)}
    beats = {"host-a": Liveness(1045, 10), "host-b": Liveness(1000, 10)}
    seen = liveness.apply(intent, bindings, beats, 1045)
    assert dict(seen.target("target-01").status) == {
        "state": "stale", "reason": "chassis host-b silent for 45 s", "was": "active",
        "chassis": "host-b"}
    # host-a is alive, but session-01's copies go to a target on a silent chassis
    assert dict(seen.session("session-01").sources[0].status) == {
        "state": "stale", "reason": "target target-01 is on chassis host-b silent for 45 s",
        "was": "active", "chassis": "host-a"}
    # session-02 goes to a vxlan target: host-a's word stands
    assert seen.session("session-02").sources[0].status == ACTIVE_A
    # all alive: nothing changes
    beats["host-b"] = Liveness(1044, 10)
    assert liveness.apply(intent, bindings, beats, 1045) == intent


def test_lagging_names_only_live_chassis_behind():
    beats = {"a": liveness.Liveness(1000, 10), "b": liveness.Liveness(1000, 10),
             "gone": liveness.Liveness(900, 10)}
    applied = {"a": 7, "b": 5, "gone": 1}
    assert liveness.lagging(7, applied, beats, now=1005) == {"b": 5}
    assert liveness.lagging(5, applied, beats, now=1005) == {}
    assert liveness.lagging(8, {}, beats, now=1005) == {"a": 0, "b": 0}


def test_a_heartbeat_from_the_future_is_not_believed():
    """A chassis whose clock (or word) is ahead does not count as alive: not for its
    statuses, not as a chassis a --wait waits for, not against chassis-del."""
    now = 1_000_000
    beats = {"host-b": Liveness(now + 100_000_000, 10), "host-a": Liveness(now + 5, 10)}
    assert liveness.silence("host-b", beats, now) == "chassis host-b clock ahead by 100000000 s"
    assert liveness.ahead("host-b", beats, now) and not liveness.ahead("host-a", beats, now)
    # a few seconds ahead is clocks differing, not a lie
    assert liveness.silence("host-a", beats, now) is None
    assert liveness.silence("host-a", {"host-a": Liveness(now + liveness.AHEAD + 1, 10)},
                            now) == f"chassis host-a clock ahead by {liveness.AHEAD + 1} s"
    assert liveness.lagging(7, {"host-a": 6, "host-b": 6}, beats, now) == {"host-a": 6}
    intent = written(example())
    seen = liveness.apply(intent, {"vm-164": ("host-b",), "vm-230": ("host-a",)}, beats, now)
    assert dict(seen.target("target-01").status)["state"] == "stale"


def test_a_wait_names_who_fell_silent_and_never_drops_it():
    """The chassis a --wait waits for are fixed when it begins; one that falls silent
    (or beats from the future, or is deleted) stays, with why; one that applied leaves."""
    waited = {"a", "b", "c", "d"}
    beats = {"a": Liveness(1000, 1), "b": Liveness(1000, 1), "c": Liveness(1000, 1)}
    applied = {"a": 7, "b": 6, "c": 6, "d": 6}
    assert liveness.behind(7, waited, applied, beats, now=1002) == {
        "b": (6, None), "c": (6, None), "d": (6, "chassis d was deleted")}
    beats["b"] = Liveness(1000 + 7 + liveness.AHEAD + 1 + 100, 1)
    assert liveness.behind(7, waited, applied, beats, now=1007) == {
        "b": (6, f"chassis b clock ahead by {liveness.AHEAD + 101} s"),
        "c": (6, "chassis c silent for 7 s"), "d": (6, "chassis d was deleted")}
    # a live chassis that was not waited for (it came later) is not waited for now
    beats["e"] = Liveness(1007, 1)
    assert "e" not in liveness.behind(7, waited, applied, beats, now=1007)
    assert liveness.behind(6, waited, applied, beats, now=1007) == {}
