"""An agent left on a hypervisor: bad rows, names it owns, bridges that carry the underlay.

Each test writes what tapctl would refuse with a raw OVSDB client, as any
integrator's code could, and checks that only that object is set aside.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

from sdnagent import sandbox
from tests.functional.mirrorlab import wait_until
from tests.functional.test_agent import (a_mirrors, mlab, one_host_session,  # noqa: F401
                                         two_host_example)


def transact(mlab, *ops: dict) -> list:
    out = subprocess.run(["ovsdb-client", "transact", mlab.lab.tapdb.remote,
                          json.dumps(["Tap", *ops])], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    assert not [r for r in result if r and "error" in r], result
    return result


def forwarding(mlab, host: str, session_priority: int) -> bool:
    return any(f"reg0=0x{session_priority:x} " in f or f"reg0=0x{session_priority:x}," in f
               for f in mlab.brtap_flows(host))


def target_status(mlab, name: str) -> dict:
    return next(t["status"] for t in mlab.status()["targets"] if t["name"] == name)


def one_host_example(mlab, **options: str):
    """host-a alone runs the two-session example with ``options`` for its agent; target-01's
    vNIC is on host-a's brtap.  Returns the agent's host and target-01's capture file once
    session-01 forwards and the agent has gone quiet."""
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    a = mlab["host-a"]
    a.start_agent(mlab.lab.tapdb.remote, **options)
    wait_until(lambda: "brtap" in a.vsctl("list-br").split(), 15, "brtap")
    tgt = mlab.vm("host-a", "vm-164", bridge="brtap")
    mlab.example(target02_ip=sandbox.COLLECTOR_IP)
    mlab.wait_source("session-01", "vm-230")
    wait_until(lambda: forwarding(mlab, "host-a", 1), 10, "forwarding")
    mlab.quiet("host-a")
    return a, tgt


def test_a_broken_chassis_row_stops_no_host(mlab):
    two_host_example(mlab)
    transact(mlab, {"op": "insert", "table": "Chassis",
                    "row": {"name": "aaa-evil", "tunnel_ip": "not-an-ip", "encap": "gre"}})
    for host in ("host-a", "host-b"):
        wait_until(lambda: "chassis aaa-evil set aside" in mlab[host].agent_log(), 10,
                   f"{host} to set the row aside")
    # every other change still applies, at once
    mlab.tapctl("session-disable", "session-01")
    wait_until(lambda: not forwarding(mlab, "host-a", 1), 5, "session-01's flows to go")
    mlab.wait_source("session-01", "vm-230", state="disabled", timeout=5)
    assert forwarding(mlab, "host-a", 2)
    # a target bound to the broken chassis says why copies cannot go there
    transact(mlab, {"op": "insert", "table": "Binding",
                    "row": {"iface_id": "vm-777", "chassis": "aaa-evil"}})
    mlab.tapctl("target-add", "target-03", "--port", "vm-777", "--enable")
    mlab.tapctl("session-add", "session-03", "--target", "target-03", "--priority", "3",
                "--enable")
    mlab.tapctl("source-add", "session-03", "--port", "vm-230", "--direction", "in")
    st = mlab.wait_source("session-03", "vm-230", state="error", timeout=5)
    assert st["reason"] == ("target target-03: chassis aaa-evil is set aside: tunnel_ip: "
                            "'not-an-ip' is not an IP address; use an IPv4 or IPv6 unicast address")
    for host in ("host-a", "host-b"):
        assert "reconcile failed" not in mlab[host].agent_log()


def test_nic_targets_named_like_existing_or_agent_ports(mlab):
    tgt = one_host_session(mlab)
    a = mlab["host-a"]
    # tapctl refuses the agent's own names
    proc = subprocess.run(["tapctl", "target-add", "c0", "--nic", "host-a:tapgre"],
                          env=mlab.env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == ("tapctl: error: nic: 'tapgre' is reserved for the agent's own ports "
                           "(tapgre, tapvxc, tapvxlan, taperspan, tpi<hex> and tpt<hex>); use "
                           "the name of a host NIC\n")
    # a NIC target whose name is a VM's port on br-int: an error on that target only
    mlab.tapctl("target-add", "c1", "--nic", "host-a:vm230", "--enable")
    st = wait_until(lambda: target_status(mlab, "c1").get("state") == "error"
                    and target_status(mlab, "c1"), 10, "c1's error")
    assert st["reason"] == ("nic vm230 is already a port of bridge br-int on chassis host-a; a "
                            "nic target needs a NIC that no other bridge uses")
    # the same name written past tapctl: the tunnel port stays the agent's
    transact(mlab, {"op": "insert", "table": "Mirror_Target",
                    "row": {"name": "c2", "type": "nic", "chassis": "host-a", "nic": "tapvxc",
                            "tunnel_key": 99, "enabled": True}})
    wait_until(lambda: target_status(mlab, "c2").get("state") == "error", 10, "c2's error")
    assert a.vsctl("get", "interface", "tapvxc", "type").strip() == "vxlan"
    assert "vm230" in a.vsctl("list-ports", "br-int").split()
    # and the host keeps applying every other change
    mlab.tapctl("session-disable", "s")
    mlab.wait_source("s", "vm-230", state="disabled", timeout=5)
    mlab.tapctl("session-enable", "s")
    mlab.wait_source("s", "vm-230", timeout=5)
    wait_until(lambda: forwarding(mlab, "host-a", 1), 5, "forwarding back")
    sent = mlab.send("host-a", "vm-161", "vm-230", "udp", 5)
    assert mlab.wait_frames(tgt, 1) == [sent]
    assert "reconcile failed" not in a.agent_log()


def test_vswitch_source_on_the_underlay_bridge_copies_each_frame_once(mlab):
    """br-ul carries the tunnels: its Mirror would see every copy we send, again and again."""
    for vm in ("vm-161", "vm-230", "vm-99"):
        mlab.vm("host-a", vm)
    for name, bridges in (("host-a", "br-int,br-ul"), ("host-b", "br-int")):
        mlab[name].start_agent(mlab.lab.tapdb.remote, ovs__integration_bridges=bridges)
    for name in ("host-a", "host-b"):
        wait_until(lambda: "brtap" in mlab[name].vsctl("list-br").split(), 15, f"brtap on {name}")
    tgt = mlab.vm("host-b", "vm-164", bridge="brtap")
    mlab.example(target02_ip=sandbox.COLLECTOR_IP)
    mlab.tapctl("session-add", "underlay", "--target", "target-01", "--priority", "5",
                "--enable")
    mlab.tapctl("source-add", "underlay", "--vswitch", "host-a:br-ul")
    mlab.wait_source("session-01", "vm-230")
    mlab.wait_source("underlay", "host-a:br-ul")
    wait_until(lambda: any("tun_id=0x1" in f for f in mlab.brtap_flows("host-b")), 10,
               "host-b to accept target-01's key")
    tcp = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(tgt, 1) == [tcp[:96]]
    time.sleep(1)
    assert mlab.captured(tgt) == [tcp[:96]]
    tunnelled = [s for s in mlab.underlay_to("host-b") if s.gre_key or s.vni is not None]
    assert len(tunnelled) == 1, tunnelled
    # on a host whose integration bridges are only br-int, the same source is refused
    mlab.tapctl("source-add", "underlay", "--vswitch", "host-b:br-ul")
    st = mlab.wait_source("underlay", "host-b:br-ul", state="error")
    assert st["reason"] == ("bridge br-ul is not an integration bridge of chassis host-b "
                            "(br-int); vswitch sources can only be integration bridges")
    assert not a_mirrors(mlab, "host-b")


def test_a_switch_that_stops_answering_is_dropped_and_reconnected(mlab):
    a, _ = one_host_example(mlab, ovs__of_request_timeout="1")
    vswitchd = int((a.dir / "ovs-vswitchd.pid").read_text())
    os.kill(vswitchd, signal.SIGSTOP)  # the connection stays open; nothing answers on it
    try:
        mlab.tapctl("rule-add", "filter-01", "inbound", "--priority", "2", "--action",
                    "accept", "--protocol", "udp", "--dst-port", "4444")
        wait_until(lambda: "dropping the OpenFlow connection" in a.agent_log(), 15,
                   "the agent to drop the silent connection")
    finally:
        os.kill(vswitchd, signal.SIGCONT)
    wait_until(lambda: any("tp_dst=4444" in f for f in mlab.brtap_flows("host-a")), 20,
               "the new rule's flow after the switch reconnected")


def test_an_endpoint_that_never_speaks_ovsdb_times_out(mlab):
    """tapctl and the agent give up on it after their timeout, naming the remote."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are accepted by the kernel; nothing is ever said
        remote = f"tcp:127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        proc = subprocess.run(["tapctl", "--db", remote, "--timeout", "1", "show"],
                              env=mlab.env, capture_output=True, text=True, timeout=30)
        assert time.monotonic() - started < 10
        assert proc.returncode == 1
        assert proc.stderr == (f"tapctl: cannot reach tapdb at {remote}: no OVSDB answer "
                               "within 1 s\n")
        a = mlab["host-a"]
        a.start_agent(remote, tapdb__timeout="1")
        wait_until(lambda: a.agent_log().count("cannot reach tapdb yet") >= 2, 15,
                   "the agent to time out and retry")
        assert f"{remote}: no OVSDB answer within 1 s" in a.agent_log()


def test_a_dead_host_shows_stale_statuses(mlab):
    """host-b dies (agent and switch): nothing it said stays 'active'."""
    for vm in ("vm-161", "vm-230", "vm-99"):
        mlab.vm("host-a", vm)
    for name in ("host-a", "host-b"):
        mlab[name].start_agent(mlab.lab.tapdb.remote, heartbeat_interval="1")
    for name in ("host-a", "host-b"):
        wait_until(lambda: "brtap" in mlab[name].vsctl("list-br").split(), 15, f"brtap on {name}")
    mlab.vm("host-b", "vm-164", bridge="brtap")
    mlab.example(target02_ip=sandbox.COLLECTOR_IP)
    mlab.wait_source("session-01", "vm-230")
    wait_until(lambda: target_status(mlab, "target-01").get("state") == "active", 10,
               "target-01 active")
    b = mlab["host-b"]
    os.kill(b._agent.pid, signal.SIGKILL)
    b.stop()  # its switch too
    st = wait_until(lambda: target_status(mlab, "target-01").get("state") == "stale"
                    and target_status(mlab, "target-01"), 15, "target-01 to be stale")
    assert st["was"] == "active" and st["chassis"] == "host-b"
    assert re.fullmatch(r"chassis host-b silent for \d+ s", st["reason"]), st
    src = mlab.source_state("session-01", "vm-230")
    assert src["state"] == "stale"
    assert re.fullmatch(r"target target-01 is on chassis host-b silent for \d+ s", src["reason"])
    assert mlab.source_state("session-02", "vm-230")["state"] == "active"  # a vxlan target
    chassis = {c["name"]: c for c in mlab.status()["chassis"]}
    assert (chassis["host-a"]["state"], chassis["host-b"]["state"]) == ("alive", "silent")
    shown = mlab.tapctl("show")
    assert "active (on host-b)" not in shown
    assert re.search(r"status stale: chassis host-b silent for \d+ s \(was active on "
                     r"host-b\)", shown)
    assert re.search(r"chassis host-b silent for \d+ s \(tunnel 10.255.0.2\): its statuses are "
                     "stale", shown)
    # gone for good: the operator forgets it (never a chassis that still beats)
    proc = subprocess.run(["tapctl", "chassis-del", "host-a"], env=mlab.env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert re.fullmatch(r"tapctl: error: chassis: chassis host-a is alive \(heard \d+ s ago\); "
                        r"stop its agent before deleting it, or give --force\n", proc.stderr)
    mlab.tapctl("chassis-del", "host-b")
    assert "host-b" not in {c["name"] for c in mlab.status()["chassis"]}
    assert target_status(mlab, "target-01") == {}
    st = mlab.wait_source("session-01", "vm-230", state="error", timeout=5)
    assert st["reason"] == "target target-01: iface vm-164 not found on any chassis"


def test_brtap_drift_is_repaired_within_seconds(mlab):
    """Flows added, changed or deleted by hand, and a Mirror removed, without waiting for the
    periodic resync (an hour away here)."""
    a, tgt = one_host_example(mlab, resync_interval="3600", debug="true")
    before = sorted(mlab.brtap_flows("host-a"))
    assert "drift:" not in a.agent_log()  # the agent's own changes are not drift

    # a flow someone else wrote, that would drop everything
    a.ofctl("add-flow", "brtap", "table=0,priority=500,actions=drop")
    wait_until(lambda: sorted(mlab.brtap_flows("host-a")) == before, 5, "the foreign flow gone")
    assert ("removed 1 flow(s) the agent did not write (table=0 priority=500 cookie=0x0)"
            in a.agent_log())
    # one of ours changed, and one deleted
    a.ofctl("mod-flows", "brtap", "table=20,reg0=1,actions=drop")
    wait_until(lambda: sorted(mlab.brtap_flows("host-a")) == before, 5, "the flow corrected")
    a.ofctl("del-flows", "brtap", "table=10")
    wait_until(lambda: sorted(mlab.brtap_flows("host-a")) == before, 5, "the flows put back")
    assert "put back or corrected" in a.agent_log()
    # the hook's Mirror removed from br-int
    [mirror] = a_mirrors(mlab)
    a.vsctl("--", "--id=@m", "get", "mirror", mirror, "--", "remove", "bridge", "br-int",
            "mirrors", "@m")
    wait_until(lambda: len(a_mirrors(mlab)) == 1, 5, "the hook back")
    wait_until(lambda: sorted(mlab.brtap_flows("host-a")) != before and len(
        mlab.brtap_flows("host-a")) == len(before), 5, "the hook's flows, on its new port")
    sent = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(tgt, 1) == [sent[:96]]


def test_local_ovsdb_server_restart_is_followed(mlab):
    tgt = one_host_session(mlab)
    mlab["host-a"].restart_ovsdb_server()
    sent = mlab.send("host-a", "vm-161", "vm-230", "udp", 5)  # the data plane never stopped
    assert mlab.wait_frames(tgt, 1) == [sent]
    mlab.tapctl("session-disable", "s")  # and the agent follows changes again
    wait_until(lambda: not a_mirrors(mlab), 15, "the hook removed")
    mlab.tapctl("session-enable", "s")
    mlab.wait_source("s", "vm-230")
    wait_until(lambda: forwarding(mlab, "host-a", 1) and a_mirrors(mlab), 10, "the hook back")
    sent = mlab.send("host-a", "vm-161", "vm-230", "udp", 6)
    assert mlab.wait_frames(tgt, 2)[1:] == [sent]


def test_changes_that_do_not_concern_a_chassis_run_no_pass_there(mlab):
    """Another chassis's heartbeats, its session, its statuses: host-a reads, compares, stops."""
    mlab.vm("host-b", "vm-161")
    a, b = mlab["host-a"], mlab["host-b"]
    a.start_agent(mlab.lab.tapdb.remote, debug="true")
    b.start_agent(mlab.lab.tapdb.remote, heartbeat_interval="1")
    for host in (a, b):
        wait_until(lambda: "brtap" in host.vsctl("list-br").split(), 15, f"brtap on {host.name}")
    mlab.tapctl("target-add", "t", "--vxlan", "10.255.0.9", "--enable")
    mlab.tapctl("session-add", "s", "--target", "t", "--priority", "1", "--enable")
    mlab.tapctl("source-add", "s", "--port", "vm-161", "--direction", "in")
    mlab.wait_source("s", "vm-161")
    time.sleep(1)
    mark = len(a.agent_log())
    mlab.tapctl("session-disable", "s")  # host-b's session: host-b works, host-a does not
    mlab.wait_source("s", "vm-161", state="disabled")
    time.sleep(3)  # three heartbeats of host-b meanwhile
    passes = [line for line in a.agent_log()[mark:].splitlines()
              if "sdnagent: reconcile (" in line]
    assert passes, "the session change reached host-a"
    assert all("nothing that concerns chassis host-a changed" in line for line in passes), passes
    assert not any("Chassis_Private" in line for line in passes)


def test_with_tapdb_down_the_agent_still_keeps_its_switch(mlab):
    a, tgt = one_host_example(mlab, heartbeat_interval="1")
    before = sorted(mlab.brtap_flows("host-a"))
    mlab.lab.tapdb.stop()
    try:
        wait_until(lambda: f"heartbeat failed: tapdb at {mlab.lab.tapdb.remote} is not "
                   "connected" in a.agent_log(), 10, "a heartbeat to fail")
        a.restart_vswitchd()  # its flows are gone; the agent puts them back from what it knows
        wait_until(lambda: sorted(mlab.brtap_flows("host-a")) == before, 10, "the flows back")
        sent = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
        assert mlab.wait_frames(tgt, 1) == [sent[:96]]
    finally:
        mlab.lab.tapdb.start()
    mlab.tapctl("session-disable", "session-01")  # and tapdb back, changes flow again
    wait_until(lambda: not forwarding(mlab, "host-a", 1), 20, "session-01's flows to go")
