"""A lab with agents running, VMs on br-int, and helpers to send and capture."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from sdnagent import packets, sandbox
from sdnagent.sandbox import Host, Lab

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "examples" / "two-sessions.sh"

# the VMs of the example: iface-id -> (port name, MAC, IP)
VMS = {
    "vm-161": ("vm161", "fa:16:3e:00:01:61", "192.168.0.161"),
    "vm-230": ("vm230", "fa:16:3e:00:02:30", "192.168.0.230"),
    "vm-99": ("vm99", "fa:16:3e:00:00:99", "192.168.0.99"),
    "vm-164": ("tgt164", "fa:16:3e:00:01:64", "192.168.0.164"),
}


def wait_until(pred: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or pred}")
        time.sleep(0.05)


def running(log_tail: int = 6000, **options: Any) -> Iterator["MirrorLab"]:
    """A started :class:`~sdnagent.sandbox.Lab` (``options``: its own) as a MirrorLab,
    for a fixture to yield from; at the end the agents' logs are printed (pytest shows
    them when the test failed) and everything is stopped and removed."""
    from tests.conftest import require_ovs
    require_ovs()
    lab = Lab(**options)
    try:
        lab.start()
        yield MirrorLab(lab)
    finally:
        for host in lab.hosts.values():
            print(f"---- sdnagent log of {host.name}\n{host.agent_log()[-log_tail:]}")
        lab.stop()
        shutil.rmtree(lab.dir, ignore_errors=True)


class MirrorLab:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.env = dict(os.environ, **lab.client_env(), PATH=f"{BIN}:{os.environ['PATH']}")

    def __getitem__(self, name: str) -> Host:
        return self.lab[name]

    # ------------------------------------------------------------ intent

    def tapctl(self, *args: str) -> str:
        proc = self.run_tapctl(*args)
        assert proc.returncode == 0, f"tapctl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def run_tapctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tapctl", *args], env=self.env, capture_output=True, text=True)

    def example(self, target02_ip: str) -> None:
        subprocess.run(["sh", str(EXAMPLE)], env=dict(self.env, TARGET02_IP=target02_ip),
                       check=True, capture_output=True)

    def status(self) -> dict:
        return json.loads(self.tapctl("list", "--format", "json"))

    def source_state(self, session: str, key: str) -> dict:
        for s in self.status()["sessions"]:
            if s["name"] == session:
                for src in s["sources"]:
                    if key in (src["iface_id"], f"{src['chassis']}:{src['bridge']}"):
                        return src["status"]
        return {}

    def wait_source(self, session: str, key: str, state: str = "active",
                    timeout: float = 15) -> dict:
        def reached() -> Optional[dict]:
            st = self.source_state(session, key)
            return st if st.get("state") == state else None
        return wait_until(reached, timeout, f"source {key} of {session} to be {state}")

    # ------------------------------------------------------------ hosts

    def vm(self, host: str, iface_id: str, bridge: str = "br-int") -> Path:
        port, mac, _ = VMS[iface_id]
        return self.lab[host].add_vm_port(port, iface_id, bridge, mac)

    def send(self, host: str, from_iface: str, to_iface: str, proto: str = "tcp",
             dport: int = 1234, src_ip: Optional[str] = None, size: int = 200) -> bytes:
        """Inject a frame from one VM's port to another VM (by its MAC and IP)."""
        port, src_mac, ip = VMS[from_iface]
        _, dst_mac, dst_ip = VMS[to_iface]
        f = packets.frame(src_mac, dst_mac, src_ip or ip, dst_ip, proto, 40000, dport,
                          b"m" * size)
        self.lab[host].inject(port, f)
        return f

    def captured(self, pcap: Path) -> list[bytes]:
        return sandbox.read_pcap(pcap)

    def underlay_to(self, host: str) -> list[packets.Summary]:
        """What the fabric carried to ``host``, parsed (tunnels opened)."""
        pcap = self.lab.fabric.dir / f"f{self.lab[host].index}.pcap"
        return [packets.parse(f) for f in sandbox.read_pcap(pcap)]

    def collected(self) -> list[packets.Summary]:
        """What the fabric carried to the collector (``sandbox.COLLECTOR_IP``), parsed."""
        return [packets.parse(f) for f in self.lab.collected()]

    def wait_frames(self, pcap: Path, count: int, timeout: float = 10) -> list[bytes]:
        def enough() -> Optional[list[bytes]]:
            frames = self.captured(pcap)
            return frames if len(frames) >= count else None
        return wait_until(enough, timeout, f"{count} frame(s) in {pcap.name}")

    def brtap_flows(self, host: str) -> list[str]:
        out = self.lab[host].ofctl("dump-flows", "brtap", "--no-stats")
        return [line.strip() for line in out.splitlines() if "actions=" in line]

    def quiet(self, host: str, seconds: float = 1.0) -> None:
        """Wait until the agent has logged nothing new for ``seconds``."""
        h = self.lab[host]
        last, since = h.agent_log(), time.monotonic()
        deadline = since + 20
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = h.agent_log()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return
        raise AssertionError(f"the agent on {host} never went quiet")
