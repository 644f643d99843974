"""tapctl against a real tapdb: the example, every refusal, racing writers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sdnagent import model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "examples" / "two-sessions.sh"
BIN = Path(sys.executable).parent


def cli_env(tapdb) -> dict:
    return dict(os.environ, TAPDB=tapdb.remote, PATH=f"{BIN}:{os.environ['PATH']}")


def configure_example(tapdb) -> None:
    subprocess.run(["sh", str(EXAMPLE)], env=cli_env(tapdb), check=True, capture_output=True)


def dump(tapdb) -> str:
    """Everything in the database, rows and uuids: equal dumps mean nothing was written."""
    return subprocess.run(["ovsdb-client", "dump", tapdb.remote, "Tap"], check=True,
                          capture_output=True, text=True).stdout


EXAMPLE_SHOW = """\
session session-01: priority 1, vni 1, packet length 96, enabled
  target target-01: port vm-164, key 1, enabled, status pending (iface vm-164 not found on any chassis)
  filter filter-01
    inbound:
      1 accept tcp ipv4 src 192.168.0.161/32 dst 192.168.0.230/32 dst-port 1234
    outbound: no rules (mirrors nothing)
  sources:
    port vm-230 direction in, enabled, status pending (iface vm-230 not found on any chassis)
session session-02: priority 2, vni 2, packet length 96, enabled
  target target-02: vxlan 192.168.1.165, key 2, enabled
  filter filter-02
    inbound:
      1 accept udp ipv4 src 192.168.0.161/32 dst 192.168.0.230/32 dst-port 1235
    outbound: no rules (mirrors nothing)
  sources:
    port vm-230 direction in, enabled, status pending (iface vm-230 not found on any chassis)
"""


def test_two_session_example_show_and_list(tapdb):
    configure_example(tapdb)
    env = cli_env(tapdb)
    show = subprocess.run(["tapctl", "show"], env=env, check=True, capture_output=True, text=True)
    assert show.stdout == EXAMPLE_SHOW
    listed = subprocess.run(["tapctl", "list", "--format", "json"], env=env, check=True,
                            capture_output=True, text=True)
    data = json.loads(listed.stdout)
    rule = {"priority": 1, "action": "accept", "protocol": "tcp", "ethertype": "ipv4",
            "src": "192.168.0.161/32", "dst": "192.168.0.230/32", "src_port": None,
            "dst_port": {"min": 1234, "max": 1234}}
    assert data["filters"][0] == {"name": "filter-01", "project": "default", "inbound": [rule],
                                  "outbound": []}
    assert data["filters"][1]["inbound"][0]["protocol"] == "udp"
    assert data["filters"][1]["inbound"][0]["dst_port"] == {"min": 1235, "max": 1235}
    assert [t["name"] for t in data["targets"]] == ["target-01", "target-02"]
    assert data["targets"][0] == {"name": "target-01", "type": "port", "tunnel_key": 1,
                                  "iface_id": "vm-164", "chassis": None, "nic": None,
                                  "remote_ip": None, "enabled": True, "status": {},
                                  "options": {}, "project": "default"}
    assert data["targets"][1]["remote_ip"] == "192.168.1.165"
    source = {"type": "port", "direction": "in", "iface_id": "vm-230", "chassis": None,
              "bridge": None, "vlan": None, "enabled": True, "status": {}}
    nothing_counted = {"counters": {}, "counters_by_chassis": {}}  # no agent has reported
    no_controls = {"max_pps": None, "max_kbps": None, "sample": None, "ends_at": None,
                   "stop_reason": None}
    assert data["sessions"] == [
        {"name": "session-01", "project": "default", "priority": 1, "vni": 1,
         "packet_length": 96, "enabled": True,
         "filter": "filter-01", "target": "target-01", "sources": [source], **nothing_counted,
         **no_controls},
        {"name": "session-02", "project": "default", "priority": 2, "vni": 2,
         "packet_length": 96, "enabled": True,
         "filter": "filter-02", "target": "target-02", "sources": [source], **nothing_counted,
         **no_controls},
    ]
    table = subprocess.run(["tapctl", "list"], env=env, check=True, capture_output=True,
                           text=True).stdout
    assert "session-02  2         2    96      yes      target-02  filter-02  -         vm-230(in)" \
        in table


# Each refusal: the arguments and the exact line on stderr. The database must not change.
REFUSALS = [
    (["session-add", "s3", "--target", "target-01", "--priority", "3", "--vni", "16777216"],
     "vni: 16777216 is out of range; allowed 0..16777215"),
    (["session-add", "s3", "--target", "target-01", "--priority", "0"],
     "priority: 0 is out of range; allowed 1..32766"),
    (["session-add", "s3", "--target", "target-01", "--priority", "3", "--packet-length", "8501"],
     "packet-length: 8501 is out of range; allowed 64..8500"),
    (["rule-add", "filter-01", "inbound", "--priority", "16777217", "--action", "accept"],
     "priority: 16777217 is out of range; allowed 1..16777216"),
    (["session-add", "s3", "--target", "target-01", "--priority", "2"],
     "priority: session 'session-02' already has priority 2; session priorities are unique"),
    (["rule-add", "filter-01", "inbound", "--priority", "1", "--action", "reject"],
     "priority: filter 'filter-01' already has an inbound rule with priority 1; priorities are "
     "unique per filter direction"),
    (["rule-add", "filter-01", "inbound", "--priority", "5", "--action", "accept",
      "--protocol", "icmp", "--dst-port", "80"],
     "dst-port: port ranges need protocol tcp or udp, not icmp"),
    (["rule-add", "filter-01", "inbound", "--priority", "5", "--action", "accept",
      "--ethertype", "ipv6", "--src", "10.0.0.0/8"],
     "src: 10.0.0.0/8 is an IPv4 CIDR but the rule's ethertype is ipv6; use an ipv6 CIDR"),
    (["rule-add", "filter-01", "inbound", "--priority", "5", "--action", "accept",
      "--protocol", "tcp", "--src-port", "2000-1000"],
     "src-port: '2000-1000' has its minimum 2000 above its maximum 1000"),
    (["rule-add", "filter-01", "inbound", "--priority", "5", "--action", "accept",
      "--dst", "10.0.0.300/8"],
     "dst: '10.0.0.300/8' is not a CIDR; use ADDRESS/PREFIX such as 192.168.0.0/24 or "
     "2001:db8::/64"),
    (["rule-add", "filter-01", "inbound", "--priority", "5", "--action", "accept",
      "--protocol", "udp", "--dst-port", "12a"],
     "dst-port: '12a' is not a port range; use PORT, MIN-MAX, MIN/MAX (0..65535) or -1/-1 or "
     "all for any port"),
    (["source-add", "session-01", "--port", "vm-164"],
     "port: iface vm-164 is target 'target-01'; a port cannot be both a source and a target"),
    (["target-add", "t3", "--port", "vm-230"],
     "port: iface vm-230 is a source of session 'session-01'; a port cannot be both a source "
     "and a target"),
    (["filter-del", "filter-01"],
     "filter: filter 'filter-01' is used by session(s) session-01; delete those sessions first"),
    (["target-del", "target-02"],
     "target: target 'target-02' is used by session(s) session-02; delete those sessions first"),
    (["session-add", "s3", "--target", "nope", "--priority", "3"],
     "target: no target named 'nope'"),
    (["session-add", "s3", "--target", "target-01", "--filter", "nope", "--priority", "3"],
     "filter: no filter named 'nope'"),
    (["source-add", "nope", "--port", "vm-1"], "session: no session named 'nope'"),
    (["rule-add", "nope", "inbound", "--priority", "1", "--action", "accept"],
     "filter: no filter named 'nope'"),
    (["rule-del", "filter-01", "outbound", "1"],
     "priority: filter 'filter-01' has no outbound rule with priority 1"),
    (["source-del", "session-01", "vm-9"], "source: session 'session-01' has no source 'vm-9'"),
    (["source-disable", "session-01", "vm-9"],
     "source: session 'session-01' has no source 'vm-9'"),
    (["session-del", "nope"], "session: no session named 'nope'"),
    (["target-enable", "nope"], "target: no target named 'nope'"),
    (["target-add", "target-01", "--vxlan", "10.0.0.1"],
     "target name: a target named 'target-01' already exists"),
    (["target-add", "t3", "--vxlan", "10.0.0"],
     "vxlan: '10.0.0' is not an IP address; use an IPv4 or IPv6 unicast address"),
    (["source-add", "session-01", "--vswitch", "host-a:br-int:5000"],
     "vlan: 5000 is out of range; allowed 0..4095"),
    # host-b registered 10.255.0.2 (below): its switch would take VXLAN sent there
    (["target-add", "t3", "--vxlan", "10.255.0.2"],
     "vxlan: 10.255.0.2 is the tunnel address of chassis host-b, whose switch would take the "
     "copies; give a collector's own address"),
]


def test_every_refusal_writes_nothing(tapdb, tapctl):
    configure_example(tapdb)
    subprocess.run(["ovsdb-client", "transact", tapdb.remote, json.dumps([
        "Tap", {"op": "insert", "table": "Chassis",
                "row": {"name": "host-b", "tunnel_ip": "10.255.0.2", "encap": "gre"}}])],
        check=True, capture_output=True)
    before = dump(tapdb)
    for args, message in REFUSALS:
        rc, out, err = tapctl(*args)
        assert (rc, out, err) == (1, "", f"tapctl: error: {message}\n"), args
    assert dump(tapdb) == before


def test_quotas_at_the_limit(tapdb, tapctl):
    configure_example(tapdb)
    for prio in range(2, 11):
        assert tapctl("rule-add", "filter-01", "inbound", "--priority", str(prio),
                      "--action", "reject")[0] == 0
    for i in range(9):
        assert tapctl("source-add", "session-01", "--port", f"vm-{i}")[0] == 0
    assert tapctl("session-add", "session-03", "--target", "target-02", "--priority", "3")[0] == 0
    assert tapctl("source-add", "session-03", "--port", "vm-230", "--direction", "out")[0] == 0
    assert tapctl("session-add", "session-04", "--target", "target-02", "--priority", "4")[0] == 0
    before = dump(tapdb)
    for args, message in [
        (["rule-add", "filter-01", "inbound", "--priority", "11", "--action", "accept"],
         "rules: filter 'filter-01' already has 10 inbound rules; allowed at most 10 per "
         "direction"),
        (["source-add", "session-01", "--port", "vm-x"],
         "sources: session 'session-01' already has 10 sources; allowed at most 10"),
        (["source-add", "session-04", "--port", "vm-230"],
         "port: iface vm-230 is already a source of 3 sessions (session-01, session-02, "
         "session-03); allowed at most 3"),
    ]:
        assert tapctl(*args) == (1, "", f"tapctl: error: {message}\n"), args
    assert dump(tapdb) == before
    # the other direction of the same filter still has room
    assert tapctl("rule-add", "filter-01", "outbound", "--priority", "11", "--action",
                  "accept")[0] == 0


def test_lifecycle_verbs(tapdb, tapctl, api):
    configure_example(tapdb)
    assert tapctl("session-disable", "session-01")[0] == 0
    assert tapctl("source-disable", "session-02", "vm-230")[0] == 0
    assert tapctl("target-disable", "target-02")[0] == 0
    assert tapctl("source-add", "session-01", "--vswitch", "host-a:br-int:100")[0] == 0
    assert tapctl("rule-add", "filter-02", "outbound", "--priority", "7", "--action", "reject",
                  "--protocol", "icmpv6")[0] == 0
    intent = api.snapshot().intent
    assert not intent.session("session-01").enabled
    assert not intent.target("target-02").enabled
    assert not intent.session("session-02").sources[0].enabled
    assert [s.key for s in intent.session("session-01").sources] == ["vm-230", "host-a:br-int:100"]
    assert intent.filter("filter-02").outbound[0] == model.Rule(7, "reject", 58, "ipv6")

    assert tapctl("source-enable", "session-02", "vm-230")[0] == 0
    assert tapctl("source-del", "session-01", "host-a:br-int:100")[0] == 0
    assert tapctl("rule-del", "filter-02", "outbound", "7")[0] == 0
    assert tapctl("session-del", "session-02")[0] == 0
    assert tapctl("filter-del", "filter-02")[0] == 0
    assert tapctl("tap-service-del", "target-02")[0] == 0  # the Cloudpods spelling
    intent = api.snapshot().intent
    assert list(intent.sessions) == ["session-01"]
    assert list(intent.targets) == ["target-01"]
    assert list(intent.filters) == ["filter-01"]
    # sources and rules go with their session and filter: no orphans are left
    rows = dump(tapdb)
    assert rows.count("vm-230") == 1
    assert "icmp" not in rows


def test_unreachable_tapdb_is_one_line(tmp_path, capsys):
    from sdnagent.cli import tapctl as tapctl_cli
    rc = tapctl_cli.main(["--db", f"unix:{tmp_path}/none.sock", "show"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err == (f"tapctl: cannot reach tapdb at unix:{tmp_path}/none.sock: no such socket "
                   "(is sdnagent-tapdb running?)\n")


def test_collector_targets_quotas_and_refusals_write_nothing(tapdb, tapctl):
    configure_example(tapdb)
    subprocess.run(["ovsdb-client", "transact", tapdb.remote, json.dumps([
        "Tap", {"op": "insert", "table": "Chassis",
                "row": {"name": "host-b", "tunnel_ip": "10.255.0.2", "encap": "gre"}}])],
        check=True, capture_output=True)
    sixteen = ",".join(f"10.9.0.{i}" for i in range(1, 17))
    assert tapctl("target-add", "g", "--group", sixteen, "--encap", "gre")[0] == 0
    assert tapctl("target-add", "e", "--erspan", "10.9.1.1", "--version", "1")[0] == 0
    for i in range(2, 11):  # target-01 (a vNIC) takes 10 sessions
        assert tapctl("session-add", f"s{i}", "--target", "target-01", "--priority",
                      str(10 + i))[0] == 0
    before = dump(tapdb)
    for args, message in [
        (["target-add", "g2", "--group", sixteen + ",10.9.0.17"],
         "group: 17 members; allowed at most 16"),
        (["member-add", "g", "10.9.1.9"], "member: group 'g' has 16 members; allowed at most 16"),
        (["member-add", "g", "10.255.0.2"],
         "member: 10.255.0.2 is the tunnel address of chassis host-b, whose switch would take "
         "the copies; give a collector's own address"),
        (["member-del", "g", "10.9.9.9"], "member: group 'g' has no member 10.9.9.9"),
        (["member-add", "target-01", "10.9.1.9"],
         "target: target 'target-01' is a port target; only group targets have members"),
        (["session-add", "s11", "--target", "target-01", "--priority", "30"],
         "target: target 'target-01' (port) already has 10 sessions; allowed at most 10 per "
         "port target"),
        (["target-add", "e2", "--erspan", "10.9.1.2"],
         "version: --erspan needs --version 1 (ERSPAN type II) or 2 (type III)"),
        (["target-add", "v", "--vxlan", "10.9.1.2", "--index", "3"],
         "index: --index is for --erspan and --group targets only, not --vxlan"),
        (["session-add", "s12", "--target", "e", "--priority", "31", "--vni", "1024"],
         "vni: 1024 cannot be the ERSPAN session ID of target e (10 bits); give a vni of "
         "0..1023"),
    ]:
        assert tapctl(*args) == (1, "", f"tapctl: error: {message}\n"), args
    assert dump(tapdb) == before
    # one at a time: disabled, enabled, removed, added back
    for verb in ("disable", "enable", "del", "add"):
        rc, out, err = tapctl(f"member-{verb}", "g", "10.9.0.7")
        assert (rc, err) == (0, ""), err
    assert out.startswith("target g: group of 16 by gre: 10.9.0.1, 10.9.0.2, ")
