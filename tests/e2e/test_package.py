"""The install an operator expects: a wheel that pip installs with every runtime
dependency, and the Debian package of tools/build-deb, installed on this machine, whose
own commands (tapdb and its session clock, the agents, tapctl) run the two-host example.
Root only (the package is installed with dpkg); the package is purged again at the end
when this test installed it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdnagent import sandbox
from tests.conftest import require_ovs
from tests.functional.mirrorlab import running, wait_until
from tests.functional.test_agent import two_host_example

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("tapctl", "sdnagent", "sdnagent-tapdb", "sdnagent-api", "sdnagent-trace",
            "sdnagent-pki")
USR_BIN = Path("/usr/bin")


def require_dpkg_as_root() -> None:
    why = None
    if os.geteuid() != 0:
        why = "installing a Debian package needs root"
    elif shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        why = "dpkg not found (a Debian machine)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the package test must run in CI: {why}")
        pytest.skip(why)


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def test_a_wheel_gives_every_command_with_its_dependencies(tmp_path):
    """pip install of the built wheel alone, into an empty venv: every command runs, the
    API included (fastapi, uvicorn, cryptography come with it)."""
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", str(tmp_path / "dist"), str(ROOT))
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    [wheel] = (tmp_path / "dist").glob("sdnagent-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    run(str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel))
    for command in COMMANDS:
        out = run(str(venv / "bin" / command), "--help").stdout
        assert "usage:" in out, (command, out)
    run(str(venv / "bin" / "python"), "-c", "import sdnagent.api.app, sdnagent.pki, "
        "sdnagent.agent.agent, sdnagent.tapdb.clock")


@pytest.fixture
def installed():
    """tools/build-deb's package, installed with dpkg (and purged after, if it was not
    installed before)."""
    require_dpkg_as_root()
    require_ovs()
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"sdnagent-deb-test-{os.getpid()}"
    before = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "sdnagent"],
                            capture_output=True, text=True).stdout
    try:
        deb = Path(run(str(ROOT / "tools" / "build-deb"), "--out", str(out)).stdout.strip())
        assert deb.name.startswith("sdnagent_") and deb.suffix == ".deb", deb
        run("dpkg", "-i", str(deb))
        yield deb
    finally:
        if "ok installed" not in before:
            subprocess.run(["dpkg", "--purge", "sdnagent"], capture_output=True)
        shutil.rmtree(out, ignore_errors=True)


def test_the_package_installs_and_runs_the_two_host_example(installed):
    status = run("dpkg-query", "-W", "-f=${Status} ${Depends}", "sdnagent").stdout
    assert status.startswith("install ok installed ") and "openvswitch-switch" in status
    for command in COMMANDS:
        assert (USR_BIN / command).resolve().parent == Path("/usr/lib/sdnagent/venv/bin")
        assert "usage:" in run(str(USR_BIN / command), "--help").stdout
    for unit in ("sdnagent", "sdnagent-tapdb", "sdnagent-tapdb-relay", "sdnagent-api"):
        text = Path(f"/lib/systemd/system/{unit}.service").read_text()
        assert "ExecStart=/usr/bin/sdnagent" in text, unit
    assert (Path("/etc/sdnagent/sdnagent.conf").read_text()
            == (ROOT / "etc/sdnagent/sdnagent.conf.sample").read_text())
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "sdnagent").stdout
    assert "/etc/sdnagent/sdnagent.conf" in conffiles
    listed = run("dpkg", "-L", "sdnagent").stdout
    assert str(ROOT) not in listed and "/tmp/" not in listed

    # the example, by the installed commands alone: tapdb and its clock, both agents,
    # and tapctl running etc/examples/two-sessions.sh
    for mlab in running(bindir=USR_BIN):
        mlab.env["PATH"] = f"{USR_BIN}:{os.environ['PATH']}"
        tgt = two_host_example(mlab)
        daemons = {p.name: Path(f"/proc/{int(p.read_text())}/cmdline").read_bytes()
                   for p in mlab.lab.dir.glob("**/*.pid")
                   if p.name in ("sdnagent.pid", "clock.pid", "tapdb.pid")}
        assert set(daemons) == {"sdnagent.pid", "clock.pid", "tapdb.pid"}, daemons
        for name in ("sdnagent.pid", "clock.pid"):
            assert daemons[name].startswith(b"/usr/lib/sdnagent/venv/bin/python"), daemons[name]
        udp = mlab.send("host-a", "vm-161", "vm-230", "udp", 1235)
        tcp = mlab.send("host-a", "vm-161", "vm-230", "tcp", 1234)
        assert mlab.wait_frames(tgt, 1) == [tcp[:96]]
        wait_until(lambda: [s for s in mlab.collected() if s.vni == 2], 10, "VNI 2")
        [copy] = [s for s in mlab.collected() if s.vni == 2]
        assert (copy.dst, copy.inner_bytes) == (sandbox.COLLECTOR_IP, udp[:96])
        assert "session session-01" in mlab.tapctl("show")
