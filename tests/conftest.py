"""Fixtures: a private tapdb, a lab of OVS hosts, tapctl run in-process."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from sdnagent import sandbox
from sdnagent.cli import tapctl as tapctl_cli
from sdnagent.tapdb import ops, server


def require_ovs() -> None:
    """Skip where OVS is not installed; in CI every tier must run, so fail there."""
    why = sandbox.missing_ovs()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"OVS is required in CI: {why}")
        pytest.skip(why)


@pytest.fixture
def tapdb():
    """A running standalone tapdb in its own short temporary directory."""
    require_ovs()
    directory = tempfile.mkdtemp(prefix="sdn-tapdb-")
    srv = server.TapdbServer(directory)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def api(tapdb):
    """An operator's connection (tapctl's verbs)."""
    conn = ops.connect(tapdb.remote, 10)
    yield conn
    conn.close()


@pytest.fixture
def tapctl(tapdb, capsys):
    """Run tapctl in this process against the fixture's tapdb: (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = tapctl_cli.main(["--db", tapdb.remote, *args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


@pytest.fixture
def lab():
    """A tapdb and two hosts (host-a, host-b) on the dummy datapath, joined by an underlay."""
    require_ovs()
    lab = sandbox.Lab()
    try:
        with lab:
            yield lab
    finally:
        shutil.rmtree(lab.dir, ignore_errors=True)
