"""A collector's own IP address, reached by VXLAN (UDP 4789) with the session's VNI: no
chassis hosts it, so none reports its status (its sources' statuses say whether copies
leave)."""
from __future__ import annotations

from sdnagent.targets.base import Kind


class VxlanKind(Kind):
    name = "vxlan"
    option = "--vxlan"
    metavar = "IP"
    help = ("a collector's IP (not a chassis's tunnel address), reached by VXLAN with the "
            "session VNI")
    has_status = False
    reads_tunnel_ips = True

    def new(self, intent, name, key, value, enabled, tunnel_ips):
        from sdnagent import model
        ip = model.parse_ip("vxlan", value)
        why = model.collector_at_chassis(ip, tunnel_ips)
        if why:
            raise model.IntentError("vxlan", why)
        return model.Target(name, self.name, key, remote_ip=ip, enabled=enabled)

    def check_stored(self, target):
        from sdnagent import model
        model.parse_ip("remote_ip", target.remote_ip or "")

    def where(self, target):
        return f"vxlan {target.remote_ip}"


KIND = VxlanKind()
