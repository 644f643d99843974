"""Target kinds: each kind of mirror target in a module of its own.

A kind owns what is particular to it: how tapctl names it, how a new one is
judged and a stored one checked, how people see where it is, on which chassis
it lives, whether a chassis reports its status, how copies reach it from a
chassis (:class:`~sdnagent.compile.delivery.Delivery`: its tunnel ports and the
legs the compiler makes forward flows of) and how trace says so.  The model,
tapctl, the agent, the compiler, liveness and trace ask the kind of a target
(:func:`kind`) rather than branch on its type; a new kind is a module here and
its entry in ``KINDS``.
"""
from __future__ import annotations

from sdnagent.targets import erspan, group, nic, port, vxlan
from sdnagent.targets.base import Kind, Unknown

KINDS: dict[str, Kind] = {k.name: k for k in (port.KIND, nic.KIND, vxlan.KIND, erspan.KIND,
                                              group.KIND)}


def kind(name: str) -> Kind:
    """The kind called ``name`` (a target's ``type``); for a type no kind has (written past
    tapctl), one that refuses it, so that the target is set aside with a status."""
    found = KINDS.get(name)
    return found if found is not None else Unknown(name)


__all__ = ["KINDS", "Kind", "kind"]
