"""Target kinds: each kind of mirror target in a module of its own.

A kind owns what is particular to it: how tapctl names it, how a new one is
judged and a stored one checked, how people see where it is, on which chassis
it lives, and whether a chassis reports its status.  The model, tapctl, the
agent, liveness and trace ask the kind of a target (:func:`kind`) rather than
branch on its type.
"""
from __future__ import annotations

from sdnagent.targets import nic, port, vxlan
from sdnagent.targets.base import Kind

KINDS: dict[str, Kind] = {k.name: k for k in (port.KIND, nic.KIND, vxlan.KIND)}


def kind(name: str) -> Kind:
    """The kind called ``name`` (a target's ``type``); KeyError for an unknown one."""
    return KINDS[name]


__all__ = ["KINDS", "Kind", "kind"]
