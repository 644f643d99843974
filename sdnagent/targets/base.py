"""What every target kind answers (see the package's docstring)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional, Union

from sdnagent.compile.delivery import Delivery, Leg, Status, TUNNEL_PORT, ip_field

if TYPE_CHECKING:
    from sdnagent import model
    from sdnagent.compile.compiler import Inventory


@dataclasses.dataclass(frozen=True)
class Option:
    """A tapctl target-add option a kind takes beside its own (``--version``)."""

    flag: str
    metavar: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


class Kind:
    """A kind of mirror target.  Subclasses set the class attributes and the methods."""

    name: str  # the target's ``type`` in tapdb
    option: str  # tapctl target-add's option giving where it is
    metavar: str
    help: str
    extra: tuple[Option, ...] = ()  # the other options it takes
    max_sessions = 10  # sessions that may deliver to one target of this kind
    has_status = True  # a chassis hosts it and says whether copies reach it
    reads_sources = False  # new() judges it against the sources of the same iface
    reads_tunnel_ips = False  # new() judges it against the chassis's tunnel addresses
    on_brtap = False  # the agent puts a port of the host (a NIC) on brtap for it
    names_iface = False  # its option names a VM's port (which a project must have)

    def new(self, intent: "model.Intent", name: str, key: int, value: str, enabled: bool,
            tunnel_ips: Mapping[str, str], extra: Mapping[str, Optional[str]]
            ) -> "model.Target":
        """A new target of this kind at ``value`` (the option's argument) with the
        ``extra`` options given, judged against ``intent`` and the chassis's tunnel
        addresses; IntentError naming the field."""
        raise NotImplementedError

    def check_stored(self, target: "model.Target") -> None:
        """IntentError unless a stored target has this kind's fields, well formed."""
        raise NotImplementedError

    def check_session(self, target: "model.Target", session: "model.Session") -> None:
        """IntentError unless ``session`` can deliver to ``target`` (a field it cannot
        carry, as a VNI too wide for an ERSPAN session ID)."""

    def where(self, target: "model.Target") -> str:
        """Where it is, as people read it: "port vm-164"."""
        raise NotImplementedError

    def hosts(self, target: "model.Target",
              bindings: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
        """The chassis it lives on, as far as tapdb knows (none for a collector that no
        chassis hosts)."""
        return ()

    def lives_on(self, target: "model.Target", chassis: str,
                 local_ifaces: frozenset[str]) -> bool:
        """Whether it lives on ``chassis``, whose switch holds ``local_ifaces``."""
        return False

    def iface(self, target: "model.Target") -> Optional[str]:
        """The iface-id chassis publish a binding for, when it is a VM's port."""
        return None

    def members(self, target: "model.Target") -> tuple[str, ...]:
        """The collectors it spreads connections over (a group's members), else ()."""
        return ()

    def local(self, target: "model.Target", inv: "Inventory") -> Union[str, Status, None]:
        """Its port on this chassis's brtap when it lives here; a Status (the target's own:
        its name is not repeated) when it should but cannot; None when it lives elsewhere
        or nowhere."""
        return None

    def deliver(self, target: "model.Target", session: "model.Session", inv: "Inventory"
                ) -> Union[Delivery, Status]:
        """How copies of ``session`` taken on this chassis reach ``target``, or why
        they cannot (a Status naming the target)."""
        raise NotImplementedError

    def words(self, target: "model.Target", session: "model.Session", leg: Leg) -> str:
        """Where a leg of this kind's delivery takes a copy, for ``tapctl trace``: "target
        t1 (port vm-164) on chassis hv-2: GRE key 1 (the target's) from hv-1 to ..."."""
        return f"target {target.name} ({self.where(target)}){leg.how}"


class Unknown(Kind):
    """The kind of a stored target whose type no kind has: refused wherever it is judged."""

    has_status = False
    option = metavar = help = ""

    def __init__(self, name: str):
        self.name = name

    def check_stored(self, target):
        from sdnagent import model, targets
        model.parse_choice("type", target.type, targets.KINDS)

    def where(self, target):
        return f"{target.type} (a kind of target sdnagent does not have)"

    def deliver(self, target, session, inv):
        return Status("error", f"target {target.name}: no kind of target is called "
                      f"{target.type!r}")


def via_chassis(target: "model.Target", chassis: str, inv: "Inventory") -> Union[Delivery, Status]:
    """Copies to a target that lives on another chassis: through the chassis tunnel,
    with the target's key, to that chassis's tunnel address."""
    if chassis in inv.chassis_ips:
        ip = inv.chassis_ips[chassis]
        how = (f"GRE key {target.tunnel_key}" if inv.encap == "gre"
               else f"VXLAN (UDP 4790) VNI {target.tunnel_key}")
        return Delivery((Leg(TUNNEL_PORT[inv.encap],
                             ((ip_field(ip), ip), ("tunnel_id", target.tunnel_key)),
                             how=f" on chassis {chassis}: {how} (the target's) from "
                                 f"{inv.chassis} to {ip}", encap=inv.encap),))
    if chassis in inv.rejected_chassis:
        return Status("error", f"target {target.name}: chassis {chassis} is set aside: "
                      f"{inv.rejected_chassis[chassis]}")
    return Status("error", f"target {target.name}: chassis {chassis} is unknown (no agent "
                  "registered it)")


def locally(port: str, target: "model.Target", chassis: str) -> Delivery:
    return Delivery((Leg(port, how=f", on chassis {chassis} itself"),), local=True)
