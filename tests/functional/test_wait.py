"""`tapctl --wait`: a change returns once every live chassis applied it, or names who did not."""
from __future__ import annotations

import os
import signal
import subprocess

from sdnagent.tapdb import ops
from tests.functional.mirrorlab import wait_until
from tests.functional.test_agent import mlab, two_host_example  # noqa: F401 (fixture)


def tapctl(mlab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tapctl", *args], env=mlab.env, capture_output=True, text=True)


def test_a_change_is_on_the_switch_when_wait_returns(mlab):
    two_host_example(mlab)
    done = tapctl(mlab, "--wait", "rule-add", "filter-01", "inbound", "--priority", "2",
                  "--action", "accept", "--protocol", "udp", "--dst-port", "5000")
    assert done.returncode == 0, done.stderr
    # no waiting here: the agents said so only after the switch confirmed the bundle
    assert any("tp_dst=5000" in f for f in mlab.brtap_flows("host-a"))
    done = tapctl(mlab, "--wait", "session-disable", "session-02")
    assert done.returncode == 0, done.stderr
    assert not any("0x2->reg0" in f for f in mlab.brtap_flows("host-a"))
    # one connection waiting for change after change (as a script or a benchmark would)
    api = ops.connect(mlab.lab.tapdb.remote, 10)
    try:
        for enabled in (True, False, True):
            api.set_enabled("session", "session-02", enabled)
            assert api.wait_applied(api.committed_generation or 0, 10) == {}
            assert any("0x2->reg0" in f for f in mlab.brtap_flows("host-a")) == enabled
    finally:
        api.close()


def test_wait_names_a_live_chassis_that_did_not_apply_in_time(mlab):
    two_host_example(mlab)
    agent = mlab["host-b"]._agent
    os.kill(agent.pid, signal.SIGSTOP)  # alive for tapdb a while longer, but doing nothing
    try:
        late = tapctl(mlab, "--wait", "--timeout", "2", "session-disable", "session-01")
        assert late.returncode == 3, (late.returncode, late.stderr)
        assert "but not applied within 2 s by host-b (at generation" in late.stderr
        assert "host-a" not in late.stderr
        # the change itself is committed, and applied where the agent runs
        wait_until(lambda: not any("0x1->reg0" in f for f in mlab.brtap_flows("host-a")), 5,
                   "host-a to apply it")
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    done = tapctl(mlab, "--wait", "--timeout", "20", "session-enable", "session-01")
    assert done.returncode == 0, done.stderr


def test_wait_names_a_chassis_that_falls_silent_during_the_wait(mlab):
    """Alive when the wait begins, silent before it applies: named, exit 3, however long
    the timeout (it is never dropped from the wait as if it had not been there)."""
    two_host_example(mlab, heartbeat_interval="1")
    agent = mlab["host-b"]._agent
    os.kill(agent.pid, signal.SIGSTOP)  # its last heartbeat is under a second old
    try:
        late = tapctl(mlab, "--wait", "--timeout", "30", "session-disable", "session-01")
        assert late.returncode == 3, (late.returncode, late.stderr)
        assert "but host-b went silent during the wait before applying it (chassis host-b " \
               "silent for" in late.stderr, late.stderr
        assert "host-a" not in late.stderr
    finally:
        os.kill(agent.pid, signal.SIGCONT)
