"""A VM's vNIC, by its iface-id: lives where a chassis says the iface is bound."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from sdnagent.targets.base import Kind


class PortKind(Kind):
    name = "port"
    option = "--port"
    metavar = "IFACE_ID"
    help = "a VM vNIC, by its iface-id"
    reads_sources = True

    def new(self, intent, name, key, value, enabled, tunnel_ips):
        from sdnagent import model
        iface = model.parse_iface_id("port", value)
        for t in intent.targets.values():
            if t.type == self.name and t.iface_id == iface:
                raise model.IntentError("port", f"iface {iface} is already target {t.name!r}")
        using = intent.sessions_of_port(iface)
        if using:
            raise model.IntentError("port", f"iface {iface} is a source of session "
                                    f"{using[0]!r}; a port cannot be both a source and a target")
        return model.Target(name, self.name, key, iface_id=iface, enabled=enabled)

    def check_stored(self, target):
        from sdnagent import model
        model.parse_iface_id("iface_id", target.iface_id or "")

    def where(self, target):
        return f"port {target.iface_id}"

    def hosts(self, target, bindings: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
        return tuple(bindings.get(target.iface_id or "", ()))

    def lives_on(self, target, chassis, local_ifaces):
        return target.iface_id in local_ifaces

    def iface(self, target) -> Optional[str]:
        return target.iface_id


KIND = PortKind()
