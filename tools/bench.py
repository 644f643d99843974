"""sdnagent's benchmarks as one table, each figure beside its baseline from the same run.

Parts (each also runs alone, see tools/bench):
  install   brtap programmed and read back at about 10k, 30k and 100k flows, against
            ovs-ofctl --bundle add-flows and ovs-ofctl dump-flows
  change    commit -> flow on the switch and commit -> --wait returns, 200 changes with
            a large intent loaded, and flow mods per change, against ovs-ofctl add-flow
  tapctl    a command's time with 10,000 sessions, against one ovsdb-client transact
  fanout    commit -> notified at 1,000 simulated chassis and ovsdb-server CPU, standalone
            and 3-member Raft, against one chassis alone
  wide      a filter at quota with wide port ranges on 10 sources: conjunctive matches
            against the product of the prefixes
  churn     an agent's memory idle, with large intents loaded and deleted, and over 1,000
            changes
  sources   1,000 source ports on one bridge: Mirror rows, flows, install time, memory,
            against 10
  dataplane iperf3 between two network namespaces through br-int (netdev datapath): no
            mirroring, every frame mirrored, a filter that takes nothing
Prints the machine, then the table (Markdown, as in benchmarks/RESULTS.md).
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_change  # noqa: E402
import bench_churn  # noqa: E402
import bench_fanout  # noqa: E402
import bench_dataplane  # noqa: E402
import bench_install  # noqa: E402
import bench_sources  # noqa: E402
import bench_tapctl  # noqa: E402
import bench_wide  # noqa: E402
from benchlib import parser, require_ovs, table  # noqa: E402



def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) // 1024
    ovs = subprocess.run(["ovs-vswitchd", "--version"], capture_output=True,
                         text=True).stdout.splitlines()[0]
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem:,} MiB, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, {ovs}")


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes (10k flows, 40 changes, 1,000 sessions, 200 chassis)")
    args = p.parse_args()
    require_ovs()
    bench_fanout.raise_fd_limit(1000)
    started = time.monotonic()
    print(f"machine: {machine()}", flush=True)
    rows = []
    for ports in ((30,) if args.quick else (30, 100, 330)):
        rows += bench_install.run(ports)
        print(f"install at {ports} ports done", file=sys.stderr, flush=True)
    rows += bench_wide.run()
    print("wide done", file=sys.stderr, flush=True)
    rows += bench_churn.run(30, 100 if args.quick else 1000)
    print("churn done", file=sys.stderr, flush=True)
    rows += bench_sources.run(200 if args.quick else 1000)
    print("sources done", file=sys.stderr, flush=True)
    rows += bench_dataplane.run(3 if args.quick else 10)
    print("dataplane done", file=sys.stderr, flush=True)
    rows += bench_change.run(30, 40 if args.quick else 200)
    print("change done", file=sys.stderr, flush=True)
    rows += bench_tapctl.run(1000 if args.quick else 10000)
    print("tapctl done", file=sys.stderr, flush=True)
    rows += bench_fanout.run(200 if args.quick else 1000, 10 if args.quick else 20)
    print(table(rows))
    print(f"\n(all parts: {time.monotonic() - started:.0f} s)")
    sys.stdout.flush()
    os._exit(0)  # os-ken's and the ovs library's threads


if __name__ == "__main__":
    sys.exit(main())
