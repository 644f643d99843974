"""Role-based access: an agent's certificate writes only what its chassis owns, and a
claim it may make (an iface on its own chassis) diverts no copy."""
from __future__ import annotations

import shutil
import tempfile
import time

import pytest

from sdnagent import pki, sandbox
from sdnagent.tapdb import client, ops, rpc, schema, server
from tests.conftest import require_ovs
from tests.functional.mirrorlab import MirrorLab, wait_until
from tests.functional.test_agent import two_host_example

ACTIVE_B = {"state": "active", "chassis": "host-b"}


@pytest.fixture
def rbac_tapdb():
    """tapdb with an operators' listener and a relay's agents' listener (pssl:,
    loopback), and the two CAs."""
    require_ovs()
    directory = tempfile.mkdtemp(prefix="sdn-rbac-")
    ca = f"{directory}/ca"
    srv = server.TapdbServer(f"{directory}/db")
    ports = sandbox.free_port(), sandbox.free_port()
    try:
        srv.start([f"pssl:{ports[0]}:127.0.0.1"], tls=pki.issue(ca, "tapdb", "tapdb"),
                  chassis_remotes=[f"pssl:{ports[1]}:127.0.0.1"],
                  chassis_ca=str(pki.chassis_ca(ca)))
        yield {"operator": f"ssl:127.0.0.1:{ports[0]}", "chassis": f"ssl:127.0.0.1:{ports[1]}",
               "ca": ca, "server": srv}
    finally:
        srv.stop()
        shutil.rmtree(directory, ignore_errors=True)


def agent(rbac_tapdb, name: str) -> client.TapdbApi:
    return client.connect(rbac_tapdb["chassis"], 10, chassis=name,
                          creds=pki.issue(rbac_tapdb["ca"], name, "chassis"))


def refused(conn: rpc.Connection, *ops_: dict) -> str:
    """The server's refusal of a transaction (it must refuse it)."""
    result = conn.transact(*ops_)
    errors = [r for r in result if isinstance(r, dict) and "error" in r]
    assert errors, f"tapdb accepted {ops_}"
    assert errors[0]["error"] == "permission error", errors[0]
    return errors[0]["details"]


def everything(operator: ops.IntentDb) -> tuple:
    every = operator.everything()
    return every.snapshot.intent, every.bindings, every.chassis, every.applied


def counters(operator: ops.IntentDb) -> dict:
    return operator.everything().counters


def test_an_agent_writes_only_what_its_chassis_owns(rbac_tapdb):
    operator = ops.connect(rbac_tapdb["operator"], 10,
                           creds=pki.issue(rbac_tapdb["ca"], "operator", "operator"))
    host_b = agent(rbac_tapdb, "host-b")
    host_a = agent(rbac_tapdb, "host-a")
    try:
        operator.target_add("target-01", port="vm-164")
        operator.session_add("session-01", target="target-01", priority="1")
        operator.source_add("session-01", port="vm-230", direction="in")
        # host-b: its chassis, heartbeat, the binding of its VM, the status of its target
        host_b.register_chassis("host-b", "10.255.0.2", "gre")
        host_b.heartbeat("host-b", int(time.time()), 10)
        assert host_b.publish_bindings("host-b", {"vm-164"}) == 1
        snap = host_b.snapshot()
        assert host_b.write_status("host-b", snap, {}, {"target-01": ACTIVE_B}) == 1
        # host-a does all of that for itself, and reports what it applied
        host_a.register_chassis("host-a", "10.255.0.1", "gre")
        host_a.heartbeat("host-a", int(time.time()), 10)
        host_a.watch("host-a", {"vm-230"}, set())
        assert host_a.publish_bindings("host-a", {"vm-230"}) == 1
        snap = wait_until(lambda: (lambda s: s if s.intent.session("session-01").sources
                                   else None)(host_a.snapshot()), 10, "host-a's source")
        assert host_a.write_status("host-a", snap, {("session-01", "vm-230"): {
            "state": "active", "chassis": "host-a"}}, {}) == 1
        assert host_a.write_counters("host-a", snap, {"session-01": {"packets": 1}}) == 1
        assert host_a.report_applied("host-a", 5)
        before = everything(operator)
        intent, bindings, chassis, applied = before
        assert dict(intent.target("target-01").status) == ACTIVE_B
        assert dict(intent.session("session-01").sources[0].status)["chassis"] == "host-a"
        assert bindings == {"vm-164": ("host-b",), "vm-230": ("host-a",)}
        assert applied == {"host-a": 5, "host-b": 0}
        assert counters(operator) == {"session-01": {"host-a": {"packets": 1}}}

        # host-a's certificate, straight to the agents' listener: each write the server
        # must refuse
        conn = rpc.connect(rbac_tapdb["chassis"], 10, pki.issue(rbac_tapdb["ca"], "host-a",
                                                               "chassis"))
        try:
            b = [["name", "==", "host-b"]]
            status_b = [["chassis", "==", "host-b"]]
            target = intent.target("target-01")
            attempts = {
                "host-b's tunnel IP": {"op": "update", "table": "Chassis", "where": b,
                                       "row": {"tunnel_ip": "10.255.0.66"}},
                "host-b's chassis row": {"op": "delete", "table": "Chassis", "where": b},
                "a chassis of another name": {
                    "op": "insert", "table": "Chassis",
                    "row": {"name": "aaa-evil", "tunnel_ip": "10.255.0.66", "encap": "gre"}},
                "its own row renamed": {"op": "update", "table": "Chassis",
                                        "where": [["name", "==", "host-a"]],
                                        "row": {"name": "host-c"}},
                "host-b's heartbeat": {"op": "update", "table": "Chassis_Private", "where": b,
                                       "row": {"heartbeat": 0}},
                "host-b's applied generation": {
                    "op": "update", "table": "Chassis_Private", "where": b,
                    "row": {"applied_generation": 99}},
                "a binding of host-b": {"op": "insert", "table": "Binding",
                                        "row": {"iface_id": "vm-164", "chassis": "aaa-evil"}},
                "host-b's binding deleted": {"op": "delete", "table": "Binding",
                                             "where": [["chassis", "==", "host-b"]]},
                "its binding moved to host-b": {"op": "update", "table": "Binding",
                                                "where": [["chassis", "==", "host-a"]],
                                                "row": {"chassis": "host-b"}},
                "host-b's status": {"op": "update", "table": "Target_Status",
                                    "where": status_b, "row": {"status": ["map", []]}},
                "host-b's status deleted": {"op": "delete", "table": "Target_Status",
                                            "where": status_b},
                "a status in host-b's name": {"op": "insert", "table": "Source_Status",
                                              "row": {"chassis": "host-b",
                                                      "status": ["map", [["state", "error"]]]}},
                "counters in host-b's name": {"op": "insert", "table": "Session_Stats",
                                              "row": {"chassis": "host-b",
                                                      "counters": ["map", [["packets", 1]]]}},
                "a target": {"op": "insert", "table": "Mirror_Target",
                             "row": {"name": "evil", "type": "vxlan", "tunnel_key": 9,
                                     "remote_ip": "10.255.0.66", "enabled": True}},
                "a target's address": {"op": "update", "table": "Mirror_Target", "where": [],
                                       "row": {"iface_id": "vm-230"}},
                "a session": {"op": "update", "table": "Mirror_Session", "where": [],
                              "row": {"enabled": False}},
                "a filter": {"op": "insert", "table": "Mirror_Filter", "row": {"name": "f"}},
                "a rule": {"op": "update", "table": "Filter_Rule", "where": [],
                           "row": {"action": "accept"}},
                "a source": {"op": "update", "table": "Mirror_Source", "where": [],
                             "row": {"iface_id": "vm-99"}},
                "the generation": {"op": "mutate", "table": "Tap_Global", "where": [],
                                   "mutations": [["generation", "+=", 1]]},
                "the agents' role": {"op": "delete", "table": "RBAC_Role", "where": []},
                "a permission": {"op": "update", "table": "RBAC_Permission", "where": [],
                                 "row": {"authorization": ["set", []]}},
            }
            for what, op in attempts.items():
                details = refused(conn, op)
                assert 'client "host-a" role "sdnagent-chassis"' in details, (what, details)
            # the listeners of the server (its local database) are not the agents' either
            result = conn.call("transact", schema.LOCAL_NAME,
                               {"op": "delete", "table": "Local_Config", "where": []})
            assert result[0]["error"] == "permission error"
            with pytest.raises(rpc.RpcRefused, match="permission error"):
                conn.call("convert", schema.NAME, schema.load())
            # and its own rows, directly: allowed
            assert conn.transact({"op": "update", "table": "Chassis",
                                  "where": [["name", "==", "host-a"]],
                                  "row": {"tunnel_ip": "10.255.0.11"}}) == [{"count": 1}]
        finally:
            conn.close()
        intent, bindings, chassis, applied = everything(operator)
        assert (intent, bindings, applied) == before[:2] + before[3:]
        assert ("host-a", "10.255.0.11", "gre") in chassis and len(chassis) == 2
        assert target.status == intent.target("target-01").status
        assert counters(operator) == {"session-01": {"host-a": {"packets": 1}}}
    finally:
        for c in (host_a, host_b):
            c.close()
        operator.close()


def test_the_role_is_packaged_and_kept(rbac_tapdb):
    """``start`` writes the role when it differs, and a server left running is not
    touched; a role someone loosened is put back by the next start."""
    srv = rbac_tapdb["server"]
    conn = rpc.connect(srv.remote, 10)
    try:
        def role() -> dict:
            return server.role_in(conn.transact(
                {"op": "select", "table": "RBAC_Role", "where": []},
                {"op": "select", "table": "RBAC_Permission", "where": []}))
        assert role() == schema.role_rows()
        assert role()["Binding"] == ("chassis", True, ())
        conn.transact({"op": "update", "table": "RBAC_Permission",
                       "where": [["table", "==", "Binding"]],
                       "row": {"authorization": ["set", []]}})
        assert role() != schema.role_rows()
        assert srv.ensure_role() is True and role() == schema.role_rows()
        assert srv.ensure_role() is False
    finally:
        conn.close()


def test_chassis_remotes_are_tls_only(tmp_path):
    srv = server.TapdbServer(tmp_path / "db")
    with pytest.raises(server.TapdbServerError) as info:
        srv.start(chassis_remotes=["ptcp:6642"])
    assert str(info.value) == ("--chassis-remote: ptcp:6642 is not allowed; agents' listeners "
                               "are pssl:PORT[:ADDR] (their role is enforced on the "
                               "certificate's CN)")
    assert not srv.db.exists()


def test_a_claim_by_another_chassis_diverts_no_copy():
    """The issue's attack, by a hypervisor whose certificate the CA did issue (chassis
    aaa-evil, compromised): it cannot forge rows of other chassis; what it may write, a
    claim that the target's iface is on its own chassis, stops the copies instead of
    diverting them, and they flow again once the claim is gone."""
    require_ovs()
    lab = sandbox.Lab(tls=True)
    try:
        lab.start()
        mlab = MirrorLab(lab)
        tgt = two_host_example(mlab)
        evil_creds = pki.issue(lab.dir / "pki", "aaa-evil", "chassis")
        conn = rpc.connect(lab.chassis_remote, 10, evil_creds)
        try:
            # what the issue did with a plain connection: a chassis and a binding forged
            # for another name
            refused(conn, {"op": "insert", "table": "Chassis",
                           "row": {"name": "zzz-forged", "tunnel_ip": "10.255.0.66",
                                   "encap": "gre"}})
            refused(conn, {"op": "insert", "table": "Binding",
                           "row": {"iface_id": "vm-164", "chassis": "host-b"}})
        finally:
            conn.close()
        evil = client.connect(lab.chassis_remote, 10, chassis="aaa-evil", creds=evil_creds)
        try:
            evil.register_chassis("aaa-evil", "10.255.0.66", "gre")
            evil.heartbeat("aaa-evil", int(time.time()), 10)
            evil.publish_bindings("aaa-evil", {"vm-164"})
            mlab.wait_source("session-01", "vm-230", "error")
            st = mlab.source_state("session-01", "vm-230")
            assert st["reason"] == ("target target-01: iface vm-164 is claimed by chassis "
                                     "aaa-evil and host-b; copies wait until only one has it")
            assert not [f for f in mlab.brtap_flows("host-a") if "10.255.0.66->tun_dst" in f]
            got = len(mlab.captured(tgt))
            mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
            time.sleep(1.0)  # a copy would be there in milliseconds
            assert len(mlab.captured(tgt)) == got
            evil.publish_bindings("aaa-evil", set())
        finally:
            evil.close()
        mlab.wait_source("session-01", "vm-230")
        sent = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
        assert mlab.wait_frames(tgt, got + 1)[-1] == sent[:96]
    finally:
        for host in lab.hosts.values():  # shown by pytest when the test failed
            print(f"---- sdnagent log of {host.name}\n{host.agent_log()[-6000:]}")
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)
