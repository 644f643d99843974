"""Racing writers cannot break a rule the schema cannot express.

The deterministic tests make a second writer commit between the moment a
command reads tapdb and the moment it commits; the command must be retried on
the fresh data and refused.  The process test lets real tapctl processes race.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from sdnagent import model
from sdnagent.tapdb import client, ops
from tests.functional.test_tapctl import cli_env, configure_example


@pytest.fixture
def rival(tapdb):
    conn = ops.connect(tapdb.remote, 10)
    yield conn
    conn.close()


def interleave(monkeypatch, name: str, competing_write):
    """Run ``competing_write`` once, inside the first evaluation of ``model.<name>``."""
    real = getattr(model, name)
    calls = []  # our command's evaluations, not the rival's
    rival_running = []

    def wrapper(*args, **kwargs):
        if not rival_running:
            calls.append(1)
            if len(calls) == 1:
                rival_running.append(1)
                try:
                    competing_write()
                finally:
                    rival_running.clear()
        return real(*args, **kwargs)
    monkeypatch.setattr(model, name, wrapper)
    return calls


def test_fourth_session_on_a_port_by_racing_writers(tapdb, api, rival, monkeypatch):
    configure_example(tapdb)
    for name, prio in (("session-03", "3"), ("session-04", "4")):
        api.session_add(name, target="target-02", priority=prio)
    calls = interleave(monkeypatch, "new_source",
                       lambda: rival.source_add("session-03", port="vm-230"))
    with pytest.raises(model.IntentError) as info:
        api.source_add("session-04", port="vm-230")
    assert len(calls) == 2  # the first attempt was judged on stale data and retried
    assert str(info.value) == ("port: iface vm-230 is already a source of 3 sessions "
                               "(session-01, session-02, session-03); allowed at most 3")
    assert api.snapshot().intent.sessions_of_port("vm-230") == [
        "session-01", "session-02", "session-03"]


def test_source_and_target_on_one_port_by_racing_writers(tapdb, api, rival, monkeypatch):
    configure_example(tapdb)
    calls = interleave(monkeypatch, "new_target",
                       lambda: rival.source_add("session-01", port="vm-77"))
    with pytest.raises(model.IntentError) as info:
        api.target_add("target-03", port="vm-77")
    assert len(calls) == 2
    assert str(info.value).startswith("port: iface vm-77 is a source of session 'session-01'")
    assert "target-03" not in api.snapshot().intent.targets


def test_rule_priority_by_racing_writers(tapdb, api, rival, monkeypatch):
    configure_example(tapdb)
    calls = interleave(monkeypatch, "new_rule",
                       lambda: rival.rule_add("filter-01", "outbound", priority="5",
                                              action="accept"))
    with pytest.raises(model.IntentError) as info:
        api.rule_add("filter-01", "outbound", priority="5", action="reject")
    assert len(calls) == 2
    assert "already has an outbound rule with priority 5" in str(info.value)
    assert api.snapshot().intent.filter("filter-01").outbound == (model.Rule(5, "accept"),)


def test_racing_processes(tapdb):
    """Six tapctl processes add vm-9 to six sessions at once: exactly three win."""
    configure_example(tapdb)
    env = cli_env(tapdb)
    for i in range(3, 9):
        subprocess.run(["tapctl", "session-add", f"s{i}", "--target", "target-02",
                        "--priority", str(i)], env=env, check=True, capture_output=True)
    procs = [subprocess.Popen(["tapctl", "source-add", f"s{i}", "--port", "vm-9"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3, 9)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(rc for rc, _ in results) == [0, 0, 0, 1, 1, 1], results
    for rc, err in results:
        if rc:
            assert "is already a source of 3 sessions" in err and err.count("\n") == 1, err
    # ... and priorities: five processes want priority 20, one gets it
    procs = [subprocess.Popen(["tapctl", "session-add", f"p{i}", "--target", "target-02",
                               "--priority", "20"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for i in range(5)]
    assert sorted(p.wait(timeout=60) for p in procs) == [0, 1, 1, 1, 1]
    api = ops.connect(tapdb.remote, 10)
    try:
        intent = api.snapshot().intent
    finally:
        api.close()
    assert len(intent.sessions_of_port("vm-9")) == 3
    assert len([s for s in intent.sessions.values() if s.priority == 20]) == 1


def test_chassis_del_refuses_a_chassis_that_beats_again_meanwhile(tapdb, api):
    """Between chassis-del's read (silent) and its delete, the agent beats again: nothing
    is deleted, or the agent, alive after all, would register the chassis again."""
    agent = client.connect(tapdb.remote, 10, chassis="host-z")
    try:
        agent.register_chassis("host-z", "10.255.0.26", "gre")
        agent.heartbeat("host-z", 1000, 10)  # silent long ago
        reads = api.conn.transact

        def beat_before_the_delete(*ops_: dict) -> list:
            if any(op["op"] == "delete" for op in ops_):
                agent.heartbeat("host-z", int(time.time()), 10)
            return reads(*ops_)
        api.conn.transact = beat_before_the_delete
        with pytest.raises(model.IntentError) as info:
            api.chassis_del("host-z", time.time())
        assert str(info.value) == ("chassis: chassis host-z sent a heartbeat just now; stop its "
                                   "agent before deleting it")
        api.conn.transact = reads
        assert [c[0] for c in api.everything().chassis] == ["host-z"]
        # silent again, and nothing meanwhile: deleted
        agent.heartbeat("host-z", 1000, 10)
        api.chassis_del("host-z", time.time())
        assert api.everything().chassis == []
    finally:
        agent.close()
