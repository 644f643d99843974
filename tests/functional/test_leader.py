"""Leader changes with agents behind relays: the cluster's leader killed with SIGKILL, a
change committed through the new leader, the agent (on the relays) applies it; the killed
member, started again as its unit would, rejoins with no operator action."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from sdnagent import sandbox
from sdnagent.tapdb import ops
from tests.conftest import require_ovs
from tests.functional.mirrorlab import wait_until
from tests.functional.tier import Tier

BIN_PATH = f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"
APPLY_WITHIN = 3.0  # seconds from the commit to the agent's report that the switch has it


def commit(tier: Tier, change) -> tuple[int, float]:
    """Run ``change(api)`` through whichever member leads, retrying until it commits;
    the generation committed and when."""
    deadline = time.monotonic() + 30
    while True:
        try:
            api = tier.operator(timeout=2)
            try:
                change(api)
                return api.committed_generation or 0, time.monotonic()
            finally:
                api.close()
        except ops.TapdbError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def applied(tier: Tier, name: str) -> int:
    api = tier.operator()
    try:
        return api.everything().applied.get(name, 0)
    finally:
        api.close()


def beat_age(tier: Tier, name: str) -> float:
    """Seconds since ``name``'s last heartbeat, as tapdb holds it."""
    api = tier.operator()
    try:
        beat = api.everything().beats.get(name)
        return time.time() - beat.heartbeat if beat is not None else float("inf")
    finally:
        api.close()


def test_agents_behind_relays_ride_out_a_killed_leader():
    require_ovs()
    directory = tempfile.mkdtemp(prefix="sdn-leader-")
    tier = Tier(f"{directory}/tier")
    lab = sandbox.Lab(hosts=("host-a",), directory=f"{directory}/lab", tapdb=False)
    try:
        tier.start()
        lab.start()
        host = lab["host-a"]
        host.add_vm_port("vm230", "vm-230", mac="52:54:00:00:02:30")
        host.start_agent(tier.relays, heartbeat_interval="1", **tier.agent_options("host-a"))

        def example(api: ops.IntentDb) -> None:
            api.target_add("target-02", vxlan=sandbox.COLLECTOR_IP, enabled=True)
            api.session_add("session-01", target="target-02", priority="1", enabled=True)
            api.session_add("session-02", target="target-02", priority="2", enabled=True)
            api.source_add("session-01", port="vm-230", direction="both")
            api.source_add("session-02", port="vm-230", direction="both")
        generation, _ = commit(tier, example)
        wait_until(lambda: applied(tier, "host-a") >= generation, 30, "host-a to apply")

        def has_session_02() -> bool:
            flows = host.ofctl("dump-flows", "brtap", "--no-stats")
            return "0x2->reg0" in flows

        assert has_session_02()
        leader = tier.leader()
        os.kill(tier.members[leader].pid(), signal.SIGKILL)
        killed = time.monotonic()
        generation, committed = commit(
            tier, lambda api: api.set_enabled("session", "session-02", False))
        wait_until(lambda: applied(tier, "host-a") >= generation, APPLY_WITHIN,
                   "host-a to apply the change committed after the kill")
        done = time.monotonic()
        assert not has_session_02()
        print(f"leader killed; committed at +{committed - killed:.2f} s, applied by host-a "
              f"at +{done - killed:.2f} s")

        # started again as its unit would: it rejoins by itself, and takes part
        tier.start_member(leader)
        wait_until(lambda: "Status: cluster member" in tier.cluster_status(leader)
                   and tier.members[leader].is_connected(timeout=1), 30, "the member to rejoin")
        generation, _ = commit(tier, lambda api: api.set_enabled("session", "session-02", True))
        wait_until(lambda: applied(tier, "host-a") >= generation, 30, "host-a to apply")
        assert has_session_02()

        # the member under the agent's relay killed (the leader or not): the relay copies
        # from another, and the agent, which stays on it, applies the next change
        under = tier.relay_in_use()
        os.kill(tier.members[under].pid(), signal.SIGKILL)
        generation, committed = commit(
            tier, lambda api: api.set_enabled("session", "session-02", False))
        wait_until(lambda: applied(tier, "host-a") >= generation, APPLY_WITHIN,
                   "host-a to apply the change committed after its relay's member died")
        assert not has_session_02()
        tier.start_member(under)
        generation, _ = commit(tier, lambda api: api.set_enabled("session", "session-02", True))
        wait_until(lambda: applied(tier, "host-a") >= generation, 30, "host-a to apply")

        # an agent stopped while tapctl --wait waits for it is named, not dropped; alive
        # when the wait begins (its heartbeats may lag after its relay's member came back)
        creds = tier.operator_tls
        wait_until(lambda: beat_age(tier, "host-a") < 1.0, 15, "a fresh heartbeat from host-a")
        os.kill(host._agent.pid, signal.SIGSTOP)
        try:
            late = subprocess.run(
                ["tapctl", "--db", tier.operators, "--private-key", creds.private_key,
                 "--certificate", creds.certificate, "--ca-cert", creds.ca_cert, "--wait",
                 "--timeout", "30", "session-disable", "session-02"],
                capture_output=True, text=True, env=dict(os.environ, PATH=BIN_PATH))
        finally:
            os.kill(host._agent.pid, signal.SIGCONT)
        assert late.returncode == 3, late.stderr
        assert "but host-a went silent during the wait before applying it" in late.stderr
    finally:
        lab.stop()
        tier.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_tapctl_rides_out_a_killed_leader(capsys):
    """A loop of writes, the leader killed with SIGKILL in the middle of it: every command
    succeeds within its --timeout, each change is made exactly once (one generation
    each, the keys allocated in order)."""
    from sdnagent.cli import tapctl
    require_ovs()
    directory = tempfile.mkdtemp(prefix="sdn-leader-")
    tier = Tier(f"{directory}/tier")
    creds = ["--private-key", tier.operator_tls.private_key, "--certificate",
             tier.operator_tls.certificate, "--ca-cert", tier.operator_tls.ca_cert]
    try:
        tier.start()

        timeout = 20.0

        def run(*args: str) -> tuple[int, str]:
            capsys.readouterr()
            began = time.monotonic()
            rc = tapctl.main(["--db", tier.operators, "--timeout", f"{timeout:g}", *creds,
                              *args])
            took = time.monotonic() - began
            err = capsys.readouterr().err
            return rc, err + (f"took {took:.1f} s, more than --timeout" if took > timeout
                              else "")
        leader = tier.leader()
        pid = tier.members[leader].pid()
        killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        killer.start()
        started = time.monotonic()
        for i in range(1, 121):
            rc, err = run("target-add", f"target-{i:03}", "--vxlan", f"10.0.{i}.1")
            assert (rc, err) == (0, ""), f"target-{i:03}: {err}"
        killer.join()
        assert time.monotonic() - started > 0.5, "the loop ended before the kill"
        api = tier.operator()
        try:
            targets = api.snapshot().intent.targets
            [res] = api.conn.transact(ops.select("Tap_Global", columns=["generation"]))
        finally:
            api.close()
        assert res["rows"][0]["generation"] == 120
        # each once, with the keys allocated in order: none made twice, none lost
        assert sorted((t.name, t.tunnel_key) for t in targets.values()) == [
            (f"target-{i:03}", i) for i in range(1, 121)]
    finally:
        tier.stop()
        shutil.rmtree(directory, ignore_errors=True)
