"""The agent's tapdb client: an ovsdbapp backend, an IDL narrowed to its chassis.

Agents read the intent from the IDL (through :class:`SnapshotCache`, in
proportion to what changed) and write only what they own: their Chassis and
Chassis_Private rows, Bindings, statuses.  Operators' verbs are in
:mod:`sdnagent.tapdb.ops`, which tapctl uses without the IDL.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Optional

from ovs import stream
from ovsdbapp.backend.ovs_idl import connection

from sdnagent import liveness, model, ovsdbutil, tls
from sdnagent.tapdb import rows, schema
from sdnagent.tapdb.rows import KINDS, Read, Snapshot

DEFAULT_TIMEOUT = 10.0


class TapdbError(RuntimeError):
    """tapdb cannot be reached, is too old, or refused a change."""


# ---------------------------------------------------------------- reading

def read_snapshot(idl: Any) -> Snapshot:
    return rows.snapshot(lambda table: idl.tables[table].rows.values())


class SnapshotCache:
    """:func:`read_snapshot` in proportion to what changed since the last read.

    The IDL reports every row it creates, updates or deletes (:meth:`changed`,
    called under the connection lock, as reads are); an object is read again
    only when a row it was read from changed, so a pass after one change reads
    one object, not the whole intent.
    """

    def __init__(self) -> None:
        self._dirty: set = set()
        self._sources_moved = False
        self._objects: dict[str, dict[Any, Read]] = {table: {} for table, _ in KINDS}
        self._users: dict[Any, set[tuple[str, Any]]] = {}  # row uuid -> objects read from it

    def changed(self, table: str, event: str, row: Any) -> None:
        self._dirty.add(row.uuid)
        if table == "Mirror_Source" and event != "update":
            # a source row that enters or leaves this client's view: its session does
            # not name it among the rows it was read from
            self._sources_moved = True

    def read(self, idl: Any) -> Snapshot:
        stale: set[tuple[str, Any]] = set()
        for uuid in self._dirty:
            stale.update(self._users.get(uuid, ()))
        if self._sources_moved:
            stale.update(("Mirror_Session", u) for u in self._objects["Mirror_Session"])
        self._dirty, self._sources_moved = set(), False
        found_rows: dict = {}
        found: list[list] = []
        for table, read in KINDS:
            known = self._objects[table]
            present = idl.tables[table].rows
            for uuid in [u for u in known if u not in present or (table, u) in stale]:
                self._forget(table, uuid)
            objs = []
            for uuid, row in present.items():
                entry = known.get(uuid)
                if entry is None:
                    entry = known[uuid] = read(row)
                    for dep in entry[2]:
                        self._users.setdefault(dep, set()).add((table, uuid))
                objs.append(entry[0])
                found_rows.update(entry[1])
            found.append(objs)
        return Snapshot(model.Intent.of(*found), found_rows)

    def _forget(self, table: str, uuid: Any) -> None:
        entry = self._objects[table].pop(uuid)
        for dep in entry[2]:
            users = self._users.get(dep)
            if users is not None:
                users.discard((table, uuid))
                if not users:
                    del self._users[dep]


# ---------------------------------------------------------------- writing


def _named(idl: Any, table: str, name: str) -> Any:
    """The row of ``table`` whose ``name`` is ``name`` (an indexed column), or None."""
    return next((r for r in idl.tables[table].rows.values() if r.name == name), None)


class TapdbApi(ovsdbutil.Backend):
    """tapdb as an agent sees it: what it reads (an IDL kept up to date) and writes."""

    schema = schema.NAME

    def snapshot(self) -> Snapshot:
        return self.read(read_snapshot)

    # ---------------------------------------------------- what agents use

    snapshots: Optional[SnapshotCache] = None  # an agent's: reads in proportion to changes

    def insert(self, txn: Any, table: str) -> Any:
        return txn.insert(self.tables[table])

    def read_intent(self, idl: Any) -> Snapshot:
        return self.snapshots.read(idl) if self.snapshots is not None else read_snapshot(idl)

    def agent_view(self) -> "AgentView":
        return self.read(lambda idl: read_agent_view(idl, self.read_intent))

    def watch(self, chassis: str, local_ifaces: set[str], target_ifaces: set[str],
              sources: Iterable[Any] = (), source_ifaces: Iterable[str] = ()) -> None:
        """Monitor only the sources and bindings that concern this chassis: its own, the
        bindings of the targets it may send to, and for the targets it hosts, the
        ``sources`` (uuids) that send to them and where their ``source_ifaces`` live."""
        cond = [["chassis", "==", ["set", [chassis]]]] + [
            ["iface_id", "==", ["set", [i]]] for i in sorted(local_ifaces)] + [
            ["_uuid", "==", ["uuid", str(u)]] for u in sorted(sources, key=str)]
        bindings = [["chassis", "==", chassis]] + [
            ["iface_id", "==", i] for i in sorted(target_ifaces | local_ifaces | set(source_ifaces))]
        with self.ovsdb_connection.lock:
            self.idl.cond_change("Mirror_Source", cond)
            self.idl.cond_change("Binding", bindings)
        # the IDL sends new conditions from its connection thread
        self.wake()

    def source_uuids(self, session_rows: Iterable[Any]) -> frozenset:
        """The uuids of these sessions' sources, also of those outside this client's
        view (which the IDL's rows give as None)."""
        def read(idl: Any) -> frozenset:
            found = set()
            for row in session_rows:
                datum = (row._data or {}).get("sources")
                if datum is not None:
                    found.update(atom.value for atom in datum.values)
            return frozenset(found)
        return self.read(read)

    def register_chassis(self, name: str, tunnel_ip: str, encap: str,
                         mtu: Optional[int] = None, timeout: Optional[float] = None) -> None:
        """Make this chassis's row say where its tunnels end and the underlay's MTU there
        (when known); written only when it differs."""
        want = (tunnel_ip, encap, [] if mtu is None else [mtu])

        def run(txn: Any) -> None:
            row = _named(self.idl, "Chassis", name)
            if row is None:
                row = self.insert(txn, "Chassis")
                row.name = name
                row.tunnel_ip, row.encap, row.tunnel_mtu = want
            elif (row.tunnel_ip, row.encap, list(row.tunnel_mtu)) != want:
                row.tunnel_ip, row.encap, row.tunnel_mtu = want
        def current(idl: Any) -> Optional[tuple]:
            row = _named(idl, "Chassis", name)
            return None if row is None else (row.tunnel_ip, row.encap, list(row.tunnel_mtu))

        if self.read(current) == want:
            return
        self.run(run, f"register chassis {name}", timeout)

    def heartbeat(self, name: str, now: int, interval: int,
                  timeout: Optional[float] = None) -> None:
        """Say that ``name`` is alive, in a table that agents monitor only for their own row."""
        def run(txn: Any) -> None:
            row = _named(self.idl, "Chassis_Private", name)
            if row is None:
                row = self.insert(txn, "Chassis_Private")
                row.name = name
                row.heartbeat_interval = interval
            elif row.heartbeat_interval != interval:
                row.heartbeat_interval = interval
            row.heartbeat = now
        self.run(run, f"heartbeat of {name}", timeout)

    def report_applied(self, name: str, generation: int) -> bool:
        """Say that chassis ``name`` has applied the intent of ``generation`` (its row in
        Chassis_Private, which other agents do not monitor); written when it differs."""
        def current(idl: Any) -> Optional[int]:
            row = _named(idl, "Chassis_Private", name)
            return None if row is None else row.applied_generation
        if self.read(current) in (None, generation):  # no row: the next heartbeat makes it
            return False

        def run(txn: Any) -> None:
            row = _named(self.idl, "Chassis_Private", name)
            if row is not None:
                row.applied_generation = generation
        self.run(run, f"applied generation of {name}")
        return True

    def publish_bindings(self, chassis: str, iface_ids: set[str]) -> int:
        """Make the Binding rows of ``chassis`` exactly ``iface_ids``; returns changes."""
        def run(txn: Any) -> int:
            mine = {r.iface_id: r for r in self.tables["Binding"].rows.values()
                    if r.chassis == chassis}
            for iface, row in mine.items():
                if iface not in iface_ids:
                    row.delete()
            for iface in iface_ids - set(mine):
                row = self.insert(txn, "Binding")
                row.iface_id, row.chassis = iface, chassis
            return len(set(mine) ^ iface_ids)
        if self.read(lambda idl: {r.iface_id for r in idl.tables["Binding"].rows.values()
                                  if r.chassis == chassis}) == iface_ids:
            return 0
        return self.run(run, f"bindings of {chassis}")

    def write_status(self, chassis: str, snap: Snapshot,
                     sources: dict[tuple[str, str], dict[str, str]],
                     targets: dict[str, dict[str, str]]) -> int:
        """Make the status rows of ``chassis`` exactly these; returns how many changed.

        A chassis owns the Source_Status and Target_Status rows that name it (the
        only ones it monitors, and, with RBAC, the only ones it may write): one it
        has nothing to say about any more (the VM left, the session went) is
        deleted, so no stale "active" stays behind.  ``snap`` (the pass's own read)
        gives the rows the statuses speak of.
        """
        want: dict[tuple[str, Any], tuple[Any, dict]] = {}
        for (session, key), status in sources.items():
            row = snap.rows.get(("source", session, key))
            if row is not None:
                want["Source_Status", row.uuid] = (row, status)
        for name, status in targets.items():
            row = snap.rows.get(("target", name))
            if row is not None:
                want["Target_Status", row.uuid] = (row, status)
        return self._own_rows(chassis, _STATUS_TABLES, want, f"status of {chassis}")

    def write_counters(self, chassis: str, snap: Snapshot,
                       counters: dict[str, dict[str, int]]) -> int:
        """Make the Session_Stats rows of ``chassis`` exactly these counters (by session
        name); returns how many rows changed.  Rows no agent monitors but its own."""
        want: dict[tuple[str, Any], tuple[Any, dict]] = {}
        for name, values in counters.items():
            row = snap.rows.get(("session", name))
            if row is not None:
                want["Session_Stats", row.uuid] = (row, values)
        return self._own_rows(chassis, _STATS_TABLES, want, f"counters of {chassis}")

    def _own_rows(self, chassis: str, tables: tuple[tuple[str, str, str], ...],
                  want: dict[tuple[str, Any], tuple[Any, dict]], what: str) -> int:
        """Make the rows of ``tables`` that name ``chassis`` exactly ``want``: (table,
        object uuid) -> (the object's row, the map); each table given as (table, its
        reference column, its map column).  Returns how many rows changed."""
        def changes(idl: Any) -> tuple[list, list, list]:
            have: set[tuple[str, Any]] = set()
            deletes, updates = [], []
            for table, column, value in tables:
                for r in idl.tables[table].rows.values():
                    if r.chassis != chassis:
                        continue
                    obj = next((o for o in getattr(r, column) if o is not None), None)
                    key = (table, obj.uuid if obj is not None else None)
                    if key not in want or key in have:
                        deletes.append(r)
                        continue
                    have.add(key)
                    if dict(getattr(r, value)) != want[key][1]:
                        updates.append((r, value, want[key][1]))
            inserts = [(k[0], *v) for k, v in want.items() if k not in have]
            return deletes, updates, inserts

        if not any(self.read(changes)):
            return 0
        columns = {table: (column, value) for table, column, value in tables}

        def run(txn: Any) -> int:
            deletes, updates, inserts = changes(self.idl)
            for r in deletes:
                r.delete()
            for r, value, data in updates:
                setattr(r, value, data)
            for table, obj, data in inserts:
                row = self.insert(txn, table)
                row.chassis = chassis
                setattr(row, columns[table][0], obj)
                setattr(row, columns[table][1], data)
            return len(deletes) + len(updates) + len(inserts)
        return self.run(run, what)


# what agents own, as (table, the reference to the object, the map): rows naming their chassis
_STATUS_TABLES = (("Source_Status", "source", "status"), ("Target_Status", "target", "status"))
_STATS_TABLES = (("Session_Stats", "session", "counters"),)
# what an agent reads and writes; RBAC_* (the server's business) stays out of its view
AGENT_TABLES = ("Tap_Global", "Mirror_Target", "Mirror_Filter", "Filter_Rule", "Mirror_Session",
                "Mirror_Source", "Chassis", "Chassis_Private", "Binding", "Source_Status",
                "Target_Status", "Session_Stats")


@dataclasses.dataclass(frozen=True)
class AgentView:
    """An agent's view of tapdb: the intent, where chassis are, where ifaces live.

    Chassis rows are judged here: one with a bad name or tunnel IP is left out
    of ``chassis_ips`` and kept in ``rejected`` with the reason, so that no
    row, whoever wrote it, can stop a pass."""

    snapshot: Snapshot
    chassis_ips: dict[str, str]
    bindings: dict[str, tuple[str, ...]]
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)  # chassis -> why
    generation: int = 0  # Tap_Global.generation: the intent's version, read with it


def read_agent_view(idl: Any, intent: Callable[[Any], Snapshot] = read_snapshot) -> AgentView:
    chassis, rejected = {}, {}
    for r in idl.tables["Chassis"].rows.values():
        try:
            model.check_chassis(r.name, r.tunnel_ip)
        except model.IntentError as exc:
            rejected[r.name] = str(exc)
            continue
        chassis[r.name] = r.tunnel_ip
    bindings: dict[str, list[str]] = {}
    for r in idl.tables["Binding"].rows.values():
        bindings.setdefault(r.iface_id, []).append(r.chassis)
    generation = max((r.generation for r in idl.tables["Tap_Global"].rows.values()), default=0)
    return AgentView(intent(idl), chassis,
                     {k: tuple(sorted(v)) for k, v in bindings.items()}, rejected, generation)


def read_liveness(idl: Any) -> dict[str, liveness.Liveness]:
    return {r.name: liveness.Liveness(r.heartbeat, r.heartbeat_interval)
            for r in idl.tables["Chassis_Private"].rows.values()}


def read_applied(idl: Any) -> dict[str, int]:
    """The generation each chassis has applied."""
    return {r.name: r.applied_generation for r in idl.tables["Chassis_Private"].rows.values()}


def read_chassis(idl: Any) -> list[tuple[str, str, str]]:
    """Every Chassis row as written: (name, tunnel_ip, encap)."""
    return sorted((r.name, r.tunnel_ip, r.encap) for r in idl.tables["Chassis"].rows.values())


def connect(remote: str, timeout: float = DEFAULT_TIMEOUT,
            chassis: Optional[str] = None, creds: Optional[tls.Tls] = None) -> TapdbApi:
    """Connect to tapdb at ``remote`` (comma-separated for a Raft cluster).

    An agent gives its ``chassis``: of ``Chassis_Private`` (heartbeats) it then
    monitors only its own row, so no other chassis's heartbeat reaches it.
    Every step honours ``timeout``.  ``creds`` for ``ssl:`` remotes (the ovs
    library keeps one set per process).
    """
    if creds is not None:
        stream.Stream.ssl_set_private_key_file(creds.private_key)
        stream.Stream.ssl_set_certificate_file(creds.certificate)
        stream.Stream.ssl_set_ca_cert_file(creds.ca_cert)
    elif any(r.strip().startswith("ssl:") for r in remote.split(",")):
        raise TapdbError(f"cannot reach tapdb at {remote}: an ssl: remote needs "
                         "[tapdb] ssl_key_file, ssl_cert_file and ssl_ca_cert_file")
    if remote.startswith("unix:") and "," not in remote and not os.path.exists(remote[5:]):
        raise TapdbError(f"cannot reach tapdb at {remote}: no such socket "
                         "(is sdnagent-tapdb running?)")
    try:
        helper = ovsdbutil.schema_helper(remote, schema.NAME, timeout)
    except ovsdbutil.FetchError as exc:
        # the ovs library says only "Transport endpoint is not connected" when a TLS
        # server refuses us: ask the TLS layer why
        whys = [f"{r}: {why}" for r in remote.split(",") if creds is not None
                and r.strip().startswith("ssl:")
                and (why := tls.diagnose(r.strip(), creds, min(timeout, 3))) is not None]
        raise TapdbError(f"cannot reach tapdb at {remote}: "
                         + ("; ".join(whys) if whys else str(exc))) from exc
    found = helper.schema_json.get("version", "0")
    if schema.version_tuple(found) < schema.version_tuple(schema.version()):
        raise TapdbError(f"tapdb at {remote} has schema version {found}, older than "
                         f"{schema.version()}; restart it with 'sdnagent-tapdb start' to convert it")
    for table in AGENT_TABLES:
        helper.register_table(table)
    # any member or relay will do: an agent's reads need not come from the leader (the
    # library refuses to go back to older data) and its writes are forwarded there
    idl = ovsdbutil.NotifyingIdl(remote, helper, leader_only=False)
    if chassis is not None:
        idl.cond_change("Chassis_Private", [["name", "==", chassis]])
        for table, _, _ in _STATUS_TABLES + _STATS_TABLES:
            idl.cond_change(table, [["chassis", "==", chassis]])
    conn = connection.Connection(idl, timeout)
    try:
        return TapdbApi(conn)
    except Exception as exc:
        idl.close()
        raise TapdbError(f"cannot reach tapdb at {remote}: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
