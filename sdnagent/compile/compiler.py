"""Intent + this host's inventory -> desired hooks, tunnel ports, flows, status.

Two pure steps, because flows need the OpenFlow port numbers that the switch
assigns only once the ports exist:

1. :func:`plan_ports`: which Mirrors (with their patch pairs), tunnel ports
   and host NICs brtap needs, and the status of each local source and target.
2. :func:`plan_flows`: brtap's flows, given the port plan and ofports.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Optional

from sdnagent import model, mtu
from sdnagent.compile import hooks, portrange
from sdnagent.compile.delivery import (  # noqa: F401 (the compiler's words, also used by others)
    ACTIVE, CHASSIS_VXLAN_UDP_PORT, ERSPAN_PORT, SLOTS, TUNNEL_PORT, VXLAN_TARGET_PORT,
    VXLAN_TARGET_UDP_PORT, Delivery, Leg, Status, TunnelPort, chassis_tunnel)
from sdnagent.compile.flows import Flow, Meter, cookie
from sdnagent.compile.pipeline import (FILTER_TABLES, REJECTED, RULE_SLOTS, TOWARD_PORT,
                                       filter_band, flow)

GRE_PROTO, UDP_PROTO = 47, 17
assert set(model.AGENT_PORTS) == {*TUNNEL_PORT.values(), VXLAN_TARGET_PORT, ERSPAN_PORT}
ETH_TYPE = {"ipv4": 0x0800, "ipv6": 0x86DD}
MAX_SESSIONS_PER_HOOK = model.MAX_SESSIONS_PER_SOURCE


@dataclasses.dataclass(frozen=True)
class LocalPort:
    """An interface with an iface-id on one of this host's bridges."""

    iface_id: str
    bridge: str
    port: str
    ofport: int = -1
    mac: str = ""  # Interface external_ids:attached-mac, as the cloud set it


@dataclasses.dataclass(frozen=True)
class Inventory:
    """What this host has, read from the local switch and from tapdb."""

    chassis: str
    encap: str = "gre"
    integration_bridges: tuple[str, ...] = ("br-int",)
    tap_bridge: str = "brtap"
    ports: Mapping[str, LocalPort] = dataclasses.field(default_factory=dict)  # by iface-id
    bridges: frozenset[str] = frozenset()
    foreign_mirrors: Mapping[str, int] = dataclasses.field(default_factory=dict)  # by bridge
    # our Mirrors on the switch now and the names of the ports each selects
    hook_members: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    chassis_ips: Mapping[str, str] = dataclasses.field(default_factory=dict)  # every chassis
    bindings: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    brtap_ofports: Mapping[str, int] = dataclasses.field(default_factory=dict)  # by port name
    brtap_errors: Mapping[str, str] = dataclasses.field(default_factory=dict)  # by port name
    port_bridges: Mapping[str, str] = dataclasses.field(default_factory=dict)  # every port's bridge
    local_ip: str = ""  # this chassis's tunnel address
    rejected_chassis: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> why
    # other owners' tunnel ports on this host: (interface, type, options:dst_port)
    foreign_tunnels: tuple[tuple[str, str, str], ...] = ()
    mtu: Optional[int] = None  # the underlay's MTU at this chassis, when known

    @classmethod
    def as_tapdb_sees(cls, chassis: str, bindings: Mapping[str, tuple[str, ...]],
                      registered: Mapping[str, tuple[str, str, Optional[int]]]
                      ) -> "Inventory":
        """``chassis`` as a reader of tapdb sees it (tapctl): ``registered`` maps each
        chassis to its tunnel address, encap and MTU; a port bound there alone is
        taken to be on its brtap."""
        tap = model.TAP_BRIDGE
        me = registered.get(chassis, ("", "vxlan", None))
        return cls(chassis=chassis, encap=me[1], tap_bridge=tap,
                   ports={i: LocalPort(i, tap, i) for i, on in bindings.items()
                          if on == (chassis,)},
                   chassis_ips={n: c[0] for n, c in registered.items()}, bindings=bindings,
                   local_ip=me[0], mtu=me[2])


@dataclasses.dataclass(frozen=True)
class PortPlan:
    hooks: tuple[hooks.Hook, ...]
    tunnels: tuple[TunnelPort, ...]
    nics: tuple[str, ...]  # host NICs that belong on brtap
    # (session, source key) -> its feeds on this host (hooks.Feed names)
    source_feeds: Mapping[tuple[str, str], tuple[str, ...]]
    deliveries: Mapping[str, Delivery]  # by session name, for sessions with local hooks
    source_status: Mapping[tuple[str, str], Status]
    target_status: Mapping[str, Status]
    local_targets: Mapping[str, str]  # target name -> brtap port, targets hosted here
    # target name -> the tunnel addresses of the chassis expected to send to it: those
    # holding an enabled source of an enabled session to it
    senders: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # why this chassis takes nothing from its tunnel (another owner's port collides), or ""
    tunnel_problem: str = ""
    feeds: Mapping[str, hooks.Feed] = dataclasses.field(default_factory=dict)  # by name


def _source_wants(src: model.Source, inv: Inventory
                  ) -> tuple[list[hooks.Want], Optional[Status]]:
    """The feeds a source asks of this host (none when it is elsewhere), or why not."""
    if src.type == "vswitch":
        if src.chassis != inv.chassis:
            return [], None
        if src.bridge not in inv.integration_bridges:
            # any other bridge may carry this chassis's own tunnels or copies: a loop
            return [], Status("error", f"bridge {src.bridge} is not an integration bridge of "
                              f"chassis {inv.chassis} ({', '.join(inv.integration_bridges)}); "
                              "vswitch sources can only be integration bridges")
        if src.bridge not in inv.bridges:
            return [], Status("error", f"bridge {src.bridge} not found on chassis {inv.chassis}")
        return [hooks.bridge_want(src.key, src.bridge or "", src.vlan)], None
    local = inv.ports.get(src.iface_id or "")
    if local is None or local.bridge not in inv.integration_bridges:
        return [], None
    return hooks.port_wants(local.iface_id, local.bridge, local.port, src.direction or ""), None


def concerning(intent: model.Intent, chassis: str, local_ifaces: frozenset[str]) -> model.Intent:
    """The part of ``intent`` that can change what this chassis does.

    An agent's view of sources is already narrowed to its own (conditional
    monitoring), so the sessions that matter are those with a source in view;
    with them their targets and filters, and the targets that may live here.
    Planning this gives what planning the whole intent gives, and comparing it
    with the last pass's tells whether a change elsewhere concerns this chassis.
    """
    sessions = [s for s in intent.sessions.values() if s.sources]
    wanted = {s.target for s in sessions}
    targets = [t for t in intent.targets.values()
               if t.name in wanted or t.kind.lives_on(t, chassis, local_ifaces)]
    filters = {s.filter for s in sessions if s.filter is not None}
    return model.Intent.of(targets, [intent.filters[f] for f in sorted(filters)
                                     if f in intent.filters], sessions)


def plan_ports(intent: model.Intent, inv: Inventory) -> PortPlan:
    deliveries: dict[str, Delivery] = {}
    source_feeds: dict[tuple[str, str], tuple[str, ...]] = {}
    source_status: dict[tuple[str, str], Status] = {}
    target_status: dict[str, Status] = {}
    wanted: dict[str, hooks.Want] = {}
    feed_sessions: dict[str, list[str]] = {}  # in priority order
    for sess in sorted(intent.sessions.values(), key=lambda s: s.priority):
        target = intent.targets.get(sess.target)
        try:
            model.check_stored(intent, sess)
            broken = None
        except model.IntentError as exc:
            broken = Status("error", f"session {sess.name}: {exc}")
        for src in sess.sources:
            try:
                model.check_stored_source(src)
            except model.IntentError as exc:
                if src.type == "vswitch" and src.chassis != inv.chassis:
                    continue
                source_status[sess.name, src.key] = Status(
                    "error", f"session {sess.name}: source {src.key}: {exc}")
                continue
            wants, problem = _source_wants(src, inv)
            if problem is not None:
                source_status[sess.name, src.key] = problem
            if not wants:
                continue
            if not (sess.enabled and src.enabled and target is not None and target.enabled):
                why = ("the session is disabled" if not sess.enabled else
                       "the source is disabled" if not src.enabled else
                       f"target {sess.target} is disabled")
                source_status[sess.name, src.key] = Status("disabled", why)
                continue
            if broken is not None:
                source_status[sess.name, src.key] = broken
                continue
            route = target.kind.deliver(target, sess, inv)
            if isinstance(route, Status):
                source_status[sess.name, src.key] = route
                continue
            failed = sorted({leg.port for leg in route.legs if not route.local
                             and inv.brtap_ofports.get(leg.port) == -1})
            if failed:  # another owner's flow-based port of that type, most likely
                source_status[sess.name, src.key] = Status(
                    "error", f"target {target.name}: " + _not_added(f"port {failed[0]}",
                                                                    failed[0], inv))
                continue
            crowded = [w for w in wants
                       if len(feed_sessions.get(w.feed, ())) >= MAX_SESSIONS_PER_HOOK]
            if crowded:  # tapctl prevents it; another OVSDB client may not have
                source_status[sess.name, src.key] = Status(
                    "error", f"{src.key} is in more than {MAX_SESSIONS_PER_HOOK} sessions; only "
                    f"the {MAX_SESSIONS_PER_HOOK} of highest priority mirror it")
                continue
            deliveries[sess.name] = route
            for w in wants:
                wanted.setdefault(w.feed, w)
                feed_sessions.setdefault(w.feed, []).append(sess.name)
            source_feeds[sess.name, src.key] = tuple(w.feed for w in wants)
            warn = too_big(sess, route, inv)
            source_status[sess.name, src.key] = Status("active", warn) if warn else ACTIVE

    # the hooks, shared by many sources on a bridge (at most a few Mirrors a bridge)
    hook_plan = hooks.assign(
        {name: (w, tuple(feed_sessions[name])) for name, w in wanted.items()},
        bridges=inv.integration_bridges,
        ofports={i: p.ofport for i, p in inv.ports.items()},
        macs={i: p.mac for i, p in inv.ports.items()},
        installed=inv.hook_members, foreign=inv.foreign_mirrors)
    for key, names in list(source_feeds.items()):
        lost = [n for n in names if n in hook_plan.problems]
        if lost:
            why = hook_plan.problems[lost[0]]
            source_status[key] = Status("pending" if why.startswith("waiting") else "error", why)
        source_feeds[key] = tuple(n for n in names if n in hook_plan.feeds)

    local_targets: dict[str, str] = {}
    nics = []
    clash = tunnel_clash(inv)
    for t in intent.targets.values():
        try:
            here = t.kind.local(t, inv)
            if not isinstance(here, Status):
                model.check_stored_target(t)
        except model.IntentError as exc:
            if t.kind.lives_on(t, inv.chassis, frozenset(inv.ports)):
                target_status[t.name] = Status("error", f"target {t.name}: {exc}")
            continue
        if isinstance(here, Status):
            target_status[t.name] = here
            continue
        if here is None:
            continue
        local_targets[t.name] = here
        if t.kind.on_brtap:
            nics.append(here)
        if t.kind.on_brtap and inv.brtap_ofports.get(here) == -1:
            target_status[t.name] = Status("error", _not_added(f"{t.type} {here}", here, inv))
        elif clash and t.enabled:
            target_status[t.name] = Status("error", f"target {t.name}: {clash}")
        else:
            target_status[t.name] = (ACTIVE if t.enabled
                                     else Status("disabled", "the target is disabled"))

    senders: dict[str, set[str]] = {}
    for sess in intent.sessions.values():
        if sess.target not in local_targets or not sess.enabled:
            continue
        for src in sess.sources:
            if not src.enabled:
                continue
            hosts = ((src.chassis,) if src.type == "vswitch"
                     else inv.bindings.get(src.iface_id or "", ()))
            for c in hosts:
                if c and c != inv.chassis and c in inv.chassis_ips:
                    senders.setdefault(sess.target, set()).add(inv.chassis_ips[c])

    tunnels = {chassis_tunnel(inv.encap).name: chassis_tunnel(inv.encap)}
    for d in deliveries.values():
        for tp in d.tunnels:
            assert tunnels.setdefault(tp.name, tp) == tp, (tp, tunnels[tp.name])
    tunnels_ = tuple(tunnels[n] for n in sorted(tunnels))
    return PortPlan(hook_plan.hooks, tunnels_, tuple(sorted(set(nics))), source_feeds,
                    deliveries, source_status, target_status, local_targets,
                    {t: tuple(sorted(ips)) for t, ips in sorted(senders.items())}, clash or "",
                    hook_plan.feeds)


def _not_added(what: str, port: str, inv: Inventory) -> str:
    """Why a port the agent put on brtap has no number: what the switch said of it."""
    why = inv.brtap_errors.get(port, "")
    return (f"{what} could not be added to {inv.tap_bridge} on chassis {inv.chassis}"
            + (f": {why}" if why else ""))


def _most_added(route: Delivery) -> Optional[tuple[int, Leg]]:
    """The tunnelled leg of ``route`` whose encapsulation adds the most, with what it
    adds; None when nothing is tunnelled."""
    return max(((mtu.overhead(leg.encap, leg.dst), leg) for leg in route.legs if leg.encap),
               key=lambda found: found[0], default=None)


def capped(status: Status, sess: model.Session, chassis: str) -> Status:
    """An active source's status while its session's caps drop copies on ``chassis``."""
    caps = " and ".join(c for c in (f"{sess.max_pps} packets/s" if sess.max_pps else "",
                                    f"{sess.max_kbps} kbit/s" if sess.max_kbps else "") if c)
    why = (f"capped: copies over {caps} were dropped on chassis {chassis} in the last "
           "10 s (tapctl stats counts them)")
    return Status(status.state, f"{status.reason}; {why}" if status.reason else why)


def too_big(sess: model.Session, route: Delivery, inv: Inventory) -> Optional[str]:
    """A warning when copies of ``sess`` can outgrow this chassis's underlay MTU on
    one of the route's legs (the one that adds most), else None."""
    worst = _most_added(route)
    if inv.mtu is None or worst is None:
        return None
    return mtu.warning(sess.packet_length, worst[1].encap, worst[1].dst, inv.mtu, inv.chassis)


def mtu_warning(sess: model.Session, target: model.Target,
                registered: Mapping[str, tuple[str, str, Optional[int]]],
                bindings: Mapping[str, tuple[str, ...]],
                senders: Optional[Iterable[str]] = None) -> Optional[str]:
    """What tapctl says when a session is written whose copies can outgrow the underlay
    of a chassis that may send them (``senders``, else every registered chassis with a
    known MTU): the agent's warning, for the chassis where it is worst.  One chassis is
    judged for each MTU, encapsulation and address family, and the target's own hosts
    are left out (they deliver locally), so a cloud of 10,000 chassis costs a few."""
    names = sorted(set(registered if senders is None else senders) & set(registered))
    hosts = set(target.kind.hosts(target, bindings))
    judged: dict[tuple, str] = {}
    for name in names:
        ip, encap, mtu_here = registered[name]
        if mtu_here is None or name in hosts:
            continue
        try:
            family = ipaddress.ip_address(ip).version
        except ValueError:
            continue
        judged.setdefault((mtu_here, encap, family), name)
    found = []
    for name in judged.values():
        inv = Inventory.as_tapdb_sees(name, bindings, registered)
        route = target.kind.deliver(target, sess, inv)
        if isinstance(route, Delivery):
            warn = too_big(sess, route, inv)
            if warn:  # too_big found a tunnelled leg
                added, _ = _most_added(route)  # type: ignore[misc]
                found.append((added - registered[name][2], warn))
    return max(found)[1] if found else None


def tunnel_clash(inv: Inventory) -> Optional[str]:
    """Why OVS could confuse the chassis tunnel with another owner's port here, or None.

    OVS hands a received tunnel packet to the most specific port of its datapath
    port: all GRE ports share one, so a GRE port with a fixed remote address (an
    OpenStack tunnel, an OVN GRE mirror) takes every GRE packet from that address,
    ours included, and its peers' GRE reaches ours when its own does not match. A
    VXLAN port's datapath port is its UDP port: only another VXLAN port on ours
    can take or bring traffic."""
    ours = chassis_tunnel(inv.encap)
    udp = dict(ours.options).get("dst_port", "")
    for name, type_, dst_port in inv.foreign_tunnels:
        if type_ != ours.type or (type_ == "vxlan" and (dst_port or "4789") != udp):
            continue
        where = f" on UDP {udp}" if udp else ""
        return (f"port {name} of another owner on chassis {inv.chassis} is a {type_} "
                f"tunnel{where} like the chassis tunnel {ours.name}, and OVS could hand either "
                "the other's packets; nothing is taken from the tunnel"
                + ("; use [tunnel] encap = vxlan" if ours.type == "gre" else
                   f"; UDP {udp} is sdnagent's"))
    return None


# ---------------------------------------------------------------- flows


def _ip_field(ip: str) -> str:
    return "ipv6" if ipaddress.ip_address(ip).version == 6 else "ipv4"


def _cidr_match(cidr: str) -> object:
    net = ipaddress.ip_network(cidr)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return (str(net.network_address), str(net.netmask))


def rule_parts(rule: model.Rule) -> tuple[dict, list[list[dict]]]:
    """A rule as OpenFlow sees it: the fields every packet it takes has (ethertype,
    protocol, CIDRs) and the alternatives of each port range (one match per prefix)."""
    base: dict = {"eth_type": ETH_TYPE[rule.ethertype]}
    if rule.protocol is not None:
        base["ip_proto"] = rule.protocol
    fam = rule.ethertype
    if rule.src:
        base[f"{fam}_src"] = _cidr_match(rule.src)
    if rule.dst:
        base[f"{fam}_dst"] = _cidr_match(rule.dst)
    l4 = {6: "tcp", 17: "udp"}.get(rule.protocol or -1)
    ranges = []
    for end, rng in (("src", rule.src_port), ("dst", rule.dst_port)):
        values = _range_values(rng) if l4 else [None]
        ranges.append([{} if v is None else {f"{l4}_{end}": v} for v in values])
    return base, ranges


def _range_values(rng: Optional[model.PortRange]) -> list:
    if rng is None:
        return [None]
    return [v if m == portrange.FULL else (v, m) for v, m in portrange.prefixes(rng.lo, rng.hi)
            if m != 0] or [None]


def _own_tunnel_matches(local_ip: str) -> list[dict]:
    """What this chassis's tunnels carry on the underlay: copies it sends (GRE, VXLAN to
    chassis and to vxlan targets) and copies it receives (GRE, VXLAN from chassis)."""
    fam = _ip_field(local_ip)
    base = {"eth_type": ETH_TYPE[fam]}
    out = []
    for end in ("src", "dst"):
        here = {**base, f"{fam}_{end}": local_ip}
        out.append({**here, "ip_proto": GRE_PROTO})
        out.append({**here, "ip_proto": UDP_PROTO, "udp_dst": CHASSIS_VXLAN_UDP_PORT})
    out.append({**base, f"{fam}_src": local_ip, "ip_proto": UDP_PROTO,
                "udp_dst": VXLAN_TARGET_UDP_PORT})
    return out


Feeds = tuple[int, ...]  # reg1 values: the feeds (sources and directions) a rule judges


def conj_id(priority: int, direction: str) -> int:
    """Unique in its filter table: an OpenFlow priority there belongs to one session's
    rule slot, and that slot holds one inbound and one outbound rule."""
    return priority * 2 + (direction == "outbound")


_FILTERS: dict[tuple, tuple[Flow, ...]] = {}  # _session_filter's memo


def _session_filter(*args: object) -> tuple[Flow, ...]:
    """:func:`_session_filter_flows`, memoized until :func:`retain` drops it."""
    found = _FILTERS.get(args)
    if found is None:
        found = _FILTERS[args] = _session_filter_flows(*args)  # type: ignore[arg-type]
    return found


def memo_count() -> int:
    return len(_FILTERS)


def retain(groups: Mapping[str, tuple[Flow, ...]]) -> None:
    """Forget the memoized filter flows of sessions that are not in ``groups`` any more."""
    live = {id(g) for g in groups.values()}
    for args in [a for a, g in _FILTERS.items() if id(g) not in live]:
        del _FILTERS[args]


def _session_filter_flows(session: str, priority: int, filtered: bool,
                          parts: tuple[tuple[str, tuple[model.Rule, ...], Feeds], ...],
                          conjunctive: bool = True, accepted: str = "forward"
                          ) -> tuple[Flow, ...]:
    """One session's flows: for each rule direction (``parts``: the direction, its
    rules, the feeds they judge), its rules in its own priority band, so that they stay
    as they are when other sessions, or their rules, come and go; memoized, so that an
    unchanged session gives the very same flows and a pass compares them by identity.

    A rule takes one flow per combination of feed and port-range prefixes when that is
    few; when two or more of them have several alternatives, a conjunctive match
    instead: one flow per alternative of each (clauses), one ``conj_id`` flow that
    decides and counts, so that they add up instead of multiplying (unless not
    ``conjunctive``: the benchmarks' baseline).  What a session accepts goes to the table
    ``accepted``: its first control, or forward."""
    table, top = filter_band(priority)
    accept = {"actions": (("set_field", "reg0", priority),), "goto": accepted}
    reject = {"actions": (("set_field", "reg2", REJECTED),), "goto": "verdict"}
    by_key: dict[tuple, Flow] = {}

    def put(f: Flow) -> None:
        old = by_key.get(f.key)
        if old is not None:  # an inbound and an outbound clause alike: one flow, both clauses
            assert old.cookie == f.cookie == cookie("clause", session), (old, f)
            f = Flow(f.table, f.priority, f.match, tuple(sorted({*old.actions, *f.actions})),
                     f.cookie)
        by_key[f.key] = f

    for direction, rules, feeds in parts:
        feed_dim = [{"reg1": feed} for feed in feeds]
        if not filtered:
            for m in feed_dim:
                put(flow(table, top, m, kind="session", obj=f"{session}/{direction}", **accept))
            continue
        assert len(rules) <= RULE_SLOTS, "the schema allows at most 10 rules per direction"
        for slot, rule in enumerate(rules):
            prio, obj = top - slot, f"{session}/{direction}/{rule.priority}"
            decide = accept if rule.action == "accept" else reject
            base, ranges = rule_parts(rule)
            dims = [feed_dim, *ranges]
            for d in dims:
                if len(d) == 1:
                    base.update(d[0])
            several = [d for d in dims if len(d) > 1]
            product = math.prod(len(d) for d in several)
            if not conjunctive or len(several) < 2 or product <= sum(map(len, several)) + 1:
                for combo in itertools.product(*several):
                    m = dict(base)
                    for part in combo:
                        m.update(part)
                    put(flow(table, prio, m, kind="rule", obj=obj, **decide))
                continue
            cid = conj_id(prio, direction)
            for k, d in enumerate(several):
                for part in d:
                    put(flow(table, prio, {**base, **part},
                             (("conjunction", cid, k, len(several)),), kind="clause",
                             obj=session))
            put(flow(table, prio, {"conj_id": cid}, kind="rule", obj=obj, **decide))
    return tuple(by_key.values())


def plan_flows(intent: model.Intent, plan: PortPlan, ofports: Mapping[str, int], encap: str,
               local_ip: str = "", conjunctive: bool = True) -> frozenset[Flow]:
    """brtap's flows; ports without an ofport (yet) are left out, a later pass adds them."""
    groups = plan_flow_groups(intent, plan, ofports, encap, local_ip, conjunctive)
    return frozenset(f for group in groups.values() for f in group)


def plan_flow_groups(intent: model.Intent, plan: PortPlan, ofports: Mapping[str, int],
                     encap: str, local_ip: str = "", conjunctive: bool = True
                     ) -> dict[str, tuple[Flow, ...]]:
    """brtap's flows by the object they belong to (a session on a hook, a hook, a
    target...): a pass after a small change diffs only the groups that
    changed (:func:`~sdnagent.compile.flows.diff_groups`)."""
    groups: dict[str, tuple[Flow, ...]] = {"default": _DEFAULTS}
    tunnel = ofports.get(TUNNEL_PORT[encap], 0)

    def port(name: str) -> int:
        return ofports.get(name, 0)

    # target side: a target's own traffic is dropped; what the chassis tunnel brings is
    # delivered only with the target's key and from a chassis expected to send to it
    for name, pname in sorted(plan.local_targets.items()):
        if port(pname) > 0:
            group = [flow("classify", 300, {"in_port": port(pname)}, kind="target_drop",
                          obj=name)]
            target = intent.targets[name]
            if target.enabled and tunnel > 0 and not plan.tunnel_problem:
                group += [flow("tunnel_in", 100, {"tunnel_id": target.tunnel_key,
                                                  f"tun_{_ip_field(ip)}_src": ip},
                               (("output", port(pname)),), kind="target_in", obj=name)
                          for ip in plan.senders.get(name, ())]
            groups[f"target {name}"] = tuple(group)
    if tunnel > 0:
        groups["tunnel"] = (flow("classify", 100, {"in_port": tunnel}, goto="tunnel_in",
                                 kind="tunnel", obj=encap),)

    # source side: each feed's copies enter with its number in reg1 (on a shared hook, told
    # apart by the port's MAC); what no session takes is counted by feed in verdict
    by_hook: dict[str, list[hooks.Feed]] = {}
    feeds: dict[str, dict[str, set[int]]] = {}  # session -> rule direction -> feed numbers
    for (sess_name, _), names in plan.source_feeds.items():
        for n in names:
            f = plan.feeds[n]
            feeds.setdefault(sess_name, {}).setdefault(f.rules, set()).add(f.id)
    used = {n for names in plan.source_feeds.values() for n in names}
    for n in sorted(used):
        by_hook.setdefault(plan.feeds[n].hook, []).append(plan.feeds[n])
    capped = frozenset(fid for sname, by_dir in feeds.items()
                       if intent.sessions[sname].max_pps or intent.sessions[sname].max_kbps
                       for fids in by_dir.values() for fid in fids)
    for hook in plan.hooks:
        in_port = port(hook.patch_tap)
        if in_port <= 0 or hook.name not in by_hook:
            continue
        own = _own_tunnel_matches(local_ip) if hook.select == "all" and local_ip else ()
        groups[f"hook {hook.name}"] = hooks.entry_flows(hook, by_hook[hook.name], in_port, own,
                                                        GUARD_METER, capped)
    live = {f.id for h in plan.hooks if port(h.patch_tap) > 0 for f in by_hook.get(h.name, ())}
    for sname, by_dir in sorted(feeds.items()):
        sess = intent.sessions[sname]
        flt = intent.filters[sess.filter] if sess.filter is not None else None
        parts = tuple((d, flt.rules(d) if flt is not None else (), tuple(sorted(fs & live)))
                      for d, fs in sorted(by_dir.items()) if fs & live)
        if parts:
            groups[f"session {sname}"] = _session_filter(sname, sess.priority, flt is not None,
                                                         parts, conjunctive, _first_table(sess))

    # forward: per session with local feeds, as its target's kind delivers
    active_sessions = {s for (s, _), names in plan.source_feeds.items() if names}
    for sname in sorted(active_sessions):
        sess = intent.sessions[sname]
        d = plan.deliveries[sname]
        target = intent.targets[sess.target]
        if sess.controlled:
            groups[f"controls {sname}"] = _control_flows(sess)
        if not d.balanced:
            out = _leg_flows("forward", {"reg0": sess.priority}, d.leg, sess, port,
                             kind="forward", obj=sname)
            if out:
                groups[f"forward {sname}"] = out
            continue
        if f"balance {target.name}" not in groups:  # one for all the sessions to it
            groups[f"balance {target.name}"] = _balance_flows(target, d)
        multipath = ("multipath", "symmetric_l3l4+udp", 0, "modulo_n", SLOTS - 1, 0, 8, "reg4")
        groups[f"forward {sname}"] = (flow(
            "forward", 100, {"reg0": sess.priority},
            (multipath, ("set_field", "reg6", target.tunnel_key)), goto="balance",
            kind="forward", obj=sname),) + tuple(
            f for leg in d.legs
            for f in _leg_flows("member", {"reg0": sess.priority, "reg5": member_id(leg.member)},
                                leg, sess, port, kind="member", obj=f"{sname}/{leg.member}"))
    return groups


SAMPLE_BASIS = 0x5A4D  # the sample's hash: not the groups' (basis 0), so that it picks
# connections independently of the member they go to; the same on every chassis


# A meter on a copy's way through brtap drops the very packet the datapath is working on,
# and OVS (3.1) puts what brtap does to a copy in a datapath clone only when brtap's first
# flow has an action it cannot undo: without one, a cap would drop the mirrored VM's own
# frames too (those of an ingress hook, whose copy is made before the frame is sent on).
# A meter is such an action, so the entry flow of every feed that can meet a cap passes
# this one first, whose rate nothing reaches.
GUARD_METER = 65535
GUARD_RATE = 0xFFFFFFFF


def meter_ids(sess: model.Session) -> tuple[int, int]:
    """The OpenFlow meters of a session's packet-rate and bit-rate caps on brtap: from its
    priority (unique), so that they stay as other sessions come and go."""
    assert model.SESSION_PRIORITY[1] < 32768
    return sess.priority, sess.priority + 32768


def _first_table(sess: model.Session) -> str:
    """Where a session's accepted copies go: the first of its controls, else forward."""
    if sess.sample or sess.max_pps:
        return "sample" if sess.sample else "limit_pps"
    return "limit_kbps" if sess.max_kbps else "forward"


def _control_flows(sess: model.Session) -> tuple[Flow, ...]:
    """A session's sample and caps: hash the connection, keep share 0, pass its meters."""
    pps, kbps = meter_ids(sess)
    at = {"reg0": sess.priority}
    after = "limit_kbps" if sess.max_kbps else "forward"
    out = []
    if sess.sample:
        out.append(flow("sample", 100, at, (("multipath", "symmetric_l3l4+udp", SAMPLE_BASIS,
                                             "modulo_n", sess.sample - 1, 0, 16, "reg7"),),
                        goto="limit_pps", kind="sample", obj=sess.name))
        out.append(flow("limit_pps", 90, at, kind="unsampled", obj=sess.name))
    if sess.sample or sess.max_pps:
        out.append(flow("limit_pps", 100, {**at, **({"reg7": 0} if sess.sample else {})},
                        (("meter", pps),) if sess.max_pps else (), goto=after, kind="limit",
                        obj=f"{sess.name}/pps"))
    if sess.max_kbps:
        out.append(flow("limit_kbps", 100, at, (("meter", kbps),), goto="forward", kind="limit",
                        obj=f"{sess.name}/kbps"))
    return tuple(out)


def plan_meters(intent: model.Intent, plan: PortPlan) -> frozenset[Meter]:
    """The meters of the capped sessions with a feed on this chassis."""
    out = set()
    for sname in {s for (s, _), names in plan.source_feeds.items() if names}:
        sess = intent.sessions[sname]
        pps, kbps = meter_ids(sess)
        if sess.max_pps:
            out.add(Meter(pps, False, sess.max_pps))
        if sess.max_kbps:
            out.add(Meter(kbps, True, sess.max_kbps))
    if out:
        out.add(Meter(GUARD_METER, False, GUARD_RATE))
    return frozenset(out)


def _leg_flows(table: str, match: dict, leg: Leg, sess: model.Session, port, *, kind: str,
               obj: str) -> tuple[Flow, ...]:
    """Set the leg's fields and output, truncated to the session's packet length: one
    flow, or one per direction (reg3) when the leg marks the direction; none while its
    port has no number yet."""
    out_port = port(leg.port)
    if out_port <= 0:
        return ()
    out = (("output_trunc", out_port, sess.packet_length) if sess.packet_length
           else ("output", out_port))
    sets = tuple(("set_field", f, v) for f, v in leg.sets)
    if not leg.direction_field:
        return (flow(table, 100, match, sets + (out,), kind=kind, obj=obj),)
    return tuple(flow(table, 100, {**match, "reg3": toward},
                      sets + (("set_field", leg.direction_field, toward), out), kind=kind,
                      obj=obj) for toward in (0, TOWARD_PORT))


def member_id(member: str) -> int:
    """A group member's number in reg5: from its address, so that it stays the same as
    other members come and go (and their flows with it)."""
    return int.from_bytes(hashlib.blake2b(member.encode(), digest_size=4).digest(), "big") | 1


def _balance_flows(target: model.Target, d: Delivery) -> tuple[Flow, ...]:
    ids = [member_id(leg.member) for leg in d.legs]
    assert len(set(ids)) == len(ids), f"two members of {target.name} share a number"
    return tuple(flow("balance", 100, {"reg6": target.tunnel_key, "reg4": slot},
                      (("set_field", "reg5", ids[leg]),), goto="member", kind="balance",
                      obj=target.name) for slot, leg in enumerate(d.slots))


_DEFAULTS = tuple([flow(t, 0, {}, kind="default", obj=t)
                   for t in ("classify", "verdict", "forward", "balance", "member", "tunnel_in",
                             "sample", "limit_pps", "limit_kbps")]
                  + [flow(FILTER_TABLES[-1], 0, {}, goto="verdict", kind="default",
                          obj=FILTER_TABLES[-1])]
                  + [flow(t, 0, {}, goto=after, kind="default", obj=t)
                     for t, after in zip(FILTER_TABLES, FILTER_TABLES[1:])])
