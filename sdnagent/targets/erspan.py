"""A collector's own IP address, reached by ERSPAN type II or III (packet brokers, IDS
appliances, Wireshark): the session's VNI is the ERSPAN session ID."""
from __future__ import annotations

from sdnagent.compile.delivery import Delivery, Status
from sdnagent.targets import collector
from sdnagent.targets.base import Option

VERSION = Option("--version", "1|2", "ERSPAN version of --erspan or --encap erspan: 1 (type "
                 "II) or 2 (type III)")
INDEX = Option("--index", "N", "ERSPAN type II index (port ID, 0..1048575; default 0)")
HARDWARE_ID = Option("--hardware-id", "N", "ERSPAN type III hardware ID (0..63; default 0)")


class ErspanKind(collector.CollectorKind):
    name = "erspan"
    option = "--erspan"
    metavar = "IP"
    help = ("a collector's IP, reached by ERSPAN with the session VNI as session ID "
            "(0..1023)")
    extra = (VERSION, INDEX, HARDWARE_ID)

    def new(self, intent, name, key, value, enabled, tunnel_ips, extra):
        from sdnagent import model
        ip = collector.address("erspan", value, tunnel_ips)
        erspan = collector.parse_erspan(extra.get("version"), extra.get("index"),
                                        extra.get("hardware_id"), "--erspan")
        return model.Target(name, self.name, key, remote_ip=ip, enabled=enabled,
                            options=tuple(sorted(erspan.options().items())))

    def check_stored(self, target):
        from sdnagent import model
        model.parse_ip("remote_ip", target.remote_ip or "")
        collector.stored_erspan(dict(target.options))

    def check_session(self, target, session):
        collector.check_session_id(target, session)

    def where(self, target):
        from sdnagent import model
        try:
            how = collector.stored_erspan(dict(target.options)).describe()
        except model.IntentError as exc:
            how = f"not valid: {exc}"
        return f"erspan {target.remote_ip} ({how})"

    def deliver(self, target, session, inv):
        from sdnagent import model
        why = model.collector_at_chassis(target.remote_ip or "", inv.chassis_ips)
        if why:
            return Status("error", f"target {target.name}: {why}")
        erspan = collector.stored_erspan(dict(target.options))
        return Delivery((collector.leg(target.remote_ip or "", "erspan", session, erspan),),
                        (collector.tunnel("erspan"),))


KIND = ErspanKind()
