"""Many sources on one bridge: a bounded number of Mirrors, each source told apart.

200 VM ports of host-a are sources of 20 sessions (in, out and both), beside
3 Mirrors of another owner; each session sends to the lab's collector with its
own VNI.  Every frame to or from a source is mirrored exactly once for it, with
its session's VNI; a frame between two sources once for each; a frame whose
source MAC is another source's does not count as that source's; and what br-int
hands to many ports at once (a broadcast) is counted, not mirrored, on a hook
several ports share.  With two sources, each has a hook of its own: a spoofed
MAC changes nothing, and a broadcast is mirrored once for each.
"""
from __future__ import annotations

import re
import time
from collections import Counter

from sdnagent import packets, sandbox
from sdnagent.compile import hooks
from tests.functional.mirrorlab import wait_until
from tests.functional.test_agent import a_mirrors, mlab, start_agents  # noqa: F401

PEER_MAC = "fa:16:3e:ff:00:01"  # a VM that is no source


def _mac(i: int) -> str:
    return f"fa:16:3e:10:{i >> 8:02x}:{i & 0xFF:02x}"


def _frame(src_mac: str, dst_mac: str, tag: str) -> bytes:
    return packets.frame(src_mac, dst_mac, "10.1.0.1", "10.1.0.2", "udp", 5000, 6000,
                         tag.encode().ljust(24, b"."))


def _copies(mlab) -> Counter:
    """What the collector got: (VNI, the inner frame's tag) -> copies."""
    return Counter((s.vni, s.inner_bytes[42:66].rstrip(b".").decode())
                   for s in mlab.collected() if s.vni is not None)


def _foreign_mirrors(host, count: int) -> None:
    """Mirrors of another owner on br-int (each to a port of its own)."""
    for i in range(count):
        host.add_dummy_port("br-int", f"other{i}", capture=False)
        host.vsctl("--", "--id=@p", "get", "Port", f"other{i}", "--", "--id=@m", "create",
                   "Mirror", f"name=other{i}", "select_all=true", "output_port=@p", "--",
                   "add", "Bridge", "br-int", "mirrors", "@m")


def _sessions(mlab, groups: list[tuple[str, list[int]]]) -> None:
    """Session k (VNI k + 1, to the collector) of each (direction, source numbers)."""
    for k, (direction, members) in enumerate(groups):
        mlab.tapctl("target-add", f"t{k}", "--vxlan", sandbox.COLLECTOR_IP, "--enable")
        mlab.tapctl("session-add", f"s{k}", "--target", f"t{k}", "--priority", str(k + 1),
                    "--vni", str(k + 1), "--enable")
        for i in members:
            mlab.tapctl("source-add", f"s{k}", "--port", f"vm-{i}", "--direction", direction)


def _announce_peer(host) -> None:
    """The peer speaks before any session exists: br-int learns where its MAC is, so what
    the sources send it is not flooded to the other sources."""
    host.inject("peer", _frame(PEER_MAC, "ff:ff:ff:ff:ff:ff", "hello"))


def _hook_of(host, port: str, column: str) -> str:
    uuid = host.vsctl("get", "Port", port, "_uuid").strip()
    for name in host.vsctl("--bare", "--columns=name", "list", "Mirror").split():
        if uuid in host.vsctl("get", "Mirror", name, column):
            return name
    return ""


def _all_active(mlab, count: int) -> None:
    def states():
        return [src["status"].get("state") for s in mlab.status()["sessions"]
                for src in s["sources"]]
    wait_until(lambda: states().count("active") == count, 60, f"{count} active sources")


def test_two_hundred_sources_beside_another_owners_mirrors(mlab):  # noqa: F811
    host = mlab["host-a"]
    n = 200
    for i in range(n):
        host.add_vm_port(f"p{i}", f"vm-{i}", mac=_mac(i))
    host.add_vm_port("peer", "vm-peer", mac=PEER_MAC)
    _foreign_mirrors(host, 3)
    _announce_peer(host)
    start_agents(mlab, hosts=("host-a",))
    directions = ("in", "out", "both")
    groups = [(directions[k % 3], list(range(k * 10, k * 10 + 10))) for k in range(n // 10)]
    _sessions(mlab, groups)
    _all_active(mlab, n)
    ours = a_mirrors(mlab)
    assert len([m for m in ours if m.startswith("tap-")]) <= 2 * hooks.HOOK_SLOTS
    assert len(ours) <= hooks.MAX_MIRRORS_PER_BRIDGE and "other0" in ours

    session_of = {i: k for k, (_, members) in enumerate(groups) for i in members}
    want: Counter = Counter()
    for k, (direction, members) in enumerate(groups):
        for i in members:
            if direction in ("out", "both"):  # the VM sends: told by its source MAC
                host.inject(f"p{i}", _frame(_mac(i), PEER_MAC, f"out-{i}"))
                want[k + 1, f"out-{i}"] += 1
            if direction in ("in", "both"):  # the VM receives: told by the destination
                host.inject("peer", _frame(PEER_MAC, _mac(i), f"in-{i}"))
                want[k + 1, f"in-{i}"] += 1
    # a frame between two sources: once for each (vm-10 sends, session 1 is out; vm-0
    # receives, session 0 is in)
    host.inject("p10", _frame(_mac(10), _mac(0), "pair"))
    want[session_of[10] + 1, "pair"] += 1
    want[session_of[0] + 1, "pair"] += 1
    # vm-13 (out) sends with vm-25's MAC (session 2, both): not vm-25's, nor anyone's: the
    # MAC is not one of its hook's ports' (the ports of one session share a hook)
    assert _hook_of(host, "p13", "select_src_port") != _hook_of(host, "p25", "select_src_port")
    host.inject("p13", _frame(_mac(25), PEER_MAC, "spoof"))
    # a broadcast br-int hands to every port: shared hooks count it, mirror it for no one
    host.inject("peer", _frame(PEER_MAC, "ff:ff:ff:ff:ff:ff", "broadcast"))
    host.inject("p11", _frame(_mac(11), PEER_MAC, "last"))  # judged after all the rest
    want[session_of[11] + 1, "last"] += 1
    wait_until(lambda: ("last" in {t for _, t in _copies(mlab)}), 20, "the last copy")
    time.sleep(0.5)
    got = _copies(mlab)
    assert got == want, (sorted(set(got.items()) - set(want.items()))[:10],
                         sorted(set(want.items()) - set(got.items()))[:10])


def test_a_port_alone_in_its_hook_cannot_pass_for_another(mlab):  # noqa: F811
    host = mlab["host-a"]
    for i in range(2):
        host.add_vm_port(f"p{i}", f"vm-{i}", mac=_mac(i))
    host.add_vm_port("peer", "vm-peer", mac=PEER_MAC)
    _announce_peer(host)
    start_agents(mlab, hosts=("host-a",))
    _sessions(mlab, [("both", [0]), ("both", [1])])
    _all_active(mlab, 2)
    assert len(a_mirrors(mlab)) == 4  # two sources, two directions: a hook each
    # vm-0 sends with vm-1's MAC: its own copy (session 0, VNI 1), not vm-1's
    host.inject("p0", _frame(_mac(1), PEER_MAC, "spoof"))
    # a broadcast from the peer reaches both VMs: one copy for each, by its own session
    host.inject("peer", _frame(PEER_MAC, "ff:ff:ff:ff:ff:ff", "broadcast"))
    host.inject("p1", _frame(_mac(1), PEER_MAC, "last"))
    wait_until(lambda: ("last" in {t for _, t in _copies(mlab)}), 20, "the last copy")
    time.sleep(0.5)
    assert _copies(mlab) == Counter({(1, "spoof"): 1, (1, "broadcast"): 1,
                                     (2, "broadcast"): 1, (2, "last"): 1})


def test_a_port_joining_a_hook_in_use_is_mirrored_at_once(mlab):  # noqa: F811
    """A source added to a hook other ports already use edits that Mirror in place; OVS
    3.1 revalidates no cached traffic for that alone, the entry flow the same pass adds on
    brtap does: frames of a flow the datapath cached before are mirrored after."""
    host = mlab["host-a"]
    for i in range(12):
        host.add_vm_port(f"p{i}", f"vm-{i}", mac=_mac(i))
    host.add_vm_port("peer", "vm-peer", mac=PEER_MAC)
    _announce_peer(host)
    for i in range(12):  # br-int learns every VM: what follows is unicast, not flooded
        host.inject(f"p{i}", _frame(_mac(i), PEER_MAC, f"hello-{i}"))
    start_agents(mlab, hosts=("host-a",))
    _sessions(mlab, [("in", list(range(10))), ("in", [10])])
    _all_active(mlab, 11)
    before = sorted(a_mirrors(mlab))
    assert len(before) == hooks.HOOK_SLOTS
    # traffic to vm-11 flows (and the datapath caches it) before vm-11 is a source
    for n in range(3):
        host.inject("peer", _frame(PEER_MAC, _mac(11), f"early-{n}"))
    mlab.tapctl("source-add", "s1", "--port", "vm-11", "--direction", "in")
    _all_active(mlab, 12)
    assert sorted(a_mirrors(mlab)) == before  # the same Mirrors: one of them edited
    host.inject("peer", _frame(PEER_MAC, _mac(11), "late"))
    host.inject("peer", _frame(PEER_MAC, _mac(10), "last"))
    wait_until(lambda: ("last" in {t for _, t in _copies(mlab)}), 20, "the last copy")
    time.sleep(0.3)
    assert _copies(mlab) == Counter({(2, "late"): 1, (2, "last"): 1})


def test_an_agent_restart_keeps_shared_hooks_and_flows(mlab):  # noqa: F811
    """Which hook a port is in is read back from the switch, so a restarted agent finds
    the same hooks, feeds and flows: no Mirror is touched, no flow changes."""
    host = mlab["host-a"]
    for i in range(14):
        host.add_vm_port(f"p{i}", f"vm-{i}", mac=_mac(i))
    start_agents(mlab, hosts=("host-a",))
    _sessions(mlab, [("both", list(range(10))), ("in", [10, 11, 12, 13])])
    _all_active(mlab, 14)
    mlab.quiet("host-a")
    mirrors = host.vsctl("--bare", "--columns=_uuid,name,select_dst_port,select_src_port",
                         "list", "Mirror")
    flows = sorted(mlab.brtap_flows("host-a"))
    host.stop_agent()
    at = len(host.agent_log())
    host.start_agent(mlab.lab.tapdb.remote, debug="true")
    wait_until(lambda: "reconcile (" in host.agent_log()[at:], 15, "a reconcile")
    mlab.quiet("host-a")
    passes = re.findall(r"flows \+(\d+) -(\d+)", host.agent_log()[at:])
    assert passes and all(p == ("0", "0") for p in passes), passes
    assert "hook" not in host.agent_log()[at:]  # no hook added, removed or edited
    assert host.vsctl("--bare", "--columns=_uuid,name,select_dst_port,select_src_port",
                      "list", "Mirror") == mirrors
    assert sorted(mlab.brtap_flows("host-a")) == flows
