"""sdnagent-api against a real tapdb and agents: the two-session example created through
the API and mirrored on the wire; refusals answered 400, 404 and 409 with tapctl's words
and nothing written; tokens and roles; the audit trail; the OpenAPI document validated by
a validator nobody here wrote; the packaged command serving it."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import pytest

from sdnagent import model, sandbox
from sdnagent.api import identity
from sdnagent.api.app import create_app
from sdnagent.api.audit import AuditLog
from sdnagent.api.replica import Replica
from sdnagent.tapdb import ops
from tests.conftest import require_ovs
from tests.functional.mirrorlab import BIN, MirrorLab, wait_until
from tests.functional.test_agent import start_agents, target_port

fastapi_testclient = pytest.importorskip("fastapi.testclient")
validator = pytest.importorskip("openapi_spec_validator")


REPLICAS: list[Replica] = []


@pytest.fixture(autouse=True)
def _close_replicas():
    yield
    while REPLICAS:
        REPLICAS.pop().close()


def replica_of(tapdb) -> Replica:
    REPLICAS.append(Replica(tapdb.remote, 10))
    return REPLICAS[-1]


@pytest.fixture
def api_lab():
    require_ovs()
    lab = sandbox.Lab()
    try:
        lab.start()
        tokens = lab.dir / "api-tokens"
        admin = identity.add(tokens, "portal", "admin")
        reader = identity.add(tokens, "soc", "reader")
        audit = AuditLog(lab.dir / "audit.jsonl")
        app = create_app(lambda: ops.connect(lab.remote, 10), identity.load(tokens), audit,
                         replica_of(lab.tapdb))
        client = fastapi_testclient.TestClient(app)
        yield MirrorLab(lab), client, {"Authorization": f"Bearer {admin}"}, \
            {"Authorization": f"Bearer {reader}"}, lab.dir / "audit.jsonl"
    finally:
        for host in lab.hosts.values():
            print(f"---- sdnagent log of {host.name}\n{host.agent_log()[-4000:]}")
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)


def example_through_the_api(client, admin) -> None:
    """etc/examples/two-sessions.sh, as a portal would send it."""
    wait = {"wait": "true", "timeout": "15"}
    calls = [
        ("/v1/traffic-mirror-targets", {"name": "target-01", "port": "vm-164", "enabled": True}),
        ("/v1/traffic-mirror-targets", {"name": "target-02", "vxlan": sandbox.COLLECTOR_IP,
                                        "enabled": True}),
        ("/v1/traffic-mirror-filters", {"name": "filter-01"}),
        ("/v1/traffic-mirror-filters/filter-01/rules",
         {"direction": "inbound", "priority": "1", "action": "accept", "protocol": "tcp",
          "src": "192.168.0.161/32", "dst": "192.168.0.230/32", "dst_port": "1234-1234"}),
        ("/v1/traffic-mirror-filters", {"name": "filter-02"}),
        ("/v1/traffic-mirror-filters/filter-02/rules",
         {"direction": "inbound", "priority": "1", "action": "accept", "protocol": "udp",
          "src": "192.168.0.161/32", "dst": "192.168.0.230/32", "dst_port": "1235"}),
        ("/v1/traffic-mirror-sessions", {"name": "session-01", "target": "target-01",
                                         "filter": "filter-01", "priority": "1", "vni": "1",
                                         "packet_length": "96", "enabled": True}),
        ("/v1/traffic-mirror-sessions", {"name": "session-02", "target": "target-02",
                                         "filter": "filter-02", "priority": "2", "vni": "2",
                                         "packet_length": "96", "enabled": True}),
        ("/v1/traffic-mirror-sessions/session-01/sources", {"port": "vm-230",
                                                            "direction": "in"}),
        ("/v1/traffic-mirror-sessions/session-02/sources", {"port": "vm-230",
                                                            "direction": "in"}),
    ]
    for path, body in calls:
        r = client.post(path, json=body, headers=admin, params=wait)
        assert r.status_code == 201, (path, r.text)
        assert r.json()["applied"]["complete"] is True, r.text


def test_the_two_session_example_through_the_api(api_lab):
    """Built by a member of project blue, on the ports the cloud registered to blue."""
    mlab, client, admin, reader, _ = api_lab
    for vm in ("vm-161", "vm-230", "vm-99"):
        mlab.vm("host-a", vm)
    start_agents(mlab)
    tgt = target_port(mlab, "host-b")
    for iface in ("vm-230", "vm-164"):
        assert client.post("/v1/port-registrations", headers=admin, json={
            "iface_id": iface, "project": "blue"}).status_code == 201
    tokens = mlab.lab.dir / "api-tokens"
    member = {"Authorization": "Bearer " + identity.add(tokens, "alice", "member", "blue")}
    app = create_app(lambda: ops.connect(mlab.lab.remote, 10), identity.load(tokens),
                     AuditLog(mlab.lab.dir / "audit-2.jsonl"), replica_of(mlab.lab.tapdb))
    client = fastapi_testclient.TestClient(app)
    example_through_the_api(client, member)
    assert {s["project"] for s in client.get("/v1/traffic-mirror-sessions",
                                             headers=admin).json()["items"]} == {"blue"}
    wait_until(lambda: client.get("/v1/traffic-mirror-sessions", headers=reader).json()[
        "items"][0]["state"] == "active", 15, "session-01 active")
    mlab.send("host-a", "vm-161", "vm-230", "tcp", 1235)  # not mirrored
    udp = mlab.send("host-a", "vm-161", "vm-230", "udp", 1235)
    tcp = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    assert mlab.wait_frames(tgt, 1) == [tcp[:96]]
    [copy] = wait_until(lambda: [s for s in mlab.collected() if s.vni == 2], 10, "VNI 2")
    assert copy.inner_bytes == udp[:96]

    page = client.get("/v1/traffic-mirror-sessions", headers=reader,
                      params={"limit": 1, "offset": 1}).json()
    assert (page["total"], page["offset"], page["limit"]) == (2, 1, 1)
    assert [s["name"] for s in page["items"]] == ["session-02"]
    assert client.get("/v1/traffic-mirror-sessions", headers=reader,
                      params={"chassis": "host-a", "name": "-01"}).json()["total"] == 1
    wait_until(lambda: client.get("/v1/traffic-mirror-sessions/session-01/stats",
                                  headers=reader).json()["counters"].get("packets") == 1, 20,
               "session-01's counters")
    t = client.get("/v1/traffic-mirror-targets/target-01", headers=reader).json()
    assert (t["type"], t["where"], t["status"]["state"]) == ("port", "port vm-164", "active")
    out = client.post("/v1/traffic-mirror-trace", headers=reader, json={
        "port": "vm-230", "direction": "in",
        "packet": "tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1234"}).json()
    assert out["lines"][-1].startswith("mirrored by session-01: the first 96 bytes to target "
                                       "target-01 (port vm-164) on chassis host-b")
    chassis = client.get("/v1/chassis", headers=reader).json()["items"]
    assert [(c["name"], c["state"]) for c in chassis] == [("host-a", "alive"),
                                                          ("host-b", "alive")]
    # disabled from the API: the copies stop
    r = client.patch("/v1/traffic-mirror-sessions/session-01", headers=member,
                     json={"enabled": False}, params={"wait": "true"})
    assert r.status_code == 200 and r.json()["applied"]["complete"], r.text
    assert client.get("/v1/traffic-mirror-sessions/session-01", headers=reader).json()[
        "sources"][0]["status"] == {"state": "disabled", "reason": "the session is disabled",
                                    "chassis": "host-a"}
    # its controls, and enabled again, in one change
    r = client.patch("/v1/traffic-mirror-sessions/session-01", headers=member, json={
        "enabled": True, "max_pps": "1000", "sample": "1/2", "duration": "1h"})
    item = r.json()["item"]
    assert (r.status_code, item["enabled"], item["max_pps"], item["sample"]) == (
        200, True, 1000, 2), r.text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["ends_at"]), item
    assert client.get("/v1/traffic-mirror-sessions/session-01", headers=reader).json()[
        "max_pps"] == 1000


def dump(mlab: MirrorLab) -> str:
    return mlab.tapctl("show")


@pytest.mark.parametrize("method, path, body, status, message", [
    ("post", "/v1/traffic-mirror-sessions", {"name": "s3", "target": "target-01",
                                             "priority": "3", "vni": "16777216"},
     400, "vni: 16777216 is out of range; allowed 0..16777215"),
    ("post", "/v1/traffic-mirror-sessions", {"name": "s3", "target": "target-01",
                                             "priority": "2"},
     409, "priority: session 'session-02' already has priority 2; session priorities are "
          "unique"),
    ("post", "/v1/traffic-mirror-sessions", {"name": "s3", "target": "target-01",
                                             "priority": "3", "duration": "10x"},
     400, "duration: '10x' is not a duration; give e.g. 90s, 10m, 2h, 1d or 1h30m"),
    ("patch", "/v1/traffic-mirror-sessions/session-01", {"sample": "1/0", "max_pps": "5"},
     400, "sample: 0 is out of range; allowed 1..65536"),
    ("patch", "/v1/traffic-mirror-sessions/session-01", {"no_end": False},
     400, "session: nothing to change; give max-pps, max-kbps, sample, duration, until or "
          "no-end"),
    ("post", "/v1/traffic-mirror-targets", {"name": "target-01", "vxlan": "10.0.0.1"},
     409, "target name: a target named 'target-01' already exists"),
    ("post", "/v1/traffic-mirror-targets", {"name": "t3", "vxlan": "10.0.0"},
     400, "vxlan: '10.0.0' is not an IP address; use an IPv4 or IPv6 unicast address"),
    ("post", "/v1/traffic-mirror-targets", {"name": "t3", "vxlan": "10.0.0.1", "colour": "red"},
     400, "colour: Extra inputs are not permitted"),
    ("post", "/v1/traffic-mirror-filters/filter-01/rules",
     {"direction": "inbound", "priority": "5", "action": "accept", "protocol": "icmp",
      "dst_port": "80"}, 400, "dst-port: port ranges need protocol tcp or udp, not icmp"),
    ("post", "/v1/traffic-mirror-filters/filter-01/rules",
     {"direction": "sideways", "priority": "5", "action": "accept"},
     400, "direction: Input should be 'inbound' or 'outbound'"),
    ("delete", "/v1/traffic-mirror-filters/filter-01", None,
     409, "filter: filter 'filter-01' is used by session(s) session-01; delete those sessions "
          "first"),
    ("delete", "/v1/traffic-mirror-sessions/nope", None, 404, "session: no session named 'nope'"),
    ("patch", "/v1/traffic-mirror-targets/nope", {"enabled": True},
     404, "target: no target named 'nope'"),
    ("post", "/v1/traffic-mirror-sessions/session-01/sources", {"port": "vm-164"},
     409, "port: iface vm-164 is target 'target-01'; a port cannot be both a source and a "
          "target"),
    ("post", "/v1/traffic-mirror-sessions", {"name": "s3", "target": "target-01",
                                             "priority": "3", "wait": "x"},
     400, "wait: Extra inputs are not permitted"),
])
def test_every_refusal_is_one_line_and_writes_nothing(api_lab, method, path, body, status,
                                                      message):
    mlab, client, admin, _, audit = api_lab
    example_through_the_api(client, admin)
    before = dump(mlab)
    r = getattr(client, method)(path, headers=admin, **({"json": body} if body else {}))
    assert (r.status_code, r.json()["message"]) == (status, message), r.text
    assert dump(mlab) == before
    last = json.loads(audit.read_text().splitlines()[-1])
    assert (last["who"], last["method"], last["path"], last["status"], last["outcome"],
            last["request"]) == ("portal", method.upper(), path, status, message, body)


def test_tokens_roles_and_the_audit_trail(api_lab):
    mlab, client, admin, reader, audit = api_lab
    assert client.get("/v1/traffic-mirror-targets").status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    r = client.post("/v1/traffic-mirror-filters", json={"name": "f"}, headers=bad)
    assert (r.status_code, r.json()["message"]) == (
        401, "a known bearer token is needed (Authorization: Bearer TOKEN)")
    r = client.post("/v1/traffic-mirror-filters", json={"name": "f"}, headers=reader)
    assert (r.status_code, r.json()["message"]) == (
        403, "identity soc (reader) may not change anything")
    assert client.get("/v1/traffic-mirror-filters", headers=reader).json()["total"] == 0
    assert client.post("/v1/traffic-mirror-filters", json={"name": "f"},
                       headers=admin).status_code == 201
    assert client.get("/v1/audit", headers=reader).status_code == 403
    records = client.get("/v1/audit", headers=admin).json()
    assert [(r["who"], r["status"]) for r in records] == [("-", 401), ("soc", 403),
                                                         ("portal", 201)]
    assert all(r["path"] == "/v1/traffic-mirror-filters" for r in records)
    # the file is what an operator ships: one JSON object a line, reads not recorded
    assert len(audit.read_text().splitlines()) == 3
    # a token's hash is all the tokens file holds
    text = (mlab.lab.dir / "api-tokens").read_text()
    assert admin["Authorization"].split()[1] not in text


def test_the_openapi_document_is_valid(api_lab):
    _, client, _, _, _ = api_lab
    spec = client.get("/openapi.json").json()
    validator.validate(spec)
    paths = set(spec["paths"])
    assert {"/v1/traffic-mirror-targets", "/v1/traffic-mirror-filters/{name}/rules",
            "/v1/traffic-mirror-sessions/{name}/sources", "/v1/traffic-mirror-trace",
            "/v1/chassis", "/v1/audit"} <= paths
    page = client.get("/docs")
    assert page.status_code == 200 and "POST /v1/traffic-mirror-sessions" in page.text


def test_requests_and_their_latency_are_metrics(api_lab):
    _, client, admin, reader, _ = api_lab
    assert client.get("/metrics").status_code == 401
    client.get("/v1/traffic-mirror-targets", headers=reader)
    client.post("/v1/traffic-mirror-filters", headers=admin, json={"name": "f"})
    client.post("/v1/traffic-mirror-filters", headers=admin, json={"name": "f"})
    text = client.get("/metrics", headers=reader).text
    for line in ('sdnagent_api_requests_total{method="GET",route="/v1/traffic-mirror-targets",'
                 'status="200"} 1.0',
                 'sdnagent_api_requests_total{method="POST",route="/v1/traffic-mirror-filters",'
                 'status="201"} 1.0',
                 'sdnagent_api_requests_total{method="POST",route="/v1/traffic-mirror-filters",'
                 'status="409"} 1.0',
                 'sdnagent_api_request_seconds_count{method="POST",'
                 'route="/v1/traffic-mirror-filters"} 2.0'):
        assert line in text, text


def test_the_packaged_command_serves_it(tapdb, tmp_path):
    """sdnagent-api serve on loopback, as its unit runs it; stopped by its PID."""
    import httpx
    tokens = tmp_path / "tokens"
    made = subprocess.run([str(BIN / "sdnagent-api"), "token-add", "ops", "--role", "admin",
                           "--tokens", str(tokens)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    port = sandbox.free_port()
    proc = subprocess.Popen([str(BIN / "sdnagent-api"), "serve", "--db", tapdb.remote,
                             "--listen", f"127.0.0.1:{port}", "--tokens", str(tokens),
                             "--audit-log", str(tmp_path / "audit.jsonl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 15, "sdnagent-api to answer")
        r = httpx.post(f"{url}/v1/traffic-mirror-filters", json={"name": "f1"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 201, r.text
        [record] = [json.loads(line) for line in
                    (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert (record["who"], record["status"], record["outcome"]) == ("ops", 201, "ok")
        again = subprocess.run([str(BIN / "sdnagent-api"), "token-add", "ops", "--role",
                                "admin", "--tokens", str(tokens)], capture_output=True,
                               text=True)
        assert (again.returncode, again.stderr) == (
            1, "sdnagent-api: name: an identity named 'ops' already exists\n")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_a_project_sees_and_uses_only_its_own(tapdb, tmp_path):
    """Project blue's member builds a session on blue's ports; red's member can neither
    list, read, change, mirror nor target any of it, nor register ports: each attempt
    answered 403 or 404, and audited."""
    tokens = tmp_path / "tokens"
    tok = {name: {"Authorization": "Bearer " + identity.add(tokens, name, role, project)}
           for name, role, project in (("ops", "admin", None), ("alice", "member", "blue"),
                                       ("bob", "member", "red"),
                                       ("red-soc", "reader", "red"))}
    audit_path = tmp_path / "audit.jsonl"
    app = create_app(lambda: ops.connect(tapdb.remote, 10), identity.load(tokens),
                     AuditLog(audit_path), replica_of(tapdb))
    client = fastapi_testclient.TestClient(app)
    for iface, project in (("vm-230", "blue"), ("vm-164", "blue"), ("vm-161", "red")):
        r = client.post("/v1/port-registrations", headers=tok["ops"],
                        json={"iface_id": iface, "project": project})
        assert r.status_code == 201, r.text
    alice, bob = tok["alice"], tok["bob"]
    for path, body in (("/v1/traffic-mirror-targets", {"name": "t-blue", "port": "vm-164"}),
                       ("/v1/traffic-mirror-filters", {"name": "f-blue"}),
                       ("/v1/traffic-mirror-sessions", {"name": "s-blue", "target": "t-blue",
                                                        "filter": "f-blue", "priority": "5"}),
                       ("/v1/traffic-mirror-sessions/s-blue/sources", {"port": "vm-230"}),
                       ("/v1/traffic-mirror-targets", {"name": "t-red",
                                                       "vxlan": "192.0.2.9"})):
        who = bob if body.get("name", "").endswith("red") else alice
        r = client.post(path, json=body, headers=who)
        assert r.status_code == 201, (path, r.text)
    assert [t["project"] for t in client.get("/v1/traffic-mirror-targets",
                                             headers=tok["ops"]).json()["items"]] == ["blue",
                                                                                      "red"]

    refused = [
        ("get", "/v1/traffic-mirror-targets/t-blue", None, 404,
         "target: no target named 't-blue'"),
        ("get", "/v1/traffic-mirror-sessions/s-blue", None, 404,
         "session: no session named 's-blue'"),
        ("get", "/v1/traffic-mirror-sessions/s-blue/stats", None, 404,
         "session: no session named 's-blue'"),
        ("get", "/v1/traffic-mirror-filters/f-blue", None, 404,
         "filter: no filter named 'f-blue'"),
        ("patch", "/v1/traffic-mirror-sessions/s-blue", {"enabled": True}, 404,
         "session: no session named 's-blue'"),
        ("delete", "/v1/traffic-mirror-targets/t-blue", None, 404,
         "target: no target named 't-blue'"),
        ("post", "/v1/traffic-mirror-filters/f-blue/rules",
         {"direction": "inbound", "priority": "1", "action": "accept"}, 404,
         "filter: no filter named 'f-blue'"),
        ("post", "/v1/traffic-mirror-sessions/s-blue/sources", {"port": "vm-161"}, 404,
         "session: no session named 's-blue'"),
        ("delete", "/v1/traffic-mirror-sessions/s-blue/sources/vm-230", None, 404,
         "session: no session named 's-blue'"),
        ("post", "/v1/traffic-mirror-sessions", {"name": "s-red", "target": "t-blue",
                                                 "priority": "6"}, 404,
         "target: no target named 't-blue'"),
        ("post", "/v1/traffic-mirror-targets", {"name": "t-steal", "port": "vm-230"}, 403,
         "port: iface vm-230 is not registered to project 'red'; an admin registers a "
         "project's ports"),
        ("post", "/v1/traffic-mirror-targets", {"name": "t-nic", "nic": "hv-1:eth9"}, 403,
         "nic: a nic target is the cloud's: only an admin may add one"),
        ("post", "/v1/traffic-mirror-sessions", {"name": "s-red", "target": "t-red",
                                                 "priority": "5"}, 409,
         "priority: priority 5 is taken (session priorities are unique across projects)"),
        ("post", "/v1/port-registrations", {"iface_id": "vm-230", "project": "red"}, 403,
         "identity bob (member) may not do this; an admin may"),
        ("get", "/v1/audit", None, 403, "identity bob (member) may not do this; an admin may"),
        ("post", "/v1/traffic-mirror-trace",
         {"port": "vm-230", "direction": "in", "packet": "tcp"}, 404,
         "port: iface vm-230 is not a port of project 'red'"),
    ]
    for method, path, body, status, message in refused:
        r = getattr(client, method)(path, headers=bob, **({"json": body} if body else {}))
        assert (r.status_code, r.json()["message"]) == (status, message), (path, r.text)
    # its own session: only its own ports, never a vswitch
    assert client.post("/v1/traffic-mirror-sessions", headers=bob, json={
        "name": "s-red", "target": "t-red", "priority": "6"}).status_code == 201
    for body, message in (({"port": "vm-230"}, "port: iface vm-230 is not registered to "
                           "project 'red'; an admin registers a project's ports"),
                          ({"vswitch": "hv-1:br-int"}, "vswitch: a whole bridge is the "
                           "cloud's: only an admin may mirror a vswitch")):
        r = client.post("/v1/traffic-mirror-sessions/s-red/sources", headers=bob, json=body)
        assert (r.status_code, r.json()["message"]) == (403, message)
    assert client.post("/v1/traffic-mirror-sessions/s-red/sources", headers=bob,
                       json={"port": "vm-161"}).status_code == 201
    # lists: each sees its own; an admin all, or one project
    for who, want in (("bob", ["s-red"]), ("red-soc", ["s-red"]), ("alice", ["s-blue"]),
                      ("ops", ["s-blue", "s-red"])):
        got = client.get("/v1/traffic-mirror-sessions", headers=tok[who]).json()["items"]
        assert [s["name"] for s in got] == want, who
    assert [s["name"] for s in client.get("/v1/traffic-mirror-sessions", headers=tok["ops"],
                                          params={"project": "blue"}).json()["items"]] == [
        "s-blue"]
    assert [r["iface_id"] for r in client.get("/v1/port-registrations",
                                              headers=bob).json()["items"]] == ["vm-161"]
    assert client.post("/v1/traffic-mirror-filters", headers=tok["red-soc"],
                       json={"name": "f"}).status_code == 403
    # every refused write is in the audit trail, with who asked
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    bobs = [(r["method"], r["path"], r["status"]) for r in records if r["who"] == "bob"
            and r["status"] >= 400]
    for method, path, _, status, _ in refused:
        if method != "get":
            assert (method.upper(), path, status) in bobs, (method, path)


def test_project_quotas_the_region_cap_and_sessions_per_filter(tapdb, tmp_path, monkeypatch):
    tokens = tmp_path / "tokens"
    ops_ = {"Authorization": "Bearer " + identity.add(tokens, "ops", "admin")}
    blue = {"Authorization": "Bearer " + identity.add(tokens, "alice", "member", "blue")}
    audit_path = tmp_path / "audit.jsonl"
    client = fastapi_testclient.TestClient(create_app(
        lambda: ops.connect(tapdb.remote, 10), identity.load(tokens), AuditLog(audit_path),
        replica_of(tapdb)))
    r = client.put("/v1/projects/blue/quotas", headers=ops_,
                   json={"sessions": "1", "targets": "1", "filters": "1"})
    assert r.status_code == 200, r.text
    assert r.json()["item"]["quotas"] == {"sessions": 1, "targets": 1, "filters": 1}
    assert client.put("/v1/projects/blue/quotas", headers=blue,
                      json={"sessions": "9"}).status_code == 403
    for path, body in (("/v1/traffic-mirror-targets", {"name": "t1", "vxlan": "192.0.2.1"}),
                       ("/v1/traffic-mirror-filters", {"name": "f1"}),
                       ("/v1/traffic-mirror-sessions", {"name": "s1", "target": "t1",
                                                        "priority": "1"})):
        assert client.post(path, headers=blue, json=body).status_code == 201, path
    for path, body, kind in (
            ("/v1/traffic-mirror-targets", {"name": "t2", "vxlan": "192.0.2.2"}, "targets"),
            ("/v1/traffic-mirror-filters", {"name": "f2"}, "filters"),
            ("/v1/traffic-mirror-sessions", {"name": "s2", "target": "t1", "priority": "2"},
             "sessions")):
        before = client.get("/v1/projects/blue", headers=blue).json()
        r = client.post(path, headers=blue, json=body)
        assert (r.status_code, r.json()["message"]) == (
            400, f"project: project 'blue' already has 1 {kind}; its quota allows at most 1")
        assert client.get("/v1/projects/blue", headers=blue).json() == before
    assert before["usage"] == {"sessions": 1, "targets": 1, "filters": 1}
    assert client.get("/v1/projects/red", headers=blue).status_code == 404
    # the region's cap, and sessions per filter (here lowered to keep the test short)
    monkeypatch.setattr(model, "REGION_SESSIONS", 2)
    monkeypatch.setattr(model, "MAX_SESSIONS_PER_FILTER", 1)
    assert client.post("/v1/traffic-mirror-targets", headers=ops_,
                       json={"name": "t9", "vxlan": "192.0.2.9"}).status_code == 201
    assert client.post("/v1/traffic-mirror-filters", headers=ops_,
                       json={"name": "f9"}).status_code == 201
    assert client.post("/v1/traffic-mirror-sessions", headers=ops_, json={
        "name": "s9", "target": "t9", "filter": "f9", "priority": "9"}).status_code == 201
    r = client.post("/v1/traffic-mirror-sessions", headers=ops_, json={
        "name": "s10", "target": "t9", "priority": "10"})
    assert (r.status_code, r.json()["message"]) == (
        400, "sessions: the region already has 2 sessions; allowed at most 2")
    monkeypatch.setattr(model, "REGION_SESSIONS", 20000)
    r = client.post("/v1/traffic-mirror-sessions", headers=ops_, json={
        "name": "s10", "target": "t9", "filter": "f9", "priority": "10"})
    assert (r.status_code, r.json()["message"]) == (
        400, "filter: filter 'f9' is already used by 1 sessions; allowed at most 1")


def test_the_api_listener_speaks_tls(tapdb, tmp_path):
    """sdnagent-api serve --tls-key/--tls-cert: a client that trusts the CA gets in, a
    plain HTTP client does not."""
    import httpx
    from sdnagent import pki
    import ssl
    creds = pki.issue(tmp_path / "pki", "127.0.0.1", "tapdb")
    # the lab's certificates name their host in the CN only (OVS checks no more): the
    # chain is verified here, the name not
    trust = ssl.create_default_context(cafile=creds.ca_cert)
    trust.check_hostname = False
    tokens = tmp_path / "tokens"
    token = identity.add(tokens, "ops", "admin")
    port = sandbox.free_port()
    proc = subprocess.Popen([str(BIN / "sdnagent-api"), "serve", "--db", tapdb.remote,
                             "--listen", f"127.0.0.1:{port}", "--tokens", str(tokens),
                             "--audit-log", str(tmp_path / "audit.jsonl"),
                             "--tls-key", creds.private_key, "--tls-cert", creds.certificate],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"https://127.0.0.1:{port}/openapi.json", verify=trust,
                                 timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 15, "sdnagent-api over TLS")
        r = httpx.get(f"https://127.0.0.1:{port}/v1/traffic-mirror-targets", verify=trust,
                      headers={"Authorization": f"Bearer {token}"}, timeout=5)
        with pytest.raises(httpx.HTTPError):  # a client that does not trust the CA
            httpx.get(f"https://127.0.0.1:{port}/openapi.json", timeout=2)
        assert r.status_code == 200 and r.json()["total"] == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_the_per_object_quotas_through_the_api(tapdb, tmp_path):
    """The seeds' quotas, answered 400 with tapctl's words, nothing written."""
    tokens = tmp_path / "tokens"
    admin = {"Authorization": "Bearer " + identity.add(tokens, "ops", "admin")}
    client = fastapi_testclient.TestClient(create_app(
        lambda: ops.connect(tapdb.remote, 10), identity.load(tokens),
        AuditLog(tmp_path / "audit.jsonl"), replica_of(tapdb)))

    def ok(path: str, body: dict) -> None:
        r = client.post(path, headers=admin, json=body)
        assert r.status_code == 201, (path, body, r.text)
    ok("/v1/traffic-mirror-targets", {"name": "t", "port": "vm-164"})
    ok("/v1/traffic-mirror-filters", {"name": "f"})
    for prio in range(1, 11):
        ok("/v1/traffic-mirror-filters/f/rules", {"direction": "inbound",
                                                  "priority": str(prio), "action": "accept"})
    for i in range(1, 11):
        ok("/v1/traffic-mirror-sessions", {"name": f"s{i}", "target": "t", "priority": str(i)})
    for i in range(1, 11):
        ok("/v1/traffic-mirror-sessions/s1/sources", {"port": f"vm-{i}"})
    for s in ("s2", "s3"):
        ok(f"/v1/traffic-mirror-sessions/{s}/sources", {"port": "vm-1"})
    before = client.get("/v1/traffic-mirror-sessions", headers=admin).json()
    for path, body, message in [
        ("/v1/traffic-mirror-filters/f/rules",
         {"direction": "inbound", "priority": "11", "action": "accept"},
         "rules: filter 'f' already has 10 inbound rules; allowed at most 10 per direction"),
        ("/v1/traffic-mirror-sessions", {"name": "s11", "target": "t", "priority": "11"},
         "target: target 't' (port) already has 10 sessions; allowed at most 10 per port "
         "target"),
        ("/v1/traffic-mirror-sessions/s1/sources", {"port": "vm-99"},
         "sources: session 's1' already has 10 sources; allowed at most 10"),
        ("/v1/traffic-mirror-sessions/s4/sources", {"port": "vm-1"},
         "port: iface vm-1 is already a source of 3 sessions (s1, s2, s3); allowed at most 3"),
    ]:
        r = client.post(path, headers=admin, json=body)
        assert (r.status_code, r.json()["message"]) == (400, message), r.text
    assert client.get("/v1/traffic-mirror-sessions", headers=admin).json() == before


def test_tapdb_lost_and_back(tapdb, tmp_path):
    """tapdb restarted under the API: a write while it is away is a 503, and the next
    one after it is back goes through (the lost connection is dropped)."""
    tokens = tmp_path / "tokens"
    admin = {"Authorization": "Bearer " + identity.add(tokens, "ops", "admin")}
    client = fastapi_testclient.TestClient(create_app(
        lambda: ops.connect(tapdb.remote, 5), identity.load(tokens),
        AuditLog(tmp_path / "audit.jsonl"), replica_of(tapdb)))
    assert client.post("/v1/traffic-mirror-filters", headers=admin,
                       json={"name": "f1"}).status_code == 201
    tapdb.stop()
    try:
        r = client.post("/v1/traffic-mirror-filters", headers=admin, json={"name": "f2"})
        assert r.status_code == 503 and r.json()["message"].startswith("tapdb: "), r.text
    finally:
        tapdb.start()
    wait_until(lambda: client.post("/v1/traffic-mirror-filters", headers=admin,
                                   json={"name": "f3"}).status_code == 201, 15,
               "a write after tapdb is back")
