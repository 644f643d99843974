"""The compiler, judged by what packets do in the compiled tables."""
from __future__ import annotations

import dataclasses
import re

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdnagent import model
from sdnagent.compile import compiler, flows, hooks, pipeline, portrange
from sdnagent.compile.compiler import Inventory, LocalPort
from tests.unit import oftable
from tests.unit.test_model import example

SRC_IP, DST_IP, OTHER_IP = "192.168.0.161", "192.168.0.230", "192.168.0.99"
HOST_B_IP = "10.255.0.2"


# ------------------------------------------------------------ port ranges


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_prefixes_cover_exactly_the_range(a, b):
    lo, hi = min(a, b), max(a, b)
    pairs = portrange.prefixes(lo, hi)
    assert len(pairs) <= 30
    for v, m in pairs:
        assert v & m == v
    probes = {lo, hi, max(lo - 1, 0), min(hi + 1, 65535), (lo + hi) // 2, 0, 65535}
    for p in probes:
        assert any(p & m == v for v, m in pairs) == (lo <= p <= hi), p


def test_prefixes_examples():
    assert portrange.prefixes(1234, 1234) == [(1234, 0xFFFF)]
    assert portrange.prefixes(0, 65535) == [(0, 0)]
    assert portrange.prefixes(1024, 2047) == [(1024, 0xFC00)]
    assert len(portrange.prefixes(1, 65534)) == 30


# ------------------------------------------------------------ the example, by packets


def inventory(**kw) -> Inventory:
    """host-a: the source vm-230 on br-int; target-01 (vm-164) lives on host-b."""
    base = dict(chassis="host-a", ports={"vm-230": LocalPort("vm-230", "br-int", "vm230", 1)},
                bridges=frozenset({"br-int", "brtap"}),
                chassis_ips={"host-a": "10.255.0.1", "host-b": HOST_B_IP},
                bindings={"vm-164": ("host-b",)})
    base.update(kw)
    return Inventory(**base)


def compile_all(intent, inv):
    plan = compiler.plan_ports(intent, inv)
    ofports = {}
    for i, h in enumerate(plan.hooks):
        ofports[h.patch_tap] = 10 + i
    ofports.update({t.name: 50 + i for i, t in enumerate(plan.tunnels)})
    for i, (name, port) in enumerate(sorted(plan.local_targets.items())):
        ofports[port] = 70 + i
    return plan, ofports, compiler.plan_flows(intent, plan, ofports, inv.encap)


def tcp(src=SRC_IP, dst=DST_IP, sport=40000, dport=1234, proto=6):
    l4 = {6: "tcp", 17: "udp"}[proto]
    return {"eth_type": 0x0800, "ip_proto": proto, "ipv4_src": src, "ipv4_dst": dst,
            f"{l4}_src": sport, f"{l4}_dst": dport}


def test_two_session_example_on_the_source_host():
    intent = example()
    plan, ofports, table = compile_all(intent, inventory())
    assert [h.select for h in plan.hooks] == ["dst"]  # one Mirror: vm-230, direction in
    hook = plan.hooks[0]
    assert hook.bridge == "br-int" and hook.ports == ("vm230",) and len(hook.patch_tap) <= 15
    assert plan.source_status == {("session-01", "vm-230"): compiler.ACTIVE,
                                  ("session-02", "vm-230"): compiler.ACTIVE}
    assert plan.target_status == {}  # target-01 is on host-b; a vxlan target has no host
    gre, vxlan = ofports["tapgre"], ofports["tapvxlan"]
    port_in = {"in_port": ofports[hook.patch_tap]}
    # TCP to 1234 from .161: target-01 on host-b over GRE with its key, 96 bytes
    assert oftable.run(table, {**port_in, **tcp()}) == [
        (gre, 96, (("tun_ipv4_dst", HOST_B_IP), ("tunnel_id", 1)))]
    # UDP to 1235: VXLAN VNI 2 to target-02's address
    assert oftable.run(table, {**port_in, **tcp(proto=17, dport=1235)}) == [
        (vxlan, 96, (("tun_ipv4_dst", "192.168.1.165"), ("tunnel_id", 2)))]
    # not mirrored: TCP to 1235, UDP to 1234, another source, ARP, another in_port
    for pkt in (tcp(dport=1235), tcp(proto=17), tcp(src=OTHER_IP), {"eth_type": 0x0806}):
        assert oftable.run(table, {**port_in, **pkt}) == [], pkt
    assert oftable.run(table, {"in_port": 99, **tcp()}) == []


def test_every_flow_is_ours_and_unchanged_intent_changes_nothing():
    intent = example()
    _, _, first = compile_all(intent, inventory())
    _, _, again = compile_all(example(), inventory())
    assert first == again
    assert not flows.diff(first, again)
    for f in first:
        assert f.cookie & flows.COOKIE_MASK == flows.COOKIE_AGENT << 48
    assert flows.diff(first, frozenset()).delete == tuple(sorted(first, key=flows.Flow.sort_key))


def test_target_side_accepts_the_expected_chassis_and_keys_only():
    """host-b hosts target-01: it takes key 1 only from the chassis holding a source of a
    session to target-01 (host-a, where vm-230 is bound), not from any registered one."""
    intent = example()
    inv = Inventory(chassis="host-b", ports={"vm-164": LocalPort("vm-164", "brtap", "tgt164", 5)},
                    bridges=frozenset({"br-int", "brtap"}),
                    chassis_ips={"host-a": "10.255.0.1", "host-b": HOST_B_IP,
                                 "host-c": "10.255.0.3"},
                    bindings={"vm-230": ("host-a",), "vm-161": ("host-c",)})
    plan, ofports, table = compile_all(intent, inv)
    assert plan.hooks == () and plan.target_status == {"target-01": compiler.ACTIVE}
    assert plan.senders == {"target-01": ("10.255.0.1",)}
    tgt, gre = ofports["tgt164"], ofports["tapgre"]
    tunnel = {"in_port": gre, "tun_ipv4_src": "10.255.0.1", **tcp()}
    assert oftable.run(table, {**tunnel, "tunnel_id": 1}) == [(tgt, None, (("tunnel_id", 1),))]
    assert oftable.run(table, {**tunnel, "tunnel_id": 2}) == []  # unknown key
    assert oftable.run(table, {**tunnel, "tun_ipv4_src": "10.255.0.9", "tunnel_id": 1}) == []
    # a registered chassis that holds no source of target-01's sessions
    assert oftable.run(table, {**tunnel, "tun_ipv4_src": "10.255.0.3", "tunnel_id": 1}) == []
    assert oftable.run(table, {"in_port": tgt, **tcp()}) == []  # the target sends nothing

    def accepted(intent, **kw):
        _, _, table = compile_all(intent, dataclasses.replace(inv, **kw))
        return sorted(dict(f.match).get("tun_ipv4_src") for f in table
                      if f.table == pipeline.table("tunnel_in").id and f.priority > 0)
    # the source moves to host-c: host-c is expected instead
    assert accepted(intent, bindings={"vm-230": ("host-c",)}) == ["10.255.0.3"]
    # nobody holds the source, or its session is disabled: nothing is accepted
    assert accepted(intent, bindings={}) == []
    off = model.Intent.of(intent.targets.values(), intent.filters.values(),
                          [dataclasses.replace(s, enabled=s.name != "session-01")
                           for s in intent.sessions.values()])
    assert accepted(off) == []
    # a vswitch source names its chassis
    bridge = model.Intent.of(intent.targets.values(), intent.filters.values(), [
        dataclasses.replace(intent.session("session-01"), sources=(
            model.Source("vswitch", "both", chassis="host-c", bridge="br-int"),))])
    assert accepted(bridge, bindings={}) == ["10.255.0.3"]


def test_local_target_truncates_without_tunnel():
    intent = example()
    inv = inventory(ports={"vm-230": LocalPort("vm-230", "br-int", "vm230", 1),
                           "vm-164": LocalPort("vm-164", "brtap", "tgt164", 2)})
    plan, ofports, table = compile_all(intent, inv)
    port_in = {"in_port": ofports[plan.hooks[0].patch_tap]}
    assert oftable.run(table, {**port_in, **tcp()}) == [(ofports["tgt164"], 96, ())]


def test_reject_of_a_higher_session_stops_lower_ones():
    intent = example()
    f1 = intent.filter("filter-01")
    reject = model.new_rule(f1, "inbound", priority="2", action="reject",
                            protocol="udp")
    intent = model.Intent.of(intent.targets.values(),
                             [model.Filter("filter-01", f1.inbound + (reject,)),
                              intent.filter("filter-02")], intent.sessions.values())
    plan, ofports, table = compile_all(intent, inventory())
    port_in = {"in_port": ofports[plan.hooks[0].patch_tap]}
    assert oftable.run(table, {**port_in, **tcp(proto=17, dport=1235)}) == []
    assert oftable.run(table, {**port_in, **tcp()})[0][1] == 96  # TCP still mirrored


def test_disabled_things_are_as_if_absent():
    intent = example()
    s1 = intent.session("session-01")
    off = model.Session(**{**vars(s1), "enabled": False})
    intent2 = model.Intent.of(intent.targets.values(), intent.filters.values(),
                              [off, intent.session("session-02")])
    plan, ofports, table = compile_all(intent2, inventory())
    assert plan.source_status["session-01", "vm-230"] == compiler.Status(
        "disabled", "the session is disabled")
    port_in = {"in_port": ofports[plan.hooks[0].patch_tap]}
    assert oftable.run(table, {**port_in, **tcp()}) == []
    assert oftable.run(table, {**port_in, **tcp(proto=17, dport=1235)}) != []


def test_unbound_target_is_a_status_error():
    plan, _, _ = compile_all(example(), inventory(bindings={}))
    assert plan.source_status["session-01", "vm-230"] == compiler.Status(
        "error", "target target-01: iface vm-164 not found on any chassis")
    assert plan.source_status["session-02", "vm-230"] == compiler.ACTIVE


def test_a_target_claimed_by_two_chassis_gets_no_copies():
    """Whatever sorts first, a second claim (a forged one, a VM moving) sends nothing to
    either chassis; the status names both."""
    chassis_ips = {"host-a": "10.255.0.1", "host-b": HOST_B_IP, "aaa-evil": "10.255.0.66"}
    plan, _, flows = compile_all(example(), inventory(
        chassis_ips=chassis_ips, bindings={"vm-164": ("aaa-evil", "host-b")}))
    assert plan.source_status["session-01", "vm-230"] == compiler.Status(
        "error", "target target-01: iface vm-164 is claimed by chassis aaa-evil and host-b; "
        "copies wait until only one has it")
    assert "session-01" not in plan.deliveries
    assert not [f for f in flows if "10.255.0.66" in repr(f.actions)]
    # one claim again: copies flow to it
    plan, _, _ = compile_all(example(), inventory(chassis_ips=chassis_ips))
    assert ("tun_ipv4_dst", HOST_B_IP) in plan.deliveries["session-01"].leg.sets
    # an iface bound to a chassis that registered no tunnel IP
    plan, _, _ = compile_all(example(), inventory(bindings={"vm-164": ("host-c",)}))
    assert plan.source_status["session-01", "vm-230"] == compiler.Status(
        "error", "target target-01: iface vm-164 is on chassis host-c, which has no tunnel "
        "IP registered")


def entry(plan, ofports, ports, iface: str, direction: str):
    """The fields a copy of ``iface``'s frames (direction in/out) enters brtap with: its
    hook's patch port and, when the hook is shared, the port's MAC; None if no hook."""
    select = "dst" if direction == "in" else "src"
    for h in plan.hooks:
        if h.select == select and ports[iface].port in h.ports:
            out = {"in_port": ofports[h.patch_tap]}
            if len(h.ports) > 1:
                out["eth_dst" if select == "dst" else "eth_src"] = ports[iface].mac
            return out
    return None


def _macs(n: int) -> dict:
    return {f"vm-{i}": LocalPort(f"vm-{i}", "br-int", f"p{i}", i + 1,
                                 f"fa:16:3e:00:{i >> 8:02x}:{i & 0xFF:02x}") for i in range(n)}


def test_a_thousand_sources_share_a_bounded_number_of_hooks():
    """1,000 source ports of 100 sessions, in both directions, beside 3 Mirrors of another
    owner: at most HOOK_SLOTS Mirrors a direction, every source active and judged by its
    own sessions; sources keep their hook when others come and go."""
    intent = example()
    ports = _macs(1000)
    sessions = []
    for s in range(100):
        direction = ("in", "out", "both")[s % 3]
        sessions.append(model.Session(
            f"s{s}", s + 1, 1, "target-02", enabled=True, sources=tuple(
                model.Source("port", direction, iface_id=f"vm-{s * 10 + i}") for i in range(10))))
    intent = model.Intent.of(intent.targets.values(), intent.filters.values(), sessions)
    inv = inventory(ports=ports, foreign_mirrors={"br-int": 3})
    plan = compiler.plan_ports(intent, inv)
    assert len(plan.hooks) == 2 * hooks.HOOK_SLOTS <= hooks.MAX_MIRRORS_PER_BRIDGE - 3
    assert {s.state for s in plan.source_status.values()} == {"active"}
    both = 10 * sum(1 for s in range(100) if s % 3 == 2)  # ports in two hooks
    assert sum(len(h.ports) for h in plan.hooks) == 1000 + both
    # the ports of one session share one hook a direction (a port can pass for a slot-mate
    # by its MAC, so slot-mates should serve the same sessions where they can)
    for s in range(100):
        mine = {f"p{s * 10 + i}" for i in range(10)}
        for select in ("dst", "src"):
            assert len([h for h in plan.hooks if h.select == select and mine & set(h.ports)]) <= 1
    # judged as their own: a copy of vm-123's frames (in) goes to s12 only
    ofports = {h.patch_tap: 100 + i for i, h in enumerate(plan.hooks)}
    ofports.update({t.name: 50 + i for i, t in enumerate(plan.tunnels)})
    table = compiler.plan_flows(intent, plan, ofports, "gre")
    pkt = {**entry(plan, ofports, ports, "vm-123", "in"), "eth_type": 0x0800}
    hits: list = []
    assert oftable.run(table, pkt, hits) == [(ofports["tapvxlan"], None, (
        ("tun_ipv4_dst", "192.168.1.165"), ("tunnel_id", 1)))]
    assert any(f.cookie == flows.cookie("forward", "s12") for f in hits)
    # a session goes: every other port keeps its hook
    members = {(p, h.select): h.name for h in plan.hooks for p in h.ports}
    fewer = model.Intent.of(intent.targets.values(), (), sessions[1:])
    again = compiler.plan_ports(fewer, dataclasses.replace(
        inv, hook_members={h.name: h.ports for h in plan.hooks}))
    assert all(members[p, h.select] == h.name for h in again.hooks for p in h.ports)
    # a port without a MAC in a shared hook cannot be told apart: that source says so
    no_mac = {**ports, "vm-5": dataclasses.replace(ports["vm-5"], mac="")}
    plan = compiler.plan_ports(intent, dataclasses.replace(inv, ports=no_mac))
    st = plan.source_status["s0", "vm-5"]
    assert st.state == "error" and re.fullmatch(
        r"iface vm-5 shares a hook on bridge br-int with \d+ other source port\(s\) and has "
        r"no MAC address \(Interface external_ids:attached-mac\) to tell its frames apart",
        st.reason), st
    assert plan.source_status["s0", "vm-6"] == compiler.ACTIVE


def test_a_bridge_full_of_other_owners_mirrors_is_a_status_error():
    intent = example()
    plan = compiler.plan_ports(intent, inventory(foreign_mirrors={"br-int": 32}))
    assert plan.hooks == ()
    assert set(plan.source_status.values()) == {compiler.Status(
        "error", "bridge br-int has no room for another Mirror (the OVS limit is 32 a bridge, "
        "32 of them another owner's)")}
    # one Mirror left: the sources of both directions... here only in: one hook
    plan = compiler.plan_ports(intent, inventory(foreign_mirrors={"br-int": 31}))
    assert len(plan.hooks) == 1 and plan.source_status["session-01", "vm-230"].state == "active"


# ------------------------------------------------------------ property: compiled == reference


PORTS = st.sampled_from([22, 80, 443, 1234, 1235, 5000, 65535])
IPS = st.sampled_from(["192.168.0.161", "192.168.0.230", "10.1.2.3", "10.1.200.4"])
CIDRS = st.sampled_from([None, "192.168.0.0/24", "192.168.0.161/32", "10.1.0.0/16",
                         "10.1.128.0/17"])


@st.composite
def rules(draw, priority):
    proto = draw(st.sampled_from(["all", "tcp", "udp", "icmp", "47"]))
    kw = {"priority": str(priority), "action": draw(st.sampled_from(["accept", "reject"])),
          "protocol": proto}
    for f in ("src", "dst"):
        cidr = draw(CIDRS)
        if cidr:
            kw[f] = cidr
    if proto in ("tcp", "udp"):
        for f in ("src_port", "dst_port"):
            if draw(st.booleans()):
                a, b = draw(PORTS), draw(PORTS)
                kw[f] = f"{min(a, b)}-{max(a, b)}"
    return kw


@st.composite
def intents(draw):
    targets = [model.Target("t-local", "port", 1, iface_id="vm-t", enabled=True),
               model.Target("t-vx", "vxlan", 2, remote_ip="10.9.9.9",
                            enabled=draw(st.booleans()))]
    filters, sessions = [], []
    for i in range(draw(st.integers(1, 3))):
        flt = model.Filter(f"f{i}")
        for direction in ("inbound", "outbound"):
            prios = draw(st.lists(st.integers(1, 50), unique=True, max_size=4))
            added = tuple(model.new_rule(flt, direction, **draw(rules(p))) for p in prios)
            flt = dataclasses.replace(flt, **{direction: tuple(sorted(
                added, key=lambda r: r.priority))})
        filters.append(flt)
    prios = draw(st.lists(st.integers(1, 99), unique=True, min_size=1, max_size=3))
    for j, prio in enumerate(prios):
        fname = draw(st.sampled_from([None] + [f.name for f in filters]))
        direction = draw(st.sampled_from(["in", "out", "both"]))
        # vm-1 in every session; others too, so that a rule judges several feeds
        others = draw(st.lists(st.sampled_from(SOURCE_IFACES[1:]), unique=True, max_size=3))
        sources = [model.Source("port", direction, iface_id="vm-1",
                                enabled=draw(st.booleans()) or j == 0)]
        sources += [model.Source("port", draw(st.sampled_from(["in", "out", "both"])),
                                 iface_id=i, enabled=draw(st.booleans())) for i in others]
        sessions.append(model.Session(
            f"s{j}", prio, 100 + j, draw(st.sampled_from(["t-local", "t-vx"])), fname,
            draw(st.sampled_from([None, 64, 96])), draw(st.booleans()) or j == 0,
            tuple(sources)))
    return model.Intent.of(targets, filters, sessions)


SOURCE_IFACES = ("vm-1", "vm-2", "vm-3", "vm-4")


@st.composite
def packets(draw):
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "gre", "arp"]))
    if kind == "arp":
        return {"eth_type": 0x0806}
    pkt = {"eth_type": 0x0800, "ipv4_src": draw(IPS), "ipv4_dst": draw(IPS),
           "ip_proto": {"tcp": 6, "udp": 17, "icmp": 1, "gre": 47}[kind]}
    if kind in ("tcp", "udp"):
        pkt[f"{kind}_src"] = draw(PORTS)
        pkt[f"{kind}_dst"] = draw(PORTS)
    return pkt


@pytest.fixture(params=[1, hooks.HOOK_SLOTS], ids=["one-hook-a-direction", "default-slots"])
def slots(request):
    """Hooks a bridge and direction: with one, every source port shares it."""
    old, hooks.HOOK_SLOTS = hooks.HOOK_SLOTS, request.param
    yield request.param
    hooks.HOOK_SLOTS = old


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(intents(), packets(), st.sampled_from(["in", "out"]), st.sampled_from(SOURCE_IFACES))
def test_compiled_tables_decide_like_the_reference(slots, intent, pkt, direction, iface):
    ports = {i: LocalPort(i, "br-int", i.replace("-", ""), n, f"fa:16:3e:00:00:{n:02x}")
             for n, i in enumerate(SOURCE_IFACES, 1)}
    inv = Inventory(chassis="h", ports={**ports, "vm-t": LocalPort("vm-t", "brtap", "tgt", 9)},
                    bridges=frozenset({"br-int", "brtap"}), chassis_ips={"h": "10.0.0.1"})
    plan, ofports, table = compile_all(intent, inv)
    want = oftable.reference(intent, iface, direction, pkt)
    fields = entry(plan, ofports, ports, iface, direction)
    outputs = oftable.run(table, {**fields, **pkt}) if fields else []
    if want is None:
        assert outputs == []
        return
    sess = intent.session(want)
    target = intent.target(sess.target)
    assert len(outputs) == 1
    port, max_len, tunnel = outputs[0]
    assert max_len == sess.packet_length
    if target.type == "port":
        assert (port, tunnel) == (ofports["tgt"], ())
    else:
        assert port == ofports["tapvxlan"]
        assert dict(tunnel) == {"tun_ipv4_dst": "10.9.9.9", "tunnel_id": sess.vni}


def test_ipv6_and_icmp_rules():
    flt = model.Filter("f6")
    v6 = model.new_rule(flt, "inbound", priority="1", action="accept", protocol="icmpv6",
                        src="2001:db8::/32")
    v4 = model.new_rule(flt, "inbound", priority="2", action="accept", protocol="icmp")
    intent = example()
    intent = model.Intent.of(intent.targets.values(), [model.Filter("f6", (v6, v4))],
                             [model.Session("s", 1, 7, "target-02", "f6", None, True,
                                            (model.Source("port", "in", iface_id="vm-230"),))])
    plan, ofports, table = compile_all(intent, inventory())
    port_in = {"in_port": ofports[plan.hooks[0].patch_tap]}

    def mirrored(pkt):
        return bool(oftable.run(table, {**port_in, **pkt}))
    icmp6 = {"eth_type": 0x86DD, "ip_proto": 58, "ipv6_src": "2001:db8::5", "ipv6_dst": "::1"}
    assert mirrored(icmp6)
    assert not mirrored({**icmp6, "ipv6_src": "2001:db9::5"})
    assert not mirrored({**icmp6, "ip_proto": 17, "udp_src": 1, "udp_dst": 2})
    assert mirrored({"eth_type": 0x0800, "ip_proto": 1, "ipv4_src": OTHER_IP, "ipv4_dst": DST_IP})
    assert not mirrored({"eth_type": 0x0800, "ip_proto": 58, "ipv4_src": OTHER_IP,
                         "ipv4_dst": DST_IP})
    v6_flows = [f for f in table if ("eth_type", 0x86DD) in f.match]
    assert dict(v6_flows[0].match)["ipv6_src"] == ("2001:db8::", "ffff:ffff::")


def test_diff_orders_exact_and_masked_values_of_one_field():
    flt = model.Filter("f")
    wide = model.new_rule(flt, "inbound", priority="1", action="accept", protocol="tcp",
                          dst_port="1000-2000")  # prefixes: some masked, 2000 exact
    intent = example()
    intent = model.Intent.of(intent.targets.values(), [model.Filter("f", (wide,))],
                             [model.Session("s", 1, 7, "target-02", "f", None, True,
                                            (model.Source("port", "in", iface_id="vm-230"),))])
    _, _, table = compile_all(intent, inventory())
    ports = {dict(f.match).get("tcp_dst") for f in table if f.table == 10}
    assert 2000 in ports and (1024, 0xFE00) in ports  # 2000 exact, 1024-1535 masked
    change = flows.diff(frozenset(), table)
    assert set(change.add) == set(table) and not change.delete
    assert not flows.diff(table, table)


def test_a_source_in_too_many_sessions_is_an_error_not_a_crash():
    """Another OVSDB client may bypass tapctl's quota: the agent mirrors the first three."""
    intent = example()
    src = model.Source("port", "in", iface_id="vm-230")
    sessions = [model.Session(f"s{i}", i + 1, 1, "target-02", enabled=True, sources=(src,))
                for i in range(5)]
    intent = model.Intent.of(intent.targets.values(), intent.filters.values(), sessions)
    plan, _, table = compile_all(intent, inventory())
    states = {k[0]: s.state for k, s in plan.source_status.items()}
    assert states == {"s0": "active", "s1": "active", "s2": "active", "s3": "error",
                      "s4": "error"}
    assert plan.source_status["s3", "vm-230"].reason == (
        "vm-230 is in more than 3 sessions; only the 3 of highest priority mirror it")
    assert len([f for f in table if f.table == 10 and f.priority]) == 3


def test_a_session_with_broken_stored_data_is_set_aside():
    """Another OVSDB client wrote a bad CIDR: that session reports it, the others run."""
    intent = example()
    bad = model.Rule(1, "accept", 6, "ipv4", src="10.0.0.0/33")
    intent = model.Intent.of(intent.targets.values(),
                             [model.Filter("filter-01", (bad,)), intent.filter("filter-02")],
                             intent.sessions.values())
    plan, ofports, table = compile_all(intent, inventory())
    assert plan.source_status["session-01", "vm-230"] == compiler.Status(
        "error", "session session-01: filter filter-01 inbound rule 1: src: '10.0.0.0/33' is "
        "not a CIDR; use ADDRESS/PREFIX such as 192.168.0.0/24 or 2001:db8::/64")
    assert plan.source_status["session-02", "vm-230"] == compiler.ACTIVE
    port_in = {"in_port": ofports[plan.hooks[0].patch_tap]}
    assert oftable.run(table, {**port_in, **tcp(proto=17, dport=1235)}) != []


def test_a_chassis_set_aside_is_named_by_the_sources_that_need_it():
    intent = example()
    inv = inventory(chassis_ips={"host-a": "10.255.0.1"},
                    rejected_chassis={"host-b": "tunnel_ip: 'not-an-ip' is not an IP address"})
    plan, _, table = compile_all(intent, inv)
    assert plan.source_status["session-01", "vm-230"] == compiler.Status(
        "error", "target target-01: chassis host-b is set aside: tunnel_ip: 'not-an-ip' is not "
        "an IP address")
    assert plan.source_status["session-02", "vm-230"] == compiler.ACTIVE
    assert not [f for f in table if "tun_ipv4_src" in dict(f.match)]


def nic_intent(nic: str) -> model.Intent:
    intent = example()
    t = model.Target("collector", "nic", 9, chassis="host-a", nic=nic, enabled=True)
    sess = model.Session("s9", 9, 9, "collector", enabled=True,
                         sources=(model.Source("port", "in", iface_id="vm-230"),))
    return model.Intent.of([*intent.targets.values(), t], intent.filters.values(),
                           [*intent.sessions.values(), sess])


@pytest.mark.parametrize("nic,bridges,reason", [
    ("vm230", {"vm230": "br-int"}, "nic vm230 is already a port of bridge br-int on chassis "
     "host-a; a nic target needs a NIC that no other bridge uses"),
    ("tapgre", {}, "nic 'tapgre' is reserved for the agent's own ports (tapgre, tapvxc, "
     "tapvxlan, taperspan, tpi<hex> and tpt<hex>); use the name of a host NIC"),
    ("brtap", {"brtap": "brtap"}, "nic 'brtap' is the agent's tap bridge; use the name of a "
     "host NIC"),
])
def test_a_nic_target_that_cannot_be_on_brtap_is_an_error_on_that_target_only(nic, bridges,
                                                                            reason):
    plan, _, _ = compile_all(nic_intent(nic), inventory(port_bridges=bridges))
    assert plan.nics == ()
    assert "collector" not in plan.local_targets
    assert plan.target_status["collector"].state == "error"
    assert plan.target_status["collector"] == compiler.Status("error", reason)
    source = plan.source_status["s9", "vm-230"]
    assert source.state == "error" and "target collector: nic" in source.reason
    assert source.reason.endswith(reason.split(" ", 2)[2])
    assert plan.source_status["session-01", "vm-230"] == compiler.ACTIVE


def test_a_nic_already_on_brtap_is_used():
    plan, _, _ = compile_all(nic_intent("nic1"), inventory(port_bridges={"nic1": "brtap"}))
    assert plan.nics == ("nic1",) and plan.target_status["collector"] == compiler.ACTIVE


def vswitch_intent(bridge: str) -> model.Intent:
    intent = example()
    sess = model.Session("s9", 9, 9, "target-02", enabled=True,
                         sources=(model.Source("vswitch", chassis="host-a", bridge=bridge),))
    return model.Intent.of(intent.targets.values(), intent.filters.values(),
                           [*intent.sessions.values(), sess])


def test_vswitch_sources_only_on_integration_bridges():
    inv = inventory(bridges=frozenset({"br-int", "br-ul", "brtap"}))
    plan, _, _ = compile_all(vswitch_intent("br-ul"), inv)
    assert plan.source_status["s9", "host-a:br-ul"] == compiler.Status(
        "error", "bridge br-ul is not an integration bridge of chassis host-a (br-int); "
        "vswitch sources can only be integration bridges")
    assert not [h for h in plan.hooks if h.bridge == "br-ul"]
    inv = dataclasses.replace(inv, integration_bridges=("br-int", "br-ul"))
    plan, _, _ = compile_all(vswitch_intent("br-ul"), inv)
    assert plan.source_status["s9", "host-a:br-ul"] == compiler.ACTIVE


def test_a_vswitch_hook_drops_this_chassiss_own_tunnel_packets():
    """A bridge that also carries the underlay: the copies we tunnel are not mirrored again."""
    inv = inventory(bridges=frozenset({"br-int", "br-ul", "brtap"}), local_ip="10.255.0.1",
                    integration_bridges=("br-int", "br-ul"))
    intent = vswitch_intent("br-ul")
    plan = compiler.plan_ports(intent, inv)
    hook = next(h for h in plan.hooks if h.bridge == "br-ul")
    ofports = {hook.patch_tap: 10, "tapgre": 50, "tapvxlan": 51}
    table = compiler.plan_flows(intent, plan, ofports, "gre", inv.local_ip)
    port = {"in_port": 10, "eth_type": 0x0800}
    gre_out = {**port, "ip_proto": 47, "ipv4_src": "10.255.0.1", "ipv4_dst": HOST_B_IP}
    gre_in = {**port, "ip_proto": 47, "ipv4_src": HOST_B_IP, "ipv4_dst": "10.255.0.1"}
    vxlan_out = {**port, "ip_proto": 17, "ipv4_src": "10.255.0.1", "ipv4_dst": "192.168.1.165",
                 "udp_src": 5000, "udp_dst": 4789}
    vxc_in = {**port, "ip_proto": 17, "ipv4_src": HOST_B_IP, "ipv4_dst": "10.255.0.1",
              "udp_src": 5000, "udp_dst": 4790}
    for pkt in (gre_out, gre_in, vxlan_out, vxc_in):
        assert oftable.run(table, pkt) == [], pkt
    other = {**port, "ip_proto": 17, "ipv4_src": "10.255.0.7", "ipv4_dst": "10.255.0.1",
             "udp_src": 5000, "udp_dst": 53}
    assert len(oftable.run(table, other)) == 1


def test_a_vswitch_hook_drops_this_chassiss_own_ipv6_tunnel_packets():
    """The same on an IPv6 underlay: what the chassis tunnels (GRE, ERSPAN, VXLAN to
    chassis and collectors) from or to its IPv6 address is never mirrored again."""
    me, peer = "2001:db8:ff::1", "2001:db8:ff::2"
    inv = inventory(bridges=frozenset({"br-int", "br-ul", "brtap"}), local_ip=me,
                    integration_bridges=("br-int", "br-ul"),
                    chassis_ips={"host-a": me, "host-b": peer})
    intent = vswitch_intent("br-ul")
    plan = compiler.plan_ports(intent, inv)
    hook = next(h for h in plan.hooks if h.bridge == "br-ul")
    ofports = {hook.patch_tap: 10, "tapgre": 50, "tapvxlan": 51}
    table = compiler.plan_flows(intent, plan, ofports, "gre", inv.local_ip)
    port = {"in_port": 10, "eth_type": 0x86DD}
    own = [{**port, "ip_proto": 47, "ipv6_src": me, "ipv6_dst": peer},
           {**port, "ip_proto": 47, "ipv6_src": peer, "ipv6_dst": me},
           {**port, "ip_proto": 17, "ipv6_src": me, "ipv6_dst": "2001:db8::50",
            "udp_src": 5000, "udp_dst": 4789},
           {**port, "ip_proto": 17, "ipv6_src": peer, "ipv6_dst": me, "udp_src": 5000,
            "udp_dst": 4790}]
    for pkt in own:
        assert oftable.run(table, pkt) == [], pkt
    other = {**port, "ip_proto": 17, "ipv6_src": "2001:db8:ff::7", "ipv6_dst": me,
             "udp_src": 5000, "udp_dst": 53}
    assert len(oftable.run(table, other)) == 1


def test_only_what_concerns_the_chassis_is_planned():
    """A session without a source in view, and targets elsewhere, are left out; planning
    the rest gives what planning everything gives."""
    intent = example()
    elsewhere = model.Target("far", "port", 7, iface_id="vm-far", enabled=True)
    other = model.Session("other", 7, 7, "far", enabled=True)  # its sources are not in view
    full = model.Intent.of([*intent.targets.values(), elsewhere], intent.filters.values(),
                           [*intent.sessions.values(), other])
    part = compiler.concerning(full, "host-a", frozenset({"vm-230"}))
    assert sorted(part.sessions) == ["session-01", "session-02"]
    assert sorted(part.targets) == ["target-01", "target-02"]
    assert compile_all(part, inventory())[2] == compile_all(full, inventory())[2]



def _band(table, priority):
    """The filter flows in a session's band (its table, its RULE_SLOTS priorities)."""
    name, top = pipeline.filter_band(priority)
    tid = pipeline.table(name).id
    return {f for f in table if f.table == tid and top - pipeline.RULE_SLOTS < f.priority <= top}


def _with_rule(intent, fname, **kw):
    flt = intent.filters[fname]
    rule = model.new_rule(flt, "inbound", **kw)
    flt = dataclasses.replace(flt, inbound=tuple(sorted((*flt.inbound, rule),
                                                        key=lambda r: r.priority)))
    return model.Intent.of(intent.targets.values(),
                           [flt if f.name == fname else f for f in intent.filters.values()],
                           intent.sessions.values())


def test_a_change_to_one_session_rewrites_only_that_sessions_flows():
    """Priority bands: each session's filter flows keep their OpenFlow priority when
    other sessions or rules come and go, so a change touches only its own flows."""
    base = example()  # session-01 (priority 1) and session-02 (2) on one hook
    _, _, before = compile_all(base, inventory())
    s1 = _band(before, 1)
    assert s1 and _band(before, 2)

    def touched(after):
        change = flows.diff(before, after)
        assert change
        return set(change.add) | set(change.delete)

    # a rule added to session-02's filter
    _, _, ruled = compile_all(_with_rule(base, "filter-02", priority="2", action="reject",
                                         protocol="tcp"), inventory())
    assert _band(ruled, 1) == s1 and not touched(ruled) & s1
    # and one added to session-01's filter leaves session-02's flows as they were
    s2 = _band(before, 2)
    _, _, ruled = compile_all(_with_rule(base, "filter-01", priority="2", action="reject",
                                         protocol="udp"), inventory())
    assert _band(ruled, 2) == s2 and not touched(ruled) & s2
    # session-02 disabled, and a session of priority 3 added to the hook
    third = model.Session("session-03", 3, 9, "target-01", None, None, True,
                          (model.Source("port", "in", iface_id="vm-230"),))
    more = model.Intent.of(base.targets.values(), base.filters.values(),
                           [dataclasses.replace(base.sessions["session-02"], enabled=False),
                            base.sessions["session-01"], third])
    _, _, grown = compile_all(more, inventory())
    assert _band(grown, 1) == s1 and not touched(grown) & s1
    assert not _band(grown, 2) and len(_band(grown, 3)) == 1


def test_session_bands_cover_every_priority_without_overlap():
    seen = {}
    for prio in (1, 2, 5999, 6000, 6001, 12000, 32765, 32766):
        table, top = pipeline.filter_band(prio)
        assert table in pipeline.FILTER_TABLES and top - pipeline.RULE_SLOTS + 1 > 0
        for p in range(top - pipeline.RULE_SLOTS + 1, top + 1):
            assert seen.setdefault((table, p), prio) == prio
    assert pipeline.filter_band(1) > pipeline.filter_band(2)[:1] + (0,)
    assert pipeline.filter_band(1)[1] - pipeline.filter_band(2)[1] == pipeline.RULE_SLOTS


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intents(), intents())
def test_diff_of_changed_groups_equals_the_full_diff(one, two):
    """What a pass applies after a change, looking only into the groups that changed,
    is what the full diff of the two flow sets gives."""
    def groups(intent):
        plan, ofports, _ = compile_all(intent, inventory(ports={
            "vm-1": LocalPort("vm-1", "br-int", "vm1", 1),
            "vm-t": LocalPort("vm-t", "brtap", "vmt", 2)}))
        return compiler.plan_flow_groups(intent, plan, ofports, "gre")
    before, after = groups(one), groups(two)
    flat = [frozenset(f for g in gs.values() for f in g) for gs in (before, after)]
    assert flows.diff_groups(before, after) == flows.diff(*flat)
    assert not flows.diff_groups(before, groups(one))


def _many_sources_intent(rules_in, rules_out, n_sources=4, direction="both"):
    flt = model.Filter("wide", tuple(rules_in), tuple(rules_out))
    target = model.Target("t-local", "port", 1, iface_id="vm-t", enabled=True)
    sources = tuple(model.Source("port", direction, iface_id=f"vm-{i}")
                    for i in range(1, n_sources + 1))
    return model.Intent.of([target], [flt], [model.Session("s", 1, 1, "t-local", "wide", None,
                                                             True, sources)])


def _many_ports(n):
    return {f"vm-{i}": LocalPort(f"vm-{i}", "br-int", f"vm{i}", i, f"fa:16:3e:00:01:{i:02x}")
            for i in range(1, n + 1)}


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data(), st.sampled_from(["in", "out"]))
def test_conjunctive_rules_decide_like_the_reference(slots, data, direction):
    """Rules with port ranges judged for several feeds at once: conjunctive matches, and
    the flows decide exactly what the reference decides, for every source."""
    def some_rules(draw_dir):
        prios = data.draw(st.lists(st.integers(1, 50), unique=True, min_size=1, max_size=4))
        flt = model.Filter("wide")
        out = []
        for p in sorted(prios):
            kw = data.draw(rules(p))
            kw["protocol"] = data.draw(st.sampled_from(["tcp", "udp"]))
            for f in ("src_port", "dst_port"):
                if f not in kw or data.draw(st.booleans()):
                    a, b = sorted(data.draw(st.lists(PORTS, min_size=2, max_size=2)))
                    kw[f] = f"{a}-{b}"
            out.append(model.new_rule(flt, draw_dir, **kw))
        return out
    intent = _many_sources_intent(some_rules("inbound"), some_rules("outbound"))
    ports = _many_ports(4)
    inv = inventory(ports={**ports, "vm-t": LocalPort("vm-t", "brtap", "tgt", 9)})
    plan, ofports, table = compile_all(intent, inv)
    iface = data.draw(st.sampled_from(sorted(ports)))
    pkt = data.draw(packets())
    outputs = oftable.run(table, {**entry(plan, ofports, ports, iface, direction), **pkt})
    want = oftable.reference(intent, iface, direction, pkt)
    assert bool(outputs) == (want is not None), (want, outputs)


def test_wide_port_ranges_add_instead_of_multiply():
    """The probe's worst case: ten rules a direction, each with two wide port ranges,
    ten sources in both directions.  Per rule product of prefixes: ~870 flows a feed;
    as conjunctive matches: one flow per feed and per prefix, plus one."""
    def ten(direction):
        flt = model.Filter("wide")
        return [model.new_rule(flt, direction, priority=str(p), action="accept",
                               protocol="tcp", src_port="1-65534", dst_port="2-65534")
                for p in range(1, 11)]
    intent = _many_sources_intent(ten("inbound"), ten("outbound"), n_sources=10)
    inv = inventory(ports={**_many_ports(10), "vm-t": LocalPort("vm-t", "brtap", "tgt", 99)})
    plan, ofports, table = compile_all(intent, inv)
    band = pipeline.table(pipeline.filter_band(1)[0]).id
    mine = [f for f in table if f.table == band and f.priority > 0]
    src, dst = len(portrange.prefixes(1, 65534)), len(portrange.prefixes(2, 65534))
    # per direction and rule: 10 feeds + src + dst prefixes + the conj_id flow, with the
    # inbound and outbound clauses of one prefix shared by one flow
    assert len(mine) == 10 * (2 * (10 + 1) + src + dst)
    before = 10 * 2 * 10 * src * dst  # rules x directions x feeds x product
    assert before / len(mine) > 50
    # and they still decide right: a few packets through both directions of a source
    ports = _many_ports(10)
    for sport, dport in ((1, 2), (65534, 65534), (0, 80), (80, 1), (65535, 80), (443, 65535)):
        pkt = {"eth_type": 0x0800, "ipv4_src": "10.1.2.3", "ipv4_dst": "10.1.200.4",
               "ip_proto": 6, "tcp_src": sport, "tcp_dst": dport}
        want = 1 <= sport <= 65534 and 2 <= dport <= 65534
        for direction in ("in", "out"):
            fields = entry(plan, ofports, ports, "vm-7", direction)
            assert bool(oftable.run(table, {**fields, **pkt})) == want


def test_counters_from_the_flows_a_packet_hits():
    """Each frame counted once where it ended: its accepting or rejecting rule (a plain
    flow, or a conjunctive match's conj_id flow), and by source, unmatched or rejected."""
    from sdnagent.compile import counters
    flt = model.Filter("f")
    rules_in = [model.new_rule(flt, "inbound", priority="1", action="reject", protocol="udp"),
                model.new_rule(flt, "inbound", priority="2", action="accept", protocol="tcp",
                               src_port="1000-2000", dst_port="10-500")]
    intent = _many_sources_intent(rules_in, [], n_sources=3, direction="in")
    inv = inventory(ports={**_many_ports(3), "vm-t": LocalPort("vm-t", "brtap", "tgt", 9)})
    plan, ofports, table = compile_all(intent, inv)
    assert any(a[0] == "conjunction" for f in table for a in f.actions)
    ports = _many_ports(3)
    sent = {"vm-1": [("tcp", 1500, 80)] * 3 + [("udp", 1, 1)],
            "vm-2": [("tcp", 999, 80), ("tcp", 1000, 10)],
            "vm-3": [("udp", 5, 5)] * 2 + [("icmp", 0, 0)]}
    hits: list = []
    for iface, pkts in sent.items():
        for proto, sport, dport in pkts:
            pkt = {**entry(plan, ofports, ports, iface, "in"), "eth_type": 0x0800,
                   "ipv4_src": "10.1.2.3",
                   "ipv4_dst": "10.1.200.4", "ip_proto": {"tcp": 6, "udp": 17, "icmp": 1}[proto]}
            if proto != "icmp":
                pkt.update({f"{proto}_src": sport, f"{proto}_dst": dport})
            oftable.run(table, pkt, hits)
    by_cookie: dict = {}
    for f in hits:
        packets, nbytes = by_cookie.get(f.cookie, (0, 0))
        by_cookie[f.cookie] = (packets + 1, nbytes + 100)
    got = counters.counters(counters.plan_counters(intent, plan), by_cookie)["s"]
    assert (got["packets"], got["rule inbound 1 packets"], got["rule inbound 2 packets"]) == (
        4, 3, 4)
    assert [(got[f"source vm-{i} packets"], got[f"source vm-{i} unmatched"],
             got[f"source vm-{i} rejected"]) for i in (1, 2, 3)] == [(4, 0, 1), (2, 1, 0),
                                                                    (3, 1, 2)]


def test_a_vxlan_target_at_a_chassis_tunnel_address_is_set_aside():
    """A hypervisor's switch takes VXLAN sent to its tunnel address (OVN reads the VNI as
    its own keys): tapctl refuses such a target, and one written past it (or a chassis
    that registered later with that address) sends nothing, its sources saying why."""
    flt = model.Filter("f")
    with pytest.raises(model.IntentError, match=r"^vxlan: 10\.255\.0\.2 is the tunnel address "
                       "of chassis host-b, whose switch would take the copies; give a "
                       "collector's own address$"):
        model.new_target(model.Intent.of([], [flt], []), "t", vxlan="10.255.0.2",
                         tunnel_ips={"host-a": "10.255.0.1", "host-b": "10.255.0.2"})
    assert model.new_target(model.Intent.of([], [], []), "t", vxlan="10.255.0.200",
                            tunnel_ips={"host-b": "10.255.0.2"}).remote_ip == "10.255.0.200"
    intent = example()
    at_b = dataclasses.replace(intent.targets["target-02"], remote_ip=HOST_B_IP)
    intent = model.Intent.of([intent.targets["target-01"], at_b], intent.filters.values(),
                             intent.sessions.values())
    plan, ofports, table = compile_all(intent, inventory())
    assert plan.source_status["session-02", "vm-230"] == compiler.Status(
        "error", "target target-02: 10.255.0.2 is the tunnel address of chassis host-b, whose "
        "switch would take the copies; give a collector's own address")
    assert "session-02" not in plan.deliveries
    assert plan.source_status["session-01", "vm-230"] == compiler.ACTIVE


@pytest.mark.parametrize("encap, foreign, clash", [
    ("gre", ("ovn-hosta-0", "gre", ""), True),  # OVN or OpenStack GRE: takes our GRE
    ("vxlan", ("ovn-hosta-0", "gre", ""), False),  # our VXLAN is on a UDP port of its own
    ("vxlan", ("vxlan-0a", "vxlan", ""), False),  # 4789, the default
    ("vxlan", ("vxlan-0a", "vxlan", "4789"), False),
    ("vxlan", ("other", "vxlan", "4790"), True),
    ("gre", ("ovn-hosta-0", "geneve", ""), False),
])
def test_a_chassis_tunnel_like_another_owners_port_takes_nothing(encap, foreign, clash):
    """OVS hands a tunnel packet to the most specific port of its datapath port: another
    owner's GRE port with a fixed remote takes our GRE (and its peers' GRE reaches ours);
    VXLAN ports share a datapath port only on one UDP port.  Where ours could be confused
    the target says why and nothing is taken from the tunnel."""
    inv = Inventory(chassis="host-b", encap=encap,
                    ports={"vm-164": LocalPort("vm-164", "brtap", "tgt164", 5)},
                    bridges=frozenset({"br-int", "brtap"}),
                    chassis_ips={"host-a": "10.255.0.1", "host-b": HOST_B_IP},
                    bindings={"vm-230": ("host-a",)}, foreign_tunnels=(foreign,))
    plan, ofports, table = compile_all(example(), inv)
    tunnel_in = [f for f in table if f.table == pipeline.table("tunnel_in").id and f.priority]
    if not clash:
        assert plan.target_status == {"target-01": compiler.ACTIVE} and len(tunnel_in) == 1
        return
    name, type_, _ = foreign
    udp = " on UDP 4790" if encap == "vxlan" else ""
    assert plan.target_status == {"target-01": compiler.Status(
        "error", f"target target-01: port {name} of another owner on chassis host-b is a "
        f"{type_} tunnel{udp} like the chassis tunnel {compiler.TUNNEL_PORT[encap]}, and OVS "
        "could hand either the other's packets; nothing is taken from the tunnel; "
        + ("use [tunnel] encap = vxlan" if encap == "gre" else "UDP 4790 is sdnagent's"))}
    assert tunnel_in == []


def test_caches_let_go_of_sessions_that_are_gone():
    """After large sessions are deleted, what the compiler and the codec memoized for them
    is forgotten (the agent prunes when the caches hold several times what is live)."""
    from sdnagent.switch import ofcodec
    flt = model.Filter("wide")
    wide = [model.new_rule(flt, "inbound", priority="1", action="accept", protocol="tcp",
                           src_port="1-65534", dst_port="2-65534")]
    inv = inventory(ports={**_many_ports(4), "vm-t": LocalPort("vm-t", "brtap", "tgt", 9)})
    big = _many_sources_intent(wide, [])
    plan, ofports, _ = compile_all(big, inv)
    groups = compiler.plan_flow_groups(big, plan, ofports, "gre")
    live = {f for g in groups.values() for f in g}
    ofcodec.remember(live)
    assert compiler.memo_count() >= 1 and flows.shared_count() >= len(live)
    small = model.Intent.of(big.targets.values(), (), ())
    plan, ofports, _ = compile_all(small, inv)
    groups = compiler.plan_flow_groups(small, plan, ofports, "gre")
    left = {f for g in groups.values() for f in g}
    compiler.retain(groups)
    flows.keep_shared(left)
    ofcodec.keep(left)
    assert compiler.memo_count() == 0
    assert flows.shared_count() <= 2 * len(left)
    assert not set(ofcodec._FLOWS.values()) - left and not ofcodec._SEEN - left
    # and compiling the big intent again gives the same flows
    plan, ofports, _ = compile_all(big, inv)
    assert {f for g in compiler.plan_flow_groups(big, plan, ofports, "gre").values()
            for f in g} == live


@pytest.mark.parametrize("ports, shared", [(10, []), (11, [2]), (12, [3]), (20, [11])])
def test_as_many_ports_as_can_be_have_a_hook_of_their_own(ports, shared):
    """One session's sources, one direction: alone in a hook while the hooks suffice,
    and beyond that as few sharing as can be."""
    intent = model.Intent.of(example().targets.values(), (), [model.Session(
        "s", 1, 1, "target-02", enabled=True, sources=tuple(
            model.Source("port", "in", iface_id=f"vm-{i}") for i in range(ports)))])
    plan = compiler.plan_ports(intent, inventory(ports=_macs(ports)))
    assert sorted((len(h.ports) for h in plan.hooks if len(h.ports) > 1), reverse=True) == shared
    assert len(plan.hooks) == min(ports, hooks.HOOK_SLOTS)


def test_two_ports_of_one_mac_in_a_shared_hook_are_errors_not_a_flapping_flow():
    intent = model.Intent.of(example().targets.values(), (), [model.Session(
        "s", 1, 1, "target-02", enabled=True, sources=tuple(
            model.Source("port", "in", iface_id=f"vm-{i}") for i in range(10))), model.Session(
        "s2", 2, 1, "target-02", enabled=True, sources=tuple(
            model.Source("port", "in", iface_id=f"vm-{i}") for i in range(10, 12)))])
    ports = _macs(12)
    plan = compiler.plan_ports(intent, inventory(ports=ports))
    shared = next(h for h in plan.hooks if len(h.ports) > 1)
    one, two = (p.replace("p", "vm-") for p in shared.ports[:2])
    ports[two] = dataclasses.replace(ports[two], mac=ports[one].mac)
    inv = inventory(ports=ports, hook_members={h.name: h.ports for h in plan.hooks})
    plan, ofports, table = compile_all(intent, inv)
    bad = {k[1]: s.reason for k, s in plan.source_status.items() if s.state == "error"}
    assert sorted(bad) == sorted([one, two])
    assert bad[two].startswith(f"iface {two} has the MAC address {ports[one].mac} of iface "
                               f"{one}, which shares its hook")
    keys = [f.key for f in table]
    assert len(keys) == len(set(keys))
