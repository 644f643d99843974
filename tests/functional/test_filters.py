"""Filters on a real switch: wide port ranges as conjunctive matches, judged per feed.

A filter at quota (10 rules a direction, each with two wide port ranges) on a
session with 10 sources in both directions: the switch holds a few hundred
flows for it instead of the product of the ranges' prefixes, and frames are
mirrored exactly when a rule's ranges take them, from every source.
"""
from __future__ import annotations

from sdnagent import packets
from sdnagent.compile import portrange
from tests.functional.mirrorlab import wait_until
from tests.functional.test_agent import mlab, start_agents, target_port  # noqa: F401

N_SOURCES = 10


def _mac(i: int) -> str:
    return f"fa:16:3e:00:10:{i:02x}"


def test_wide_ranges_are_conjunctive_and_exact(mlab):  # noqa: F811
    rules = 10
    host = mlab["host-a"]
    for i in range(N_SOURCES):
        host.add_vm_port(f"src{i}", f"vm-s{i}")
    start_agents(mlab, hosts=("host-a",))
    tgt = target_port(mlab, "host-a")
    mlab.tapctl("target-add", "t", "--port", "vm-164", "--enable")
    mlab.tapctl("filter-add", "wide")
    for direction in ("inbound", "outbound"):
        for p in range(1, rules + 1):
            # rule p: TCP from ports 1-65534 to ports p+1-65534
            mlab.tapctl("rule-add", "wide", direction, "--priority", str(p), "--action",
                        "accept", "--protocol", "tcp", "--src-port", "1-65534",
                        "--dst-port", f"{p + 1}-65534")
    mlab.tapctl("session-add", "s", "--target", "t", "--filter", "wide", "--priority", "1",
                "--enable")
    for i in range(N_SOURCES):
        mlab.tapctl("source-add", "s", "--port", f"vm-s{i}", "--direction", "both")
    for i in range(N_SOURCES):
        mlab.wait_source("s", f"vm-s{i}")

    def session_flows() -> list[str]:
        return [f for f in mlab.brtap_flows("host-a")
                if "table=10," in f and "priority=0" not in f]
    src = len(portrange.prefixes(1, 65534))
    # per direction and rule: a clause per feed and per prefix, and the conj_id flow; the
    # inbound and outbound clauses of one port prefix are one flow
    want = sum(2 * (N_SOURCES + 1) + src + len(portrange.prefixes(p + 1, 65534))
               for p in range(1, rules + 1))
    found = wait_until(lambda: session_flows() if len(session_flows()) == want else None, 15,
                       f"{want} flows in table 10")
    product = sum(2 * N_SOURCES * src * len(portrange.prefixes(p + 1, 65534))
                  for p in range(1, rules + 1))
    assert product / len(found) > 50
    assert sum("conjunction(" in f for f in found) == want - 2 * rules
    assert sum("conj_id=" in f for f in found) == 2 * rules

    # br-int learns every VM's MAC from a UDP frame (no rule takes UDP), so that the
    # TCP frames below go to one port each, not flooded
    peer_mac = "fa:16:3e:00:20:01"
    host.add_vm_port("peer", "vm-peer")
    wait_until(lambda: "peer" in host.vsctl("list-ports", "br-int").split(), 10, "peer port")
    learn = [("peer", peer_mac)] + [(f"src{i}", _mac(i)) for i in range(N_SOURCES)]
    for port, mac in learn:
        host.inject(port, packets.frame(mac, "ff:ff:ff:ff:ff:ff", "10.0.0.9", "10.0.0.8",
                                        "udp", 5, 5))

    # TCP from and to three of the sources: mirrored exactly when rule 1 (ports 1-65534
    # to 2-65534) takes them, one copy each
    sent = 0
    for i in (0, 4, 9):
        for outbound in (False, True):
            def tcp(sport: int, dport: int) -> bytes:
                src_mac, dst_mac = (_mac(i), peer_mac) if outbound else (peer_mac, _mac(i))
                return packets.frame(src_mac, dst_mac, "10.0.0.1", "10.0.0.2", "tcp", sport,
                                     dport, b"x" * 40)
            port = f"src{i}" if outbound else "peer"
            for sport, dport in ((0, 80), (80, 1), (65535, 80), (80, 65535)):  # not mirrored
                host.inject(port, tcp(sport, dport))
            for sport, dport in ((1, 2), (65534, 65534), (40000, 1234)):  # mirrored
                host.inject(port, tcp(sport, dport))
                sent += 1
    # the last frame sent is mirrored: once it is there, every earlier one was judged
    got = mlab.wait_frames(tgt, sent)
    assert len(got) == sent
    for f in got:
        s = packets.parse(f)
        assert s.proto == "tcp" and 1 <= s.sport <= 65534 and 2 <= s.dport <= 65534, s
