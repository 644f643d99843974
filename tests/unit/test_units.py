"""The systemd units in etc/systemd, checked by systemd-analyze where it is installed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "etc" / "systemd").glob("*.service"))


def test_the_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    assert [u.name for u in UNITS] == ["sdnagent-api.service", "sdnagent-tapdb-relay.service",
                                       "sdnagent-tapdb.service", "sdnagent.service"]
    # as the package installs them, here pointing at this clone's venv
    bin_dir = str(Path(sys.executable).parent)
    for unit in UNITS:
        text = unit.read_text()
        assert "/usr/bin/sdnagent" in text
        (tmp_path / unit.name).write_text(text.replace("/usr/bin/sdnagent",
                                                       f"{bin_dir}/sdnagent"))
    proc = subprocess.run([analyze, "verify", "--man=no", *sorted(map(str, tmp_path.iterdir()))],
                          capture_output=True, text=True, timeout=60)
    # systemd-analyze exits 0 for a line it ignores: any word from it is a fault
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")

