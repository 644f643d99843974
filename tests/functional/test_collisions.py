"""The chassis tunnel beside another controller's tunnel ports on the same host.

host-b carries a GRE port of another owner towards host-a with key 1 (as an
OVN GRE port mirror whose sink is a hypervisor, its index equal to a target
key): a port with a fixed remote address is what OVS picks first for GRE from
that address.  Copies between chassis go by VXLAN on UDP 4790, a datapath port
of their own, so neither takes the other's traffic; with ``encap = gre`` the
agent sees the clash and takes nothing from its tunnel, saying why.
"""
from __future__ import annotations

import time

from sdnagent import packets, sandbox
from tests.functional.mirrorlab import VMS, wait_until
from tests.functional.test_agent import mlab, two_host_example  # noqa: F401


def _foreign_gre(mlab, host: str = "host-b"):  # noqa: F811
    """Another owner's GRE port on br-int towards host-a, key 1, and a VM port that sees
    what br-int floods (so, anything that port brings in)."""
    h = mlab[host]
    h.vsctl("add-port", "br-int", "ovn-gre0", "--", "set", "interface", "ovn-gre0",
            "type=gre", f"options:remote_ip={mlab['host-a'].ip}", "options:key=1")
    return h.add_vm_port("watch", "vm-watch")


def _copy(tag: bytes) -> bytes:
    return packets.frame(VMS["vm-161"][1], VMS["vm-230"][1], VMS["vm-161"][2],
                         VMS["vm-230"][2], "tcp", 40000, 1234, tag * 8)


def test_vxlan_between_chassis_is_not_confused_with_a_gre_port(mlab):  # noqa: F811
    watch = _foreign_gre(mlab)
    tgt = two_host_example(mlab)  # encap vxlan, the default
    a, b = mlab["host-a"], mlab["host-b"]
    tcp = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(tgt, 1) == [tcp[:96]]
    [copy] = [s for s in mlab.underlay_to("host-b") if s.vni is not None]
    assert (copy.dport, copy.vni) == (4790, 1)
    # the other owner's GRE from host-a with key 1 is its own: it does not reach target-01
    theirs = _copy(b"theirs")
    b.inject("ul0", packets.gre(a.mac, b.mac, a.ip, b.ip, 1, theirs))
    wait_until(lambda: theirs in mlab.captured(watch), 10, "the other owner's frame")
    time.sleep(0.3)
    assert mlab.captured(tgt) == [tcp[:96]]
    assert tcp[:96] not in mlab.captured(watch)


def test_gre_beside_another_gre_port_takes_nothing_and_says_why(mlab):  # noqa: F811
    a, b = mlab["host-a"], mlab["host-b"]
    _foreign_gre(mlab)
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    for name in ("host-a", "host-b"):
        mlab.lab.start_agent(name, "gre")
    for name in ("host-a", "host-b"):
        wait_until(lambda: "brtap" in mlab[name].vsctl("list-br").split(), 15, "brtap")
    tgt = mlab.vm("host-b", "vm-164", bridge="brtap")
    mlab.example(target02_ip=sandbox.COLLECTOR_IP)

    def target01() -> dict:
        return mlab.status()["targets"][0]["status"]
    st = wait_until(lambda: target01() if target01().get("state") == "error" else None, 15,
                    "target-01's error")
    assert st["reason"] == (
        "target target-01: port ovn-gre0 of another owner on chassis host-b is a gre tunnel "
        "like the chassis tunnel tapgre, and OVS could hand either the other's packets; "
        "nothing is taken from the tunnel; use [tunnel] encap = vxlan")
    assert not [f for f in mlab.brtap_flows("host-b") if "table=30" in f and "priority=0" not in f]
    # GRE with target-01's key from a registered sender that the foreign port does not take
    # reaches tapgre, and still goes nowhere
    mlab.wait_source("session-01", "vm-230")
    for sender in (a.ip, "10.255.0.9"):
        b.inject("ul0", packets.gre(a.mac, b.mac, sender, b.ip, 1, _copy(sender.encode())))
    mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    time.sleep(1)
    assert mlab.captured(tgt) == []
