"""The tapdb client: an ovsdbapp backend with one method per tapctl verb.

Every write command runs in one OVSDB transaction that (1) reads the whole
intent from the IDL, (2) judges the change with the pure rules of
:mod:`sdnagent.model`, (3) verifies and bumps ``Tap_Global.generation``.  The
verify is an OVSDB "wait" operation: when another writer committed in
between, the server answers "try again" and ovsdbapp re-runs the command on
the fresh data, so racing writers cannot break a rule the schema cannot
express (quotas across sessions, a port that is both source and target).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

from ovsdbapp.backend.ovs_idl import connection

from sdnagent import liveness, model, ovsdbutil
from sdnagent.tapdb import schema

DEFAULT_TIMEOUT = 10.0


class TapdbError(RuntimeError):
    """tapdb cannot be reached, is too old, or refused a change."""


# ---------------------------------------------------------------- reading


def _opt(row: Any, column: str) -> Any:
    value = getattr(row, column)
    return value[0] if value else None


def _range(row: Any, prefix: str) -> Optional[model.PortRange]:
    lo, hi = _opt(row, prefix + "_min"), _opt(row, prefix + "_max")
    if lo is None and hi is None:
        return None
    return model.PortRange(lo if lo is not None else hi, hi if hi is not None else lo)


def _status(row: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(row.status.items()))


def rule_from_row(row: Any) -> model.Rule:
    return model.Rule(row.priority, row.action, _opt(row, "protocol"), row.ethertype,
                      _opt(row, "src_cidr"), _opt(row, "dst_cidr"),
                      _range(row, "src_port"), _range(row, "dst_port"))


def source_from_row(row: Any) -> model.Source:
    return model.Source(row.type, row.direction, _opt(row, "iface_id"), _opt(row, "chassis"),
                        _opt(row, "bridge"), _opt(row, "vlan"), row.enabled, _status(row))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The intent read from the IDL, and the row behind each object."""

    intent: model.Intent
    rows: dict  # ("target"|"filter"|"session", name) / ("rule", filter, dir, prio) / ("source", session, key)


# An object read from tapdb: the model value, the rows behind it (Snapshot.rows
# entries) and the uuids of every row it was read from.
_Read = tuple[Any, dict, frozenset]


def _target(row: Any) -> _Read:
    t = model.Target(row.name, row.type, row.tunnel_key, _opt(row, "iface_id"),
                     _opt(row, "chassis"), _opt(row, "nic"), _opt(row, "remote_ip"),
                     row.enabled, _status(row))
    return t, {("target", row.name): row}, frozenset({row.uuid})


def _filter(row: Any) -> _Read:
    rows: dict = {("filter", row.name): row}
    deps = {row.uuid}
    by_dir = {}
    for direction in model.RULE_DIRECTIONS:
        rules = []
        for rrow in getattr(row, direction + "_rules"):
            rule = rule_from_row(rrow)
            rows["rule", row.name, direction, rule.priority] = rrow
            deps.add(rrow.uuid)
            rules.append(rule)
        by_dir[direction] = tuple(sorted(rules, key=lambda r: r.priority))
    return (model.Filter(row.name, by_dir["inbound"], by_dir["outbound"]), rows,
            frozenset(deps))


def _session(row: Any) -> _Read:
    rows: dict = {("session", row.name): row}
    deps = {row.uuid, row.target.uuid}
    sources = []
    for srow in row.sources:
        if srow is None:  # outside this client's monitoring condition
            continue
        src = source_from_row(srow)
        rows["source", row.name, src.key] = srow
        deps.add(srow.uuid)
        sources.append(src)
    flt = _opt(row, "filter")
    if flt is not None:
        deps.add(flt.uuid)
    sess = model.Session(row.name, row.priority, row.vni, row.target.name,
                         flt.name if flt is not None else None, _opt(row, "packet_length"),
                         row.enabled, tuple(sorted(sources, key=lambda s: (s.type, s.key))))
    return sess, rows, frozenset(deps)


_KINDS = (("Mirror_Target", _target), ("Mirror_Filter", _filter), ("Mirror_Session", _session))


def read_snapshot(idl: Any) -> Snapshot:
    rows: dict = {}
    found: dict[str, list] = {}
    for table, read in _KINDS:
        found[table] = []
        for row in idl.tables[table].rows.values():
            obj, its_rows, _ = read(row)
            found[table].append(obj)
            rows.update(its_rows)
    return Snapshot(model.Intent.of(*found.values()), rows)


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
        self._objects: dict[str, dict[Any, _Read]] = {table: {} for table, _ in _KINDS}
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
        rows: dict = {}
        found: list[list] = []
        for table, read in _KINDS:
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
                rows.update(entry[1])
            found.append(objs)
        return Snapshot(model.Intent.of(*found), rows)

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


def _set_opt(row: Any, column: str, value: Any) -> None:
    setattr(row, column, [] if value is None else [value])


def _write_target(row: Any, t: model.Target) -> None:
    row.name, row.type, row.tunnel_key, row.enabled = t.name, t.type, t.tunnel_key, t.enabled
    for column in ("iface_id", "chassis", "nic", "remote_ip"):
        _set_opt(row, column, getattr(t, column))


def _write_rule(row: Any, r: model.Rule) -> None:
    row.priority, row.action, row.ethertype = r.priority, r.action, r.ethertype
    _set_opt(row, "protocol", r.protocol)
    _set_opt(row, "src_cidr", r.src)
    _set_opt(row, "dst_cidr", r.dst)
    for prefix, rng in (("src_port", r.src_port), ("dst_port", r.dst_port)):
        _set_opt(row, prefix + "_min", rng.lo if rng else None)
        _set_opt(row, prefix + "_max", rng.hi if rng else None)


def _write_source(row: Any, s: model.Source) -> None:
    row.type, row.direction, row.enabled = s.type, s.direction, s.enabled
    for column in ("iface_id", "chassis", "bridge", "vlan"):
        _set_opt(row, column, getattr(s, column))


class TapdbApi(ovsdbutil.Backend):
    """tapdb: every verb of tapctl, and what agents read and write."""

    schema = schema.NAME

    def snapshot(self) -> Snapshot:
        return self.read(read_snapshot)

    def execute(self, func: Callable, description: str) -> Any:
        """Run ``func(txn, snapshot)`` as one change to the intent.

        The snapshot is read inside the transaction, and ``Tap_Global.generation``
        is verified and bumped, so a concurrent writer makes the server answer
        "try again" and ovsdbapp re-runs ``func`` on fresh data.
        """
        def run(txn: Any) -> Any:
            snap = read_snapshot(self.idl)
            table = self.tables["Tap_Global"]
            rows = list(table.rows.values())
            if rows:
                rows[0].verify("generation")
                generation = rows[0].generation + 1
                rows[0].generation = generation
            else:
                generation = txn.insert(table).generation = 1
            self.committed_generation = generation  # if this try is the one that commits
            return func(txn, snap)
        try:
            return self.run(run, description)
        except model.IntentError:
            raise
        except RuntimeError as exc:
            raise TapdbError(f"tapdb refused the change: {exc}") from exc

    def insert(self, txn: Any, table: str) -> Any:
        return txn.insert(self.tables[table])

    # ---------------------------------------------------- the verbs

    def target_add(self, name: str, *, port=None, nic=None, vxlan=None, enabled=False) -> model.Target:
        def run(txn, snap):
            target = model.new_target(snap.intent, name, port=port, nic=nic, vxlan=vxlan,
                                      enabled=enabled)
            _write_target(self.insert(txn, "Mirror_Target"), target)
            return target
        return self.execute(run, f"target-add {name}")

    def filter_add(self, name: str) -> model.Filter:
        def run(txn, snap):
            flt = model.new_filter(snap.intent, name)
            self.insert(txn, "Mirror_Filter").name = flt.name
            return flt
        return self.execute(run, f"filter-add {name}")

    def rule_add(self, filter_name: str, direction: str, **fields: Optional[str]) -> model.Rule:
        def run(txn, snap):
            flt = snap.intent.filter(filter_name)
            rule = model.new_rule(flt, direction, **fields)
            row = self.insert(txn, "Filter_Rule")
            _write_rule(row, rule)
            frow = snap.rows["filter", flt.name]
            column = direction.lower() + "_rules"
            setattr(frow, column, list(getattr(frow, column)) + [row])
            return rule
        return self.execute(run, f"rule-add {filter_name} {direction}")

    def rule_del(self, filter_name: str, direction: str, priority: str) -> model.Rule:
        def run(txn, snap):
            flt = snap.intent.filter(filter_name)
            rule = model.find_rule(flt, direction, priority)
            rrow = snap.rows["rule", flt.name, direction.lower(), rule.priority]
            frow = snap.rows["filter", flt.name]
            column = direction.lower() + "_rules"
            setattr(frow, column, [r for r in getattr(frow, column) if r.uuid != rrow.uuid])
            return rule
        return self.execute(run, f"rule-del {filter_name} {direction} {priority}")

    def session_add(self, name: str, **fields: Any) -> model.Session:
        def run(txn, snap):
            sess = model.new_session(snap.intent, name, **fields)
            row = self.insert(txn, "Mirror_Session")
            row.name, row.priority, row.vni, row.enabled = sess.name, sess.priority, sess.vni, sess.enabled
            _set_opt(row, "packet_length", sess.packet_length)
            row.target = snap.rows["target", sess.target]
            row.filter = [snap.rows["filter", sess.filter]] if sess.filter else []
            return sess
        return self.execute(run, f"session-add {name}")

    def source_add(self, session: str, *, port=None, direction=None, vswitch=None) -> model.Source:
        def run(txn, snap):
            src = model.new_source(snap.intent, session, port=port, direction=direction,
                                   vswitch=vswitch)
            row = self.insert(txn, "Mirror_Source")
            _write_source(row, src)
            srow = snap.rows["session", session]
            srow.sources = list(srow.sources) + [row]
            return src
        return self.execute(run, f"source-add {session}")

    def source_del(self, session: str, key: str) -> model.Source:
        def run(txn, snap):
            src = model.find_source(snap.intent, session, key)
            victim = snap.rows["source", session, src.key]
            srow = snap.rows["session", session]
            srow.sources = [r for r in srow.sources if r.uuid != victim.uuid]
            return src
        return self.execute(run, f"source-del {session} {key}")

    def set_enabled(self, kind: str, name: str, enabled: bool, key: Optional[str] = None) -> None:
        """Enable or disable a target, a session or (with ``key``) a session's source."""
        def run(txn, snap):
            if kind == "source":
                src = model.find_source(snap.intent, name, key)
                row = snap.rows["source", name, src.key]
            else:
                getattr(snap.intent, kind)(name)
                row = snap.rows[kind, name]
            if row.enabled != enabled:
                row.enabled = enabled
        verb = "enable" if enabled else "disable"
        self.execute(run, f"{kind}-{verb} {name}" + (f" {key}" if key else ""))

    def delete(self, kind: str, name: str) -> None:
        """Delete a target, filter or session; sources and rules go with their owner."""
        def run(txn, snap):
            model.check_del(snap.intent, kind, name)
            snap.rows[kind, name].delete()
        self.execute(run, f"{kind}-del {name}")

    # ---------------------------------------------------- what agents use

    snapshots: Optional[SnapshotCache] = None  # an agent's: reads in proportion to changes
    committed_generation: Optional[int] = None  # Tap_Global.generation of our last change

    def read_intent(self, idl: Any) -> Snapshot:
        return self.snapshots.read(idl) if self.snapshots is not None else read_snapshot(idl)

    def agent_view(self) -> "AgentView":
        return self.read(lambda idl: read_agent_view(idl, self.read_intent))

    def watch(self, chassis: str, local_ifaces: set[str], target_ifaces: set[str]) -> None:
        """Monitor only the sources and bindings that concern this chassis."""
        # also the sources whose status this chassis wrote, so it can clear them
        sources = [["chassis", "==", ["set", [chassis]]],
                   ["status", "includes", ["map", [["chassis", chassis]]]]] + [
            ["iface_id", "==", ["set", [i]]] for i in sorted(local_ifaces)]
        bindings = [["chassis", "==", chassis]] + [
            ["iface_id", "==", i] for i in sorted(target_ifaces | local_ifaces)]
        with self.ovsdb_connection.lock:
            self.idl.cond_change("Mirror_Source", sources)
            self.idl.cond_change("Binding", bindings)
        # the IDL sends new conditions from its connection thread
        self.wake()

    def register_chassis(self, name: str, tunnel_ip: str, encap: str) -> None:
        """Make this chassis's row say where its tunnels end; written only when it differs."""
        def run(txn: Any) -> None:
            row = _named(self.idl, "Chassis", name)
            if row is None:
                row = self.insert(txn, "Chassis")
                row.name, row.tunnel_ip, row.encap = name, tunnel_ip, encap
            elif (row.tunnel_ip, row.encap) != (tunnel_ip, encap):
                row.tunnel_ip, row.encap = tunnel_ip, encap
        def current(idl: Any) -> Optional[tuple[str, str]]:
            row = _named(idl, "Chassis", name)
            return None if row is None else (row.tunnel_ip, row.encap)

        if self.read(current) == (tunnel_ip, encap):
            return
        self.run(run, f"register chassis {name}")

    def heartbeat(self, name: str, now: int, interval: int) -> None:
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
        self.run(run, f"heartbeat of {name}")

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

    def chassis_del(self, name: str, now: float) -> None:
        """Forget a chassis that is gone for good: its rows, its bindings, its statuses.

        Refused while it still beats: its agent would register it again."""
        def run(txn: Any) -> None:
            rows = [r for r in self.tables["Chassis"].rows.values() if r.name == name]
            beats = read_liveness(self.idl)
            if not rows and name not in beats:
                raise model.NotFound("chassis", f"no chassis named {name!r}")
            if liveness.silence(name, beats, now) is None:
                raise model.IntentError(
                    "chassis", f"chassis {name} is alive (heard {int(now - beats[name].heartbeat)} "
                    "s ago); stop its agent before deleting it")
            for table in ("Chassis", "Chassis_Private", "Binding"):
                key = "chassis" if table == "Binding" else "name"
                for r in list(self.tables[table].rows.values()):
                    if getattr(r, key) == name:
                        r.delete()
            for table in ("Mirror_Source", "Mirror_Target"):
                for r in self.tables[table].rows.values():
                    if r.status.get("chassis") == name:
                        r.status = {}
        self.run(run, f"chassis-del {name}")

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
        """Make the statuses ``chassis`` owns exactly these; returns how many changed.

        A status belongs to the chassis named in it: one this chassis wrote before
        and has nothing to say about any more (the VM left, the session went) is
        cleared, so no stale "active" stays behind.  ``snap`` (the pass's own read)
        tells whether anything is to be written; only then is tapdb read again,
        inside the transaction.
        """
        def changed(snap: Snapshot) -> list[tuple[Any, dict]]:
            # statuses as the snapshot read them, not from the rows: one row read costs
            # more than this whole comparison
            current: dict[tuple, dict] = {("target", t.name): dict(t.status)
                                          for t in snap.intent.targets.values()}
            for sess in snap.intent.sessions.values():
                for src in sess.sources:
                    current["source", sess.name, src.key] = dict(src.status)
            want = {k: {} for k, st in current.items() if st.get("chassis") == chassis}
            for (session, key), status in sources.items():
                if ("source", session, key) in current:
                    want["source", session, key] = status
            for name, status in targets.items():
                if ("target", name) in current:
                    want["target", name] = status
            return [(snap.rows[k], st) for k, st in want.items() if current[k] != st]

        if not self.read(lambda idl: changed(snap)):
            return 0

        def run(txn: Any) -> int:
            todo = changed(self.read_intent(self.idl))
            for row, status in todo:
                row.status = status
            return len(todo)
        return self.run(run, f"status of {chassis}")


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
            chassis: Optional[str] = None) -> TapdbApi:
    """Connect to tapdb at ``remote`` (comma-separated for a Raft cluster).

    An agent gives its ``chassis``: of ``Chassis_Private`` (heartbeats) it then
    monitors only its own row, so no other chassis's heartbeat reaches it.
    Every step honours ``timeout``.
    """
    if remote.startswith("unix:") and "," not in remote and not os.path.exists(remote[5:]):
        raise TapdbError(f"cannot reach tapdb at {remote}: no such socket "
                         "(is sdnagent-tapdb running?)")
    try:
        helper = ovsdbutil.schema_helper(remote, schema.NAME, timeout)
    except ovsdbutil.FetchError as exc:
        raise TapdbError(f"cannot reach tapdb at {remote}: {exc}") from exc
    found = helper.schema_json.get("version", "0")
    if schema.version_tuple(found) < schema.version_tuple(schema.version()):
        raise TapdbError(f"tapdb at {remote} has schema version {found}, older than "
                         f"{schema.version()}; restart it with 'sdnagent-tapdb start' to convert it")
    helper.register_all()
    idl = ovsdbutil.NotifyingIdl(remote, helper, leader_only=True)
    if chassis is not None:
        idl.cond_change("Chassis_Private", [["name", "==", chassis]])
    conn = connection.Connection(idl, timeout)
    try:
        return TapdbApi(conn)
    except Exception as exc:
        idl.close()
        raise TapdbError(f"cannot reach tapdb at {remote}: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
