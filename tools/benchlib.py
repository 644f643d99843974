"""What the benchmarks share: the intent they load, ways to load it, and the result table."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from ovs import jsonrpc, stream

from sdnagent import model, sandbox
from sdnagent.compile import flows
from sdnagent.compile.compiler import Inventory, LocalPort

TICKS = os.sysconf("SC_CLK_TCK")


def parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a benchmark whose module docstring is ``doc``."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def require_ovs() -> None:
    """Exit with the reason when this machine cannot run the labs."""
    why = sandbox.missing_ovs()
    if why:
        sys.exit(f"bench: {why}")


def vm_mac(i: int) -> str:
    """The MAC of the benchmarks' VM port i, as a cloud sets external_ids:attached-mac."""
    return f"fa:16:3e:02:{i >> 8:02x}:{i & 0xFF:02x}"


def build(ports: int, rules_per_filter: int = 10) -> tuple[model.Intent, Inventory]:
    """N source ports, each in 3 sessions whose filters hold rules with port ranges (the
    inventory: the ports on as many integration bridges as the Mirror limit needs)."""
    targets = [model.Target(f"t{i}", "vxlan", i + 1, remote_ip=f"10.9.0.{i + 1}", enabled=True)
               for i in range(3)]
    filters, sessions = [], []
    for s in range(3 * ports):
        flt = model.Filter(f"f{s}")
        rules = []
        for r in range(rules_per_filter):
            rules.append(model.new_rule(flt, "inbound", priority=str(r + 1),
                                        action="accept" if r % 3 else "reject", protocol="tcp",
                                        src=f"10.{s % 250}.{r}.0/24",
                                        dst_port=f"{1000 + r * 10}-{2000 + r * 10}"))
        filters.append(model.Filter(f"f{s}", tuple(rules)))
        port = s // 3
        sessions.append(model.Session(f"s{s}", s + 1, s + 1, f"t{s % 3}", f"f{s}", 96, True,
                                      (model.Source("port", "in", iface_id=f"vm-{port}"),)))
    # 30 ports per integration bridge: 3 sessions x 30 hooks stay within OVS's 32 Mirrors
    bridges = [f"br-int{i}" if i else "br-int" for i in range(-(-ports // 30))]
    inv = Inventory(chassis="bench", integration_bridges=tuple(bridges),
                    ports={f"vm-{p}": LocalPort(f"vm-{p}", bridges[p // 30], f"p{p}", p + 1,
                                                        vm_mac(p))
                           for p in range(ports)},
                    bridges=frozenset({*bridges, "brtap"}), chassis_ips={"bench": "10.255.0.1"})
    return model.Intent.of(targets, filters, sessions), inv


def to_text(f: flows.Flow) -> str:
    """A Flow as ovs-ofctl add-flows text (the fields the compiler uses)."""
    names = {"eth_type": "dl_type", "ip_proto": "nw_proto", "ipv4_src": "nw_src",
             "ipv4_dst": "nw_dst", "tcp_dst": "tp_dst", "tcp_src": "tp_src",
             "udp_dst": "tp_dst", "udp_src": "tp_src", "tun_ipv4_src": "tun_src",
             "tunnel_id": "tun_id", "reg0": "reg0", "reg1": "reg1", "reg2": "reg2",
             "conj_id": "conj_id", "in_port": "in_port", "eth_src": "dl_src",
             "eth_dst": "dl_dst"}
    match = []
    for k, v in f.match:
        if isinstance(v, tuple):
            v = f"{v[0]}/{v[1]}" if isinstance(v[0], str) else f"{v[0]:#x}/{v[1]:#x}"
        match.append(f"{names[k]}={v}")
    acts = []
    for a in f.actions:
        if a[0] == "set_field":
            field = {"tun_ipv4_dst": "tun_dst", "tunnel_id": "tun_id"}.get(a[1], a[1])
            acts.append(f"set_field:{a[2]}->{field}")
        elif a[0] == "output":
            acts.append(f"output:{a[1]}")
        elif a[0] == "output_trunc":
            acts.append(f"output(port={a[1]},max_len={a[2]})")
        elif a[0] == "conjunction":
            acts.append(f"conjunction({a[1]},{a[2] + 1}/{a[3]})")
        elif a[0] == "goto":
            acts.append(f"goto_table:{a[1]}")
    return (f"cookie={f.cookie:#x},table={f.table},priority={f.priority},"
            + "".join(m + "," for m in match) + "actions=" + (",".join(acts) or "drop"))


def _opt(value):
    return ["set", [] if value is None else [value]]


def transaction(intent: model.Intent, sources: bool = True) -> list:
    """The whole intent as one OVSDB transaction, as an integrator's client would write it."""
    ops: list = ["Tap"]
    for t in intent.targets.values():
        ops.append({"op": "insert", "table": "Mirror_Target", "uuid-name": f"t_{t.name}",
                    "row": {"name": t.name, "type": t.type, "tunnel_key": t.tunnel_key,
                            "remote_ip": _opt(t.remote_ip), "enabled": t.enabled}})
    for f in intent.filters.values():
        names: dict[str, list] = {"inbound": [], "outbound": []}
        for direction in names:
            for i, r in enumerate(f.rules(direction)):
                ref = f"r_{f.name}_{direction}_{i}"
                names[direction].append(["named-uuid", ref])
                ops.append({"op": "insert", "table": "Filter_Rule", "uuid-name": ref,
                            "row": {"priority": r.priority, "action": r.action,
                                    "protocol": _opt(r.protocol), "ethertype": r.ethertype,
                                    "src_cidr": _opt(r.src), "dst_cidr": _opt(r.dst),
                                    "src_port_min": _opt(r.src_port.lo if r.src_port else None),
                                    "src_port_max": _opt(r.src_port.hi if r.src_port else None),
                                    "dst_port_min": _opt(r.dst_port.lo if r.dst_port else None),
                                    "dst_port_max": _opt(r.dst_port.hi if r.dst_port else None)}})
        ops.append({"op": "insert", "table": "Mirror_Filter", "uuid-name": f"f_{f.name}",
                    "row": {"name": f.name, "inbound_rules": ["set", names["inbound"]],
                            "outbound_rules": ["set", names["outbound"]]}})
    for s in intent.sessions.values():
        srcs = []
        for i, src in enumerate(s.sources if sources else ()):
            srcs.append(["named-uuid", f"s_{s.name}_{i}"])
            ops.append({"op": "insert", "table": "Mirror_Source", "uuid-name": f"s_{s.name}_{i}",
                        "row": {"type": "port", "iface_id": _opt(src.iface_id),
                                "direction": src.direction, "enabled": True}})
        ops.append({"op": "insert", "table": "Mirror_Session",
                    "row": {"name": s.name, "priority": s.priority, "vni": s.vni,
                            "packet_length": _opt(s.packet_length), "enabled": s.enabled,
                            "target": ["named-uuid", f"t_{s.target}"],
                            "filter": ["named-uuid", f"f_{s.filter}"],
                            "sources": ["set", srcs]}})
    return ops


@contextlib.contextmanager
def loaded_tapdb(sessions: int) -> Iterator[tuple[str, model.Intent, Path]]:
    """A private tapdb holding about ``sessions`` sessions (each with a filter of 2 rules,
    a source port, one of 3 targets), loaded in one transaction: its remote, the
    intent, its directory.  Stopped and removed after."""
    from sdnagent.tapdb import server
    intent, _ = build(-(-sessions // 3), rules_per_filter=2)
    directory = tempfile.mkdtemp(prefix="sdn-bench-")
    srv = server.TapdbServer(directory)
    try:
        srv.start()
        transact(srv.remote, transaction(intent))
        yield srv.remote, intent, Path(directory)
    finally:
        srv.stop()
        shutil.rmtree(directory, ignore_errors=True)


def command_seconds(env: dict, *argv: str) -> float:
    """How long a command takes, start to exit (it must succeed)."""
    started = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    assert proc.returncode == 0, (argv, proc.stderr)
    return took


def transact(remote: str, ops: list) -> None:
    """One OVSDB transaction (too large for ovsdb-client's command line)."""
    err, strm = stream.Stream.open_block(stream.Stream.open(remote), 10000)
    assert not err, os.strerror(err)
    rpc = jsonrpc.Connection(strm)
    err, reply = rpc.transact_block(jsonrpc.Message.create_request("transact", ops))
    rpc.close()
    assert not err and not reply.error, (err, reply and reply.error)
    failed = [r for r in reply.result if r and "error" in r]
    assert not failed, failed[:3]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rss_mib(pid: int) -> float:
    """A process's resident memory (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def installed(host: sandbox.Host) -> int:
    if "brtap" not in host.vsctl("list-br"):
        return 0
    return host.ofctl("dump-flows", "brtap").count("cookie=")


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def wait_settled(host: sandbox.Host, timeout: float = 180) -> int:
    """Wait until brtap's flow count stops changing; the count."""
    deadline, count = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        time.sleep(1)
        now = installed(host)
        if now and now == count:
            return now
        count = now
    return count


@dataclasses.dataclass
class Row:
    """One line of the results table."""

    what: str
    ours: str
    baseline: str = ""
    ratio: Optional[float] = None
    aim: str = ""


def finish(rows: list[Row]) -> int:
    """Print the table and leave at once: os-ken's listener threads and the ovs
    library's are not daemon threads."""
    print(table(rows))
    sys.stdout.flush()
    os._exit(0)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    lines = ["| what | sdnagent | baseline, same run | ratio | aim |", "|---|---|---|---|---|"]
    for r in rows:
        ratio = ("" if r.ratio is None else f"{r.ratio:.2f}" if r.ratio >= 0.1 or r.ratio == 0
                 else f"1/{1 / r.ratio:,.0f}")
        lines.append(f"| {r.what} | {r.ours} | {r.baseline} | {ratio} | {r.aim} |")
    return "\n".join(lines)
