"""What tapctl says of statuses and counters: always with the chassis RBAC checked."""
from __future__ import annotations

import types

import pytest

from sdnagent.cli import tapctl
from sdnagent.tapdb import rows
from tests.unit.test_model import example


def status_row(chassis: str, status: dict, target: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(chassis=chassis, status=status,
                                 target=[types.SimpleNamespace(uuid=target)])


def test_a_status_is_the_rows_chassis_word_whatever_its_map_says():
    """host-c writes its own row (RBAC lets it) with a map naming host-a, and dressing
    its word as host-a's stale one: shown as host-c's, the map's extra keys dropped."""
    shown = rows.statuses([status_row("host-c", {"state": "active", "chassis": "host-a",
                                                 "was": "error", "colour": "red"}, "t1")],
                          "target")
    assert dict(shown["t1"]) == {"state": "active", "chassis": "host-c"}
    assert tapctl._status_text(shown["t1"]) == "active (on host-c)"
    stale = (("chassis", "host-c"), ("reason", "chassis host-b silent for 45 s"),
             ("state", "stale"), ("was", "active"))
    assert tapctl._status_text(stale) == "stale: chassis host-b silent for 45 s " \
                                         "(was active on host-c)"


def test_counters_are_shown_with_the_chassis_that_reported_them():
    intent = example()
    counters = {"session-01": {"host-a": {"packets": 5, "bytes": 1270},
                               "host-c": {"packets": 10 ** 12, "bytes": 10 ** 15}}}
    table = tapctl.format_stats(intent, counters, "session-01").splitlines()
    assert table[0].endswith("  CHASSIS: PACKETS")
    assert table[1].endswith("host-a: 5, host-c: 1000000000000"), table
    show = tapctl.format_show(intent, counted=counters)
    assert "mirrored 1000000000005 packets (1000000000001270 bytes; host-a: 5, host-c: " \
           "1000000000000)" in show, show


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_timeout_is_a_positive_number_of_seconds(value, capsys):
    with pytest.raises(SystemExit):
        tapctl.build_parser().parse_args(["--timeout", value, "list"])
    assert f"argument --timeout: {value!r} is not a positive number of seconds" in \
        capsys.readouterr().err
