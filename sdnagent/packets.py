"""Build and read the frames the lab injects and captures.

Just enough of Ethernet, IPv4/IPv6, TCP/UDP/ICMP, GRE and VXLAN to write
test traffic and to say, in one line, what a target received.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import Optional


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, proto: str = "tcp",
          sport: int = 40000, dport: int = 80, payload: bytes = b"", ttl: int = 64) -> bytes:
    """An Ethernet frame carrying TCP, UDP or ICMP(v6) over IPv4 or IPv6."""
    src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
    if proto == "tcp":
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0) + payload
        number = 6
    elif proto == "udp":
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        number = 17
    elif proto in ("icmp", "icmpv6"):
        kind = 8 if src.version == 4 else 128
        l4 = struct.pack("!BBHHH", kind, 0, 0, 1, 1) + payload
        number = 1 if src.version == 4 else 58
    else:
        raise ValueError(proto)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, number, len(l4))
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, ttl, number, 0,
                             src.packed, dst.packed)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        ethertype = 0x0800
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(l4), number)
        header = struct.pack("!IHBB16s16s", 6 << 28, len(l4), number, ttl, src.packed, dst.packed)
        ethertype = 0x86DD
    offset = {6: 16, 17: 6, 1: 2, 58: 2}[number]
    if number != 1:
        l4 = l4[:offset] + struct.pack("!H", _checksum(pseudo + l4)) + l4[offset + 2:]
    else:
        l4 = l4[:offset] + struct.pack("!H", _checksum(l4)) + l4[offset + 2:]
    return mac(dst_mac) + mac(src_mac) + struct.pack("!H", ethertype) + header + l4


@dataclasses.dataclass(frozen=True)
class Summary:
    """What one captured frame is, outer and (for a tunnel) inner."""

    length: int
    ethertype: int
    src: str = ""
    dst: str = ""
    proto: str = ""
    sport: int = 0
    dport: int = 0
    vni: Optional[int] = None  # VXLAN
    gre_key: Optional[int] = None
    inner: Optional["Summary"] = None
    inner_bytes: bytes = b""

    def __str__(self) -> str:
        text = f"{self.length} bytes"
        if self.proto in ("tcp", "udp"):
            text += f" {self.proto} {self.src}:{self.sport} > {self.dst}:{self.dport}"
        elif self.proto:
            text += f" {self.proto} {self.src} > {self.dst}"
        elif self.src:
            text += f" ip {self.src} > {self.dst}"
        else:
            text += f" ethertype {self.ethertype:#06x}"
        if self.vni is not None:
            text += f" VXLAN vni {self.vni}"
        if self.gre_key is not None:
            text += f" GRE key {self.gre_key}"
        if self.inner is not None:
            text += f" [inner: {self.inner}]"
        return text


def gre(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, key: int, inner: bytes) -> bytes:
    """``inner`` in GRE (transparent Ethernet, with a key) over IPv4 or IPv6, as a chassis
    sends a copy; the source address is whatever the sender writes."""
    l4 = struct.pack("!HHI", 0x2000, 0x6558, key) + inner
    src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
    if src.version == 6:
        header = struct.pack("!IHBB16s16s", 6 << 28, len(l4), 47, 64, src.packed, dst.packed)
        return mac(dst_mac) + mac(src_mac) + struct.pack("!H", 0x86DD) + header + l4
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, 47, 0,
                         src.packed, dst.packed)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return mac(dst_mac) + mac(src_mac) + struct.pack("!H", 0x0800) + header + l4


def parse(data: bytes) -> Summary:
    """Read a frame; VXLAN (UDP 4789/4790) and GRE (transparent Ethernet) are opened."""
    if len(data) < 14:
        return Summary(len(data), 0)
    ethertype = struct.unpack("!H", data[12:14])[0]
    ip = data[14:]
    if ethertype == 0x0800 and len(ip) >= 20:
        ihl = (ip[0] & 0x0F) * 4
        number, src, dst = ip[9], ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20])
        l4 = ip[ihl:]
    elif ethertype == 0x86DD and len(ip) >= 40:
        number, src, dst = ip[6], ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40])
        l4 = ip[40:]
    else:
        return Summary(len(data), ethertype)
    base = dict(length=len(data), ethertype=ethertype, src=str(src), dst=str(dst))
    if number in (6, 17) and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        name = "tcp" if number == 6 else "udp"
        if number == 17 and dport in (4789, 4790) and len(l4) >= 16:
            vni = struct.unpack("!I", l4[12:16])[0] >> 8
            inner = l4[16:]
            return Summary(**base, proto=name, sport=sport, dport=dport, vni=vni,
                           inner=parse(inner), inner_bytes=inner)
        return Summary(**base, proto=name, sport=sport, dport=dport)
    if number == 47 and len(l4) >= 4:
        flags, proto = struct.unpack("!HH", l4[:4])
        off, key = 4, None
        if flags & 0x8000:
            off += 4
        if flags & 0x2000:
            key = struct.unpack("!I", l4[off:off + 4])[0]
            off += 4
        if flags & 0x1000:
            off += 4
        inner = l4[off:]
        return Summary(**base, proto="gre", gre_key=key, inner=parse(inner), inner_bytes=inner)
    names = {1: "icmp", 58: "icmpv6"}
    return Summary(**base, proto=names.get(number, str(number)))
