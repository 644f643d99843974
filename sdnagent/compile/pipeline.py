"""brtap's OpenFlow pipeline, declared once.

Code names tables, never numbers; :func:`flow` refuses a match field or a
goto that the table's declaration does not allow, so the pipeline below is
the whole truth about what each table does (docs/flows.md shows it live).
"""
from __future__ import annotations

import dataclasses

from sdnagent.compile.flows import Flow, cookie


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    id: int
    matches: frozenset[str]
    next_tables: tuple[str, ...]
    doc: str


_IP_FIELDS = {"eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst",
              "tcp_src", "tcp_dst", "udp_src", "udp_dst"}

TABLES = (
    Table("classify", 0, frozenset({"in_port", "tun_ipv4_src", "tun_ipv6_src"} | _IP_FIELDS),
          ("filter", "tunnel_in"),
          "by in_port: a source hook goes to filter, a known chassis's tunnel traffic to "
          "tunnel_in, a target port's own traffic is dropped; anything else is dropped. A "
          "vswitch hook drops this chassis's own tunnel packets first: a copy is never "
          "mirrored again"),
    Table("filter", 10, frozenset({"in_port"} | _IP_FIELDS), ("forward",),
          "the sessions' rules of the hook's direction, ranked by (session priority, rule "
          "priority): accept writes the session into reg0 and goes on, reject drops"),
    Table("forward", 20, frozenset({"reg0"}), (),
          "by session (reg0): deliver to the target, truncated to the packet length: a local "
          "port, GRE/VXLAN to the target's chassis with the target's key, or VXLAN with the "
          "session VNI to a vxlan target"),
    Table("tunnel_in", 30, frozenset({"tunnel_id"}), (),
          "traffic from a known chassis: the key names a local enabled target"),
)
BY_NAME = {t.name: t for t in TABLES}


def table(name: str) -> Table:
    return BY_NAME[name]


def flow(table_name: str, priority: int, match: dict, actions: tuple = (), *,
         goto: str | None = None, kind: str, obj: str = "") -> Flow:
    """A flow of ``table_name``; an empty ``actions`` without ``goto`` drops."""
    tbl = BY_NAME[table_name]
    bad = set(match) - tbl.matches
    assert not bad, f"table {tbl.name} does not match on {sorted(bad)}"
    if goto is not None:
        assert goto in tbl.next_tables, f"table {tbl.name} cannot go to {goto}"
        actions = tuple(actions) + (("goto", BY_NAME[goto].id),)
    assert 0 <= priority <= 0xFFFF, priority
    return Flow(tbl.id, priority, tuple(sorted(match.items())), tuple(actions), cookie(kind, obj))
