"""What an agent costs at rest: CPU with a large intent, and with other chassis heartbeating.

Starts a lab host running sdnagent, loads an intent of N source ports, each in
3 sessions whose filters hold 10 rules with port ranges (the intent of
``tools/bench``, written into tapdb in one transaction), waits until the agent
has installed it, then measures the agent's CPU over a window in which
nothing changes, and over a window in which M simulated chassis send their
heartbeats every 2 s.  The lab's own daemons (tapdb's ovsdb-server, the host's
ovs-vswitchd) are measured in the same windows as the baseline.  Prints
figures only.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (build, cpu_seconds, parser, require_ovs, transact,  # noqa: E402
                      transaction, vm_mac)

from sdnagent import sandbox  # noqa: E402
from sdnagent.tapdb import client  # noqa: E402


def measure(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(pid) - before[name]) / seconds * 100 for name, pid in pids.items()}


def heartbeats(remote: str, count: int, registered: threading.Event,
               stop: threading.Event) -> None:
    """``count`` other chassis, each beating every 2 s, spread over the 2 s."""
    api = client.connect(remote)
    try:
        names = [f"sim-{i:04d}" for i in range(count)]
        for i, name in enumerate(names):
            api.register_chassis(name, f"10.254.{i // 250}.{i % 250 + 1}", "gre")
        registered.set()
        while not stop.is_set():
            started = time.monotonic()
            for name in names:
                api.heartbeat(name, int(time.time()), 2)
                if stop.wait(max(0.0, 2.0 / count - 0.001)):
                    break
            stop.wait(max(0.0, 2.0 - (time.monotonic() - started)))
    finally:
        api.close()


def passes(log: str) -> tuple[int, int]:
    """(passes run, passes skipped because nothing concerned this chassis)."""
    lines = re.findall(r"reconcile \(.*", log)
    skipped = sum("nothing that concerns" in line or "holds the flows installed" in line
                  for line in lines)
    return len(lines) - skipped, skipped


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--ports", type=int, default=30, help="source ports (default %(default)s)")
    p.add_argument("--chassis", type=int, default=100,
                   help="simulated chassis heartbeating every 2 s (default %(default)s)")
    p.add_argument("--seconds", type=float, default=20, help="each window (default %(default)s)")
    args = p.parse_args()
    require_ovs()
    intent, _ = build(args.ports)
    lab = sandbox.Lab(hosts=("host-a",))
    try:
        lab.start()
        assert lab.tapdb is not None
        host = lab["host-a"]
        for i in range(args.ports):
            host.add_vm_port(f"p{i}", f"vm-{i}", mac=vm_mac(i))
        transact(lab.tapdb.remote, transaction(intent))
        host.start_agent(lab.tapdb.remote, debug="true", resync_interval="60",
                         heartbeat_interval="10")
        deadline = time.monotonic() + 120
        flows = 0
        while time.monotonic() < deadline:
            time.sleep(1)
            out = host.ofctl("dump-flows", "brtap") if "brtap" in host.vsctl("list-br") else ""
            now = out.count("cookie=")
            if now and now == flows:
                break
            flows = now
        pids = {"sdnagent": host._agent.pid,
                "tapdb ovsdb-server": int(lab.tapdb.pidfile.read_text()),
                "host ovs-vswitchd": int((host.dir / "ovs-vswitchd.pid").read_text())}
        print(f"intent: {args.ports} source ports, {len(intent.sessions)} sessions, "
              f"{sum(len(f.inbound) for f in intent.filters.values())} rules -> {flows} flows "
              "on brtap")
        time.sleep(2)
        log_at = len(host.agent_log())
        rest = measure(pids, args.seconds)
        run, skipped = passes(host.agent_log()[log_at:])
        print(f"at rest, {args.seconds:g} s: " + ", ".join(f"{n} {v:.2f} % CPU"
                                                            for n, v in rest.items())
              + f"; agent passes run {run}, skipped {skipped}")
        stop, registered = threading.Event(), threading.Event()
        beat = threading.Thread(target=heartbeats,
                                args=(lab.tapdb.remote, args.chassis, registered, stop))
        beat.start()
        registered.wait(120)
        time.sleep(5)  # the agent takes the new chassis in (a tunnel flow each), then rests
        log_at = len(host.agent_log())
        busy = measure(pids, args.seconds)
        run, skipped = passes(host.agent_log()[log_at:])
        stop.set()
        beat.join()
        print(f"{args.chassis} other chassis heartbeating every 2 s, {args.seconds:g} s: "
              + ", ".join(f"{n} {v:.2f} % CPU" for n, v in busy.items())
              + f"; agent passes run {run}, skipped {skipped}")
    finally:
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)
        sys.stdout.flush()
    os._exit(0)  # the ovs library's threads


if __name__ == "__main__":
    sys.exit(main())
