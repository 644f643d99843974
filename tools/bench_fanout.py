"""How tapdb tells its agents about a change: commit -> notified, and the servers' CPU.

Simulates N chassis in one process, each with the monitor an agent holds
(OVSDB ``monitor_cond``: the intent tables whole, Chassis; Mirror_Source and
Binding narrowed to its own ifaces; Chassis_Private and the status tables to
its own rows), on a
private tapdb loaded with a small intent.  Then commits changes one at a
time as tapctl does (a rule added to a filter, then deleted) and stamps when
each simulated chassis receives the update.  Standalone, then a 3-member Raft
cluster (the chassis spread over the members, writes to the leader), with
``--chassis`` (1,000) chassis; then the same cluster with K relays in front
(K = 1, 3; ``ovsdb-server relay:``, each copying from all three members) and
``--relay-chassis`` (10,000) chassis spread over the relays.  The relays here
listen on plain TCP without the agents' role, which governs writes only (no
simulated chassis writes).  The baseline, same run and same servers: one
chassis alone.
"""
from __future__ import annotations

import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (Row, build, cpu_seconds, parser, percentile,  # noqa: E402
                      require_ovs, rss_mib, table, transact, transaction)

from sdnagent import sandbox  # noqa: E402
from sdnagent.tapdb import ops, server  # noqa: E402

WHOLE = ("Tap_Global", "Mirror_Target", "Mirror_Filter", "Filter_Rule", "Mirror_Session",
         "Chassis")


class Peer:
    """A JSON-RPC connection read without blocking; ``handle`` gets each message."""

    def __init__(self, remote: str):
        kind, _, rest = remote.partition(":")
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(rest)
        else:
            host, _, port = rest.rpartition(":")
            self.sock = socket.create_connection((host, int(port)))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = ""
        self.decoder = json.JSONDecoder()

    def send(self, msg: dict) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(json.dumps(msg).encode())
        self.sock.setblocking(False)

    def readable(self, now: float) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        if not data:
            raise RuntimeError("the server closed a connection")
        self.buf += data.decode()
        while True:
            text = self.buf.lstrip()
            try:
                msg, end = self.decoder.raw_decode(text)
            except json.JSONDecodeError:
                self.buf = text
                return
            self.buf = text[end:]
            if msg.get("method") == "echo":
                self.send({"result": msg["params"], "error": None, "id": msg["id"]})
            else:
                self.handle(msg, now)

    def handle(self, msg: dict, now: float) -> None:
        raise NotImplementedError


class Chassis(Peer):
    """One simulated agent: a connection and the monitor an agent holds."""

    # how many are ready, and how many heard of the current change: counted as they
    # come, so that waiting for 10,000 costs no pass over them per message
    ready_count = 0
    updated_count = 0

    def __init__(self, index: int, remote: str):
        super().__init__(remote)
        self.name = f"sim-{index:05d}"
        self.updated: Optional[float] = None
        self.ready = False
        where: dict = {t: [{"where": [True]}] for t in WHOLE}
        where["Mirror_Source"] = [{"where": [["iface_id", "==", ["set", [f"{self.name}-vm"]]]]}]
        where["Binding"] = [{"where": [["chassis", "==", self.name]]}]
        where["Chassis_Private"] = [{"where": [["name", "==", self.name]]}]
        for status in ("Source_Status", "Target_Status"):
            where[status] = [{"where": [["chassis", "==", self.name]]}]
        self.send({"method": "monitor_cond", "params": ["Tap", self.name, where], "id": 1})

    def handle(self, msg: dict, now: float) -> None:
        if msg.get("id") == 1:
            self.ready = True
            Chassis.ready_count += 1
        elif msg.get("method") == "update2" and self.updated is None:
            self.updated = now
            Chassis.updated_count += 1


class Writer(Peer):
    """The operator's side: one transaction per change, its answer stamped."""

    def __init__(self, remote: str):
        super().__init__(remote)
        self.answer: Optional[dict] = None
        self.answered: Optional[float] = None
        self.rule: Optional[list] = None  # the uuid of the rule added last

    def change(self, add: bool) -> None:
        """A rule added to filter f1 (or the last one deleted), as tapctl writes it:
        with the generation bumped, in one transaction."""
        bump = {"op": "mutate", "table": "Tap_Global", "where": [],
                "mutations": [["generation", "+=", 1]]}
        where = [["name", "==", "f1"]]
        if add:
            ops = [{"op": "insert", "table": "Filter_Rule", "uuid-name": "r",
                    "row": {"priority": 100, "action": "accept", "ethertype": "ipv4",
                            "protocol": ["set", [17]]}},
                   {"op": "mutate", "table": "Mirror_Filter", "where": where,
                    "mutations": [["inbound_rules", "insert", ["set", [["named-uuid", "r"]]]]]}]
        else:
            ops = [{"op": "mutate", "table": "Mirror_Filter", "where": where,
                    "mutations": [["inbound_rules", "delete", ["set", [self.rule]]]]}]
        self.answer = self.answered = None
        self.send({"method": "transact", "params": ["Tap", bump, *ops], "id": 2})

    def handle(self, msg: dict, now: float) -> None:
        if msg.get("id") == 2:
            self.answer, self.answered = msg, now
            result = msg.get("result") or []
            assert not msg.get("error") and not any("error" in r for r in result), msg
            if len(result) > 1 and "uuid" in result[1]:
                self.rule = result[1]["uuid"]


def measure(remotes: list[str], write_remote: str, count: int, changes: int,
            pids: list[int]) -> tuple[list[float], list[float], dict[int, float]]:
    """From sending each change: when every chassis heard of it, and when the writer got
    its answer; each server's CPU time per change (ms, by pid)."""
    sel = selectors.DefaultSelector()

    def pump(until: float, done) -> None:
        while time.monotonic() < until and not done():
            for key, _ in sel.select(timeout=0.05):
                key.data.readable(time.monotonic())
    sims: list[Chassis] = []
    writer = Writer(write_remote)
    sel.register(writer.sock, selectors.EVENT_READ, writer)
    Chassis.ready_count = 0
    try:
        # a few at a time, each read at once, as agents start: ovsdb-server's listen
        # backlog is short, and a connection beyond it waits a second for the SYN again
        for i in range(count):
            sims.append(Chassis(i, remotes[i % len(remotes)]))
            sel.register(sims[-1].sock, selectors.EVENT_READ, sims[-1])
            if len(sims) % (4 * len(remotes)) == 0:
                pump(time.monotonic() + 30, lambda: Chassis.ready_count == len(sims))
        pump(time.monotonic() + 120, lambda: Chassis.ready_count == len(sims))
        assert Chassis.ready_count == count, "not every chassis got its initial state"
        pump(time.monotonic() + 0.5, lambda: False)
        heard, answered = [], []
        cpu = {p: cpu_seconds(p) for p in pids}
        for i in range(changes):
            for s in sims:
                s.updated = None
            Chassis.updated_count = 0
            sent = time.monotonic()
            writer.change(add=i % 2 == 0)
            pump(sent + 60, lambda: writer.answered is not None
                 and Chassis.updated_count == count)
            late = [s.name for s in sims if s.updated is None]
            assert writer.answered is not None and not late, (
                f"change {i}: no answer, or {len(late)} chassis never heard of it")
            heard += [s.updated - sent for s in sims]
            answered.append(writer.answered - sent)
        return heard, answered, {p: (cpu_seconds(p) - cpu[p]) * 1000 / changes for p in pids}
    finally:
        for peer in [*sims, writer]:
            peer.sock.close()


def _cluster(directory: str) -> tuple[list[server.TapdbServer], list[str]]:
    ports = [sandbox.free_port() for _ in range(6)]
    raft = [f"tcp:127.0.0.1:{p}" for p in ports[:3]]
    remotes = [f"tcp:127.0.0.1:{p}" for p in ports[3:]]
    members = [server.TapdbServer(Path(directory) / f"m{i}") for i in range(3)]
    members[0].start([f"ptcp:{ports[3]}:127.0.0.1"], cluster="create", local=raft[0])
    for i in (1, 2):
        members[i].start([f"ptcp:{ports[3 + i]}:127.0.0.1"], cluster="join", local=raft[i],
                         members=[raft[0]])
    for m in members:
        assert m.is_connected(timeout=30), f"{m.dir} did not join"
    return members, remotes


def run(count: int, changes: int) -> list[Row]:
    intent, _ = build(10, rules_per_filter=5)
    rows = []
    for kind in ("standalone", "3-member Raft"):
        directory = tempfile.mkdtemp(prefix="sdn-fan-")
        members: list[server.TapdbServer] = []
        try:
            if kind == "standalone":
                members = [server.TapdbServer(directory)]
                members[0].start()
                remotes = [members[0].remote]
            else:
                members, remotes = _cluster(directory)
            leader = _leader(",".join(remotes))
            transact(leader, transaction(intent))
            pids = [int(m.pidfile.read_text()) for m in members]
            alone, _, _ = measure(remotes, leader, 1, changes, pids)
            fan, answered, cpu_ms = measure(remotes, leader, count, changes, pids)
            rows.append(Row(f"tapdb {kind}: a change sent -> {count:,} chassis notified "
                            f"({changes} changes; the writer's answer: p50 "
                            f"{statistics.median(answered) * 1000:.1f} ms) vs one chassis alone",
                            f"p50 {statistics.median(fan) * 1000:.1f} ms, "
                            f"p99 {percentile(fan, 99) * 1000:.1f} ms",
                            f"p50 {statistics.median(alone) * 1000:.1f} ms, "
                            f"p99 {percentile(alone, 99) * 1000:.1f} ms",
                            statistics.median(fan) / statistics.median(alone)))
            rows.append(Row(f"tapdb {kind}: ovsdb-server CPU per change with {count:,} chassis "
                            "monitoring (all members)", f"{sum(cpu_ms.values()):.1f} ms"))
        finally:
            for m in members:
                m.stop()
            shutil.rmtree(directory, ignore_errors=True)
    return rows


def run_relays(count: int, changes: int, relays: int) -> list[Row]:
    """``count`` chassis through ``relays`` relays of a 3-member cluster."""
    intent, _ = build(10, rules_per_filter=5)
    directory = tempfile.mkdtemp(prefix="sdn-fan-")
    members: list[server.TapdbServer] = []
    relay_pids: list[int] = []
    try:
        members, sources = _cluster(directory)
        leader = _leader(",".join(sources))
        transact(leader, transaction(intent))
        remotes = []
        for j in range(relays):
            port = sandbox.free_port()
            d = Path(directory) / f"relay{j}"
            d.mkdir()
            subprocess.run(["ovsdb-server", f"relay:Tap:{','.join(sources)}",
                            f"--remote=ptcp:{port}:127.0.0.1", f"--pidfile={d}/relay.pid",
                            f"--log-file={d}/relay.log", f"--unixctl={d}/relay.ctl",
                            "--detach", "--no-chdir"], check=True)
            relay_pids.append(int((d / "relay.pid").read_text()))
            remotes.append(f"tcp:127.0.0.1:{port}")
            subprocess.run(["ovsdb-client", "--timeout=30", "wait", remotes[-1], "Tap",
                            "connected"], check=True, capture_output=True)
        member_pids = [int(m.pidfile.read_text()) for m in members]
        pids = member_pids + relay_pids
        alone, _, _ = measure(remotes, leader, 1, changes, pids)
        fan, answered, cpu_ms = measure(remotes, leader, count, changes, pids)
        where = f"3-member Raft + {relays} relay{'s' if relays > 1 else ''}"
        rows = [Row(f"tapdb {where}: a change sent -> {count:,} chassis notified ({changes} "
                    f"changes; the writer's answer: p50 "
                    f"{statistics.median(answered) * 1000:.1f} ms) vs one chassis alone",
                    f"p50 {statistics.median(fan) * 1000:.1f} ms, "
                    f"p99 {percentile(fan, 99) * 1000:.1f} ms",
                    f"p50 {statistics.median(alone) * 1000:.1f} ms, "
                    f"p99 {percentile(alone, 99) * 1000:.1f} ms",
                    statistics.median(fan) / statistics.median(alone)),
                Row(f"tapdb {where}: CPU per change with {count:,} chassis, each member",
                    ", ".join(f"{cpu_ms[p]:.1f}" for p in member_pids) + " ms"),
                Row(f"tapdb {where}: CPU per change, each relay",
                    ", ".join(f"{cpu_ms[p]:.1f}" for p in relay_pids) + " ms"),
                Row(f"tapdb {where}: RSS after, each member; each relay",
                    ", ".join(f"{rss_mib(p):.0f}" for p in member_pids) + " MiB; "
                    + ", ".join(f"{rss_mib(p):.0f}" for p in relay_pids) + " MiB")]
        return rows
    finally:
        for pid in relay_pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for m in members:
            m.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _leader(remotes: str) -> str:
    conn = ops.connect(remotes, 30)
    try:
        return conn.conn.remote
    finally:
        conn.close()


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--chassis", type=int, default=1000,
                   help="simulated chassis (default %(default)s)")
    p.add_argument("--changes", type=int, default=20, help="changes (default %(default)s)")
    p.add_argument("--relay-chassis", type=int, default=10000,
                   help="simulated chassis behind the relays (default %(default)s; 0: no relays)")
    args = p.parse_args()
    require_ovs()
    raise_fd_limit(max(args.chassis, args.relay_chassis))
    rows = run(args.chassis, args.changes)
    if args.relay_chassis:
        for relays in (1, 3):
            rows += run_relays(args.relay_chassis, args.changes, relays)
    print(table(rows))
    return 0


def raise_fd_limit(count: int) -> None:
    """Room for ``count`` connections here and in the servers started from here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * count + 256))
    if want < count + 256:
        sys.exit(f"tools/bench fanout: {count} connections need {count + 256} file "
                 f"descriptors; this machine allows {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


if __name__ == "__main__":
    sys.exit(main())
