"""Mirroring intent and its rules, in one place for tapctl and the agent.

Everything here is pure: parsers turn an operator's strings into values, and
the ``new_*``/``check_*`` functions judge a change against the whole current
intent.  They raise :class:`IntentError`, whose text is the one line a person
sees, naming the field and what is allowed.  The tapdb layer calls them inside
the writing transaction, so the rules hold for what is actually committed.
"""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from sdnagent import targets

SESSION_PRIORITY = (1, 32766)
RULE_PRIORITY = (1, 16777216)
VNI = (0, 16777215)
PACKET_LENGTH = (64, 8500)
TUNNEL_KEY = (1, 16777215)
PORT = (0, 65535)
VLAN = (0, 4095)
MAX_RULES_PER_DIRECTION = 10
MAX_SOURCES_PER_SESSION = 10
MAX_SESSIONS_PER_SOURCE = 3  # a port, or a vswitch (bridge and VLAN)

DIRECTIONS = ("in", "out", "both")
RULE_DIRECTIONS = ("inbound", "outbound")
ACTIONS = ("accept", "reject")
ETHERTYPES = ("ipv4", "ipv6")
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOL_NUMBERS.items()}
PORT_PROTOCOLS = (6, 17)

# Port and bridge names the agent owns on every host: its tunnel ports, the hook
# patch ports (tpi/tpt and 10 hex digits) and the tap bridge (default name).
# every target, filter and session belongs to a project; tapctl's, unless told otherwise
DEFAULT_PROJECT = "default"
# a project's quotas unless an admin set others (Project.quotas), and the region's cap
PROJECT_QUOTAS = {"sessions": 1000, "targets": 200, "filters": 200}
REGION_SESSIONS = 20000
MAX_SESSIONS_PER_FILTER = 1000
_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
AGENT_PORTS = ("tapgre", "tapvxc", "tapvxlan", "taperspan")
HOOK_PORT_RE = re.compile(r"^tp[it][0-9a-f]{10}$")
TAP_BRIDGE = "brtap"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_IFACE_ID_RE = re.compile(r"^[!-~]{1,255}$")  # printable, no blanks


class IntentError(ValueError):
    """An operator's input breaks a rule; the text names the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class NotFound(IntentError):
    """A named object does not exist."""


class Denied(IntentError):
    """The caller may not do this (a project's member, with the cloud's objects)."""


class Conflict(IntentError):
    """The change collides with what exists: a name or priority taken, an object in use,
    a port that is already the other end."""


# ---------------------------------------------------------------- values


@dataclasses.dataclass(frozen=True, order=True)
class PortRange:
    lo: int
    hi: int

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


@dataclasses.dataclass(frozen=True)
class Rule:
    priority: int
    action: str
    protocol: Optional[int] = None  # None: any IP protocol of the ethertype
    ethertype: str = "ipv4"
    src: Optional[str] = None  # normalised CIDR
    dst: Optional[str] = None
    src_port: Optional[PortRange] = None  # None: any port
    dst_port: Optional[PortRange] = None

    def describe(self) -> str:
        """The rule as one readable line, the way tapctl shows it."""
        parts = [str(self.priority), self.action, protocol_name(self.protocol), self.ethertype]
        for label, value in (("src", self.src), ("dst", self.dst),
                             ("src-port", self.src_port), ("dst-port", self.dst_port)):
            if value is not None:
                parts.append(f"{label} {value}")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class Filter:
    name: str
    inbound: tuple[Rule, ...] = ()  # ascending priority: evaluation order
    outbound: tuple[Rule, ...] = ()
    project: str = DEFAULT_PROJECT

    def rules(self, direction: str) -> tuple[Rule, ...]:
        assert direction in RULE_DIRECTIONS, direction
        return self.inbound if direction == "inbound" else self.outbound

    @functools.cached_property
    def stored_problem(self) -> Optional[tuple[str, str]]:
        """Where and why its stored rules break a rule, or None; judged once per object
        (an agent's passes see the same Filter until one of its rows changes)."""
        for direction in RULE_DIRECTIONS:
            for rule in self.rules(direction):
                try:
                    _check_stored_rule(rule)
                except IntentError as exc:
                    return f"filter {self.name} {direction} rule {rule.priority}", str(exc)
        return None


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    type: str
    tunnel_key: int
    iface_id: Optional[str] = None  # type port
    chassis: Optional[str] = None  # type nic
    nic: Optional[str] = None  # type nic
    remote_ip: Optional[str] = None  # types vxlan and erspan
    enabled: bool = False
    status: tuple[tuple[str, str], ...] = ()
    options: tuple[tuple[str, str], ...] = ()  # what else its kind keeps, sorted
    project: str = DEFAULT_PROJECT

    def where(self) -> str:
        """Where it is, as people read it (its kind says)."""
        return self.kind.where(self)

    @property
    def kind(self) -> "targets.Kind":
        from sdnagent import targets  # the kinds build Targets: imported when asked
        return targets.kind(self.type)


@dataclasses.dataclass(frozen=True)
class Source:
    type: str  # port or vswitch
    direction: str = "both"
    iface_id: Optional[str] = None
    chassis: Optional[str] = None
    bridge: Optional[str] = None
    vlan: Optional[int] = None
    enabled: bool = True
    status: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """How tapctl names the source within its session."""
        if self.type == "port":
            return self.iface_id or ""
        key = f"{self.chassis}:{self.bridge}"
        return key if self.vlan is None else f"{key}:{self.vlan}"


@dataclasses.dataclass(frozen=True)
class Session:
    name: str
    priority: int
    vni: int
    target: str
    filter: Optional[str] = None
    packet_length: Optional[int] = None
    enabled: bool = False
    sources: tuple[Source, ...] = ()
    project: str = DEFAULT_PROJECT
    # the controls (sdnagent.controls): caps per chassis, sampling one connection in
    # ``sample``, and the end (ms since the epoch, 0: none) with why the session stopped
    max_pps: Optional[int] = None
    max_kbps: Optional[int] = None
    sample: Optional[int] = None
    ends_at: int = 0
    stop_reason: Optional[str] = None

    @property
    def controlled(self) -> bool:
        """Whether its copies pass a sample or a cap on their way to the target."""
        return bool(self.sample or self.max_pps or self.max_kbps)


@dataclasses.dataclass(frozen=True)
class Intent:
    """A consistent view of the whole tapdb, keyed by name."""

    targets: Mapping[str, Target] = dataclasses.field(default_factory=dict)
    filters: Mapping[str, Filter] = dataclasses.field(default_factory=dict)
    sessions: Mapping[str, Session] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("targets", "filters", "sessions"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @classmethod
    def of(cls, targets: Iterable[Target] = (), filters: Iterable[Filter] = (),
           sessions: Iterable[Session] = ()) -> "Intent":
        return cls({t.name: t for t in targets}, {f.name: f for f in filters},
                   {s.name: s for s in sessions})

    def target(self, name: str) -> Target:
        return _get(self.targets, "target", name)

    def filter(self, name: str) -> Filter:
        return _get(self.filters, "filter", name)

    def session(self, name: str) -> Session:
        return _get(self.sessions, "session", name)

    def sessions_using(self, attr: str, name: str) -> list[str]:
        return sorted(s.name for s in self.sessions.values() if getattr(s, attr) == name)

    def sessions_of_port(self, iface_id: str) -> list[str]:
        return self.sessions_of("port", iface_id)

    def sessions_of(self, source_type: str, key: str) -> list[str]:
        """The sessions that have this source (a port's iface-id or a vswitch's key)."""
        return sorted(s.name for s in self.sessions.values()
                      if any(src.type == source_type and src.key == key for src in s.sources))


def _get(table: Mapping, kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        raise NotFound(kind, f"no {kind} named {name!r}") from None


# ---------------------------------------------------------------- parsers


def parse_int(field: str, text: object, bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    try:
        value = int(str(text), 10)
    except ValueError:
        raise IntentError(field, f"{text!r} is not an integer; allowed {lo}..{hi}") from None
    if not lo <= value <= hi:
        raise IntentError(field, f"{value} is out of range; allowed {lo}..{hi}")
    return value


def parse_project(text: str) -> str:
    if not _PROJECT_RE.match(text or ""):
        raise IntentError("project", f"{text!r} is not allowed; use up to 64 letters, digits "
                          "and _.- (starting with a letter or digit)")
    return text


def parse_name(kind: str, text: str) -> str:
    if not _NAME_RE.match(text or ""):
        raise IntentError(f"{kind} name", f"{text!r} is not allowed; use 1 to 64 letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")
    return text


def parse_choice(field: str, text: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    value = (text or "").lower()
    if value not in choices:
        raise IntentError(field, f"{text!r} is not allowed; use one of {', '.join(choices)}")
    return value


def parse_iface_id(field: str, text: str) -> str:
    if not _IFACE_ID_RE.match(text or ""):
        raise IntentError(field, f"{text!r} is not an iface-id; use 1 to 255 printable "
                          "characters without blanks")
    return text


def parse_protocol(text: str) -> Optional[int]:
    """'all' -> None, names -> IP protocol numbers, numbers 0..255 as given."""
    value = (text or "").lower()
    if value == "all":
        return None
    if value in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[value]
    if value.isdigit():
        return parse_int("protocol", value, (0, 255))
    raise IntentError("protocol", f"{text!r} is not allowed; use all, tcp, udp, icmp, icmpv6 "
                      "or an IP protocol number 0..255")


def protocol_name(number: Optional[int]) -> str:
    return "all" if number is None else PROTOCOL_NAMES.get(number, str(number))


_RANGE_RE = re.compile(r"^(-?\d+)(?:\s*[/-]\s*(-?\d+))?$")


def parse_port_range(field: str, text: str) -> Optional[PortRange]:
    """Accept 1234, 1000-2000, 1/200; -1/-1 and all mean any port (None)."""
    value = (text or "").strip().lower()
    if value in ("all", "-1/-1", "-1"):
        return None
    m = _RANGE_RE.match(value)
    if not m:
        raise IntentError(field, f"{text!r} is not a port range; use PORT, MIN-MAX, MIN/MAX "
                          "(0..65535) or -1/-1 or all for any port")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    for port in (lo, hi):
        if not PORT[0] <= port <= PORT[1]:
            raise IntentError(field, f"port {port} in {text!r} is out of range; allowed 0..65535, "
                              "or -1/-1 for any port")
    if lo > hi:
        raise IntentError(field, f"{text!r} has its minimum {lo} above its maximum {hi}")
    return PortRange(lo, hi)


def parse_cidr(field: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR or a bare address (a host route); host bits must be clear."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise IntentError(field, f"{text!r} is not a CIDR; use ADDRESS/PREFIX such as "
                          "192.168.0.0/24 or 2001:db8::/64") from None
    if net.network_address != ipaddress.ip_interface(text.strip()).ip and "/" in text:
        raise IntentError(field, f"{text!r} has host bits set; did you mean {net}?")
    return net


def parse_ip(field: str, text: str) -> str:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise IntentError(field, f"{text!r} is not an IP address; use an IPv4 or IPv6 "
                          "unicast address") from None
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise IntentError(field, f"{text!r} is not a unicast address; use an IPv4 or IPv6 "
                          "unicast address")
    return str(addr)


def parse_nic(text: str) -> tuple[str, str]:
    """CHASSIS:IFNAME."""
    chassis, sep, ifname = (text or "").rpartition(":")
    if not sep or not _HOST_RE.match(chassis) or not _IFNAME_RE.match(ifname):
        raise IntentError("nic", f"{text!r} is not CHASSIS:IFNAME; the chassis is a host name "
                          "and IFNAME 1 to 15 letters, digits, '.', '_' or '-'")
    return chassis, ifname


def reserved_port(name: str, tap_bridge: str = TAP_BRIDGE) -> Optional[str]:
    """Why ``name`` cannot be a NIC target's interface, or None."""
    if name in AGENT_PORTS or HOOK_PORT_RE.match(name):
        return (f"{name!r} is reserved for the agent's own ports ({', '.join(AGENT_PORTS)}, "
                "tpi<hex> and tpt<hex>); use the name of a host NIC")
    if name == tap_bridge:
        return f"{name!r} is the agent's tap bridge; use the name of a host NIC"
    return None


def parse_vswitch(text: str) -> tuple[str, str, Optional[int]]:
    """CHASSIS:BRIDGE[:VLAN]."""
    parts = (text or "").split(":")
    if len(parts) not in (2, 3) or not _HOST_RE.match(parts[0]) or not _IFNAME_RE.match(parts[1]):
        raise IntentError("vswitch", f"{text!r} is not CHASSIS:BRIDGE[:VLAN]; the chassis is a "
                          "host name, BRIDGE 1 to 15 letters, digits, '.', '_' or '-', "
                          "VLAN 0..4095")
    vlan = parse_int("vlan", parts[2], VLAN) if len(parts) == 3 else None
    return parts[0], parts[1], vlan


# ---------------------------------------------------------------- rules


def new_target(intent: Intent, name: str, *, enabled: bool = False,
               tunnel_ips: Mapping[str, str] = {}, **where: Optional[str]) -> Target:
    """A new target of the kind named by the one kind given in ``where``
    (``port="vm-164"``, ``nic=...``, ``vxlan=...``: its tapctl option), with the other
    options that kind takes (``erspan="10.0.0.9", version="2"``); ``tunnel_ips``: the
    registered chassis's tunnel addresses, by chassis."""
    from sdnagent import targets
    name = parse_name("target", name)
    if name in intent.targets:
        raise Conflict("target name", f"a target named {name!r} already exists")
    given = [(k, v) for k, v in where.items() if v is not None and k in targets.KINDS]
    extras = {o.dest: o for k in targets.KINDS.values() for o in k.extra}
    unknown = [k for k in where if k not in targets.KINDS and k not in extras]
    if len(given) != 1 or unknown:
        options = [f"{k.option} {k.metavar}" for k in targets.KINDS.values()]
        raise IntentError("target type", "give exactly one of " + ", ".join(options[:-1])
                          + " or " + options[-1])
    (kind_name, value), = given
    kind = targets.kind(kind_name)
    theirs = {o.dest for o in kind.extra}
    for dest, text in where.items():
        if dest in extras and text is not None and dest not in theirs:
            takers = [k.option for k in targets.KINDS.values() if extras[dest] in k.extra]
            raise IntentError(extras[dest].flag.lstrip("-"), f"{extras[dest].flag} is for "
                              f"{' and '.join(takers)} targets only, not {kind.option}")
    key = free_number("tunnel key", (t.tunnel_key for t in intent.targets.values()),
                      TUNNEL_KEY)
    return kind.new(intent, name, key, value, enabled, tunnel_ips,
                    {d: where.get(d) for d in theirs})


def collector_at_chassis(ip: str, tunnel_ips: Mapping[str, str]) -> Optional[str]:
    """Why copies must not go to ``ip`` by VXLAN, or None: a hypervisor's own switch would
    take them there (OVN or another agent on UDP 4789 reads the VNI as its own keys)."""
    addr = ipaddress.ip_address(ip)
    for chassis, tunnel_ip in sorted(tunnel_ips.items()):
        try:
            same = ipaddress.ip_address(tunnel_ip) == addr
        except ValueError:
            continue
        if same:
            return (f"{ip} is the tunnel address of chassis {chassis}, whose switch would take "
                    "the copies; give a collector's own address")
    return None


def new_filter(intent: Intent, name: str) -> Filter:
    name = parse_name("filter", name)
    if name in intent.filters:
        raise Conflict("filter name", f"a filter named {name!r} already exists")
    return Filter(name)


def new_rule(flt: Filter, direction: str, *, priority: str, action: str,
             protocol: str = "all", ethertype: Optional[str] = None,
             src: Optional[str] = None, dst: Optional[str] = None,
             src_port: Optional[str] = None, dst_port: Optional[str] = None) -> Rule:
    """A rule for ``flt``'s ``direction``; ethertype defaults to the CIDRs' family, else ipv4."""
    direction = parse_choice("direction", direction, RULE_DIRECTIONS)
    prio = parse_int("priority", priority, RULE_PRIORITY)
    act = parse_choice("action", action, ACTIONS)
    proto = parse_protocol(protocol)
    nets = {f: parse_cidr(f, v) for f, v in (("src", src), ("dst", dst)) if v is not None}
    if ethertype is not None:
        etype = parse_choice("ethertype", ethertype, ETHERTYPES)
    elif nets:
        etype = "ipv%d" % next(iter(nets.values())).version
    else:
        etype = "ipv6" if proto == 58 else "ipv4"
    for field, net in nets.items():
        if "ipv%d" % net.version != etype:
            raise IntentError(field, f"{net} is an IPv{net.version} CIDR but the rule's ethertype "
                              f"is {etype}; use an {etype} CIDR")
    if proto == 1 and etype == "ipv6":
        raise IntentError("protocol", "icmp is IPv4 only; use icmpv6 for ethertype ipv6")
    if proto == 58 and etype == "ipv4":
        raise IntentError("protocol", "icmpv6 is IPv6 only; use icmp for ethertype ipv4")
    ranges = {f: parse_port_range(f, v) for f, v in (("src-port", src_port), ("dst-port", dst_port))
              if v is not None}
    for field, rng in ranges.items():
        if rng is not None and proto not in PORT_PROTOCOLS:
            raise IntentError(field, f"port ranges need protocol tcp or udp, not "
                              f"{protocol_name(proto)}")
    rules = flt.rules(direction)
    for r in rules:
        if r.priority == prio:
            raise Conflict("priority", f"filter {flt.name!r} already has an {direction} rule "
                              f"with priority {prio}; priorities are unique per filter direction")
    if len(rules) >= MAX_RULES_PER_DIRECTION:
        raise IntentError("rules", f"filter {flt.name!r} already has {len(rules)} {direction} "
                          f"rules; allowed at most {MAX_RULES_PER_DIRECTION} per direction")
    return Rule(prio, act, proto, etype,
                str(nets["src"]) if "src" in nets else None,
                str(nets["dst"]) if "dst" in nets else None,
                ranges.get("src-port"), ranges.get("dst-port"))


def check_stored(intent: Intent, session: Session) -> None:
    """Judge what another OVSDB client may have written, for the agent.

    tapctl never writes these faults; raising here lets the agent set one
    session aside with a status a person can act on, instead of failing all.
    """
    target = intent.target(session.target)
    try:
        check_stored_target(target)
    except IntentError as exc:
        raise IntentError(f"target {target.name}", str(exc)) from None
    target.kind.check_session(target, session)
    if session.filter is None:
        return
    problem = intent.filter(session.filter).stored_problem
    if problem is not None:
        raise IntentError(*problem)


def check_stored_target(target: Target) -> None:
    """A stored target has the fields of its kind, each well formed."""
    from sdnagent import targets
    if target.type not in targets.KINDS:
        parse_choice("type", target.type, targets.KINDS)
    targets.kind(target.type).check_stored(target)


def check_stored_source(source: Source) -> None:
    """A stored source has the fields of its type, each well formed."""
    if source.type == "port":
        parse_iface_id("iface_id", source.iface_id or "")
        parse_choice("direction", source.direction, DIRECTIONS)
    else:
        parse_vswitch(f"{source.chassis or ''}:{source.bridge or ''}")


def check_chassis(name: str, tunnel_ip: str) -> None:
    """A Chassis row an agent (or anyone) wrote: a host name and a unicast tunnel IP."""
    if not _HOST_RE.match(name or ""):
        raise IntentError("name", f"{name!r} is not a host name")
    parse_ip("tunnel_ip", tunnel_ip or "")


def _check_stored_rule(rule: Rule) -> None:
    parse_choice("action", rule.action, ACTIONS)
    parse_choice("ethertype", rule.ethertype, ETHERTYPES)
    for field, cidr in (("src", rule.src), ("dst", rule.dst)):
        if cidr is not None:
            net = parse_cidr(field, cidr)
            if f"ipv{net.version}" != rule.ethertype:
                raise IntentError(field, f"{net} is not an {rule.ethertype} CIDR")
    for field, rng in (("src-port", rule.src_port), ("dst-port", rule.dst_port)):
        if rng is not None:
            if rule.protocol not in PORT_PROTOCOLS:
                raise IntentError(field, "port ranges need protocol tcp or udp")
            parse_port_range(field, f"{rng.lo}-{rng.hi}")


def find_rule(flt: Filter, direction: str, priority: str) -> Rule:
    direction = parse_choice("direction", direction, RULE_DIRECTIONS)
    prio = parse_int("priority", priority, RULE_PRIORITY)
    for r in flt.rules(direction):
        if r.priority == prio:
            return r
    raise NotFound("priority", f"filter {flt.name!r} has no {direction} rule with priority {prio}")


def new_session(intent: Intent, name: str, *, target: str, priority: str,
                filter: Optional[str] = None, vni: Optional[str] = None,
                packet_length: Optional[str] = None, enabled: bool = False) -> Session:
    name = parse_name("session", name)
    if name in intent.sessions:
        raise Conflict("session name", f"a session named {name!r} already exists")
    prio = parse_int("priority", priority, SESSION_PRIORITY)
    for s in intent.sessions.values():
        if s.priority == prio:
            raise Conflict("priority", f"session {s.name!r} already has priority {prio}; "
                              "session priorities are unique")
    if vni is None:
        vni_value = free_number("vni", (s.vni for s in intent.sessions.values()), (1, VNI[1]))
    else:
        vni_value = parse_int("vni", vni, VNI)
    length = None if packet_length is None else parse_int("packet-length", packet_length,
                                                          PACKET_LENGTH)
    tgt = intent.target(target)
    if filter is not None:
        intent.filter(filter)
    using = intent.sessions_using("target", target)
    if len(using) >= tgt.kind.max_sessions:
        raise IntentError("target", f"target {target!r} ({tgt.type}) already has {len(using)} "
                          f"sessions; allowed at most {tgt.kind.max_sessions} per {tgt.type} "
                          "target")
    session = Session(name, prio, vni_value, target, filter, length, enabled)
    tgt.kind.check_session(tgt, session)
    return session


def new_source(intent: Intent, session: str, *, port: Optional[str] = None,
               direction: Optional[str] = None, vswitch: Optional[str] = None) -> Source:
    sess = intent.session(session)
    if (port is None) == (vswitch is None):
        raise IntentError("source", "give exactly one of --port IFACE_ID or "
                          "--vswitch CHASSIS:BRIDGE[:VLAN]")
    if port is not None:
        iface = parse_iface_id("port", port)
        src = Source("port", parse_choice("direction", direction or "both", DIRECTIONS),
                     iface_id=iface)
        for t in intent.targets.values():
            if t.kind.iface(t) == iface:
                raise Conflict("port", f"iface {iface} is target {t.name!r}; a port cannot be "
                                  "both a source and a target")
    else:
        if direction is not None:
            raise IntentError("direction", "applies to --port sources only; a --vswitch source "
                              "takes everything the bridge (or VLAN) carries")
        chassis, bridge, vlan = parse_vswitch(vswitch)
        if bridge == TAP_BRIDGE:
            raise IntentError("vswitch", f"{bridge} is the agent's tap bridge, which carries "
                              "mirrored copies; use an integration bridge such as br-int")
        src = Source("vswitch", "both", chassis=chassis, bridge=bridge, vlan=vlan)
    using = intent.sessions_of(src.type, src.key)
    if sess.name not in using and len(using) >= MAX_SESSIONS_PER_SOURCE:
        what = f"iface {src.key}" if src.type == "port" else src.key
        raise IntentError(src.type, f"{what} is already a source of {len(using)} sessions "
                          f"({', '.join(using)}); allowed at most {MAX_SESSIONS_PER_SOURCE}")
    for existing in sess.sources:
        if existing.key == src.key:
            raise Conflict("source", f"{src.key} is already a source of session {sess.name!r}")
    if len(sess.sources) >= MAX_SOURCES_PER_SESSION:
        raise IntentError("sources", f"session {sess.name!r} already has {len(sess.sources)} "
                          f"sources; allowed at most {MAX_SOURCES_PER_SESSION}")
    return src


def find_source(intent: Intent, session: str, key: str) -> Source:
    """A source by iface-id, else by CHASSIS:BRIDGE[:VLAN]."""
    sess = intent.session(session)
    for src in sess.sources:
        if src.key == key:
            return src
    raise NotFound("source", f"session {sess.name!r} has no source {key!r}")


def check_del(intent: Intent, kind: str, name: str) -> Target | Filter | Session:
    """A target or filter may go only when no session uses it; a session always may."""
    obj = getattr(intent, kind)(name)
    using = intent.sessions_using(kind, name) if kind != "session" else []
    if using:
        raise Conflict(kind, f"{kind} {name!r} is used by session(s) {', '.join(using)}; "
                          "delete those sessions first")
    return obj


def free_number(field: str, used: Iterable[int], bounds: tuple[int, int]) -> int:
    """The lowest value in ``bounds`` that ``used`` does not hold."""
    taken = set(used)
    for value in range(bounds[0], bounds[1] + 1):
        if value not in taken:
            return value
    raise IntentError(field, f"every value in {bounds[0]}..{bounds[1]} is in use")
