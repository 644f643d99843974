"""What the API reads from: tapdb kept in memory by an IDL, the intent read in proportion
to what changed (the agents' ``SnapshotCache``), statuses and counters looked up for the
objects a page shows only.  A page of 100 of 10,000 sessions costs what 100 cost.

Writes go through the service layer; each waits until the replica has the
generation it committed, so that a read after a write sees it.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

from sdnagent import liveness, model, tls
from sdnagent.tapdb import client, rows


class View:
    """The replica as one request reads it, under the IDL's lock: the intent (without
    statuses, read in proportion to changes), and the statuses and counters of the
    objects a page shows, looked up for those alone."""

    def __init__(self, api: client.TapdbApi, idl: Any):
        self.idl = idl
        snap = api.read_intent(idl)
        self.intent, self._rows = snap.intent, snap.rows
        self.now = time.time()
        self._statuses: Optional[dict[Any, list[Any]]] = None
        self._stats: Optional[dict[str, list[Any]]] = None
        bindings: dict[str, list[str]] = {}
        for r in idl.tables["Binding"].rows.values():
            bindings.setdefault(r.iface_id, []).append(r.chassis)
        self.bindings = {k: tuple(sorted(v)) for k, v in bindings.items()}
        self.beats = client.read_liveness(idl)

    def _status(self, row: Any) -> tuple:
        if self._statuses is None:
            self._statuses = {}
            for table, column in (("Source_Status", "source"), ("Target_Status", "target")):
                for r in self.idl.tables[table].rows.values():
                    for obj in getattr(r, column):
                        if obj is not None:
                            self._statuses.setdefault(obj.uuid, []).append(r)
        found = self._statuses.get(row.uuid)
        if not found:
            return ()
        return rows.statuses(found, "source" if found[0]._table.name == "Source_Status"
                             else "target").get(row.uuid, ())

    def chassis(self) -> list[tuple[str, str, str]]:
        """Every Chassis row as written: (name, tunnel_ip, encap)."""
        return client.read_chassis(self.idl)

    def mtus(self) -> dict[str, int]:
        """The underlay MTU each chassis published."""
        return {r.name: r.tunnel_mtu[0] for r in self.idl.tables["Chassis"].rows.values()
                if r.tunnel_mtu}

    def counters(self, session: str) -> dict[str, dict[str, int]]:
        """What each chassis reported of ``session``."""
        if self._stats is None:
            self._stats = {}
            for r in self.idl.tables["Session_Stats"].rows.values():
                for sess in r.session:
                    if sess is not None:
                        self._stats.setdefault(sess.name, []).append(r)
        return {r.chassis: dict(r.counters) for r in self._stats.get(session, ())}

    def shown(self, objects: list[Any], kind: str) -> list[Any]:
        """``objects`` (targets or sessions of ``intent``) with the statuses agents wrote,
        judged for silence as tapctl judges them."""
        out: list[Any] = []
        for obj in objects:
            if kind == "target":
                out.append(dataclasses.replace(obj, status=self._status(self._rows[
                    "target", obj.name])))
            else:
                sources = tuple(dataclasses.replace(src, status=self._status(self._rows[
                    "source", obj.name, src.key])) for src in obj.sources)
                out.append(dataclasses.replace(obj, sources=sources))
        if not out:
            return out
        targets = out if kind == "target" else [
            self.intent.targets[s.target] for s in out if s.target in self.intent.targets]
        judged = liveness.apply(model.Intent.of(
            targets, (), out if kind == "session" else ()), self.bindings, self.beats, self.now)
        table = judged.targets if kind == "target" else judged.sessions
        return [table[o.name] for o in out]


class Replica:
    def __init__(self, remote: str, timeout: float, creds: Optional[tls.Tls] = None):
        self.api = client.connect(remote, timeout, creds=creds)
        self.api.snapshots = cache = client.SnapshotCache()
        with self.api.ovsdb_connection.lock:
            self.api.idl.on_row = cache.changed

    def close(self) -> None:
        self.api.close()

    def generation(self) -> int:
        return self.api.read(lambda idl: max(
            (r.generation for r in idl.tables["Tap_Global"].rows.values()), default=0))

    def caught_up(self, generation: Optional[int], timeout: float = 5.0) -> None:
        """Return once the replica holds ``generation`` (a write's), or after ``timeout``."""
        if not generation:
            return
        deadline = time.monotonic() + timeout
        while self.generation() < generation and time.monotonic() < deadline:
            time.sleep(0.005)

    def read(self, func: Callable[[View], Any]) -> Any:
        """``func(view)``, while the replica cannot change under it."""
        return self.api.read(lambda idl: func(View(self.api, idl)))
