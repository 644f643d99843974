"""A host NIC on a named chassis (a physical analyser's port): lives on that chassis."""
from __future__ import annotations

from sdnagent.targets.base import Kind


class NicKind(Kind):
    name = "nic"
    option = "--nic"
    metavar = "CHASSIS:IFNAME"
    help = "a host NIC on a chassis"

    def new(self, intent, name, key, value, enabled, tunnel_ips):
        from sdnagent import model
        chassis, ifname = model.parse_nic(value)
        why = model.reserved_port(ifname)
        if why:
            raise model.IntentError("nic", why)
        for t in intent.targets.values():
            if t.type == self.name and (t.chassis, t.nic) == (chassis, ifname):
                raise model.IntentError("nic", f"{chassis}:{ifname} is already target "
                                        f"{t.name!r}")
        return model.Target(name, self.name, key, chassis=chassis, nic=ifname, enabled=enabled)

    def check_stored(self, target):
        from sdnagent import model
        model.parse_nic(f"{target.chassis or ''}:{target.nic or ''}")
        why = model.reserved_port(target.nic or "")
        if why:
            raise model.IntentError("nic", why)

    def where(self, target):
        return f"nic {target.chassis}:{target.nic}"

    def hosts(self, target, bindings):
        return (target.chassis or "",)

    def lives_on(self, target, chassis, local_ifaces):
        return target.chassis == chassis


KIND = NicKind()
