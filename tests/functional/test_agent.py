"""sdnagent on real switches: frames injected on br-int, judged at the target.

Negative checks inject the frames that must not be mirrored first and a
mirrored one last: the dummy datapath handles frames in order, so once the
last one has arrived, the earlier ones would have too.
"""
from __future__ import annotations

import re
import time
from typing import Optional

import pytest

from sdnagent import mtu, packets, sandbox
from sdnagent.tapdb import client
from tests.functional.mirrorlab import VMS, MirrorLab, running, wait_until


@pytest.fixture
def mlab():
    yield from running()


def start_agents(mlab: MirrorLab, encap: str = "vxlan", hosts=("host-a", "host-b"),
                 only: Optional[dict[str, dict[str, str]]] = None, **options: str) -> None:
    """``options`` for every agent; ``only``: more for some, by host."""
    for name in hosts:
        mlab.lab.start_agent(name, encap, **options, **(only or {}).get(name, {}))
    for name in hosts:
        wait_until(lambda: "brtap" in mlab[name].vsctl("list-br").split(), 15, f"brtap on {name}")


def target_port(mlab: MirrorLab, host: str, iface: str = "vm-164"):
    """Attach a target vNIC to brtap, as the platform does."""
    return mlab.vm(host, iface, bridge="brtap")


def one_host_session(mlab: MirrorLab, source=("--port", "vm-230", "--direction", "in"),
                     key: str = "vm-230"):
    """host-a alone: session s (no filter) mirrors ``source`` to target t (vm-164) on the
    same host; returns the target's capture file."""
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    start_agents(mlab, hosts=("host-a",))
    tgt = target_port(mlab, "host-a")
    mlab.tapctl("target-add", "t", "--port", "vm-164", "--enable")
    mlab.tapctl("session-add", "s", "--target", "t", "--priority", "1", "--enable")
    mlab.tapctl("source-add", "s", *source)
    mlab.wait_source("s", key)
    return tgt


def two_host_example(mlab: MirrorLab, encap: str = "vxlan",
                     only: Optional[dict[str, dict[str, str]]] = None, **options: str):
    """The two-session example: vm-230 (and vm-161, vm-99) on host-a, target-01's vNIC on
    host-b, target-02 at the lab's collector on the underlay; returns target-01's capture file once
    both sessions are active and host-b accepts target-01's key.  ``options``: the agents'
    settings, as for :meth:`~sdnagent.sandbox.Host.start_agent` (``only``: by host)."""
    for vm in ("vm-161", "vm-230", "vm-99"):
        mlab.vm("host-a", vm)
    start_agents(mlab, encap, only=only, **options)
    tgt = target_port(mlab, "host-b")
    mlab.example(target02_ip=sandbox.COLLECTOR_IP6 if mlab.lab.ipv6 else sandbox.COLLECTOR_IP)
    mlab.wait_source("session-01", "vm-230")
    mlab.wait_source("session-02", "vm-230")
    wait_until(lambda: mlab.status()["targets"][0]["status"].get("state") == "active", 10,
               "target-01 active")
    wait_until(lambda: any("tun_id=0x1" in f for f in mlab.brtap_flows("host-b")), 10,
               "host-b to accept target-01's key")
    return tgt


@pytest.mark.parametrize("encap", ["gre", "vxlan"])
def test_two_session_example_across_hosts(mlab, encap):
    b = mlab["host-b"]
    tgt = two_host_example(mlab, encap)

    mlab.send("host-a", "vm-161", "vm-230", "tcp", 1235)  # TCP to 1235: no
    mlab.send("host-a", "vm-161", "vm-230", "udp", 1234)  # UDP to 1234: no
    mlab.send("host-a", "vm-99", "vm-230", "tcp", 1234)  # TCP from another address: no
    udp = mlab.send("host-a", "vm-161", "vm-230", "udp", 1235)
    tcp = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)

    assert mlab.wait_frames(tgt, 1) == [tcp[:96]]  # target-01: the first 96 bytes
    # target-02: VXLAN to the collector's address, VNI 2, the inner frame cut to 96 bytes
    [to_target02] = [s for s in mlab.collected() if s.vni is not None]
    assert (to_target02.dst, to_target02.dport, to_target02.vni) == (sandbox.COLLECTOR_IP,
                                                                     4789, 2)
    assert to_target02.inner_bytes == udp[:96]
    tunnelled = [s for s in mlab.underlay_to("host-b") if s.vni is not None or s.gre_key]
    assert len(tunnelled) == 1 and tunnelled[0].dst == b.ip, tunnelled
    to_target01, = tunnelled
    # target-01's copy crossed chassis with the target's key
    assert to_target01.inner_bytes == tcp[:96]
    if encap == "gre":
        assert to_target01.gre_key == 1
    else:
        assert (to_target01.dport, to_target01.vni) == (4790, 1)
    # what the encapsulations add, as sdnagent.mtu computes it for its warnings
    assert to_target01.length - 14 - 96 == mtu.overhead(encap, b.ip)
    assert to_target02.length - 14 - 96 == mtu.overhead("vxlan", sandbox.COLLECTOR_IP)
    time.sleep(0.3)
    assert mlab.captured(tgt) == [tcp[:96]]

    # the flows are readable, and every one is ours
    flows = mlab.brtap_flows("host-a")
    assert any("tp_dst=1234" in f and "set_field:0x1->reg0" in f for f in flows), flows
    assert any("output(port=" in f and "max_len=96" in f for f in flows), flows
    assert all(f.startswith("cookie=0x7a90") for f in flows), flows

    # what the intent says of these packets, with the chassis as the agents published them
    def trace(packet: str) -> list[str]:
        return mlab.tapctl("trace", "--port", "vm-230", "--direction", "in", packet).splitlines()
    to = "nw_src=192.168.0.161,nw_dst=192.168.0.230"
    out = trace(f"tcp,{to},tp_dst=1234")
    assert out[2].startswith("  session-01 (priority 1): accept: filter filter-01 inbound rule 1 "
                             "accept tcp"), out
    how = "GRE key 1" if encap == "gre" else "VXLAN (UDP 4790) VNI 1"
    assert out[3] == ("mirrored by session-01: the first 96 bytes to target target-01 (port "
                      f"vm-164) on chassis host-b: {how} (the target's) from host-a to {b.ip}")
    out = trace(f"tcp,{to},tp_dst=1235")
    assert out[2:] == [
        "  session-01 (priority 1): passed: no inbound rule of filter filter-01 matches (1: "
        "dst-port 1235 not in 1234)",
        "  session-02 (priority 2): passed: no inbound rule of filter filter-02 matches (1: "
        "not udp)",
        "not mirrored: no rule of any session matches"]


def test_a_target_takes_tunnelled_copies_only_from_the_chassis_expected(mlab):
    """host-b hosts target-01 (key 1) and accepts it only from host-a, where the source of
    its session is bound: not from another registered chassis, nor from an address no
    chassis has; when the source moves, the sender expected moves with it."""
    tgt = two_host_example(mlab, "gre")  # the frames below are GRE
    a, b = mlab["host-a"], mlab["host-b"]

    def senders() -> list[str]:
        return sorted(m.group(1) for f in mlab.brtap_flows("host-b") if "table=30" in f
                      for m in [re.search(r"tun_id=0x1,tun_src=([0-9.]+)", f)] if m)
    assert senders() == [a.ip]
    other = client.connect(mlab.lab.tapdb.remote, chassis="host-c")
    try:
        other.register_chassis("host-c", "10.255.0.3", "gre")
        # a change the agents confirm applied: host-b has read host-c's row by then
        mlab.tapctl("--wait", "filter-add", "filter-09")
        def copy(sender: str) -> bytes:  # a copy that says who sent it
            return packets.frame(VMS["vm-161"][1], VMS["vm-230"][1], VMS["vm-161"][2],
                                 VMS["vm-230"][2], "tcp", 40000, 1234, sender.encode() * 8)
        for src_ip in ("10.255.0.3", "10.255.0.77", a.ip):  # the last one is a's own
            b.inject("ul0", packets.gre(a.mac, b.mac, src_ip, b.ip, 1, copy(src_ip)))
        wait_until(lambda: copy(a.ip) in mlab.captured(tgt), 10, "host-a's copy")
        assert mlab.captured(tgt) == [copy(a.ip)]
        # vm-230 moves to host-c: host-b now takes key 1 from host-c, not from host-a
        other.publish_bindings("host-c", {"vm-230"})
        a.vsctl("del-port", "br-int", VMS["vm-230"][0])
        wait_until(lambda: senders() == ["10.255.0.3"], 10, "host-b to expect host-c only")
    finally:
        other.close()


def test_local_target_directions_and_no_filter(mlab):
    tgt = one_host_session(mlab)

    sent_out = mlab.send("host-a", "vm-230", "vm-161", "udp", 53)  # vm-230 sends: not "in"
    sent_in = mlab.send("host-a", "vm-161", "vm-230", "udp", 53, size=1000)
    assert mlab.wait_frames(tgt, 1) == [sent_in]  # no filter, no length: whole frames
    time.sleep(0.2)
    assert sent_out not in mlab.captured(tgt)

    mlab.tapctl("source-del", "s", "vm-230")
    mlab.tapctl("source-add", "s", "--port", "vm-230", "--direction", "out")
    mlab.wait_source("s", "vm-230")
    wait_until(lambda: len(a_mirrors(mlab)) == 1, 10, "one Mirror on br-int")
    mlab.send("host-a", "vm-161", "vm-230", "udp", 54)
    out = mlab.send("host-a", "vm-230", "vm-161", "udp", 55)
    assert mlab.wait_frames(tgt, 2)[1:] == [out]

    mlab.tapctl("source-del", "s", "vm-230")
    mlab.tapctl("source-add", "s", "--port", "vm-230", "--direction", "both")
    mlab.wait_source("s", "vm-230")
    wait_until(lambda: len(a_mirrors(mlab)) == 2, 10, "two Mirrors on br-int")
    both_in = mlab.send("host-a", "vm-161", "vm-230", "udp", 56)
    both_out = mlab.send("host-a", "vm-230", "vm-161", "udp", 57)
    assert mlab.wait_frames(tgt, 4)[2:] == [both_in, both_out]


def a_mirrors(mlab: MirrorLab, host: str = "host-a") -> list[str]:
    out = mlab[host].vsctl("--columns=name", "--bare", "list", "mirror")
    return [n for n in out.split() if n]


def test_reject_of_a_higher_session_stops_a_lower_one(mlab):
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    start_agents(mlab, hosts=("host-a",))
    tgt = target_port(mlab, "host-a")
    for args in (["target-add", "t", "--port", "vm-164", "--enable"],
                 ["target-add", "t2", "--vxlan", sandbox.COLLECTOR_IP, "--enable"],
                 ["filter-add", "stop-1234"],
                 ["rule-add", "stop-1234", "inbound", "--priority", "1", "--action", "reject",
                  "--protocol", "tcp", "--dst-port", "1234"],
                 ["filter-add", "all-tcp"],
                 ["rule-add", "all-tcp", "inbound", "--priority", "1", "--action", "accept",
                  "--protocol", "tcp"],
                 ["session-add", "first", "--target", "t2", "--filter", "stop-1234",
                  "--priority", "1", "--enable"],
                 ["session-add", "second", "--target", "t", "--filter", "all-tcp",
                  "--priority", "2", "--packet-length", "64", "--enable"],
                 ["source-add", "first", "--port", "vm-230", "--direction", "in"],
                 ["source-add", "second", "--port", "vm-230", "--direction", "in"]):
        mlab.tapctl(*args)
    mlab.wait_source("second", "vm-230")
    mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)  # rejected by "first"
    passed = mlab.send("host-a", "vm-161", "vm-230", "tcp", 80)  # "first" misses: "second"
    assert mlab.wait_frames(tgt, 1) == [passed[:64]]
    # and with "first" disabled, its reject stops nothing
    mlab.tapctl("session-disable", "first")
    mlab.wait_source("first", "vm-230", state="disabled")
    wait_until(lambda: not any("tp_dst=1234" in f for f in mlab.brtap_flows("host-a")), 10,
               "the reject flow to go")
    now = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(tgt, 2)[1:] == [now[:64]]


def test_disabled_session_source_target_stop_mirroring(mlab):
    tgt = one_host_session(mlab)
    count = 0
    for off, on, state_reason in (
            (("session-disable", "s"), ("session-enable", "s"), "the session is disabled"),
            (("source-disable", "s", "vm-230"), ("source-enable", "s", "vm-230"),
             "the source is disabled"),
            (("target-disable", "t"), ("target-enable", "t"), "target t is disabled")):
        mlab.tapctl(*off)
        st = mlab.wait_source("s", "vm-230", state="disabled")
        assert st["reason"] == state_reason
        wait_until(lambda: not a_mirrors(mlab), 10, "no Mirror while disabled")
        mlab.send("host-a", "vm-161", "vm-230", "udp", 9)  # not mirrored
        mlab.tapctl(*on)
        mlab.wait_source("s", "vm-230")
        wait_until(lambda: any("reg0=0x1" in f for f in mlab.brtap_flows("host-a")), 10,
                   "forwarding back")
        sent = mlab.send("host-a", "vm-161", "vm-230", "udp", 10)
        count += 1
        assert mlab.wait_frames(tgt, count)[-1] == sent
        assert len(mlab.captured(tgt)) == count


def test_session_delete_removes_flows_mirrors_and_patch_ports(mlab):
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    start_agents(mlab, hosts=("host-a",))
    target_port(mlab, "host-a")
    mlab.example(target02_ip=sandbox.COLLECTOR_IP6 if mlab.lab.ipv6 else sandbox.COLLECTOR_IP)
    mlab.tapctl("target-add", "t3", "--port", "vm-161", "--enable")  # something unrelated
    mlab.wait_source("session-01", "vm-230")
    wait_until(lambda: len(a_mirrors(mlab)) == 1, 10, "the hook")
    before = mlab.brtap_flows("host-a")
    assert any("reg0=0x2" in f for f in before)
    mlab.tapctl("session-del", "session-02")
    wait_until(lambda: not any("reg0=0x2" in f or "set_field:0x2->reg0" in f
                               for f in mlab.brtap_flows("host-a")), 10, "session-02's flows")
    assert len(a_mirrors(mlab)) == 1  # session-01 still uses the hook
    mlab.tapctl("session-del", "session-01")
    wait_until(lambda: not a_mirrors(mlab), 10, "no Mirror left")
    ports = mlab["host-a"].vsctl("--columns=name", "--bare", "list", "port").split()
    assert not [p for p in ports if p.startswith(("tpi", "tpt"))], ports
    flows = mlab.brtap_flows("host-a")
    assert not any("table=10" in f and "priority=0" not in f for f in flows), flows
    assert not any("table=20" in f and "priority=0" not in f for f in flows), flows


def test_target_iface_that_moves_is_followed(mlab):
    on_b = two_host_example(mlab)
    assert mlab.status()["targets"][0]["status"]["chassis"] == "host-b"
    first = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(on_b, 1) == [first[:96]]

    # the VM moves: its vNIC leaves host-b and appears on host-a
    mlab["host-b"].vsctl("del-port", "brtap", "tgt164")
    on_a = target_port(mlab, "host-a")
    wait_until(lambda: mlab.status()["targets"][0]["status"].get("chassis") == "host-a", 15,
               "target-01 on host-a")
    wait_until(lambda: any("max_len=96" in f and "tun_dst" not in f and "reg0=0x1" in f
                           for f in mlab.brtap_flows("host-a")), 10, "local delivery")
    second = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(on_a, 1) == [second[:96]]

    # the source VM goes away: the status its chassis wrote does not stay behind
    mlab["host-a"].vsctl("del-port", "br-int", "vm230")
    wait_until(lambda: mlab.source_state("session-01", "vm-230") == {}, 10,
               "session-01's source status cleared")
    assert "pending (iface vm-230 not found on any chassis)" in mlab.tapctl("show")


def test_restart_with_unchanged_intent_changes_no_flow(mlab):
    two_host_example(mlab)
    mlab.quiet("host-a")
    before = mlab.brtap_flows("host-a")
    a = mlab["host-a"]
    a.stop_agent()
    log_size = len(a.agent_log())
    a.start_agent(mlab.lab.tapdb.remote, debug="true")  # passes that change nothing log at debug
    wait_until(lambda: "reconcile (" in a.agent_log()[log_size:], 15, "a reconcile")
    mlab.quiet("host-a")
    after_log = a.agent_log()[log_size:]
    passes = re.findall(r"flows \+(\d+) -(\d+)", after_log)
    assert passes and all(p == ("0", "0") for p in passes), after_log
    assert sorted(mlab.brtap_flows("host-a")) == sorted(before)


def test_nic_targets(mlab):
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    start_agents(mlab, hosts=("host-a",))
    # a NIC that does not exist on the host: the target says so
    mlab.tapctl("target-add", "missing", "--nic", "host-a:eth9", "--enable")

    def target_status(name):
        return next(t["status"] for t in mlab.status()["targets"] if t["name"] == name)
    st = wait_until(lambda: target_status("missing").get("state") == "error"
                    and target_status("missing"), 15, "the missing NIC's status")
    assert st["reason"].startswith("nic eth9 could not be added to brtap on chassis host-a")
    mlab.tapctl("target-del", "missing")
    wait_until(lambda: "eth9" not in mlab["host-a"].vsctl("list-ports", "brtap").split(), 10,
               "eth9 removed from brtap")
    # a NIC the host has (here a dummy port already on brtap): frames go out of it
    nic = mlab["host-a"].add_dummy_port("brtap", "nic1")
    mlab.tapctl("target-add", "collector", "--nic", "host-a:nic1", "--enable")
    mlab.tapctl("session-add", "s", "--target", "collector", "--priority", "1",
                "--packet-length", "100", "--enable")
    mlab.tapctl("source-add", "s", "--port", "vm-230", "--direction", "in")
    mlab.wait_source("s", "vm-230")
    wait_until(lambda: target_status("collector").get("state") == "active", 10, "nic active")
    sent = mlab.send("host-a", "vm-161", "vm-230", "udp", 7)
    assert mlab.wait_frames(nic, 1) == [sent[:100]]
    assert "nic1" in mlab["host-a"].vsctl("list-ports", "brtap").split()


def test_vswitch_source(mlab):
    tgt = one_host_session(mlab, ("--vswitch", "host-a:br-int:100"), "host-a:br-int")
    plain = mlab.send("host-a", "vm-161", "vm-230", "udp", 1)  # untagged: not VLAN 100
    tagged = plain[:12] + bytes.fromhex("81000064") + plain[12:]  # VLAN 100
    mlab["host-a"].inject("vm161", tagged)
    assert mlab.wait_frames(tgt, 1) == [tagged]  # only VLAN 100, each frame once
    time.sleep(0.2)
    assert len(mlab.captured(tgt)) == 1
    [mirror] = a_mirrors(mlab)
    assert mlab["host-a"].vsctl("get", "mirror", mirror, "select_all").strip() == "true"


def test_agents_watch_only_their_sources(mlab):
    """Per-host monitoring: a chassis does not receive other chassis's sources."""
    from sdnagent.tapdb import client
    mlab.example(target02_ip=sandbox.COLLECTOR_IP6 if mlab.lab.ipv6 else sandbox.COLLECTOR_IP)
    api = client.connect(mlab.lab.tapdb.remote)
    try:
        assert api.snapshot().intent.session("session-01").sources  # everything, unwatched
        api.watch("host-b", local_ifaces={"vm-7"}, target_ifaces={"vm-164"})
        wait_until(lambda: not api.snapshot().intent.session("session-01").sources, 10,
                   "host-a's sources to leave host-b's view")
        api.watch("host-a", local_ifaces={"vm-230"}, target_ifaces={"vm-164"})
        wait_until(lambda: api.snapshot().intent.session("session-01").sources, 10,
                   "vm-230 in host-a's view")
    finally:
        api.close()


def test_switch_and_tapdb_restarts_are_recovered(mlab):
    tgt = two_host_example(mlab)
    before = sorted(mlab.brtap_flows("host-a"))

    # ovs-vswitchd dies and comes back with no flows: the agent puts them back
    mlab["host-a"].restart_vswitchd()
    wait_until(lambda: sorted(mlab.brtap_flows("host-a")) == before, 20, "host-a's flows back")
    sent = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(tgt, 1) == [sent[:96]]
    assert "connected" in mlab["host-a"].agent_log()

    # tapdb restarts: the agents reconnect and follow the next change
    mlab.lab.tapdb.stop()
    mlab.lab.tapdb.start()
    mlab.tapctl("session-disable", "session-01")
    wait_until(lambda: not any("reg0=0x1" in f for f in mlab.brtap_flows("host-a")), 20,
               "session-01's forwarding to go")
    mlab.wait_source("session-01", "vm-230", state="disabled")


def test_agent_started_before_tapdb_waits_for_it(mlab):
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    mlab.lab.tapdb.stop()
    a = mlab["host-a"]
    a.start_agent(mlab.lab.tapdb.remote)
    wait_until(lambda: "cannot reach tapdb yet" in a.agent_log(), 15, "the agent to retry")
    mlab.lab.tapdb.start()
    wait_until(lambda: "brtap" in a.vsctl("list-br").split(), 30, "brtap once tapdb is up")
    tgt = target_port(mlab, "host-a")
    mlab.tapctl("target-add", "t", "--port", "vm-164", "--enable")
    mlab.tapctl("session-add", "s", "--target", "t", "--priority", "1", "--enable")
    mlab.tapctl("source-add", "s", "--port", "vm-230", "--direction", "in")
    mlab.wait_source("s", "vm-230")
    sent = mlab.send("host-a", "vm-161", "vm-230", "udp", 5)
    assert mlab.wait_frames(tgt, 1) == [sent]


def test_periodic_resync_repairs_flows_changed_behind_its_back(mlab):
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    a = mlab["host-a"]
    a.start_agent(mlab.lab.tapdb.remote, resync_interval="1", heartbeat_interval="1")
    wait_until(lambda: "brtap" in a.vsctl("list-br").split(), 15, "brtap")
    target_port(mlab, "host-a")
    mlab.example(target02_ip=sandbox.COLLECTOR_IP6 if mlab.lab.ipv6 else sandbox.COLLECTOR_IP)
    mlab.wait_source("session-01", "vm-230")
    wait_until(lambda: any("reg0=0x1" in f for f in mlab.brtap_flows("host-a")), 10, "flows")
    before = sorted(mlab.brtap_flows("host-a"))
    # someone deletes our forwarding flows by hand; heartbeats keep waking the agent
    a.ofctl("del-flows", "brtap", "table=20,reg0=1")
    # (flow monitoring reports it at once: the repair may come before a dump could see it)
    wait_until(lambda: "put back or corrected 1 forward flow(s)" in a.agent_log(), 15,
               "the repair")
    wait_until(lambda: sorted(mlab.brtap_flows("host-a")) == before, 15, "the flows repaired")
