"""The main job: the two-session example across two hosts, with agents.

A private lab (tapdb, host-a and host-b on the dummy datapath, a VXLAN/GRE
underlay between them), an sdnagent per host, the example configured with
tapctl, then test traffic from 192.168.0.161 to the source VM 192.168.0.230,
and what each target received.  Everything started is stopped at the end.
Then a third session sends vm-99's connections to a collector group, each connection
(both directions) to one of its three members.
tapdb is reached over TLS: tapctl on the member's listener with a certificate of the
lab's tapdb CA, the agents on a relay beside it with certificates of its chassis CA
(``--plain``: everything over the member's unix socket instead).  sdnagent-api serves
the console on loopback throughout (``--keep``: and after the end, until Ctrl-C).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sdnagent import packets, sandbox

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VMS = {  # iface-id: (port, MAC, IP)
    "vm-161": ("vm161", "fa:16:3e:00:01:61", "192.168.0.161"),
    "vm-230": ("vm230", "fa:16:3e:00:02:30", "192.168.0.230"),
    "vm-99": ("vm99", "fa:16:3e:00:00:99", "192.168.0.99"),
}
GROUP = [f"{sandbox.UNDERLAY_PREFIX}{i}" for i in (201, 202, 203)]  # target-03's members
TRAFFIC = [  # (from, protocol, port, expected)
    ("vm-161", "tcp", 1234, "target-01 (session-01)"),
    ("vm-161", "udp", 1235, "target-02 (session-02)"),
    ("vm-161", "tcp", 1235, "not mirrored"),
    ("vm-161", "udp", 1234, "not mirrored"),
    ("vm-99", "tcp", 1234, "not mirrored (another source address)"),
]


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.1)
    return value


def main() -> int:
    why = sandbox.missing_ovs()
    if why:
        print(f"demo: {why}", file=sys.stderr)
        return 1
    lab = sandbox.Lab(tls="--plain" not in sys.argv[1:])
    api = None
    try:
        lab.start()
        api, url, token = start_api(lab)
        print(f"== the console: {url} (token: {token})")
        rc = run(lab)
        if "--keep" in sys.argv[1:]:
            print(f"\n== kept running: the console at {url} (token: {token}); the lab in "
                  f"{lab.dir}. Ctrl-C stops everything.", flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        return rc
    finally:
        if api is not None:
            api.terminate()
            api.wait(10)
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)


def start_api(lab: sandbox.Lab) -> tuple[subprocess.Popen, str, str]:
    """sdnagent-api on loopback over the lab's tapdb (an operator's certificate in a TLS
    lab), with an admin token for the console."""
    from sdnagent.api import identity
    token = identity.add(lab.dir / "api-tokens", "demo", "admin")
    env = lab.client_env()
    creds = ([] if "TAPDB_PRIVATE_KEY" not in env else
             ["--private-key", env["TAPDB_PRIVATE_KEY"], "--certificate",
              env["TAPDB_CERTIFICATE"], "--ca-cert", env["TAPDB_CA_CERT"]])
    port = sandbox.free_port()
    proc = subprocess.Popen([str(BIN / "sdnagent-api"), "serve", "--db", lab.remote, *creds,
                             "--listen", f"127.0.0.1:{port}", "--tokens",
                             str(lab.dir / "api-tokens"), "--audit-log",
                             str(lab.dir / "api-audit.jsonl")],
                            stdout=subprocess.DEVNULL, stderr=open(lab.dir / "api.log", "ab"))
    url = f"http://127.0.0.1:{port}"
    wait(lambda: _answers(f"{url}/openapi.json"), 20, "sdnagent-api")
    return proc, f"{url}/console", token


def _answers(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def run(lab: sandbox.Lab) -> int:
    a, b = lab["host-a"], lab["host-b"]
    env = dict(os.environ, **lab.client_env(), TARGET02_IP=sandbox.COLLECTOR_IP,
               PATH=f"{BIN}:{os.environ['PATH']}")
    how = (f"TLS: tapctl with an operator's certificate of the tapdb CA; agents at the relay "
           f"{lab.chassis_remote}, each with its chassis's certificate of the chassis CA and "
           "allowed to write only its own chassis's rows"
           if lab.tls else "plain: the lab's unix socket")
    print(f"== lab: tapdb at {lab.remote} ({how}); host-a underlay {a.ip}, host-b underlay "
          f"{b.ip}, a collector (no hypervisor) at {sandbox.COLLECTOR_IP}")
    for iface, (port, mac, ip) in VMS.items():
        a.add_vm_port(port, iface, mac=mac)
        print(f"   host-a br-int: {port} iface-id {iface} ({ip})")
    for host in (a, b):
        lab.start_agent(host.name, metrics__stats_interval="1")  # counters every second
    wait(lambda: "brtap" in b.vsctl("list-br").split(), 20, "brtap on host-b")
    target01 = b.add_vm_port("tgt164", "vm-164", bridge="brtap")
    print("   host-b brtap: tgt164 iface-id vm-164 (target-01's vNIC, attached by the platform)")
    print("   sdnagent running on host-a and host-b (VXLAN on UDP 4790 between chassis)")

    print("\n== configuring the two-session example (etc/examples/two-sessions.sh)")
    script = ROOT / "etc" / "examples" / "two-sessions.sh"
    out = subprocess.run(["sh", "-x", str(script)], env=env, capture_output=True, text=True,
                         check=True)
    for line in out.stderr.splitlines():
        if line.startswith("+ tapctl"):
            print("$ " + line[2:])

    def tapctl(*args: str) -> str:
        return subprocess.run(["tapctl", *args], env=env, capture_output=True, text=True,
                              check=True).stdout

    wait(lambda: tapctl("show").count("status active") >= 3, 20, "sources and target-01 active")
    wait(lambda: "tun_id=0x1" in b.ofctl("dump-flows", "brtap"), 10, "host-b ready")
    print("\n== tapctl show")
    print(tapctl("show"), end="")

    print("\n== traffic to vm-230 (192.168.0.230), injected on host-a's br-int")
    _, dst_mac, dst_ip = VMS["vm-230"]
    for src, proto, port, expect in TRAFFIC:
        sport, src_mac, src_ip = VMS[src]
        frame = packets.frame(src_mac, dst_mac, src_ip, dst_ip, proto, 40000, port, b"m" * 200)
        a.inject(sport, frame)
        print(f"   {packets.parse(frame)}  -> expect {expect}")
    wait(lambda: sandbox.read_pcap(target01), 10, "target-01's copy")
    time.sleep(0.5)

    received = sandbox.read_pcap(target01)
    print(f"\n== target-01 (vm-164 on host-b, reached over the chassis tunnel) received "
          f"{len(received)} frame(s):")
    for f in received:
        print(f"   {packets.parse(f)}")
    underlay = [packets.parse(f) for f in sandbox.read_pcap(lab.fabric.dir / f"f{b.index}.pcap")]
    vxlan = [s for s in map(packets.parse, lab.collected()) if s.vni is not None
             and s.dst == sandbox.COLLECTOR_IP and s.dport == 4789]
    print(f"\n== target-02 (VXLAN to {sandbox.COLLECTOR_IP}:4789) received {len(vxlan)} "
          "packet(s):")
    for s in vxlan:
        print(f"   {s}")
    tunnelled = [s for s in underlay if s.gre_key is not None or s.vni is not None]
    print(f"\n== the underlay also carried {len(tunnelled)} tunnelled packet(s) from host-a to "
          "host-b:")
    for s in tunnelled:
        print(f"   {s}")
    print("\n== host-a: ovs-ofctl -O OpenFlow13 dump-flows brtap")
    print(a.ofctl("dump-flows", "brtap", "--no-stats"), end="")
    print("\n== host-b: ovs-ofctl -O OpenFlow13 dump-flows brtap")
    print(b.ofctl("dump-flows", "brtap", "--no-stats"), end="")

    # every frame was counted where it was decided: wait for the agents' next reading
    # (flow statistics reach OpenFlow as ovs-vswitchd's revalidators run)
    wait(lambda: '"source vm-230 packets": 5' in tapctl("stats", "session-02", "--format",
                                                        "json"), 20, "the counters")
    print("\n== tapctl stats: what each session mirrored, each rule decided, each source "
          "handed over")
    print(tapctl("stats"), end="")

    packet = "tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_dst=1235"
    print(f"\n== why TCP to port 1235 was not mirrored: tapctl trace --port vm-230 --direction in "
          f"{packet}")
    print(tapctl("trace", "--port", "vm-230", "--direction", "in", packet), end="")

    ok = (len(received) == 1 and len(received[0]) == 96 and len(vxlan) == 1
          and len(vxlan[0].inner_bytes) == 96 and vxlan[0].vni == 2)
    grouped = collector_group(lab, tapctl)
    dropped = capped(lab, tapctl)
    print("\n== result: " + ("as configured: TCP:1234 to target-01 and UDP:1235 to target-02 "
                             "(VNI 2), 96 bytes each, nothing else; each of vm-99's connections "
                             "to one member of target-03, both ways; session-03 capped at 20 "
                             f"copies/s, {dropped} of 100 dropped and counted"
                             if ok and grouped and dropped else "NOT as configured"))
    return 0 if ok and grouped and dropped else 1


def capped(lab: sandbox.Lab, tapctl) -> int:
    """session-03 capped at 20 copies per second, then a burst of 100 frames from vm-99:
    what the cap dropped (and counted), or 0 when the counts do not add up."""
    a = lab["host-a"]
    print("\n== a rate cap: session-03 at most 20 copies per second on each chassis")
    for args in (("--wait", "session-set", "session-03", "--max-pps", "20"),):
        print("$ tapctl " + " ".join(args))
        print("".join(f"  {line}\n" for line in tapctl(*args).splitlines()), end="")
    before = json.loads(tapctl("stats", "session-03", "--format", "json"))["session-03"][
        "counters"]
    _, mac99, ip99 = VMS["vm-99"]
    port99 = VMS["vm-99"][0]
    _, mac161, ip161 = VMS["vm-161"]
    frames = [packets.frame(mac99, mac161, ip99, ip161, "udp", 31000 + i, 53, b"c" * 60)
              for i in range(100)]

    def received() -> int:
        return int(re.search(r"rx pkts=(\d+)", a.ofctl("dump-ports", "br-int", port99)).group(1))
    start, began = received(), time.monotonic()
    for i in (0, 50):  # a dummy port queues 100 frames at most: two bursts of 50
        a.appctl("netdev-dummy/receive", port99, *(f.hex() for f in frames[i:i + 50]))
        wait(lambda: received() >= start + i + 50, 10, "the switch to take the burst")
    took = time.monotonic() - began
    print(f"   100 UDP frames from vm-99 ({ip99}) in {took:.2f} s")

    def counted() -> dict:
        c = json.loads(tapctl("stats", "session-03", "--format", "json"))["session-03"][
            "counters"]
        return c if (c.get("packets", 0) + c.get("dropped", 0)
                     - before.get("packets", 0)) >= 100 else {}
    counts = wait(counted, 20, "the cap's counters")
    print("\n== tapctl stats session-03")
    print(tapctl("stats", "session-03").split("\n\n")[0])
    show = [line for line in tapctl("show").splitlines() if line.startswith(
        ("session session-03", "  controls"))]
    print("\n== tapctl show (session-03)\n" + "\n".join(show))
    passed = counts["packets"] - before.get("packets", 0)
    dropped = counts.get("dropped", 0)
    # the meter's bucket: one second of the rate, filling at the rate
    return dropped if passed + dropped == 100 and 0 < passed <= 20 * (1 + took) + 1 else 0


def collector_group(lab: sandbox.Lab, tapctl) -> bool:
    """A third session: vm-99's traffic, both ways, to a group of three collectors, each
    connection at one of them.  Whether every connection went to one member."""
    a = lab["host-a"]
    print(f"\n== a collector group: session-03 mirrors vm-99 (both directions) to three "
          f"collectors at {', '.join(GROUP)}, one member per connection")
    for ip in GROUP:  # the lab's collector port answers for every member's address
        a.appctl("tnl/neigh/set", "br-ul", ip, sandbox.COLLECTOR_MAC)
    for args in (("target-add", "target-03", "--group", ",".join(GROUP), "--enable"),
                 ("session-add", "session-03", "--target", "target-03", "--priority", "3",
                  "--vni", "3", "--packet-length", "128", "--enable"),
                 ("--wait", "source-add", "session-03", "--port", "vm-99")):
        print("$ tapctl " + " ".join(args))
        out = tapctl(*args)
        print("".join(f"  {line}\n" for line in out.splitlines()), end="")
    wait(lambda: tapctl("show").count("status active") >= 4, 20, "session-03 active")
    skip = len(lab.collected())
    _, mac99, ip99 = VMS["vm-99"]
    port161, mac161, ip161 = VMS["vm-161"]
    sent = {}
    for i in range(12):
        there = packets.frame(mac99, mac161, ip99, ip161, "tcp", 30000 + i, 80, b"g" * 60)
        back = packets.frame(mac161, mac99, ip161, ip99, "tcp", 80, 30000 + i, b"g" * 60)
        a.inject(VMS["vm-99"][0], there)
        a.inject(port161, back)
        sent[there[:128]], sent[back[:128]] = i, i
    print(f"   12 TCP connections {ip99}:30000-30011 <-> {ip161}:80, a frame each way")

    def copies() -> list:
        return [s for s in map(packets.parse, lab.collected()[skip:]) if s.dst in GROUP]
    wait(lambda: len(copies()) >= len(sent), 10, "the group's copies")
    at: dict[int, set[str]] = {}
    for s in copies():
        at.setdefault(sent.get(s.inner_bytes, -1), set()).add(s.dst)
    for ip in GROUP:
        mine = sorted(i for i, where in at.items() if where == {ip})
        ports = ", ".join(str(30000 + i) for i in mine) or "none"
        print(f"   {ip} received connections {ports} (both directions)")
    wait(lambda: '"member ' in tapctl("stats", "session-03", "--format", "json"), 20,
         "the members' counters")
    print("\n== tapctl stats session-03")
    print(tapctl("stats", "session-03"), end="")
    packet = f"tcp,nw_src={ip161},nw_dst={ip99},tp_src=80,tp_dst=30000"
    print(f"\n== tapctl trace --port vm-99 --direction in {packet}")
    print(tapctl("trace", "--port", "vm-99", "--direction", "in", packet), end="")
    return (set(at) == set(range(12)) and all(len(w) == 1 for w in at.values())
            and len({ip for w in at.values() for ip in w}) > 1)


if __name__ == "__main__":
    sys.exit(main())
