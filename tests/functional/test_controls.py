"""A session's controls on real switches: a rate cap drops and counts what is over it, a
session with an end stops on every chassis (across an agent's and tapdb's restarts), and
sampling mirrors about one connection in N, each whole in both directions."""
from __future__ import annotations

import json
import re
import time

import pytest

from sdnagent import packets, sandbox
from tests.functional.mirrorlab import VMS, MirrorLab, running, wait_until
from tests.functional.test_agent import start_agents
from tests.functional.test_counters import scrape


@pytest.fixture
def mlab():
    yield from running()


def counters(mlab: MirrorLab, session: str = "s") -> dict[str, int]:
    return json.loads(mlab.tapctl("stats", session, "--format", "json"))[session]["counters"]


CHUNK = 50  # a dummy port queues at most 100 received frames; the rest it drops


def burst(mlab: MirrorLab, host: str, frames: list[bytes], port: str) -> float:
    """The frames as fast as the dummy datapath takes them, each chunk once the last one
    was received: how long it took."""
    h = mlab[host]

    def received() -> int:  # OpenFlow's port counters are live (OVSDB's lag seconds)
        found = re.search(r"rx pkts=(\d+)", h.ofctl("dump-ports", "br-int", port))
        assert found is not None
        return int(found.group(1))
    began, before = time.monotonic(), received()
    for i in range(0, len(frames), CHUNK):
        chunk = frames[i:i + CHUNK]
        h.appctl("netdev-dummy/receive", port, *(f.hex() for f in chunk))
        wait_until(lambda: received() >= before + i + len(chunk), 5, f"{port} to take them")
    return time.monotonic() - began


def frames_to_vm230(n: int, size: int = 40) -> list[bytes]:
    _, mac161, ip161 = VMS["vm-161"]
    _, mac230, ip230 = VMS["vm-230"]
    return [packets.frame(mac161, mac230, ip161, ip230, "udp", 30000 + i, 1234, b"b" * size)
            for i in range(n)]


def collector_session(mlab: MirrorLab, *controls: str, hosts=("host-a",), **options: str
                      ) -> None:
    start_agents(mlab, hosts=hosts, metrics__stats_interval="0.5", **options)
    mlab.tapctl("target-add", "t", "--vxlan", sandbox.COLLECTOR_IP, "--enable")
    mlab.tapctl("session-add", "s", "--target", "t", "--priority", "1", "--vni", "7",
                "--enable", *controls)


def test_a_capped_session_forwards_no_more_than_its_cap_and_counts_the_rest(mlab):
    port = sandbox.free_port()
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    collector_session(mlab, "--max-pps", "100", metrics__listen_port=str(port))
    mlab.tapctl("--wait", "source-add", "s", "--port", "vm-230", "--direction", "both")
    mlab.wait_source("s", "vm-230")
    meters = mlab["host-a"].ofctl("dump-meters", "brtap")
    assert re.search(r"meter=1 pktps stats bands=\s+type=drop rate=100", meters), meters

    # what vm-230 sends: its copies are taken before the frames go on (an ingress hook),
    # and the cap drops copies, never the frames themselves
    sent = 400
    to161 = mlab.lab["host-a"].dir / "vm161.pcap"
    _, mac161, ip161 = VMS["vm-161"]
    _, mac230, ip230 = VMS["vm-230"]
    mlab.send("host-a", "vm-161", "vm-230", "udp", 9)  # br-int learns where vm-161 is
    before161 = len(mlab.captured(to161))
    took = burst(mlab, "host-a", [
        packets.frame(mac230, mac161, ip230, ip161, "udp", 30000 + i, 1234, b"b" * 40)
        for i in range(sent)], VMS["vm-230"][0])
    wait_until(lambda: len(mlab.captured(to161)) - before161 == sent, 10,
               "every frame at vm-161")
    sent += 1  # the one that taught br-int
    copies = wait_until(lambda: counters(mlab).get("packets", 0) + counters(mlab).get(
        "dropped", 0) >= sent and counters(mlab), 15, "every copy counted")
    # the meter's bucket holds one second of the rate and fills at the rate
    assert copies["packets"] <= 100 * (1 + took) + 1, (copies, took)
    assert copies["packets"] + copies["dropped"] == sent, copies
    assert len([s for s in mlab.collected() if s.vni == 7]) == copies["packets"]

    # the status says it is capped; the stats, show and the metrics endpoint count it
    st = mlab.wait_source("s", "vm-230")
    wait_until(lambda: "capped" in mlab.source_state("s", "vm-230").get("reason", ""), 15,
               "the status to say the session is capped")
    assert mlab.source_state("s", "vm-230")["reason"] == (
        "capped: copies over 100 packets/s were dropped on chassis host-a in the last 10 s "
        "(tapctl stats counts them)"), st
    stats = mlab.tapctl("stats")
    assert re.search(rf"^s +{copies['packets']} +\d+ +{copies['dropped']} +- +host-a", stats,
                     re.M), stats
    show = mlab.tapctl("show")
    assert (f"  controls: capped at 100 packets/s per chassis; the caps dropped "
            f"{copies['dropped']} copies: host-a: {copies['dropped']}") in show, show
    scraped = scrape(port)
    assert scraped['sdnagent_session_dropped_total{session="s"}'] == copies["dropped"]
    # traffic stops: a little later it is no longer capped
    wait_until(lambda: "reason" not in mlab.source_state("s", "vm-230"), 20,
               "the capped status to clear")

    # a bit-rate cap instead, set on the running session: the meter changes in place
    mlab.tapctl("--wait", "session-set", "s", "--max-pps", "none", "--max-kbps", "800")
    meters = mlab["host-a"].ofctl("dump-meters", "brtap")
    assert re.search(r"meter=32769 kbps stats bands=\s+type=drop rate=800", meters), meters
    assert "meter=1 " not in meters
    before = counters(mlab)
    sent = 400
    frames = frames_to_vm230(sent, size=958)  # 1000-byte frames: 8,000 bits
    to230 = mlab.lab["host-a"].dir / "vm230.pcap"
    before230 = len(mlab.captured(to230))
    took = burst(mlab, "host-a", frames, VMS["vm-161"][0])
    wait_until(lambda: len(mlab.captured(to230)) - before230 == sent, 10,
               "every frame at vm-230")
    copies = wait_until(lambda: (c := counters(mlab))["packets"] + c["dropped"] - before[
        "packets"] - before.get("dropped", 0) >= sent and c, 15, "every copy counted")
    passed = copies["packets"] - before["packets"]
    assert 0 < passed * 8000 <= 800_000 * (1 + took) + 8000, (passed, took)
    assert passed + copies["dropped"] - before.get("dropped", 0) == sent


def test_a_session_ends_on_every_chassis_across_agent_and_tapdb_restarts(mlab):
    mlab.vm("host-a", "vm-230")
    mlab.vm("host-a", "vm-161")
    mlab.vm("host-b", "vm-99")
    collector_session(mlab, hosts=("host-a", "host-b"))
    mlab.tapctl("source-add", "s", "--port", "vm-230", "--direction", "in")
    mlab.tapctl("--wait", "source-add", "s", "--port", "vm-99", "--direction", "out")
    mlab.wait_source("s", "vm-230")
    mlab.wait_source("s", "vm-99")

    def copies_from(host: str) -> int:
        ip = mlab[host].ip
        return len([s for s in mlab.collected() if s.vni == 7 and s.src == ip])

    def send_both() -> None:
        mlab.send("host-a", "vm-161", "vm-230", "udp", 53)
        mlab.send("host-b", "vm-99", "vm-230", "udp", 53)

    out = mlab.tapctl("session-set", "s", "--duration", "5s")
    ends = time.monotonic() + 5
    assert re.fullmatch(r"session s: enabled; ends in [45]s \(at .* UTC\)\n", out), out
    show = mlab.tapctl("show")
    assert re.search(r"  controls: ends in [1-5]s \(at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)",
                     show), show
    send_both()
    wait_until(lambda: copies_from("host-a") == 1 and copies_from("host-b") == 1, 5,
               "a copy from each chassis")
    # host-b's agent restarts, and tapdb (with its session clock) too, before the end
    mlab["host-b"].stop_agent()
    mlab.lab.start_agent("host-b", "vxlan", metrics__stats_interval="0.5")
    mlab.lab.tapdb.stop()
    mlab.lab.tapdb.start()
    assert time.monotonic() < ends, "the restarts took longer than the session had"
    send_both()
    wait_until(lambda: copies_from("host-a") == 2 and copies_from("host-b") == 2, 5,
               "copies from each chassis after the restarts")

    # the end: both chassis stop within a few seconds
    def stopped(host: str) -> bool:
        return not [f for f in mlab.brtap_flows(host) if "reg0=0x1" in f and "table=20" in f]
    wait_until(lambda: stopped("host-a") and stopped("host-b"), ends + 3 - time.monotonic(),
               "both chassis to stop mirroring within 3 s of the end")
    send_both()
    time.sleep(1)
    assert (copies_from("host-a"), copies_from("host-b")) == (2, 2)
    show = mlab.tapctl("show")
    assert re.search(r"^session s: .*, disabled$", show, re.M), show
    assert re.search(r"  controls: stopped: its time ended at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
                     show), show
    assert mlab.source_state("s", "vm-99") == {"state": "disabled", "chassis": "host-b",
                                               "reason": "the session is disabled"}
    proc = mlab.run_tapctl("session-enable", "s")
    assert proc.returncode == 1 and "give it a new end first" in proc.stderr


def test_sampling_mirrors_whole_connections_about_one_in_n(mlab):
    for vm in ("vm-161", "vm-230"):
        mlab.vm("host-a", vm)
    collector_session(mlab, "--sample", "1/4")
    mlab.tapctl("--wait", "source-add", "s", "--port", "vm-230")
    mlab.wait_source("s", "vm-230")
    _, mac230, ip230 = VMS["vm-230"]
    _, mac161, _ = VMS["vm-161"]
    there, back, conn = [], [], {}
    for i in range(400):
        far = f"172.16.{i // 250}.{i % 250 + 1}"
        there.append(packets.frame(mac230, mac161, ip230, far, "tcp", 20000 + i, 80, b"s" * 20))
        back.append(packets.frame(mac161, mac230, far, ip230, "tcp", 80, 20000 + i, b"s" * 20))
        conn[there[-1]] = conn[back[-1]] = i
    burst(mlab, "host-a", there, VMS["vm-230"][0])
    burst(mlab, "host-a", back, VMS["vm-161"][0])
    total = wait_until(lambda: (c := counters(mlab)).get("unsampled", 0) + c.get("packets", 0)
                       >= 800 and c, 15, "every copy counted")
    copies = [s for s in mlab.collected() if s.vni == 7]
    assert len(copies) == total["packets"]
    seen: dict[int, int] = {}
    for s in copies:
        seen[conn[s.inner_bytes]] = seen.get(conn[s.inner_bytes], 0) + 1
    assert set(seen.values()) == {2}, "a sampled connection was not mirrored whole"
    assert 50 <= len(seen) <= 150, len(seen)
    assert total["unsampled"] == 800 - 2 * len(seen)
    # tapctl trace says the same of each connection
    for i in range(0, 400, 37):
        far = f"172.16.{i // 250}.{i % 250 + 1}"
        text = mlab.tapctl("trace", "--port", "vm-230", "--direction", "out",
                           f"tcp,nw_src={ip230},nw_dst={far},tp_src={20000 + i},tp_dst=80")
        assert ("mirrored by s: " in text) == (i in seen), (i, text)
