"""IPv6 end to end, on real switches: hosts joined by an IPv6 underlay (``[tunnel]
local_ip`` an IPv6 address) mirror to each other over GRE and VXLAN, a VXLAN collector
and an ERSPAN one at IPv6 addresses receive their copies, a group of IPv6 collectors
spreads connections, and a target takes tunnelled copies only from the IPv6 address of
the chassis expected to send them."""
from __future__ import annotations

import re
import time

import pytest

from sdnagent import mtu, packets, sandbox
from sdnagent.tapdb import client
from tests.functional.mirrorlab import VMS, running, wait_until
from tests.functional.test_agent import two_host_example
from tests.functional.test_collectors import connection, one_session, sent_both_ways

scapy_all = pytest.importorskip("scapy.all", reason="scapy is in requirements.txt")
erspan = pytest.importorskip("scapy.contrib.erspan")


@pytest.fixture
def mlab():
    yield from running(hosts=("host-a", "host-b"), ipv6=True)


@pytest.fixture
def one_host():
    yield from running(hosts=("host-a",), ipv6=True)


@pytest.mark.parametrize("encap", ["gre", "vxlan"])
def test_two_hosts_on_an_ipv6_underlay(mlab, encap):
    a, b = mlab["host-a"], mlab["host-b"]
    tgt = two_host_example(mlab, encap)  # target-02 at the collector's IPv6 address
    chassis = {c["name"]: c["tunnel_ip"] for c in mlab.status()["chassis"]}
    assert chassis == {"host-a": a.ip6, "host-b": b.ip6}
    mlab.send("host-a", "vm-161", "vm-230", "tcp", 1235)  # not mirrored
    udp = mlab.send("host-a", "vm-161", "vm-230", "udp", 1235)
    tcp = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(tgt, 1) == [tcp[:96]]
    [to_b] = [s for s in mlab.underlay_to("host-b") if s.vni is not None or s.gre_key]
    assert (to_b.ethertype, to_b.src, to_b.dst) == (0x86DD, a.ip6, b.ip6)
    assert to_b.inner_bytes == tcp[:96]
    assert (to_b.gre_key if encap == "gre" else to_b.vni) == 1
    assert to_b.length - 14 - len(to_b.inner_bytes) == mtu.overhead(encap, b.ip6)
    [collected] = wait_until(lambda: [s for s in mlab.collected() if s.vni is not None], 10,
                             "the VXLAN copy at the collector")
    assert (collected.ethertype, collected.src, collected.dst, collected.dport,
            collected.vni) == (0x86DD, a.ip6, sandbox.COLLECTOR_IP6, 4789, 2)
    assert collected.inner_bytes == udp[:96]
    assert collected.length - 14 - 96 == mtu.overhead("vxlan", sandbox.COLLECTOR_IP6)
    time.sleep(0.3)
    assert mlab.captured(tgt) == [tcp[:96]]


def test_a_target_takes_copies_only_from_the_ipv6_address_expected(mlab):
    tgt = two_host_example(mlab, "gre")
    a, b = mlab["host-a"], mlab["host-b"]
    flows = [f for f in mlab.brtap_flows("host-b") if "table=30" in f and "tun_id=0x1" in f]
    assert [re.search(r"tun_ipv6_src=(\S+) ", f).group(1) for f in flows] == [a.ip6], flows
    other = client.connect(mlab.lab.tapdb.remote, chassis="host-c")
    try:
        other.register_chassis("host-c", "2001:db8:ff::3", "gre")
        mlab.tapctl("--wait", "filter-add", "filter-09")

        def copy(sender: str) -> bytes:  # a copy that says who sent it
            return packets.frame(VMS["vm-161"][1], VMS["vm-230"][1], VMS["vm-161"][2],
                                 VMS["vm-230"][2], "tcp", 40000, 1234, sender.encode() * 8)
        for src_ip in ("2001:db8:ff::3", "2001:db8:ff::77", a.ip6):  # the last one is a's
            b.inject("ul0", packets.gre(a.mac, b.mac, src_ip, b.ip6, 1, copy(src_ip)))
        wait_until(lambda: copy(a.ip6) in mlab.captured(tgt), 10, "host-a's copy")
        assert mlab.captured(tgt) == [copy(a.ip6)]
    finally:
        other.close()


def test_collectors_at_ipv6_addresses(one_host):
    mlab = one_host
    one_session(mlab, "--erspan", sandbox.COLLECTOR_IP6, "--version", "1", "--index", "5")
    out, back = sent_both_ways(mlab)

    def erspan_copies():
        found = [scapy_all.Ether(f) for f in mlab.lab.collected()]
        return [p for p in found if p.haslayer(erspan.ERSPAN_II)]
    copies = wait_until(lambda: len(erspan_copies()) >= 2 and erspan_copies(), 10,
                        "two ERSPAN copies over IPv6")
    assert len(copies) == 2
    for pkt, original in zip(copies, (out, back)):
        assert pkt[scapy_all.IPv6].dst == sandbox.COLLECTOR_IP6
        span = pkt[erspan.ERSPAN_II]
        assert (span.session_id, span.index) == (300, 5)
        assert bytes(span.payload) == original[:128]
        assert len(pkt) - 14 - 128 == mtu.overhead("erspan1", sandbox.COLLECTOR_IP6)

    # a group of two IPv6 collectors: each connection, both ways, at one of them
    members = [f"{sandbox.UNDERLAY6_PREFIX}{i:x}" for i in (201, 202)]
    for ip in members:
        mlab["host-a"].appctl("tnl/neigh/set", "br-ul", ip, sandbox.COLLECTOR_MAC)
    mlab.tapctl("target-add", "g", "--group", ",".join(members), "--enable")
    mlab.tapctl("session-add", "s6", "--target", "g", "--priority", "2", "--vni", "6",
                "--enable")
    mlab.tapctl("--wait", "source-add", "s6", "--port", "vm-161")
    mlab.wait_source("s6", "vm-161")
    skip = len(mlab.collected())
    a = mlab["host-a"]
    sent = {}
    for i in range(30):  # from vm-230 to vm-161: vm-161's inbound copies go to g
        there, _ = connection(i)
        a.inject(VMS["vm-230"][0], there)
        sent[there] = i

    def at_group() -> list:
        return [s for s in mlab.collected()[skip:] if s.vni == 6]
    wait_until(lambda: len(at_group()) >= 30, 15, "30 copies at the group")
    time.sleep(0.3)
    copies = at_group()
    assert len(copies) == 30
    where: dict[int, set[str]] = {}
    for s in copies:
        assert s.ethertype == 0x86DD
        where.setdefault(sent[s.inner_bytes], set()).add(s.dst)
    assert set(where) == set(range(30)) and all(len(w) == 1 for w in where.values())
    assert {ip for w in where.values() for ip in w} == set(members)
