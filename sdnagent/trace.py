"""What the intent does with one packet seen at one source (pure): ``tapctl trace``.

The packet is written as ovs-ofctl writes a flow (``tcp,nw_src=192.168.0.161,
nw_dst=192.168.0.230,tp_dst=1234``). The sessions that have the port as an
enabled source in that direction are taken in priority order; in each, the
first rule of the direction that matches decides (accept: mirrored to that
session's target; reject: not mirrored at all); a session whose rules all
miss passes the packet on. This is the model's semantics, stated once more
in words a person can follow; the unit tests hold it to the compiled flows.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Optional

from sdnagent import controls, model

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
_SHORTHANDS = {  # ovs-ofctl's protocol keywords: (eth_type, ip_proto)
    "ip": (ETH_IPV4, None), "ipv6": (ETH_IPV6, None), "arp": (ETH_ARP, None),
    "tcp": (ETH_IPV4, 6), "udp": (ETH_IPV4, 17), "icmp": (ETH_IPV4, 1), "sctp": (ETH_IPV4, 132),
    "tcp6": (ETH_IPV6, 6), "udp6": (ETH_IPV6, 17), "icmp6": (ETH_IPV6, 58),
    "sctp6": (ETH_IPV6, 132),
}
_FIELDS = {  # ovs-ofctl field names -> ours
    "dl_type": "eth_type", "eth_type": "eth_type", "nw_proto": "ip_proto", "ip_proto": "ip_proto",
    "nw_src": "ipv4_src", "ip_src": "ipv4_src", "nw_dst": "ipv4_dst", "ip_dst": "ipv4_dst",
    "ipv6_src": "ipv6_src", "ipv6_dst": "ipv6_dst",
    "tp_src": "src_port", "tcp_src": "src_port", "udp_src": "src_port",
    "tp_dst": "dst_port", "tcp_dst": "dst_port", "udp_dst": "dst_port",
}
_ALLOWED = ("a protocol (" + ", ".join(_SHORTHANDS) + ") and " + ", ".join(sorted(_FIELDS)))


@dataclasses.dataclass(frozen=True)
class Packet:
    """The fields of a packet that rules look at."""

    eth_type: int
    ip_proto: Optional[int] = None
    src: Optional[str] = None  # IP address, of the eth_type's family
    dst: Optional[str] = None
    src_port: Optional[int] = None  # TCP or UDP only
    dst_port: Optional[int] = None

    @property
    def family(self) -> Optional[str]:
        return {ETH_IPV4: "ipv4", ETH_IPV6: "ipv6"}.get(self.eth_type)

    def fields(self) -> dict:
        """As OpenFlow match fields (``eth_type``, ``ipv4_src``, ``tcp_dst``...)."""
        out: dict = {"eth_type": self.eth_type}
        if self.ip_proto is not None:
            out["ip_proto"] = self.ip_proto
        for end, ip in (("src", self.src), ("dst", self.dst)):
            if ip is not None:
                out[f"{self.family}_{end}"] = ip
        l4 = {6: "tcp", 17: "udp"}.get(self.ip_proto or -1)
        for end, port in (("src", self.src_port), ("dst", self.dst_port)):
            if port is not None and l4:
                out[f"{l4}_{end}"] = port
        return out


def parse_packet(text: str) -> Packet:
    """A packet in ovs-ofctl's flow syntax; IntentError naming what is wrong."""
    found: dict[str, object] = {}

    def put(key: str, value: object, token: str) -> None:
        if key in found and found[key] != value:
            raise model.IntentError("packet", f"{token!r} contradicts what is given before it")
        found[key] = value

    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        name, sep, value = token.partition("=")
        if not sep:
            if name not in _SHORTHANDS:
                raise model.IntentError("packet", f"{token!r} is not allowed; give {_ALLOWED}")
            eth, proto = _SHORTHANDS[name]
            put("eth_type", eth, token)
            if proto is not None:
                put("ip_proto", proto, token)
            continue
        key = _FIELDS.get(name)
        if key is None:
            raise model.IntentError("packet", f"{name!r} is not allowed; give {_ALLOWED}")
        if key in ("eth_type", "ip_proto"):
            bounds = (0, 0xFFFF) if key == "eth_type" else (0, 255)
            try:
                number = int(value, 0)
            except ValueError:
                number = -1
            if not bounds[0] <= number <= bounds[1]:
                raise model.IntentError("packet", f"{name}={value!r} is not allowed; give a "
                                        f"number {bounds[0]}..{bounds[1]}")
            put(key, number, token)
        elif key.endswith("_port"):
            put(key, model.parse_int(name, value, (0, 65535)), token)
        else:
            try:
                ip = ipaddress.ip_address(value)
            except ValueError:
                raise model.IntentError("packet", f"{name}={value!r} is not allowed; give an "
                                        "IP address") from None
            family = "ipv4" if ip.version == 4 else "ipv6"
            if key.split("_")[0] != family:
                raise model.IntentError("packet", f"{name}={value} is not allowed: "
                                        f"{name} takes an {key.split('_')[0]} address")
            put(key.split("_")[1], str(ip), token)
            put("eth_type", ETH_IPV4 if ip.version == 4 else ETH_IPV6, token)
    if "eth_type" not in found:
        raise model.IntentError("packet", f"{text!r} says nothing of the packet's kind; give "
                                "a protocol (ip, tcp, udp, icmp, ipv6, tcp6, arp...) or addresses")
    pkt = Packet(**found)  # type: ignore[arg-type]
    if pkt.family is None and (pkt.ip_proto is not None or pkt.src or pkt.dst):
        raise model.IntentError("packet", "IP fields are not allowed on a non-IP packet")
    if (pkt.src_port is not None or pkt.dst_port is not None) and pkt.ip_proto not in (6, 17):
        raise model.IntentError("packet", "tp_src and tp_dst are allowed with tcp or udp only")
    return pkt


def rule_decides(rule: model.Rule, pkt: Packet) -> Optional[str]:
    """Why ``rule`` does not match ``pkt``, or None when it matches."""
    if pkt.family != rule.ethertype:
        return f"not {rule.ethertype}"
    if rule.protocol is not None and pkt.ip_proto != rule.protocol:
        return f"not {model.protocol_name(rule.protocol)}"
    for end, cidr, ip in (("src", rule.src, pkt.src), ("dst", rule.dst, pkt.dst)):
        if cidr is not None and (ip is None or ipaddress.ip_address(ip)
                                 not in ipaddress.ip_network(cidr)):
            return f"{end} {ip or 'unknown'} not in {cidr}"
    for end, rng, port in (("src-port", rule.src_port, pkt.src_port),
                           ("dst-port", rule.dst_port, pkt.dst_port)):
        if rng is not None and (port is None or not rng.lo <= port <= rng.hi):
            return f"{end} {port if port is not None else 'unknown'} not in {rng}"
    return None


@dataclasses.dataclass(frozen=True)
class Step:
    """What one session did with the packet."""

    session: str
    priority: int
    outcome: str  # skipped, passed, accept, reject
    why: str


@dataclasses.dataclass(frozen=True)
class Trace:
    steps: tuple[Step, ...]
    mirrored_by: Optional[str] = None  # the session that mirrors it
    rule: Optional[model.Rule] = None  # the rule that decided (None: no filter, or none)
    decided_by: Optional[str] = None  # the session whose rule decided (accept or reject)


def evaluate(intent: model.Intent, port: str, direction: str, pkt: Packet) -> Trace:
    """The sessions that see ``pkt`` at ``port`` going ``direction`` (in: to the VM, out:
    from it), in priority order, and which one decides."""
    rules_of = "inbound" if direction == "in" else "outbound"
    steps: list[Step] = []
    for sess in sorted(intent.sessions.values(), key=lambda s: s.priority):
        src = next((s for s in sess.sources if s.type == "port" and s.iface_id == port
                    and s.direction in (direction, "both")), None)
        if src is None:
            continue
        target = intent.targets.get(sess.target)

        def step(outcome: str, why: str) -> Step:
            return Step(sess.name, sess.priority, outcome, why)
        skip = ("the session is disabled" if not sess.enabled else
                "the source is disabled" if not src.enabled else
                f"target {sess.target} is disabled" if target is None or not target.enabled
                else None)
        if skip is None:
            try:
                model.check_stored(intent, sess)
                model.check_stored_source(src)
            except model.IntentError as exc:
                skip = f"set aside by the agents: {exc}"
        if skip is not None:
            steps.append(step("skipped", skip))
            continue
        if sess.filter is None:
            steps.append(step("accept", "no filter: it mirrors everything in its direction"))
            return Trace(tuple(steps), sess.name, None, sess.name)
        rules = intent.filters[sess.filter].rules(rules_of)
        if not rules:
            steps.append(step("passed", f"filter {sess.filter} has no {rules_of} rule: it "
                                        "mirrors nothing in this direction"))
            continue
        missed = []
        for rule in rules:
            why = rule_decides(rule, pkt)
            if why is None:
                steps.append(step(rule.action, f"filter {sess.filter} {rules_of} rule "
                                               f"{rule.describe()} matches"
                                  + (f" (rules {', '.join(missed)} do not)" if missed else "")))
                return Trace(tuple(steps), sess.name if rule.action == "accept" else None,
                             rule, sess.name)
            missed.append(f"{rule.priority}: {why}")
        steps.append(step("passed", f"no {rules_of} rule of filter {sess.filter} matches ("
                                    + "; ".join(missed) + ")"))
    return Trace(tuple(steps))


def delivery(intent: model.Intent, session: str, port: str,
             bindings: Mapping[str, tuple[str, ...]], chassis: Mapping[str, tuple[str, str]],
             pkt: Optional[Packet] = None) -> str:
    """What happens to a copy of ``session`` taken at ``port``: where it goes, how, how
    long; its target's kind says, as it says to the agent of the port's chassis.
    ``chassis``: name -> (tunnel IP, encap); ``pkt``: the copy, for a collector group
    (which member its connection goes to)."""
    from sdnagent.compile.compiler import Inventory
    from sdnagent.compile.delivery import Status
    from sdnagent.targets import collector
    sess = intent.sessions[session]
    target = intent.targets[sess.target]
    length = (f"the first {sess.packet_length} bytes" if sess.packet_length
              else "the whole frame")
    here = bindings.get(port, ())
    if len(here) != 1:
        return (f"nowhere: port {port} is " + ("bound on no chassis" if not here else
                                               f"claimed by chassis {' and '.join(here)}"))
    inv = Inventory.as_tapdb_sees(here[0], bindings,
                                  {n: (ip, encap, None) for n, (ip, encap) in chassis.items()})
    route = target.kind.deliver(target, sess, inv)
    if isinstance(route, Status):
        return f"nowhere: {route.reason}"
    leg = route.legs[0]
    if route.balanced:
        assert pkt is not None, "a group's member depends on the packet"
        hashed = collector.connection_hash(pkt.eth_type, pkt.src, pkt.dst, pkt.ip_proto,
                                           pkt.src_port, pkt.dst_port)
        if hashed is None:
            return (f"{length} to one member of target {target.name} (group), chosen by the "
                    "frame's MAC addresses and VLAN (it is not IP)")
        slot = collector.slot_of(hashed)
        leg = route.legs[route.slots[slot]]
        return (f"{length} to {target.kind.words(target, sess, leg)} (its connection hashes "
                f"to slot {slot} of {len(route.slots)})")
    return f"{length} to {target.kind.words(target, sess, leg)}"


def describe(intent: model.Intent, port: str, direction: str, packet: str,
             bindings: Mapping[str, tuple[str, ...]], chassis: Mapping[str, tuple[str, str]]
             ) -> str:
    """``tapctl trace``'s text."""
    pkt = parse_packet(packet)
    model.parse_iface_id("port", port)
    model.parse_choice("direction", direction, ("in", "out"))
    trace = evaluate(intent, port, direction, pkt)
    where = bindings.get(port, ())
    lines = [f"packet {packet} at port {port} ({'to' if direction == 'in' else 'from'} the "
             f"VM), direction {direction}"
             + (f", on chassis {', '.join(where)}" if where else ", bound on no chassis")]
    if not trace.steps:
        lines.append(f"not mirrored: no session has port {port} as a source in direction "
                     f"{direction}")
        return "\n".join(lines)
    lines.append("sessions, in priority order:")
    for s in trace.steps:
        lines.append(f"  {s.session} (priority {s.priority}): {s.outcome}: {s.why}")
    sess = intent.sessions[trace.mirrored_by] if trace.mirrored_by else None
    share = sample_share(sess, pkt) if sess is not None and sess.sample else 0
    if sess is not None and share:
        lines.append(f"not mirrored: {sess.name} accepts it, but it samples 1 connection in "
                     f"{sess.sample} (share 0) and this connection hashes to share {share}")
    elif sess is not None:
        lines.append(f"mirrored by {sess.name}: "
                     + delivery(intent, sess.name, port, bindings, chassis, pkt))
        if share is None:
            lines.append(f"  if its connection is sampled: {sess.name} samples 1 in "
                         f"{sess.sample}, chosen for what is not IP by the frame's MAC "
                         "addresses and VLAN, which a trace is not given")
        held = controls.describe(sess)
        if held:
            lines.append(f"  {sess.name} is " + "; ".join(held) + (
                ": copies over a cap are dropped" if sess.max_pps or sess.max_kbps else ""))
    elif trace.decided_by is not None:
        lines.append(f"not mirrored: {trace.decided_by} rejects it (no later session is tried)")
    else:
        lines.append("not mirrored: no rule of any session matches")
    return "\n".join(lines)


def sample_share(sess: model.Session, pkt: Packet) -> Optional[int]:
    """The share (of ``sess.sample``) that ``pkt``'s connection hashes to, as the sample
    flow's ``multipath`` computes it; share 0 is mirrored.  None for what is not IP."""
    from sdnagent.compile.compiler import SAMPLE_BASIS
    from sdnagent.targets import collector
    assert sess.sample
    hashed = collector.connection_hash(pkt.eth_type, pkt.src, pkt.dst, pkt.ip_proto,
                                       pkt.src_port, pkt.dst_port, SAMPLE_BASIS)
    return None if hashed is None else hashed % sess.sample


# ---------------------------------------------------------------- the switch's side

def switch_labels(intent: model.Intent, hooks: Mapping[str, str]) -> dict[int, str]:
    """What each cookie the agent may write on brtap stands for, for the objects of
    ``intent`` and this host's ``hooks`` (name -> what it mirrors): cookies name
    their object by a hash, so the names are tried, not read back."""
    from sdnagent.compile import flows, pipeline  # the compiler, only for this
    from sdnagent.compile import hooks as hook_units
    out: dict[int, str] = {}

    def put(kind: str, obj: str, text: str) -> None:
        out[flows.cookie(kind, obj)] = text
    for table in pipeline.TABLES:
        put("default", table.name, f"table {table.name}: nothing else matched")
    for encap in ("gre", "vxlan"):
        put("tunnel", encap, f"from the chassis tunnel ({encap})")
    for t in intent.targets.values():
        put("target_drop", t.name, f"target {t.name}'s own traffic: dropped")
        put("target_in", t.name, f"into target {t.name} ({t.where()}): its key, from a chassis "
                                 "expected to send to it")
        if t.kind.members(t):
            put("balance", t.name, f"target {t.name}: a hash slot and the member it belongs to")
    for hook, what in hooks.items():
        put("source", hook_units.hook_obj(hook, "own-tunnel"),
            f"hook {hook} ({what}): this chassis's own tunnel packet, never mirrored")
        put("source", hook_units.hook_obj(hook, "unattributed"),
            f"hook {hook} ({what}): to none of its ports' MACs (a broadcast, or a MAC no "
            "source has); not mirrored")
    feeds = {f for s in intent.sessions.values() for src in s.sources
             for f in hook_units.feed_names(src)}
    for feed in sorted(feeds):
        put("source", feed, f"the copies of {feed}: to the filter stage")
        put("verdict", hook_units.verdict_obj(feed, "unmatched"),
            f"{feed}: no rule of any session matched; not mirrored")
        put("verdict", hook_units.verdict_obj(feed, "rejected"), f"{feed}: rejected; not mirrored")
    for s in intent.sessions.values():
        put("forward", s.name, f"session {s.name}: the copy to target {s.target}")
        target = intent.targets.get(s.target)
        for member in target.kind.members(target) if target is not None else ():
            put("member", f"{s.name}/{member}", f"session {s.name}: the copy to member "
                                                f"{member} of target {s.target}")
        put("clause", s.name, f"session {s.name}: one clause of a rule's conjunctive match")
        put("sample", s.name, f"session {s.name}: the connection's share of its sample")
        put("unsampled", s.name, f"session {s.name}: a connection it does not sample; "
                                 "not mirrored")
        put("limit", f"{s.name}/pps", f"session {s.name}: its sampled connections and its "
                                      "packet-rate cap (copies over it are dropped)")
        put("limit", f"{s.name}/kbps", f"session {s.name}: its bit-rate cap (copies over it "
                                       "are dropped)")
        flt = intent.filters.get(s.filter or "")
        for direction in model.RULE_DIRECTIONS:
            put("session", f"{s.name}/{direction}", f"session {s.name} (no filter): mirrored")
            for r in flt.rules(direction) if flt is not None else ():
                put("rule", f"{s.name}/{direction}/{r.priority}",
                    f"session {s.name}, filter {s.filter} {direction} rule {r.priority} "
                    f"({r.action})")
    return out


def annotate(ofproto_trace: str, labels: Mapping[int, str]) -> str:
    """``ovs-appctl ofproto/trace`` output with, under each flow it hit, what the flow is
    for (``unknown``: a cookie of an object that no longer exists, or not the agent's)."""
    out = []
    for line in ofproto_trace.splitlines():
        out.append(line)
        head, sep, cookie = line.rpartition(", cookie ")
        if sep and head.lstrip()[:1].isdigit():
            try:
                value = int(cookie.strip(), 16)
            except ValueError:
                continue
            indent = " " * (line.find(". ") + 2)  # where the flow's actions are written
            out.append(f"{indent}[{labels.get(value, 'unknown to sdnagent')}]")
    return "\n".join(out)
