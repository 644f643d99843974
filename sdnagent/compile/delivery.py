"""How a session's copies leave brtap for its target: data a target kind computes (pure).

A kind answers :meth:`~sdnagent.targets.base.Kind.deliver` with a
:class:`Delivery`: the tunnel ports brtap needs for it and one or more *legs*
(a port to leave by and the fields to set first).  The compiler turns every
delivery into forward flows the same way, so a new kind that reaches its
target by these means needs no change in the compiler:

- one leg: the forward flow sets its fields and outputs (truncated to the
  session's packet length);
- several legs (a collector group's enabled members): the forward flow hashes
  the copy's connection into one of ``SLOTS`` slots, the target's balance flows
  map each slot to a member, and one member flow per session and member sets
  that member's fields and outputs, so that each member has its own counters.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

CHASSIS_VXLAN_UDP_PORT = 4790  # chassis-to-chassis VXLAN, apart from vxlan targets' 4789
TUNNEL_PORT = {"gre": "tapgre", "vxlan": "tapvxc"}  # the chassis tunnel, by encap
VXLAN_TARGET_PORT = "tapvxlan"
VXLAN_TARGET_UDP_PORT = 4789
GRE_COLLECTOR_PORT = TUNNEL_PORT["gre"]  # one flow-based GRE port a switch can have: shared
ERSPAN_PORT = "taperspan"
SLOTS = 256  # a group's hash slots: each is one member's, rendezvous-assigned


@dataclasses.dataclass(frozen=True)
class Status:
    state: str  # "active", "disabled", "pending" or "error"
    reason: str = ""

    def as_map(self, chassis: str) -> dict[str, str]:
        out = {"state": self.state, "chassis": chassis}
        if self.reason:
            out["reason"] = self.reason
        return out


ACTIVE = Status("active")


@dataclasses.dataclass(frozen=True)
class TunnelPort:
    name: str
    type: str
    options: tuple[tuple[str, str], ...]


def flow_tunnel(name: str, type_: str, *more: tuple[str, str]) -> TunnelPort:
    """A flow-based tunnel port: the destination and key are set by each flow."""
    return TunnelPort(name, type_, tuple(sorted((("key", "flow"), ("remote_ip", "flow"), *more))))


def chassis_tunnel(encap: str) -> TunnelPort:
    if encap == "vxlan":
        return flow_tunnel(TUNNEL_PORT[encap], "vxlan", ("dst_port", str(CHASSIS_VXLAN_UDP_PORT)))
    return flow_tunnel(TUNNEL_PORT[encap], encap)


def ip_field(ip: str) -> str:
    """The tunnel destination field for ``ip``: ``tun_ipv4_dst`` or ``tun_ipv6_dst``."""
    return f"tun_ipv{ipaddress.ip_address(ip).version}_dst"


@dataclasses.dataclass(frozen=True)
class Leg:
    """One way out of brtap: set ``sets``, then leave by ``port``.

    ``direction_field``: a field set to 1 for copies of frames going to a source
    port (egress at its switch port), 0 for the others (ERSPAN type III's D bit).
    ``member``: the group member it reaches (its address), for counters and trace.
    ``how``: what it is, in words (``tapctl trace``).  ``encap``: how it leaves the
    chassis (a key of :data:`sdnagent.mtu.HEADERS`), "" when it does not."""

    port: str
    sets: tuple[tuple[str, Any], ...] = ()
    direction_field: str = ""
    member: str = ""
    how: str = ""
    encap: str = ""

    @property
    def dst(self) -> str:
        """Where a tunnelled leg goes on the underlay."""
        return next(str(v) for f, v in self.sets if f in ("tun_ipv4_dst", "tun_ipv6_dst"))


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What copies of one session need from this chassis to reach its target.

    ``slots``: with several legs, the leg (index) each hash slot goes to."""

    legs: tuple[Leg, ...]
    tunnels: tuple[TunnelPort, ...] = ()
    slots: tuple[int, ...] = ()
    local: bool = False  # the target is a port of brtap itself

    def __post_init__(self) -> None:
        assert self.legs, "a delivery has a leg"
        assert len(self.slots) in ((0,) if len(self.legs) == 1 else ()) + (SLOTS,), self
        assert all(0 <= i < len(self.legs) for i in self.slots), self

    @property
    def balanced(self) -> bool:
        """Whether each connection goes to one of several members (a group)."""
        return bool(self.slots)

    @property
    def leg(self) -> Leg:
        """The one leg of a delivery that does not balance."""
        assert len(self.legs) == 1, self
        return self.legs[0]
