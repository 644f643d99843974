"""sdnagent beside a real OVN (Debian's ovn-central and ovn-host, dummy datapath).

ovn-northd and its databases, ovn-controller on host-a and host-b owning br-int,
a logical switch with vm-a (host-a) and vm-b (host-b) joined by Geneve, and
sdnagent on both hosts: OVN still delivers; a session mirrors vm-a, an OVN
port, to a target on host-b; ovn-controller restarting (it flushes br-int's
flows) and recomputing leaves our Mirrors and patch ports alone; an OVN port
mirror and ours copy the same frames side by side; and OVN's GRE mirrors keyed
like our target neither take our copies nor reach our target.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from sdnagent import packets, sandbox
from tests.conftest import require_ovs
from tests.functional.mirrorlab import MirrorLab, wait_until
from tests.functional.ovnlab import Ovn, missing_ovn

VM_A = ("vma", "vm-a", "fa:16:3e:00:00:0a", "10.0.0.10")
VM_B = ("vmb", "vm-b", "fa:16:3e:00:00:0b", "10.0.0.11")


@pytest.fixture
def ovn_lab():
    require_ovs()
    why = missing_ovn()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"OVN is required in CI: {why}")
        pytest.skip(why)
    lab = sandbox.Lab()
    try:
        lab.start()
        ovn = Ovn(lab).start()
        ovn.nbctl("ls-add", "ls0")
        pcaps = {}
        for host, (port, lsp, mac, ip) in (("host-a", VM_A), ("host-b", VM_B)):
            ovn.nbctl("lsp-add", "ls0", lsp, "--", "lsp-set-addresses", lsp, f"{mac} {ip}")
            pcaps[lsp] = lab[host].add_vm_port(port, lsp)
        for host in ("host-a", "host-b"):
            ovn.start_controller(lab[host])
        ovn.wait_bound("vm-a", "host-a")
        ovn.wait_bound("vm-b", "host-b")
        mlab = MirrorLab(lab)
        for host in ("host-a", "host-b"):
            lab.start_agent(host)
        for host in ("host-a", "host-b"):
            wait_until(lambda: "brtap" in lab[host].vsctl("list-br").split(), 15, "brtap")
        yield mlab, ovn, pcaps
    finally:
        for host in lab.hosts.values():
            print(f"---- sdnagent log of {host.name}\n{host.agent_log()[-4000:]}")
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)


def _frame(payload: bytes, dport: int = 80) -> bytes:
    return packets.frame(VM_A[2], VM_B[2], VM_A[3], VM_B[3], "tcp", 40000, dport, payload)


def _mirror_vm_a(mlab: MirrorLab):
    """Session s: vm-a (an OVN port on host-a), both directions, to target t, a vNIC on
    host-b's brtap; returns the target's capture file once the source is active."""
    tgt = mlab.vm("host-b", "vm-164", bridge="brtap")
    mlab.tapctl("target-add", "t", "--port", "vm-164", "--enable")
    mlab.tapctl("session-add", "s", "--target", "t", "--priority", "1", "--enable")
    mlab.tapctl("source-add", "s", "--port", "vm-a", "--direction", "both")
    mlab.wait_source("s", "vm-a")
    wait_until(lambda: any("tun_id=0x1" in f for f in mlab.brtap_flows("host-b")), 10,
               "host-b to take target t's key")
    return tgt


def _ours(host: sandbox.Host) -> list[tuple[str, str]]:
    """Our Mirrors and patch ports, by uuid and name: they must stay as they are."""
    rows = []
    for table in ("Mirror", "Port"):
        out = host.vsctl("--bare", "--columns=_uuid,name", "find", table,
                         "external_ids:sdnagent-hook!=x").split()
        rows += list(zip(out[::2], out[1::2]))
    return sorted(rows)


def _send_and_see(mlab: MirrorLab, pcaps: dict, tgt, tag: bytes) -> None:
    """A frame from vm-a to vm-b: OVN delivers it, and target t gets one copy."""
    before = len(mlab.captured(tgt))
    f = _frame(tag * 8)
    mlab["host-a"].inject(VM_A[0], f)
    wait_until(lambda: f in mlab.captured(pcaps["vm-b"]), 10, "OVN's delivery to vm-b")
    mlab.wait_frames(tgt, before + 1)
    time.sleep(0.3)
    assert mlab.captured(tgt)[before:] == [f], "exactly one copy"


def test_ovn_delivers_and_its_port_is_mirrored_through_restarts(ovn_lab):
    mlab, ovn, pcaps = ovn_lab
    a = mlab["host-a"]
    tgt = _mirror_vm_a(mlab)
    _send_and_see(mlab, pcaps, tgt, b"first")
    ours = _ours(a)
    # two hooks (in, out), each a Mirror on br-int and a patch pair (br-int, brtap)
    assert len(ours) == 6

    # ovn-controller restarts: it deletes every flow on br-int and writes its own again
    ovn.restart_controller(a)
    ovn.wait_bound("vm-a", "host-a")
    wait_until(lambda: a.ofctl("dump-flows", "br-int").count("cookie=") > 20, 15,
               "OVN's flows back on br-int")
    _send_and_see(mlab, pcaps, tgt, b"restarted")
    assert _ours(a) == ours

    ovn.appctl(a, "recompute")
    time.sleep(1)
    _send_and_see(mlab, pcaps, tgt, b"recomputed")
    assert _ours(a) == ours
    assert "repaired" not in a.agent_log()


def test_an_ovn_port_mirror_and_ours_copy_side_by_side(ovn_lab):
    mlab, ovn, pcaps = ovn_lab
    a = mlab["host-a"]
    tgt = _mirror_vm_a(mlab)
    # OVN's own mirror of vm-a's traffic, GRE key 7 to the lab's collector
    ovn.nbctl("mirror-add", "m-collector", "gre", "7", "from-lport", sandbox.COLLECTOR_IP)
    ovn.nbctl("lsp-attach-mirror", "vm-a", "m-collector")
    wait_until(lambda: "ovn-owned" in a.vsctl("list", "Mirror") or
               len(a.vsctl("--bare", "--columns=name", "list", "Mirror").split()) > 2, 15,
               "OVN's Mirror on br-int")
    f = _frame(b"both" * 8)
    a.inject(VM_A[0], f)
    assert mlab.wait_frames(tgt, 1) == [f]
    theirs = wait_until(lambda: [s for s in mlab.collected() if s.gre_key == 7], 10,
                        "OVN's GRE copy at the collector")
    assert theirs[0].inner_bytes == f
    names = a.vsctl("--bare", "--columns=name", "list", "Mirror").split()
    assert len(names) == 3, names  # OVN's and our two hooks


def test_ovn_gre_mirrors_keyed_like_our_target_change_nothing(ovn_lab):
    """OVN GRE port mirrors whose sinks are the hypervisors and whose index is 1, target
    t's key: on host-b one with a fixed remote address host-a and key 1 would take GRE
    copies from host-a, and host-a's, sent to host-b with key 1, would reach a GRE port
    of ours.  Between chassis sdnagent speaks VXLAN on UDP 4790: t gets exactly our copy."""
    mlab, ovn, pcaps = ovn_lab
    a, b = mlab["host-a"], mlab["host-b"]
    ovn.nbctl("mirror-add", "m-to-b", "gre", "1", "from-lport", b.ip)
    ovn.nbctl("lsp-attach-mirror", "vm-a", "m-to-b")
    ovn.nbctl("mirror-add", "m-to-a", "gre", "1", "from-lport", a.ip)
    ovn.nbctl("lsp-attach-mirror", "vm-b", "m-to-a")
    wait_until(lambda: "gre" in b.vsctl("--bare", "--columns=type", "list", "Interface"), 15,
               "OVN's GRE mirror port on host-b")
    tgt = _mirror_vm_a(mlab)
    for tag in (b"one", b"two"):
        _send_and_see(mlab, pcaps, tgt, tag)
    # OVN's GRE copies did reach host-b (key 1), and went nowhere near target t
    gre = [s for s in mlab.underlay_to("host-b") if s.gre_key == 1]
    assert gre, "OVN's mirror sent nothing"
    # the collision of a vxlan target with a hypervisor is refused before it can happen
    proc = subprocess.run(["tapctl", "target-add", "x", "--vxlan", b.ip], env=mlab.env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr == (
        f"tapctl: error: vxlan: {b.ip} is the tunnel address of chassis host-b, whose switch "
        "would take the copies; give a collector's own address\n")
