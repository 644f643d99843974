"""Every rule of the intent, each with the exact line an operator reads."""
import pytest

from sdnagent import model
from sdnagent.model import IntentError, PortRange


def example() -> model.Intent:
    """The two-session example, as tapctl would have built it."""
    intent = model.Intent()
    t1 = model.new_target(intent, "target-01", port="vm-164", enabled=True)
    intent = model.Intent.of([t1])
    t2 = model.new_target(intent, "target-02", vxlan="192.168.1.165", enabled=True)
    f1 = model.Filter("filter-01")
    f1 = model.Filter("filter-01", inbound=(model.new_rule(
        f1, "inbound", priority="1", action="accept", protocol="tcp", src="192.168.0.161/32",
        dst="192.168.0.230/32", dst_port="1234-1234"),))
    f2 = model.Filter("filter-02")
    f2 = model.Filter("filter-02", inbound=(model.new_rule(
        f2, "inbound", priority="1", action="accept", protocol="udp", src="192.168.0.161/32",
        dst="192.168.0.230/32", dst_port="1235"),))
    intent = model.Intent.of([t1, t2], [f1, f2])
    s1 = model.new_session(intent, "session-01", target="target-01", filter="filter-01",
                           priority="1", vni="1", packet_length="96", enabled=True)
    s2 = model.new_session(intent, "session-02", target="target-02", filter="filter-02",
                           priority="2", vni="2", packet_length="96", enabled=True)
    src = model.Source("port", "in", iface_id="vm-230")
    return model.Intent.of([t1, t2], [f1, f2],
                           [model.Session(**{**vars(s1), "sources": (src,)}),
                            model.Session(**{**vars(s2), "sources": (src,)})])


def add_session(intent, name, **kw):
    s = model.new_session(intent, name, **kw)
    return model.Intent.of(intent.targets.values(), intent.filters.values(),
                           [*intent.sessions.values(), s])


def with_sources(intent, session, *sources):
    sess = intent.session(session)
    new = model.Session(**{**vars(sess), "sources": sess.sources + tuple(sources)})
    return model.Intent.of(intent.targets.values(), intent.filters.values(),
                           [*(s for s in intent.sessions.values() if s.name != session), new])


def test_example_is_valid_and_normalised():
    intent = example()
    rule = intent.filter("filter-01").inbound[0]
    assert rule == model.Rule(1, "accept", 6, "ipv4", "192.168.0.161/32", "192.168.0.230/32",
                              None, PortRange(1234, 1234))
    assert intent.target("target-01").tunnel_key == 1
    assert intent.target("target-02").tunnel_key == 2
    assert intent.session("session-02").vni == 2
    assert intent.sessions_of_port("vm-230") == ["session-01", "session-02"]


def err(func, *args, **kwargs) -> str:
    with pytest.raises(IntentError) as info:
        func(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------ ranges


@pytest.mark.parametrize("field,value,message", [
    ("vni", "16777216", "vni: 16777216 is out of range; allowed 0..16777215"),
    ("vni", "-1", "vni: -1 is out of range; allowed 0..16777215"),
    ("vni", "one", "vni: 'one' is not an integer; allowed 0..16777215"),
    ("priority", "0", "priority: 0 is out of range; allowed 1..32766"),
    ("priority", "32767", "priority: 32767 is out of range; allowed 1..32766"),
    ("packet_length", "63", "packet-length: 63 is out of range; allowed 64..8500"),
    ("packet_length", "8501", "packet-length: 8501 is out of range; allowed 64..8500"),
])
def test_session_ranges(field, value, message):
    kw = {"target": "target-01", "priority": "9", field: value}
    assert err(model.new_session, example(), "s", **kw) == message


def test_session_range_edges_accepted():
    intent = example()
    s = model.new_session(intent, "s", target="target-01", priority="32766", vni="16777215",
                          packet_length="8500")
    assert (s.priority, s.vni, s.packet_length) == (32766, 16777215, 8500)
    s = model.new_session(intent, "s", target="target-01", priority="3", vni="0",
                          packet_length="64")
    assert (s.vni, s.packet_length, s.enabled) == (0, 64, False)


@pytest.mark.parametrize("value,message", [
    ("0", "priority: 0 is out of range; allowed 1..16777216"),
    ("16777217", "priority: 16777217 is out of range; allowed 1..16777216"),
])
def test_rule_priority_range(value, message):
    assert err(model.new_rule, model.Filter("f"), "inbound", priority=value,
               action="accept") == message


def test_rule_priority_edge_accepted():
    rule = model.new_rule(model.Filter("f"), "outbound", priority="16777216", action="reject")
    assert (rule.priority, rule.action, rule.protocol, rule.ethertype) == (
        16777216, "reject", None, "ipv4")


# ------------------------------------------------------------ uniqueness and quotas


def test_duplicate_session_priority():
    assert err(model.new_session, example(), "s3", target="target-01", priority="2") == (
        "priority: session 'session-02' already has priority 2; session priorities are unique")


def test_duplicate_rule_priority_in_one_direction_only():
    flt = example().filter("filter-01")
    assert err(model.new_rule, flt, "inbound", priority="1", action="reject") == (
        "priority: filter 'filter-01' already has an inbound rule with priority 1; "
        "priorities are unique per filter direction")
    assert model.new_rule(flt, "outbound", priority="1", action="reject").priority == 1


def test_eleventh_rule_in_a_direction():
    rules = tuple(model.Rule(p, "accept") for p in range(1, 11))
    flt = model.Filter("f", inbound=rules)
    assert err(model.new_rule, flt, "inbound", priority="11", action="accept") == (
        "rules: filter 'f' already has 10 inbound rules; allowed at most 10 per direction")
    assert model.new_rule(flt, "outbound", priority="11", action="accept").priority == 11


def test_eleventh_source_in_a_session():
    intent = with_sources(example(), "session-01",
                          *(model.Source("port", "in", iface_id=f"vm-{i}") for i in range(9)))
    assert len(intent.session("session-01").sources) == 10
    assert err(model.new_source, intent, "session-01", port="vm-x") == (
        "sources: session 'session-01' already has 10 sources; allowed at most 10")


def test_fourth_session_on_a_source_port():
    intent = add_session(example(), "session-03", target="target-02", priority="3")
    src = model.new_source(intent, "session-03", port="vm-230", direction="out")
    assert src == model.Source("port", "out", iface_id="vm-230")
    intent = with_sources(intent, "session-03", src)
    intent = add_session(intent, "session-04", target="target-02", priority="4")
    assert err(model.new_source, intent, "session-04", port="vm-230") == (
        "port: iface vm-230 is already a source of 3 sessions (session-01, session-02, "
        "session-03); allowed at most 3")


def test_same_source_twice_in_a_session():
    assert err(model.new_source, example(), "session-01", port="vm-230", direction="out") == (
        "source: vm-230 is already a source of session 'session-01'")


def test_port_both_source_and_target():
    intent = example()
    assert err(model.new_source, intent, "session-01", port="vm-164") == (
        "port: iface vm-164 is target 'target-01'; a port cannot be both a source and a target")
    assert err(model.new_target, intent, "t3", port="vm-230") == (
        "port: iface vm-230 is a source of session 'session-01'; a port cannot be both a "
        "source and a target")


def test_duplicate_names_and_targets():
    intent = example()
    assert err(model.new_target, intent, "target-01", vxlan="10.0.0.1") == (
        "target name: a target named 'target-01' already exists")
    assert err(model.new_filter, intent, "filter-01") == (
        "filter name: a filter named 'filter-01' already exists")
    assert err(model.new_session, intent, "session-01", target="target-01", priority="5") == (
        "session name: a session named 'session-01' already exists")
    assert err(model.new_target, intent, "t3", port="vm-164") == (
        "port: iface vm-164 is already target 'target-01'")


# ------------------------------------------------------------ rule fields


def rule(**kw):
    kw.setdefault("priority", "1")
    kw.setdefault("action", "accept")
    return model.new_rule(model.Filter("f"), "inbound", **kw)


@pytest.mark.parametrize("kw,message", [
    ({"protocol": "icmp", "dst_port": "80"},
     "dst-port: port ranges need protocol tcp or udp, not icmp"),
    ({"protocol": "all", "src_port": "1/200"},
     "src-port: port ranges need protocol tcp or udp, not all"),
    ({"protocol": "47", "dst_port": "80"},
     "dst-port: port ranges need protocol tcp or udp, not 47"),
    ({"ethertype": "ipv6", "src": "10.0.0.0/8"},
     "src: 10.0.0.0/8 is an IPv4 CIDR but the rule's ethertype is ipv6; use an ipv6 CIDR"),
    ({"src": "10.0.0.0/8", "dst": "2001:db8::/32"},
     "dst: 2001:db8::/32 is an IPv6 CIDR but the rule's ethertype is ipv4; use an ipv4 CIDR"),
    ({"protocol": "tcp", "dst_port": "2000-1000"},
     "dst-port: '2000-1000' has its minimum 2000 above its maximum 1000"),
    ({"protocol": "udp", "src_port": "200/1"},
     "src-port: '200/1' has its minimum 200 above its maximum 1"),
    ({"protocol": "tcp", "dst_port": "70000"},
     "dst-port: port 70000 in '70000' is out of range; allowed 0..65535, or -1/-1 for any port"),
    ({"protocol": "tcp", "dst_port": "-2/5"},
     "dst-port: port -2 in '-2/5' is out of range; allowed 0..65535, or -1/-1 for any port"),
    ({"protocol": "tcp", "dst_port": "1-2-3"},
     "dst-port: '1-2-3' is not a port range; use PORT, MIN-MAX, MIN/MAX (0..65535) or -1/-1 "
     "or all for any port"),
    ({"protocol": "tcp", "dst_port": "http"},
     "dst-port: 'http' is not a port range; use PORT, MIN-MAX, MIN/MAX (0..65535) or -1/-1 "
     "or all for any port"),
    ({"src": "192.168.0.300/24"},
     "src: '192.168.0.300/24' is not a CIDR; use ADDRESS/PREFIX such as 192.168.0.0/24 or "
     "2001:db8::/64"),
    ({"dst": "10.0.0.0/33"},
     "dst: '10.0.0.0/33' is not a CIDR; use ADDRESS/PREFIX such as 192.168.0.0/24 or "
     "2001:db8::/64"),
    ({"dst": "any"},
     "dst: 'any' is not a CIDR; use ADDRESS/PREFIX such as 192.168.0.0/24 or 2001:db8::/64"),
    ({"src": "192.168.0.1/24"}, "src: '192.168.0.1/24' has host bits set; did you mean "
     "192.168.0.0/24?"),
    ({"protocol": "icmp", "ethertype": "ipv6"},
     "protocol: icmp is IPv4 only; use icmpv6 for ethertype ipv6"),
    ({"protocol": "icmpv6", "ethertype": "ipv4"},
     "protocol: icmpv6 is IPv6 only; use icmp for ethertype ipv4"),
    ({"protocol": "sctp"}, "protocol: 'sctp' is not allowed; use all, tcp, udp, icmp, icmpv6 or "
     "an IP protocol number 0..255"),
    ({"protocol": "256"}, "protocol: 256 is out of range; allowed 0..255"),
    ({"ethertype": "arp"}, "ethertype: 'arp' is not allowed; use one of ipv4, ipv6"),
    ({"action": "drop"}, "action: 'drop' is not allowed; use one of accept, reject"),
])
def test_rule_field_errors(kw, message):
    assert err(rule, **kw) == message


def test_bad_rule_direction():
    assert err(model.new_rule, model.Filter("f"), "ingress", priority="1", action="accept") == (
        "direction: 'ingress' is not allowed; use one of inbound, outbound")


@pytest.mark.parametrize("text,expected", [
    ("1234", PortRange(1234, 1234)), ("1000-2000", PortRange(1000, 2000)),
    ("1/200", PortRange(1, 200)), ("80/80", PortRange(80, 80)), ("0-65535", PortRange(0, 65535)),
    ("-1/-1", None), ("all", None), ("ALL", None),
])
def test_port_range_spellings(text, expected):
    assert model.parse_port_range("dst-port", text) == expected


def test_rule_defaults_and_inference():
    assert rule(src="2001:db8::1").ethertype == "ipv6"
    assert rule(src="2001:db8::1").src == "2001:db8::1/128"
    assert rule(protocol="icmpv6").ethertype == "ipv6"
    assert rule(dst="10.1.2.3").dst == "10.1.2.3/32"
    r = rule(protocol="TCP", src_port="-1/-1", dst_port="all")
    assert (r.protocol, r.src_port, r.dst_port) == (6, None, None)
    assert rule(protocol="6", dst_port="80").dst_port == PortRange(80, 80)
    assert rule(protocol="all", ethertype="ipv6").describe() == "1 accept all ipv6"


# ------------------------------------------------------------ targets and sources


@pytest.mark.parametrize("kw,message", [
    ({}, "target type: give exactly one of --port IFACE_ID, --nic CHASSIS:IFNAME, --vxlan IP, "
     "--erspan IP or --group IP[,IP...]"),
    ({"port": "a", "vxlan": "10.0.0.1"},
     "target type: give exactly one of --port IFACE_ID, --nic CHASSIS:IFNAME, --vxlan IP, "
     "--erspan IP or --group IP[,IP...]"),
    ({"vxlan": "10.0.0"}, "vxlan: '10.0.0' is not an IP address; use an IPv4 or IPv6 unicast "
     "address"),
    ({"vxlan": "224.0.0.1"}, "vxlan: '224.0.0.1' is not a unicast address; use an IPv4 or IPv6 "
     "unicast address"),
    ({"nic": "eth1"}, "nic: 'eth1' is not CHASSIS:IFNAME; the chassis is a host name and IFNAME "
     "1 to 15 letters, digits, '.', '_' or '-'"),
    ({"nic": "host-b:averyveryverylongname"}, "nic: 'host-b:averyveryverylongname' is not "
     "CHASSIS:IFNAME; the chassis is a host name and IFNAME 1 to 15 letters, digits, '.', '_' "
     "or '-'"),
    ({"port": "has space"}, "port: 'has space' is not an iface-id; use 1 to 255 printable "
     "characters without blanks"),
])
def test_target_errors(kw, message):
    assert err(model.new_target, example(), "t3", **kw) == message


@pytest.mark.parametrize("nic", ["tapgre", "tapvxc", "tapvxlan", "taperspan", "tpi0123456789",
                                 "tpta0b1c2d3e4"])
def test_nic_targets_cannot_take_the_agents_port_names(nic):
    assert err(model.new_target, example(), "t3", nic=f"host-a:{nic}") == (
        f"nic: {nic!r} is reserved for the agent's own ports (tapgre, tapvxc, tapvxlan, "
        "taperspan, "
        "tpi<hex> and tpt<hex>); use the name of a host NIC")


def test_nic_targets_cannot_be_the_tap_bridge_and_look_alikes_are_fine():
    assert err(model.new_target, example(), "t3", nic="host-a:brtap") == (
        "nic: 'brtap' is the agent's tap bridge; use the name of a host NIC")
    for fine in ("tap0", "tapgre0", "tpi0", "tpt-eth1"):
        assert model.new_target(example(), "t3", nic=f"host-a:{fine}").nic == fine


def test_vswitch_source_on_the_tap_bridge_is_refused():
    assert err(model.new_source, example(), "session-01", vswitch="host-a:brtap") == (
        "vswitch: brtap is the agent's tap bridge, which carries mirrored copies; use an "
        "integration bridge such as br-int")


@pytest.mark.parametrize("name,ip,message", [
    ("host-b", "not-an-ip", "tunnel_ip: 'not-an-ip' is not an IP address; use an IPv4 or IPv6 "
     "unicast address"),
    ("host-b", "", "tunnel_ip: '' is not an IP address; use an IPv4 or IPv6 unicast address"),
    ("host-b", "127.0.0.1", "tunnel_ip: '127.0.0.1' is not a unicast address; use an IPv4 or "
     "IPv6 unicast address"),
    ("", "10.0.0.1", "name: '' is not a host name"),
    ("a b", "10.0.0.1", "name: 'a b' is not a host name"),
])
def test_stored_chassis_rows_are_judged(name, ip, message):
    assert err(model.check_chassis, name, ip) == message
    model.check_chassis("host-b", "10.255.0.2")
    model.check_chassis("host-b", "2001:db8::2")


def test_stored_targets_and_sources_are_judged():
    assert err(model.check_stored_target, model.Target("t", "nic", 1, chassis="h",
                                                       nic="tapgre")).startswith(
        "nic: 'tapgre' is reserved for the agent's own ports")
    assert err(model.check_stored_target, model.Target("t", "port", 1)) == (
        "iface_id: '' is not an iface-id; use 1 to 255 printable characters without blanks")
    assert err(model.check_stored_target, model.Target("t", "vxlan", 1, remote_ip="x")) == (
        "remote_ip: 'x' is not an IP address; use an IPv4 or IPv6 unicast address")
    assert err(model.check_stored_source, model.Source("vswitch", chassis="h")).startswith(
        "vswitch: 'h:' is not CHASSIS:BRIDGE[:VLAN]")
    model.check_stored_target(model.Target("t", "nic", 1, chassis="h", nic="eth1"))
    model.check_stored_source(model.Source("port", "in", iface_id="vm-1"))


def test_target_kinds():
    intent = example()
    t = model.new_target(intent, "t3", nic="host-b:eth1")
    assert (t.type, t.chassis, t.nic, t.tunnel_key, t.enabled) == ("nic", "host-b", "eth1", 3, False)
    t = model.new_target(intent, "t4", vxlan="2001:db8::7", enabled=True)
    assert (t.type, t.remote_ip, t.enabled) == ("vxlan", "2001:db8::7", True)


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "sess/1"])
def test_bad_names(name):
    assert err(model.new_filter, example(), name) == (
        f"filter name: {name!r} is not allowed; use 1 to 64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit")


@pytest.mark.parametrize("kw,message", [
    ({}, "source: give exactly one of --port IFACE_ID or --vswitch CHASSIS:BRIDGE[:VLAN]"),
    ({"port": "vm-1", "direction": "ingress"},
     "direction: 'ingress' is not allowed; use one of in, out, both"),
    ({"vswitch": "host-a"}, "vswitch: 'host-a' is not CHASSIS:BRIDGE[:VLAN]; the chassis is a "
     "host name, BRIDGE 1 to 15 letters, digits, '.', '_' or '-', VLAN 0..4095"),
    ({"vswitch": "host-a:br-int:4096"}, "vlan: 4096 is out of range; allowed 0..4095"),
    ({"vswitch": "host-a:br-int", "direction": "in"},
     "direction: applies to --port sources only; a --vswitch source takes everything the bridge "
     "(or VLAN) carries"),
])
def test_source_errors(kw, message):
    assert err(model.new_source, example(), "session-01", **kw) == message


def test_vswitch_source():
    src = model.new_source(example(), "session-01", vswitch="host-a:br-int:100")
    assert (src.type, src.chassis, src.bridge, src.vlan, src.key) == (
        "vswitch", "host-a", "br-int", 100, "host-a:br-int:100")
    assert model.new_source(example(), "session-01", port="vm-9").direction == "both"


# ------------------------------------------------------------ deletes and unknown names


def test_delete_in_use():
    intent = example()
    assert err(model.check_del, intent, "filter", "filter-01") == (
        "filter: filter 'filter-01' is used by session(s) session-01; delete those sessions first")
    assert err(model.check_del, intent, "target", "target-02") == (
        "target: target 'target-02' is used by session(s) session-02; delete those sessions first")
    unused = model.Intent.of(intent.targets.values(), intent.filters.values())
    assert model.check_del(unused, "target", "target-02").name == "target-02"


def test_unknown_names():
    intent = example()
    assert err(model.new_session, intent, "s", target="nope", priority="7") == (
        "target: no target named 'nope'")
    assert err(model.new_session, intent, "s", target="target-01", filter="nope",
               priority="7") == "filter: no filter named 'nope'"
    assert err(model.new_source, intent, "nope", port="vm-1") == "session: no session named 'nope'"
    assert err(model.find_source, intent, "session-01", "vm-9") == (
        "source: session 'session-01' has no source 'vm-9'")
    assert err(model.find_rule, intent.filter("filter-01"), "outbound", "1") == (
        "priority: filter 'filter-01' has no outbound rule with priority 1")
    assert err(model.check_del, intent, "filter", "nope") == "filter: no filter named 'nope'"
    assert err(intent.target, "nope") == "target: no target named 'nope'"


def test_allocation_takes_the_lowest_free_value():
    intent = example()
    s = model.new_session(intent, "s", target="target-01", priority="9")
    assert s.vni == 3
    assert model.free_number("vni", [1, 2, 4], (1, 10)) == 3
    assert err(model.free_number, "vni", [1, 2], (1, 2)) == "vni: every value in 1..2 is in use"


def test_fourth_session_on_a_vswitch_source():
    intent = example()
    sessions = list(intent.sessions.values())
    vs = model.Source("vswitch", "both", chassis="host-a", bridge="br-int", vlan=5)
    for i in range(3):
        sessions.append(model.Session(f"v{i}", 10 + i, 1, "target-02", sources=(vs,)))
    sessions.append(model.Session("v3", 20, 1, "target-02"))
    intent = model.Intent.of(intent.targets.values(), intent.filters.values(), sessions)
    assert err(model.new_source, intent, "v3", vswitch="host-a:br-int:5") == (
        "vswitch: host-a:br-int:5 is already a source of 3 sessions (v0, v1, v2); allowed at most 3")
    assert model.new_source(intent, "v3", vswitch="host-a:br-int:6").vlan == 6
