"""What hostile chassis cost tapdb's memory: a member with its relay, as deployed.

A standalone member over TLS with a relay beside it for the agents (two CAs),
and a chassis certificate used as a compromised hypervisor would:
(a) four requests of 250 MB each (a Chassis row with a 250 MB name: refused),
(b) a 20 MB value in a bounded column (a status: refused),
(c) 30 monitors of the targets that never read, while an operator commits
    600 changes (rows with 30 KB of external_ids: 18 MB for each monitor, more than
    the sockets buffer);
(d) 30 more such monitors, started when the rows hold 18 MB: each initial answer
    is the whole table.
For each: the resident memory of the relay and of the member before, at peak
(sampled every 20 ms) and after, and whether the member saw the request.  The
baseline, same run: the same servers at rest.
"""
from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Row, parser, require_ovs, rss_mib, table  # noqa: E402

from sdnagent import pki, sandbox, tls  # noqa: E402
from sdnagent.tapdb import ops, rpc, server  # noqa: E402


CHANGES = 600  # (c): 18 MB of updates for each monitor, beyond what sockets buffer


class Peak:
    """The highest RSS of some processes while it runs, sampled every 20 ms."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.peak = {p: rss_mib(p) for p in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for p in self.pids:
                self.peak[p] = max(self.peak[p], rss_mib(p))

    def __enter__(self) -> "Peak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def raw_tls(remote: str, creds: tls.Tls) -> ssl.SSLSocket:
    host, _, port = remote.partition(":")[2].rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=120)
    return tls.client_context(creds).wrap_socket(sock)


def huge_request(remote: str, creds: tls.Tls, size: int) -> str:
    """A transaction carrying ``size`` bytes in one string; the server's verdict."""
    conn = rpc.connect(remote, 300, creds)
    try:
        result = conn.transact({"op": "insert", "table": "Chassis",
                                "row": {"name": "x" * size, "tunnel_ip": "10.0.0.1",
                                        "encap": "vxlan"}})
        return result[0].get("error", "accepted") if result else "no answer"
    except rpc.RpcError as exc:
        return f"connection: {exc}"
    finally:
        conn.close()


def run() -> list[Row]:
    directory = tempfile.mkdtemp(prefix="sdn-hostile-")
    ca = Path(directory) / "pki"
    member = server.TapdbServer(Path(directory) / "db")
    ports = sandbox.free_port(), sandbox.free_port()
    rows: list[Row] = []
    try:
        member.start([f"pssl:{ports[0]}:127.0.0.1"], tls=pki.issue(ca, "tapdb", "tapdb"),
                     chassis_remotes=[f"pssl:{ports[1]}:127.0.0.1"],
                     chassis_ca=str(pki.chassis_ca(ca)))
        relay_remote = f"ssl:127.0.0.1:{ports[1]}"
        hostile = pki.issue(ca, "hv-evil", "chassis")
        operator = ops.connect(member.remote, 30)
        pids = {"member": member.pid(), "relay": member.relay.pid()}
        assert all(pids.values())

        def figures(what: str, action) -> str:
            before = {k: rss_mib(p) for k, p in pids.items()}
            log_before = member.log.stat().st_size
            with Peak(list(pids.values())) as peak:
                verdict = action()
            time.sleep(1)
            after = {k: rss_mib(p) for k, p in pids.items()}
            seen = member.log.read_bytes()[log_before:].count(b"hv-evil")
            for k, p in pids.items():
                rows.append(Row(f"{what}: {k} RSS before / peak / after",
                                f"{before[k]:.0f} / {peak.peak[p]:.0f} / {after[k]:.0f} MiB",
                                f"{before[k]:.0f} MiB at rest"))
            return f"{verdict}; the member's log names the client {seen} times"

        verdicts = []
        verdicts.append("(a) " + figures(
            "(a) four 250 MB requests, one after another",
            lambda: ", ".join(huge_request(relay_remote, hostile, 250 << 20) for _ in range(4))))
        verdicts.append("(b) " + figures(
            "(b) a 20 MB value in a bounded column",
            lambda: huge_request(relay_remote, hostile, 20 << 20)))

        def monitors(prefix: str) -> list[ssl.SSLSocket]:
            """30 chassis monitoring the targets, which will never read an answer."""
            socks = []
            for i in range(30):
                s = raw_tls(relay_remote, pki.issue(ca, f"{prefix}{i}", "chassis"))
                s.sendall(json.dumps({"method": "monitor", "id": 1, "params": [
                    "Tap", None, {"Mirror_Target": {"columns": ["name", "external_ids"]}}]})
                    .encode())
                socks.append(s)
            return socks

        def slow_monitors() -> str:
            socks = monitors("hv-slow")
            big = ["map", [[f"k{j:02d}", "v" * 1000] for j in range(30)]]
            for i in range(CHANGES):
                operator.target_add(f"t{i:03d}", vxlan=f"10.9.{i // 250}.{i % 250 + 1}")
                operator.conn.transact({"op": "update", "table": "Mirror_Target",
                                        "where": [["name", "==", f"t{i:03d}"]],
                                        "row": {"external_ids": big}})
            time.sleep(2)
            show = subprocess.run(["ovs-appctl", "-t", str(member.relay.ctl), "memory/show"],
                                  capture_output=True, text=True).stdout.strip()
            alive = 0
            for s in socks:
                s.setblocking(False)
                try:
                    alive += 1 if s.recv(1) else 0
                except (BlockingIOError, ssl.SSLWantReadError):
                    alive += 1
                except OSError:
                    pass
                s.close()
            return (f"{alive} of 30 still connected after {CHANGES * 30 // 1000} MB of "
                    f"changes each; relay memory/show: {show}")
        verdicts.append("(c) " + figures(
            f"(c) 30 monitors that never read, {CHANGES} changes of 30 KB", slow_monitors))

        def late_monitors() -> str:
            socks = monitors("hv-late")
            time.sleep(3)
            show = subprocess.run(["ovs-appctl", "-t", str(member.relay.ctl), "memory/show"],
                                  capture_output=True, text=True).stdout.strip()
            for s in socks:
                s.close()
            return f"relay memory/show while they wait: {show}"
        verdicts.append("(d) " + figures(
            "(d) 30 monitors that never read, asking for 18 MB of rows each", late_monitors))
        operator.close()
        for v in verdicts:
            print(v)
        return rows
    finally:
        member.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser(__doc__).parse_args()
    require_ovs()
    print(table(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
