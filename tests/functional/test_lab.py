"""The lab harness itself: hosts really reach each other over GRE and VXLAN."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from sdnagent import sandbox
from tests.conftest import require_ovs

# an ARP request from 192.168.0.1 for 192.168.0.2, broadcast
FRAME = bytes.fromhex("ffffffffffff020000000001" "0806" "0001080006040001"
                      "020000000001c0a80001" "000000000000c0a80002")


def wait_for_frames(pcap, count: int, timeout: float = 5.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        frames = sandbox.read_pcap(pcap)
        if len(frames) >= count or time.monotonic() > deadline:
            return frames
        time.sleep(0.02)


@pytest.mark.parametrize("encap,key", [("gre", 5), ("vxlan", 77)])
def test_tunnel_between_hosts(lab, encap, key):
    a, b = lab["host-a"], lab["host-b"]
    for host in (a, b):
        host.add_bridge("br-t", "fail_mode=secure", "protocols=OpenFlow13")
        host.vsctl("add-port", "br-t", "t0", "--", "set", "interface", "t0", f"type={encap}",
                   "options:remote_ip=flow", "options:key=flow")
    a.add_dummy_port("br-t", "p1", capture=False)
    pcap = b.add_dummy_port("br-t", "p2")
    a.ofctl("add-flow", "br-t",
            f"in_port=p1,actions=set_field:{b.ip}->tun_dst,set_field:{key}->tun_id,output:t0")
    b.ofctl("add-flow", "br-t", f"in_port=t0,tun_id={key},tun_src={a.ip},actions=output:p2")
    a.inject("p1", FRAME)
    assert wait_for_frames(pcap, 1) == [FRAME]
    stats = b.ofctl("dump-flows", "br-t")
    assert "n_packets=1," in stats


def test_vm_ports_switch_on_br_int(lab):
    a = lab["host-a"]
    a.add_vm_port("vm1", "iface-1")
    pcap = a.add_vm_port("vm2", "iface-2")
    assert a.vsctl("get", "interface", "vm1", "external_ids:iface-id").strip() == "iface-1"
    a.inject("vm1", FRAME)  # broadcast: NORMAL floods it to vm2
    assert wait_for_frames(pcap, 1) == [FRAME]


def test_stop_ends_every_daemon():
    require_ovs()
    lab = sandbox.Lab(hosts=("h1",), tapdb=True).start()
    try:
        pids = [int(p.read_text()) for p in lab.dir.glob("**/*.pid")]
    finally:  # whatever the count, nothing is left running
        lab.stop()
        shutil.rmtree(lab.dir)
    assert len(pids) == 6  # tapdb and its session clock, fabric (2), h1 (2)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
