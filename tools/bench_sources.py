"""Many sources on one bridge: Mirror rows, flows, the time to install and the agent's
memory with 1,000 source ports, against 10 in the same run.

Starts a lab host with N VM ports on br-int (each with a MAC, as a cloud sets
``external_ids:attached-mac``), runs sdnagent, and writes in one transaction
N/10 sessions of 10 sources each (in, out and both in turn), each with a filter
of two rules (TCP to a port range, UDP from a network) and a vxlan target; then
waits until brtap stops changing.  Figures: Mirror rows on br-int, flows on
brtap, seconds from the commit to the last flow change, the agent's memory.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (Row, finish, installed, parser, require_ovs, rss_mib,  # noqa: E402
                      transact, transaction, wait_for)

from sdnagent import model, sandbox  # noqa: E402

DIRECTIONS = ("in", "out", "both")


def intent(n: int) -> model.Intent:
    targets = [model.Target("collector", "vxlan", 1, remote_ip="10.9.9.9", enabled=True)]
    filters, sessions = [], []
    for s in range(n // 10):
        flt = model.Filter(f"f{s}")
        rules = (model.new_rule(flt, "inbound", priority="1", action="accept", protocol="tcp",
                                dst_port=f"{1000 + s}-{2000 + s}"),
                 model.new_rule(flt, "inbound", priority="2", action="accept", protocol="udp",
                                src=f"10.{s % 250}.0.0/16"))
        out = (model.new_rule(flt, "outbound", priority="1", action="accept", protocol="tcp",
                              dst_port="443"),)
        filters.append(model.Filter(f"f{s}", rules, out))
        sources = tuple(model.Source("port", DIRECTIONS[s % 3], iface_id=f"vm-{s * 10 + i}")
                        for i in range(10))
        sessions.append(model.Session(f"s{s}", s + 1, s + 1, "collector", f"f{s}", None, True,
                                      sources))
    return model.Intent.of(targets, filters, sessions)


def _add_ports(host: sandbox.Host, n: int) -> None:
    """N VM ports on br-int, a hundred in each ovs-vsctl call."""
    for first in range(0, n, 100):
        args: list[str] = []
        for i in range(first, min(n, first + 100)):
            args += ["--", "add-port", "br-int", f"p{i}", "--", "set", "interface", f"p{i}",
                     "type=dummy", f"external_ids:iface-id=vm-{i}",
                     f'external_ids:attached-mac="fa:16:3e:01:{i >> 8:02x}:{i & 0xFF:02x}"']
        host.vsctl(*args)


def _settled(host: sandbox.Host, since: float, quiet: float = 2.0, timeout: float = 300
             ) -> tuple[int, float]:
    """brtap's flow count once it has not changed for ``quiet`` seconds, and when it last
    changed (seconds after ``since``)."""
    last, changed = -1, time.monotonic()
    deadline = changed + timeout
    while time.monotonic() < deadline:
        now = installed(host)
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed >= quiet:
            return last, changed - since
        time.sleep(0.1)
    raise AssertionError("brtap never settled")


def measure(n: int) -> dict[str, float]:
    lab = sandbox.Lab(hosts=("host-a",))
    try:
        lab.start()
        assert lab.tapdb is not None
        host = lab["host-a"]
        _add_ports(host, n)
        host.start_agent(lab.tapdb.remote, resync_interval="600", heartbeat_interval="10")
        deadline = time.monotonic() + 30
        while "brtap" not in host.vsctl("list-br").split():
            assert time.monotonic() < deadline, "the agent made no brtap"
            time.sleep(0.1)
        _settled(host, time.monotonic())  # its default flows in
        idle = rss_mib(host._agent.pid)
        base = installed(host)
        started = time.monotonic()
        transact(lab.tapdb.remote, transaction(intent(n)))
        wait_for(lambda: installed(host) != base, 60, "the agent to start installing")
        flows, seconds = _settled(host, started)
        mirrors = len(host.vsctl("--bare", "--columns=name", "list", "Mirror").split())
        return {"flows": flows, "seconds": seconds, "mirrors": mirrors, "idle": idle,
                "rss": rss_mib(host._agent.pid)}
    finally:
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)


def run(n: int = 1000) -> list[Row]:
    base, big = measure(10), measure(n)
    what = f"{n:,} source ports on one bridge (in, out, both; {n // 10} sessions)"
    return [Row(f"{what}: Mirror rows on br-int vs 10 ports", f"{big['mirrors']}",
                f"{base['mirrors']}", big["mirrors"] / base["mirrors"], "bounded (≤ 20)"),
            Row(f"{what}: flows on brtap vs 10 ports", f"{big['flows']:,}", f"{base['flows']:,}",
                big["flows"] / base["flows"]),
            Row(f"{what}: commit -> last flow installed vs 10 ports", f"{big['seconds']:.2f} s",
                f"{base['seconds']:.2f} s", big["seconds"] / base["seconds"]),
            Row(f"{what}: agent memory vs 10 ports (idle: {big['idle']:.0f} / "
                f"{base['idle']:.0f} MiB)", f"{big['rss']:.0f} MiB", f"{base['rss']:.0f} MiB",
                big["rss"] / base["rss"])]


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--sources", type=int, default=1000, help="source ports (default %(default)s)")
    args = p.parse_args()
    require_ovs()
    return finish(run(args.sources))


if __name__ == "__main__":
    sys.exit(main())
