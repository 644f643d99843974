"""A small OpenFlow table simulator and a reference evaluator of the semantics.

``run`` pushes one packet (a dict of field values) through compiled flows the
way OVS would: highest-priority match per table, set_field, goto, outputs.
``reference`` decides from the intent alone, following docs/design.md §3,
which session (if any) mirrors a packet.  Property tests check they agree.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Optional

from sdnagent import model
from sdnagent.compile.flows import Flow
from sdnagent.targets import collector


def _field_matches(field: str, want: Any, packet: dict) -> bool:
    have = packet.get(field)
    if have is None:
        return False
    if isinstance(want, tuple):
        value, mask = want
        if isinstance(value, str):
            bits = int(ipaddress.ip_address(mask))
            return int(ipaddress.ip_address(have)) & bits == int(ipaddress.ip_address(value))
        return (have & mask) == (value & mask)
    if field in ("eth_src", "eth_dst"):
        return str(have).lower() == str(want).lower()
    if isinstance(want, str):
        return ipaddress.ip_address(have) == ipaddress.ip_address(want)
    return have == want


def lookup(flows: Iterable[Flow], table: int, packet: dict) -> Optional[Flow]:
    """The flow a packet hits in ``table``, with OVS's conjunctive matches: at each
    priority from the highest, a plain flow that matches wins; else a conjunction whose
    every clause has a matching flow there sends the packet to its ``conj_id`` flow;
    else the lookup goes on at the next lower priority."""
    found: dict[int, list[Flow]] = {}
    for f in flows:
        if f.table == table and all(_field_matches(k, v, packet) for k, v in f.match):
            found.setdefault(f.priority, []).append(f)
    for priority in sorted(found, reverse=True):
        plain = [f for f in found[priority] if not any(a[0] == "conjunction" for a in f.actions)]
        # two matching flows of one priority: a real switch would pick either
        assert len(plain) <= 1, f"two flows of one priority match the packet: {plain}"
        if plain:
            return plain[0]
        clauses: dict[int, tuple[set, int]] = {}
        for f in found[priority]:
            for a in f.actions:
                assert a[0] == "conjunction", f"a clause flow with other actions: {f}"
                clauses.setdefault(a[1], (set(), a[3]))[0].add(a[2])
        complete = [cid for cid, (got, n) in clauses.items() if len(got) == n]
        assert len(complete) <= 1, f"two conjunctions complete at one priority: {complete}"
        if complete:
            hit = lookup(flows, table, {**packet, "conj_id": complete[0]})
            assert hit is not None and hit.priority == priority, (complete, hit)
            return hit
    return None


def run(flows: Iterable[Flow], packet: dict, hits: Optional[list[Flow]] = None) -> list[tuple]:
    """The outputs ("output", port, max_len or None, tunnel fields) of one packet; the
    flows it hit (counted, as the switch counts them) are added to ``hits``."""
    flows = list(flows)
    pkt = {**{f"reg{i}": 0 for i in range(8)}, **packet}  # registers start at zero
    table = 0
    outputs = []
    for _ in range(16):
        f = lookup(flows, table, pkt)
        if f is None:
            return outputs
        if hits is not None:
            hits.append(f)
        next_table = None
        for action in f.actions:
            if action[0] == "set_field":
                pkt[action[1]] = action[2]
            elif action[0] == "output":
                outputs.append((action[1], None, _tunnel(pkt)))
            elif action[0] == "output_trunc":
                outputs.append((action[1], action[2], _tunnel(pkt)))
            elif action[0] == "conjunction":
                raise AssertionError(f"a clause flow was executed: {f}")
            elif action[0] == "multipath":
                _, fields, basis, algorithm, max_link, arg, bits, reg = action
                assert (fields, algorithm, arg) == ("symmetric_l3l4+udp", "modulo_n", 0)
                pkt[reg] = (connection_hash_of(pkt, basis) or 0) % (max_link + 1)
            elif action[0] == "meter":  # no rate here: the flow that names it is a hit
                pass
            elif action[0] == "goto":
                assert action[1] > table, "goto must go forward"
                next_table = action[1]
            else:
                raise AssertionError(f"unknown action {action}")
        if next_table is None:
            return outputs
        table = next_table
    raise AssertionError("pipeline loops")


def _tunnel(pkt: dict) -> tuple:
    return tuple((k, pkt[k]) for k in ("tun_ipv4_dst", "tun_ipv6_dst", "tunnel_id",
                                       "tun_erspan_ver", "tun_erspan_idx", "tun_erspan_hwid",
                                       "tun_erspan_dir") if k in pkt)


def connection_hash_of(pkt: dict, basis: int = 0) -> Optional[int]:
    """The hash a multipath (a group's, a sample's) takes of a packet given as match
    fields."""
    fam = {0x0800: "ipv4", 0x86DD: "ipv6"}.get(pkt.get("eth_type", 0), "")
    l4 = {6: "tcp", 17: "udp"}.get(pkt.get("ip_proto", -1), "")
    return collector.connection_hash(pkt.get("eth_type", 0), pkt.get(f"{fam}_src"),
                                     pkt.get(f"{fam}_dst"), pkt.get("ip_proto"),
                                     pkt.get(f"{l4}_src"), pkt.get(f"{l4}_dst"), basis)


# ---------------------------------------------------------------- the reference


def rule_matches(rule: model.Rule, pkt: dict) -> bool:
    eth = {"ipv4": 0x0800, "ipv6": 0x86DD}[rule.ethertype]
    if pkt.get("eth_type") != eth:
        return False
    if rule.protocol is not None and pkt.get("ip_proto") != rule.protocol:
        return False
    fam = rule.ethertype
    for cidr, field in ((rule.src, f"{fam}_src"), (rule.dst, f"{fam}_dst")):
        if cidr and ipaddress.ip_address(pkt[field]) not in ipaddress.ip_network(cidr):
            return False
    l4 = {6: "tcp", 17: "udp"}.get(pkt.get("ip_proto", -1))
    for rng, end in ((rule.src_port, "src"), (rule.dst_port, "dst")):
        if rng is None:
            continue
        if l4 is None:
            return False
        if not rng.lo <= pkt[f"{l4}_{end}"] <= rng.hi:
            return False
    return True


def reference(intent: model.Intent, iface: str, direction: str, pkt: dict) -> Optional[str]:
    """The session that mirrors ``pkt`` seen at ``iface`` in ``direction`` (in/out), or None."""
    rules_dir = "inbound" if direction == "in" else "outbound"
    for sess in sorted(intent.sessions.values(), key=lambda s: s.priority):
        target = intent.targets.get(sess.target)
        if not sess.enabled or target is None or not target.enabled:
            continue
        if not any(s.type == "port" and s.iface_id == iface and s.enabled
                   and s.direction in (direction, "both") for s in sess.sources):
            continue
        if sess.filter is None:
            return sess.name
        for rule in intent.filters[sess.filter].rules(rules_dir):
            if rule_matches(rule, pkt):
                if rule.action == "accept":
                    return sess.name
                return None
    return None
