"""The trust tier: a 3-member TLS cluster on the tapdb CA, a relay in front of it for the
agents, whose certificates come from the chassis CA.  Each attack of a compromised
hypervisor on tapdb fails as it should."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from sdnagent import pki
from sdnagent.tapdb import client, ops, rpc, schema, server
from sdnagent.tls import Tls
from tests.conftest import require_ovs
from tests.functional.test_rbac import refused
from tests.functional.tier import free_ports


@pytest.fixture(scope="module")
def tier():
    """Three members (Raft and operators' listeners on TLS, tapdb CA) and one relay of
    them (agents' listener, chassis CA)."""
    require_ovs()
    directory = tempfile.mkdtemp(prefix="sdn-trust-")
    ca = f"{directory}/pki"
    raft, listen, agents = free_ports(3), free_ports(3), free_ports(1)[0]
    members = [server.TapdbServer(f"{directory}/m{i}") for i in range(3)]
    relay = server.TapdbRelay(f"{directory}/relay")
    member_tls = pki.issue(ca, "tapdb", "tapdb")
    try:
        for i, m in enumerate(members):
            m.start([f"pssl:{listen[i]}:127.0.0.1"], cluster="create" if i == 0 else "join",
                    local=f"ssl:127.0.0.1:{raft[i]}", members=[f"ssl:127.0.0.1:{raft[0]}"],
                    tls=member_tls)
        sources = ",".join(f"ssl:127.0.0.1:{p}" for p in listen)
        relay.start(sources, [f"pssl:{agents}:127.0.0.1"], pki.issue(ca, "relay-1", "relay"),
                    str(pki.chassis_ca(ca)))
        yield {"dir": directory, "ca": ca, "members": members, "relay": relay,
               "raft": [f"ssl:127.0.0.1:{p}" for p in raft], "operators": sources,
               "agents": f"ssl:127.0.0.1:{agents}", "member_tls": member_tls}
    finally:
        relay.stop()
        for m in members:
            m.stop()
        shutil.rmtree(directory, ignore_errors=True)


def operator(tier) -> ops.IntentDb:
    return ops.connect(tier["operators"], 30, creds=pki.issue(tier["ca"], "alice", "operator"))


def chassis_creds(tier, name: str) -> Tls:
    return pki.issue(tier["ca"], name, "chassis")


def raw(tier, remote: str, name: str) -> rpc.Connection:
    return rpc.connect(remote, 10, chassis_creds(tier, name))


def test_a_chassis_certificate_opens_no_door_of_the_members(tier):
    """The operators' listeners and the Raft ports refuse it during the handshake."""
    for remote in [*tier["operators"].split(","), *tier["raft"]]:
        with pytest.raises(rpc.RpcError):
            conn = raw(tier, remote, "host-c")
            conn.transact({"op": "select", "table": "Chassis", "where": []})


def test_a_chassis_certificate_cannot_join_the_cluster(tier):
    """ovsdb-tool join-cluster towards a member, then a server with the chassis's key and
    certificate (and the tapdb CA, which is public): it never becomes a member, and the
    cluster keeps its 3 servers."""
    rogue = os.path.join(tier["dir"], "rogue")
    os.makedirs(rogue)
    creds = chassis_creds(tier, "host-c")
    db = f"{rogue}/tapdb.db"
    local = f"ssl:127.0.0.1:{free_ports(1)[0]}"
    subprocess.run(["ovsdb-tool", "join-cluster", db, schema.NAME, local, tier["raft"][0]],
                   check=True, capture_output=True)
    subprocess.run(["ovsdb-server", db, f"--remote=punix:{rogue}/s.sock",
                    f"--unixctl={rogue}/ctl", f"--pidfile={rogue}/pid", f"--log-file={rogue}/log",
                    f"--private-key={creds.private_key}", f"--certificate={creds.certificate}",
                    f"--ca-cert={tier['member_tls'].ca_cert}", "--detach", "--no-chdir"],
                   check=True, capture_output=True)
    pid = int(open(f"{rogue}/pid").read())
    try:
        deadline = time.monotonic() + 8  # members retry joiners every second or so
        while time.monotonic() < deadline:
            status = subprocess.run(["ovs-appctl", "-t", f"{rogue}/ctl", "cluster/status",
                                     schema.NAME], capture_output=True, text=True).stdout
            assert "Status: cluster member" not in status, status
            time.sleep(0.5)
        assert "joining cluster" in status, status
        leader = subprocess.run(["ovs-appctl", "-t", str(tier["members"][0].ctl),
                                 "cluster/status", schema.NAME],
                                capture_output=True, text=True, check=True).stdout
        servers = leader.split("Servers:")[1]
        assert servers.count("ssl:127.0.0.1:") == 3, leader
        assert local not in servers
    finally:
        os.kill(pid, 15)


def test_behind_the_relay_a_chassis_writes_only_its_own_rows(tier):
    api = operator(tier)
    try:
        api.target_add("target-01", vxlan="10.0.0.1", enabled=True)
    finally:
        api.close()
    agent = client.connect(tier["agents"], 20, chassis="host-a",
                           creds=chassis_creds(tier, "host-a"))
    try:
        # what it may write reaches the members, forwarded by the relay in its own name
        agent.register_chassis("host-a", "10.255.0.1", "vxlan")
        agent.heartbeat("host-a", int(time.time()), 5)
    finally:
        agent.close()
    api = operator(tier)
    try:
        assert ("host-a", "10.255.0.1", "vxlan") in api.everything().chassis
    finally:
        api.close()
    conn = raw(tier, tier["agents"], "host-a")
    try:
        assert "prohibit row insertion into table \"Mirror_Target\"" in refused(
            conn, {"op": "insert", "table": "Mirror_Target",
                   "row": {"name": "rogue-exfil", "type": "vxlan", "remote_ip": "6.6.6.6",
                           "tunnel_key": 99, "enabled": True}})
        refused(conn, {"op": "insert", "table": "Chassis",
                       "row": {"name": "host-b", "tunnel_ip": "10.255.0.9", "encap": "vxlan"}})
        refused(conn, {"op": "update", "table": "Chassis", "where": [["name", "==", "host-a"]],
                       "row": {"external_ids": ["map", [["k", "v"]]]}})
        # the relay's own listeners: a new unauthenticated listener, or none at all
        for op in ({"op": "insert", "table": "Connection",
                    "row": {"target": "ptcp:7777", "role": ""}},
                   {"op": "delete", "table": "Connection", "where": []},
                   {"op": "update", "table": "Connection", "where": [],
                    "row": {"role": ""}}):
            result = conn.call("transact", schema.LOCAL_NAME, op)
            assert result[0].get("error") == "permission error", result
    finally:
        conn.close()


def test_a_20_mb_write_is_refused_and_no_member_pays_for_it(tier):
    """Every string, set and map a chassis may write is bounded: a 20 MB status is
    refused by the relay, and the members never see it."""
    agent = client.connect(tier["agents"], 20, chassis="host-a",
                           creds=chassis_creds(tier, "host-a"))
    agent.close()

    def rss_kib(pid: int) -> int:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    before = {m.dir: rss_kib(m.pid()) for m in tier["members"]}
    conn = raw(tier, tier["agents"], "host-a")
    conn.timeout = 60
    try:
        big = "x" * (20 << 20)
        for op in ({"op": "insert", "table": "Source_Status",
                    "row": {"chassis": "host-a", "status": ["map", [["reason", big]]]}},
                   {"op": "insert", "table": "Binding",
                    "row": {"chassis": "host-a", "iface_id": big}},
                   {"op": "update", "table": "Chassis_Private",
                    "where": [["name", "==", "host-a"]],
                    "row": {"external_ids": ["map", [["k", big]]]}}):
            result = conn.transact(op)
            errors = [r for r in result if isinstance(r, dict) and "error" in r]
            assert errors and errors[0]["error"] in ("constraint violation",
                                                     "permission error"), errors
        # too many entries in a map, each small
        many = ["map", [[f"k{i}", "v"] for i in range(17)]]
        result = conn.transact({"op": "insert", "table": "Target_Status",
                                "row": {"chassis": "host-a", "status": many}})
        assert "map must have 0 to 16 members" in result[0].get("details", ""), result
    finally:
        conn.close()
    # the members' memory: the 60 MB offered went to the relay alone
    for m in tier["members"]:
        assert rss_kib(m.pid()) - before[m.dir] < 8 << 10, m.dir


def test_a_relay_of_its_own_started_as_its_unit_runs_it(tier):
    """``sdnagent-tapdb start --relay-of ...`` under the packaged relay unit: agents write
    their rows through it; status and stop see it."""
    from tests.functional.test_tapdb_server import tapdb_cli, unit_start
    directory = os.path.join(tier["dir"], "relay-2")
    port = free_ports(1)[0]
    relay_tls = pki.issue(tier["ca"], "relay-2", "relay")
    options = (f"--relay-of {tier['operators']} --chassis-remote pssl:{port}:127.0.0.1 "
               f"--private-key {relay_tls.private_key} --certificate {relay_tls.certificate} "
               f"--ca-cert {relay_tls.ca_cert} --chassis-ca-cert {pki.chassis_ca(tier['ca'])}")
    done = unit_start(directory, options, "sdnagent-tapdb-relay.service")
    assert "started the relay of" in done.stdout, done.stdout
    try:
        agent = client.connect(f"ssl:127.0.0.1:{port}", 20, chassis="host-r",
                               creds=chassis_creds(tier, "host-r"))
        try:
            agent.register_chassis("host-r", "10.255.0.9", "vxlan")
        finally:
            agent.close()
        api = operator(tier)
        try:
            assert ("host-r", "10.255.0.9", "vxlan") in api.everything().chassis
        finally:
            api.close()
        status = tapdb_cli("status", "--dir", directory)
        assert status.returncode == 0 and "state: running" in status.stdout
        assert "source: connected" in status.stdout, status.stdout
    finally:
        assert tapdb_cli("stop", "--dir", directory).stdout == "sdnagent-tapdb: stopped\n"
    assert server.TapdbRelay(os.path.join(directory, "relay")).pid() is None
