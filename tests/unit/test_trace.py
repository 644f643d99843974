"""tapctl trace: packets in ovs-ofctl syntax, the intent's decision explained, held to the
compiled flows."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdnagent import model, trace
from sdnagent.compile.compiler import Inventory, LocalPort
from tests.unit import oftable
from tests.unit.test_compile import compile_all, intents, packets
from tests.unit.test_model import example

BINDINGS = {"vm-230": ("host-a",), "vm-164": ("host-b",)}
CHASSIS = {"host-a": ("10.255.0.1", "gre"), "host-b": ("10.255.0.2", "gre")}


def describe(intent, packet, port="vm-230", direction="in", bindings=BINDINGS):
    return trace.describe(intent, port, direction, packet, bindings, CHASSIS)


def test_the_two_session_example():
    intent = example()
    out = describe(intent, "tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1234")
    assert out.splitlines() == [
        "packet tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1234 at port vm-230 (to "
        "the VM), direction in, on chassis host-a",
        "sessions, in priority order:",
        "  session-01 (priority 1): accept: filter filter-01 inbound rule 1 accept tcp ipv4 src "
        "192.168.0.161/32 dst 192.168.0.230/32 dst-port 1234 matches",
        "mirrored by session-01: the first 96 bytes to target target-01 (port vm-164) on "
        "chassis host-b: GRE key 1 (the target's) from host-a to 10.255.0.2"]
    out = describe(intent, "tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1235")
    assert out.splitlines()[2:] == [
        "  session-01 (priority 1): passed: no inbound rule of filter filter-01 matches (1: dst-port "
        "1235 not in 1234)",
        "  session-02 (priority 2): passed: no inbound rule of filter filter-02 matches (1: not udp)",
        "not mirrored: no rule of any session matches"]
    out = describe(intent, "udp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1235")
    assert out.splitlines()[-1] == (
        "mirrored by session-02: the first 96 bytes to target target-02 by VXLAN (UDP 4789) "
        "to 192.168.1.165, VNI 2 (the session's)")
    # the other direction, another port
    out = describe(intent, "tcp,tp_dst=1234", direction="out")
    assert out.splitlines()[-1] == ("not mirrored: no session has port vm-230 as a source in "
                                    "direction out")


def test_reject_disabled_and_delivery_problems():
    intent = example()
    flt = intent.filter("filter-01")
    reject = model.Rule(0 + 1, "reject", 6, "ipv4")
    sessions = {s.name: s for s in intent.sessions.values()}
    rejecting = model.Intent.of(intent.targets.values(), [
        dataclasses.replace(flt, inbound=(reject,)), intent.filter("filter-02")],
        sessions.values())
    lines = describe(rejecting, "tcp,tp_dst=1235").splitlines()
    assert lines[-2:] == [
        "  session-01 (priority 1): reject: filter filter-01 inbound rule 1 reject tcp ipv4 "
        "matches",
        "not mirrored: session-01 rejects it (no later session is tried)"]
    # a session whose target is disabled is skipped: its reject stops nothing
    off = model.Intent.of([dataclasses.replace(t, enabled=t.name != "target-01")
                           for t in intent.targets.values()], rejecting.filters.values(),
                          sessions.values())
    lines = describe(off, "udp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1235"
                     ).splitlines()
    assert lines[2] == "  session-01 (priority 1): skipped: target target-01 is disabled"
    assert lines[-1].startswith("mirrored by session-02: ")
    tcp = "tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1234"
    assert describe(intent, tcp, bindings={"vm-230": ("host-a",)}).splitlines()[-1] == (
        "mirrored by session-01: nowhere: target target-01: iface vm-164 not found on any "
        "chassis")
    assert describe(intent, tcp, bindings={**BINDINGS, "vm-164": ("aaa-evil", "host-b")}
                    ).splitlines()[-1] == (
        "mirrored by session-01: nowhere: target target-01: iface vm-164 is claimed by chassis "
        "aaa-evil and host-b; copies wait until only one has it")
    local = describe(intent, tcp, bindings={**BINDINGS, "vm-164": ("host-a",)})
    assert local.splitlines()[-1] == ("mirrored by session-01: the first 96 bytes to target "
                                      "target-01 (port vm-164), on chassis host-a itself")


@pytest.mark.parametrize("text, error", [
    ("tcp,tp_dst=99999", "tp_dst: 99999 is out of range; allowed 0..65535"),
    ("tcp,nw_src=fe80::1", "packet: nw_src=fe80::1 is not allowed: nw_src takes an ipv4 "
                           "address"),
    ("tcp,nw_src=300.1.1.1", "packet: nw_src='300.1.1.1' is not allowed; give an IP address"),
    ("tcp,udp", "packet: 'udp' contradicts what is given before it"),
    ("icmp,tp_dst=80", "packet: tp_src and tp_dst are allowed with tcp or udp only"),
    ("arp,nw_proto=6", "packet: IP fields are not allowed on a non-IP packet"),
    ("tp_dst=80", "packet: 'tp_dst=80' says nothing of the packet's kind; give a protocol "
                  "(ip, tcp, udp, icmp, ipv6, tcp6, arp...) or addresses"),
])
def test_bad_packets_are_one_line_naming_the_field(text, error):
    with pytest.raises(model.IntentError) as info:
        trace.parse_packet(text)
    assert str(info.value) == error


def test_unknown_fields_name_what_is_allowed():
    with pytest.raises(model.IntentError) as info:
        trace.parse_packet("tcp,dl_vlan=5")
    text = str(info.value)
    assert text.startswith("packet: 'dl_vlan' is not allowed; give a protocol (ip, ipv6, arp, ")
    assert "nw_dst" in text and "\n" not in text


def test_packets_read_as_ovs_ofctl_writes_them():
    assert trace.parse_packet("tcp6,ipv6_src=2001:db8::1,tcp_dst=22").fields() == {
        "eth_type": 0x86DD, "ip_proto": 6, "ipv6_src": "2001:db8::1", "tcp_dst": 22}
    assert trace.parse_packet("nw_src=10.0.0.1,nw_proto=47").fields() == {
        "eth_type": 0x0800, "ip_proto": 47, "ipv4_src": "10.0.0.1"}
    assert trace.parse_packet("dl_type=0x0806").fields() == {"eth_type": 0x0806}


def as_text(pkt: dict) -> str:
    """A packet of the compiler's property tests, written as ovs-ofctl would."""
    if pkt["eth_type"] != 0x0800:
        return "arp"
    parts = [f"ip,nw_proto={pkt['ip_proto']}", f"nw_src={pkt['ipv4_src']}",
             f"nw_dst={pkt['ipv4_dst']}"]
    parts += [f"tp_{end}={pkt[f'{l4}_{end}']}" for l4 in ("tcp", "udp") for end in ("src", "dst")
              if f"{l4}_{end}" in pkt]
    return ",".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intents(), packets(), st.sampled_from(["in", "out"]))
def test_trace_decides_like_the_compiled_tables(intent, pkt, direction):
    parsed = trace.parse_packet(as_text(pkt))
    assert parsed.fields() == pkt
    inv = Inventory(chassis="h", ports={"vm-1": LocalPort("vm-1", "br-int", "vm1", 1),
                                        "vm-t": LocalPort("vm-t", "brtap", "tgt", 2)},
                    bridges=frozenset({"br-int", "brtap"}), chassis_ips={"h": "10.0.0.1"})
    plan, ofports, table = compile_all(intent, inv)
    hooks = [h for h in plan.hooks if h.select == ("dst" if direction == "in" else "src")]
    outputs = oftable.run(table, {"in_port": ofports[hooks[0].patch_tap], **pkt}) if hooks else []
    decided = trace.evaluate(intent, "vm-1", direction, parsed)
    if decided.mirrored_by is None:
        assert outputs == []
        return
    sess = intent.session(decided.mirrored_by)
    assert len(outputs) == 1 and outputs[0][1] == sess.packet_length
    assert outputs[0][0] == (ofports["tgt"] if sess.target == "t-local" else ofports["tapvxlan"])


def test_every_compiled_flow_is_named():
    """sdnagent-trace names each flow by hashing what tapdb and the hooks name: every
    cookie the compiler writes must be among them, conjunctive clauses and verdicts too."""
    from sdnagent.compile import compiler, flows
    from tests.unit.test_compile import _many_ports, _many_sources_intent, compile_all, inventory
    from sdnagent import model
    flt = model.Filter("wide")
    wide = [model.new_rule(flt, d, priority="1", action=a, protocol="tcp", src_port="1-999",
                           dst_port="2-999") for d, a in (("inbound", "accept"),
                                                          ("outbound", "reject"))]
    many = {**_many_ports(4), "vm-t": compiler.LocalPort("vm-t", "brtap", "tgt", 9)}
    for intent, inv in ((example(), inventory()),
                        (_many_sources_intent([wide[0]], [wide[1]]), inventory(ports=many))):
        plan, _, table = compile_all(intent, inv)
        labels = trace.switch_labels(intent, {h.name: h.name for h in plan.hooks})
        assert len({flows.cookie_kind(f.cookie) for f in table}) >= 6
        assert [f for f in table if f.cookie not in labels] == []


def test_switch_flows_are_named_by_their_cookies():
    from sdnagent.compile import flows
    intent = example()
    labels = trace.switch_labels(intent, {"tap-1": "port vm230, direction in"})
    rule = flows.cookie("rule", "session-02/inbound/1")
    text = ("bridge(\"brtap\")\n 0. in_port=2, priority 200, cookie "
            f"{hex(flows.cookie('source', 'vm-230/in'))}\n    goto_table:10\n"
            f"10. udp,in_port=2, priority 64990, cookie {hex(rule)}\n    goto_table:20\n"
            "20. reg0=0x9, priority 100, cookie 0x7a90060000000001\n    drop")
    assert trace.annotate(text, labels).splitlines() == [
        'bridge("brtap")',
        " 0. in_port=2, priority 200, cookie " + hex(flows.cookie("source", "vm-230/in")),
        "    [the copies of vm-230/in: to the filter stage]",
        "    goto_table:10",
        f"10. udp,in_port=2, priority 64990, cookie {hex(rule)}",
        "    [session session-02, filter filter-02 inbound rule 1 (accept)]",
        "    goto_table:20",
        "20. reg0=0x9, priority 100, cookie 0x7a90060000000001",
        "    [unknown to sdnagent]",
        "    drop"]
