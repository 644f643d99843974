"""A collector's own IP address, reached by VXLAN (UDP 4789) with the session's VNI."""
from __future__ import annotations

from sdnagent.compile.delivery import Delivery, Status
from sdnagent.targets import collector


class VxlanKind(collector.CollectorKind):
    name = "vxlan"
    option = "--vxlan"
    metavar = "IP"
    help = ("a collector's IP (not a chassis's tunnel address), reached by VXLAN with the "
            "session VNI")

    def new(self, intent, name, key, value, enabled, tunnel_ips, extra):
        from sdnagent import model
        return model.Target(name, self.name, key, enabled=enabled,
                            remote_ip=collector.address("vxlan", value, tunnel_ips))

    def check_stored(self, target):
        from sdnagent import model
        model.parse_ip("remote_ip", target.remote_ip or "")

    def where(self, target):
        return f"vxlan {target.remote_ip}"

    def deliver(self, target, session, inv):
        from sdnagent import model
        # written past tapctl, or the chassis registered after the target: set aside
        why = model.collector_at_chassis(target.remote_ip or "", inv.chassis_ips)
        if why:
            return Status("error", f"target {target.name}: {why}")
        ip = target.remote_ip or ""
        return Delivery((collector.leg(ip, "vxlan", session),), (collector.tunnel("vxlan"),))


KIND = VxlanKind()
