"""A VM's vNIC, by its iface-id: lives where a chassis says the iface is bound."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from sdnagent.compile.delivery import Status
from sdnagent.targets.base import Kind, locally, via_chassis


class PortKind(Kind):
    name = "port"
    option = "--port"
    metavar = "IFACE_ID"
    help = "a VM vNIC, by its iface-id"
    reads_sources = True
    names_iface = True

    def new(self, intent, name, key, value, enabled, tunnel_ips, extra):
        from sdnagent import model
        iface = model.parse_iface_id("port", value)
        for t in intent.targets.values():
            if t.type == self.name and t.iface_id == iface:
                raise model.Conflict("port", f"iface {iface} is already target {t.name!r}")
        using = intent.sessions_of_port(iface)
        if using:
            raise model.Conflict("port", f"iface {iface} is a source of session "
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

    def local(self, target, inv):
        here = inv.ports.get(target.iface_id or "")
        return here.port if here is not None and here.bridge == inv.tap_bridge else None

    def deliver(self, target, session, inv):
        port = self.local(target, inv)
        if port is not None:
            return locally(port, target, inv.chassis)
        hosts = sorted(c for c in inv.bindings.get(target.iface_id or "", ()) if c != inv.chassis)
        if len(hosts) > 1:
            # each chassis speaks only for itself (tapdb's RBAC), so two claims cannot be told
            # apart: copies go to neither rather than perhaps to the wrong one
            return Status("error", f"target {target.name}: iface {target.iface_id} is claimed "
                          f"by chassis {' and '.join(hosts)}; copies wait until only one has it")
        if not hosts:
            return Status("error", f"target {target.name}: iface {target.iface_id} not found on "
                          "any chassis")
        if hosts[0] in inv.chassis_ips or hosts[0] in inv.rejected_chassis:
            return via_chassis(target, hosts[0], inv)
        return Status("error", f"target {target.name}: iface {target.iface_id} is on chassis "
                      f"{hosts[0]}, which has no tunnel IP registered")


KIND = PortKind()
