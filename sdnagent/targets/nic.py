"""A host NIC on a named chassis (a physical analyser's port): lives on that chassis, where
the agent puts the NIC on brtap."""
from __future__ import annotations

from sdnagent.compile.delivery import Status
from sdnagent.targets.base import Kind, locally, via_chassis


class NicKind(Kind):
    name = "nic"
    option = "--nic"
    metavar = "CHASSIS:IFNAME"
    help = "a host NIC on a chassis"
    on_brtap = True

    def new(self, intent, name, key, value, enabled, tunnel_ips, extra):
        from sdnagent import model
        chassis, ifname = model.parse_nic(value)
        why = model.reserved_port(ifname)
        if why:
            raise model.IntentError("nic", why)
        for t in intent.targets.values():
            if t.type == self.name and (t.chassis, t.nic) == (chassis, ifname):
                raise model.Conflict("nic", f"{chassis}:{ifname} is already target "
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

    def local(self, target, inv):
        from sdnagent import model
        if target.chassis != inv.chassis:
            return None
        nic = target.nic or ""
        why = model.reserved_port(nic, inv.tap_bridge)
        if why:
            return Status("error", f"nic {why}")
        bridge = inv.port_bridges.get(nic)
        if bridge is not None and bridge != inv.tap_bridge:
            return Status("error", f"nic {nic} is already a port of bridge {bridge} on "
                          f"chassis {inv.chassis}; a nic target needs a NIC that no other bridge "
                          "uses")
        return nic

    def deliver(self, target, session, inv):
        here = self.local(target, inv)
        if isinstance(here, Status):
            return Status(here.state, f"target {target.name}: {here.reason}")
        if here is not None:
            return locally(here, target, inv.chassis)
        return via_chassis(target, target.chassis or "", inv)


KIND = NicKind()
