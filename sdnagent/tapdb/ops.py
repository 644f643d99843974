"""tapctl's side of tapdb: each verb as OVSDB transactions that read only what its check needs.

A change reads, in one transaction, ``Tap_Global.generation`` and just the
rows that the rule it must pass consults (a filter and its rules for
``rule-add``; every session's name, priority and VNI for ``session-add``...),
judges it with :mod:`sdnagent.model`, and commits with an OVSDB ``wait``
that the generation is still the one read, bumping it.  When another writer
committed in between, the wait fails, nothing is written, and the verb runs
again on fresh data: racing writers cannot break a rule the schema cannot
express (quotas across sessions, a port both source and target), and a
command costs the same at 10 or 10,000 sessions.
"""
from __future__ import annotations

import dataclasses
import functools
import secrets
import time
from typing import Any, Callable, Iterable, NamedTuple, Optional

from sdnagent import controls as controls_
from sdnagent import liveness, model, tls
from sdnagent.compile import compiler
from sdnagent import targets as target_kinds
from sdnagent.tapdb import rpc, rows, schema

TRIES = 50  # a verb that keeps losing races gives up with a message


class TapdbError(RuntimeError):
    """tapdb cannot be reached, is too old, or refused a change."""


# ---------------------------------------------------------------- rows


@functools.lru_cache(maxsize=None)
def _column(table: str, column: str) -> tuple[str, Optional[str]]:
    """How a column reads: "map", "scalar" or "set", and the table it refers to."""
    ctype = schema.load()["tables"][table]["columns"][column]["type"]
    if not isinstance(ctype, dict):
        return "scalar", None
    key = ctype["key"]
    ref = key.get("refTable") if isinstance(key, dict) else None
    if "value" in ctype:
        return "map", ref
    if ctype.get("min", 1) == 1 and ctype.get("max", 1) == 1:
        return "scalar", ref
    return "set", ref


class Row:
    """A row from a JSON-RPC select, with the IDL's attribute forms: optional and set
    columns as lists, maps as dicts, references as the rows read (None if not read)."""

    __slots__ = ("_table", "_data", "_store")

    def __init__(self, table: str, data: dict, store: "Store"):
        self._table, self._data, self._store = table, data, store

    @property
    def uuid(self) -> str:
        return self._data["_uuid"][1]

    def __getattr__(self, column: str) -> Any:
        try:
            value = self._data[column]
        except KeyError:
            raise AttributeError(column) from None
        kind, ref = _column(self._table, column)
        if kind == "map":
            return dict(value[1])
        if kind == "scalar":
            return self._atom(value, ref)
        if isinstance(value, list) and value and value[0] == "set":
            return [self._atom(a, ref) for a in value[1]]
        return [self._atom(value, ref)]

    def _atom(self, a: Any, ref: Optional[str]) -> Any:
        if ref is not None and isinstance(a, list):  # ["uuid", "..."]
            return self._store.get(ref, a[1])
        return a


class Store:
    """The rows read so far, by table and uuid."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Row]] = {}

    def add(self, table: str, found: Iterable[dict]) -> list[Row]:
        out = [Row(table, r, self) for r in found]
        self.tables.setdefault(table, {}).update((r.uuid, r) for r in out if "_uuid" in r._data)
        return out

    def get(self, table: str, uuid: str) -> Optional[Row]:
        return self.tables.get(table, {}).get(uuid)

    def rows(self, table: str) -> list[Row]:
        return list(self.tables.get(table, {}).values())


def select(table: str, *where: list, columns: Optional[list[str]] = None,
           uuid: bool = True) -> dict:
    """A select of ``columns`` (all by default) and, unless told not to, the row's uuid."""
    op: dict = {"op": "select", "table": table, "where": list(where)}
    if columns is not None:
        op["columns"] = ["_uuid", *columns] if uuid else list(columns)
    return op


def named(table: str, name: str) -> dict:
    return select(table, ["name", "==", name])


def by_uuid(table: str, uuids: Iterable[str]) -> tuple[list[dict], Any]:
    return [select(table, ["_uuid", "==", ["uuid", u]]) for u in uuids]


def _uuid(row: Row) -> list:
    return ["uuid", row.uuid]


def _this(row: Row) -> list:
    """A where clause for exactly this row."""
    return [["_uuid", "==", _uuid(row)]]


def _opt(value: Any) -> list:
    return ["set", [] if value is None else [value]]


def _target_row(t: model.Target) -> dict:
    return {"name": t.name, "project": t.project, "type": t.type, "tunnel_key": t.tunnel_key,
            "enabled": t.enabled,
            "iface_id": _opt(t.iface_id), "chassis": _opt(t.chassis), "nic": _opt(t.nic),
            "remote_ip": _opt(t.remote_ip), "options": ["map", [list(kv) for kv in t.options]]}


def _rule_row(r: model.Rule) -> dict:
    row = {"priority": r.priority, "action": r.action, "ethertype": r.ethertype,
           "protocol": _opt(r.protocol), "src_cidr": _opt(r.src), "dst_cidr": _opt(r.dst)}
    for prefix, rng in (("src_port", r.src_port), ("dst_port", r.dst_port)):
        row[prefix + "_min"] = _opt(rng.lo if rng else None)
        row[prefix + "_max"] = _opt(rng.hi if rng else None)
    return row


def _controls_row(s: model.Session) -> dict:
    return {"max_pps": _opt(s.max_pps), "max_kbps": _opt(s.max_kbps), "sample": _opt(s.sample),
            "ends_at": s.ends_at, "stop_reason": _opt(s.stop_reason)}


def now_ms() -> int:
    return int(time.time() * 1000)


def _source_row(s: model.Source) -> dict:
    return {"type": s.type, "direction": s.direction, "enabled": s.enabled,
            "iface_id": _opt(s.iface_id), "chassis": _opt(s.chassis), "bridge": _opt(s.bridge),
            "vlan": _opt(s.vlan)}


class Read:
    """What one verb read: its rows, and the generation they belong to."""

    def __init__(self, conn: rpc.Connection, confined: Optional[str] = None):
        self.conn = conn
        self.store = Store()
        self.generation = 0
        self.last_change: Optional[str] = None
        self.confined = confined  # the project a caller may see, when it may see one only

    def fetch(self, *ops: dict) -> list[list[Row]]:
        """Run selects (the first read also takes the generation); rows per select."""
        first = not self.store.tables
        if first:
            ops = (select("Tap_Global", columns=["generation", "last_change"]), *ops)
        results = _results(self.conn.transact(*ops))
        found = [self.store.add(op["table"], res.get("rows", [])) for op, res in zip(ops, results)]
        if first:
            gen = found.pop(0)
            self.generation = gen[0].generation if gen else 0
            self.last_change = next(iter(gen[0].last_change), None) if gen else None
        return found

    def one(self, table: str, name: str, kind: str) -> Row:
        [found] = self.fetch(named(table, name))
        return self.visible(found, kind, name)

    def visible(self, found: list[Row], kind: str, name: str) -> Row:
        """The row of that name, unless there is none or the caller may not see its
        project (the same answer: another project's objects are not there for it)."""
        if not found or (self.confined is not None
                         and rows.project_of(found[0]) != self.confined):
            raise model.NotFound(kind, f"no {kind} named {name!r}")
        return found[0]

    def refs(self, table: str, uuids: Iterable[str]) -> None:
        """Read the rows that these references name and are not read yet."""
        missing = sorted({u for u in uuids if self.store.get(table, u) is None})
        if missing:
            self.fetch(*by_uuid(table, missing))


def _results(result: Any) -> list:
    """The results of a transaction's operations, or TapdbError with the first error."""
    errors = [r for r in result if isinstance(r, dict) and "error" in r]
    if errors:
        e = errors[0]
        raise TapdbError(f"tapdb refused the change: {e['error']}"
                         + (f": {e['details']}" if e.get("details") else ""))
    return result


# ---------------------------------------------------------------- knowing what landed


def new_token() -> str:
    """A change's token: 8 characters (48 random bits), so that several fit in
    ``Tap_Global.last_change``."""
    return secrets.token_urlsafe(6)


def history(token: str, before: Optional[str]) -> str:
    """``Tap_Global.last_change`` once the change of ``token`` is made: its token, then
    those of the changes before it, newest first, as many as the column holds."""
    limit = schema.load()["tables"]["Tap_Global"]["columns"]["last_change"]["type"]["key"][
        "maxLength"]
    kept = [token]
    for older in (before or "").split():
        if len(kept) + sum(map(len, kept)) + len(older) > limit:
            break
        kept.append(older)
    return " ".join(kept)


def landed(token: str, read_at: int, generation: int, last_change: Optional[str]) -> Optional[bool]:
    """Whether the change of ``token``, judged at generation ``read_at``, is in a tapdb
    now at ``generation`` with ``last_change``: True, False, or None when more changes
    came since than ``last_change`` keeps tokens of.  Each change bumps the generation
    by one and puts its token first, so the changes since ``read_at`` are the first
    ``generation - read_at`` tokens."""
    tokens = (last_change or "").split()
    if token in tokens[:max(0, generation - read_at)]:
        return True
    return False if generation - read_at <= len(tokens) else None


# ---------------------------------------------------------------- objects from rows


def _target(row: Row) -> model.Target:
    return rows.read_target(row)[0]


def _session_refs(read: Read, sessions: list[Row]) -> None:
    """Read the targets, filters and sources these sessions name (rules not needed)."""
    raw = [s._data for s in sessions]
    read.refs("Mirror_Target", (d["target"][1] for d in raw))
    read.refs("Mirror_Source", (u[1] for d in raw for u in rpc.atoms(d["sources"])))
    read.refs("Mirror_Filter", (u[1] for d in raw for u in rpc.atoms(d["filter"])))


def _session(row: Row) -> model.Session:
    return rows.read_session(row)[0]


def _filter(read: Read, row: Row) -> model.Filter:
    read.refs("Filter_Rule", (u[1] for c in ("inbound_rules", "outbound_rules")
                              for u in rpc.atoms(row._data[c])))
    return rows.read_filter(row)[0]


def _shell(row: Row, target: str = "") -> model.Session:
    """A session as far as uniqueness checks and quotas look: name, priority, VNI and,
    when read for it, its target."""
    data = row._data
    return model.Session(data["name"], data["priority"], data["vni"], target, None, None, False)


# ---------------------------------------------------------------- the client


class IntentDb:
    """tapdb for an operator: every verb of tapctl, reads for show and list.

    ``reconnect(seconds)`` (several members) opens a new connection to whichever
    leads; each verb may spend ``timeout`` seconds finding tapdb again after losing
    it, so an election is waited out and a tapdb that stays away is reported."""

    def __init__(self, conn: rpc.Connection,
                 reconnect: Optional[Callable[[float], rpc.Connection]] = None,
                 timeout: Optional[float] = None):
        self.conn = conn
        self.committed_generation: Optional[int] = None
        self.warnings: list[str] = []  # what the last change calls for a person to know
        # what new objects belong to; ``confined``: the caller sees and uses that project's
        # objects only, and mirrors only the ports registered to it (the API's members)
        self.project = model.DEFAULT_PROJECT
        self.confined = False
        self.timeout = conn.timeout if timeout is None else timeout
        self._monitors = 0
        self._reconnect = reconnect
        self._deadline = 0.0

    def close(self) -> None:
        self.conn.close()

    def _begin(self, deadline: Optional[float] = None) -> None:
        """Start a verb: the time it may spend connecting again runs from now."""
        self._deadline = time.monotonic() + self.timeout if deadline is None else deadline

    def _again(self, exc: rpc.RpcError) -> None:
        """Connect again after losing the connection (the leader died, or stepped down),
        or give up with ``exc`` when there is no other way in or no time left."""
        if self._reconnect is None:
            raise exc
        self.conn.close()
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise exc
        self.conn = self._reconnect(left)
        self.conn.timeout = self.timeout

    def _retrying(self, action: Callable[[], Any]) -> Any:
        """``action()`` once more on a new connection each time the old one is lost: for
        reads, and for writes that mean the same however often they run."""
        for _ in range(TRIES):
            try:
                return action()
            except rpc.RpcRefused:
                raise
            except rpc.RpcError as exc:
                self._again(exc)
        raise TapdbError("the connection to tapdb kept failing; try again")

    def change(self, judge: Callable[[Read], tuple[list[dict], Any]], description: str,
               idle: bool = False) -> Any:
        """Read what ``judge`` needs and judge the change (its operations and what to
        return); commit only if no one changed the intent since the read, else try
        again on fresh data.  The commit also puts a token of this change first in
        ``Tap_Global.last_change`` (see :meth:`_commit`).  ``idle``: when the judge
        finds nothing to do, commit nothing (the generation stays)."""
        self._begin()
        token = new_token()
        for _ in range(TRIES):
            try:
                read = Read(self.conn, self.project if self.confined else None)
                ops, result = judge(read)
            except rpc.RpcRefused:
                raise
            except rpc.RpcError as exc:
                self._again(exc)
                continue
            gen = read.generation
            if idle and not ops:
                return result
            txn = [select("Tap_Global", columns=["generation", "last_change"], uuid=False),
                   {"op": "wait", "table": "Tap_Global", "where": [], "columns": ["generation"],
                    "until": "==", "rows": [{"generation": gen}], "timeout": 0},
                   {"op": "update", "table": "Tap_Global", "where": [],
                    "row": {"generation": gen + 1,
                            "last_change": history(token, read.last_change)}},
                   *ops]
            if self._commit(txn, gen, token, description):
                self.committed_generation = gen + 1
                return result
        raise TapdbError(f"{description}: tapdb kept changing under it; try again")

    def _commit(self, txn: list[dict], gen: int, token: str, description: str) -> bool:
        """Send ``txn`` (a select of ``Tap_Global``, the ``wait`` that the generation is
        still ``gen``, the change) until its outcome is known: True once made, False
        when another writer came first (nothing written: judge again).

        A connection lost after the transaction went out leaves it unknown whether it
        was made, so the very same transaction is sent again on a new connection.
        Its ``wait`` lets at most one of the copies through, and the server judges
        the ``wait`` only on a database that holds every commit before it (a new
        leader first commits what its log holds; a read there could miss a change
        about to land, which is why nothing is read apart from the transaction).
        When the ``wait`` fails, the select before it tells why: our token among
        the latest changes' means an earlier copy was made (done: never made twice,
        never reported as failed); absent, another writer came first."""
        resent = False
        while True:
            try:
                answer = self.conn.transact(*txn)
            except rpc.RpcRefused:
                raise
            except rpc.RpcError as exc:
                try:
                    self._again(exc)
                except (rpc.RpcError, TapdbError) as lost:
                    raise TapdbError(f"{description}: the connection to tapdb was lost after "
                                     f"the change was sent ({lost}); see with 'tapctl show' "
                                     "whether it was made") from exc
                resent = True
                continue
            if isinstance(answer[1], dict) and answer[1].get("error") == "timed out":
                if not resent:
                    return False
                row = answer[0]["rows"][0]
                made = landed(token, gen, row["generation"],
                              next(iter(rpc.atoms(row["last_change"])), None))
                if made is None:
                    raise TapdbError(f"{description}: the connection to tapdb was lost after "
                                     "the change was sent, and more changes came since than "
                                     "tapdb keeps track of; see with 'tapctl show' whether it "
                                     "was made")
                return made
            _results(answer)
            return True

    # ---------------------------------------------------- the verbs

    def target_add(self, name: str, *, enabled: bool = False,
                   **where: Optional[str]) -> model.Target:
        """A target of the kind named by the one ``where`` given (``vxlan="10.0.0.1"``);
        reading what that kind's rules consult."""
        def judge(read: Read) -> tuple[list[dict], Any]:
            self._may_add(read, where)  # first: what others have is not its business
            self._within_quota(read, "targets")
            [found] = read.fetch(select("Mirror_Target"))
            sessions: list[Row] = []
            tunnel_ips: dict[str, str] = {}
            for kind_name, value in where.items():
                kind = target_kinds.KINDS.get(kind_name)
                if value is None or kind is None:
                    continue  # new_target refuses what is not exactly one kind
                if kind.reads_sources:  # an iface that is a source cannot be a target
                    [sources] = read.fetch(select("Mirror_Source",
                                                  ["iface_id", "==", ["set", [value]]]))
                    sessions = _using(read, sources)
                if kind.reads_tunnel_ips:  # a hypervisor's tunnel address is no collector
                    [chassis] = read.fetch(select("Chassis", columns=["name", "tunnel_ip"],
                                                  uuid=False))
                    tunnel_ips = {c.name: c.tunnel_ip for c in chassis}
            intent = model.Intent.of(map(_target, found), (), map(_session, sessions))
            t = model.new_target(intent, name, enabled=enabled, tunnel_ips=tunnel_ips, **where)
            t = dataclasses.replace(t, project=self.project)
            return [{"op": "insert", "table": "Mirror_Target", "row": _target_row(t)}], t
        return self.change(judge, f"target-add {name}")

    def _mtu_warning(self, read: Read, sess: model.Session, target: model.Target,
                     ifaces: Iterable[str] = (), senders: Optional[list[str]] = None) -> None:
        """Note (``warnings``) when copies of ``sess`` can outgrow the underlay MTU that
        a chassis which may send them published: the warning its agent will show."""
        ops = [select("Chassis", columns=["name", "tunnel_ip", "encap", "tunnel_mtu"],
                      uuid=False)]
        wanted = sorted({i for i in (target.kind.iface(target), *ifaces) if i})
        ops += [select("Binding", ["iface_id", "==", i], columns=["iface_id", "chassis"],
                       uuid=False) for i in wanted]
        chassis, *binds = read.fetch(*ops)
        registered = {r.name: (r.tunnel_ip, r.encap, next(iter(r.tunnel_mtu), None))
                      for r in chassis}
        bindings: dict[str, tuple[str, ...]] = {}
        for found in binds:
            for r in found:
                bindings[r.iface_id] = tuple(sorted({*bindings.get(r.iface_id, ()), r.chassis}))
        if senders is None and ifaces:
            senders = [c for i in ifaces for c in bindings.get(i, ())] or None
        warn = compiler.mtu_warning(sess, target, registered, bindings, senders)
        if warn:
            self.warnings.append(f"session {sess.name}: {warn}")

    def _within_quota(self, read: Read, kind: str) -> None:
        """IntentError when this caller's project already has as many ``kind`` (sessions,
        targets, filters) as its quota allows (an admin's setting, else the default).
        Quotas hold a project's members; admins (and tapctl) act for the cloud."""
        if not self.confined:
            return
        quotas, usage = _usage(self.project, (kind,), read.fetch(
            *_usage_selects(self.project, (kind,))))
        have = usage[kind]
        if have >= quotas[kind]:
            raise model.IntentError("project", f"project {self.project!r} already has {have} "
                                    f"{kind}; its quota allows at most {quotas[kind]}")

    def set_quotas(self, project: str, quotas: dict[str, Optional[str]]) -> dict[str, int]:
        """Set a project's quotas (those given); returns them all, defaults included."""
        project = model.parse_project(project)
        given = {k: model.parse_int(k, v, (0, model.REGION_SESSIONS))
                 for k, v in quotas.items() if v is not None}
        unknown = sorted(set(given) - set(model.PROJECT_QUOTAS))
        if unknown:
            raise model.IntentError(unknown[0], "is not a quota; give sessions, targets or "
                                    "filters")

        def judge(read: Read) -> tuple[list[dict], Any]:
            [found] = read.fetch(select("Project", ["name", "==", project]))
            now = {**(found[0].quotas if found else {}), **given}
            row = {"name": project, "quotas": ["map", sorted(now.items())]}
            op = ({"op": "update", "table": "Project", "where": _this(found[0]), "row": row}
                  if found else {"op": "insert", "table": "Project", "row": row})
            return [op], {**model.PROJECT_QUOTAS, **now}
        return self.change(judge, f"project-quota {project}")

    def project_usage(self, project: str) -> tuple[dict[str, int], dict[str, int]]:
        """A project's quotas (defaults included) and what it has of each."""
        project = model.parse_project(project)
        kinds = tuple(model.PROJECT_QUOTAS)
        self._begin()
        return self._retrying(lambda: _usage(project, kinds, Read(self.conn).fetch(
            *_usage_selects(project, kinds))))

    def _registered(self, read: Read, iface: str, field: str) -> None:
        """Denied unless ``iface`` is registered to this caller's project."""
        [found] = read.fetch(select("Port_Registration", ["iface_id", "==", iface],
                                    columns=["project"], uuid=False))
        if not found or found[0].project != self.project:
            raise model.Denied(field, f"iface {iface} is not registered to project "
                               f"{self.project!r}; an admin registers a project's ports")

    def _may_add(self, read: Read, where: dict[str, Optional[str]]) -> None:
        """A confined caller's new target: a port of its project, or a collector."""
        if not self.confined:
            return
        for kind_name, value in where.items():
            kind = target_kinds.KINDS.get(kind_name)
            if kind is None or value is None:
                continue
            if kind.on_brtap:
                raise model.Denied(kind_name, f"a {kind_name} target is the cloud's: only an "
                                   "admin may add one")
            if kind.names_iface:  # a VM's port: it must be one of the project's
                self._registered(read, value, kind_name)

    def register_port(self, iface: str, project: str) -> None:
        """Register a port (by iface-id) to a project, whose members may then mirror it
        and send copies to it; the cloud's integration does this, as an admin."""
        iface = model.parse_iface_id("iface_id", iface)
        project = model.parse_project(project)

        def judge(read: Read) -> tuple[list[dict], Any]:
            [found] = read.fetch(select("Port_Registration", ["iface_id", "==", iface]))
            if found and found[0].project == project:
                return [], None
            if found:
                return [{"op": "update", "table": "Port_Registration", "where": _this(found[0]),
                         "row": {"project": project}}], None
            return [{"op": "insert", "table": "Port_Registration",
                     "row": {"iface_id": iface, "project": project}}], None
        self.change(judge, f"port-register {iface} {project}")

    def unregister_port(self, iface: str) -> None:
        def judge(read: Read) -> tuple[list[dict], Any]:
            [found] = read.fetch(select("Port_Registration", ["iface_id", "==", iface]))
            if not found:
                raise model.NotFound("iface_id", f"iface {iface} is not registered")
            return [{"op": "delete", "table": "Port_Registration", "where": _this(found[0])}], None
        self.change(judge, f"port-unregister {iface}")

    def registrations(self) -> dict[str, str]:
        """Every registered port's project, by iface-id."""
        [found] = _results(self._retrying(lambda: self.conn.transact(
            select("Port_Registration", columns=["iface_id", "project"], uuid=False))))
        return {r["iface_id"]: r["project"] for r in found.get("rows", [])}

    def member(self, target: str, action: str, ip: str) -> model.Target:
        """Add, remove (``del``), enable or disable one member of a collector group."""
        def judge(read: Read) -> tuple[list[dict], Any]:
            row = read.one("Mirror_Target", target, "target")
            t = _target(row)
            with_member = getattr(t.kind, "with_member", None)
            if with_member is None:
                raise model.IntentError("target", f"target {t.name!r} is a {t.type} target; "
                                        "only group targets have members")
            tunnel_ips: dict[str, str] = {}
            if action == "add":  # a hypervisor's tunnel address is no collector
                [chassis] = read.fetch(select("Chassis", columns=["name", "tunnel_ip"],
                                              uuid=False))
                tunnel_ips = {c.name: c.tunnel_ip for c in chassis}
            changed = with_member(t, action, ip, tunnel_ips)
            return [{"op": "update", "table": "Mirror_Target", "where": _this(row),
                     "row": {"options": ["map", [list(kv) for kv in changed.options]]}}], changed
        return self.change(judge, f"member-{action} {target} {ip}")

    def filter_add(self, name: str) -> model.Filter:
        def judge(read: Read) -> tuple[list[dict], Any]:
            self._within_quota(read, "filters")
            [found] = read.fetch(named("Mirror_Filter", name))
            intent = model.Intent.of((), [model.Filter(r.name) for r in found])
            flt = model.new_filter(intent, name)
            return [{"op": "insert", "table": "Mirror_Filter",
                     "row": {"name": flt.name, "project": self.project}}], flt
        return self.change(judge, f"filter-add {name}")

    def rule_add(self, filter_name: str, direction: str, **fields: Optional[str]) -> model.Rule:
        def judge(read: Read) -> tuple[list[dict], Any]:
            row = read.one("Mirror_Filter", filter_name, "filter")
            rule = model.new_rule(_filter(read, row), direction, **fields)
            column = rule_column(direction)
            return [{"op": "insert", "table": "Filter_Rule", "row": _rule_row(rule),
                     "uuid-name": "rule"},
                    {"op": "mutate", "table": "Mirror_Filter", "where": _this(row),
                     "mutations": [[column, "insert", ["set", [["named-uuid", "rule"]]]]]}], rule
        return self.change(judge, f"rule-add {filter_name} {direction}")

    def rule_del(self, filter_name: str, direction: str, priority: str) -> model.Rule:
        def judge(read: Read) -> tuple[list[dict], Any]:
            row = read.one("Mirror_Filter", filter_name, "filter")
            flt = _filter(read, row)
            rule = model.find_rule(flt, direction, priority)
            column = rule_column(direction)
            victim = next(r for r in getattr(row, column) if r.priority == rule.priority)
            return [{"op": "mutate", "table": "Mirror_Filter", "where": _this(row),
                     "mutations": [[column, "delete", ["set", [_uuid(victim)]]]]}], rule
        return self.change(judge, f"rule-del {filter_name} {direction} {priority}")

    def session_add(self, name: str, *, target: str, priority: str, filter: Optional[str] = None,
                    vni: Optional[str] = None, packet_length: Optional[str] = None,
                    enabled: bool = False,
                    controls: Optional[controls_.Change] = None) -> model.Session:
        now = now_ms()

        def judge(read: Read) -> tuple[list[dict], Any]:
            # the session of that name, the one of that priority (both unique), and
            # every VNI only when one is to be allocated
            columns = ["name", "priority", "vni"]
            prio = model.parse_int("priority", priority, model.SESSION_PRIORITY)  # to ask by
            ops = [select("Mirror_Session", ["name", "==", name], columns=columns),
                   named("Mirror_Target", target),
                   select("Mirror_Session", ["priority", "==", prio], columns=columns)]
            if filter is not None:
                ops.append(named("Mirror_Filter", filter))
            by_name, targets, by_priority, *filters = read.fetch(*ops)
            for rows_, kind, wanted in ((targets, "target", target),
                                        *((filters[0], "filter", filter) for _ in filters)):
                row = read.visible(rows_, kind, wanted or "")
                if rows.project_of(row) != self.project:
                    raise model.IntentError(kind, f"{kind} {wanted!r} is in project "
                                            f"{rows.project_of(row)!r}, not {self.project!r}")
            self._within_quota(read, "sessions")
            [everyone] = read.fetch(select("Mirror_Session", columns=["name"], uuid=False))
            if len(everyone) >= model.REGION_SESSIONS:
                raise model.IntentError("sessions", f"the region already has {len(everyone)} "
                                        f"sessions; allowed at most {model.REGION_SESSIONS}")
            if filters:
                [sharing] = read.fetch(select("Mirror_Session",
                                              ["filter", "==", ["set", [_uuid(filters[0][0])]]],
                                              columns=["name"], uuid=False))
                if len(sharing) >= model.MAX_SESSIONS_PER_FILTER:
                    raise model.IntentError("filter", f"filter {filter!r} is already used by "
                                            f"{len(sharing)} sessions; allowed at most "
                                            f"{model.MAX_SESSIONS_PER_FILTER}")
            theirs = [r for r in by_priority if rows.project_of(r) != self.project]
            if self.confined and theirs:  # not named: it is another project's
                raise model.Conflict("priority", f"priority {prio} is taken (session "
                                     "priorities are unique across projects)")
            chosen = vni
            if chosen is None:  # the lowest unused: every VNI is needed
                [vnis] = read.fetch(select("Mirror_Session", columns=["vni"], uuid=False))
                chosen = str(model.free_number("vni", {r._data["vni"] for r in vnis},
                                               (1, model.VNI[1])))
            shells = {r.uuid: _shell(r) for r in by_name + by_priority}
            if targets:  # the sessions that deliver to it, against its kind's quota
                [using] = read.fetch(select("Mirror_Session", ["target", "==", _uuid(targets[0])],
                                            columns=columns))
                shells.update((r.uuid, _shell(r, targets[0].name)) for r in using)
            intent = model.Intent.of(map(_target, targets),
                                     [model.Filter(r.name) for r in filters[0]] if filters else [],
                                     shells.values())
            s = model.new_session(
                intent, name, target=target, priority=priority, filter=filter, vni=chosen,
                packet_length=packet_length, enabled=enabled)
            s = controls_.applied(s, controls or controls_.Change(), now)
            self.warnings.clear()
            self._mtu_warning(read, s, intent.target(target))
            s = dataclasses.replace(s, project=self.project)
            row = {"name": s.name, "project": s.project, "priority": s.priority, "vni": s.vni,
                   "enabled": s.enabled, "packet_length": _opt(s.packet_length),
                   "target": _uuid(targets[0]), **_controls_row(s),
                   "filter": ["set", [_uuid(filters[0][0])] if filter is not None else []]}
            return [{"op": "insert", "table": "Mirror_Session", "row": row}], s
        return self.change(judge, f"session-add {name}")

    def session_set(self, name: str, change: controls_.Change,
                    enabled: Optional[bool] = None) -> model.Session:
        """Change a session's caps, sampling or end (a new end clears why it stopped) and,
        in the same transaction, enable or disable it (the API's PATCH)."""
        now = now_ms()
        if enabled is None:
            controls_.changed(model.Session(name, 1, 0, ""), change, now)  # asks something

        def judge(read: Read) -> tuple[list[dict], Any]:
            row = read.one("Mirror_Session", name, "session")
            _session_refs(read, [row])
            before = _session(row)
            after = controls_.applied(before, change, now)
            if enabled is not None:
                after = dataclasses.replace(after, enabled=enabled)
                if enabled and not before.enabled:
                    controls_.check_enable(after, now)
                    after = dataclasses.replace(after, stop_reason=None)
            if after == before:
                return [], after
            return [{"op": "update", "table": "Mirror_Session", "where": _this(row),
                     "row": {**_controls_row(after), "enabled": after.enabled}}], after
        return self.change(judge, f"session-set {name}")

    def end_sessions(self, now: int) -> list[str]:
        """The session clock's verb: disable every enabled session whose end has passed,
        saying why; the names it stopped.  Conditional on what it read, so several
        clocks (one per cluster member) stop a session once."""
        def judge(read: Read) -> tuple[list[dict], Any]:
            [due] = read.fetch(select("Mirror_Session", ["enabled", "==", True],
                                      ["ends_at", ">", 0], ["ends_at", "<=", now],
                                      columns=["name", "ends_at"]))
            return [{"op": "update", "table": "Mirror_Session",
                     "where": [["name", "==", r._data["name"]],
                               ["ends_at", "==", r._data["ends_at"]]],
                     "row": {"enabled": False,
                             "stop_reason": controls_.end_reason(r._data["ends_at"])}}
                    for r in due], sorted(r._data["name"] for r in due)
        return self.change(judge, "session clock", idle=True)

    def source_add(self, session: str, *, port: Optional[str] = None,
                   direction: Optional[str] = None, vswitch: Optional[str] = None) -> model.Source:
        def judge(read: Read) -> tuple[list[dict], Any]:
            srow = read.one("Mirror_Session", session, "session")
            _session_refs(read, [srow])
            if self.confined:
                if vswitch is not None:
                    raise model.Denied("vswitch", "a whole bridge is the cloud's: only an admin "
                                       "may mirror a vswitch")
                if port is not None:
                    self._registered(read, port, "port")
            same: list[Row] = []
            targets: list[Row] = []
            if port is not None:
                same, targets = read.fetch(
                    select("Mirror_Source", ["iface_id", "==", ["set", [port]]]),
                    select("Mirror_Target", ["iface_id", "==", ["set", [port]]]))
            elif vswitch is not None:
                try:
                    chassis, bridge, vlan = model.parse_vswitch(vswitch)
                except model.IntentError:
                    chassis = None  # new_source says why
                if chassis is not None:
                    [same] = read.fetch(select(
                        "Mirror_Source", ["type", "==", "vswitch"],
                        ["chassis", "==", ["set", [chassis]]], ["bridge", "==", ["set", [bridge]]],
                        ["vlan", "==", ["set", [] if vlan is None else [vlan]]]))
            sessions = {r.uuid: r for r in [srow, *_using(read, same)]}
            intent = model.Intent.of(map(_target, targets), (), map(_session, sessions.values()))
            src = model.new_source(intent, session, port=port, direction=direction,
                                   vswitch=vswitch)
            self.warnings.clear()
            sess = _session(srow)
            self._mtu_warning(read, sess, _target(srow.target),
                              [src.iface_id] if src.iface_id else (),
                              [src.chassis] if src.chassis else None)
            return [{"op": "insert", "table": "Mirror_Source", "row": _source_row(src),
                     "uuid-name": "source"},
                    {"op": "mutate", "table": "Mirror_Session",
                     "where": _this(srow),
                     "mutations": [["sources", "insert",
                                    ["set", [["named-uuid", "source"]]]]]}], src
        return self.change(judge, f"source-add {session}")

    def _source_of(self, read: Read, session: str, key: str) -> tuple[Row, model.Source, Row]:
        srow = read.one("Mirror_Session", session, "session")
        _session_refs(read, [srow])
        src = model.find_source(model.Intent.of((), (), [_session(srow)]), session, key)
        victim = next(r for r in srow.sources if r is not None
                      and rows.source_from_row(r).key == src.key)
        return srow, src, victim

    def source_del(self, session: str, key: str) -> model.Source:
        def judge(read: Read) -> tuple[list[dict], Any]:
            srow, src, victim = self._source_of(read, session, key)
            return [{"op": "mutate", "table": "Mirror_Session",
                     "where": _this(srow),
                     "mutations": [["sources", "delete", ["set", [_uuid(victim)]]]]},
                    *_written_of("Source_Status", [victim.uuid])], src
        return self.change(judge, f"source-del {session} {key}")

    def set_enabled(self, kind: str, name: str, enabled: bool, key: Optional[str] = None) -> None:
        """Enable or disable a target, a session or (with ``key``) a session's source."""
        def judge(read: Read) -> tuple[list[dict], Any]:
            if kind == "source":
                _, _, row = self._source_of(read, name, key or "")
                table = "Mirror_Source"
            else:
                table = TABLES[kind]
                row = read.one(table, name, kind)
            written: dict = {"enabled": enabled}
            if kind == "session" and enabled:
                controls_.check_enable(dataclasses.replace(
                    _shell(row), ends_at=row._data.get("ends_at", 0)), now_ms())
                if "stop_reason" in row._data:
                    written["stop_reason"] = ["set", []]
            if row.enabled == enabled:
                return [], None
            return [{"op": "update", "table": table, "where": _this(row),
                     "row": written}], None
        verb = "enable" if enabled else "disable"
        self.change(judge, f"{kind}-{verb} {name}" + (f" {key}" if key else ""))

    def delete(self, kind: str, name: str) -> None:
        """Delete a target, filter or session; sources and rules go with their owner."""
        def judge(read: Read) -> tuple[list[dict], Any]:
            table = TABLES[kind]
            row = read.one(table, name, kind)
            users: list[Row] = []
            if kind == "target":
                [users] = read.fetch(select("Mirror_Session", ["target", "==", _uuid(row)]))
            elif kind == "filter":
                [users] = read.fetch(select("Mirror_Session", ["filter", "includes", _uuid(row)]))
            _session_refs(read, users)
            obj: Any = (_target(row) if kind == "target" else
                        model.Filter(row.name) if kind == "filter" else _shell(row))
            intent = model.Intent.of([obj] if kind == "target" else [],
                                     [obj] if kind == "filter" else [],
                                     [obj] if kind == "session" else map(_session, users))
            model.check_del(intent, kind, name)
            gone = ([] if kind == "filter" else
                    _written_of("Target_Status", [row.uuid]) if kind == "target" else
                    _written_of("Source_Status", [u[1] for u in rpc.atoms(row._data["sources"])])
                    + _written_of("Session_Stats", [row.uuid]))
            return [{"op": "delete", "table": table, "where": _this(row)}, *gone], None
        self.change(judge, f"{kind}-del {name}")

    def chassis_del(self, name: str, now: float, force: bool = False) -> None:
        """Forget a chassis that is gone for good: its rows, bindings, statuses, counters.

        Refused while it still beats, unless ``force``: its agent would register it
        again (a heartbeat from the future does not count as beating).  Deleting is
        the same however often it runs, so a delete whose connection was lost is
        sent again; a chassis found gone after that is done, not unknown."""
        self._begin()
        sent: list[bool] = []  # a delete went out (its answer may have been lost)

        def attempt() -> None:
            if not self._chassis_del(name, now, force, sent) and not sent:
                raise model.NotFound("chassis", f"no chassis named {name!r}")
        self._retrying(attempt)

    def _chassis_del(self, name: str, now: float, force: bool, sent: list[bool]) -> bool:
        """One try of :meth:`chassis_del`; False when there is no such chassis."""
        found = _results(self.conn.transact(named("Chassis", name),
                                            named("Chassis_Private", name)))
        store = Store()
        chassis_rows = store.add("Chassis", found[0]["rows"])
        beats = {r.name: liveness.Liveness(r.heartbeat, r.heartbeat_interval)
                 for r in store.add("Chassis_Private", found[1]["rows"])}
        if not chassis_rows and name not in beats:
            return False
        if not force and liveness.silence(name, beats, now) is None:
            heard = max(0, int(now - beats[name].heartbeat))
            raise model.IntentError(
                "chassis", f"chassis {name} is alive (heard {heard} s ago); stop its agent "
                "before deleting it, or give --force")
        # only if it has not beaten since: else its agent, alive after all, would
        # register it again
        still = ([{"op": "wait", "table": "Chassis_Private", "timeout": 0,
                   "where": [["name", "==", name]], "columns": ["heartbeat"], "until": "==",
                   "rows": [{"heartbeat": beats[name].heartbeat}]}]
                 if name in beats and not force else [])
        sent.append(True)
        result = self.conn.transact(
            select("Chassis_Private", ["name", "==", name], columns=["heartbeat"], uuid=False),
            *still,
            {"op": "delete", "table": "Chassis", "where": [["name", "==", name]]},
            {"op": "delete", "table": "Chassis_Private", "where": [["name", "==", name]]},
            {"op": "delete", "table": "Binding", "where": [["chassis", "==", name]]},
            {"op": "delete", "table": "Source_Status", "where": [["chassis", "==", name]]},
            {"op": "delete", "table": "Target_Status", "where": [["chassis", "==", name]]},
            {"op": "delete", "table": "Session_Stats", "where": [["chassis", "==", name]]})
        if still and isinstance(result[1], dict) and result[1].get("error") == "timed out":
            if not result[0]["rows"]:
                return True  # gone meanwhile (an earlier delete whose answer was lost)
            raise model.Conflict("chassis", f"chassis {name} sent a heartbeat just now; stop "
                                    "its agent before deleting it")
        _results(result)
        return True

    # ---------------------------------------------------- reading everything

    def everything(self) -> "Everything":
        """For show, list, stats and trace: all of tapdb but the server's own tables."""
        tables = ("Mirror_Target", "Mirror_Filter", "Filter_Rule", "Mirror_Session",
                  "Mirror_Source", "Chassis", "Chassis_Private", "Binding", "Source_Status",
                  "Target_Status", "Session_Stats")
        self._begin()
        found = _results(self._retrying(lambda: self.conn.transact(*(select(t) for t in tables))))
        store = Store()
        for table, res in zip(tables, found):
            store.add(table, res.get("rows", []))
        bindings: dict[str, list[str]] = {}
        for r in store.rows("Binding"):
            bindings.setdefault(r.iface_id, []).append(r.chassis)
        private = store.rows("Chassis_Private")
        counters: dict[str, dict[str, dict[str, int]]] = {}
        for r in store.rows("Session_Stats"):
            sess = next((s for s in r.session if s is not None), None)
            if sess is not None:
                counters.setdefault(sess.name, {})[r.chassis] = dict(r.counters)
        return Everything(rows.snapshot(store.rows, with_status=True),
                          {k: tuple(sorted(v)) for k, v in bindings.items()},
                          sorted((r.name, r.tunnel_ip, r.encap) for r in store.rows("Chassis")),
                          {r.name: liveness.Liveness(r.heartbeat, r.heartbeat_interval)
                           for r in private},
                          {r.name: r.applied_generation for r in private}, counters,
                          {r.name: r.tunnel_mtu[0] for r in store.rows("Chassis")
                           if r.tunnel_mtu})

    def snapshot(self) -> rows.Snapshot:
        return self.everything().snapshot

    # ---------------------------------------------------- waiting for the chassis

    def wait_applied(self, generation: int, timeout: float) -> dict[str, "Late"]:
        """Wait until every chassis alive when the wait begins reports ``generation``
        applied (agents write it once the switch confirmed the flows); those that did
        not, each with why (still behind at the timeout, or gone silent meanwhile),
        else {}.  The set is fixed at the start, and kept across a lost connection (a
        leader change): a chassis that falls silent is named, never dropped; one
        already silent (or beating from the future) is not waited for, so no dead or
        lying chassis blocks every wait.  Who was alive is judged at the time the wait
        began, also when the first answer comes only after a lost connection."""
        deadline = time.monotonic() + timeout
        began = time.time()  # who was alive is judged at this time, whenever it is read
        self._begin(deadline)
        waited: Optional[frozenset[str]] = None

        def wait() -> dict[str, Late]:
            nonlocal waited
            columns = ["name", "heartbeat", "heartbeat_interval", "applied_generation"]
            self._monitors += 1
            monitor = f"applied-{self._monitors}"
            seen = _Private()
            seen.merge(self.conn.call("monitor", schema.NAME, monitor,
                                      {"Chassis_Private": {"columns": columns}}))
            if waited is None:
                # read late when the first connection was lost before it answered
                waited = frozenset(liveness.lagging(generation, seen.applied(), seen.beats(),
                                                    began))
            try:
                return self._wait(monitor, seen, generation, waited, deadline)
            finally:
                try:
                    self.conn.call("monitor_cancel", monitor)
                except rpc.RpcError:
                    pass  # the connection went with it: waited for again on a new one
        return self._retrying(wait)

    def _wait(self, monitor: str, seen: "_Private", generation: int, waited: frozenset[str],
              deadline: float) -> dict[str, "Late"]:
        while True:
            late = liveness.behind(generation, waited, seen.applied(), seen.beats(), time.time())
            left = deadline - time.monotonic()
            if all(why is not None for _, why in late.values()) or left <= 0:
                return {n: Late(at, why) for n, (at, why) in late.items()}
            # at least once a second: a chassis may fall silent meanwhile
            msg = self.conn.next_message(time.monotonic() + min(left, 1.0))
            if msg is not None and msg.get("method") == "update" and msg["params"][0] == monitor:
                seen.merge(msg["params"][1])


class _Private:
    """``Chassis_Private`` as a monitor reports it: heartbeats and applied generations."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def merge(self, update: dict) -> None:
        for row, change in update.get("Chassis_Private", {}).items():
            if change.get("new") is None:
                self.rows.pop(row, None)
            else:
                self.rows[row] = {**self.rows.get(row, {}), **change["new"]}

    def beats(self) -> dict[str, liveness.Liveness]:
        return {r["name"]: liveness.Liveness(r["heartbeat"], r["heartbeat_interval"])
                for r in self.rows.values()}

    def applied(self) -> dict[str, int]:
        return {r["name"]: r["applied_generation"] for r in self.rows.values()}


class Late(NamedTuple):
    """A chassis that did not apply a change: the generation it has, and why it stopped
    counting (it fell silent during the wait), None when time ran out."""
    at: int
    silent: Optional[str] = None


def _stored_as(project: str) -> list[str]:
    """How a project's rows name it: the default project's rows from before projects
    (schema 1.6.0) name none."""
    return [project] + ([""] if project == model.DEFAULT_PROJECT else [])


def _usage_selects(project: str, kinds: Iterable[str]) -> list[dict]:
    """The selects :func:`_usage` judges: the project's quotas row, then the names of
    its objects of each kind."""
    return [select("Project", ["name", "==", project], columns=["quotas"], uuid=False)] + [
        select(TABLES[kind.rstrip("s")], ["project", "==", p], columns=["name"], uuid=False)
        for kind in kinds for p in _stored_as(project)]


def _usage(project: str, kinds: Iterable[str], found: list[list[Row]]
           ) -> tuple[dict[str, int], dict[str, int]]:
    """A project's quotas (defaults included) and what it has of each of ``kinds``, from
    what :func:`_usage_selects` read."""
    quotas = {**model.PROJECT_QUOTAS, **(found[0][0].quotas if found[0] else {})}
    per = len(_stored_as(project))
    return quotas, {kind: sum(len(rows_) for rows_ in found[1 + i * per:1 + (i + 1) * per])
                    for i, kind in enumerate(kinds)}


class Everything(NamedTuple):
    snapshot: rows.Snapshot
    bindings: dict[str, tuple[str, ...]]  # iface-id -> the chassis that say they have it
    chassis: list[tuple[str, str, str]]  # (name, tunnel IP, encap)
    beats: dict[str, liveness.Liveness]
    applied: dict[str, int]  # chassis -> the generation it applied
    counters: dict[str, dict[str, dict[str, int]]]  # session -> chassis -> its counters
    mtus: dict[str, int] = {}  # chassis -> the underlay MTU it published


TABLES = {"target": "Mirror_Target", "filter": "Mirror_Filter", "session": "Mirror_Session"}


def _written_of(table: str, uuids: list[str]) -> list[dict]:
    """Deleting what agents wrote of objects being deleted (statuses, counters: their
    references would go, the rows stay), and any such rows left behind by other writers."""
    column = {"Source_Status": "source", "Target_Status": "target",
              "Session_Stats": "session"}[table]
    return [{"op": "delete", "table": table, "where": [[column, "==", ["set", []]]]}] + [
        {"op": "delete", "table": table, "where": [[column, "includes", ["uuid", u]]]}
        for u in uuids]


def rule_column(direction: str) -> str:
    return model.parse_choice("direction", direction, model.RULE_DIRECTIONS) + "_rules"


def _using(read: Read, sources: list[Row]) -> list[Row]:
    """The sessions that hold these sources, with their references read."""
    if not sources:
        return []
    found = read.fetch(*(select("Mirror_Session", ["sources", "includes", _uuid(s)])
                         for s in sources))
    sessions = list({r.uuid: r for group in found for r in group}.values())
    _session_refs(read, sessions)
    return sessions


def connect(remote: str, timeout: float, creds: Optional[tls.Tls] = None) -> IntentDb:
    """An operator's connection to tapdb (the leader, for a cluster), schema checked;
    ``creds`` for ``ssl:`` remotes.  With several remotes it connects again to
    whichever leads when the connection is lost."""
    conn = _connect(remote, timeout, creds)
    several = len([r for r in remote.split(",") if r.strip()]) > 1
    return IntentDb(conn, (lambda left: _connect(remote, left, creds)) if several else None,
                    timeout)


def _connect(remote: str, timeout: float, creds: Optional[tls.Tls]) -> rpc.Connection:
    """The leader (:func:`rpc.connect`), schema checked; with several members, one
    lost before it answered (killed just after it was found leading) is no error
    while ``timeout`` lasts: the members are tried again."""
    deadline = time.monotonic() + timeout
    several = "," in remote
    left = timeout
    while True:
        try:
            conn = rpc.connect(remote, left, creds)
        except rpc.RpcError as exc:
            raise TapdbError(f"cannot reach tapdb at {remote}: {exc}") from exc
        try:
            found = rpc.schema_version(conn)
            break
        except rpc.RpcError as exc:
            conn.close()
            left = deadline - time.monotonic()
            if not several or isinstance(exc, rpc.RpcRefused) or left <= 0:
                raise TapdbError(f"cannot reach tapdb at {remote}: {exc}") from exc
    conn.timeout = timeout
    if found is None:
        conn.close()
        raise TapdbError(f"cannot reach tapdb at {remote}: it serves no {schema.NAME} database")
    if schema.version_tuple(found) < schema.version_tuple(schema.version()):
        conn.close()
        raise TapdbError(f"tapdb at {remote} has schema version {found}, older than "
                         f"{schema.version()}; restart it with 'sdnagent-tapdb start' to convert it")
    return conn
