"""What sdnagent-api's lists cost with a large database, against tapctl show.

Loads N sessions (each with a filter of 2 rules, a source port, one of 3
targets) into a private tapdb in one transaction, then times, in this process
(FastAPI's test client, no HTTP socket), a page of 100 sessions (the first and
one in the middle), one session read, a page of targets, and a session created;
the baseline is ``tapctl show`` on the same database (a process that reads and
prints everything).  The medians of 5.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (Row, command_seconds, loaded_tapdb, ms, parser,  # noqa: E402
                      require_ovs, table)

from sdnagent.api import identity  # noqa: E402
from sdnagent.api.app import create_app  # noqa: E402
from sdnagent.api.audit import AuditLog  # noqa: E402
from sdnagent.api.replica import Replica  # noqa: E402
from sdnagent.tapdb import ops  # noqa: E402

TAPCTL = str(Path(sys.executable).parent / "tapctl")


def run(sessions: int, repeat: int = 5) -> list[Row]:
    from fastapi.testclient import TestClient
    with loaded_tapdb(sessions) as (remote, intent, directory):
        n = len(intent.sessions)
        env = dict(os.environ, TAPDB=remote)
        base = statistics.median(command_seconds(env, TAPCTL, "show") for _ in range(repeat))
        tokens = directory / "tokens"
        token = identity.add(tokens, "bench", "admin")
        replica = Replica(remote, 30)
        try:
            client = TestClient(create_app(lambda: ops.connect(remote, 30),
                                           identity.load(tokens),
                                           AuditLog(directory / "audit.jsonl"), replica))
            auth = {"Authorization": f"Bearer {token}"}
            assert client.post("/v1/traffic-mirror-targets", headers=auth, json={
                "name": "bench-target", "vxlan": "10.1.1.1"}).status_code == 201
            calls = {
                "GET a page of 100 sessions (the first)":
                    lambda i: client.get("/v1/traffic-mirror-sessions", headers=auth),
                "GET a page of 100 sessions (offset N/2)":
                    lambda i: client.get("/v1/traffic-mirror-sessions", headers=auth,
                                         params={"offset": n // 2}),
                "GET one session":
                    lambda i: client.get(f"/v1/traffic-mirror-sessions/s{i}", headers=auth),
                "GET a page of 100 targets":
                    lambda i: client.get("/v1/traffic-mirror-targets", headers=auth),
                "POST a session":
                    lambda i: client.post("/v1/traffic-mirror-sessions", headers=auth, json={
                        "name": f"new{i}", "target": "bench-target",
                        "priority": str(n + 100 + i)}),
            }
            rows = []
            for what, call in calls.items():
                took = statistics.median(_seconds(call, i) for i in range(repeat))
                rows.append(Row(f"API {what} with {n:,} sessions, vs tapctl show", ms(took),
                                ms(base), took / base,
                                "≤ 150 ms" if "page of 100 s" in what else ""))
            return rows
        finally:
            replica.close()


def _seconds(call, i: int) -> float:
    started = time.perf_counter()
    r = call(i)
    took = time.perf_counter() - started
    assert r.status_code in (200, 201), r.text
    return took


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--sessions", type=int, default=10000, help="sessions (default %(default)s)")
    args = p.parse_args()
    require_ovs()
    print(table(run(args.sessions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
