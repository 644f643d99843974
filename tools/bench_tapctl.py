"""What a tapctl command costs with a large database, against a one-transaction C client.

Loads N sessions (each with a filter of 2 rules, a source port, one of 3
targets) into a private tapdb in one transaction, then times tapctl commands
as an operator runs them (a process each, the median of 5): rule-add,
session-add, source-add, target-add, session-disable, and show.  The baseline
is ``ovsdb-client transact`` of one small select on the same server: the
floor for any command-line client that starts, connects and asks once.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (Row, build, ms, parser, require_ovs, table,  # noqa: E402
                      transact, transaction)

from sdnagent.tapdb import server  # noqa: E402

TAPCTL = str(Path(sys.executable).parent / "tapctl")


def _timed(env: dict, *argv: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    assert proc.returncode == 0, (argv, proc.stderr)
    return took


def run(sessions: int, repeat: int = 5) -> list[Row]:
    intent, _ = build(-(-sessions // 3), rules_per_filter=2)
    directory = tempfile.mkdtemp(prefix="sdn-bench-")
    srv = server.TapdbServer(directory)
    try:
        srv.start()
        transact(srv.remote, transaction(intent))
        env = dict(os.environ, TAPDB=srv.remote)
        base = statistics.median(_timed(env, "ovsdb-client", "transact", srv.remote, '["Tap", '
                                        '{"op": "select", "table": "Tap_Global", "where": []}]')
                                 for _ in range(repeat))
        n = len(intent.sessions)
        commands = {
            "rule-add": lambda i: ("rule-add", "f7", "inbound", "--priority", str(100 + i),
                                   "--action", "accept", "--protocol", "udp"),
            "session-add": lambda i: ("session-add", f"new{i}", "--target", "t1", "--priority",
                                      str(n + 100 + i)),
            "source-add": lambda i: ("source-add", f"s{i}", "--port", f"extra-{i}"),
            "target-add": lambda i: ("target-add", f"tnew{i}", "--vxlan", "10.1.1.1"),
            "session-disable": lambda i: ("session-disable", f"s{i}"),
        }
        rows = []
        for verb, args in commands.items():
            took = statistics.median(_timed(env, TAPCTL, *args(i)) for i in range(repeat))
            rows.append(Row(f"tapctl {verb} with {n:,} sessions ({n:,} filters, "
                            f"{2 * n:,} rules) vs one ovsdb-client transact", ms(took), ms(base),
                            took / base, "≤ 150 ms"))
        took = statistics.median(_timed(env, TAPCTL, "show") for _ in range(3))
        rows.append(Row(f"tapctl show with {n:,} sessions (reads and prints everything)",
                        ms(took), ms(base), took / base))
        return rows
    finally:
        srv.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--sessions", type=int, default=10000, help="sessions (default %(default)s)")
    args = p.parse_args()
    require_ovs()
    print(table(run(args.sessions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
