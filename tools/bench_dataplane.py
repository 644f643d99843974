"""What mirroring costs the traffic it copies: iperf3 through br-int, three ways, one run.

Network namespaces made here (root): a host running Open vSwitch on the netdev
(userspace) datapath and sdnagent, two VMs on its br-int by veth pairs, and a
target VM on brtap.  iperf3 sends TCP from vm1 to vm2 for S seconds with no
mirroring (the baseline), then with every frame of vm2 mirrored (both
directions, no filter) to the target, then with a filter that takes nothing
(UDP to port 1, both directions).  Figures: throughput and ovs-vswitchd's CPU
per gigabit, each against the baseline; and what a cap costs: the mirrored
run again with a meter on brtap that drops nothing (a cap above the traffic),
and with one that drops (10,000 copies per second), each against the same
mirroring without a meter.  The namespaces and everything
started are removed at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Row, cpu_seconds, finish, parser, require_ovs  # noqa: E402

from sdnagent import controls, sandbox  # noqa: E402
from sdnagent.tapdb import ops  # noqa: E402

VMS = {"vm1": ("vm-1", "fa:16:3e:00:10:01", "10.77.0.1"),
       "vm2": ("vm-2", "fa:16:3e:00:10:02", "10.77.0.2"),
       "tgt": ("vm-t", "fa:16:3e:00:10:99", "10.77.0.99")}


def _ns(name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", name, *cmd], capture_output=True, text=True,
                          check=check)


def missing() -> str:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "iperf3", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} not found (tools/setup installs it)"
    return ""


def _iperf(client: str, server_ip: str, seconds: float) -> float:
    """Gbit/s received by the server over ``seconds`` of one TCP stream."""
    out = _ns(client, "iperf3", "-c", server_ip, "-t", str(seconds), "-J").stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def run(seconds: float = 10) -> list[Row]:
    why = missing()
    if why:
        return [Row(f"data plane: not measured ({why})", "", "")]
    prefix = f"sdn{uuid.uuid4().hex[:6]}"
    names: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="sdn-"))
    tapdb = sandbox.TapdbServer(work / "tapdb")
    host = None
    server = None
    try:
        def netns(role: str) -> str:
            name = f"{prefix}-{role}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            names.append(name)
            _ns(name, "ip", "link", "set", "lo", "up")
            _ns(name, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
            return name
        hns = netns("host")
        tapdb.start()
        host = sandbox.Host("host-a", work / "host-a", 1, netns=hns, datapath="netdev")
        host.start()
        vms = {}
        for port, (iface, mac, ip) in VMS.items():
            vm = netns(port)
            subprocess.run(["ip", "link", "add", "eth0", "netns", vm, "type", "veth", "peer",
                            "name", port, "netns", hns], check=True)
            _ns(hns, "ip", "link", "set", port, "up")
            _ns(vm, "ip", "link", "set", "eth0", "address", mac)
            _ns(vm, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            _ns(vm, "ip", "link", "set", "eth0", "up")
            _ns(vm, "ethtool", "-K", "eth0", "tx", "off")  # the userspace datapath: checksums
            vms[port] = vm
        for port in ("vm1", "vm2"):
            iface, mac, _ = VMS[port]
            host.vsctl("add-port", "br-int", port, "--", "set", "interface", port,
                       f"external_ids:iface-id={iface}", f'external_ids:attached-mac="{mac}"')
        host.start_agent(tapdb.remote)
        deadline = time.monotonic() + 30
        while "brtap" not in host.vsctl("list-br").split():
            assert time.monotonic() < deadline, "the agent made no brtap"
            time.sleep(0.1)
        host.vsctl("add-port", "brtap", "tgt", "--", "set", "interface", "tgt",
                   "external_ids:iface-id=vm-t")
        server = subprocess.Popen(["ip", "netns", "exec", vms["vm2"], "iperf3", "-s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        _ns(vms["vm1"], "ping", "-c", "3", "-i", "0.2", VMS["vm2"][2], check=False)
        vswitchd = int((host.dir / "ovs-vswitchd.pid").read_text())
        api = ops.connect(tapdb.remote, 10)

        def measure() -> tuple[float, float]:
            cpu = cpu_seconds(vswitchd)
            gbps = _iperf(vms["vm1"], VMS["vm2"][2], seconds)
            return gbps, (cpu_seconds(vswitchd) - cpu) / (gbps * seconds)

        def copies() -> int:
            """Frames the target VM received (the mirrored copies)."""
            return int(_ns(vms["tgt"], "cat", "/sys/class/net/eth0/statistics/rx_packets")
                       .stdout)

        capped_copies = 0
        results = {"none": measure()}
        api.target_add("t", port="vm-t", enabled=True)
        api.session_add("all", target="t", priority="1", enabled=True)
        api.source_add("all", port="vm-2", direction="both")
        api.wait_applied(api.committed_generation, 30)
        time.sleep(1)
        before = copies()
        results["all"] = measure()
        mirrored = copies() - before
        assert mirrored > 0, "no copy reached the target"
        for key, cap in (("metered", "100000000"), ("capped", "10000")):
            api.session_set("all", controls.Change(max_pps=cap))
            api.wait_applied(api.committed_generation, 30)
            time.sleep(1)
            before = copies()
            results[key] = measure()
            got = copies() - before
            assert got > 0, f"no copy reached the target with a cap of {cap}"
            if key == "capped":
                assert got <= 10000 * (seconds + 2), f"the cap let {got} copies through"
                capped_copies = got
        api.delete("session", "all")
        api.filter_add("nothing")
        api.rule_add("nothing", "inbound", priority="1", action="accept", protocol="udp",
                     dst_port="1")
        api.rule_add("nothing", "outbound", priority="1", action="accept", protocol="udp",
                     dst_port="1")
        api.session_add("none", target="t", priority="1", filter="nothing", enabled=True)
        api.source_add("none", port="vm-2", direction="both")
        api.wait_applied(api.committed_generation, 30)
        time.sleep(1)
        before = copies()
        results["filtered"] = measure()
        assert copies() - before < 10, "a filter that takes nothing let copies through"
        api.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if host is not None:
            host.stop_agent()
        sandbox.stop_all(work)
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    def pair(label: str, key: str, base: str) -> list[Row]:
        """Throughput and vswitchd's CPU per Gbit of run ``key`` against run ``base``."""
        (g, c), (g0, c0) = results[key], results[base]
        return [Row(f"{label}, throughput", f"{g:.2f} Gbit/s", f"{g0:.2f} Gbit/s", g / g0),
                Row("the same: ovs-vswitchd CPU per Gbit moved", f"{c:.2f} s", f"{c0:.2f} s",
                    c / c0)]
    through = f"iperf3 TCP vm1 -> vm2 through br-int (netdev datapath, {seconds:g} s)"
    return [
        *pair(f"{through}: every frame of vm2 mirrored (both directions, no filter; "
              f"{mirrored:,} copies received) vs no mirroring", "all", "none"),
        *pair(f"{through}: vm2 mirrored through a filter that takes nothing vs no mirroring",
              "filtered", "none"),
        *pair(f"iperf3 TCP vm1 -> vm2 ({seconds:g} s): every frame of vm2 mirrored through a "
              "meter on brtap that drops nothing (--max-pps 100000000) vs the same mirroring "
              "without a meter", "metered", "all"),
        *pair(f"iperf3 TCP vm1 -> vm2 ({seconds:g} s): every frame of vm2 mirrored, capped at "
              f"10,000 copies/s ({capped_copies:,} copies received) vs the same mirroring "
              "without a meter", "capped", "all"),
    ]


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=10, help="each iperf3 run (default 10)")
    args = p.parse_args()
    require_ovs()
    return finish(run(args.seconds))


if __name__ == "__main__":
    sys.exit(main())
