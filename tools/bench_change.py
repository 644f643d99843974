"""How long a change takes to reach the switch, with a large intent loaded.

Starts a lab host running sdnagent, loads the intent of ``tools/bench`` (N
source ports, 3 sessions each, 9 rules per filter) into tapdb in one
transaction, waits until the agent has installed it, then makes changes one
at a time through the tapdb client, alternately adding a rule to one
session's filter and deleting it again (sessions taken in turn).  Each
change is timed from its commit to the first flow change that
``ovs-ofctl monitor`` (OpenFlow flow monitoring, the switch's own report)
prints, and the flow changes it caused are counted.  Prints figures only.
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import build  # noqa: E402
from bench_rest import transact, transaction  # noqa: E402

from sdnagent import sandbox  # noqa: E402
from sdnagent.tapdb import ops  # noqa: E402


def installed(host: sandbox.Host) -> int:
    if "brtap" not in host.vsctl("list-br"):
        return 0
    return host.ofctl("dump-flows", "brtap").count("cookie=")


def watch(host: sandbox.Host, events: "queue.Queue[tuple[float, str]]") -> subprocess.Popen:
    """Every flow change on brtap, stamped when it is read."""
    proc = subprocess.Popen(["ovs-ofctl", "-O", "OpenFlow13", "monitor", "brtap", "watch:!initial"],
                            env=host.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "event=" in line:
                events.put((time.monotonic(), line))
    threading.Thread(target=read, daemon=True).start()
    return proc


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ports", type=int, default=30, help="source ports (default %(default)s)")
    p.add_argument("--changes", type=int, default=200, help="changes (default %(default)s)")
    args = p.parse_args()
    why = sandbox.missing_ovs()
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 1
    intent, _ = build(args.ports, rules_per_filter=9)
    lab = sandbox.Lab(hosts=("host-a",))
    monitor = None
    try:
        lab.start()
        assert lab.tapdb is not None
        host = lab["host-a"]
        for i in range(args.ports):
            host.add_vm_port(f"p{i}", f"vm-{i}")
        transact(lab.tapdb.remote, transaction(intent))
        host.start_agent(lab.tapdb.remote, resync_interval="600", heartbeat_interval="10")
        deadline, flows = time.monotonic() + 180, -1
        while time.monotonic() < deadline:
            time.sleep(1)
            now = installed(host)
            if now and now == flows:
                break
            flows = now
        print(f"intent: {args.ports} source ports, {len(intent.sessions)} sessions, "
              f"{sum(len(f.inbound) for f in intent.filters.values())} rules -> {flows} flows "
              "on brtap")
        events: "queue.Queue[tuple[float, str]]" = queue.Queue()
        monitor = watch(host, events)
        time.sleep(1)
        api = ops.connect(lab.tapdb.remote, 10)
        latencies, mods = [], []
        sessions = sorted(intent.sessions.values(), key=lambda s: s.priority)
        for i in range(args.changes):
            sess = sessions[(i // 2) % len(sessions)]
            started = time.monotonic()
            if i % 2 == 0:
                api.rule_add(sess.filter, "inbound", priority="100", action="accept",
                             protocol="tcp", dst_port="7000")
            else:
                api.rule_del(sess.filter, "inbound", "100")
            committed = time.monotonic()
            try:
                first, _ = events.get(timeout=10)
            except queue.Empty:
                print(f"change {i}: no flow change within 10 s", file=sys.stderr)
                return 1
            count = 1
            while True:  # the rest of this change's flow changes
                try:
                    events.get(timeout=0.2)
                    count += 1
                except queue.Empty:
                    break
            latencies.append((first - committed) * 1000)
            mods.append(count)
            del started
        api.close()
        passes = [line.split("): ", 1)[1] for line in host.agent_log().splitlines()
                  if "reconcile (tapdb" in line and "flows +" in line]
        if passes:
            print(f"  the agent's last pass: {passes[-1]}")
        print(f"{args.changes} changes (a rule added to or deleted from one session's filter):")
        print(f"  commit -> first flow change on the switch: median {statistics.median(latencies):.1f} ms, "
              f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms")
        print(f"  flow changes per change: min {min(mods)}, median {statistics.median(mods):g}, "
              f"max {max(mods)} (the rule's own flows: 1 per hook)")
    finally:
        if monitor is not None:
            monitor.terminate()
            monitor.wait()
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)
        sys.stdout.flush()
    os._exit(0)  # the ovs library's threads


if __name__ == "__main__":
    sys.exit(main())
