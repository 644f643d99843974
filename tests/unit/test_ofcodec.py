"""The agent's OpenFlow encoder writes exactly os-ken's bytes, and reads its own back.

os-ken is the reference: each test builds the same message with os-ken's
classes (as the agent did before it had an encoder) and compares bytes, and
parses the encoder's flow statistics with os-ken's parser.
"""
from __future__ import annotations

import ipaddress
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import nicira_ext, ofproto_protocol, ofproto_v1_3, ofproto_v1_3_parser

from sdnagent.compile import compiler, flows
from sdnagent.compile.flows import Flow
from sdnagent.switch import ofcodec
from tests.unit.test_compile import compile_all, intents, inventory
from tests.unit.test_model import example

DP = ofproto_protocol.ProtocolDesc(version=ofproto_v1_3.OFP_VERSION)
OFP, PARSER = ofproto_v1_3, ofproto_v1_3_parser


def osken_flow_mod(f: Flow, command: int, xid: int) -> bytes:
    actions, inst = [], []
    for a in f.actions:
        if a[0] == "output":
            actions.append(PARSER.OFPActionOutput(a[1], 0))
        elif a[0] == "output_trunc":
            actions.append(PARSER.NXActionOutputTrunc(port=a[1], max_len=a[2]))
        elif a[0] == "set_field":
            actions.append(PARSER.OFPActionSetField(**{a[1]: a[2]}))
        elif a[0] == "conjunction":
            actions.append(PARSER.NXActionConjunction(clause=a[2], n_clauses=a[3], id_=a[1]))
    if actions:
        inst.append(PARSER.OFPInstructionActions(OFP.OFPIT_APPLY_ACTIONS, actions))
    inst += [PARSER.OFPInstructionGotoTable(a[1]) for a in f.actions if a[0] == "goto"]
    msg = PARSER.OFPFlowMod(DP, cookie=f.cookie, table_id=f.table, command=command,
                            priority=f.priority, match=PARSER.OFPMatch(**dict(f.match)),
                            instructions=inst if command != OFP.OFPFC_DELETE_STRICT else [],
                            out_port=OFP.OFPP_ANY, out_group=OFP.OFPG_ANY)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def osken_bytes(msg, xid: int) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def osken_from_stats(stat) -> Flow:
    """How the agent read os-ken's parsed flow statistics."""
    actions: list[tuple] = []
    for inst in stat.instructions:
        for a in getattr(inst, "actions", ()):
            name = type(a).__name__
            if name == "OFPActionOutput":
                actions.append(("output", a.port))
            elif name == "NXActionOutputTrunc":
                actions.append(("output_trunc", a.port, a.max_len))
            elif name == "OFPActionSetField":
                actions.append(("set_field", a.key, a.value))
            elif name == "NXActionConjunction":
                actions.append(("conjunction", a.id, a.clause, a.n_clauses))
    actions += [("goto", i.table_id) for i in stat.instructions
                if hasattr(i, "table_id") and not hasattr(i, "actions")]
    match = tuple(sorted((k, tuple(map(_text, v)) if isinstance(v, (list, tuple)) else _text(v))
                         for k, v in stat.match.items()))
    actions = [a[:2] + (_text(a[2]),) if a[0] == "set_field" else a for a in actions]
    return Flow(stat.table_id, stat.priority, match, tuple(actions), stat.cookie)


def _text(value):
    """An address as the compiler writes it (os-ken writes IPv4-mapped IPv6 otherwise)."""
    if isinstance(value, str) and ":" in value:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:  # a MAC address
            return value
    return value


# ------------------------------------------------------------ arbitrary flows

PORT = st.integers(1, 0xFFFFFF00)
U16 = st.integers(0, 0xFFFF)


def _net(version: int):
    bits = 32 if version == 4 else 128
    net = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return st.builds(lambda a, n: net((a, n), strict=False),
                     st.integers(0, 2 ** bits - 1), st.integers(1, bits))


def _address(version: int):
    """An exact address, or a masked prefix as the compiler writes it."""
    return _net(version).map(lambda n: str(n.network_address) if n.prefixlen == n.max_prefixlen
                             else (str(n.network_address), str(n.netmask)))


def _port_value():
    masks = st.sampled_from([0xFFFF, 0xFFFE, 0xFF00, 0xFC00, 0x8000])
    return st.one_of(U16, st.tuples(U16, masks).map(lambda vm: (vm[0] & vm[1], vm[1])))


@st.composite
def matches(draw):
    m: dict = {}
    if draw(st.booleans()):
        m["in_port"] = draw(PORT)
    for reg in ("reg0", "reg1", "reg2", "conj_id"):
        if draw(st.booleans()):
            m[reg] = draw(st.integers(0, 2 ** 32 - 1))
    for eth in ("eth_src", "eth_dst"):
        if draw(st.booleans()):
            m[eth] = ":".join(f"{b:02x}" for b in draw(st.binary(min_size=6, max_size=6)))
    if draw(st.booleans()):
        m["tunnel_id"] = draw(st.integers(0, 2 ** 64 - 1))
    tun = draw(st.sampled_from([None, 4, 6]))
    if tun:
        m[f"tun_ipv{tun}_src"] = draw(_address(tun).filter(lambda a: isinstance(a, str)))
    ip = draw(st.sampled_from([None, 4, 6]))
    if ip:
        m["eth_type"] = 0x0800 if ip == 4 else 0x86DD
        for end in ("src", "dst"):
            if draw(st.booleans()):
                m[f"ipv{ip}_{end}"] = draw(_address(ip))
        proto = draw(st.sampled_from([None, 1, 6, 17, 47, 58]))
        if proto is not None:
            m["ip_proto"] = proto
            l4 = {6: "tcp", 17: "udp"}.get(proto)
            for end in ("src", "dst") if l4 else ():
                if draw(st.booleans()):
                    m[f"{l4}_{end}"] = draw(_port_value())
    return tuple(sorted(m.items()))


ACTION = st.one_of(
    st.tuples(st.just("output"), PORT),
    st.tuples(st.just("output_trunc"), U16, st.integers(64, 8500)),
    st.tuples(st.just("set_field"), st.sampled_from(["reg0", "reg1", "reg2"]),
              st.integers(0, 2 ** 32 - 1)),
    st.tuples(st.just("conjunction"), st.integers(0, 2 ** 32 - 1),
              st.integers(0, 62), st.integers(63, 64)),
    st.tuples(st.just("set_field"), st.just("tunnel_id"), st.integers(0, 2 ** 64 - 1)),
    st.tuples(st.just("set_field"), st.just("tun_ipv4_dst"),
              st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("set_field"), st.just("tun_ipv6_dst"),
              st.ip_addresses(v=6).map(str)),
)


@st.composite
def any_flows(draw):
    actions = tuple(draw(st.lists(ACTION, max_size=4)))
    if draw(st.booleans()):
        actions += (("goto", draw(st.integers(0, 254))),)
    return Flow(draw(st.integers(0, 254)), draw(U16), draw(matches()), actions,
                draw(st.integers(0, 2 ** 64 - 1)))


def compiled_flows(intent, inv=None) -> list[Flow]:
    inv = inv or inventory(ports={"vm-1": compiler.LocalPort("vm-1", "br-int", "vm1", 1),
                                  "vm-t": compiler.LocalPort("vm-t", "brtap", "vmt", 2)})
    return sorted(compile_all(intent, inv)[2], key=Flow.sort_key)


# ------------------------------------------------------------ bytes equal os-ken's


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_flows(), st.sampled_from([ofcodec.OFPFC_ADD, ofcodec.OFPFC_DELETE_STRICT]),
       st.integers(0, 2 ** 32 - 1))
def test_flow_mod_bytes_equal_oskens(f, command, xid):
    assert ofcodec.flow_mod(f, command, xid) == osken_flow_mod(f, command, xid)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intents())
def test_every_compiled_flow_encodes_as_osken_does(intent):
    for f in compiled_flows(intent):
        for command in (ofcodec.OFPFC_ADD, ofcodec.OFPFC_DELETE_STRICT):
            assert ofcodec.flow_mod(f, command, 7) == osken_flow_mod(f, command, 7)


def test_the_example_encodes_as_osken_does():
    fl = compiled_flows(example(), inventory())
    assert len(fl) >= 10 and any(a[0] == "output_trunc" for f in fl for a in f.actions)
    for f in fl:
        assert ofcodec.flow_mod(f, ofcodec.OFPFC_ADD, 1) == osken_flow_mod(f, OFP.OFPFC_ADD, 1)


@settings(deadline=None)
@given(st.integers(0, 2 ** 32 - 1), any_flows(), st.integers(0, 2 ** 32 - 2))
def test_bundle_messages_equal_oskens(bid, f, xid):
    flags = OFP.ONF_BF_ATOMIC | OFP.ONF_BF_ORDERED
    for kind in (OFP.ONF_BCT_OPEN_REQUEST, OFP.ONF_BCT_COMMIT_REQUEST,
                 OFP.ONF_BCT_DISCARD_REQUEST):
        assert ofcodec.bundle_ctrl(bid, kind, flags, xid) == osken_bytes(
            PARSER.ONFBundleCtrlMsg(DP, bid, kind, flags, []), xid)
    inner = PARSER.OFPFlowMod(DP, cookie=f.cookie, table_id=f.table,
                              command=OFP.OFPFC_DELETE_STRICT, priority=f.priority,
                              match=PARSER.OFPMatch(**dict(f.match)), instructions=[],
                              out_port=OFP.OFPP_ANY, out_group=OFP.OFPG_ANY)
    assert ofcodec.bundle_add(bid, flags, ofcodec.flow_mod(f, ofcodec.OFPFC_DELETE_STRICT, xid),
                              xid) == osken_bytes(PARSER.ONFBundleAddMsg(DP, bid, flags, inner,
                                                                         []), xid)
    msgs = list(ofcodec.bundle(bid, [f], [f], xid))
    xids = [(xid + k) & 0xFFFFFFFF for k in range(3)]  # wraps
    # what a pass sends: open, then each FlowMod in its bundle-add, as above
    assert msgs == [ofcodec.bundle_ctrl(bid, OFP.ONF_BCT_OPEN_REQUEST, flags, xids[0]),
                    ofcodec.bundle_add(bid, flags, ofcodec.flow_mod(
                        f, ofcodec.OFPFC_DELETE_STRICT, xids[1]), xids[1]),
                    ofcodec.bundle_add(bid, flags, ofcodec.flow_mod(
                        f, ofcodec.OFPFC_ADD, xids[2]), xids[2])]


def test_barrier_and_flow_stats_request_equal_oskens():
    assert ofcodec.barrier(99) == osken_bytes(PARSER.OFPBarrierRequest(DP), 99)
    req = PARSER.OFPFlowStatsRequest(DP, 0, OFP.OFPTT_ALL, OFP.OFPP_ANY, OFP.OFPG_ANY, 0, 0,
                                     PARSER.OFPMatch())
    assert ofcodec.flow_stats_request(5) == osken_bytes(req, 5)


# ------------------------------------------------------------ flow statistics


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_flows(), max_size=5), st.integers(0, 2 ** 62))
def test_flow_stats_round_trip_and_agree_with_oskens_parser(fl, packets):
    body = b"".join(ofcodec.flow_stats_entry(f, packets, packets * 3) for f in fl)
    decoded = list(ofcodec.decode_flow_stats(body))
    assert [d[0] for d in decoded] == fl
    assert all(d[1:] == (packets, packets * 3) for d in decoded)
    offset, parsed = 0, []
    while offset < len(body):
        stat = PARSER.OFPFlowStats.parser(body, offset)
        parsed.append(osken_from_stats(stat))
        offset += stat.length
    assert parsed == fl


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intents())
def test_compiled_flows_round_trip(intent):
    fl = compiled_flows(intent)
    body = b"".join(ofcodec.flow_stats_entry(f) for f in fl)
    assert [d[0] for d in ofcodec.decode_flow_stats(body)] == fl


def test_a_foreign_field_or_action_is_kept_and_deletes_exactly():
    # in_port=3, a metadata match (not a field the agent writes) and a write-actions
    # instruction: decoded into raw forms, and a strict delete writes the match back
    match = PARSER.OFPMatch(in_port=3, metadata=(0x10, 0xF0), vlan_vid=0x1005)
    inst = [PARSER.OFPInstructionActions(OFP.OFPIT_WRITE_ACTIONS,
                                         [PARSER.OFPActionOutput(2, 0)]),
            PARSER.OFPInstructionActions(OFP.OFPIT_APPLY_ACTIONS,
                                         [PARSER.OFPActionPushVlan(0x8100)])]
    mbuf, ibuf = bytearray(), bytearray()
    match.serialize(mbuf, 0)
    for i in inst:
        i.serialize(ibuf, len(ibuf))
    buf = struct.pack("!HBxIIHHHH4xQQQ", 48 + len(mbuf) + len(ibuf), 10, 0, 0, 5, 0, 0, 0,
                      0x1234, 0, 0) + bytes(mbuf) + bytes(ibuf)
    (f, _, _), = ofcodec.decode_flow_stats(buf)
    names = [k for k, _ in f.match]
    assert "in_port" in names and sum(n.startswith(ofcodec.RAW_PREFIX) for n in names) == 2
    assert [a[0] for a in f.actions] == ["unknown", "unknown"]
    delete = ofcodec.flow_mod(f, ofcodec.OFPFC_DELETE_STRICT, 1)
    ref = PARSER.OFPFlowMod(DP, cookie=0x1234, table_id=10, command=OFP.OFPFC_DELETE_STRICT,
                            priority=5, match=match, instructions=[], out_port=OFP.OFPP_ANY,
                            out_group=OFP.OFPG_ANY)
    assert delete == osken_bytes(ref, 1)
    assert f in {f} and flows.diff({f}, set()).delete == (f,)


def test_a_groups_multipath_encodes_as_osken_does_and_reads_back():
    action = ("multipath", "symmetric_l3l4+udp", 0, "modulo_n", 255, 0, 8, "reg4")
    ours = ofcodec._action(action)
    theirs = PARSER.NXActionMultipath(
        fields=3, basis=0,  # OVS's NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, which os-ken does not name
        algorithm=nicira_ext.NX_MP_ALG_MODULO_N, max_link=255, arg=0,
        ofs_nbits=nicira_ext.ofs_nbits(0, 7), dst="reg4")
    buf = bytearray()
    theirs.serialize(buf, 0)
    assert ours == bytes(buf)
    assert list(ofcodec._decode_actions(ours, 0, len(ours))) == [action]


def test_erspan_fields_are_ovs_experimenter_oxms():
    """The bytes ``ovs-ofctl ofp-print`` reads as set_field:2->tun_erspan_ver and
    set_field:0x7->tun_erspan_idx (os-ken has no name for these fields)."""
    for action, raw in ((("set_field", "tun_erspan_ver", 2),
                         "00190010ffff18050000232002000000"),
                        (("set_field", "tun_erspan_idx", 7),
                         "00190010ffff16080000232000000007")):
        assert ofcodec._action(action).hex() == raw
        assert list(ofcodec._decode_actions(bytes.fromhex(raw), 0, 16)) == [action]
