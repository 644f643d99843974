"""sdnagent-tapdb: lifecycle, online schema conversion, a 3-member Raft cluster."""
from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sdnagent import model
from sdnagent.tapdb import client, ops, schema, server
from tests.conftest import require_ovs

BIN = Path(sys.executable).parent


@pytest.fixture
def workdir():
    require_ovs()
    d = Path(tempfile.mkdtemp(prefix="sdn-"))
    yield d
    server_dirs = [p.parent for p in d.glob("**/tapdb.pid")]
    for sd in server_dirs:
        server.TapdbServer(sd).stop()
    shutil.rmtree(d, ignore_errors=True)


def tapdb_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sdnagent-tapdb"), *args], capture_output=True, text=True,
                          timeout=120)


def test_start_status_stop(workdir):
    d = str(workdir / "db")
    first = tapdb_cli("start", "--dir", d)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"sdnagent-tapdb: created {d}/tapdb.db"
    assert lines[1].startswith("sdnagent-tapdb: started ovsdb-server (pid ")
    again = tapdb_cli("start", "--dir", d)
    assert again.returncode == 0 and "already running" in again.stdout
    status = tapdb_cli("status", "--dir", d)
    assert status.returncode == 0
    assert "state: running" in status.stdout
    assert f"schema: {schema.version()}" in status.stdout
    assert f"socket: unix:{d}/tapdb.sock" in status.stdout
    assert tapdb_cli("stop", "--dir", d).stdout == "sdnagent-tapdb: stopped\n"
    assert tapdb_cli("status", "--dir", d).returncode == 3
    assert tapdb_cli("stop", "--dir", d).stdout == "sdnagent-tapdb: not running\n"
    # restarting keeps the data: nothing is created again
    assert "created" not in tapdb_cli("start", "--dir", d).stdout
    assert tapdb_cli("stop", "--dir", d).returncode == 0


def old_schema() -> dict:
    """The packaged schema as an earlier release had it: no Binding table, fewer columns,
    the heartbeat in Chassis (1.0.0) rather than in Chassis_Private, statuses in the
    sources' rows (1.3.0 gave them rows of their own), no RBAC."""
    old = copy.deepcopy(schema.load())
    old["version"] = "0.9.0"
    for table in ("Binding", "Chassis_Private", "Source_Status", "Target_Status", "RBAC_Role",
                  "RBAC_Permission"):
        del old["tables"][table]
    old["tables"]["Chassis"]["columns"]["heartbeat"] = {"type": "integer"}
    del old["tables"]["Mirror_Source"]["columns"]["external_ids"]
    old["tables"]["Mirror_Source"]["columns"]["status"] = {
        "type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
    return old


def test_start_converts_an_older_database(workdir, monkeypatch):
    srv = server.TapdbServer(workdir / "db")
    srv.dir.mkdir()
    old = workdir / "old.ovsschema"
    old.write_text(json.dumps(old_schema()))
    subprocess.run(["ovsdb-tool", "create", str(srv.db), str(old)], check=True)
    rows = ["Tap",
            {"op": "insert", "table": "Tap_Global", "row": {"generation": 7}},
            {"op": "insert", "table": "Chassis",
             "row": {"name": "host-a", "tunnel_ip": "10.255.0.1", "encap": "gre",
                     "heartbeat": 1700000000}},
            {"op": "insert", "table": "Mirror_Target", "uuid-name": "t",
             "row": {"name": "target-01", "type": "port", "iface_id": "vm-164", "tunnel_key": 1,
                     "enabled": True}},
            {"op": "insert", "table": "Filter_Rule", "uuid-name": "r",
             "row": {"priority": 1, "action": "accept", "protocol": 6, "ethertype": "ipv4",
                     "dst_port_min": 1234, "dst_port_max": 1234}},
            {"op": "insert", "table": "Mirror_Filter", "uuid-name": "f",
             "row": {"name": "filter-01", "inbound_rules": ["named-uuid", "r"]}},
            {"op": "insert", "table": "Mirror_Source", "uuid-name": "s",
             "row": {"type": "port", "iface_id": "vm-230", "direction": "in", "enabled": True,
                     "status": ["map", [["state", "active"], ["chassis", "host-a"]]]}},
            {"op": "insert", "table": "Mirror_Session",
             "row": {"name": "session-01", "priority": 1, "vni": 1, "packet_length": 96,
                     "enabled": True, "target": ["named-uuid", "t"],
                     "filter": ["named-uuid", "f"], "sources": ["named-uuid", "s"]}}]
    subprocess.run(["ovsdb-tool", "transact", str(srv.db), json.dumps(rows)], check=True,
                   capture_output=True)

    # served unconverted, the old database is refused by clients with a clear reason
    monkeypatch.setattr(server.TapdbServer, "convert_if_needed", lambda self, timeout=30: None)
    monkeypatch.setattr(server.TapdbServer, "ensure_role", lambda self, timeout=30: False)
    srv.start()
    for connect, error in ((client.connect, client.TapdbError), (ops.connect, ops.TapdbError)):
        with pytest.raises(error) as info:
            connect(srv.remote, 10)
        assert str(info.value) == (
            f"tapdb at {srv.remote} has schema version 0.9.0, older than {schema.version()}; "
            "restart it with 'sdnagent-tapdb start' to convert it")
    srv.stop()
    monkeypatch.undo()

    done = srv.start()
    assert done[-3:-1] == [f"converted the database from schema 0.9.0 to {schema.version()}",
                           f"wrote the agents' role {schema.CHASSIS_ROLE}"]
    assert done[-1].startswith("started the session clock (pid "), done
    api = client.connect(srv.remote)
    try:
        intent = api.snapshot().intent
        assert intent.target("target-01").iface_id == "vm-164"
        assert intent.filter("filter-01").inbound == (
            model.Rule(1, "accept", 6, "ipv4", dst_port=model.PortRange(1234, 1234)),)
        sess = intent.session("session-01")
        assert (sess.vni, sess.packet_length, sess.target, sess.filter) == (
            1, 96, "target-01", "filter-01")
        # the status an agent wrote in the source's row is gone: agents write it again
        assert sess.sources == (model.Source("port", "in", iface_id="vm-230"),)
        assert api.agent_view().chassis_ips == {"host-a": "10.255.0.1"}
        api.heartbeat("host-a", 1700000010, 10)  # heartbeats now have a table of their own
        assert api.read(client.read_liveness)["host-a"].heartbeat == 1700000010
        assert api.read(client.read_applied) == {"host-a": 0}  # 1.2.0: applied generations
        assert api.report_applied("host-a", 3) and api.read(client.read_applied) == {"host-a": 3}
        operator = ops.connect(srv.remote, 10)
        try:  # the new schema is writable
            operator.target_add("target-02", vxlan="10.0.0.2")
            assert operator.snapshot().intent.target("target-02").tunnel_key == 2
        finally:
            operator.close()
    finally:
        api.close()
    # already running and current, the role as packaged
    assert srv.start() == [f"already running (pid {srv.pid()})"]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_three_member_cluster(workdir):
    ports = free_ports(6)
    raft = [f"tcp:127.0.0.1:{p}" for p in ports[:3]]
    remotes = [f"tcp:127.0.0.1:{p}" for p in ports[3:]]
    members = [server.TapdbServer(workdir / f"m{i}") for i in range(3)]
    members[0].start([f"ptcp:{ports[3]}:127.0.0.1"], cluster="create", local=raft[0])
    for i in (1, 2):
        members[i].start([f"ptcp:{ports[3 + i]}:127.0.0.1"], cluster="join", local=raft[i],
                         members=[raft[0]])
    everywhere = ",".join(remotes)
    api = ops.connect(everywhere, timeout=30)
    try:
        api.target_add("target-01", vxlan="10.0.0.1", enabled=True)
    finally:
        api.close()
    for m in members:
        assert m.is_connected(timeout=20), m.dir
    status = members[0].status()
    assert status["cluster role"] in ("leader", "follower"), status
    # every member serves the same data
    for remote in remotes:
        out = subprocess.run(["ovsdb-client", "dump", remote, "Tap", "Mirror_Target", "name"],
                             capture_output=True, text=True, check=True).stdout
        assert "target-01" in out
    # lose one member: the other two still take writes
    members[0].stop()
    deadline = time.monotonic() + 30
    while True:
        try:
            api = ops.connect(",".join(remotes[1:]), timeout=30)
            break
        except ops.TapdbError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        api.session_add("session-01", target="target-01", priority="1")
        assert api.snapshot().intent.session("session-01").vni == 1
    finally:
        api.close()


def unit_start(directory: Path, options: str,
               unit_name: str = "sdnagent-tapdb.service") -> subprocess.CompletedProcess:
    """A packaged unit's ExecStart as systemd runs it (Type=forking): the command line
    with its options variable split on blanks, this venv's commands and ``directory``
    for /var/lib/sdnagent/tapdb; it must exit 0 within TimeoutStartSec, leaving the
    daemon in PIDFile."""
    unit = (Path(__file__).resolve().parents[2] / "etc/systemd" / unit_name).read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines()
                    if "=" in line and not line.startswith("#"))
    command = (settings["ExecStart"].replace("/usr/bin/sdnagent", f"{BIN}/sdnagent")
               .replace("/var/lib/sdnagent/tapdb", str(directory)))
    timeout = float(settings["TimeoutStartSec"].rstrip("s"))
    variable = "$" + settings["Environment"].rstrip("=")
    argv = [w for word in command.split() for w in
            (options.split() if word == variable else [word])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    pidfile = Path(settings["PIDFile"].replace("/var/lib/sdnagent/tapdb", str(directory)))
    assert proc.returncode == 0, proc.stderr
    assert server._pid_of(pidfile) is not None, proc.stdout
    return proc


def test_a_stopped_cluster_starts_member_by_member(workdir):
    """Each member started alone, as its unit would (the first finds no quorum and still
    succeeds), in an order other than the one they were made in."""
    ports = free_ports(6)
    raft = [f"tcp:127.0.0.1:{p}" for p in ports[:3]]
    listen = [f"ptcp:{p}:127.0.0.1" for p in ports[3:]]
    dirs = [workdir / f"m{i}" for i in range(3)]
    unit_start(dirs[0], f"--remote {listen[0]} --cluster create --local {raft[0]}")
    for i in (1, 2):
        unit_start(dirs[i], f"--remote {listen[i]} --cluster join --local {raft[i]} "
                            f"--member {raft[0]}")
    remotes = ",".join(f"tcp:127.0.0.1:{p}" for p in ports[3:])
    api = ops.connect(remotes, timeout=30)
    try:
        api.target_add("target-01", vxlan="10.0.0.1")
    finally:
        api.close()
    for d in dirs:
        assert tapdb_cli("stop", "--dir", str(d)).returncode == 0
    started = []
    for i in (2, 0, 1):
        started.append(unit_start(dirs[i], f"--remote {listen[i]}").stdout)
    assert "no quorum yet" in started[0], started[0]
    assert "no quorum yet" not in started[-1], started[-1]
    api = ops.connect(remotes, timeout=30)
    try:
        api.target_add("target-02", vxlan="10.0.0.2")
        assert set(api.snapshot().intent.targets) == {"target-01", "target-02"}
    finally:
        api.close()


def unbounded(value: object) -> object:
    """A schema fragment without the bounds 1.5.0 added (as 1.4.0 had it)."""
    if isinstance(value, dict):
        out = {k: unbounded(v) for k, v in value.items() if k != "maxLength"}
        if "max" in out and out.get("min") == 0 and "value" in out:
            out["max"] = "unlimited"
        return out
    return value


def test_conversion_first_removes_what_chassis_wrote_beyond_the_bounds(workdir):
    """A database of a release without bounds, holding what a hostile chassis wrote: the
    rows over the new bounds go (agents write theirs again), the rest is converted."""
    srv = server.TapdbServer(workdir / "db")
    srv.dir.mkdir()
    old = copy.deepcopy(schema.load())
    old["version"] = "1.4.0"
    old["tables"] = unbounded(old["tables"])
    (workdir / "old.ovsschema").write_text(json.dumps(old))
    subprocess.run(["ovsdb-tool", "create", str(srv.db), str(workdir / "old.ovsschema")],
                   check=True)
    big = "x" * 5000
    rows = ["Tap",
            {"op": "insert", "table": "Tap_Global", "row": {"generation": 1}},
            {"op": "insert", "table": "Chassis",
             "row": {"name": "host-a", "tunnel_ip": "10.255.0.1", "encap": "vxlan",
                     "external_ids": ["map", [["junk", big]]]}},
            {"op": "insert", "table": "Chassis",
             "row": {"name": "host-b", "tunnel_ip": "10.255.0.2", "encap": "vxlan",
                     "external_ids": ["map", [["site", "rack-2"]]]}},
            {"op": "insert", "table": "Binding",
             "row": {"iface_id": "vm-230", "chassis": "host-a"}},
            {"op": "insert", "table": "Binding", "row": {"iface_id": big, "chassis": "host-a"}},
            {"op": "insert", "table": "Target_Status",
             "row": {"chassis": "host-a", "status": ["map", [["state", "active"],
                                                             ["reason", big]]]}},
            {"op": "insert", "table": "Session_Stats",
             "row": {"chassis": "host-a",
                     "counters": ["map", [[f"k{i}", i] for i in range(200)]]}},
            {"op": "insert", "table": "Session_Stats",
             "row": {"chassis": "host-b", "counters": ["map", [["packets", 3]]]}}]
    subprocess.run(["ovsdb-tool", "transact", str(srv.db), json.dumps(rows)], check=True,
                   capture_output=True)
    done = srv.start()
    assert any(line == f"converted the database from schema 1.4.0 to {schema.version()} "
               "(first removed 4 chassis-written row(s) or external_ids over the new bounds; "
               "agents write theirs again)" for line in done), done

    def dump(table: str, *columns: str) -> list:
        out = subprocess.run(["ovsdb-client", "--format=json", "query", srv.remote, json.dumps(
            ["Tap", {"op": "select", "table": table, "where": [], "columns": list(columns)}])],
            capture_output=True, text=True, check=True).stdout
        return sorted(json.dumps(r, sort_keys=True) for r in json.loads(out)[0]["rows"])

    assert dump("Chassis", "name", "external_ids") == sorted(
        json.dumps(r, sort_keys=True) for r in (
            {"name": "host-a", "external_ids": ["map", []]},
            {"name": "host-b", "external_ids": ["map", [["site", "rack-2"]]]}))
    assert dump("Binding", "iface_id") == [json.dumps({"iface_id": "vm-230"})]
    assert dump("Target_Status", "chassis") == []
    assert dump("Session_Stats", "chassis") == [json.dumps({"chassis": "host-b"})]
