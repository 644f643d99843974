"""Collectors at addresses of their own, on real switches: ERSPAN type II and III decoded by
scapy's ERSPAN layers (not ours), and a collector group spreading 100 connections over its
members, each connection's two directions at one member, a member disabled moving only
its own connections, each member's copies counted, and tapctl trace naming the member
OVS's hash picks."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from sdnagent import mtu, packets, sandbox
from tests.functional.mirrorlab import BIN, VMS, MirrorLab, running, wait_until
from tests.functional.test_agent import start_agents

scapy_all = pytest.importorskip("scapy.all", reason="scapy is in requirements.txt")
erspan = pytest.importorskip("scapy.contrib.erspan")

MEMBERS = [f"{sandbox.UNDERLAY_PREFIX}{i}" for i in (201, 202, 203)]


@pytest.fixture
def mlab():
    for lab in running(hosts=("host-a",)):
        # every collector address is the lab's collector port on the fabric: the copies
        # are told apart by their outer destination
        for ip in MEMBERS:
            lab["host-a"].appctl("tnl/neigh/set", "br-ul", ip, sandbox.COLLECTOR_MAC)
        yield lab


def one_session(mlab: MirrorLab, *target: str, vni: str = "300", length: str = "128") -> None:
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    start_agents(mlab, hosts=("host-a",))
    mlab.tapctl("target-add", "t", *target, "--enable")
    mlab.tapctl("session-add", "s", "--target", "t", "--priority", "1", "--vni", vni,
                "--packet-length", length, "--enable")
    mlab.tapctl("source-add", "s", "--port", "vm-230")
    mlab.wait_source("s", "vm-230")


def sent_both_ways(mlab: MirrorLab, size: int = 300) -> tuple[bytes, bytes]:
    """A TCP frame from vm-230 to vm-161, then one back (to vm-230)."""
    out = mlab.send("host-a", "vm-230", "vm-161", "tcp", 80, size=size)
    back = mlab.send("host-a", "vm-161", "vm-230", "tcp", 80, size=size)
    return out, back


def erspan_copies(mlab: MirrorLab, count: int) -> list:
    def enough():
        found = [scapy_all.Ether(f) for f in mlab.lab.collected()]
        found = [p for p in found if p.haslayer(scapy_all.GRE)]
        return found if len(found) >= count else None
    return wait_until(enough, 10, f"{count} ERSPAN copies at the collector")


def test_erspan_type_two(mlab):
    one_session(mlab, "--erspan", sandbox.COLLECTOR_IP, "--version", "1", "--index", "77")
    out, back = sent_both_ways(mlab)
    copies = erspan_copies(mlab, 2)
    assert len(copies) == 2
    for pkt, original in zip(copies, (out, back)):
        assert pkt[scapy_all.IP].dst == sandbox.COLLECTOR_IP
        assert pkt[scapy_all.GRE].proto == 0x88BE and pkt[scapy_all.GRE].seqnum_present == 1
        span = pkt[erspan.ERSPAN_II]
        assert (span.ver, span.session_id, span.index) == (1, 300, 77)
        inner = bytes(span.payload)
        assert inner == original[:128]  # truncated to the packet length, then encapsulated
        assert len(pkt) - 14 - len(inner) == mtu.overhead("erspan1", sandbox.COLLECTOR_IP)


def test_erspan_type_three_marks_the_direction(mlab):
    one_session(mlab, "--erspan", sandbox.COLLECTOR_IP, "--version", "2", "--hardware-id",
                "9", vni="1023", length="100")
    out, back = sent_both_ways(mlab)
    copies = erspan_copies(mlab, 2)
    assert len(copies) == 2
    by_inner = {bytes(p[erspan.ERSPAN_III].payload): p[erspan.ERSPAN_III] for p in copies}
    from_vm, to_vm = by_inner[out[:100]], by_inner[back[:100]]
    for span in (from_vm, to_vm):
        assert copies[0][scapy_all.GRE].proto == 0x22EB
        assert (span.ver, span.session_id, span.hw) == (2, 1023, 9)
    for pkt in copies:
        assert len(pkt) - 14 - 100 == mtu.overhead("erspan2", sandbox.COLLECTOR_IP)
    # D: 0 for what the VM sent (ingress at its switch port), 1 for what it received
    assert (from_vm.d, to_vm.d) == (0, 1)


def test_erspan_refuses_a_session_id_wider_than_ten_bits(mlab):
    for vm in ("vm-230",):
        mlab.vm("host-a", vm)
    mlab.tapctl("target-add", "t", "--erspan", sandbox.COLLECTOR_IP, "--version", "1")
    proc = mlab.run_tapctl("session-add", "s", "--target", "t", "--priority", "1", "--vni",
                           "1024")
    assert proc.returncode == 1
    assert proc.stderr == ("tapctl: error: vni: 1024 cannot be the ERSPAN session ID of target "
                           "t (10 bits); give a vni of 0..1023\n")
    assert "session s" not in mlab.tapctl("show")


def connection(i: int) -> tuple[bytes, bytes]:
    """Connection ``i``'s two directions: vm-230 port 20000+i to a far address port 80,
    and back (to vm-230's MAC through br-int)."""
    _, mac230, ip230 = VMS["vm-230"]
    _, mac161, _ = VMS["vm-161"]
    far = f"172.16.{i // 250}.{i % 250 + 1}"
    there = packets.frame(mac230, mac161, ip230, far, "tcp", 20000 + i, 80, b"c" * 40)
    back = packets.frame(mac161, mac230, far, ip230, "tcp", 80, 20000 + i, b"c" * 40)
    return there, back


def send_connections(mlab: MirrorLab, n: int = 100) -> dict[bytes, int]:
    """Each connection once each way; the frames, each with its connection's number."""
    a = mlab["host-a"]
    sent = {}
    for i in range(n):
        there, back = connection(i)
        a.inject(VMS["vm-230"][0], there)
        a.inject(VMS["vm-161"][0], back)
        sent[there], sent[back] = i, i
    return sent


def members_of(mlab: MirrorLab, sent: dict[bytes, int], skip: int = 0) -> dict[int, set[str]]:
    """Each connection's members, from the VXLAN copies at the collector (after ``skip``)."""
    def enough():
        copies = [s for s in mlab.collected()[skip:] if s.vni is not None]
        return copies if len(copies) >= len(sent) else None
    copies = wait_until(enough, 15, f"{len(sent)} copies at the collector")
    time.sleep(0.3)
    copies = [s for s in mlab.collected()[skip:] if s.vni is not None]
    assert len(copies) == len(sent), len(copies)
    out: dict[int, set[str]] = {}
    for s in copies:
        assert s.vni == 300
        assert s.length - 14 - len(s.inner_bytes) == mtu.overhead("vxlan", s.dst)
        out.setdefault(sent[s.inner_bytes], set()).add(s.dst)
    return out


def test_a_collector_group_spreads_connections_and_a_disabled_member_moves_only_its_own(mlab):
    one_session(mlab, "--group", ",".join(MEMBERS), length="200")
    sent = send_connections(mlab)
    first = members_of(mlab, sent)
    assert len(first) == 100
    assert all(len(m) == 1 for m in first.values()), "a connection's two directions split"
    where = {i: m.pop() for i, m in first.items()}
    share = {ip: sum(1 for w in where.values() if w == ip) for ip in MEMBERS}
    assert all(n >= 15 for n in share.values()), share

    # tapctl trace names the member OVS's hash picked (both directions)
    for i in range(0, 100, 9):
        far = f"172.16.{i // 250}.{i % 250 + 1}"
        text = mlab.tapctl("trace", "--port", "vm-230", "--direction", "in",
                           f"tcp,nw_src={far},nw_dst=192.168.0.230,tp_src=80,"
                           f"tp_dst={20000 + i}")
        assert f"to member {where[i]} of target t (group) by VXLAN" in text, (i, text)

    # sdnagent-trace on host-a: the intent's account, then brtap's flows, each named
    a = mlab["host-a"]
    far = "172.16.0.10"
    proc = subprocess.run([str(BIN / "sdnagent-trace"), "--config-file",
                           str(a.dir / "sdnagent.conf"), "--vswitchd",
                           str(a.dir / "ovs-vswitchd.ctl"), "--port", "vm-230", "--direction",
                           "out", f"tcp,nw_src=192.168.0.230,nw_dst={far},tp_src=20009,tp_dst=80"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"to member {where[9]} of target t (group)" in proc.stdout, proc.stdout
    notes = re.findall(r"^ +\[(.*)\]$", proc.stdout, re.M)
    assert notes[-2:] == ["target t: a hash slot and the member it belongs to",
                          f"session s: the copy to member {where[9]} of target t"], notes
    assert "unknown to sdnagent" not in proc.stdout

    # each member's copies counted apart
    def counted() -> dict[str, int]:
        stats = mlab.tapctl("stats")
        return {ip: int(n) for ip, n in re.findall(r"^s +t +(\S+) +(\d+) ", stats, re.M)}
    wait_until(lambda: counted() == {ip: 2 * n for ip, n in share.items()}, 15,
               f"member counters {share}")
    assert ("    sent to its members: " + ", ".join(f"{ip}: {2 * n}" for ip, n in share.items())
            in mlab.tapctl("show"))

    # a member disabled: its connections move, and only they
    gone = MEMBERS[1]
    mlab.tapctl("--wait", "member-disable", "t", gone)
    skip = len(mlab.collected())
    again = members_of(mlab, send_connections(mlab), skip)
    for i, m in again.items():
        assert len(m) == 1
        now = m.pop()
        assert now != gone
        if where[i] != gone:
            assert now == where[i], f"connection {i} moved from {where[i]} to {now}"
    mlab.tapctl("--wait", "member-enable", "t", gone)
    skip = len(mlab.collected())
    back = members_of(mlab, send_connections(mlab), skip)
    assert {i: m.pop() for i, m in back.items()} == where


def test_a_session_whose_copies_can_outgrow_the_underlay_is_warned_of(mlab):
    """With [tunnel] mtu = 1500: a session to a VXLAN collector with whole frames, or a
    packet length over 1464 (1500 - 20 IPv4 - 8 UDP - 8 VXLAN), is marked by the agent
    and by tapctl when written; 1464 is not."""
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    mlab.lab.start_agent("host-a", tunnel__mtu="1500")
    wait_until(lambda: any(c.get("tunnel_mtu") == 1500 for c in mlab.status()["chassis"]), 15,
               "host-a to publish its underlay MTU")
    mlab.tapctl("target-add", "t", "--vxlan", sandbox.COLLECTOR_IP, "--enable")
    warning = ("can exceed the underlay MTU 1500 of chassis host-a after VXLAN over IPv4 "
               "(36 bytes); the largest safe packet length is 1464")
    for name, length, said in (("whole", None, "whole frames"),
                               ("long", "1465", "copies of packet length 1465"),
                               ("fits", "1464", None)):
        prio = str(1 + len(mlab.status()["sessions"]))
        proc = mlab.run_tapctl("session-add", name, "--target", "t", "--priority", prio,
                               "--enable", *(("--packet-length", length) if length else ()))
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == (f"tapctl: warning: session {name}: {said} {warning}\n"
                               if said else ""), proc.stderr
        proc = mlab.run_tapctl("source-add", name, "--port", "vm-230")
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == (f"tapctl: warning: session {name}: {said} {warning}\n"
                               if said else ""), proc.stderr
        st = mlab.wait_source(name, "vm-230")
        assert st.get("reason") == (f"{said} {warning}" if said else None), st
    show = mlab.tapctl("show")
    assert f"status active: whole frames {warning} (on host-a)" in show, show


def test_an_erspan_port_of_another_owner_is_named_on_the_sources(mlab):
    """OVS takes one flow-based ERSPAN port a switch: when another owner has one, the
    sources to an ERSPAN target say so instead of claiming copies leave."""
    mlab["host-a"].vsctl("add-port", "br-int", "theirs", "--", "set", "Interface", "theirs",
                         "type=erspan", "options:remote_ip=flow", "options:key=flow",
                         "options:erspan_ver=flow")
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    start_agents(mlab, hosts=("host-a",))
    mlab.tapctl("target-add", "t", "--erspan", sandbox.COLLECTOR_IP, "--version", "1",
                "--enable")
    mlab.tapctl("session-add", "s", "--target", "t", "--priority", "1", "--enable")
    mlab.tapctl("source-add", "s", "--port", "vm-230")
    st = mlab.wait_source("s", "vm-230", state="error")
    assert st["reason"].startswith("target t: port taperspan could not be added to brtap on "
                                   "chassis host-a"), st


def test_a_group_by_gre(mlab):
    """GRE to each member, keyed with the session's VNI (the chassis tunnel is VXLAN: the
    agent adds a flow-based GRE port for the collectors)."""
    one_session(mlab, "--group", ",".join(MEMBERS[:2]), "--encap", "gre", vni="77",
                length="100")
    sent = send_connections(mlab, 20)

    def copies() -> list:
        return [s for s in mlab.collected() if s.gre_key == 77]
    wait_until(lambda: len(copies()) >= 40, 15, "40 GRE copies")
    time.sleep(0.3)
    where: dict[int, set[str]] = {}
    for s in copies():
        assert s.length - 14 - len(s.inner_bytes) == mtu.overhead("gre", s.dst)
        where.setdefault(sent[s.inner_bytes], set()).add(s.dst)  # 94 bytes: not cut
    assert len(where) == 20 and all(len(w) == 1 for w in where.values())
    assert {ip for w in where.values() for ip in w} == set(MEMBERS[:2])

