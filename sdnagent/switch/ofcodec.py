"""OpenFlow 1.3 bytes for the messages a pass sends, and flows from the replies it reads.

Building os-ken message objects and parsing its replies cost most of a pass
at tens of thousands of flows; the agent only ever sends a few message kinds
(FlowMods with the fields and actions the compiler produces, ONF bundle
control and add, barriers, a flow statistics request) and reads one reply
kind (flow statistics), so it writes and reads them with ``struct``.  The
bytes are those os-ken would write for the same flow (tests/unit/test_ofcodec
checks it); os-ken keeps the connection, the handshake and everything else.

Pure: no I/O, no os-ken.  A match field the agent does not know (a flow that
someone else wrote) is kept as raw OXM bytes, so it can be deleted exactly.
"""
from __future__ import annotations

import functools
import ipaddress
import struct
from typing import Any, Iterable, Iterator, Optional

from sdnagent.compile.flows import Flow, shared

VERSION = 4  # OpenFlow 1.3
OFPT_EXPERIMENTER, OFPT_FLOW_MOD, OFPT_MULTIPART_REQUEST, OFPT_BARRIER_REQUEST = 4, 14, 18, 20
OFPFC_ADD, OFPFC_MODIFY_STRICT, OFPFC_DELETE_STRICT = 0, 2, 4
OFPMP_FLOW, OFPMP_AGGREGATE = 1, 2
OFPTT_ALL = 0xFF
OFPP_ANY, OFPG_ANY, OFP_NO_BUFFER = 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF
OFPMT_OXM = 1
OFPIT_GOTO_TABLE, OFPIT_APPLY_ACTIONS, OFPIT_METER = 1, 4, 6
OFPAT_OUTPUT, OFPAT_SET_FIELD, OFPAT_EXPERIMENTER = 0, 25, 0xFFFF
NX_VENDOR_ID, NXAST_MULTIPATH, NXAST_CONJUNCTION, NXAST_OUTPUT_TRUNC = 0x00002320, 10, 34, 39
MULTIPATH_FIELDS = {"symmetric_l3l4+udp": 3}  # nx_hash_fields
MULTIPATH_ALGORITHMS = {"modulo_n": 0}  # nx_mp_algorithm
ONF_EXPERIMENTER_ID = 0x4F4E4600
ONF_ET_BUNDLE_CONTROL, ONF_ET_BUNDLE_ADD_MESSAGE = 2300, 2301
ONF_BCT_OPEN_REQUEST, ONF_BCT_CLOSE_REQUEST, ONF_BCT_COMMIT_REQUEST = 0, 2, 4
ONF_BCT_DISCARD_REQUEST = 6
ONF_BF_ATOMIC, ONF_BF_ORDERED = 1, 2
OXM_BASIC, NXM_1 = 0x8000, 0x0001

# name -> (OXM class, field, value bytes, kind): the fields the compiler may write
FIELDS: dict[str, tuple[int, int, int, str]] = {
    "in_port": (OXM_BASIC, 0, 4, "int"),
    "eth_dst": (OXM_BASIC, 3, 6, "mac"),
    "eth_src": (OXM_BASIC, 4, 6, "mac"),
    "eth_type": (OXM_BASIC, 5, 2, "int"),
    "ip_proto": (OXM_BASIC, 10, 1, "int"),
    "ipv4_src": (OXM_BASIC, 11, 4, "ip"),
    "ipv4_dst": (OXM_BASIC, 12, 4, "ip"),
    "tcp_src": (OXM_BASIC, 13, 2, "int"),
    "tcp_dst": (OXM_BASIC, 14, 2, "int"),
    "udp_src": (OXM_BASIC, 15, 2, "int"),
    "udp_dst": (OXM_BASIC, 16, 2, "int"),
    "ipv6_src": (OXM_BASIC, 26, 16, "ip"),
    "ipv6_dst": (OXM_BASIC, 27, 16, "ip"),
    "tunnel_id": (OXM_BASIC, 38, 8, "int"),
    "reg0": (NXM_1, 0, 4, "int"),
    "reg1": (NXM_1, 1, 4, "int"),
    "reg2": (NXM_1, 2, 4, "int"),
    "reg3": (NXM_1, 3, 4, "int"),
    "reg4": (NXM_1, 4, 4, "int"),
    "reg5": (NXM_1, 5, 4, "int"),
    "reg6": (NXM_1, 6, 4, "int"),
    "reg7": (NXM_1, 7, 4, "int"),
    "conj_id": (NXM_1, 37, 4, "int"),
    "tun_ipv4_src": (NXM_1, 31, 4, "ip"),
    "tun_ipv4_dst": (NXM_1, 32, 4, "ip"),
    "tun_ipv6_src": (NXM_1, 109, 16, "ip"),
    "tun_ipv6_dst": (NXM_1, 110, 16, "ip"),
}
# OVS's experimenter OXM fields (class 0xffff, Nicira's experimenter ID before the value):
# name -> (field, value bytes); written by set_field only
EXPERIMENTER_FIELDS: dict[str, tuple[int, int]] = {
    "tun_erspan_idx": (11, 4),
    "tun_erspan_ver": (12, 1),
    "tun_erspan_dir": (13, 1),
    "tun_erspan_hwid": (14, 1),
}
_BY_CODE = {(c, f): name for name, (c, f, _, _) in FIELDS.items()}
_EXPERIMENTER_BY_CODE = {f: name for name, (f, _) in EXPERIMENTER_FIELDS.items()}
RAW_PREFIX = "oxm:"  # a field we do not know: "oxm:<class>:<field>:<hasmask>", raw bytes

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")  # header included
_OXM = struct.Struct("!I")
_MATCH_HEAD = struct.Struct("!HH")
_OUTPUT = struct.Struct("!HHIH6x")
_TRUNC = struct.Struct("!HHIHHI")
_CONJUNCTION = struct.Struct("!HHIHBBI")
_MULTIPATH = struct.Struct("!HHIHHH2xHHI2xHI")
_APPLY = struct.Struct("!HH4x")
_GOTO = struct.Struct("!HHB3x")
_METER = struct.Struct("!HHI")
_BUNDLE_CTRL = struct.Struct("!BBHIIIIHH")
_BUNDLE_ADD = struct.Struct("!BBHIIII2xH")
_BUNDLED_FLOW_MOD = struct.Struct("!BBHIIII2xH" + "BBHIQQBBHHHIIIH2x")  # bundle_add(flow_mod)
_FLOW_STATS_REQ = struct.Struct("!BBHIHH4xB3xII4xQQ")
_MP_REPLY = struct.Struct("!HH4x")
_FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")
_PAD = [b"\0" * n for n in range(8)]


def _pad8(n: int) -> bytes:
    return _PAD[-n % 8]


def _rank(cls: int, field: int) -> tuple[bool, int]:
    """os-ken writes match fields sorted by (class << 7 | field): NXM before OXM basic,
    and so eth_type before the IP fields that need it."""
    return (cls == 0xFFFF, (cls << 7) | field)


_RANKS = {name: _rank(c, f) for name, (c, f, _, _) in FIELDS.items()}


def _order(item: tuple[str, Any]) -> tuple[bool, int]:
    rank = _RANKS.get(item[0])
    if rank is None:
        cls, field, _ = (int(x, 0) for x in item[0][len(RAW_PREFIX):].split(":"))
        return _rank(cls, field)
    return rank


def _value_bytes(kind: str, size: int, value: Any) -> bytes:
    if kind == "ip":
        return ipaddress.ip_address(value).packed
    if kind == "mac":
        return bytes.fromhex(value.replace(":", ""))
    return int(value).to_bytes(size, "big")


@functools.lru_cache(maxsize=1 << 16)  # values repeat across flows: ports, types, addresses
def _oxm(name: str, value: Any) -> bytes:
    if name.startswith(RAW_PREFIX):
        cls, field, hasmask = (int(x, 0) for x in name[len(RAW_PREFIX):].split(":"))
        return _OXM.pack((cls << 16) | (field << 9) | (hasmask << 8) | len(value)) + value
    if name in EXPERIMENTER_FIELDS:
        field, size = EXPERIMENTER_FIELDS[name]
        return (_OXM.pack((0xFFFF << 16) | (field << 9) | (4 + size))
                + struct.pack("!I", NX_VENDOR_ID) + int(value).to_bytes(size, "big"))
    cls, field, size, kind = FIELDS[name]
    if isinstance(value, tuple):
        v, m = (_value_bytes(kind, size, x) for x in value)
        v = bytes(a & b for a, b in zip(v, m))
        return _OXM.pack((cls << 16) | (field << 9) | 0x100 | (2 * size)) + v + m
    return _OXM.pack((cls << 16) | (field << 9) | size) + _value_bytes(kind, size, value)


def encode_match(match: Iterable[tuple[str, Any]]) -> bytes:
    fields = b"".join([_oxm(k, v) for k, v in sorted(match, key=_order)])
    length = 4 + len(fields)
    return _MATCH_HEAD.pack(OFPMT_OXM, length) + fields + _pad8(length)


def _action(a: tuple) -> bytes:
    if a[0] == "output":
        return _OUTPUT.pack(OFPAT_OUTPUT, 16, a[1], 0)
    if a[0] == "output_trunc":
        return _TRUNC.pack(OFPAT_EXPERIMENTER, 16, NX_VENDOR_ID, NXAST_OUTPUT_TRUNC, a[1], a[2])
    if a[0] == "conjunction":  # ("conjunction", id, clause from 0, clauses)
        return _CONJUNCTION.pack(OFPAT_EXPERIMENTER, 16, NX_VENDOR_ID, NXAST_CONJUNCTION, a[2],
                                 a[3], a[1])
    if a[0] == "multipath":  # ("multipath", fields, basis, algorithm, max_link, arg, bits, reg)
        _, fields, basis, algorithm, max_link, arg, bits, reg = a
        cls, field, size, _ = FIELDS[reg]
        return _MULTIPATH.pack(OFPAT_EXPERIMENTER, 32, NX_VENDOR_ID, NXAST_MULTIPATH,
                               MULTIPATH_FIELDS[fields], basis, MULTIPATH_ALGORITHMS[algorithm],
                               max_link, arg, bits - 1, (cls << 16) | (field << 9) | size)
    if a[0] == "set_field":
        tlv = _oxm(a[1], a[2])
        length = 4 + len(tlv)
        return struct.pack("!HH", OFPAT_SET_FIELD, length + (-length % 8)) + tlv + _pad8(length)
    raise AssertionError(f"cannot encode action {a!r}")


@functools.lru_cache(maxsize=1 << 14)
def encode_instructions(actions: tuple[tuple, ...]) -> bytes:
    """Meter, apply-actions (when there are any), then goto: the order of OpenFlow's
    instructions, in which the compiler lists them and OVS reports them."""
    out = b"".join(_METER.pack(OFPIT_METER, 8, a[1]) for a in actions if a[0] == "meter")
    applied = b"".join(_action(a) for a in actions if a[0] not in ("goto", "meter"))
    out += _APPLY.pack(OFPIT_APPLY_ACTIONS, 8 + len(applied)) + applied if applied else b""
    for a in actions:
        if a[0] == "goto":
            out += _GOTO.pack(OFPIT_GOTO_TABLE, 8, a[1])
    return out


def _flow_mod_body(f: Flow, command: int) -> bytes:
    """A FlowMod's match and, unless it deletes, its instructions."""
    body = encode_match(f.match)
    if command != OFPFC_DELETE_STRICT:
        body += encode_instructions(f.actions)
    return body


def flow_mod(f: Flow, command: int, xid: int) -> bytes:
    body = _flow_mod_body(f, command)
    return _FLOW_MOD.pack(VERSION, OFPT_FLOW_MOD, 48 + len(body), xid, f.cookie, 0, f.table,
                          command, 0, 0, f.priority, OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY,
                          0) + body


def bundle_add(bundle_id: int, flags: int, inner: bytes, xid: int) -> bytes:
    """``inner`` carries the same xid (OF 1.3 bundle extension, 3.3)."""
    return _BUNDLE_ADD.pack(VERSION, OFPT_EXPERIMENTER, 24 + len(inner), xid,
                            ONF_EXPERIMENTER_ID, ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id,
                            flags) + inner


def bundle_ctrl(bundle_id: int, kind: int, flags: int, xid: int) -> bytes:
    return _BUNDLE_CTRL.pack(VERSION, OFPT_EXPERIMENTER, 24, xid, ONF_EXPERIMENTER_ID,
                             ONF_ET_BUNDLE_CONTROL, bundle_id, kind, flags)


def barrier(xid: int) -> bytes:
    return _HEADER.pack(VERSION, OFPT_BARRIER_REQUEST, 8, xid)


def _stats_request(kind: int, xid: int) -> bytes:
    """A flow or aggregate statistics request covering every flow of every table."""
    return (_FLOW_STATS_REQ.pack(VERSION, OFPT_MULTIPART_REQUEST, 56, xid, kind, 0,
                                 OFPTT_ALL, OFPP_ANY, OFPG_ANY, 0, 0)
            + encode_match(()))


def flow_stats_request(xid: int) -> bytes:
    """Every flow of every table."""
    return _stats_request(OFPMP_FLOW, xid)


def aggregate_stats_request(xid: int) -> bytes:
    """The flow count (and packets, bytes) of every table."""
    return _stats_request(OFPMP_AGGREGATE, xid)


OFPT_METER_MOD = 29
OFPMC_ADD, OFPMC_MODIFY, OFPMC_DELETE = 0, 1, 2
OFPMF_KBPS, OFPMF_PKTPS, OFPMF_STATS = 1, 2, 8
OFPMBT_DROP = 1
OFPMP_METER, OFPMP_METER_CONFIG = 9, 10
OFPM_ALL = 0xFFFFFFFF
_METER_MOD = struct.Struct("!BBHIHHI")
_DROP_BAND = struct.Struct("!HHII4x")
_METER_REQ = struct.Struct("!BBHIHH4xI4x")


def meter_mod(command: int, meter_id: int, kbps: bool, rate: int, xid: int) -> bytes:
    """Add, modify or delete a meter with one drop band at ``rate`` (packets/s, or kbit/s);
    no burst given: OVS makes it one second of the rate."""
    flags = (OFPMF_KBPS if kbps else OFPMF_PKTPS) | OFPMF_STATS
    band = b"" if command == OFPMC_DELETE else _DROP_BAND.pack(OFPMBT_DROP, 16, rate, 0)
    return _METER_MOD.pack(VERSION, OFPT_METER_MOD, 16 + len(band), xid, command,
                           0 if command == OFPMC_DELETE else flags, meter_id) + band


def meter_request(kind: int, xid: int) -> bytes:
    """Every meter's statistics (OFPMP_METER) or configuration (OFPMP_METER_CONFIG)."""
    return _METER_REQ.pack(VERSION, OFPT_MULTIPART_REQUEST, 24, xid, kind, 0, OFPM_ALL)


def bundle(bundle_id: int, deletes: Iterable[Flow], adds: Iterable[Flow],
           first_xid: int) -> Iterator[bytes]:
    """Open, then the FlowMods (deletes, then adds), numbered from ``first_xid`` on:
    atomic and ordered.  A generator, so that the switch can take the first
    messages while the rest are written.  The commit is sent apart, once the
    switch has accepted every message."""
    flags = ONF_BF_ATOMIC | ONF_BF_ORDERED
    xid = first_xid
    yield bundle_ctrl(bundle_id, ONF_BCT_OPEN_REQUEST, flags, xid)
    pack = _BUNDLED_FLOW_MOD.pack
    for command, flows in ((OFPFC_DELETE_STRICT, deletes), (OFPFC_ADD, adds)):
        for f in flows:
            xid = (xid + 1) & 0xFFFFFFFF
            body = _flow_mod_body(f, command)
            yield (pack(VERSION, OFPT_EXPERIMENTER, 72 + len(body), xid, ONF_EXPERIMENTER_ID,
                        ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, flags, VERSION, OFPT_FLOW_MOD,
                        48 + len(body), xid, f.cookie, 0, f.table, command, 0, 0, f.priority,
                        OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY, 0)
                   + body)


# ---------------------------------------------------------------- decoding


def _field_value(kind: str, raw: bytes) -> Any:
    if kind == "ip":
        return str(ipaddress.ip_address(raw))
    if kind == "mac":
        return ":".join(f"{b:02x}" for b in raw)
    return int.from_bytes(raw, "big")


def _tlv(tlv: bytes) -> tuple[str, Any]:
    """One OXM field (header and value) as (name, value), decoded once."""
    known = _TLVS.get(tlv)
    if known is None:
        if len(_TLVS) > 1 << 16:
            _TLVS.clear()
        known = _TLVS[tlv] = _read_oxm(_OXM.unpack_from(tlv)[0], tlv[4:])
    return known


_TLVS: dict[bytes, tuple[str, Any]] = {}  # a dump repeats ports, types and addresses


def _read_oxm(header: int, raw: bytes) -> tuple[str, Any]:
    cls, field, hasmask = header >> 16, (header >> 9) & 0x7F, (header >> 8) & 1
    if cls == 0xFFFF and not hasmask and raw[:4] == struct.pack("!I", NX_VENDOR_ID):
        name = _EXPERIMENTER_BY_CODE.get(field)
        if name is not None and len(raw) == 4 + EXPERIMENTER_FIELDS[name][1]:
            return name, int.from_bytes(raw[4:], "big")
    name = _BY_CODE.get((cls, field))
    if name is None or len(raw) != FIELDS[name][2] * (1 + hasmask):
        return f"{RAW_PREFIX}{cls:#06x}:{field}:{hasmask}", raw
    kind, size = FIELDS[name][3], FIELDS[name][2]
    if hasmask:
        return name, (_field_value(kind, raw[:size]), _field_value(kind, raw[size:]))
    return name, _field_value(kind, raw)


def decode_match(data: bytes, offset: int) -> tuple[tuple[tuple[str, Any], ...], int]:
    """The match at ``offset`` and the length it takes, padding included."""
    length = (data[offset + 2] << 8) | data[offset + 3]
    pos, end = offset + 4, offset + length
    fields = []
    while pos + 4 <= end:
        size = data[pos + 3]
        fields.append(_tlv(data[pos:pos + 4 + size]))
        pos += 4 + size
    fields.sort()
    return tuple(fields), length + (-length % 8)


def _decode_actions(data: bytes, pos: int, end: int) -> Iterator[tuple]:
    while pos + 4 <= end:
        kind, length = struct.unpack_from("!HH", data, pos)
        if length < 8:
            yield ("unknown", bytes(data[pos:end]).hex())
            return
        if kind == OFPAT_OUTPUT:
            yield ("output", struct.unpack_from("!I", data, pos + 4)[0])
        elif kind == OFPAT_SET_FIELD:
            yield ("set_field", *_tlv(data[pos + 4:pos + 8 + data[pos + 7]]))
        elif (kind == OFPAT_EXPERIMENTER and length == 16
              and struct.unpack_from("!IH", data, pos + 4) == (NX_VENDOR_ID, NXAST_OUTPUT_TRUNC)):
            port, max_len = struct.unpack_from("!HI", data, pos + 10)
            yield ("output_trunc", port, max_len)
        elif (kind == OFPAT_EXPERIMENTER and length == 32 and struct.unpack_from(
                "!IH", data, pos + 4) == (NX_VENDOR_ID, NXAST_MULTIPATH)
                and _multipath(data, pos) is not None):
            yield _multipath(data, pos)
        elif (kind == OFPAT_EXPERIMENTER and length == 16 and struct.unpack_from(
                "!IH", data, pos + 4) == (NX_VENDOR_ID, NXAST_CONJUNCTION)):
            clause, n_clauses, conj_id = struct.unpack_from("!BBI", data, pos + 10)
            yield ("conjunction", conj_id, clause, n_clauses)
        else:  # something the agent never writes: kept visible, so a diff replaces it
            yield ("unknown", bytes(data[pos:pos + length]).hex())
        pos += length


def _multipath(data: bytes, pos: int) -> Optional[tuple]:
    """A multipath action as the compiler writes it, or None for one it never writes."""
    (_, _, _, _, fields, basis, algorithm, max_link, arg, ofs_nbits,
     dst) = _MULTIPATH.unpack_from(data, pos)
    names = ({v: k for k, v in MULTIPATH_FIELDS.items()}.get(fields),
             {v: k for k, v in MULTIPATH_ALGORITHMS.items()}.get(algorithm),
             _BY_CODE.get((dst >> 16, (dst >> 9) & 0x7F)))
    if None in names or ofs_nbits >> 6 or not names[2].startswith("reg"):
        return None
    return ("multipath", names[0], basis, names[1], max_link, arg, (ofs_nbits & 0x3F) + 1,
            names[2])


def decode_instructions(data: bytes, pos: int, end: int) -> tuple[tuple, ...]:
    blob = bytes(data[pos:end])
    known = _INSTRUCTIONS.get(blob)
    if known is None:
        known = _INSTRUCTIONS[blob] = _read_instructions(blob)
        if len(_INSTRUCTIONS) > 1 << 14:
            _INSTRUCTIONS.clear()
    return known


_INSTRUCTIONS: dict[bytes, tuple[tuple, ...]] = {}  # flows share a handful of action lists


def _read_instructions(data: bytes) -> tuple[tuple, ...]:
    actions: list[tuple] = []
    gotos: list[tuple] = []
    pos, end = 0, len(data)
    while pos + 4 <= end:
        kind, length = struct.unpack_from("!HH", data, pos)
        if length < 8:
            actions.append(("unknown", bytes(data[pos:end]).hex()))
            break
        if kind == OFPIT_APPLY_ACTIONS:
            actions.extend(_decode_actions(data, pos + 8, pos + length))
        elif kind == OFPIT_GOTO_TABLE:
            gotos.append(("goto", data[pos + 4]))
        elif kind == OFPIT_METER and length == 8:
            actions.append(("meter", struct.unpack_from("!I", data, pos + 4)[0]))
        else:
            actions.append(("unknown", bytes(data[pos:pos + length]).hex()))
        pos += length
    return tuple(actions + gotos)


def decode_flow_stats(body: bytes) -> Iterator[tuple[Flow, int, int]]:
    """The flows in one flow statistics reply's body, with their packet and byte counts."""
    body = bytes(body)
    pos, end = 0, len(body)
    flows = _FLOWS
    while pos + _FLOW_STATS.size <= end:
        (length, table, _, _, priority, _, _, _, cookie, packets,
         nbytes) = _FLOW_STATS.unpack_from(body, pos)
        if length < _FLOW_STATS.size:
            raise ValueError(f"flow statistics entry of {length} bytes at offset {pos}")
        # the same flow as in the last dump: the very same object (no decoding at all)
        key = (table, priority, cookie, body[pos + _FLOW_STATS.size:pos + length])
        flow = flows.get(key)
        if flow is None:
            match, used = decode_match(body, pos + _FLOW_STATS.size)
            actions = decode_instructions(body, pos + _FLOW_STATS.size + used, pos + length)
            flow = Flow(table, priority, shared(match), shared(actions), cookie)
            if len(flows) > 1 << 18:
                forget()
            flows[key] = flow
            _SEEN.add(flow)
        yield flow, packets, nbytes
        pos += length


_FLOWS: dict[tuple, Flow] = {}  # a dump after a dump: the same flows, decoded once
_SEEN: set[Flow] = set()  # the flows _FLOWS gives

# The order in which OVS writes match fields in its replies (lib/nx-match.c): not
# os-ken's, so a flow reads back with other bytes than it was sent with.
_OVS_ORDER = {name: i for i, name in enumerate((
    "conj_id", "in_port", "eth_src", "eth_dst", "eth_type", "ipv4_src", "ipv4_dst",
    "ipv6_src", "ipv6_dst", "ip_proto",
    "tcp_src", "tcp_dst", "udp_src", "udp_dst", "tunnel_id", "tun_ipv4_src", "tun_ipv4_dst",
    "tun_ipv6_src", "tun_ipv6_dst", "reg0", "reg1", "reg2"))}


def forget() -> None:
    """Drop every cached decoding (as a new process starts)."""
    _FLOWS.clear()
    _SEEN.clear()
    _TLVS.clear()
    _INSTRUCTIONS.clear()


def keep(live: set[Flow]) -> None:
    """Forget the decodings and encodings of every flow but ``live`` ones (what brtap holds
    now): after large sessions are gone, they should not outlive them."""
    global _FLOWS
    _FLOWS = {k: f for k, f in _FLOWS.items() if f in live}
    _SEEN.intersection_update(live)
    _TLVS.clear()
    _INSTRUCTIONS.clear()
    _oxm.cache_clear()
    encode_instructions.cache_clear()


def remember(flows: Iterable[Flow]) -> None:
    """Expect these flows (what we believe the switch holds) in the next dump: their
    bytes as OVS writes them, so that reading them back decodes nothing.  A wrong
    guess only costs a decode: an entry is used only for exactly the bytes it names."""
    for f in flows:
        if f in _SEEN or any(name not in _OVS_ORDER for name, _ in f.match):
            continue
        _SEEN.add(f)
        ordered = sorted(f.match, key=lambda kv: _OVS_ORDER[kv[0]])
        fields = b"".join([_oxm(k, v) for k, v in ordered])
        length = 4 + len(fields)
        body = (_MATCH_HEAD.pack(OFPMT_OXM, length) + fields + _pad8(length)
                + encode_instructions(f.actions))
        _FLOWS[(f.table, f.priority, f.cookie, body)] = f
    if len(_FLOWS) > 1 << 18:
        forget()


def flow_stats_entry(f: Flow, packets: int = 0, nbytes: int = 0) -> bytes:
    """One entry as a switch reports it (for tests and simulations)."""
    body = encode_match(f.match) + encode_instructions(f.actions)
    return _FLOW_STATS.pack(_FLOW_STATS.size + len(body), f.table, 0, 0, f.priority, 0, 0, 0,
                            f.cookie, packets, nbytes) + body
