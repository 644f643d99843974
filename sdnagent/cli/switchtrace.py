"""sdnagent-trace: one packet at a source port, as the intent says and as brtap does it.

Run on a hypervisor, with the agent's configuration file: it reads tapdb
(with the agent's credentials), finds the hook that mirrors the port in that
direction on this host, runs ``ovs-appctl ofproto/trace`` on brtap from that
hook's patch port, and names the session, rule or target behind every flow
the packet hits, under the intent's own account (``tapctl trace``), so the
two can be compared.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Optional, Sequence

from sdnagent import model, tls, trace
from sdnagent.agent import config
from sdnagent.switch.ovsdb import HOOK_KEY
from sdnagent.tapdb import ops, rpc


class TraceError(RuntimeError):
    """The host cannot be traced; the text says why."""


def _rows(conn: rpc.Connection, table: str, columns: list[str]) -> list[dict]:
    [found] = conn.call("transact", "Open_vSwitch", {"op": "select", "table": table,
                                                     "where": [], "columns": columns})
    if "error" in found:
        raise TraceError(f"cannot read {table}: {found['error']}")
    return found["rows"]


def _uuids(value: list) -> set[str]:
    return {u[1] for u in rpc.atoms(value)}


def find_hooks(remote: str, timeout: float
               ) -> tuple[dict[str, str], dict[tuple[str, str], tuple[str, str]]]:
    """This host's hooks: name -> what it mirrors, and (iface-id, direction) -> the brtap
    port its copies enter by and, when the hook is shared, the MAC brtap tells them by;
    read from the local Open_vSwitch database."""
    try:
        conn = rpc.connect(remote, timeout)
    except rpc.RpcError as exc:
        raise TraceError(f"cannot reach the local switch at {remote}: {exc}") from exc
    try:
        mirrors = _rows(conn, "Mirror", ["_uuid", "name", "external_ids", "select_dst_port",
                                         "select_src_port", "select_all", "output_port"])
        ports = _rows(conn, "Port", ["_uuid", "name", "interfaces"])
        ifaces = _rows(conn, "Interface", ["_uuid", "name", "external_ids", "options"])
    finally:
        conn.close()
    iface_by_uuid = {r["_uuid"][1]: r for r in ifaces}
    port_iface: dict[str, dict] = {}
    for p in ports:
        for u in _uuids(p["interfaces"]):
            if u in iface_by_uuid:
                port_iface[p["_uuid"][1]] = iface_by_uuid[u]
    names, entries = {}, {}
    for m in mirrors:
        hook = dict(m["external_ids"][1]).get(HOOK_KEY)
        out = _uuids(m["output_port"])
        if hook is None or not out:
            continue
        patch = port_iface.get(next(iter(out)), {})
        peer = dict(patch.get("options", ["map", []])[1]).get("peer")
        for column, direction in (("select_dst_port", "in"), ("select_src_port", "out")):
            selected = _uuids(m[column])
            for u in selected:
                iface = port_iface.get(u, {})
                ids = dict(iface.get("external_ids", ["map", []])[1])
                iface_id = ids.get("iface-id")
                names[hook] = (f"port {iface.get('name', '?')}, direction {direction}"
                               if len(selected) == 1 else
                               f"{len(selected)} ports, direction {direction}")
                if iface_id and peer:
                    mac = ids.get("attached-mac", "") if len(selected) > 1 else ""
                    entries[iface_id, direction] = (peer, mac)
        if m["select_all"]:
            names[hook] = "a whole bridge"
    return names, entries


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="sdnagent-trace", description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default="/etc/sdnagent/sdnagent.conf",
                   help="the agent's configuration (default %(default)s)")
    p.add_argument("--port", required=True, metavar="IFACE_ID", help="the source port")
    p.add_argument("--direction", required=True, metavar="in|out",
                   help="in: traffic the VM receives; out: traffic it sends")
    p.add_argument("--vswitchd", default="ovs-vswitchd", metavar="TARGET",
                   help="ovs-appctl's target (default %(default)s)")
    p.add_argument("packet", metavar="PACKET",
                   help="in ovs-ofctl syntax, e.g. tcp,nw_src=192.168.0.161,tp_dst=1234")
    args = p.parse_args(argv)
    try:
        conf = config.load(["--config-file", args.config_file])
    except config.ConfigError as exc:
        print(f"sdnagent-trace: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        print(run(conf, args.port, args.direction, args.packet, args.vswitchd))
    except model.IntentError as exc:
        print(f"sdnagent-trace: error: {exc}", file=sys.stderr)
        return 1
    except (TraceError, ops.TapdbError, rpc.RpcError) as exc:
        print(f"sdnagent-trace: {exc}", file=sys.stderr)
        return 1
    return 0


def run(conf: config.cfg.ConfigOpts, port: str, direction: str, packet: str,
        vswitchd: str) -> str:
    trace.parse_packet(packet)
    creds = tls.of(conf.tapdb.ssl_key_file, conf.tapdb.ssl_cert_file,
                   conf.tapdb.ssl_ca_cert_file, "[tapdb] ssl_key_file, ssl_cert_file, "
                   "ssl_ca_cert_file")
    api = ops.connect(conf.tapdb.connection, conf.tapdb.timeout, creds)
    try:
        every = api.everything()
    finally:
        api.close()
    intent = every.snapshot.intent
    lines = ["== the intent (tapctl trace)",
             trace.describe(intent, port, direction, packet, every.bindings,
                            {n: (ip, encap) for n, ip, encap in every.chassis})]
    hooks, entries = find_hooks(conf.ovs.ovsdb_connection, conf.tapdb.timeout)
    entry = entries.get((port, direction))
    lines.append(f"\n== the switch: ofproto/trace on {conf.ovs.tap_bridge} of chassis {conf.host}")
    if entry is None:
        lines.append(f"no hook mirrors port {port} in direction {direction} on this chassis: "
                     "the switch copies nothing of it here")
        return "\n".join(lines)
    peer, mac = entry
    # a shared hook: brtap tells this port's copies by its MAC
    field = ("dl_dst" if direction == "in" else "dl_src") if mac else ""
    fields = f"in_port={peer}" + (f",{field}={mac}" if field and f"{field}=" not in packet
                                  else "")
    try:
        proc = subprocess.run(["ovs-appctl", "-t", vswitchd, "ofproto/trace",
                               conf.ovs.tap_bridge, f"{fields},{packet}"],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise TraceError("ovs-appctl is not installed (package openvswitch-switch)") from None
    if proc.returncode != 0:
        raise TraceError(f"ovs-appctl ofproto/trace: {proc.stderr.strip() or proc.stdout.strip()}")
    lines.append(f"(the copies of port {port}, direction {direction}, enter by {peer}"
                 + (f", told apart by {field}={mac})" if field else ")"))
    lines.append(trace.annotate(proc.stdout.rstrip(), trace.switch_labels(intent, hooks)))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
