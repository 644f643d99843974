"""Target kinds as units: the model, tapctl, liveness and the agent's view ask the kind."""
from __future__ import annotations

import dataclasses

import pytest

from sdnagent import liveness, model, mtu, targets, trace
from sdnagent.cli import tapctl
from sdnagent.compile import compiler
from sdnagent.targets.base import Kind, via_chassis
from tests.unit import oftable
from tests.unit.test_compile import compile_all, inventory, tcp


def test_each_kind_builds_checks_and_places_its_targets():
    intent = model.Intent.of((), (), ())
    port = model.new_target(intent, "t1", port="vm-164")
    nic = model.new_target(intent, "t2", nic="hv-2:eth9")
    vx = model.new_target(intent, "t3", vxlan="10.0.0.50")
    for t in (port, nic, vx):
        model.check_stored_target(t)
    assert [t.where() for t in (port, nic, vx)] == [
        "port vm-164", "nic hv-2:eth9", "vxlan 10.0.0.50"]
    bindings = {"vm-164": ("hv-1",)}
    assert [liveness.target_chassis(t, bindings) for t in (port, nic, vx)] == [
        ("hv-1",), ("hv-2",), ()]
    assert [t.kind.lives_on(t, "hv-2", frozenset({"vm-164"})) for t in (port, nic, vx)] == [
        True, True, False]
    assert [t.kind.has_status for t in (port, nic, vx)] == [True, True, False]


class ProbeKind(Kind):
    """A kind the package does not have: a collector on a chassis, by name."""
    name = "probe"
    option = "--probe"
    metavar = "CHASSIS"
    help = "a probe on a chassis"

    def new(self, intent, name, key, value, enabled, tunnel_ips, extra):
        return model.Target(name, self.name, key, chassis=model.parse_nic(f"{value}:x")[0],
                            enabled=enabled)

    def check_stored(self, target):
        model.parse_nic(f"{target.chassis}:x")

    def where(self, target):
        return f"probe on {target.chassis}"

    def hosts(self, target, bindings):
        return (target.chassis,)

    def deliver(self, target, session, inv):
        return via_chassis(target, target.chassis, inv)


def test_a_new_kind_is_asked_not_branched_on(monkeypatch):
    monkeypatch.setitem(targets.KINDS, "probe", ProbeKind())
    t = model.new_target(model.Intent.of((), (), ()), "t9", probe="hv-7")
    model.check_stored_target(t)
    assert t.where() == "probe on hv-7"
    assert liveness.target_chassis(t, {}) == ("hv-7",)
    args = tapctl.build_parser().parse_args(["target-add", "t9", "--probe", "hv-7"])
    assert args.where_probe == "hv-7"
    with pytest.raises(model.IntentError) as info:
        model.new_target(model.Intent.of((), (), ()), "t8")
    assert str(info.value).endswith("or --probe CHASSIS")
    # the compiler, the switch's flows and trace take it as they are
    t = dataclasses.replace(t, enabled=True, chassis="host-b")
    intent = one_session(t)
    [(port, _, tun)] = outputs(intent, tcp())
    plan, ofports, _ = compile_all(intent, inventory())
    assert (port, dict(tun)) == (ofports["tapgre"], {"tun_ipv4_dst": "10.255.0.2",
                                                     "tunnel_id": t.tunnel_key})
    words = trace.describe(intent, "vm-230", "in", "tcp", {"vm-230": ("host-a",)},
                           {"host-a": ("10.255.0.1", "gre"), "host-b": ("10.255.0.2", "gre")})
    assert words.splitlines()[-1] == (
        "mirrored by s1: the whole frame to target t9 (probe on host-b) on chassis host-b: GRE "
        "key 1 (the target's) from host-a to 10.255.0.2")


def test_a_stored_target_of_no_known_kind_is_refused():
    t = dataclasses.replace(model.new_target(model.Intent.of((), (), ()), "t1", port="vm-1"),
                            type="teleport")
    with pytest.raises(model.IntentError) as info:
        model.check_stored_target(t)
    assert str(info.value).startswith("type: 'teleport' is not allowed; use one of port, nic, "
                                      "vxlan, erspan, group")


# ---------------------------------------------------------------- collectors

def one_session(target: model.Target, direction: str = "both", **kw) -> model.Intent:
    """``target`` with one enabled session of vm-230 (host-a's, in test_compile)."""
    intent = model.Intent.of([target])
    s = model.new_session(intent, "s1", target=target.name, priority="1", enabled=True, **kw)
    src = model.Source("port", direction, iface_id="vm-230")
    return model.Intent.of([target], [], [dataclasses.replace(s, sources=(src,))])


def outputs(intent: model.Intent, packet: dict, select: str = "dst") -> list[tuple]:
    plan, ofports, table = compile_all(intent, inventory())
    hook = next(h for h in plan.hooks if h.select == select)
    return oftable.run(table, {**packet, "in_port": ofports[hook.patch_tap]})


@pytest.mark.parametrize("extra, where, fields", [
    ({"version": "1", "index": "7"}, "erspan 10.9.0.1 (ERSPAN type II, index 7)",
     {"tun_erspan_ver": 1, "tun_erspan_idx": 7}),
    ({"version": "2", "hardware_id": "5"}, "erspan 10.9.0.1 (ERSPAN type III, hardware ID 5)",
     {"tun_erspan_ver": 2, "tun_erspan_hwid": 5}),
])
def test_an_erspan_target_sets_its_header_fields_and_the_direction_bit(extra, where, fields):
    t = model.new_target(model.Intent(), "t1", erspan="10.9.0.1", enabled=True, **extra)
    model.check_stored_target(t)
    assert t.where() == where
    intent = one_session(t, vni="300", packet_length="128")
    plan, ofports, _ = compile_all(intent, inventory())
    assert [tp.name for tp in plan.tunnels] == ["taperspan", "tapgre"]
    for select, toward in (("dst", 1), ("src", 0)):
        [(port, max_len, tun)] = outputs(intent, tcp(), select)
        assert (port, max_len) == (ofports["taperspan"], 128)
        expect = {"tun_ipv4_dst": "10.9.0.1", "tunnel_id": 300, **fields}
        if fields["tun_erspan_ver"] == 2:  # the D bit: 1 for frames to the source port
            expect["tun_erspan_dir"] = toward
        assert dict(tun) == expect


@pytest.mark.parametrize("extra, error", [
    ({}, "version: --erspan needs --version 1 (ERSPAN type II) or 2 (type III)"),
    ({"version": "3"}, "version: '3' is not allowed; use one of 1, 2"),
    ({"version": "2", "index": "1"}, "index: an index is for ERSPAN type II (--version 1) "
                                     "only; type III has --hardware-id"),
    ({"version": "1", "hardware_id": "1"}, "hardware-id: a hardware ID is for ERSPAN type III "
                                           "(--version 2) only"),
    ({"version": "2", "hardware_id": "64"}, "hardware-id: 64 is out of range; allowed 0..63"),
    ({"version": "1", "encap": "gre"}, "encap: --encap is for --group targets only, not --erspan"),
])
def test_erspan_options_are_judged_in_one_line(extra, error):
    with pytest.raises(model.IntentError) as info:
        model.new_target(model.Intent(), "t1", erspan="10.9.0.1", **extra)
    assert str(info.value) == error


def test_an_erspan_session_id_is_ten_bits():
    t = model.new_target(model.Intent(), "t1", erspan="10.9.0.1", version="1", enabled=True)
    with pytest.raises(model.IntentError) as info:
        one_session(t, vni="1024")
    assert str(info.value) == ("vni: 1024 cannot be the ERSPAN session ID of target t1 (10 "
                               "bits); give a vni of 0..1023")
    # written past tapctl: the agent sets the session aside
    intent = one_session(t, vni="5")
    wide = model.Intent.of([t], [], [dataclasses.replace(intent.sessions["s1"], vni=4096)])
    plan, _, _ = compile_all(wide, inventory())
    assert plan.source_status["s1", "vm-230"].state == "error"
    assert "ERSPAN session ID" in plan.source_status["s1", "vm-230"].reason


def group(members="10.9.0.1,10.9.0.2,10.9.0.3", **extra) -> model.Target:
    return model.new_target(model.Intent(), "g1", group=members, enabled=True, **extra)


def connection(i: int) -> tuple[dict, dict]:
    """The two directions of TCP connection ``i``."""
    there = tcp(src=f"192.168.0.{i % 200 + 1}", dst="192.168.0.230", sport=20000 + i, dport=80)
    back = tcp(src="192.168.0.230", dst=f"192.168.0.{i % 200 + 1}", sport=80, dport=20000 + i)
    return there, back


def test_a_group_sends_each_connection_both_ways_to_one_member_and_spreads_them():
    t = group()
    model.check_stored_target(t)
    assert t.where() == "group of 3 by vxlan: 10.9.0.1, 10.9.0.2, 10.9.0.3"
    intent = one_session(t, vni="7")
    seen: dict[str, int] = {}
    for i in range(100):
        there, back = connection(i)
        [a] = outputs(intent, there, "dst")
        [b] = outputs(intent, back, "src")
        assert a == b
        member = dict(a[2])["tun_ipv4_dst"]
        seen[member] = seen.get(member, 0) + 1
        assert dict(a[2])["tunnel_id"] == 7
        # tapctl trace names the same member (OVS's hash, computed the same way)
        words = trace.describe(intent, "vm-230", "in", "tcp,nw_src={},nw_dst={},tp_src={},"
                               "tp_dst=80".format(there["ipv4_src"], there["ipv4_dst"],
                                                  there["tcp_src"]),
                               {"vm-230": ("host-a",)}, {"host-a": ("10.255.0.1", "vxlan")})
        assert f"to member {member} of target g1 (group) by VXLAN" in words, words
    assert sorted(seen) == ["10.9.0.1", "10.9.0.2", "10.9.0.3"] and min(seen.values()) > 15


def test_a_member_disabled_or_removed_moves_only_its_own_connections():
    t = group("10.9.0.1,10.9.0.2,10.9.0.3,10.9.0.4")
    before = collector_slots(t)
    for action in ("disable", "del"):
        changed = t.kind.with_member(t, action, "10.9.0.2", {})
        after = collector_slots(changed)
        moved = [s for s in range(len(before)) if before[s] != after[s]]
        assert moved and all(before[s] == "10.9.0.2" for s in moved)
        assert "10.9.0.2" not in after
        # and back: the same slots return to it, nothing else moves
        back = (changed.kind.with_member(changed, "enable" if action == "disable" else "add",
                                         "10.9.0.2", {}))
        assert collector_slots(back) == before


def collector_slots(t: model.Target) -> list[str]:
    plan = compiler.plan_ports(one_session(t), inventory())
    d = plan.deliveries["s1"]
    return [d.legs[i].member for i in d.slots]


@pytest.mark.parametrize("action, args, error", [
    ("add", ("10.9.0.1",), "member: 10.9.0.1 is already a member of group 'g1'"),
    ("add", ("10.255.0.2",), "member: 10.255.0.2 is the tunnel address of chassis host-b, whose "
                             "switch would take the copies; give a collector's own address"),
    ("del", ("10.9.0.9",), "member: group 'g1' has no member 10.9.0.9"),
    ("enable", ("bad",), "member: 'bad' is not an IP address; use an IPv4 or IPv6 unicast "
                         "address"),
])
def test_member_changes_are_judged(action, args, error):
    t = group()
    with pytest.raises(model.IntentError) as info:
        t.kind.with_member(t, action, *args, {"host-b": "10.255.0.2"})
    assert str(info.value) == error


def test_group_quotas_and_errors():
    many = ",".join(f"10.9.0.{i}" for i in range(1, 18))
    for members, error in ((many, "group: 17 members; allowed at most 16"),
                           ("10.9.0.1,10.9.0.1", "group: 10.9.0.1 is given twice")):
        with pytest.raises(model.IntentError) as info:
            group(members)
        assert str(info.value) == error
    t = group(",".join(f"10.9.0.{i}" for i in range(1, 17)))
    with pytest.raises(model.IntentError) as info:
        t.kind.with_member(t, "add", "10.9.1.1", {})
    assert str(info.value) == "member: group 'g1' has 16 members; allowed at most 16"
    one = group("10.9.0.1")
    with pytest.raises(model.IntentError) as info:
        one.kind.with_member(one, "del", "10.9.0.1", {})
    assert str(info.value) == ("member: 10.9.0.1 is the last member of group 'g1'; delete the "
                               "target instead")
    # every member disabled: the sessions say so
    off = one.kind.with_member(one, "disable", "10.9.0.1", {})
    plan = compiler.plan_ports(one_session(off), inventory())
    assert plan.source_status["s1", "vm-230"] == compiler.Status(
        "error", "target g1: no member of the group is enabled")


@pytest.mark.parametrize("kw, quota", [({"port": "vm-164"}, 10), ({"group": "10.9.0.1"}, 200),
                                       ({"vxlan": "10.9.0.1"}, 200)])
def test_sessions_per_target_are_bounded_by_kind(kw, quota):
    t = model.new_target(model.Intent(), "t1", **kw)
    intent = model.Intent.of([t])
    sessions = [model.Session(f"s{i}", i, i, "t1") for i in range(1, quota + 1)]
    intent = model.Intent.of([t], [], sessions)
    with pytest.raises(model.IntentError) as info:
        model.new_session(intent, "one-more", target="t1", priority=str(quota + 1))
    assert str(info.value) == (f"target: target 't1' ({t.type}) already has {quota} sessions; "
                               f"allowed at most {quota} per {t.type} target")


def test_a_group_by_erspan_type_three_marks_the_direction_per_member():
    t = group("10.9.0.1,10.9.0.2", encap="erspan", version="2", hardware_id="3")
    assert t.where() == "group of 2 by ERSPAN type III, hardware ID 3: 10.9.0.1, 10.9.0.2"
    intent = one_session(t, vni="9")
    there, back = connection(1)
    [(_, _, a)] = outputs(intent, there, "dst")
    [(_, _, b)] = outputs(intent, back, "src")
    assert dict(a)["tun_ipv4_dst"] == dict(b)["tun_ipv4_dst"]
    assert (dict(a)["tun_erspan_dir"], dict(b)["tun_erspan_dir"]) == (1, 0)
    with pytest.raises(model.IntentError) as info:
        group(encap="gre", version="1")
    assert str(info.value) == "version: --version is for ERSPAN only (--encap erspan)"


def test_the_hash_is_symmetric_and_ipv6_aware():
    from sdnagent.targets import collector
    h = collector.connection_hash
    assert h(0x0800, "10.0.0.1", "10.0.0.2", 6, 1, 2) == h(0x0800, "10.0.0.2", "10.0.0.1", 6, 2, 1)
    assert h(0x86DD, "2001:db8::1", "2001:db8::2", 17, 5, 6) == h(
        0x86DD, "2001:db8::2", "2001:db8::1", 17, 6, 5)
    assert h(0x0806, None, None, None, None, None) is None
    # as OVS 3.1 computes it (ovs-appctl ofproto/trace of multipath(symmetric_l3l4+udp,0,
    # modulo_n,256,...))
    assert [h(0x0800, a, b, 6, p, q) % 256 for a, b, p, q in (
        ("172.16.0.28", "192.168.0.230", 80, 20027), ("172.16.0.1", "192.168.0.230", 80, 20000),
        ("10.0.0.1", "10.0.0.2", 1, 2), ("10.0.0.1", "10.0.0.2", 0, 0))] == [210, 202, 112, 99]


# ---------------------------------------------------------------- MTU

@pytest.mark.parametrize("encap, dst, added", [
    ("vxlan", "10.0.0.1", 36), ("vxlan", "2001:db8::1", 56), ("gre", "10.0.0.1", 28),
    ("gre", "2001:db8::1", 48), ("erspan1", "10.0.0.1", 36), ("erspan2", "2001:db8::1", 60)])
def test_what_each_encapsulation_adds(encap, dst, added):
    assert mtu.overhead(encap, dst) == added


def test_the_agent_and_tapctl_warn_of_copies_that_can_outgrow_the_underlay():
    t = model.new_target(model.Intent(), "t1", erspan="2001:db8::50", version="2",
                         enabled=True)
    words = ("can exceed the underlay MTU 1500 of chassis host-a after ERSPAN type III over "
             "IPv6 (60 bytes); the largest safe packet length is 1440")
    for length, said in ((None, "whole frames"), ("1441", "copies of packet length 1441"),
                         ("1440", None)):
        intent = one_session(t, vni="5", **({"packet_length": length} if length else {}))
        plan = compiler.plan_ports(intent, inventory(mtu=1500))
        status = plan.source_status["s1", "vm-230"]
        assert status == compiler.Status("active", f"{said} {words}" if said else ""), status
        # tapctl, from what the chassis published
        registered = {"host-a": ("10.255.0.1", "vxlan", 1500),
                      "host-b": ("10.255.0.2", "vxlan", 9000), "host-c": ("10.255.0.3", "gre", None)}
        warned = compiler.mtu_warning(intent.sessions["s1"], t, registered, {})
        assert warned == (f"{said} {words}" if said else None)
    # unknown MTU: nothing said; a local target: nothing to outgrow
    assert compiler.plan_ports(one_session(t), inventory()).source_status[
        "s1", "vm-230"] == compiler.ACTIVE
    local = model.new_target(model.Intent(), "t2", port="vm-164", enabled=True)
    plan = compiler.plan_ports(one_session(local), inventory(
        mtu=1500, ports={**inventory().ports,
                         "vm-164": compiler.LocalPort("vm-164", "brtap", "tgt164", 5)}))
    assert plan.source_status["s1", "vm-230"] == compiler.ACTIVE
    # to host-b over the chassis tunnel: VXLAN over IPv4 from host-a (whose MTU is 1500)
    plan = compiler.plan_ports(one_session(local, packet_length="1465"),
                               inventory(mtu=1500, encap="vxlan"))
    assert plan.source_status["s1", "vm-230"].reason.startswith(
        "copies of packet length 1465 can exceed the underlay MTU 1500 of chassis host-a "
        "after VXLAN over IPv4 (36 bytes)")


def test_a_tunnel_port_the_switch_could_not_add_is_said_on_the_sources():
    t = model.new_target(model.Intent(), "t1", erspan="10.9.0.1", version="1", enabled=True)
    plan = compiler.plan_ports(one_session(t), inventory(
        brtap_ofports={"taperspan": -1},
        brtap_errors={"taperspan": "could not add network device taperspan to ofproto (File "
                                   "exists)"}))
    assert plan.source_status["s1", "vm-230"] == compiler.Status(
        "error", "target t1: port taperspan could not be added to brtap on chassis host-a: "
        "could not add network device taperspan to ofproto (File exists)")
