"""How fast brtap is programmed, against ovs-ofctl as the baseline.

Builds an intent of N source ports, each in 3 sessions whose filters hold 10
rules with port ranges, compiles it, and installs it on a private switch
through the agent's OFSwitch (one bundle).  The same flows, written as text,
are then installed by ``ovs-ofctl --bundle add-flows`` on the same switch
kind in the same run: the ratio is ours / ovs-ofctl's.  Also measured: a
pass with unchanged intent (dump, diff, nothing sent).  Prints figures only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from sdnagent import model, sandbox
from sdnagent.compile import compiler, flows
from sdnagent.compile.compiler import Inventory, LocalPort
from sdnagent.switch.ofswitch import OFSwitch


def build(ports: int, rules_per_filter: int = 10) -> tuple[model.Intent, Inventory]:
    targets = [model.Target(f"t{i}", "vxlan", i + 1, remote_ip=f"10.9.0.{i + 1}", enabled=True)
               for i in range(3)]
    filters, sessions = [], []
    for s in range(3 * ports):
        flt = model.Filter(f"f{s}")
        rules = []
        for r in range(rules_per_filter):
            rules.append(model.new_rule(flt, "inbound", priority=str(r + 1),
                                        action="accept" if r % 3 else "reject", protocol="tcp",
                                        src=f"10.{s % 250}.{r}.0/24",
                                        dst_port=f"{1000 + r * 10}-{2000 + r * 10}"))
        filters.append(model.Filter(f"f{s}", tuple(rules)))
        port = s // 3
        sessions.append(model.Session(f"s{s}", s + 1, s + 1, f"t{s % 3}", f"f{s}", 96, True,
                                      (model.Source("port", "in", iface_id=f"vm-{port}"),)))
    inv = Inventory(chassis="bench", ports={f"vm-{p}": LocalPort(f"vm-{p}", "br-int", f"p{p}", p + 1)
                                            for p in range(ports)},
                    bridges=frozenset({"br-int", "brtap"}), chassis_ips={"bench": "10.255.0.1"})
    return model.Intent.of(targets, filters, sessions), inv


def to_text(f: flows.Flow) -> str:
    """A Flow as ovs-ofctl add-flows text (the fields the compiler uses)."""
    names = {"eth_type": "dl_type", "ip_proto": "nw_proto", "ipv4_src": "nw_src",
             "ipv4_dst": "nw_dst", "tcp_dst": "tp_dst", "tcp_src": "tp_src",
             "udp_dst": "tp_dst", "udp_src": "tp_src", "tun_ipv4_src": "tun_src",
             "tunnel_id": "tun_id", "reg0": "reg0", "in_port": "in_port"}
    match = []
    for k, v in f.match:
        if isinstance(v, tuple):
            v = f"{v[0]}/{v[1]}" if isinstance(v[0], str) else f"{v[0]:#x}/{v[1]:#x}"
        match.append(f"{names[k]}={v}")
    acts = []
    for a in f.actions:
        if a[0] == "set_field":
            acts.append(f"set_field:{a[2]}->{ {'tun_ipv4_dst': 'tun_dst', 'tunnel_id': 'tun_id'}.get(a[1], a[1])}")
        elif a[0] == "output":
            acts.append(f"output:{a[1]}")
        elif a[0] == "output_trunc":
            acts.append(f"output(port={a[1]},max_len={a[2]})")
        elif a[0] == "goto":
            acts.append(f"goto_table:{a[1]}")
    return (f"cookie={f.cookie:#x},table={f.table},priority={f.priority},"
            + "".join(m + "," for m in match) + "actions=" + (",".join(acts) or "drop"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ports", type=int, default=30, help="source ports (default %(default)s)")
    args = p.parse_args()
    why = sandbox.missing_ovs()
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 1
    intent, inv = build(args.ports)
    t = time.perf_counter()
    plan = compiler.plan_ports(intent, inv)
    ofports = {h.patch_tap: 10 + i for i, h in enumerate(plan.hooks)}
    ofports.update({tp.name: 1 + i for i, tp in enumerate(plan.tunnels)})
    desired = compiler.plan_flows(intent, plan, ofports, inv.chassis_ips, inv.chassis, "gre")
    t_compile = time.perf_counter() - t
    print(f"intent: {args.ports} source ports, {len(intent.sessions)} sessions, "
          f"{sum(len(f.inbound) for f in intent.filters.values())} rules -> {len(desired)} flows")
    print(f"compile:            {t_compile * 1000:8.1f} ms  "
          f"({len(desired) / t_compile:,.0f} flows/s)")

    lab = sandbox.Lab(hosts=("bench",), tapdb=False)
    try:
        lab.start()
        host = lab["bench"]
        of = OFSwitch("127.0.0.1", sandbox.free_port())
        of.start(lambda why: None)
        for name in ("brtap", "brofctl"):
            host.add_bridge(name, "fail_mode=secure", "protocols=OpenFlow13",
                            "other-config:disable-in-band=true")
        host.vsctl("set-controller", "brtap", of.target)
        assert of.wait_connected(10), "brtap did not connect"

        t = time.perf_counter()
        of.apply(flows.diff(of.installed(), desired))
        t_install = time.perf_counter() - t
        t = time.perf_counter()
        change = flows.diff(of.installed(refresh=True), desired)
        of.apply(change)
        t_noop = time.perf_counter() - t
        assert not change, "the switch did not keep what we installed"
        t = time.perf_counter()
        assert not flows.diff(of.installed(), desired)
        t_cached = time.perf_counter() - t

        text = host.dir / "flows.txt"
        text.write_text("\n".join(to_text(f) for f in sorted(desired, key=flows.Flow.sort_key)) + "\n")
        t = time.perf_counter()
        host.ofctl("--bundle", "add-flows", "brofctl", str(text))
        t_ofctl = time.perf_counter() - t
        installed = host.ofctl("dump-flows", "brofctl").count("cookie=")
        assert installed == len(desired), (installed, len(desired))

        print(f"install (sdnagent): {t_install * 1000:8.1f} ms  ({len(desired) / t_install:,.0f} "
              "flows/s: dump, diff, os-ken encode, one bundle)")
        print(f"install (ovs-ofctl --bundle add-flows, baseline): {t_ofctl * 1000:8.1f} ms  "
              f"({len(desired) / t_ofctl:,.0f} flows/s)")
        print(f"ratio sdnagent / ovs-ofctl: {t_install / t_ofctl:.2f}")
        print(f"unchanged intent:   {t_noop * 1000:8.1f} ms  (dump and diff, nothing sent; "
              "after a reconnection, an error or drift)")
        print(f"unchanged intent:   {t_cached * 1000:8.1f} ms  (diff against the installed set "
              "kept since the last bundle; every other pass)")
    finally:
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)
        sys.stdout.flush()
    os._exit(0)  # os-ken's listener threads are not daemon threads


if __name__ == "__main__":
    sys.exit(main())
