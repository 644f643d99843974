"""A private lab: a tapdb and several OVS "hosts" on the dummy datapath.

Each host is its own ovsdb-server + ovs-vswitchd (``--enable-dummy``) in its
own directory, with a ``br-int`` doing NORMAL switching and a ``br-ul``
underlay bridge whose uplink is a dummy port streamed over a unix socket to a
"fabric" OVS instance, so GRE and VXLAN really cross between hosts.  Nothing
touches the kernel's network.  Used by the test fixtures, ``tools/sandbox``
and the demo; everything it starts is found again by its pid files, so
:func:`stop_all` can clean a directory from another process.
"""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from sdnagent import pki
from sdnagent.tapdb.server import TapdbServer

VSWITCH_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
OVS_BINARIES = ("ovsdb-server", "ovsdb-tool", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl",
                "ovs-appctl", "ovsdb-client")
UNDERLAY_PREFIX = "10.255.0."
UNDERLAY6_PREFIX = "2001:db8:ff::"  # the same underlay's IPv6 addresses
# a collector on the underlay that is no hypervisor: what the fabric sends it is captured
COLLECTOR_IP, COLLECTOR_MAC = f"{UNDERLAY_PREFIX}200", "aa:55:aa:00:00:c8"
COLLECTOR_IP6 = f"{UNDERLAY6_PREFIX}c8"


def missing_ovs() -> Optional[str]:
    """Why OVS cannot run here, or None."""
    for binary in OVS_BINARIES:
        if shutil.which(binary) is None:
            return f"{binary} not found: install the Debian package openvswitch-switch (tools/setup)"
    if not VSWITCH_SCHEMA.exists():
        return f"{VSWITCH_SCHEMA} not found: install openvswitch-switch (tools/setup)"
    return None


class CommandError(RuntimeError):
    pass


def _run(args: Sequence[str], env: Optional[dict] = None, timeout: float = 30) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class Ovs:
    """One private Open vSwitch (database + switch daemon) in ``directory``."""

    def __init__(self, name: str, directory: Path, netns: Optional[str] = None,
                 datapath: str = "dummy"):
        self.name = name
        self.dir = Path(directory)
        self.netns = netns  # run ovs-vswitchd (and the agent) in this network namespace
        self.datapath = datapath  # "netdev" with real ports in a namespace
        self.sock = self.dir / "db.sock"
        self.env = dict(os.environ, OVS_RUNDIR=str(self.dir), OVS_DBDIR=str(self.dir),
                        OVS_LOGDIR=str(self.dir), OVS_SYSCONFDIR=str(self.dir))

    @property
    def remote(self) -> str:
        return f"unix:{self.sock}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        db = self.dir / "conf.db"
        if not db.exists():
            _run(["ovsdb-tool", "create", str(db), str(VSWITCH_SCHEMA)])
        self._start_ovsdb_server()
        self.vsctl("--no-wait", "init")
        self._start_vswitchd()

    def _start_ovsdb_server(self) -> None:
        d = self.dir
        _run(["ovsdb-server", str(d / "conf.db"), f"--remote=punix:{self.sock}",
              f"--pidfile={d}/ovsdb-server.pid", f"--unixctl={d}/ovsdb-server.ctl",
              f"--log-file={d}/ovsdb-server.log", "--detach", "--no-chdir"], self.env)

    def _start_vswitchd(self) -> None:
        d = self.dir
        wrap = ["ip", "netns", "exec", self.netns] if self.netns else []
        _run([*wrap, "ovs-vswitchd", self.remote, "--enable-dummy", "--disable-system",
              "--disable-system-route", f"--pidfile={d}/ovs-vswitchd.pid",
              f"--unixctl={d}/ovs-vswitchd.ctl", f"--log-file={d}/ovs-vswitchd.log",
              "--detach", "--no-chdir"], self.env)

    def restart_vswitchd(self) -> None:
        """Kill and start ovs-vswitchd, as an upgrade or a crash would: flows are lost."""
        self._kill("ovs-vswitchd")
        self._start_vswitchd()

    def restart_ovsdb_server(self) -> None:
        """Kill and start the local database server; its data stays on disk."""
        self._kill("ovsdb-server")
        self._start_ovsdb_server()

    def _kill(self, daemon: str) -> None:
        pidfile = self.dir / f"{daemon}.pid"
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        stop_all(self.dir, recursive=False)

    # ------------------------------------------------------------ the CLIs

    def vsctl(self, *args: str) -> str:
        return _run(["ovs-vsctl", f"--db={self.remote}", "--timeout=30", *args], self.env)

    def ofctl(self, *args: str) -> str:
        return _run(["ovs-ofctl", "-O", "OpenFlow13", *args], self.env)

    def appctl(self, *args: str) -> str:
        return _run(["ovs-appctl", "-t", str(self.dir / "ovs-vswitchd.ctl"), *args], self.env)

    def add_bridge(self, bridge: str, *settings: str) -> None:
        self.vsctl("add-br", bridge, "--", "set", "bridge", bridge,
                   f"datapath_type={self.datapath}", *settings)

    def add_dummy_port(self, bridge: str, port: str, *options: str,
                       iface_id: Optional[str] = None, capture: bool = True,
                       mac: Optional[str] = None) -> Optional[Path]:
        """A dummy port; when ``capture``, what the switch sends on it lands in a pcap file.
        ``iface_id`` and ``mac`` as a cloud sets them for a VM's port."""
        pcap = self.dir / f"{port}.pcap" if capture else None
        settings = ["type=dummy", *options]
        if pcap is not None:
            settings.append(f"options:tx_pcap={pcap}")
        if iface_id is not None:
            settings.append(f"external_ids:iface-id={iface_id}")
        if mac is not None:
            settings.append(f'external_ids:attached-mac="{mac}"')
        self.vsctl("add-port", bridge, port, "--", "set", "interface", port, *settings)
        return pcap

    def inject(self, port: str, frame: bytes) -> None:
        """Make ``frame`` arrive on dummy ``port`` as if from the wire."""
        self.appctl("netdev-dummy/receive", port, frame.hex())

    def ofport(self, port: str) -> int:
        return int(self.vsctl("get", "interface", port, "ofport").strip())

class Host(Ovs):
    """A hypervisor: br-int for VMs (NORMAL switching) and br-ul for the underlay."""

    def __init__(self, name: str, directory: Path, index: int, netns: Optional[str] = None,
                 datapath: str = "dummy"):
        super().__init__(name, directory, netns, datapath)
        self.index = index
        self.ip = f"{UNDERLAY_PREFIX}{index}"
        self.ip6 = f"{UNDERLAY6_PREFIX}{index:x}"
        self.mac = f"aa:55:aa:00:00:{index:02x}"

    def start(self) -> None:
        super().start()
        self.add_bridge("br-int", "fail_mode=standalone")

    def plug_underlay(self, fabric_socket: Path, peers: Sequence["Host"]) -> None:
        self.add_bridge("br-ul", f"other-config:hwaddr={self.mac}", "fail_mode=standalone")
        self.add_dummy_port("br-ul", "ul0", f"options:stream=unix:{fabric_socket}", capture=False)
        self.peers = [p for p in peers if p is not self]
        self._address_underlay()

    def _address_underlay(self) -> None:
        """What lives in ovs-vswitchd's memory only: the address, route and neighbours."""
        self.appctl("netdev-dummy/ip4addr", "br-ul", f"{self.ip}/24")
        self.appctl("ovs/route/add", f"{self.ip}/24", "br-ul")
        self.appctl("netdev-dummy/ip6addr", "br-ul", f"{self.ip6}/64")
        self.appctl("ovs/route/add", f"{self.ip6}/64", "br-ul")
        for peer in self.peers:
            self.appctl("tnl/neigh/set", "br-ul", peer.ip, peer.mac)
            self.appctl("tnl/neigh/set", "br-ul", peer.ip6, peer.mac)
        self.appctl("tnl/neigh/set", "br-ul", COLLECTOR_IP, COLLECTOR_MAC)
        self.appctl("tnl/neigh/set", "br-ul", COLLECTOR_IP6, COLLECTOR_MAC)

    def restart_vswitchd(self) -> None:
        super().restart_vswitchd()
        deadline = time.monotonic() + 10
        while True:  # the bridges come back from the database first
            try:
                self._address_underlay()
                break
            except CommandError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.wait_underlay()

    def wait_underlay(self, timeout: float = 10) -> None:
        """Block until the uplink's stream to the fabric is connected."""
        deadline = time.monotonic() + timeout
        while "connected" not in self.appctl("netdev-dummy/conn-state", "ul0"):
            if time.monotonic() > deadline:
                raise CommandError(f"{self.name}: underlay ul0 not connected after {timeout:g} s")
            time.sleep(0.02)

    def start_agent(self, tapdb: str, encap: str = "vxlan", binary: Optional[str] = None,
                    **options: str) -> Path:
        """Run ``sdnagent`` (``binary``, else this venv's) for this host in the background;
        returns its config file.

        ``options``: more settings, ``group__name=value`` (``name=value`` for DEFAULT)."""
        sections = {
            "DEFAULT": {"host": self.name, "resync_interval": "30", "debug": "false"},
            "ovs": {"ovsdb_connection": self.remote, "datapath_type": self.datapath,
                    "of_listen_port": str(free_port())},
            "tunnel": {"local_ip": self.ip, "encap": encap},
            "tapdb": {"connection": tapdb},
        }
        for key, value in options.items():
            group, _, name = key.rpartition("__")
            sections.setdefault(group or "DEFAULT", {})[name] = value
        conf = self.dir / "sdnagent.conf"
        conf.write_text("".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items())
                                for g, opts in sections.items()))
        log = open(self.dir / "sdnagent.log", "ab")
        wrap = ["ip", "netns", "exec", self.netns] if self.netns else []
        proc = subprocess.Popen([*wrap, binary or _agent_binary(), "--config-file", str(conf)],
                                stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        (self.dir / "sdnagent.pid").write_text(f"{proc.pid}\n")
        self._agent = proc
        return conf

    def stop_agent(self, timeout: float = 10) -> None:
        proc = getattr(self, "_agent", None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        (self.dir / "sdnagent.pid").unlink(missing_ok=True)
        self._agent = None

    def agent_log(self) -> str:
        path = self.dir / "sdnagent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_vm_port(self, port: str, iface_id: str, bridge: str = "br-int",
                    mac: Optional[str] = None) -> Path:
        pcap = self.add_dummy_port(bridge, port, iface_id=iface_id, mac=mac)
        assert pcap is not None
        return pcap


class Lab:
    """A tapdb and ``hosts`` hosts joined by an underlay fabric, under one directory."""

    def __init__(self, hosts: Sequence[str] = ("host-a", "host-b"),
                 directory: Optional[os.PathLike | str] = None, tapdb: bool = True,
                 tls: bool = False, ipv6: bool = False, bindir: Optional[Path] = None):
        self.ipv6 = ipv6  # agents' tunnels on the underlay's IPv6 addresses
        # where the commands the lab runs live (an installed package's), else this venv's
        assert not (tls and bindir), "a lab of installed commands is a plain one"
        self.bindir = bindir
        # unix socket paths must stay short (108 bytes), so not under pytest's tmp_path
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="sdn-"))
        self.tapdb = TapdbServer(self.dir / "tapdb") if tapdb else None
        # tapdb on pssl: (loopback): operators with a certificate of the lab's tapdb CA on the
        # member's listener, agents with one of its chassis CA on a relay beside it (their
        # writes limited to their own chassis)
        self.tls = tls
        self._tls_port = free_port() if tls else 0
        self._chassis_port = free_port() if tls else 0
        self.fabric = Ovs("fabric", self.dir / "fabric")
        self.hosts = {name: Host(name, self.dir / name, i + 1) for i, name in enumerate(hosts)}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def start(self) -> "Lab":
        try:
            if self.tapdb:
                if self.tls:
                    self.tapdb.start([f"pssl:{self._tls_port}:127.0.0.1"],
                                     tls=pki.issue(self.dir / "pki", "tapdb", "tapdb"),
                                     chassis_remotes=[f"pssl:{self._chassis_port}:127.0.0.1"],
                                     chassis_ca=str(pki.chassis_ca(self.dir / "pki")))
                elif self.bindir is not None:
                    _run([str(self.bindir / "sdnagent-tapdb"), "start", "--dir",
                          str(self.tapdb.dir)], timeout=60)
                else:
                    self.tapdb.start()
            self.fabric.start()
            self.fabric.add_bridge("br-fabric", "fail_mode=standalone")
            # the collector speaks once, so that the fabric learns where it is and sends
            # it what is addressed to it alone
            self.fabric.add_dummy_port("br-fabric", "collector")
            self.fabric.inject("collector", _announce(COLLECTOR_MAC))
            for host in self.hosts.values():
                sock = self.dir / f"ul{host.index}.sock"
                # f<N>.pcap: what the underlay carried to host N
                self.fabric.add_dummy_port("br-fabric", f"f{host.index}",
                                           f"options:pstream=punix:{sock}")
                host.start()
                host.plug_underlay(sock, list(self.hosts.values()))
            for host in self.hosts.values():
                host.wait_underlay()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for host in self.hosts.values():
            host.stop_agent()
        stop_all(self.dir)

    def collected(self) -> list[bytes]:
        """The frames the fabric sent to the collector at ``COLLECTOR_IP`` and addressed to
        it (the fabric floods what it has not learnt yet, as any switch; a NIC drops it)."""
        mac = bytes.fromhex(COLLECTOR_MAC.replace(":", ""))
        return [f for f in read_pcap(self.fabric.dir / "collector.pcap") if f[:6] == mac]

    @property
    def remote(self) -> str:
        """Where clients reach tapdb: its TLS remote in a TLS lab, else its unix socket."""
        assert self.tapdb is not None
        return f"ssl:127.0.0.1:{self._tls_port}" if self.tls else self.tapdb.remote

    @property
    def chassis_remote(self) -> str:
        """Where agents reach tapdb: in a TLS lab its relay's agents' listener, else its unix
        socket."""
        assert self.tapdb is not None
        return f"ssl:127.0.0.1:{self._chassis_port}" if self.tls else self.tapdb.remote

    def client_env(self) -> dict[str, str]:
        """tapctl's environment: the remote and, in a TLS lab, an operator's certificate."""
        env = {"TAPDB": self.remote}
        if self.tls:
            creds = pki.issue(self.dir / "pki", "operator", "operator")
            env.update(TAPDB_PRIVATE_KEY=creds.private_key, TAPDB_CERTIFICATE=creds.certificate,
                       TAPDB_CA_CERT=creds.ca_cert)
        return env

    def start_agent(self, host: str, encap: str = "vxlan", **options: str) -> Path:
        """``host``'s agent on this lab's tapdb; in a TLS lab with its chassis certificate."""
        if self.tls:
            creds = pki.issue(self.dir / "pki", host, "chassis")
            options = {"tapdb__ssl_key_file": creds.private_key,
                       "tapdb__ssl_cert_file": creds.certificate,
                       "tapdb__ssl_ca_cert_file": creds.ca_cert, **options}
        if self.ipv6:
            options = {"tunnel__local_ip": self.hosts[host].ip6, **options}
        binary = str(self.bindir / "sdnagent") if self.bindir is not None else None
        return self.hosts[host].start_agent(self.chassis_remote, encap, binary, **options)

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _announce(mac: str) -> bytes:
    """A broadcast frame from ``mac`` (an experimental ethertype) for switches to learn."""
    return b"\xff" * 6 + bytes.fromhex(mac.replace(":", "")) + b"\x88\xb5" + b"\0" * 46


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_binary() -> str:
    """The sdnagent next to this Python (the venv), else the one on PATH."""
    import sys
    here = Path(sys.executable).parent / "sdnagent"
    return str(here) if here.exists() else "sdnagent"


def stop_all(directory: Path, recursive: bool = True, timeout: float = 10) -> list[int]:
    """Stop every daemon whose pid file lies in ``directory``; returns their pids."""
    pattern = "**/*.pid" if recursive else "*.pid"
    pids = []
    for pidfile in sorted(Path(directory).glob(pattern)):
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError):
            continue
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def read_pcap(path: Path) -> list[bytes]:
    """The frames of a classic pcap file (what OVS writes for tx_pcap)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    if len(data) < 24:
        return []
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    frames, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(order + "IIII", data[off:off + 16])
        off += 16
        if off + incl > len(data):
            break
        frames.append(data[off:off + incl])
        off += incl
    return frames


def main(argv: Optional[Sequence[str]] = None) -> int:
    """tools/sandbox: start or stop a lab for people to try things by hand."""
    import argparse

    p = argparse.ArgumentParser(prog="tools/sandbox", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("start", "stop"))
    p.add_argument("--dir", default="/tmp/sdnagent-lab",
                   help="where everything lives; keep it short (default %(default)s)")
    p.add_argument("--hosts", default="host-a,host-b", help="comma-separated host names")
    args = p.parse_args(argv)
    if args.action == "stop":
        pids = stop_all(Path(args.dir))
        print(f"stopped {len(pids)} daemons under {args.dir}")
        return 0
    why = missing_ovs()
    if why:
        print(f"tools/sandbox: {why}")
        return 1
    if Path(args.dir).exists() and any(Path(args.dir).glob("**/*.pid")):
        print(f"tools/sandbox: {args.dir} is in use; run 'tools/sandbox stop --dir {args.dir}' "
              "first")
        return 1
    shutil.rmtree(args.dir, ignore_errors=True)
    lab = Lab(args.hosts.split(","), args.dir).start()
    assert lab.tapdb is not None
    print(f"export TAPDB={lab.tapdb.remote}")
    for host in lab.hosts.values():
        print(f"# {host.name}: underlay {host.ip}; its switch:")
        print(f"#   OVS_RUNDIR={host.dir} ovs-vsctl --db={host.remote} show")
        print(f"#   OVS_RUNDIR={host.dir} ovs-appctl -t {host.dir}/ovs-vswitchd.ctl ...")
    print(f"# stop everything: tools/sandbox stop --dir {args.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
