"""Counters: frames injected on the dummy datapath, counted on the right session, rule and
source; published into tapdb, shown by tapctl, scraped from the Prometheus endpoint."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.request

from sdnagent import sandbox
from tests.functional.mirrorlab import MirrorLab, wait_until
from tests.functional.test_agent import mlab, two_host_example  # noqa: F401 (a fixture)


def scrape(port: int) -> dict[str, float]:
    """The endpoint's samples: 'name{labels}' -> value (labels as Prometheus writes them)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def stats(mlab: MirrorLab) -> dict[str, dict[str, int]]:
    return {name: data["counters"]
            for name, data in json.loads(mlab.tapctl("stats", "--format", "json")).items()}


def test_frames_are_counted_on_their_session_rule_and_source(mlab):  # noqa: F811
    port = sandbox.free_port()
    with socket.socket() as taken:  # host-b's endpoint cannot listen: it mirrors all the same
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        two_host_example(mlab, metrics__stats_interval="0.2",
                         only={"host-a": {"metrics__listen_port": str(port)},
                               "host-b": {"metrics__listen_port": str(busy)}})
    assert (f"ERROR sdnagent: no metrics endpoint: cannot listen on 127.0.0.1:{busy}: "
            "Address already in use") in mlab["host-b"].agent_log()
    # session-01 also rejects any other TCP from vm-161 (rule 2): TCP to 1235 is taken by
    # that reject, and session-02 never sees it
    mlab.tapctl("--wait", "rule-add", "filter-01", "inbound", "--priority", "2", "--action",
                "reject", "--protocol", "tcp", "--src", "192.168.0.161/32")
    before = scrape(port)
    sent = {"accepted": 5, "rejected": 3, "udp 1235": 4, "unmatched": 2}
    for _ in range(sent["accepted"]):
        mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)  # session-01 rule 1
    for _ in range(sent["rejected"]):
        mlab.send("host-a", "vm-161", "vm-230", "tcp", 1235)  # session-01 rule 2
    for _ in range(sent["udp 1235"]):
        mlab.send("host-a", "vm-161", "vm-230", "udp", 1235)  # session-02 rule 1
    for _ in range(sent["unmatched"]):
        mlab.send("host-a", "vm-99", "vm-230", "udp", 53)  # no rule of any session
    size = 254  # every TCP frame sent: 200 bytes of payload and the headers

    expected1 = {"packets": 5, "bytes": 5 * size,
                 "rule inbound 1 packets": 5, "rule inbound 1 bytes": 5 * size,
                 "rule inbound 2 packets": 3, "rule inbound 2 bytes": 3 * size,
                 "source vm-230 unmatched": 2, "source vm-230 rejected": 3}

    def settled() -> dict:
        now = stats(mlab)
        one = now.get("session-01", {})
        return now if (all(one.get(k) == v for k, v in expected1.items())
                       and one.get("source vm-230 packets") == 14
                       and now.get("session-02", {}).get("packets") == 4) else {}
    now = wait_until(settled, 20, "the counters in tapdb")
    assert now["session-02"]["rule inbound 1 packets"] == 4
    # brtap took in every frame to vm-230, whichever session took it
    assert now["session-02"]["source vm-230 packets"] == 14
    assert now["session-02"]["source vm-230 unmatched"] == 2

    # tapctl shows them, added up over the chassis (host-a alone mirrors here)
    show = mlab.tapctl("show")
    assert "session session-01: priority 1, vni 1, packet length 96, enabled; mirrored 5 " \
           f"packets ({5 * size} bytes; host-a: 5)" in show
    assert re.search(r"2 reject tcp ipv4 src 192\.168\.0\.161/32 \(3 hits\)", show), show
    assert "port vm-230 direction in, enabled, status active (on host-a); 14 copies, 2 " \
           "matched no rule, 3 rejected" in show
    table = mlab.tapctl("stats", "session-01")
    assert re.search(r"^session-01\s+5\s+1270\s+-\s+-\s+host-a: 5$", table, re.M), table
    assert re.search(r"^session-01\s+inbound\s+2\s+reject\s+3\s+762$", table, re.M), table
    listed = json.loads(mlab.tapctl("list", "--format", "json"))["sessions"][0]
    assert listed["counters_by_chassis"]["host-a"]["packets"] == 5

    # the agent's endpoint: the same figures, and its own
    after = wait_until(lambda: (lambda m: m if m.get(
        'sdnagent_session_packets_total{session="session-01"}') == 5 else None)(scrape(port)),
        10, "the endpoint's figures")
    assert after['sdnagent_rule_packets_total{direction="inbound",rule="2",'
                 'session="session-01"}'] == 3
    assert after['sdnagent_source_rejected_packets_total{session="session-01",'
                 'source="vm-230"}'] == 3
    assert after['sdnagent_connected{peer="tapdb"}'] == 1
    assert after['sdnagent_connected{peer="openflow"}'] == 1
    assert after["sdnagent_flows_installed"] > 0
    # the rule added before counts as a change: a pass applied, flows sent
    assert after['sdnagent_passes_total{outcome="applied"}'] >= \
        before['sdnagent_passes_total{outcome="applied"}']
    mlab.tapctl("--wait", "rule-del", "filter-01", "inbound", "2")
    changed = scrape(port)
    assert changed['sdnagent_passes_total{outcome="applied"}'] > \
        after['sdnagent_passes_total{outcome="applied"}']
    assert changed['sdnagent_flow_mods_total{kind="delete"}'] > \
        after['sdnagent_flow_mods_total{kind="delete"}']
    assert changed["sdnagent_pass_duration_seconds_count"] > \
        after["sdnagent_pass_duration_seconds_count"]

    # the counters are the switch's: an agent restart (hitless: no flow changes) keeps them
    mlab["host-a"].stop_agent()
    mlab.lab.start_agent("host-a", metrics__stats_interval="0.2")
    mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    wait_until(lambda: stats(mlab)["session-01"].get("packets") == 6, 20,
               "the copy after the restart, counted on top of the 5 before")


def test_counters_go_with_their_session(mlab):  # noqa: F811
    """A deleted session takes its counter rows along: tapctl deletes them with it, and an
    agent deletes any of its rows that name no session any more."""
    two_host_example(mlab, metrics__stats_interval="0.2")
    mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
    wait_until(lambda: stats(mlab)["session-01"].get("packets") == 1, 20, "a counted copy")

    def rows() -> list[str]:
        out = subprocess.run(["ovsdb-client", "--no-headings", "-f", "csv", "dump",
                              mlab.lab.tapdb.remote, "Tap", "Session_Stats", "chassis",
                              "session"], capture_output=True, text=True, check=True).stdout
        return [line for line in out.splitlines() if line.startswith("host-")]
    assert len(rows()) == 2  # host-a's, for each session
    mlab.tapctl("session-del", "session-01")
    assert "session-01" not in stats(mlab)
    wait_until(lambda: len(rows()) == 1, 10, "one row left: session-02's")
