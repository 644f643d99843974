"""A real OVN beside sdnagent: ovn-northd and its two databases, an ovn-controller per
lab host, all on the dummy datapath (as OVN's own test suite runs), Geneve between
the hosts over the lab's underlay.

Every daemon writes a pid file under the lab's directory, so the lab's
``stop_all`` ends them with the rest.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

from sdnagent.sandbox import CommandError, Host, Lab

OVN_SCHEMAS = Path("/usr/share/ovn")
OVN_BINARIES = ("ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl", "ovn-appctl")


def missing_ovn() -> Optional[str]:
    gone = [b for b in OVN_BINARIES if shutil.which(b) is None]
    if gone or not (OVN_SCHEMAS / "ovn-nb.ovsschema").exists():
        return (f"OVN is not installed ({', '.join(gone) or 'schemas'} missing): tools/setup "
                "installs Debian's ovn-central and ovn-host")
    return None


def _run(args: list[str], env: Optional[dict] = None, timeout: float = 30) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise CommandError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class Ovn:
    """OVN's central part (northbound and southbound databases, ovn-northd) in
    ``lab.dir/ovn``, and ovn-controller on the lab's hosts."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.dir = lab.dir / "ovn"
        self.nb = f"unix:{self.dir}/nb.sock"
        self.sb = f"unix:{self.dir}/sb.sock"

    def start(self) -> "Ovn":
        self.dir.mkdir(exist_ok=True)
        d = self.dir
        for db in ("nb", "sb"):
            _run(["ovsdb-tool", "create", f"{d}/{db}.db", str(OVN_SCHEMAS / f"ovn-{db}.ovsschema")])
            _run(["ovsdb-server", f"{d}/{db}.db", f"--remote=punix:{d}/{db}.sock",
                  f"--pidfile={d}/{db}.pid", f"--unixctl={d}/{db}.ctl",
                  f"--log-file={d}/{db}.log", "--detach", "--no-chdir"])
        _run(["ovn-northd", f"--ovnnb-db={self.nb}", f"--ovnsb-db={self.sb}",
              f"--pidfile={d}/ovn-northd.pid", f"--unixctl={d}/ovn-northd.ctl",
              f"--log-file={d}/ovn-northd.log", "--detach", "--no-chdir"])
        return self

    def nbctl(self, *args: str) -> str:
        return _run(["ovn-nbctl", f"--db={self.nb}", "--timeout=30", *args])

    def sbctl(self, *args: str) -> str:
        return _run(["ovn-sbctl", f"--db={self.sb}", "--timeout=30", *args])

    # ------------------------------------------------------------ chassis

    def start_controller(self, host: Host, encap: str = "geneve") -> None:
        """ovn-controller on ``host``: br-int becomes OVN's (fail_mode secure)."""
        host.vsctl("set", "bridge", "br-int", "fail_mode=secure",
                   "other_config:disable-in-band=true")
        host.vsctl("set", "open_vswitch", ".", f"external_ids:system-id={host.name}",
                   f"external_ids:ovn-remote={self.sb}", f"external_ids:ovn-encap-type={encap}",
                   f"external_ids:ovn-encap-ip={host.ip}", "external_ids:ovn-bridge=br-int",
                   f"external_ids:ovn-bridge-datapath-type={host.datapath}")
        self._controller(host)

    def _controller(self, host: Host) -> None:
        d = host.dir
        _run(["ovn-controller", host.remote, f"--pidfile={d}/ovn-controller.pid",
              f"--log-file={d}/ovn-controller.log", "--detach", "--no-chdir"], env=self._env(host))

    @staticmethod
    def _env(host: Host) -> dict:
        """Where ovn-controller keeps its pid file and control socket: the host's directory."""
        d = str(host.dir)
        return dict(os.environ, OVN_RUNDIR=d, OVN_LOGDIR=d, OVS_RUNDIR=d)

    def appctl(self, host: Host, *args: str) -> str:
        return _run(["ovn-appctl", "-t", "ovn-controller", *args], env=self._env(host))

    def restart_controller(self, host: Host) -> None:
        """Kill ovn-controller and start it again (it flushes br-int's flows on connecting)."""
        pidfile = host.dir / "ovn-controller.pid"
        pid = int(pidfile.read_text())
        os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        pidfile.unlink(missing_ok=True)
        self._controller(host)

    def wait_bound(self, port: str, chassis: str, timeout: float = 20) -> None:
        """Until the southbound database says ``port`` is bound on ``chassis`` and up."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.sbctl("--bare", "--columns=chassis", "find", "Port_Binding",
                             f"logical_port={port}").strip()
            if out:
                name = self.sbctl("--bare", "--columns=name", "list", "Chassis", out).strip()
                if name == chassis:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{port} not bound on {chassis} after {timeout:g} s")
            time.sleep(0.1)
