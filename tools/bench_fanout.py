"""How tapdb tells 1,000 agents about a change: commit -> notified, and the server's CPU.

Simulates N chassis in one process, each with the monitor an agent holds
(OVSDB ``monitor_cond``: the intent tables whole, Chassis; Mirror_Source and
Binding narrowed to its own ifaces; Chassis_Private to its own row), on a
private tapdb loaded with a small intent.  Then commits changes one at a
time as tapctl does (a rule added to a filter, then deleted) and stamps when
each simulated chassis receives the update.  Standalone, then a 3-member Raft
cluster (the chassis spread over the members, writes to the leader).  The
baseline, same run and same server: one chassis alone.
"""
from __future__ import annotations

import argparse
import json
import resource
import selectors
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Row, build, cpu_seconds, percentile, table, transact, transaction  # noqa: E402

from sdnagent import sandbox  # noqa: E402
from sdnagent.tapdb import ops, server  # noqa: E402

WHOLE = ("Tap_Global", "Mirror_Target", "Mirror_Filter", "Filter_Rule", "Mirror_Session",
         "Chassis")


class Chassis:
    """One simulated agent: a connection and its monitor."""

    def __init__(self, index: int, remote: str):
        kind, _, rest = remote.partition(":")
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(rest)
        else:
            host, _, port = rest.rpartition(":")
            self.sock = socket.create_connection((host, int(port)))
        self.sock.setblocking(False)
        self.name = f"sim-{index:04d}"
        self.buf = ""
        self.decoder = json.JSONDecoder()
        self.updated: Optional[float] = None
        self.ready = False
        where: dict = {t: [{"where": [True]}] for t in WHOLE}
        where["Mirror_Source"] = [{"where": [["iface_id", "==", ["set", [f"{self.name}-vm"]]]]}]
        where["Binding"] = [{"where": [["chassis", "==", self.name]]}]
        where["Chassis_Private"] = [{"where": [["name", "==", self.name]]}]
        self.send({"method": "monitor_cond", "params": ["Tap", self.name, where], "id": 1})

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
            raise RuntimeError(f"{self.name}: the server closed the connection")
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
            elif msg.get("id") == 1:
                self.ready = True
            elif msg.get("method") == "update2" and self.updated is None:
                self.updated = now


def measure(remotes: list[str], write_remote: str, count: int, changes: int,
            pids: list[int]) -> tuple[list[float], float]:
    """Notification latencies over every chassis and change; server CPU ms per change."""
    sims = [Chassis(i, remotes[i % len(remotes)]) for i in range(count)]
    sel = selectors.DefaultSelector()
    for s in sims:
        sel.register(s.sock, selectors.EVENT_READ, s)

    def pump(until: float, done) -> None:
        while time.monotonic() < until and not done():
            for key, _ in sel.select(timeout=0.05):
                key.data.readable(time.monotonic())
    try:
        pump(time.monotonic() + 120, lambda: all(s.ready for s in sims))
        assert all(s.ready for s in sims), "not every chassis got its initial state"
        pump(time.monotonic() + 0.5, lambda: False)
        api = ops.connect(write_remote, 30)
        latencies = []
        cpu = sum(cpu_seconds(p) for p in pids)
        try:
            for i in range(changes):
                for s in sims:
                    s.updated = None
                if i % 2 == 0:
                    api.rule_add("f1", "inbound", priority="100", action="accept",
                                 protocol="udp")
                else:
                    api.rule_del("f1", "inbound", "100")
                committed = time.monotonic()
                pump(committed + 30, lambda: all(s.updated is not None for s in sims))
                late = [s.name for s in sims if s.updated is None]
                assert not late, f"change {i}: {len(late)} chassis never heard of it"
                latencies += [s.updated - committed for s in sims]
        finally:
            api.close()
        cpu_ms = (sum(cpu_seconds(p) for p in pids) - cpu) * 1000 / changes
        return latencies, cpu_ms
    finally:
        for s in sims:
            s.sock.close()


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
            write = ",".join(remotes)
            transact(_leader(write), transaction(intent))
            pids = [int(m.pidfile.read_text()) for m in members]
            alone, _ = measure(remotes, write, 1, changes, pids)
            fan, cpu_ms = measure(remotes, write, count, changes, pids)
            rows.append(Row(f"tapdb {kind}: commit -> {count:,} chassis notified ({changes} "
                            "changes) vs one chassis alone",
                            f"p50 {statistics.median(fan) * 1000:.1f} ms, "
                            f"p99 {percentile(fan, 99) * 1000:.1f} ms",
                            f"p50 {statistics.median(alone) * 1000:.1f} ms, "
                            f"p99 {percentile(alone, 99) * 1000:.1f} ms",
                            statistics.median(fan) / statistics.median(alone)))
            rows.append(Row(f"tapdb {kind}: ovsdb-server CPU per change with {count:,} chassis "
                            "monitoring (all members)", f"{cpu_ms:.1f} ms"))
        finally:
            for m in members:
                m.stop()
            shutil.rmtree(directory, ignore_errors=True)
    return rows


def _leader(remotes: str) -> str:
    conn = ops.connect(remotes, 30)
    try:
        return conn.conn.remote
    finally:
        conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chassis", type=int, default=1000, help="simulated chassis (default %(default)s)")
    p.add_argument("--changes", type=int, default=20, help="changes (default %(default)s)")
    args = p.parse_args()
    why = sandbox.missing_ovs()
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 1
    raise_fd_limit(args.chassis)
    print(table(run(args.chassis, args.changes)))
    return 0


def raise_fd_limit(count: int) -> None:
    """Room for ``count`` connections here and in the servers started from here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * count + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


if __name__ == "__main__":
    sys.exit(main())
