"""tapctl: the operator's command line for tapdb, in the manner of ovn-nbctl."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from sdnagent import controls, liveness, model, targets, tls, trace
from sdnagent.tapdb import ops, rpc, schema

DEFAULT_DB = f"unix:{schema.DEFAULT_DIR}/tapdb.sock"
DEFAULT_TIMEOUT = 10.0
EXIT_NOT_APPLIED = 3  # the change is committed, but not every live chassis applied it in time


def _status_text(status: tuple[tuple[str, str], ...], iface: Optional[str] = None,
                 bound: Optional[frozenset[str]] = None) -> str:
    """The agent-written status, with the chassis that wrote it (the row's, which RBAC
    checked); with none yet, say whether any chassis has the iface."""
    st = dict(status)
    if not st:
        if iface and bound is not None and iface not in bound:
            return f"pending (iface {iface} not found on any chassis)"
        return "pending"
    text = st.get("state", "pending")
    if st.get("reason"):
        text += f": {st['reason']}"
    on = f" on {st['chassis']}" if st.get("chassis") else ""
    if st.get("was"):  # stale: what its writer last said
        text += f" (was {st['was']}{on})"
    elif on:
        text += f" ({on[1:]})"
    return text


def _onoff(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


def _source_line(src: model.Source, bound: Optional[frozenset[str]],
                 counted: Optional[dict[str, int]] = None) -> str:
    what = f"port {src.key} direction {src.direction}" if src.type == "port" else f"vswitch {src.key}"
    line = f"{what}, {_onoff(src.enabled)}, status {_status_text(src.status, src.iface_id, bound)}"
    c = counted or {}
    if f"source {src.key} packets" in c:
        line += (f"; {c[f'source {src.key} packets']} copies, "
                 f"{c[f'source {src.key} unmatched']} matched no rule, "
                 f"{c[f'source {src.key} rejected']} rejected")
    return line


def _target_line(t: model.Target, bound: Optional[frozenset[str]]) -> str:
    line = f"{t.where()}, key {t.tunnel_key}, {_onoff(t.enabled)}"
    if not t.kind.has_status:  # no chassis hosts it: its sources' status says if copies leave
        return line
    return f"{line}, status {_status_text(t.status, t.iface_id, bound)}"


def _filter_lines(flt: model.Filter, indent: str,
                  counted: Optional[dict[str, int]] = None) -> list[str]:
    lines = []
    for direction in model.RULE_DIRECTIONS:
        rules = flt.rules(direction)
        if not rules:
            lines.append(f"{indent}{direction}: no rules (mirrors nothing)")
            continue
        lines.append(f"{indent}{direction}:")
        for r in rules:
            hits = (counted or {}).get(f"rule {direction} {r.priority} packets")
            lines.append(f"{indent}  {r.describe()}" + (f" ({hits} hits)" if hits is not None
                                                         else ""))
    return lines


def reporters(by_chassis: dict[str, dict[str, int]]) -> str:
    """Who reported a session's counters, each with the packets it claims: the chassis
    of its ``Session_Stats`` row (RBAC checked it), so an inflated figure has a name."""
    return ", ".join(f"{name}: {values.get('packets', 0)}"
                     for name, values in sorted(by_chassis.items()))


def _capped_by(counted: Optional[dict], session: str) -> str:
    """Which chassis the caps dropped copies on, with how many, and which cap now."""
    out = []
    for name, values in sorted((counted or {}).get(session, {}).items()):
        if values.get("dropped"):
            now = " (dropping now)" if values.get("capped") else ""
            out.append(f"{name}: {values['dropped']}{now}")
    return ", ".join(out)


def summed(counters: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Each session's counters added up over the chassis that reported them."""
    out: dict[str, dict[str, int]] = {}
    for session, by_chassis in counters.items():
        total = out.setdefault(session, {})
        for values in by_chassis.values():
            for key, value in values.items():
                total[key] = total.get(key, 0) + value
    return out


def chassis_json(rows: list[tuple[str, str, str]], beats: dict[str, liveness.Liveness],
                 now: float, mtus: Optional[dict[str, int]] = None) -> list[dict]:
    """Every chassis, with how long ago it was heard from and whether it is alive, silent,
    or beating from the future (its clock ahead: not believed), and its underlay MTU."""
    out = []
    for name, ip, encap in rows:
        beat = beats.get(name)
        why = liveness.silence(name, beats, now)
        future = liveness.ahead(name, beats, now)
        out.append({"name": name, "tunnel_ip": ip, "encap": encap,
                    "tunnel_mtu": (mtus or {}).get(name),
                    "heartbeat_interval": beat.interval if beat else None,
                    "last_heard": max(0, int(now - beat.heartbeat)) if beat and not future
                    else None,
                    "state": "clock ahead" if future else "silent" if why else "alive",
                    "ahead_by": int(beat.heartbeat - now) if beat and future else None,
                    "reason": why})
    return out


def format_show(intent: model.Intent, bound: Optional[frozenset[str]] = None,
                chassis: Optional[list[dict]] = None,
                counted: Optional[dict[str, dict[str, int]]] = None,
                now: Optional[int] = None) -> str:
    """A tree: each session (by priority) with its target, filter rules and sources.

    ``bound``: the iface-ids some chassis has published, when known; ``chassis``:
    :func:`chassis_json`, whose silent members are named at the end; ``counted``:
    counters by session and chassis (:meth:`ops.IntentDb.everything`); ``now`` (ms),
    to say how long a session has left."""
    total = summed(counted or {})
    lines = []
    for sess in sorted(intent.sessions.values(), key=lambda s: s.priority):
        length = f"packet length {sess.packet_length}" if sess.packet_length else "whole frames"
        mine = total.get(sess.name)
        of = "" if sess.project == model.DEFAULT_PROJECT else f" (project {sess.project})"
        lines.append(f"session {sess.name}{of}: priority {sess.priority}, vni {sess.vni}, {length}, "
                     f"{_onoff(sess.enabled)}"
                     + (f"; mirrored {mine.get('packets', 0)} packets ({mine.get('bytes', 0)} "
                        f"bytes; {reporters((counted or {})[sess.name])})" if mine else ""))
        held = controls.describe(sess, now)
        if mine and mine.get("dropped"):
            held.append(f"the caps dropped {mine['dropped']} copies: "
                        f"{_capped_by(counted, sess.name)}")
        if mine and mine.get("unsampled"):
            held.append(f"{mine['unsampled']} copies of connections not sampled")
        if held:
            lines.append("  controls: " + "; ".join(held))
        target = intent.targets.get(sess.target)
        lines.append(f"  target {sess.target}: " + (_target_line(target, bound) if target else "missing"))
        sent = [f"{m}: {total[sess.name].get(f'member {m} packets', 0)}"
                for m in (target.kind.members(target) if target and sess.name in total else ())]
        if sent:
            lines.append(f"    sent to its members: {', '.join(sent)}")
        if sess.filter is None:
            lines.append("  filter: none (mirrors every frame in each source's direction)")
        else:
            lines.append(f"  filter {sess.filter}")
            lines += _filter_lines(intent.filters[sess.filter], "    ", mine)
        if not sess.sources:
            lines.append("  sources: none")
        else:
            lines.append("  sources:")
            lines += [f"    {_source_line(s, bound, mine)}" for s in sess.sources]
    used = {s.target for s in intent.sessions.values()} | {
        s.filter for s in intent.sessions.values() if s.filter is not None}
    for t in sorted(intent.targets.values(), key=lambda t: t.name):
        if t.name not in used:
            lines.append(f"target {t.name} (no session): {_target_line(t, bound)}")
    for f in sorted(intent.filters.values(), key=lambda f: f.name):
        if f.name not in used:
            lines.append(f"filter {f.name} (no session)")
            lines += _filter_lines(f, "  ")
    for c in chassis or ():
        if c["state"] != "alive":
            lines.append(f"{c['reason']} (tunnel {c['tunnel_ip']}): its statuses are stale")
    return "\n".join(lines) if lines else "(tapdb is empty)"


def _range_json(rng: Optional[model.PortRange]) -> Optional[dict]:
    return None if rng is None else {"min": rng.lo, "max": rng.hi}


def _rule_json(r: model.Rule) -> dict:
    return {"priority": r.priority, "action": r.action, "protocol": model.protocol_name(r.protocol),
            "ethertype": r.ethertype, "src": r.src, "dst": r.dst,
            "src_port": _range_json(r.src_port), "dst_port": _range_json(r.dst_port)}


def intent_json(intent: model.Intent,
                counters: Optional[dict[str, dict[str, dict[str, int]]]] = None) -> dict:
    """The whole intent as plain JSON, sorted by name (sessions by priority); with each
    session's counters, added up and by chassis."""
    counters = counters or {}
    total = summed(counters)
    return {
        "targets": [dict(_fields(t), status=dict(t.status), options=dict(t.options))
                    for t in sorted(intent.targets.values(), key=lambda t: t.name)],
        "filters": [{"name": f.name, "project": f.project,
                     "inbound": [_rule_json(r) for r in f.inbound],
                     "outbound": [_rule_json(r) for r in f.outbound]}
                    for f in sorted(intent.filters.values(), key=lambda f: f.name)],
        "sessions": [dict(name=s.name, project=s.project, priority=s.priority, vni=s.vni,
                          packet_length=s.packet_length,
                          enabled=s.enabled, filter=s.filter, target=s.target,
                          max_pps=s.max_pps, max_kbps=s.max_kbps, sample=s.sample,
                          ends_at=controls.iso(s.ends_at) if s.ends_at else None,
                          stop_reason=s.stop_reason,
                          sources=[dict(_fields(src), status=dict(src.status))
                                   for src in s.sources],
                          counters=total.get(s.name, {}),
                          counters_by_chassis=counters.get(s.name, {}))
                     for s in sorted(intent.sessions.values(), key=lambda s: s.priority)],
    }


def _fields(obj: Any) -> dict:
    """A model object's fields but its status, which JSON shows as a map."""
    return {k: v for k, v in vars(obj).items() if k != "status"}


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)
    cells = [list(map(str, header))] + [[cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def _controls_cell(s: model.Session) -> Optional[str]:
    words = [f"{s.max_pps}pps" if s.max_pps else "", f"{s.max_kbps}kbps" if s.max_kbps else "",
             f"1/{s.sample}" if s.sample else "",
             f"until {controls.iso(s.ends_at)}" if s.ends_at else ""]
    return " ".join(w for w in words if w) or None


def format_list(intent: model.Intent, bound: Optional[frozenset[str]] = None,
                chassis: Optional[list[dict]] = None) -> str:
    """Every object, one line each, in four tables."""
    targets = sorted(intent.targets.values(), key=lambda t: t.name)
    lines = _table(("TARGET", "WHERE", "KEY", "ENABLED", "STATUS"),
                   [(t.name, t.where(), t.tunnel_key, t.enabled,
                     _status_text(t.status, t.iface_id, bound) if t.kind.has_status else None)
                    for t in targets])
    rules = []
    for f in sorted(intent.filters.values(), key=lambda f: f.name):
        for direction in model.RULE_DIRECTIONS:
            rules += [(f.name, direction, r.describe()) for r in f.rules(direction)]
        if not f.inbound and not f.outbound:
            rules.append((f.name, "-", "(no rules)"))
    lines += [""] + _table(("FILTER", "DIRECTION", "RULE"), rules)
    sessions = sorted(intent.sessions.values(), key=lambda s: s.priority)
    lines += [""] + _table(("SESSION", "PRIORITY", "VNI", "LENGTH", "ENABLED", "TARGET", "FILTER",
                            "CONTROLS", "SOURCES"),
                           [(s.name, s.priority, s.vni, s.packet_length, s.enabled, s.target,
                             s.filter, _controls_cell(s),
                             ", ".join(f"{src.key}({src.direction})" for src in s.sources)
                             or None) for s in sessions])
    lines += [""] + _table(("CHASSIS", "TUNNEL", "ENCAP", "LAST HEARD", "STATE"),
                           [(c["name"], c["tunnel_ip"], c["encap"],
                             None if c["last_heard"] is None else f"{c['last_heard']} s ago",
                             f"clock ahead by {c['ahead_by']} s" if c["state"] == "clock ahead"
                             else c["state"])
                            for c in chassis or ()])
    return "\n".join(lines)


def format_stats(intent: model.Intent, counters: dict[str, dict[str, dict[str, int]]],
                 only: Optional[str] = None) -> str:
    """What each session mirrored, each rule decided, each source handed over and each
    member of a collector group was sent, added up over the chassis (``-``: no chassis
    has reported the session)."""
    sessions = sorted(intent.sessions.values(), key=lambda s: s.priority)
    if only is not None:
        sessions = [intent.session(only)]
    total = summed(counters)
    rows, rules, sources, members = [], [], [], []
    for sess in sessions:
        c = total.get(sess.name)

        def get(key: str) -> Optional[int]:
            return None if c is None else c.get(key, 0)
        rows.append((sess.name, get("packets"), get("bytes"),
                     get("dropped") if sess.max_pps or sess.max_kbps else None,
                     get("unsampled") if sess.sample else None,
                     reporters(counters.get(sess.name, {})) or None))
        flt = intent.filters.get(sess.filter or "")
        for direction in model.RULE_DIRECTIONS:
            for r in flt.rules(direction) if flt is not None else ():
                rules.append((sess.name, direction, r.priority, r.action,
                              get(f"rule {direction} {r.priority} packets"),
                              get(f"rule {direction} {r.priority} bytes")))
        for src in sess.sources:
            sources.append((sess.name, src.key,
                            *(get(f"source {src.key} {k}")
                              for k in ("packets", "bytes", "unmatched", "rejected"))))
        target = intent.targets.get(sess.target)
        for member in target.kind.members(target) if target is not None else ():
            members.append((sess.name, sess.target, member, get(f"member {member} packets"),
                            get(f"member {member} bytes")))
    lines = _table(("SESSION", "MIRRORED PACKETS", "BYTES", "DROPPED BY CAP", "NOT SAMPLED",
                    "CHASSIS: PACKETS"), rows)
    lines += [""] + _table(("SESSION", "DIRECTION", "RULE", "ACTION", "HITS", "BYTES"), rules)
    lines += [""] + _table(("SESSION", "SOURCE", "COPIES", "BYTES", "MATCHED NO RULE",
                            "REJECTED"), sources)
    if members:  # collector groups: what each member was sent
        lines += [""] + _table(("SESSION", "TARGET", "MEMBER", "COPIES", "BYTES"), members)
    return "\n".join(lines)


# ---------------------------------------------------------------- arguments


def seconds(text: str) -> float:
    """--timeout: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _control_options(c: argparse.ArgumentParser, clear: bool = False) -> None:
    none = ", or none" if clear else ""
    c.add_argument("--max-pps", metavar="N", help="at most N copies per second on each "
                   f"chassis; the rest are dropped and counted (1..{controls.MAX_PPS[1]}{none})")
    c.add_argument("--max-kbps", metavar="N", help="at most N kbit/s of copies on each "
                   f"chassis; the rest are dropped and counted (1..{controls.MAX_KBPS[1]}{none})")
    c.add_argument("--sample", metavar="1/N",
                   help="mirror about one connection in N, each whole in both directions "
                        f"(N 1..{controls.SAMPLE[1]}{none})")
    end = c.add_mutually_exclusive_group()
    end.add_argument("--duration", metavar="TIME",
                     help="disable the session this long from now: 90s, 10m, 2h, 1d (at most "
                          "366d)")
    end.add_argument("--until", metavar="WHEN",
                     help="disable the session at this time: ISO 8601, UTC unless it has an "
                          "offset, e.g. 2026-12-05T14:00:00Z")
    if clear:
        end.add_argument("--no-end", action="store_true", help="remove the session's end")


def _change(args: argparse.Namespace) -> controls.Change:
    return controls.Change(args.max_pps, args.max_kbps, args.sample, args.duration, args.until,
                           getattr(args, "no_end", False))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tapctl", description="Configure traffic mirroring in tapdb.")
    p.add_argument("--db", default=os.environ.get("TAPDB", DEFAULT_DB),
                   help="tapdb connection, comma-separated for a cluster's members: tapctl "
                        "uses the leader and, when it is lost, finds the next one (default: "
                        f"$TAPDB, else {DEFAULT_DB})")
    p.add_argument("--project", default=model.DEFAULT_PROJECT,
                   help="the project new targets, filters and sessions belong to; a session "
                        "takes a target and filter of its own project (default %(default)s)")
    p.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for tapdb (with several members, for one that "
                        "leads: a leader being elected is waited out, also in the middle of "
                        "a command), and with --wait for the chassis (default %(default)s)")
    for option, env, what in (("--private-key", "TAPDB_PRIVATE_KEY", "your private key"),
                              ("--certificate", "TAPDB_CERTIFICATE", "your certificate"),
                              ("--ca-cert", "TAPDB_CA_CERT", "the CA tapdb's certificate "
                                                              "must chain to")):
        p.add_argument(option, metavar="FILE", default=os.environ.get(env),
                       help=f"for ssl: remotes, {what} (default: ${env})")
    p.add_argument("--wait", action="store_true",
                   help="after a change, return only once every chassis alive when the wait "
                        "begins has applied it (exit code "
                        f"{EXIT_NOT_APPLIED}, naming the others, if the time is up or one "
                        "falls silent first)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def cmd(name: str, help: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, aliases=list(aliases))

    c = cmd("target-add", "add a mirror target (created disabled)", ["tap-service-add"])
    c.add_argument("name")
    where = c.add_mutually_exclusive_group(required=True)
    for kind in targets.KINDS.values():
        where.add_argument(kind.option, dest=f"where_{kind.name}", metavar=kind.metavar,
                           help=kind.help)
    extras = {o.dest: o for k in targets.KINDS.values() for o in k.extra}
    for o in extras.values():
        c.add_argument(o.flag, dest=f"extra_{o.dest}", metavar=o.metavar, help=o.help)
    c.add_argument("--enable", action="store_true", help="create it enabled")

    for verb, what in (("add", "add a member to"), ("del", "remove a member from"),
                       ("enable", "enable a member of"), ("disable", "disable a member of")):
        c = cmd(f"member-{verb}", f"{what} a collector group (only its connections move)")
        c.add_argument("target")
        c.add_argument("ip", metavar="IP")

    c = cmd("filter-add", "add an empty filter")
    c.add_argument("name")

    c = cmd("rule-add", "add a rule to a filter direction")
    c.add_argument("filter")
    c.add_argument("direction", metavar="{inbound|outbound}")
    c.add_argument("--priority", required=True, metavar="N", help="1..16777216, 1 is evaluated first")
    c.add_argument("--action", required=True, metavar="{accept|reject}")
    c.add_argument("--protocol", default="all", metavar="all|tcp|udp|icmp|icmpv6|NUMBER")
    c.add_argument("--ethertype", metavar="ipv4|ipv6",
                   help="default: the family of --src/--dst, else ipv4")
    c.add_argument("--src", metavar="CIDR")
    c.add_argument("--dst", metavar="CIDR")
    c.add_argument("--src-port", metavar="RANGE", help="1234, 1000-2000, 1/200, -1/-1 or all")
    c.add_argument("--dst-port", metavar="RANGE", help="1234, 1000-2000, 1/200, -1/-1 or all")

    c = cmd("rule-del", "delete a rule by filter, direction and priority")
    c.add_argument("filter")
    c.add_argument("direction", metavar="{inbound|outbound}")
    c.add_argument("priority")

    c = cmd("session-add", "add a mirror session (created disabled)")
    c.add_argument("name")
    c.add_argument("--target", required=True)
    c.add_argument("--filter")
    c.add_argument("--priority", required=True, metavar="N", help="1..32766, unique, 1 is first")
    c.add_argument("--vni", metavar="N", help="0..16777215 (default: the lowest unused from 1)")
    c.add_argument("--packet-length", metavar="N", help="truncate copies to 64..8500 bytes")
    _control_options(c)
    c.add_argument("--enable", action="store_true", help="create it enabled")

    c = cmd("session-set", "change a session's caps, sampling or end")
    c.add_argument("name")
    _control_options(c, clear=True)

    c = cmd("source-add", "add a source to a session (created enabled)", ["tap-flow-add"])
    c.add_argument("session")
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--port", metavar="IFACE_ID")
    what.add_argument("--vswitch", metavar="CHASSIS:BRIDGE[:VLAN]")
    c.add_argument("--direction", metavar="in|out|both", help="for --port; default both")

    c = cmd("source-del", "delete a source from a session", ["tap-flow-del"])
    c.add_argument("session")
    c.add_argument("source", metavar="IFACE_ID|CHASSIS:BRIDGE[:VLAN]")

    for kind, alias in (("target", "tap-service"), ("session", None)):
        for verb in ("enable", "disable"):
            c = cmd(f"{kind}-{verb}", f"{verb} a {kind}", [f"{alias}-{verb}"] if alias else [])
            c.add_argument("name")
    for verb in ("enable", "disable"):
        c = cmd(f"source-{verb}", f"{verb} a session's source", [f"tap-flow-{verb}"])
        c.add_argument("session")
        c.add_argument("source", metavar="IFACE_ID|CHASSIS:BRIDGE[:VLAN]")
    for kind, alias in (("target", "tap-service"), ("filter", None), ("session", None)):
        c = cmd(f"{kind}-del", f"delete a {kind}", [f"{alias}-del"] if alias else [])
        c.add_argument("name")

    c = cmd("port-register", "register a port to a project: its members may mirror it and "
                             "send copies to it (the cloud's integration does this)")
    c.add_argument("iface_id", metavar="IFACE_ID")
    c.add_argument("project_name", metavar="PROJECT")
    c = cmd("port-unregister", "unregister a port from its project")
    c.add_argument("iface_id", metavar="IFACE_ID")

    c = cmd("project-quota", "show a project's quotas and usage, or set them")
    c.add_argument("project_name", metavar="PROJECT")
    for kind in model.PROJECT_QUOTAS:
        c.add_argument(f"--{kind}", metavar="N", help=f"at most N {kind} (default "
                                                        f"{model.PROJECT_QUOTAS[kind]})")

    c = cmd("chassis-del", "forget a chassis that is gone for good (its bindings, statuses and "
                           "counters)")
    c.add_argument("name")
    c.add_argument("--force", action="store_true",
                   help="even while it beats (a compromised hypervisor you are removing: its "
                        "agent, if it still runs, registers it again)")

    c = cmd("stats", "what each session mirrored, each rule decided and each source handed "
                     "over, added up over the chassis")
    c.add_argument("session", nargs="?", help="only this session")
    c.add_argument("--format", choices=("text", "json"), default="text")

    c = cmd("trace", "what the intent does with one packet at a source port: the sessions "
                     "in priority order, the rule that decides, where the copy goes")
    c.add_argument("--port", required=True, metavar="IFACE_ID", help="the source port")
    c.add_argument("--direction", required=True, metavar="in|out",
                   help="in: traffic the VM receives; out: traffic it sends")
    c.add_argument("packet", metavar="PACKET",
                   help="in ovs-ofctl syntax, e.g. tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,"
                        "tp_dst=1234")

    for name, help in (("show", "the sessions as a tree, with status"),
                       ("list", "every object in tables")):
        c = cmd(name, help)
        c.add_argument("--format", choices=("text", "json"), default="text")
    return p


REFERENCE_BEGIN = "<!-- tapctl reference: written by tools/tapctl-reference -->"
REFERENCE_END = "<!-- end of the tapctl reference -->"


def write_reference(path: str) -> None:
    """Rewrite the reference between the two marks in the Markdown file at ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, begin, rest = text.partition(REFERENCE_BEGIN)
    _, end, tail = rest.partition(REFERENCE_END)
    if not begin or not end:
        raise ValueError(f"{path} has no {REFERENCE_BEGIN} ... {REFERENCE_END}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + REFERENCE_BEGIN + "\n" + reference() + REFERENCE_END + tail)


def reference(width: int = 96) -> str:
    """Every tapctl command as its parser describes it, in Markdown (for the operator
    guide, rewritten by tools/tapctl-reference)."""
    def fixed(prog: str) -> argparse.HelpFormatter:
        return argparse.HelpFormatter(prog, width=width)
    parser = build_parser()
    parser.formatter_class = fixed
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = ["```", parser.format_help().rstrip(), "```"]
    seen: set[int] = set()
    for name, command in sub.choices.items():
        if id(command) in seen:  # an alias
            continue
        seen.add(id(command))
        command.formatter_class = fixed
        aliases = [a for a, c in sub.choices.items() if c is command and a != name]
        out += ["", f"### tapctl {name}" + (f" ({', '.join(aliases)})" if aliases else ""),
                "", "```", command.format_help().rstrip(), "```"]
    return "\n".join(out) + "\n"


_ALIASES = {"tap-service-add": "target-add", "tap-flow-add": "source-add",
            "tap-flow-del": "source-del", "tap-service-enable": "target-enable",
            "tap-service-disable": "target-disable", "tap-flow-enable": "source-enable",
            "tap-flow-disable": "source-disable", "tap-service-del": "target-del"}


def run(args: argparse.Namespace, api: ops.IntentDb) -> str:
    """Carry out one parsed command; returns what to print."""
    cmd = _ALIASES.get(args.cmd, args.cmd)
    if cmd in ("show", "list"):
        every = api.everything()
        now = time.time()
        intent = liveness.apply(every.snapshot.intent, every.bindings, every.beats, now)
        chassis = chassis_json(every.chassis, every.beats, now, every.mtus)
        bound = frozenset(every.bindings)
        if args.format == "json":
            return json.dumps(dict(intent_json(intent, every.counters), chassis=chassis),
                              indent=2, sort_keys=True)
        return (format_show(intent, bound, chassis, every.counters, int(now * 1000))
                if cmd == "show"
                else format_list(intent, bound, chassis))
    if cmd == "stats":
        every = api.everything()
        intent = every.snapshot.intent
        if args.format == "json":
            names = [args.session] if args.session else sorted(intent.sessions)
            for name in names:
                intent.session(name)  # NotFound for an unknown name
            total = summed(every.counters)
            return json.dumps({n: {"counters": total.get(n, {}),
                                   "counters_by_chassis": every.counters.get(n, {})}
                               for n in names}, indent=2, sort_keys=True)
        return format_stats(intent, every.counters, args.session)
    if cmd == "trace":
        every = api.everything()
        return trace.describe(every.snapshot.intent, args.port, args.direction, args.packet,
                              every.bindings, {n: (ip, encap) for n, ip, encap in every.chassis})
    if cmd == "chassis-del":
        api.chassis_del(args.name, time.time(), force=args.force)
        return ""
    if cmd == "project-quota":
        given = {k: getattr(args, k) for k in model.PROJECT_QUOTAS}
        if any(v is not None for v in given.values()):
            api.set_quotas(args.project_name, given)
        quotas, usage = api.project_usage(args.project_name)
        return "\n".join(f"{k}: {usage[k]} of {quotas[k]}" for k in model.PROJECT_QUOTAS)
    if cmd == "port-register":
        api.register_port(args.iface_id, args.project_name)
        return ""
    if cmd == "port-unregister":
        api.unregister_port(args.iface_id)
        return ""
    if cmd == "target-add":
        extras = {o.dest for k in targets.KINDS.values() for o in k.extra}
        t = api.target_add(args.name, enabled=args.enable,
                           **{k: getattr(args, f"where_{k}") for k in targets.KINDS},
                           **{d: getattr(args, f"extra_{d}") for d in extras})
        return f"target {t.name}: {t.where()}, key {t.tunnel_key}, {_onoff(t.enabled)}"
    if cmd.startswith("member-"):
        t = api.member(args.target, cmd[len("member-"):], args.ip)
        return f"target {t.name}: {t.where()}"
    if cmd == "filter-add":
        api.filter_add(args.name)
        return ""
    if cmd == "rule-add":
        api.rule_add(args.filter, args.direction, priority=args.priority, action=args.action,
                     protocol=args.protocol, ethertype=args.ethertype, src=args.src, dst=args.dst,
                     src_port=args.src_port, dst_port=args.dst_port)
        return ""
    if cmd == "rule-del":
        api.rule_del(args.filter, args.direction, args.priority)
        return ""
    if cmd == "session-add":
        s = api.session_add(args.name, target=args.target, filter=args.filter,
                            priority=args.priority, vni=args.vni,
                            packet_length=args.packet_length, enabled=args.enable,
                            controls=_change(args))
        return "; ".join([f"session {s.name}: priority {s.priority}, vni {s.vni}, "
                          f"{_onoff(s.enabled)}", *controls.describe(s, ops.now_ms())])
    if cmd == "session-set":
        s = api.session_set(args.name, _change(args))
        return "; ".join([f"session {s.name}: {_onoff(s.enabled)}",
                          *(controls.describe(s, ops.now_ms()) or ["no controls"])])
    if cmd == "source-add":
        api.source_add(args.session, port=args.port, direction=args.direction,
                       vswitch=args.vswitch)
        return ""
    if cmd == "source-del":
        api.source_del(args.session, args.source)
        return ""
    kind, _, verb = cmd.partition("-")
    if verb in ("enable", "disable"):
        if kind == "source":
            api.set_enabled("source", args.session, verb == "enable", key=args.source)
        else:
            api.set_enabled(kind, args.name, verb == "enable")
        return ""
    assert verb == "del", cmd
    api.delete(kind, args.name)
    return ""


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        creds = tls.of(args.private_key, args.certificate, args.ca_cert,
                       "--private-key, --certificate, --ca-cert")
        if creds is not None:
            tls.check(creds, ("--private-key", "--certificate", "--ca-cert"))
        api = ops.connect(args.db, timeout=args.timeout, creds=creds)
    except (ops.TapdbError, ValueError) as exc:
        print(f"tapctl: {exc}", file=sys.stderr)
        return 1
    lost: Optional[str] = None  # why the wait for the chassis could not go on
    late: dict[str, ops.Late] = {}
    try:
        api.project = model.parse_project(args.project)
        out = run(args, api)
        generation = api.committed_generation
        if args.wait and generation:
            try:
                late = api.wait_applied(generation, args.timeout)
            except (ops.TapdbError, rpc.RpcError) as exc:
                lost = str(exc)  # the change is committed: not a failed command
    except model.IntentError as exc:
        print(f"tapctl: error: {exc}", file=sys.stderr)
        return 1
    except ops.TapdbError as exc:
        print(f"tapctl: {exc}", file=sys.stderr)
        return 1
    except rpc.RpcError as exc:
        print(f"tapctl: tapdb at {args.db}: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    if out:
        print(out)
    for warning in api.warnings:
        print(f"tapctl: warning: {warning}", file=sys.stderr)
    for line in not_applied(generation, late, args.timeout, lost):
        print(line, file=sys.stderr)
    return EXIT_NOT_APPLIED if late or lost else 0


def not_applied(generation: Optional[int], late: dict[str, ops.Late], timeout: float,
                lost: Optional[str] = None) -> list[str]:
    """What --wait says of the chassis that did not apply ``generation``: each by name,
    with why (still behind when the time was up, or silent since the wait began)."""
    lines = []
    slow = {n: lag for n, lag in late.items() if lag.silent is None}
    if slow:
        names = ", ".join(f"{name} (at generation {lag.at})" for name, lag in slow.items())
        lines.append(f"tapctl: committed as generation {generation}, but not applied within "
                     f"{timeout:g} s by {names}")
    for name, lag in late.items():
        if lag.silent is not None:
            lines.append(f"tapctl: committed as generation {generation}, but {name} went "
                         f"silent during the wait before applying it ({lag.silent}; at "
                         f"generation {lag.at})")
    if lost is not None:
        lines.append(f"tapctl: committed as generation {generation}, but the wait for the "
                     f"chassis lost tapdb: {lost}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
