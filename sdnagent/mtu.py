"""What an encapsulation adds to a copy, and when copies outgrow the underlay (pure).

A copy leaves a chassis as an IP packet on the underlay: the outer IP header,
the encapsulation's headers, then the copy (the mirrored frame from its
Ethernet header on, cut to the session's packet length).  It fits when that
packet is at most the underlay's MTU; OVS does not fragment tunnel packets, so
one that does not fit is lost on the way.  The figures are the headers OVS
3.1 writes (the tests measure them on real copies):

- VXLAN: UDP 8 + VXLAN 8;
- GRE with a key (between chassis, and to GRE collectors): GRE 4 + key 4;
- ERSPAN type II: GRE 4 + sequence number 4 + ERSPAN II 8;
- ERSPAN type III: GRE 4 + sequence number 4 + ERSPAN III 12 (no platform
  sub-header);

plus 20 bytes of IPv4 or 40 of IPv6 header.
"""
from __future__ import annotations

import ipaddress
from typing import Optional

OUTER_IP = {4: 20, 6: 40}
HEADERS = {"vxlan": 16, "gre": 8, "erspan1": 16, "erspan2": 20}
WORDS = {"vxlan": "VXLAN", "gre": "GRE", "erspan1": "ERSPAN type II",
         "erspan2": "ERSPAN type III"}
MTU = (68, 65535)  # what an underlay MTU may be


def overhead(encap: str, dst: str) -> int:
    """The bytes ``encap`` adds to a copy sent to ``dst``, its outer IP header included."""
    return HEADERS[encap] + OUTER_IP[ipaddress.ip_address(dst).version]


def warning(packet_length: Optional[int], encap: str, dst: str, mtu: int,
            chassis: str) -> Optional[str]:
    """Why copies of this length, sent by ``encap`` to ``dst`` from ``chassis`` whose
    underlay MTU is ``mtu``, may not fit; None when they do."""
    added = overhead(encap, dst)
    safe = mtu - added
    if packet_length is not None and packet_length <= safe:
        return None
    what = ("whole frames" if packet_length is None else
            f"copies of packet length {packet_length}")
    family = ipaddress.ip_address(dst).version
    return (f"{what} can exceed the underlay MTU {mtu} of chassis {chassis} after "
            f"{WORDS[encap]} over IPv{family} ({added} bytes); the largest safe packet "
            f"length is {safe}")
