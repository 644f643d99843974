"""Collectors at an IP address of their own, reached by VXLAN, GRE or ERSPAN: what the
vxlan, erspan and group kinds share (pure).

Each encapsulation has one flow-based tunnel port on brtap, the destination and
key set per flow: ``tapvxlan`` (VXLAN on UDP 4789, the session's VNI),
``tapgre`` (GRE keyed with the session's VNI; the same port as the chassis
tunnel's when that is GRE: a switch has one flow-based GRE port) and
``taperspan`` (ERSPAN, whose version, index, hardware ID and direction are
set per flow too, so one port carries type II and type III).

A group spreads connections over its enabled members: a symmetric hash of the
copy's addresses, protocol and ports (OVS's ``symmetric_l3l4+udp``, so both
directions of a connection hash alike; IP fragments without their ports, other
frames by their MAC addresses) picks one of ``SLOTS`` slots, and each
slot belongs to the member that ranks it highest (rendezvous hashing): a member
disabled or removed hands only its own slots to the others, and one added takes
only the slots it now ranks highest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Optional

from sdnagent import model
from sdnagent.compile.delivery import (ERSPAN_PORT, GRE_COLLECTOR_PORT, SLOTS, VXLAN_TARGET_PORT,
                                       Leg, TunnelPort, flow_tunnel, ip_field)
from sdnagent.targets.base import Kind

ENCAPS = ("vxlan", "gre", "erspan")
ERSPAN_VERSIONS = {"1": "type II", "2": "type III"}
ERSPAN_SESSION_ID = (0, 1023)  # 10 bits: a session's VNI is its ERSPAN session ID
ERSPAN_INDEX = (0, (1 << 20) - 1)
ERSPAN_HWID = (0, 63)
_ERSPAN_OPTIONS = (("erspan_dir", "flow"), ("erspan_hwid", "flow"), ("erspan_idx", "flow"),
                   ("erspan_ver", "flow"))


class CollectorKind(Kind):
    """A collector at an address of its own: no chassis hosts it, so none reports its
    status (its sources' statuses say whether copies leave)."""

    max_sessions = 200
    has_status = False
    reads_tunnel_ips = True

    def words(self, target, session, leg):
        return f"target {target.name} {leg.how}"


def address(field: str, text: str, tunnel_ips: Mapping[str, str]) -> str:
    """A collector's address: an IP that is no registered chassis's tunnel address."""
    ip = model.parse_ip(field, text)
    why = model.collector_at_chassis(ip, tunnel_ips)
    if why:
        raise model.IntentError(field, why)
    return ip


def tunnel(encap: str) -> TunnelPort:
    """The flow-based port brtap sends ``encap`` copies to collectors by."""
    if encap == "vxlan":
        return flow_tunnel(VXLAN_TARGET_PORT, "vxlan")
    if encap == "gre":
        return flow_tunnel(GRE_COLLECTOR_PORT, "gre")
    return flow_tunnel(ERSPAN_PORT, "erspan", *_ERSPAN_OPTIONS)


@dataclasses.dataclass(frozen=True)
class Erspan:
    """An ERSPAN target's header fields: version 1 (type II, with an index) or 2 (type
    III, with a hardware ID, and the direction bit from the hook)."""

    version: int
    index: int = 0
    hwid: int = 0

    def options(self) -> dict[str, str]:
        out = {"erspan_version": str(self.version)}
        if self.version == 1:
            out["erspan_index"] = str(self.index)
        else:
            out["erspan_hardware_id"] = str(self.hwid)
        return out

    def describe(self) -> str:
        return (f"ERSPAN {ERSPAN_VERSIONS[str(self.version)]}"
                + (f", index {self.index}" if self.version == 1 else
                   f", hardware ID {self.hwid}"))


def parse_erspan(version: Optional[str], index: Optional[str], hwid: Optional[str],
                 what: str) -> Erspan:
    """``--version``, ``--index`` and ``--hardware-id`` of an ERSPAN target (``what``
    names the option that makes it one)."""
    if version is None:
        raise model.IntentError("version", f"{what} needs --version 1 (ERSPAN type II) or 2 "
                                "(type III)")
    ver = int(model.parse_choice("version", version, tuple(ERSPAN_VERSIONS)))
    if ver == 1 and hwid is not None:
        raise model.IntentError("hardware-id", "a hardware ID is for ERSPAN type III "
                                "(--version 2) only")
    if ver == 2 and index is not None:
        raise model.IntentError("index", "an index is for ERSPAN type II (--version 1) only; "
                                "type III has --hardware-id")
    return Erspan(ver, model.parse_int("index", index or "0", ERSPAN_INDEX),
                  model.parse_int("hardware-id", hwid or "0", ERSPAN_HWID))


def stored_erspan(options: Mapping[str, str]) -> Erspan:
    """The ERSPAN fields of a stored target's options, judged as tapctl judges them."""
    version = options.get("erspan_version")
    return parse_erspan(version, options.get("erspan_index") if version == "1" else None,
                        options.get("erspan_hardware_id") if version == "2" else None,
                        "an erspan target")


def check_session_id(target: model.Target, session: model.Session) -> None:
    if not ERSPAN_SESSION_ID[0] <= session.vni <= ERSPAN_SESSION_ID[1]:
        raise model.IntentError("vni", f"{session.vni} cannot be the ERSPAN session ID of "
                                f"target {target.name} (10 bits); give a vni of "
                                f"{ERSPAN_SESSION_ID[0]}..{ERSPAN_SESSION_ID[1]}")


def leg(ip: str, encap: str, session: model.Session, erspan: Optional[Erspan] = None,
        member: str = "") -> Leg:
    """How copies of ``session`` reach the collector at ``ip`` by ``encap``."""
    sets: list[tuple[str, object]] = [(ip_field(ip), ip), ("tunnel_id", session.vni)]
    direction_field = ""
    if encap == "vxlan":
        how = f"by VXLAN (UDP 4789) to {ip}, VNI {session.vni} (the session's)"
    elif encap == "gre":
        how = f"by GRE to {ip}, key {session.vni} (the session's VNI)"
    else:
        assert erspan is not None
        sets.append(("tun_erspan_ver", erspan.version))
        if erspan.version == 1:
            sets.append(("tun_erspan_idx", erspan.index))
        else:
            sets.append(("tun_erspan_hwid", erspan.hwid))
            direction_field = "tun_erspan_dir"
        how = (f"by {erspan.describe()} to {ip}, session ID {session.vni} (the session's VNI)"
               + (", direction bit 1 for frames to the source port, 0 from it"
                  if erspan.version == 2 else ""))
    return Leg(tunnel(encap).name, tuple(sets), direction_field, member, how,
               encap if encap != "erspan" else f"erspan{erspan.version if erspan else 1}")


def _rank(member: str, slot: int) -> bytes:
    return hashlib.blake2b(f"{member}|{slot}".encode(), digest_size=8).digest()


def slots(members: Sequence[str]) -> tuple[int, ...]:
    """Each slot's member (an index into ``members``): the one that ranks it highest."""
    assert members
    return tuple(max(range(len(members)), key=lambda i: _rank(members[i], s))
                 for s in range(SLOTS))


# ---------------------------------------------------------------- OVS's hash, for trace

_M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _add(h: int, data: int) -> int:
    """lib/hash.h's hash_add (murmur3's mixing step)."""
    data = (data * 0xCC9E2D51) & _M32
    data = _rot(data, 15)
    data = (data * 0x1B873593) & _M32
    h ^= data
    h = _rot(h, 13)
    return (h * 5 + 0xE6546B64) & _M32


def _finish(h: int, final: int) -> int:
    h ^= final
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _host(raw: bytes) -> int:
    """A field in network order, read as the little-endian host OVS runs on reads it."""
    return int.from_bytes(raw, "little")


def connection_hash(eth_type: int, src: Optional[str], dst: Optional[str],
                    ip_proto: Optional[int], src_port: Optional[int],
                    dst_port: Optional[int], basis: int = 0) -> Optional[int]:
    """OVS's ``flow_hash_symmetric_l3l4(flow, basis, inc_udp_ports=true)``: the hash a
    ``multipath`` action takes of an unfragmented IP packet (the forward flow's, basis 0;
    a sample's) (tapctl trace checks it against the switch in the functional tests).
    None for what is not IP: OVS hashes its MAC addresses and VLAN instead, which rules
    do not see."""
    if eth_type not in (0x0800, 0x86DD):
        return None
    size = 4 if eth_type == 0x0800 else 16
    a = ipaddress.ip_address(src or ("0.0.0.0" if size == 4 else "::")).packed
    b = ipaddress.ip_address(dst or ("0.0.0.0" if size == 4 else "::")).packed
    x = bytes(p ^ q for p, q in zip(a, b))
    h = basis
    if size == 4:
        h = _add(h, _host(x))
    else:
        for i in range(0, 16, 8):
            word = _host(x[i:i + 8])
            h = _add(_add(h, word & _M32), word >> 32)
    h = _add(h, ip_proto or 0)
    if ip_proto in (6, 17, 132):
        ports = ((src_port or 0) ^ (dst_port or 0)).to_bytes(2, "big")
        h = _add(h, _host(ports))
    return _finish(h, basis)


def slot_of(hash_value: int) -> int:
    """multipath's ``modulo_n`` over the slots."""
    return hash_value % SLOTS
