"""Flows as plain, comparable data, and the cookie layout.

A flow's identity on the switch is (table, priority, match); what we may
change in place is its actions and cookie.  Values use os-ken's field names
and the forms the switch reports back, so desired and installed flows compare
with ``==``: an exact match is a plain value, a masked one ``(value, mask)``.

Actions are tuples: ``("output", port)``, ``("output_trunc", port, max_len)``,
``("set_field", field, value)``, ``("meter", id)`` (first: an instruction, applied before
the rest), ``("conjunction", id, clause, clauses)`` (clause
counted from 0, as on the wire), ``("multipath", fields, basis, algorithm,
max_link, arg, bits, register)`` and, last, ``("goto", table_id)``.  No action
at all means drop.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

# Cookie: 16 bits saying "sdnagent", 8 bits of kind, 40 bits naming the object.
COOKIE_AGENT = 0x7A90
COOKIE_MASK = 0xFFFF << 48
KINDS = {"default": 0, "source": 1, "tunnel": 2, "target_drop": 3, "rule": 4,
         "session": 5, "forward": 6, "target_in": 7, "clause": 8, "verdict": 9,
         "balance": 10, "member": 11, "sample": 12, "limit": 13, "unsampled": 14}
KIND_NAMES = {v: k for k, v in KINDS.items()}


@functools.lru_cache(maxsize=1 << 16)
def cookie(kind: str, obj: str = "") -> int:
    """Deterministic, so an agent restart with the same intent changes nothing."""
    digest = int.from_bytes(hashlib.blake2b(obj.encode(), digest_size=5).digest(), "big")
    return (COOKIE_AGENT << 48) | (KINDS[kind] << 40) | digest


def is_ours(value: int) -> bool:
    return value & COOKIE_MASK == COOKIE_AGENT << 48


def cookie_kind(value: int) -> str:
    return KIND_NAMES.get((value >> 40) & 0xFF, "unknown")


_SHARED: dict[tuple, tuple] = {}


def keep_shared(live: Iterable["Flow"]) -> None:
    """Forget every shared match and action list but those of ``live`` flows: after large
    sessions are gone, their matches should not outlive them."""
    _SHARED.clear()
    for f in live:
        _SHARED.setdefault(f.match, f.match)
        _SHARED.setdefault(f.actions, f.actions)
    cookie.cache_clear()


def shared_count() -> int:
    return len(_SHARED)


def shared(value: tuple) -> tuple:
    """One object for equal matches (or action lists): the compiler and the decoder
    of the switch's flows both pass theirs through here, so that comparing a compiled
    flow with the switch's copy of it is mostly identity checks."""
    if len(_SHARED) > 1 << 18:
        _SHARED.clear()
    return _SHARED.setdefault(value, value)


@dataclasses.dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: tuple[tuple[str, Any], ...]
    actions: tuple[tuple, ...]
    cookie: int
    # (table, priority, match): what identifies the flow on the switch
    key: tuple = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # computed once: a diff looks at tens of thousands of flows
        object.__setattr__(self, "key", (self.table, self.priority, self.match))
        object.__setattr__(self, "_hash", hash((self.key, self.actions, self.cookie)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Flow):
            return NotImplemented
        return (self._hash == other._hash  # type: ignore[attr-defined]
                and self.key == other.key and self.actions == other.actions
                and self.cookie == other.cookie)

    def sort_key(self) -> tuple:
        """A total order for stable output: a field's value may be exact (an int or an
        address) in one flow and masked (a tuple) in another, which ``<`` cannot compare."""
        return (self.table, -self.priority, repr(self.match), repr(self.actions), self.cookie)


@dataclasses.dataclass(frozen=True, order=True)
class Meter:
    """An OpenFlow meter on brtap: one drop band at ``rate`` (packets/s, or kbit/s when
    ``kbps``), its burst one second of the rate (OVS's default)."""

    id: int
    kbps: bool
    rate: int


@dataclasses.dataclass(frozen=True)
class MeterDiff:
    """Meters to add or change before the flows that use them, and to delete after the
    flows that used them are gone (OVS deletes a meter's flows with it)."""

    put: tuple[Meter, ...]
    delete: tuple[int, ...]

    def __bool__(self) -> bool:
        return bool(self.put or self.delete)


def diff_meters(installed: Mapping[int, Meter], desired: frozenset[Meter]) -> MeterDiff:
    wanted = {m.id: m for m in desired}
    return MeterDiff(tuple(sorted(m for m in desired if installed.get(m.id) != m)),
                     tuple(sorted(set(installed) - set(wanted))))


@dataclasses.dataclass(frozen=True)
class FlowDiff:
    """Apply deletes, then adds; an add replaces a flow with the same key."""

    delete: tuple[Flow, ...]
    add: tuple[Flow, ...]

    def __bool__(self) -> bool:
        return bool(self.delete or self.add)


def diff(installed: frozenset[Flow] | set[Flow], desired: frozenset[Flow] | set[Flow]) -> FlowDiff:
    """The fewest changes turning ``installed`` into ``desired``.

    Set differences first (hashes are cached, so this costs little at 100,000
    flows); keys are compared only among the flows that differ: a desired flow
    whose key is installed with other actions or cookie replaces it."""
    installed = installed if isinstance(installed, (set, frozenset)) else frozenset(installed)
    desired = desired if isinstance(desired, (set, frozenset)) else frozenset(desired)
    new = desired - installed
    new_keys = {f.key for f in new}
    delete = tuple(sorted((f for f in installed - desired if f.key not in new_keys),
                          key=Flow.sort_key))
    return FlowDiff(delete, tuple(sorted(new, key=Flow.sort_key)))


def diff_groups(old: Mapping[str, tuple[Flow, ...]],
                new: Mapping[str, tuple[Flow, ...]]) -> FlowDiff:
    """:func:`diff` of two groupings of flows, looking only into the groups that differ:
    in proportion to the change when unchanged groups are the same objects.  Right
    when the switch holds exactly the flows of ``old``."""
    before: set[Flow] = set()
    after: set[Flow] = set()
    for name, group in old.items():
        other = new.get(name)
        if other is not group and other != group:
            before.update(group)
    for name, group in new.items():
        other = old.get(name)
        if other is not group and other != group:
            after.update(group)
    return diff(before, after)
