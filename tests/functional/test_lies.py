"""What a chassis says of itself is checked against what tapdb knows: a heartbeat from the
future does not count, a status is shown with the writer RBAC checked, and an operator
can remove a chassis that will not stop."""
from __future__ import annotations

import json
import re
import time

from sdnagent import pki
from sdnagent.cli import tapctl
from sdnagent.tapdb import rpc
from tests.functional.test_rbac import agent, rbac_tapdb  # noqa: F401 (fixture)


def run(capsys, rbac_tapdb, *args: str) -> tuple[int, str, str]:
    creds = pki.issue(rbac_tapdb["ca"], "operator", "operator")
    capsys.readouterr()
    rc = tapctl.main(["--db", rbac_tapdb["operator"], "--private-key", creds.private_key,
                      "--certificate", creds.certificate, "--ca-cert", creds.ca_cert, *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_heartbeat_from_the_future_is_not_alive(rbac_tapdb, capsys):
    rc, _, err = run(capsys, rbac_tapdb, "target-add", "target-01", "--port", "vm-164")
    assert rc == 0, err
    liar = agent(rbac_tapdb, "host-c")
    honest = agent(rbac_tapdb, "host-a")
    try:
        liar.register_chassis("host-c", "10.255.0.3", "vxlan")
        liar.heartbeat("host-c", int(time.time()) + 100_000_000, 10)
        assert liar.write_status("host-c", liar.snapshot(), {},
                                 {"target-01": {"state": "active"}}) == 1
        honest.register_chassis("host-a", "10.255.0.1", "vxlan")
        honest.heartbeat("host-a", int(time.time()), 10)
        rc, out, _ = run(capsys, rbac_tapdb, "list")
        line = next(x for x in out.splitlines() if x.startswith("host-c"))
        assert "clock ahead by 999999" in line and "alive" not in line, out
        assert "alive" in next(x for x in out.splitlines() if x.startswith("host-a"))
        rc, out, _ = run(capsys, rbac_tapdb, "list", "--format", "json")
        liar_json = next(c for c in json.loads(out)["chassis"] if c["name"] == "host-c")
        assert liar_json["state"] == "clock ahead" and liar_json["last_heard"] is None
        assert liar_json["ahead_by"] > 99_999_000
        # what it wrote is stale, as a silent chassis's is
        rc, out, _ = run(capsys, rbac_tapdb, "show")
        assert re.search(r"status stale: chassis host-c clock ahead by 999999\d\d s \(was active "
                         r"on host-c\)", out), out
        assert re.search(r"^chassis host-c clock ahead by 999999\d\d s \(tunnel 10.255.0.3\): its "
                         r"statuses are stale$", out, re.M), out
        # --wait does not wait for it: host-a has applied (any generation), the wait
        # returns 0 at once
        assert honest.report_applied("host-a", 10 ** 6)
        rc, _, err = run(capsys, rbac_tapdb, "--wait", "--timeout", "5", "filter-add",
                         "filter-02")
        assert (rc, err) == (0, ""), err
        # and it can be deleted like any chassis that is not heard from
        rc, _, err = run(capsys, rbac_tapdb, "chassis-del", "host-c")
        assert (rc, err) == (0, ""), err
    finally:
        liar.close()
        honest.close()


def test_a_status_is_shown_with_the_chassis_that_wrote_it(rbac_tapdb, capsys):
    rc, _, err = run(capsys, rbac_tapdb, "target-add", "target-01", "--port", "vm-164")
    assert rc == 0, err
    host_c = agent(rbac_tapdb, "host-c")
    try:
        host_c.register_chassis("host-c", "10.255.0.3", "vxlan")
        host_c.heartbeat("host-c", int(time.time()), 10)
        snap = host_c.snapshot()
        # its own row, which RBAC lets it write, with a map claiming another writer, and
        # dressing its word as that writer's stale one
        assert host_c.write_status("host-c", snap, {}, {"target-01": {
            "state": "active", "chassis": "host-a", "was": "active"}}) == 1
    finally:
        host_c.close()
    rc, out, _ = run(capsys, rbac_tapdb, "show")
    assert "status active (on host-c)" in out and "host-a" not in out, out
    rc, out, _ = run(capsys, rbac_tapdb, "list", "--format", "json")
    assert json.loads(out)["targets"][0]["status"] == {"state": "active", "chassis": "host-c"}


def test_counters_are_shown_with_the_chassis_that_reported_them(rbac_tapdb, capsys):
    """A chassis may claim 10^12 packets for any session, in its own name: tapctl says
    whose claim it is."""
    for args in (("target-add", "target-02", "--vxlan", "192.168.1.165"),
                 ("session-add", "session-01", "--target", "target-02", "--priority", "1")):
        rc, _, err = run(capsys, rbac_tapdb, *args)
        assert rc == 0, err
    for name, packets in (("host-a", 5), ("host-c", 10 ** 12)):
        chassis = agent(rbac_tapdb, name)
        try:
            assert chassis.write_counters(name, chassis.snapshot(), {"session-01": {
                "packets": packets, "bytes": 100 * packets}}) == 1
        finally:
            chassis.close()
    rc, out, _ = run(capsys, rbac_tapdb, "show")
    assert "mirrored 1000000000005 packets (100000000000500 bytes; host-a: 5, host-c: " \
           "1000000000000)" in out, out
    rc, out, _ = run(capsys, rbac_tapdb, "stats")
    assert re.search(r"^session-01\s+1000000000005\s+100000000000500\s+-\s+-\s+host-a: 5, "
                     r"host-c: "
                     r"1000000000000$", out, re.M), out
    rc, out, _ = run(capsys, rbac_tapdb, "stats", "--format", "json")
    assert json.loads(out)["session-01"]["counters_by_chassis"]["host-c"]["packets"] == 10 ** 12


def test_chassis_del_force_removes_a_chassis_that_still_beats(rbac_tapdb, capsys):
    for args in (("target-add", "target-01", "--port", "vm-164"),
                 ("session-add", "session-01", "--target", "target-01", "--priority", "1"),
                 ("source-add", "session-01", "--port", "vm-9")):
        rc, _, err = run(capsys, rbac_tapdb, *args)
        assert rc == 0, err
    host_c = agent(rbac_tapdb, "host-c")
    try:
        host_c.register_chassis("host-c", "10.255.0.3", "vxlan")
        host_c.heartbeat("host-c", int(time.time()), 10)
        host_c.publish_bindings("host-c", {"vm-9"})
        snap = host_c.snapshot()
        assert host_c.write_status("host-c", snap, {("session-01", "vm-9"): {"state": "active"}},
                                   {"target-01": {"state": "active"}}) == 2
        assert host_c.write_counters("host-c", snap, {"session-01": {"packets": 1}}) == 1
    finally:
        host_c.close()
    rc, _, err = run(capsys, rbac_tapdb, "chassis-del", "host-c")
    assert rc == 1 and "is alive" in err and "--force" in err, err
    rc, _, err = run(capsys, rbac_tapdb, "chassis-del", "--force", "host-c")
    assert (rc, err) == (0, ""), err
    conn = rpc.connect(rbac_tapdb["operator"], 10,
                       pki.issue(rbac_tapdb["ca"], "operator", "operator"))
    try:
        tables = ("Chassis", "Chassis_Private", "Binding", "Source_Status", "Target_Status",
                  "Session_Stats")
        left = conn.transact(*({"op": "select", "table": t, "where": []} for t in tables))
        assert [r["rows"] for r in left] == [[]] * len(tables)
    finally:
        conn.close()
