"""Model objects from tapdb rows, for any reader whose rows look like the IDL's.

The IDL's rows (the agent, ``client``) and decoded JSON rows (tapctl,
``ops``) both give attributes by column name: optional columns as lists,
references as rows.  Each builder returns the object, the rows behind it
(``Snapshot.rows`` entries) and the uuids of every row it was read from.
No I/O, and nothing heavier than the model to import.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Optional

from sdnagent import model


def opt(row: Any, column: str) -> Any:
    value = getattr(row, column)
    return value[0] if value else None


def port_range(row: Any, prefix: str) -> Optional[model.PortRange]:
    lo, hi = opt(row, prefix + "_min"), opt(row, prefix + "_max")
    if lo is None and hi is None:
        return None
    return model.PortRange(lo if lo is not None else hi, hi if hi is not None else lo)


Status = tuple[tuple[str, str], ...]
Statuses = dict[Any, Status]  # a target's or source's row uuid -> the status shown for it

# which status of an object to show when several chassis wrote one (a VM moving, a
# chassis gone): something wrong anywhere first, then a working one
_STATE_RANK = {"error": 0, "active": 1}
# what a status map may say: the rest ("chassis", "was") is the reader's to add, so a
# chassis cannot name another writer or dress its word as another's stale one
WRITTEN_KEYS = ("state", "reason")


def statuses(status_rows: Iterable[Any], column: str) -> Statuses:
    """The status to show for each object that ``Source_Status`` or ``Target_Status``
    rows (``column``: "source" or "target") speak of."""
    found: dict[Any, list[tuple]] = {}
    for r in status_rows:
        for obj in getattr(r, column):
            if obj is not None:
                # the writer is the row's chassis, the column RBAC compared with the
                # writer's certificate: never what the map says of itself
                st = {k: v for k, v in dict(r.status).items() if k in WRITTEN_KEYS}
                st["chassis"] = r.chassis
                found.setdefault(obj.uuid, []).append(
                    (_STATE_RANK.get(st.get("state", ""), 2), r.chassis, tuple(sorted(st.items()))))
    return {uuid: min(candidates)[2] for uuid, candidates in found.items()}


def status_of(row: Any, shown: Optional[Statuses]) -> Status:
    return shown.get(row.uuid, ()) if shown else ()


def rule_from_row(row: Any) -> model.Rule:
    return model.Rule(row.priority, row.action, opt(row, "protocol"), row.ethertype,
                      opt(row, "src_cidr"), opt(row, "dst_cidr"),
                      port_range(row, "src_port"), port_range(row, "dst_port"))


def source_from_row(row: Any, shown: Optional[Statuses] = None) -> model.Source:
    return model.Source(row.type, row.direction, opt(row, "iface_id"), opt(row, "chassis"),
                        opt(row, "bridge"), opt(row, "vlan"), row.enabled, status_of(row, shown))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The intent read from tapdb, and the row behind each object."""

    intent: model.Intent
    rows: dict  # ("target"|"filter"|"session", name) / ("rule", filter, dir, prio) / ("source", session, key)


# An object read from tapdb: the model value, the rows behind it (Snapshot.rows
# entries) and the uuids of every row it was read from.
Read = tuple[Any, dict, frozenset]


def project_of(row: Any) -> str:
    """A row's project (rows of schemas before 1.7.0 are the default project's)."""
    return getattr(row, "project", "") or model.DEFAULT_PROJECT


def read_target(row: Any, shown: Optional[Statuses] = None) -> Read:
    t = model.Target(row.name, row.type, row.tunnel_key, opt(row, "iface_id"),
                     opt(row, "chassis"), opt(row, "nic"), opt(row, "remote_ip"),
                     row.enabled, status_of(row, shown), tuple(sorted(row.options.items())),
                     project_of(row))
    return t, {("target", row.name): row}, frozenset({row.uuid})


def read_filter(row: Any, shown: Optional[Statuses] = None) -> Read:
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
    return (model.Filter(row.name, by_dir["inbound"], by_dir["outbound"], project_of(row)),
            rows, frozenset(deps))


def read_session(row: Any, shown: Optional[Statuses] = None) -> Read:
    rows: dict = {("session", row.name): row}
    deps = {row.uuid, row.target.uuid}
    sources = []
    for srow in row.sources:
        if srow is None:  # outside this client's monitoring condition
            continue
        src = source_from_row(srow, shown)
        rows["source", row.name, src.key] = srow
        deps.add(srow.uuid)
        sources.append(src)
    flt = opt(row, "filter")
    if flt is not None:
        deps.add(flt.uuid)
    sess = model.Session(row.name, row.priority, row.vni, row.target.name,
                         flt.name if flt is not None else None, opt(row, "packet_length"),
                         row.enabled, tuple(sorted(sources, key=lambda s: (s.type, s.key))),
                         project_of(row), **controls_of(row))
    return sess, rows, frozenset(deps)


CONTROLS = ("max_pps", "max_kbps", "sample", "stop_reason")


def controls_of(row: Any) -> dict:
    """A session row's controls (none in rows of schemas before 1.8.0)."""
    try:
        found = {c: opt(row, c) for c in CONTROLS}
        found["ends_at"] = row.ends_at or 0
    except (AttributeError, KeyError):
        return {}
    return found


KINDS = (("Mirror_Target", read_target), ("Mirror_Filter", read_filter),
         ("Mirror_Session", read_session))


def snapshot(rows_of: Callable[[str], Iterable[Any]], with_status: bool = False) -> Snapshot:
    """The intent read from every target, filter and session row that ``rows_of(table)``
    gives (an IDL's tables, or rows decoded from a select); ``with_status``: with the
    statuses agents wrote (what people read; agents compare their own rows)."""
    shown: Statuses = {}
    if with_status:
        shown.update(statuses(rows_of("Source_Status"), "source"))
        shown.update(statuses(rows_of("Target_Status"), "target"))
    found_rows: dict = {}
    objs: list[list] = []
    for table, read in KINDS:
        objs.append([])
        for row in rows_of(table):
            obj, its_rows, _ = read(row, shown)
            objs[-1].append(obj)
            found_rows.update(its_rows)
    return Snapshot(model.Intent.of(*objs), found_rows)
