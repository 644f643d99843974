"""A collector group: up to 16 collectors at their own addresses behind one target, as a
cloud's load balancer of analysers.  Each connection's copies go to one enabled member
(both directions to the same one); members are added, removed, enabled and disabled one
at a time, and each such change moves only the connections of that member (see
:mod:`sdnagent.targets.collector`).  Members are kept in the target's options as
``member:<ip>`` = ``enabled`` or ``disabled``, beside ``encap``."""
from __future__ import annotations

import ipaddress
from typing import Optional

from sdnagent.compile.delivery import Delivery, Status
from sdnagent.targets import collector, erspan
from sdnagent.targets.base import Option

MAX_MEMBERS = 16
MEMBER = "member:"
STATES = ("enabled", "disabled")
ENCAP = Option("--encap", "vxlan|gre|erspan", "how copies reach a --group's members (default "
               "vxlan)")
MEMBER_ACTIONS = ("add", "del", "enable", "disable")


def members(target) -> dict[str, str]:
    """A group's members (address -> enabled or disabled), in address order."""
    found = {k[len(MEMBER):]: v for k, v in target.options if k.startswith(MEMBER)}
    return dict(sorted(found.items(), key=lambda kv: _order(kv[0])))


def _order(ip: str) -> tuple:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (2, ip)
    return (addr.version, addr.packed)


def _options(encap: str, by_ip: dict[str, str], settings: Optional[collector.Erspan]
             ) -> tuple[tuple[str, str], ...]:
    out = {"encap": encap, **{MEMBER + ip: state for ip, state in by_ip.items()}}
    if settings is not None:
        out.update(settings.options())
    return tuple(sorted(out.items()))


class GroupKind(collector.CollectorKind):
    name = "group"
    option = "--group"
    metavar = "IP[,IP...]"
    help = (f"a collector group of 1..{MAX_MEMBERS} collectors' IPs: each connection to one "
            "enabled member")
    extra = (ENCAP, erspan.VERSION, erspan.INDEX, erspan.HARDWARE_ID)

    def new(self, intent, name, key, value, enabled, tunnel_ips, extra):
        from sdnagent import model
        encap = model.parse_choice("encap", extra.get("encap") or "vxlan", collector.ENCAPS)
        settings = self._erspan(encap, extra)
        by_ip: dict[str, str] = {}
        for text in value.split(","):
            ip = collector.address("group", text.strip(), tunnel_ips)
            if ip in by_ip:
                raise model.IntentError("group", f"{ip} is given twice")
            by_ip[ip] = "enabled"
        if len(by_ip) > MAX_MEMBERS:
            raise model.IntentError("group", f"{len(by_ip)} members; allowed at most "
                                    f"{MAX_MEMBERS}")
        return model.Target(name, self.name, key, enabled=enabled,
                            options=_options(encap, by_ip, settings))

    @staticmethod
    def _erspan(encap: str, extra) -> Optional[collector.Erspan]:
        from sdnagent import model
        if encap == "erspan":
            return collector.parse_erspan(extra.get("version"), extra.get("index"),
                                          extra.get("hardware_id"), "--encap erspan")
        for flag in ("version", "index", "hardware_id"):
            if extra.get(flag) is not None:
                option = flag.replace("_", "-")
                raise model.IntentError(option, f"--{option} is for ERSPAN only (--encap "
                                        "erspan)")
        return None

    def with_member(self, target, action: str, text: str, tunnel_ips):
        """``target`` with member ``text`` added, removed, enabled or disabled."""
        import dataclasses

        from sdnagent import model
        action = model.parse_choice("action", action, MEMBER_ACTIONS)
        by_ip = members(target)
        opts = dict(target.options)
        if action == "add":
            ip = collector.address("member", text, tunnel_ips)
            if ip in by_ip:
                raise model.Conflict("member", f"{ip} is already a member of group "
                                        f"{target.name!r}")
            if len(by_ip) >= MAX_MEMBERS:
                raise model.IntentError("member", f"group {target.name!r} has {len(by_ip)} "
                                        f"members; allowed at most {MAX_MEMBERS}")
            opts[MEMBER + ip] = "enabled"
        else:
            ip = model.parse_ip("member", text)
            if ip not in by_ip:
                raise model.NotFound("member", f"group {target.name!r} has no member {ip}")
            if action == "del":
                if len(by_ip) == 1:
                    raise model.IntentError("member", f"{ip} is the last member of group "
                                            f"{target.name!r}; delete the target instead")
                del opts[MEMBER + ip]
            else:
                opts[MEMBER + ip] = action + "d"
        return dataclasses.replace(target, options=tuple(sorted(opts.items())))

    def members(self, target):
        return tuple(members(target))

    def check_stored(self, target):
        from sdnagent import model
        opts = dict(target.options)
        encap = model.parse_choice("encap", opts.get("encap", ""), collector.ENCAPS)
        if encap == "erspan":
            collector.stored_erspan(opts)
        by_ip = members(target)
        if not 1 <= len(by_ip) <= MAX_MEMBERS:
            raise model.IntentError("group", f"{len(by_ip)} members; allowed 1..{MAX_MEMBERS}")
        for ip, state in by_ip.items():
            if model.parse_ip("member", ip) != ip:
                raise model.IntentError("member", f"{ip!r} is not written as tapctl writes it")
            model.parse_choice(f"member {ip}", state, STATES)

    def check_session(self, target, session):
        if dict(target.options).get("encap") == "erspan":
            collector.check_session_id(target, session)

    def where(self, target):
        from sdnagent import model
        encap = dict(target.options).get("encap", "")
        if encap == "erspan":
            try:
                encap = collector.stored_erspan(dict(target.options)).describe()
            except model.IntentError as exc:
                encap = f"ERSPAN not valid: {exc}"
        listed = ", ".join(ip + ("" if state == "enabled" else " (disabled)")
                           for ip, state in members(target).items())
        return f"group of {len(members(target))} by {encap}: {listed}"

    def deliver(self, target, session, inv):
        from sdnagent import model
        opts = dict(target.options)
        encap = opts["encap"]
        settings = collector.stored_erspan(opts) if encap == "erspan" else None
        live = [ip for ip, state in members(target).items() if state == "enabled"]
        for ip in live:
            why = model.collector_at_chassis(ip, inv.chassis_ips)
            if why:
                return Status("error", f"target {target.name}: member {why}")
        if not live:
            return Status("error", f"target {target.name}: no member of the group is enabled")
        legs = tuple(collector.leg(ip, encap, session, settings, member=ip) for ip in live)
        return Delivery(legs, (collector.tunnel(encap),), collector.slots(live))

    def words(self, target, session, leg):
        return f"member {leg.member} of target {target.name} (group) {leg.how}"


KIND = GroupKind()
