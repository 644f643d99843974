"""An agent's memory: given back after large sessions go, and flat over many changes.

Starts a lab host running sdnagent and measures its resident memory (VmRSS):
idle with one session; with a large intent loaded, and after it is deleted
(the aim: within 20 % of the idle figure), for two intents in turn: the probe
of ``tools/bench wide`` (3 sessions with wide port ranges on 10 sources both
ways) and the intent of ``tools/bench`` (N source ports, each in 3 sessions of
10 rules, about 9,300 flows at 30 ports); then over C churn cycles, each
a session added with a filter and a source, disabled, enabled and deleted,
every change waited for until the agent applied it (the aim: no growth).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_wide import probe  # noqa: E402
from benchlib import (Row, build, finish, installed, parser, require_ovs,  # noqa: E402
                      rss_mib, transact, transaction, vm_mac, wait_for, wait_settled)

from sdnagent import model, sandbox  # noqa: E402
from sdnagent.tapdb import ops  # noqa: E402


def _merge(*intents: model.Intent) -> model.Intent:
    return model.Intent.of([t for i in intents for t in i.targets.values()],
                           [f for i in intents for f in i.filters.values()],
                           [s for i in intents for s in i.sessions.values()])


def _load_and_delete(lab: sandbox.Lab, pid: int, intent: model.Intent, base: int
                     ) -> tuple[int, float, float]:
    """Flows and the agent's memory with ``intent`` loaded, and after it is deleted."""
    host = lab["host-a"]
    assert lab.tapdb is not None
    transact(lab.tapdb.remote, transaction(intent))
    wait_for(lambda: installed(host) != base, 60, "the agent to start installing")
    flows = wait_settled(host)
    loaded = rss_mib(pid)
    transact(lab.tapdb.remote, ["Tap", {"op": "delete", "table": "Mirror_Session",
                                        "where": [["name", "!=", "keep"]]},
                                {"op": "delete", "table": "Mirror_Filter", "where": []},
                                {"op": "delete", "table": "Mirror_Target",
                                 "where": [["name", "!=", "churn-t"]]}])
    wait_for(lambda: installed(host) == base, 120, "the flows of the intent to go")
    time.sleep(3)
    return flows, loaded, rss_mib(pid)


def run(ports: int, cycles: int) -> list[Row]:
    # the probe of tools/bench wide, as found: 3 sessions, 10 sources both ways
    wide = probe(first=1, priority=20000, key=200)[0]
    # the intent of tools/bench on as many ports as the 32 Mirrors of a bridge leave
    big, _ = build(ports)
    big = model.Intent.of([dataclasses.replace(t, tunnel_key=t.tunnel_key + 100)
                           for t in big.targets.values()], big.filters.values(),
                          big.sessions.values())
    lab = sandbox.Lab(hosts=("host-a",))
    try:
        lab.start()
        assert lab.tapdb is not None
        host = lab["host-a"]
        for i in range(max(ports, 11)):
            host.add_vm_port(f"p{i}", f"vm-{i}", mac=vm_mac(i))
        api = ops.connect(lab.tapdb.remote, 10)
        host.start_agent(lab.tapdb.remote, resync_interval="600", heartbeat_interval="10",
                         debug=os.environ.get("BENCH_DEBUG", "false"))
        pid = host._agent.pid
        api.target_add("churn-t", vxlan="10.9.9.9", enabled=True)
        api.session_add("keep", target="churn-t", priority="30000", enabled=True)
        api.source_add("keep", port="vm-0", direction="in")
        api.wait_applied(api.committed_generation, 60)
        base = wait_settled(host)
        time.sleep(3)
        idle = rss_mib(pid)
        loads = [("the probe (3 sessions, 10 rules a direction with two wide port ranges, "
                  "10 sources both ways)", _load_and_delete(lab, pid, wide, base)),
                 (f"the intent of tools/bench on {ports} ports",
                  _load_and_delete(lab, pid, big, base))]

        samples = []
        started = time.monotonic()
        for c in range(cycles):
            api.filter_add("cf")
            api.rule_add("cf", "inbound", priority="1", action="accept", protocol="tcp",
                         src_port="1000-2000", dst_port=f"{c % 1000 + 1}-65000")
            api.session_add("cs", target="churn-t", priority="1", filter="cf", enabled=True)
            api.source_add("cs", port=f"vm-{c % ports}", direction="both")
            api.set_enabled("session", "cs", False)
            api.set_enabled("session", "cs", True)
            api.wait_applied(api.committed_generation, 30)
            api.delete("session", "cs")
            api.delete("filter", "cf")
            api.wait_applied(api.committed_generation, 30)
            if c + 1 in {cycles // 10, cycles // 2, cycles}:
                samples.append((c + 1, rss_mib(pid)))
        spent = time.monotonic() - started
        api.close()
        if os.environ.get("BENCH_DEBUG"):
            print("\n".join(line for line in host.agent_log().splitlines() if "pruned" in line))
    finally:
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)
    (c0, r0), (c1, r1) = samples[0], samples[-1]
    growth = (r1 - r0) * 1024 / (c1 - c0)
    rows = []
    for what, (flows, loaded, after) in loads:
        rows += [Row(f"agent memory with {what} loaded ({flows:,} flows) vs idle (1 session, "
                     f"{base} flows)", f"{loaded:.1f} MiB", f"{idle:.1f} MiB", loaded / idle),
                 Row(f"agent memory after deleting {what} vs idle", f"{after:.1f} MiB",
                     f"{idle:.1f} MiB", after / idle, "≤ 1.2")]
    return rows + [
        Row(f"agent memory over {cycles} churn cycles (add, source, disable, enable, delete; "
            f"{spent / cycles * 1000:.0f} ms a cycle): at cycle {c1} vs {c0} ("
            + ", ".join(f"{c}: {r:.1f}" for c, r in samples) + " MiB)",
            f"{r1:.1f} MiB", f"{r0:.1f} MiB", r1 / r0, "no growth"),
        Row("agent memory growth per churn cycle", f"{growth:.1f} kB", "", None, "0")]


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--ports", type=int, default=30,
                   help="source ports of the large intent, at most 30 (default %(default)s)")
    p.add_argument("--cycles", type=int, default=1000, help="churn cycles (default %(default)s)")
    args = p.parse_args()
    require_ovs()
    return finish(run(args.ports, args.cycles))


if __name__ == "__main__":
    sys.exit(main())
