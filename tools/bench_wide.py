"""Wide port ranges: conjunctive matches against the product of prefixes, same run.

The probe's worst case: three sessions whose filters hold 10 rules a
direction, each with ``--src-port 1-65534 --dst-port 2-65534``, on the same 10
source ports in both directions.  Compiled both ways (as the agent does now,
and with every rule written as the product of its feeds and prefixes, as it
did before), each installed on a fresh bridge of a private switch through the
agent's OFSwitch, then deleted: flows, time to install and to delete, and
ovs-vswitchd's memory with the flows in place.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_install import controller  # noqa: E402
from benchlib import Row, finish, ms, parser, require_ovs, rss_mib, vm_mac  # noqa: E402

from sdnagent import model, sandbox  # noqa: E402
from sdnagent.compile import compiler, flows  # noqa: E402
from sdnagent.compile.compiler import Inventory, LocalPort  # noqa: E402

SOURCES, SESSIONS = 10, 3


def probe(n_sources: int = SOURCES, first: int = 0, prefix: str = "", priority: int = 1,
          key: int = 1) -> tuple[model.Intent, Inventory]:
    """The probe's intent: ``n_sources`` ports from vm-``first`` on; names, priorities and
    keys can be moved to sit beside another intent."""
    targets = [model.Target(f"{prefix}t{i}", "vxlan", key + i, remote_ip=f"10.9.0.{i + 1}",
                            enabled=True) for i in range(SESSIONS)]
    filters, sessions = [], []
    sources = tuple(model.Source("port", "both", iface_id=f"vm-{p}")
                    for p in range(first, first + n_sources))
    for s in range(SESSIONS):
        flt = model.Filter(f"f{s}")
        rules = {d: tuple(model.new_rule(flt, d, priority=str(r), action="accept",
                                         protocol="tcp", src_port="1-65534",
                                         dst_port="2-65534") for r in range(1, 11))
                 for d in model.RULE_DIRECTIONS}
        filters.append(model.Filter(f"{prefix}f{s}", rules["inbound"], rules["outbound"]))
        sessions.append(model.Session(f"{prefix}s{s}", priority + s, s + 1, f"{prefix}t{s}",
                                      f"{prefix}f{s}", 96, True, sources))
    inv = Inventory(chassis="bench",
                    ports={f"vm-{p}": LocalPort(f"vm-{p}", "br-int", f"p{p}", p + 1, vm_mac(p))
                           for p in range(first, first + n_sources)},
                    bridges=frozenset({"br-int", "brtap"}), chassis_ips={"bench": "10.255.0.1"})
    return model.Intent.of(targets, filters, sessions), inv


def run() -> list[Row]:
    intent, inv = probe()
    plan = compiler.plan_ports(intent, inv)
    ofports = {h.patch_tap: 10 + i for i, h in enumerate(plan.hooks)}
    ofports.update({tp.name: 1 + i for i, tp in enumerate(plan.tunnels)})
    figures = {}
    lab = sandbox.Lab(hosts=("bench",), tapdb=False)
    try:
        lab.start()
        host = lab["bench"]
        of = controller()
        vswitchd = int((host.dir / "ovs-vswitchd.pid").read_text())
        idle = rss_mib(vswitchd)
        for conjunctive in (True, False):
            t = time.perf_counter()
            desired = compiler.plan_flows(intent, plan, ofports, "gre",
                                          conjunctive=conjunctive)
            t_compile = time.perf_counter() - t
            bridge = "brtap" if conjunctive else "brprod"
            old = of.app.datapath if of.app else None
            host.add_bridge(bridge, "fail_mode=secure", "protocols=OpenFlow13",
                            "other-config:disable-in-band=true")
            host.vsctl("set-controller", bridge, of.target)
            deadline = time.monotonic() + 10
            while of.app.datapath is None or of.app.datapath is old:
                assert time.monotonic() < deadline, f"{bridge} did not connect"
                time.sleep(0.05)
            t = time.perf_counter()
            of.apply(flows.diff(of.installed(), desired))
            t_install = time.perf_counter() - t
            rss = rss_mib(vswitchd) - idle
            t = time.perf_counter()
            of.apply(flows.diff(of.installed(refresh=True), frozenset()))
            t_delete = time.perf_counter() - t
            host.vsctl("del-br", bridge)
            per_session = sum(1 for f in desired if f.table in range(10, 16) and f.priority)
            figures[conjunctive] = (len(desired), per_session / SESSIONS, t_compile, t_install,
                                    t_delete, rss)
    finally:
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)
    now, before = figures[True], figures[False]
    what = (f"{SESSIONS} sessions, 10 rules a direction with two wide port ranges, "
            f"{SOURCES} sources both ways")
    return [Row(f"{what}: filter flows per session, conjunctive vs product",
                f"{now[1]:,.0f}", f"{before[1]:,.0f}", now[1] / before[1], "≤ 1/50"),
            Row(f"{what}: flows on brtap", f"{now[0]:,}", f"{before[0]:,}", now[0] / before[0]),
            Row(f"{what}: compile", ms(now[2]), ms(before[2]), now[2] / before[2]),
            Row(f"{what}: install (dump, diff, encode, one bundle)", ms(now[3]), ms(before[3]),
                now[3] / before[3]),
            Row(f"{what}: delete every flow", ms(now[4]), ms(before[4]), now[4] / before[4]),
            Row(f"{what}: ovs-vswitchd memory with the flows installed", f"{now[5]:,.0f} MiB",
                f"{before[5]:,.0f} MiB", now[5] / before[5] if before[5] else None)]


def main() -> int:
    p = parser(__doc__)
    p.parse_args()
    require_ovs()
    return finish(run())


if __name__ == "__main__":
    sys.exit(main())
