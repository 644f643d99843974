"""How long a change takes to reach the switch, with a large intent loaded.

Starts a lab host running sdnagent, loads the intent of the install benchmark
(N source ports, 3 sessions each, 9 rules per filter) into tapdb in one
transaction, waits until the agent has installed it, then makes changes one
at a time as tapctl does (``sdnagent.tapdb.ops``), alternately adding a rule to
one session's filter and deleting it again (sessions taken in turn).  Each
change is timed from its commit to the first flow change that the switch
reports (``ovs-ofctl monitor``, OpenFlow flow monitoring) and to the moment
``--wait`` returns (the agent reported the generation applied); the flow
changes it caused are counted.  The baseline, same switch and same monitor:
``ovs-ofctl add-flow`` / ``del-flows`` of one flow, from the command's start.
"""
from __future__ import annotations

import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (Row, build, finish, parser, percentile, require_ovs,  # noqa: E402
                      transact, transaction, vm_mac, wait_settled)

from sdnagent import sandbox  # noqa: E402
from sdnagent.compile import compiler  # noqa: E402
from sdnagent.tapdb import ops  # noqa: E402


def watch(host: sandbox.Host, bridge: str, events: "queue.Queue[float]") -> subprocess.Popen:
    """Every flow change on ``bridge``, stamped when it is read."""
    proc = subprocess.Popen(["ovs-ofctl", "-O", "OpenFlow13", "monitor", bridge,
                             "watch:!initial"],
                            env=host.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "event=" in line:
                events.put(time.monotonic())
    threading.Thread(target=read, daemon=True).start()
    return proc


def _rest(events: "queue.Queue[float]", quiet: float = 0.2) -> int:
    """How many more flow changes arrive before ``quiet`` seconds without one."""
    count = 0
    while True:
        try:
            events.get(timeout=quiet)
            count += 1
        except queue.Empty:
            return count


def _groups(ports: int) -> dict:
    """The flows the agent compiles for the bench host, by group (ofports invented)."""
    intent, inv = build(ports, rules_per_filter=9)
    plan = compiler.plan_ports(intent, inv)
    ofports = {h.patch_tap: 10 + i for i, h in enumerate(plan.hooks)}
    ofports.update({tp.name: 1 + i for i, tp in enumerate(plan.tunnels)})
    return compiler.plan_flow_groups(intent, plan, ofports, "gre")


def _ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.1f} ms, "
            f"p99 {percentile(values, 99) * 1000:.1f} ms")


def run(ports: int, changes: int) -> list[Row]:
    intent, _ = build(ports, rules_per_filter=9)
    lab = sandbox.Lab(hosts=("host-a",))
    monitors: list[subprocess.Popen] = []
    try:
        lab.start()
        assert lab.tapdb is not None
        host = lab["host-a"]
        for i in range(ports):
            host.add_vm_port(f"p{i}", f"vm-{i}", mac=vm_mac(i))
        transact(lab.tapdb.remote, transaction(intent))
        host.start_agent(lab.tapdb.remote, resync_interval="600", heartbeat_interval="10")
        flows = wait_settled(host)
        events: "queue.Queue[float]" = queue.Queue()
        base_events: "queue.Queue[float]" = queue.Queue()
        host.add_bridge("brbase", "fail_mode=secure", "protocols=OpenFlow13")
        monitors = [watch(host, "brtap", events), watch(host, "brbase", base_events)]
        time.sleep(1)
        api = ops.connect(lab.tapdb.remote, 10)
        to_switch, to_applied, mods = [], [], []
        sessions = sorted(intent.sessions.values(), key=lambda s: s.priority)
        try:
            for i in range(changes):
                sess = sessions[(i // 2) % len(sessions)]
                if i % 2 == 0:
                    api.rule_add(sess.filter, "inbound", priority="100", action="accept",
                                 protocol="tcp", dst_port="7000")
                else:
                    api.rule_del(sess.filter, "inbound", "100")
                committed = time.monotonic()
                late = api.wait_applied(api.committed_generation or 0, 10)
                assert not late, f"change {i}: not applied within 10 s: {late}"
                to_applied.append(time.monotonic() - committed)
                to_switch.append(events.get(timeout=10) - committed)
                mods.append(1 + _rest(events))
            # a whole session off and on again: exactly its own flows change
            own, toggled = [], []
            groups = _groups(ports)
            for sess in sessions[:10]:
                own.append(sum(len(g) for name, g in groups.items()
                               if name == f"session {sess.name}"
                               or name == f"forward {sess.name}"))
                for enabled in (False, True):
                    api.set_enabled("session", sess.name, enabled)
                    assert not api.wait_applied(api.committed_generation or 0, 10)
                    events.get(timeout=10)
                    toggled.append(1 + _rest(events))
        finally:
            api.close()
        base = []
        for i in range(min(changes, 50)):
            started = time.monotonic()
            if i % 2 == 0:
                host.ofctl("add-flow", "brbase", "table=20,priority=7,reg0=0x7777,actions=drop")
            else:
                host.ofctl("del-flows", "brbase", "table=20,reg0=0x7777")
            base.append(base_events.get(timeout=10) - started)
        what = f"{changes} changes with {len(intent.sessions)} sessions and {flows:,} flows loaded"
        return [
            Row(f"{what}: commit -> first flow change on the switch (OpenFlow flow monitor) vs "
                "one ovs-ofctl add-flow/del-flows on another bridge, from the command's start",
                _ms(to_switch), _ms(base),
                statistics.median(to_switch) / statistics.median(base),
                "median ≤ 20 ms, p99 ≤ 100 ms"),
            Row(f"{what}: commit -> tapctl --wait returns (the agent reported it applied)",
                _ms(to_applied)),
            Row("flow mods per change (a rule added or deleted: its own flows, 1 per feed)",
                f"min {min(mods)}, median {statistics.median(mods):g}, max {max(mods)}", "", None,
                "exactly the change's flows"),
            Row("flow mods per session-disable or -enable (10 sessions, each twice)",
                f"{sorted(set(toggled))}", f"the sessions' own flows: {sorted(set(own))}", None,
                "exactly the session's flows"),
        ]
    finally:
        for monitor in monitors:
            monitor.terminate()
            monitor.wait()
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--ports", type=int, default=30, help="source ports (default %(default)s)")
    p.add_argument("--changes", type=int, default=200, help="changes (default %(default)s)")
    args = p.parse_args()
    require_ovs()
    return finish(run(args.ports, args.changes))


if __name__ == "__main__":
    sys.exit(main())
