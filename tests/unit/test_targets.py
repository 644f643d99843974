"""Target kinds as units: the model, tapctl, liveness and the agent's view ask the kind."""
from __future__ import annotations

import dataclasses

import pytest

from sdnagent import liveness, model, targets
from sdnagent.cli import tapctl
from sdnagent.targets.base import Kind


def test_each_kind_builds_checks_and_places_its_targets():
    intent = model.Intent.of((), (), ())
    port = model.new_target(intent, "t1", port="vm-164")
    nic = model.new_target(intent, "t2", nic="hv-2:eth9")
    vx = model.new_target(intent, "t3", vxlan="10.0.0.50")
    for t in (port, nic, vx):
        model.check_stored_target(t)
    assert [t.where() for t in (port, nic, vx)] == [
        "port vm-164", "nic hv-2:eth9", "vxlan 10.0.0.50"]
    bindings = {"vm-164": ("hv-1",)}
    assert [liveness.target_chassis(t, bindings) for t in (port, nic, vx)] == [
        ("hv-1",), ("hv-2",), ()]
    assert [t.kind.lives_on(t, "hv-2", frozenset({"vm-164"})) for t in (port, nic, vx)] == [
        True, True, False]
    assert [t.kind.has_status for t in (port, nic, vx)] == [True, True, False]


class ProbeKind(Kind):
    """A kind the package does not have: a collector on a chassis, by name."""
    name = "probe"
    option = "--probe"
    metavar = "CHASSIS"
    help = "a probe on a chassis"

    def new(self, intent, name, key, value, enabled, tunnel_ips):
        return model.Target(name, self.name, key, chassis=model.parse_nic(f"{value}:x")[0],
                            enabled=enabled)

    def check_stored(self, target):
        model.parse_nic(f"{target.chassis}:x")

    def where(self, target):
        return f"probe on {target.chassis}"

    def hosts(self, target, bindings):
        return (target.chassis,)


def test_a_new_kind_is_asked_not_branched_on(monkeypatch):
    monkeypatch.setitem(targets.KINDS, "probe", ProbeKind())
    t = model.new_target(model.Intent.of((), (), ()), "t9", probe="hv-7")
    model.check_stored_target(t)
    assert t.where() == "probe on hv-7"
    assert liveness.target_chassis(t, {}) == ("hv-7",)
    args = tapctl.build_parser().parse_args(["target-add", "t9", "--probe", "hv-7"])
    assert args.where_probe == "hv-7"
    with pytest.raises(model.IntentError) as info:
        model.new_target(model.Intent.of((), (), ()), "t8")
    assert str(info.value).endswith("or --probe CHASSIS")


def test_a_stored_target_of_no_known_kind_is_refused():
    t = dataclasses.replace(model.new_target(model.Intent.of((), (), ()), "t1", port="vm-1"),
                            type="teleport")
    with pytest.raises(model.IntentError) as info:
        model.check_stored_target(t)
    assert str(info.value).startswith("type: 'teleport' is not allowed; use one of port, nic, vxlan")
