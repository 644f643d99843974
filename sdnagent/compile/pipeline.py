"""brtap's OpenFlow pipeline, declared once.

Code names tables, never numbers; :func:`flow` refuses a match field or a
goto that the table's declaration does not allow, so the pipeline below is
the whole truth about what each table does (docs/flows.md shows it live).
"""
from __future__ import annotations

import dataclasses

from sdnagent import model
from sdnagent.compile.flows import Flow, cookie, shared


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    id: int
    matches: frozenset[str]
    next_tables: tuple[str, ...]
    doc: str


# registers: reg0 the session that accepted a copy, reg1 the feed it came from (a hook's
# number), reg2 the verdict of a copy no session took (REJECTED or 0: no rule matched),
# reg3 1 for a copy of a frame going to a source port (egress at its switch port), else
# 0; for a collector group: reg4 the copy's hash slot, reg5 its member, reg6 the target;
# for a sampled session: reg7 its connection's share (0: sampled)
REJECTED = 1
TOWARD_PORT = 1
_IP_FIELDS = {"eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst",
              "tcp_src", "tcp_dst", "udp_src", "udp_dst"}

# The filter stage is a chain of tables, each holding a fixed range of session
# priorities, so that a session's flows have an OpenFlow priority band of their
# own: other sessions and their rules come and go without moving it.
SESSIONS_PER_FILTER_TABLE = 6000
RULE_SLOTS = model.MAX_RULES_PER_DIRECTION  # one OpenFlow priority per rule
FILTER_TOP = 65000
FILTER_TABLES = tuple(f"filter{i}" for i in range(
    -(-model.SESSION_PRIORITY[1] // SESSIONS_PER_FILTER_TABLE)))
assert FILTER_TOP - SESSIONS_PER_FILTER_TABLE * RULE_SLOTS > 0


def _filter_table(i: int) -> Table:
    lo = i * SESSIONS_PER_FILTER_TABLE + 1
    hi = min(lo + SESSIONS_PER_FILTER_TABLE - 1, model.SESSION_PRIORITY[1])
    last = i == len(FILTER_TABLES) - 1
    return Table(FILTER_TABLES[i], 10 + i, frozenset({"reg1", "conj_id"} | _IP_FIELDS),
                 (*(() if last else (FILTER_TABLES[i + 1],)), *CONTROL_TABLES, "verdict",
                  "forward"),
                 f"the rules of sessions of priority {lo}-{hi} for the feed's direction, each "
                 "session in a priority band of its own: accept writes the session into reg0 "
                 "and goes to the session's first control table (sample, limit_pps, "
                 "limit_kbps), or to forward, reject marks reg2 and goes to verdict; a rule whose "
                 "feeds and port ranges would multiply is a conjunctive match; "
                 + ("no match goes to verdict" if last
                    else f"no match goes on to {FILTER_TABLES[i + 1]}"))


# a session's controls, in this order; a session goes only through the ones it uses
CONTROL_TABLES = ("sample", "limit_pps", "limit_kbps")

TABLES = (
    Table("classify", 0, frozenset({"in_port", "eth_src", "eth_dst"} | _IP_FIELDS),
          (FILTER_TABLES[0], "tunnel_in"),
          "by in_port (and, on a hook several ports share, the port's MAC): a source's feed "
          "goes into reg1 (and reg3 = 1 for frames to the port) and on to the filter stage, "
          "the chassis tunnel's traffic to tunnel_in, a target port's own traffic is dropped; "
          "anything else is dropped. A vswitch hook drops this chassis's own tunnel packets "
          "first: a copy is never mirrored again"),
    *(_filter_table(i) for i in range(len(FILTER_TABLES))),
    Table("sample", 16, frozenset({"reg0"}), ("limit_pps",),
          "by session (reg0), for sampled sessions: hash the copy's connection (symmetric: "
          "both directions alike, and the same on every chassis) into reg7, one share in N, "
          "and go to limit_pps"),
    Table("limit_pps", 17, frozenset({"reg0", "reg7"}), ("limit_kbps", "forward"),
          "by session (reg0): a sampled session's copies of share 0 (reg7) go on, the rest "
          "are dropped and counted; a session's packet-rate cap is its meter here; then "
          "limit_kbps or forward"),
    Table("limit_kbps", 18, frozenset({"reg0"}), ("forward",),
          "by session (reg0): a session's bit-rate cap is its meter here; then forward"),
    Table("verdict", 19, frozenset({"reg1", "reg2"}), (),
          "what no session mirrored, by feed (reg1): rejected (reg2 = 1) or matched by no "
          "rule (reg2 = 0); dropped, and counted"),
    Table("forward", 20, frozenset({"reg0", "reg3"}), ("balance",),
          "by session (reg0): deliver to the target, truncated to the packet length: a local "
          "port, GRE/VXLAN to the target's chassis with the target's key, or to a collector "
          "by VXLAN, GRE or ERSPAN with the session VNI (for ERSPAN type III, one flow per "
          "direction, reg3); for a collector group, hash the copy's connection into a slot "
          "(reg4) and go to balance"),
    Table("balance", 21, frozenset({"reg6", "reg4"}), ("member",),
          "a collector group's slots (reg4), each the member it belongs to (into reg5); by "
          "target (reg6)"),
    Table("member", 22, frozenset({"reg0", "reg5", "reg3"}), (),
          "by session (reg0) and group member (reg5): deliver to that member, truncated to "
          "the packet length; each member's copies counted apart"),
    Table("tunnel_in", 30, frozenset({"tunnel_id", "tun_ipv4_src", "tun_ipv6_src"}), (),
          "tunnel traffic: delivered when the key names a local enabled target and the "
          "sender is a chassis expected to send to it (one holding a source of an enabled "
          "session to it)"),
)
BY_NAME = {t.name: t for t in TABLES}
# goto only goes forward: ids grow in the order declared
assert [t.id for t in TABLES] == sorted({t.id for t in TABLES}) and len(BY_NAME) == len(TABLES)


def filter_band(session_priority: int) -> tuple[str, int]:
    """The filter table of a session and the OpenFlow priority of its first rule; its
    rules take the RULE_SLOTS priorities below, in evaluation order."""
    i, pos = divmod(session_priority - 1, SESSIONS_PER_FILTER_TABLE)
    return FILTER_TABLES[i], FILTER_TOP - pos * RULE_SLOTS


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
    return Flow(tbl.id, priority, shared(tuple(sorted(match.items()))), shared(tuple(actions)),
                cookie(kind, obj))
