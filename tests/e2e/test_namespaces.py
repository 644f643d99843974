"""Tier 3: real packets from real TCP/UDP stacks, in network namespaces.

The test makes its own namespaces: a host running Open vSwitch (netdev
datapath) and sdnagent, two VMs plugged into its br-int by veth pairs, and a
target whose vNIC is on brtap.  192.168.0.161 opens a real TCP connection to
192.168.0.230:1234 with nc; tcpdump in the target's namespace must see exactly
the frames vm-230 received on that connection, cut to 96 bytes, and nothing
of the UDP or TCP traffic the filter leaves out.  Nothing here leaves the
namespaces: they and their veths are deleted at the end.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sdnagent import packets, sandbox
from tests.conftest import require_ovs
from tests.functional.mirrorlab import BIN, EXAMPLE, wait_until

VMS = {"vm161": ("vm-161", "fa:16:3e:00:01:61", "192.168.0.161"),
       "vm230": ("vm-230", "fa:16:3e:00:02:30", "192.168.0.230")}


def require_namespaces() -> None:
    """Skip where namespaces cannot be made (not root, no iproute2, tcpdump or nc)."""
    why = None
    if os.geteuid() != 0:
        why = "needs root to create network namespaces"
    for tool in ("ip", "tcpdump", "nc", "ethtool"):
        if why is None and shutil.which(tool) is None:
            why = f"{tool} not found (tools/setup installs it)"
    if why is None:
        probe = f"sdnprobe{uuid.uuid4().hex[:6]}"
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if made.returncode != 0:
            why = f"cannot create a network namespace: {made.stderr.strip()}"
        else:
            subprocess.run(["ip", "netns", "del", probe], check=True)
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"tier 3 must run in CI: {why}")
        pytest.skip(why)


def ns(name: str, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", name, *cmd], capture_output=True, text=True,
                          check=check, **kw)


class Netns:
    """The namespaces of one test, deleted (with their veths) at the end."""

    def __init__(self):
        self.prefix = f"sdn{uuid.uuid4().hex[:6]}"
        self.names: list[str] = []

    def add(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.names.append(name)
        ns(name, "ip", "link", "set", "lo", "up")
        # no IPv6 autoconfiguration: the host side of a veth would send router
        # solicitations straight to its peer, past the switch
        for scope in ("all", "default"):
            ns(name, "sh", "-c", f"echo 1 > /proc/sys/net/ipv6/conf/{scope}/disable_ipv6")
        return name

    def veth(self, inner_ns: str, inner: str, host_ns: str, outer: str) -> None:
        subprocess.run(["ip", "link", "add", inner, "netns", inner_ns, "type", "veth", "peer",
                        "name", outer, "netns", host_ns], check=True)
        ns(host_ns, "ip", "link", "set", outer, "up")

    def delete(self) -> None:
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def listening(name: str, flags: str, port: str) -> None:
    wait_until(lambda: port in ns(name, "ss", flags).stdout, 10, f"a listener on {port}")


@pytest.fixture
def world():
    require_ovs()
    require_namespaces()
    nets = Netns()
    work = Path(tempfile.mkdtemp(prefix="sdn-"))
    tapdb = sandbox.TapdbServer(work / "tapdb")
    host = None
    try:
        hns = nets.add("host")
        tapdb.start()
        host = sandbox.Host("host-a", work / "host-a", 1, netns=hns, datapath="netdev")
        host.start()
        yield nets, hns, host, tapdb
    finally:
        if host is not None:
            print(f"---- sdnagent log\n{host.agent_log()[-6000:]}")
            host.stop_agent()
        sandbox.stop_all(work)
        nets.delete()
        shutil.rmtree(work, ignore_errors=True)


def test_real_tcp_to_port_1234_is_mirrored_truncated(world):
    nets, hns, host, tapdb = world
    for port, (iface, mac, ip) in VMS.items():
        vm = nets.add(port)
        nets.veth(vm, "eth0", hns, port)
        ns(vm, "ip", "link", "set", "eth0", "address", mac)
        ns(vm, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        ns(vm, "ip", "link", "set", "eth0", "up")
        ns(vm, "ethtool", "-K", "eth0", "tx", "off")  # or the netdev datapath sends bad sums
        host.vsctl("add-port", "br-int", port, "--", "set", "interface", port,
                   f"external_ids:iface-id={iface}")
    tgt_ns = nets.add("tgt")
    nets.veth(tgt_ns, "eth0", hns, "tgt164")
    ns(tgt_ns, "ip", "link", "set", "eth0", "up")

    env = dict(os.environ, TAPDB=tapdb.remote, TARGET02_IP="192.0.2.1",
               PATH=f"{BIN}:{os.environ['PATH']}")
    host.start_agent(tapdb.remote)
    wait_until(lambda: "brtap" in host.vsctl("list-br").split(), 20, "brtap")
    host.vsctl("add-port", "brtap", "tgt164", "--", "set", "interface", "tgt164",
               "external_ids:iface-id=vm-164")
    subprocess.run(["sh", str(EXAMPLE)], env=env, check=True, capture_output=True)
    subprocess.run(["tapctl", "session-del", "session-02"], env=env, check=True,
                   capture_output=True)

    def active() -> bool:
        out = subprocess.run(["tapctl", "show"], env=env, capture_output=True, text=True).stdout
        return out.count("status active") == 2
    wait_until(active, 20, "session-01's source and target active")

    pcap = Path(tempfile.mkdtemp(prefix="sdn-")) / "target.pcap"
    # what the target receives (-Q in), not what its own stack sends (IPv6 solicitations)
    dump = subprocess.Popen(["ip", "netns", "exec", tgt_ns, "tcpdump", "-i", "eth0", "-Q", "in",
                             "-U", "-n", "-s", "0", "-w", str(pcap)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in dump.stderr.readline()
        vm161, vm230 = f"{nets.prefix}-vm161", f"{nets.prefix}-vm230"
        server = subprocess.Popen(["ip", "netns", "exec", vm230, "nc", "-l", "1234"],
                                  stdout=subprocess.PIPE, text=True)
        udp = subprocess.Popen(["ip", "netns", "exec", vm230, "nc", "-u", "-l", "1234"],
                               stdout=subprocess.DEVNULL)
        listening(vm230, "-ltnH", ":1234")
        listening(vm230, "-lunH", ":1234")
        payload = "x" * 300
        # not mirrored: UDP to 1234, TCP to 1235 (refused), TCP from another address
        ns(vm161, "sh", "-c", f"echo {payload} | nc -u -w1 192.168.0.230 1234")
        ns(vm161, "nc", "-z", "-w1", "192.168.0.230", "1235", check=False)
        ns(vm161, "ip", "addr", "add", "192.168.0.99/24", "dev", "eth0")
        ns(vm161, "nc", "-z", "-w1", "-s", "192.168.0.99", "192.168.0.230", "1234", check=False)
        server.wait(timeout=10)  # the probe from .99 connected and closed: listen again
        server = subprocess.Popen(["ip", "netns", "exec", vm230, "nc", "-l", "1234"],
                                  stdout=subprocess.PIPE, text=True)
        listening(vm230, "-ltnH", ":1234")
        # mirrored: a TCP connection from .161 to 1234, what vm-230 receives of it
        ns(vm161, "sh", "-c", f"echo {payload} | nc -N -w2 -s 192.168.0.161 192.168.0.230 1234")
        assert server.communicate(timeout=10)[0].strip() == payload
        time.sleep(1.0)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
        for proc in (udp, server):
            proc.kill()
            proc.wait()
    frames = [packets.parse(f) for f in sandbox.read_pcap(pcap)]
    shutil.rmtree(pcap.parent)
    assert frames, "the target received nothing"
    for f in frames:  # only .161 -> .230:1234 over TCP, each cut to 96 bytes at most
        assert (f.proto, f.src, f.dst, f.dport) == ("tcp", "192.168.0.161", "192.168.0.230",
                                                    1234), f
        assert f.length <= 96, f
    assert any(f.length == 96 for f in frames), frames  # the data segment, truncated
    assert len(frames) >= 3, frames  # SYN, data, FIN at least
