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
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (Row, command_seconds, loaded_tapdb, ms, parser,  # noqa: E402
                      require_ovs, table)

TAPCTL = str(Path(sys.executable).parent / "tapctl")


def run(sessions: int, repeat: int = 5) -> list[Row]:
    with loaded_tapdb(sessions) as (remote, intent, _):
        env = dict(os.environ, TAPDB=remote)
        base = statistics.median(command_seconds(env, "ovsdb-client", "transact", remote,
                                                 '["Tap", {"op": "select", "table": '
                                                 '"Tap_Global", "where": []}]')
                                 for _ in range(repeat))
        n = len(intent.sessions)
        # the loaded targets hold more sessions than a collector's quota: a target of its own
        command_seconds(env, TAPCTL, "target-add", "bench-target", "--vxlan", "10.1.1.1")
        commands = {
            "rule-add": lambda i: ("rule-add", "f7", "inbound", "--priority", str(100 + i),
                                   "--action", "accept", "--protocol", "udp"),
            "session-add": lambda i: ("session-add", f"new{i}", "--target", "bench-target",
                                      "--priority", str(n + 100 + i)),
            "source-add": lambda i: ("source-add", f"s{i}", "--port", f"extra-{i}"),
            "target-add": lambda i: ("target-add", f"tnew{i}", "--vxlan", "10.1.1.1"),
            "session-disable": lambda i: ("session-disable", f"s{i}"),
        }
        rows = []
        for verb, args in commands.items():
            took = statistics.median(command_seconds(env, TAPCTL, *args(i))
                                     for i in range(repeat))
            rows.append(Row(f"tapctl {verb} with {n:,} sessions ({n:,} filters, "
                            f"{2 * n:,} rules) vs one ovsdb-client transact", ms(took), ms(base),
                            took / base, "≤ 150 ms"))
        took = statistics.median(command_seconds(env, TAPCTL, "show") for _ in range(3))
        rows.append(Row(f"tapctl show with {n:,} sessions (reads and prints everything)",
                        ms(took), ms(base), took / base))
        return rows


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--sessions", type=int, default=10000, help="sessions (default %(default)s)")
    args = p.parse_args()
    require_ovs()
    print(table(run(args.sessions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
