"""What every target kind answers (see the package's docstring)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from sdnagent import model


class Kind:
    """A kind of mirror target.  Subclasses set the class attributes and the methods."""

    name: str  # the target's ``type`` in tapdb
    option: str  # tapctl target-add's option giving where it is
    metavar: str
    help: str
    has_status = True  # a chassis hosts it and says whether copies reach it
    reads_sources = False  # new() judges it against the sources of the same iface
    reads_tunnel_ips = False  # new() judges it against the chassis's tunnel addresses

    def new(self, intent: "model.Intent", name: str, key: int, value: str, enabled: bool,
            tunnel_ips: Mapping[str, str]) -> "model.Target":
        """A new target of this kind at ``value`` (the option's argument), judged against
        ``intent`` and the chassis's tunnel addresses; IntentError naming the field."""
        raise NotImplementedError

    def check_stored(self, target: "model.Target") -> None:
        """IntentError unless a stored target has this kind's fields, well formed."""
        raise NotImplementedError

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
