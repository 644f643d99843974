"""tapdb's session clock: a session whose end has come is disabled, once, in tapdb.

A session's end is an absolute time in ``Mirror_Session.ends_at``, written by
whoever set it (``--duration`` counts from that command).  This process, run
by ``sdnagent-tapdb start`` beside each member, watches the enabled sessions
with an end and, when the earliest comes, disables it with its reason
(``stop_reason``): one write in tapdb, which every agent follows as it follows
any change.  No agent judges an end by its own clock, so a chassis whose clock
is off still stops with the others.

Several clocks (one per cluster member) may race to stop one session: each
stop is conditional on what it read, and the losers find nothing left to do.
At rest it sleeps until the next end, or until tapdb reports a change; after a
lost connection (tapdb restarting) it connects again with a backoff, and its
first look stops whatever ended meanwhile.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Sequence

from sdnagent.tapdb import ops, rpc, schema

LOG = logging.getLogger("sdnagent.tapdb.clock")
MAX_SLEEP = 300.0  # seconds: a look now and then, in case a wall-clock step skipped an end


def next_end(ends: Mapping[str, tuple[bool, int]]) -> Optional[int]:
    """The earliest end (ms) of an enabled session, of ``ends``: row -> (enabled, ends_at)."""
    return min((at for enabled, at in ends.values() if enabled and at > 0), default=None)


def due(ends: Mapping[str, tuple[bool, int]], now: int) -> bool:
    found = next_end(ends)
    return found is not None and found <= now


class SessionClock:
    """Stops sessions at their end, for as long as ``stopping`` is not set."""

    def __init__(self, remote: str, timeout: float = 10.0):
        self.remote = remote
        self.timeout = timeout
        self.stopping = threading.Event()
        self.stopped: list[str] = []  # every session it stopped, in order

    def run(self) -> None:
        backoff = 0.0
        while not self.stopping.is_set():
            try:
                self._watch()
                backoff = 0.0
            except (ops.TapdbError, rpc.RpcError) as exc:
                backoff = min(max(backoff * 2, 0.5), 10.0)
                LOG.warning("session clock: tapdb at %s: %s; again in %.1f s", self.remote, exc,
                            backoff)
                self.stopping.wait(backoff)

    def _watch(self) -> None:
        db = ops.connect(self.remote, self.timeout)
        try:
            conn = db.conn
            ends: dict[str, tuple[bool, int]] = {}
            merge(ends, conn.call("monitor", schema.NAME, "clock", {
                "Mirror_Session": {"columns": ["enabled", "ends_at"]}}))
            LOG.info("session clock: watching %d session(s) with an end on %s",
                     sum(1 for _, at in ends.values() if at), self.remote)
            while not self.stopping.is_set():
                now = ops.now_ms()
                if due(ends, now):
                    stopped = db.end_sessions(now)
                    for name in stopped:
                        LOG.info("session clock: session %s stopped: its time ended", name)
                    self.stopped += stopped
                end = next_end(ends)
                sleep = MAX_SLEEP if end is None else min(MAX_SLEEP, max(0.0, end - now) / 1000)
                # until the next end; a change in tapdb wakes it at once
                msg = conn.next_message(time.monotonic() + sleep + 0.001)
                if msg is not None and msg.get("method") == "update":
                    merge(ends, msg["params"][1])
        finally:
            db.close()


def merge(ends: dict[str, tuple[bool, int]], update: dict) -> None:
    """A monitor's initial answer or update, folded into ``ends``."""
    for row, change in update.get("Mirror_Session", {}).items():
        new = change.get("new")
        if new is None:
            ends.pop(row, None)
            continue
        old = ends.get(row, (False, 0))
        ends[row] = (new.get("enabled", old[0]), new.get("ends_at", old[1]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="sdnagent-tapdb-clock",
                                description="Disable tapdb's sessions when their end comes.")
    p.add_argument("--db", required=True, help="tapdb's connection (a member's unix socket)")
    p.add_argument("--pidfile", help="write this process's pid here")
    p.add_argument("--log-file", help="log here instead of standard error")
    args = p.parse_args(argv)
    logging.basicConfig(filename=args.log_file, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    clock = SessionClock(args.db)

    def stop(*_: object) -> None:  # at once, also in the middle of a wait
        clock.stopping.set()
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.pidfile:
        Path(args.pidfile).write_text(f"{os.getpid()}\n")
    try:
        clock.run()
    finally:
        if args.pidfile:
            Path(args.pidfile).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

