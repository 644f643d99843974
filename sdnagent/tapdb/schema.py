"""The packaged Tap schema: where it lives, which version it is, and the agents' role."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

NAME = "Tap"
DEFAULT_DIR = Path("/var/lib/sdnagent/tapdb")  # where sdnagent-tapdb keeps the database
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "tap.ovsschema"

# Each tapdb member's own listeners (not replicated: members of one cluster listen on
# their own addresses), read by ovsdb-server through a reference column, which is what
# makes it apply a listener's RBAC role.
LOCAL_NAME = "Tap_Local"
LOCAL_SCHEMA_PATH = SCHEMA_PATH.parent / "tap-local.ovsschema"

# The role of agents' connections.  ovsdb-server compares the authorization column
# of a row with the CN of the client's certificate, the chassis name: an agent may
# write only the rows that name its own chassis, and only the columns listed here
# (the columns it writes, no more; every one of them is bounded in the schema).
CHASSIS_ROLE = "sdnagent-chassis"
CHASSIS_PERMISSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    # table: (the column that must equal the CN, the columns it may update)
    "Chassis": ("name", ("tunnel_ip", "encap", "tunnel_mtu")),
    "Chassis_Private": ("name", ("heartbeat", "heartbeat_interval", "applied_generation")),
    "Binding": ("chassis", ()),
    "Source_Status": ("chassis", ("status",)),
    "Target_Status": ("chassis", ("status",)),
    "Session_Stats": ("chassis", ("counters",)),
}


@lru_cache(maxsize=1)
def load() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def version() -> str:
    return load()["version"]


def initial_transaction() -> list:
    """What a new database holds: the one Tap_Global row writers serialise on."""
    return [NAME, {"op": "insert", "table": "Tap_Global", "row": {"generation": 0}}]


def role_rows() -> dict[str, tuple[str, bool, tuple[str, ...]]]:
    """The agents' permissions as RBAC_Permission rows hold them, by table:
    (authorization, insert_delete, update)."""
    return {table: (auth, True, tuple(sorted(update)))
            for table, (auth, update) in CHASSIS_PERMISSIONS.items()}


def role_transaction() -> list[dict]:
    """Operations that make the agents' role exactly :func:`role_rows` (the old
    permissions, no longer referenced, are collected by the server)."""
    ops: list[dict] = [{"op": "delete", "table": "RBAC_Role",
                        "where": [["name", "==", CHASSIS_ROLE]]}]
    perms = []
    for i, (table, (auth, insert_delete, update)) in enumerate(sorted(role_rows().items())):
        ops.append({"op": "insert", "table": "RBAC_Permission", "uuid-name": f"p{i}",
                    "row": {"table": table, "authorization": ["set", [auth]],
                            "insert_delete": insert_delete, "update": ["set", list(update)]}})
        perms.append([table, ["named-uuid", f"p{i}"]])
    ops.append({"op": "insert", "table": "RBAC_Role",
                "row": {"name": CHASSIS_ROLE, "permissions": ["map", perms]}})
    return ops


def local_transaction(chassis_remotes: list[str]) -> list:
    """The listeners a member's local database names: agents' listeners with their role."""
    ops: list = [LOCAL_NAME, {"op": "delete", "table": "Local_Config", "where": []}]
    refs = []
    for i, target in enumerate(chassis_remotes):
        ops.append({"op": "insert", "table": "Connection", "uuid-name": f"c{i}",
                    "row": {"target": target, "role": CHASSIS_ROLE}})
        refs.append(["named-uuid", f"c{i}"])
    ops.append({"op": "insert", "table": "Local_Config",
                "row": {"connections": ["set", refs]}})
    return ops


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def over_bounds(table: str, row: dict) -> list[str]:
    """The columns of ``row`` (OVSDB JSON, as a select returns it) whose values the
    packaged schema's bounds refuse: a string too long, a set or map with too many
    members.  Rows an older schema let through must be dealt with before a conversion,
    which would otherwise fail on them."""
    columns = load()["tables"].get(table, {}).get("columns", {})
    bad = []
    for name, value in row.items():
        spec = columns.get(name)
        if spec is None:
            continue
        kind = spec["type"]
        if isinstance(kind, str):
            kind = {"key": kind}
        if isinstance(value, list) and value and value[0] in ("set", "map"):
            members = value[1]
        else:
            members = [value]
        limit = kind.get("max", 1)
        too_many = limit != "unlimited" and len(members) > int(limit)
        if too_many or any(_too_long(kind, m, value) for m in members):
            bad.append(name)
    return bad


def _too_long(kind: dict, member: object, value: object) -> bool:
    pairs = ([("key", member[0]), ("value", member[1])]
             if isinstance(value, list) and value and value[0] == "map" else [("key", member)])
    for part, atom in pairs:
        base = kind.get(part)
        if isinstance(base, dict) and isinstance(atom, str) and len(atom) > base.get(
                "maxLength", len(atom)):
            return True
    return False


def pruning_transaction(found: dict[str, list[dict]]) -> tuple[list[dict], int]:
    """What makes the rows agents wrote fit the packaged bounds before a conversion:
    ``found`` is each chassis-writable table's rows (with ``_uuid``).  A row whose map
    or name is over is deleted (its agent writes it again; a Chassis row is
    re-registered), an ``external_ids`` over is emptied.  The operations, and how many
    rows they touch."""
    ops: list[dict] = []
    for table in sorted(found):
        for row in found[table]:
            bad = over_bounds(table, {k: v for k, v in row.items() if k != "_uuid"})
            if not bad:
                continue
            where = [["_uuid", "==", row["_uuid"]]]
            if bad == ["external_ids"]:
                ops.append({"op": "update", "table": table, "where": where,
                            "row": {"external_ids": ["map", []]}})
            else:
                ops.append({"op": "delete", "table": table, "where": where})
    return ops, len(ops)
