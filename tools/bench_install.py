"""How fast brtap is programmed and read back, against ovs-ofctl in the same run.

Builds the intent of N source ports, each in 3 sessions whose filters hold 10
rules with port ranges, compiles it, and installs it on a private switch
through the agent's OFSwitch (dump, diff, encode, one bundle).  The same
flows, written as text, are installed by ``ovs-ofctl --bundle add-flows`` on
another bridge of the same switch: the ratio is ours / ovs-ofctl's.  Then a
pass with unchanged intent that reads the switch back (dump and diff), against
``ovs-ofctl dump-flows`` of the same flows.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Row, build, finish, ms, parser, require_ovs, to_text  # noqa: E402

from sdnagent import sandbox  # noqa: E402
from sdnagent.compile import compiler, flows  # noqa: E402
from sdnagent.switch import ofcodec  # noqa: E402
from sdnagent.switch.ofswitch import OFSwitch  # noqa: E402


_OF: list[OFSwitch] = []


def controller() -> OFSwitch:
    """The one embedded controller of this process (os-ken runs its apps once)."""
    if not _OF:
        of = OFSwitch("127.0.0.1", sandbox.free_port(), timeout=30)
        of.start(lambda why: None)
        _OF.append(of)
    return _OF[0]


def run(ports: int) -> list[Row]:
    intent, inv = build(ports)
    plan = compiler.plan_ports(intent, inv)
    ofports = {h.patch_tap: 10 + i for i, h in enumerate(plan.hooks)}
    ofports.update({tp.name: 1 + i for i, tp in enumerate(plan.tunnels)})
    desired = compiler.plan_flows(intent, plan, ofports, "gre")
    n = f"{len(desired):,}"
    lab = sandbox.Lab(hosts=("bench",), tapdb=False)
    try:
        lab.start()
        host = lab["bench"]
        of = controller()
        old = of.app.datapath if of.app else None
        for name in ("brtap", "brofctl"):
            host.add_bridge(name, "fail_mode=secure", "protocols=OpenFlow13",
                            "other-config:disable-in-band=true")
        host.vsctl("set-controller", "brtap", of.target)
        deadline = time.monotonic() + 10
        while of.app.datapath is None or of.app.datapath is old:
            assert time.monotonic() < deadline, "brtap did not connect"
            time.sleep(0.05)

        t = time.perf_counter()
        of.apply(flows.diff(of.installed(), desired))
        t_install = time.perf_counter() - t
        dumps = []
        for forget in (False, True):
            if forget:  # as after a restart: every flow read back is decoded
                ofcodec.forget()
            t = time.perf_counter()
            change = flows.diff(of.installed(refresh=True), desired)
            dumps.append(time.perf_counter() - t)
            assert not change, "the switch did not keep what we installed"

        text = host.dir / "flows.txt"
        text.write_text("\n".join(to_text(f) for f in sorted(desired, key=flows.Flow.sort_key))
                        + "\n")
        t = time.perf_counter()
        host.ofctl("--bundle", "add-flows", "brofctl", str(text))
        t_ofctl = time.perf_counter() - t
        t = time.perf_counter()
        out = host.ofctl("dump-flows", "brofctl")
        t_ofctl_dump = time.perf_counter() - t
        assert out.count("cookie=") == len(desired), (out.count("cookie="), len(desired))
        return [Row(f"install {n} flows (dump, diff, encode, one bundle) vs ovs-ofctl --bundle "
                    "add-flows", ms(t_install), ms(t_ofctl), t_install / t_ofctl, "≤ 1.5×"),
                Row(f"unchanged pass reading {n} flows back (dump, diff: after a reconnection, "
                    "an error or drift) vs ovs-ofctl dump-flows", ms(dumps[0]), ms(t_ofctl_dump),
                    dumps[0] / t_ofctl_dump, "≤ 2×"),
                Row("the same right after an agent restart (every flow decoded) vs ovs-ofctl "
                    "dump-flows", ms(dumps[1]), ms(t_ofctl_dump), dumps[1] / t_ofctl_dump,
                    "≤ 2×")]
    finally:
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--ports", type=int, nargs="+", default=[30],
                   help="source ports, one run each (default %(default)s; 30 ports give "
                        "about 9,300 flows)")
    args = p.parse_args()
    require_ovs()
    return finish([r for ports in args.ports for r in run(ports)])


if __name__ == "__main__":
    sys.exit(main())
