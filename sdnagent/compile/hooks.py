"""Hooks: how a source's frames reach brtap, and how brtap tells them apart (pure).

A hook is one OVS Mirror on an integration bridge with its own patch pair into
brtap. OVS allows 32 Mirror rows per bridge, shared with other controllers, but
one Mirror may select any number of ports; so port sources share a bounded set
of hooks: ``HOOK_SLOTS`` per bridge and direction (``select_dst_port`` for
``in``, ``select_src_port`` for ``out``). A vswitch source keeps a hook of its
own (``select_all``, ``select_vlan``).

A *feed* is one source port and direction as brtap sees it: the hook its
copies come by and, when that hook carries several ports, the port's MAC
(``external_ids:attached-mac``) as the frame's destination (``in``) or source
(``out``). brtap writes the feed's number into reg1 (``classify``), and every
later table works on feeds. A port alone in its hook is told by ``in_port``
only, so nothing in the frame can make it count as another; ports share a hook
only when there are more of them than slots, and then the slots are filled so
that ports of the same sessions share first (docs/design.md, §5).
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Optional

from sdnagent import model
from sdnagent.compile.flows import Flow
from sdnagent.compile.pipeline import FILTER_TABLES, REJECTED, TOWARD_PORT, flow

HOOK_SLOTS = 10  # shared Mirrors per integration bridge and direction
MAX_MIRRORS_PER_BRIDGE = 32  # an OVS limit, counting other owners' Mirrors
DIRECTIONS = {"dst": ("in", "inbound", "eth_dst"), "src": ("out", "outbound", "eth_src")}


@dataclasses.dataclass(frozen=True)
class Hook:
    """One Mirror on a source bridge and its patch pair into brtap."""

    name: str
    bridge: str
    select: str  # "dst" (direction in), "src" (out) or "all" (a vswitch source)
    ports: tuple[str, ...]  # the selected ports' names (dst/src), sorted
    vlan: Optional[int]
    rules: str  # which filter direction applies: "inbound" or "outbound"
    patch_source: str  # the patch port on the source bridge
    patch_tap: str  # its peer on brtap


@dataclasses.dataclass(frozen=True)
class Feed:
    """One source port and direction (or one vswitch source) as brtap tells it apart."""

    name: str  # "<iface-id>/in", "<iface-id>/out" or "<vswitch key>/all"
    hook: str
    id: int  # written into reg1
    rules: str  # "inbound" or "outbound"
    field: str = ""  # "eth_dst" or "eth_src" when the hook is shared, else ""
    mac: str = ""


@dataclasses.dataclass(frozen=True)
class Want:
    """What a source asks of this host: a feed of a port and direction, or of a bridge."""

    feed: str
    bridge: str
    select: str
    port: Optional[str] = None  # dst/src: the port's name on the bridge
    iface: Optional[str] = None
    vlan: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class HookPlan:
    hooks: tuple[Hook, ...]
    feeds: Mapping[str, Feed]  # by name
    problems: Mapping[str, str]  # feed name -> why it has none


def _short_hash(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=5).hexdigest()


def _hook(name_parts: tuple, bridge: str, select: str, ports: tuple[str, ...],
          vlan: Optional[int], rules: str) -> Hook:
    h = _short_hash(*name_parts)
    # names stay within the 15 characters of an OpenFlow port name
    return Hook(f"tap-{h}", bridge, select, ports, vlan, rules, f"tpi{h}", f"tpt{h}")


def slot_hook(bridge: str, select: str, slot: int, ports: tuple[str, ...] = ()) -> Hook:
    return _hook((bridge, select, "slot", slot), bridge, select, ports, None,
                 DIRECTIONS[select][1])


def bridge_hook(bridge: str, vlan: Optional[int], key: str) -> Hook:
    return _hook((bridge, "all", key, vlan), bridge, "all", (), vlan, "inbound")


VERDICTS = ("unmatched", "rejected")  # what no rule took, what a reject took


def _port_feed(iface: str, direction: str) -> str:
    return f"{iface}/{direction}"


def _bridge_feed(key: str) -> str:
    return f"{key}/all"


def feed_names(src: model.Source) -> list[str]:
    """The feeds a source may have: a port's in and out, a vswitch source's bridge.  Names
    are what cookies hash (counters and sdnagent-trace find the flows by them)."""
    if src.type == "vswitch":
        return [_bridge_feed(src.key)]
    return [_port_feed(src.iface_id or "", d) for d, _, _ in DIRECTIONS.values()]


def verdict_obj(feed: str, verdict: str) -> str:
    """What a feed's verdict flow is named (kind ``verdict``), ``verdict`` in VERDICTS."""
    return f"{feed}/{verdict}"


def hook_obj(hook: str, what: str) -> str:
    """What a hook's own flows are named (kind ``source``): "unattributed" (on a shared
    hook, copies addressed to none of its ports) or "own-tunnel" (a vswitch hook)."""
    return f"{hook}/{what}"


def port_wants(iface: str, bridge: str, port: str, direction: str) -> list[Want]:
    """The feeds a port source of ``direction`` (in, out or both) asks for."""
    return [Want(_port_feed(iface, d), bridge, select, port=port, iface=iface)
            for select, (d, _, _) in DIRECTIONS.items() if direction in (d, "both")]


def bridge_want(key: str, bridge: str, vlan: Optional[int]) -> Want:
    return Want(_bridge_feed(key), bridge, "all", vlan=vlan)


def feed_id(bridge_index: int, want: Want, ofport: int) -> int:
    """Stable and unique on this host: a port's number on its bridge and the direction,
    or a bridge and VLAN; the top bits keep the two kinds apart."""
    if want.select == "all":
        return 1 << 31 | bridge_index << 17 | (0 if want.vlan is None else want.vlan + 1)
    return 1 << 30 | bridge_index << 17 | ofport << 1 | (want.select == "src")


def assign(wanted: Mapping[str, tuple[Want, tuple[str, ...]]], *,
           bridges: tuple[str, ...], ofports: Mapping[str, int], macs: Mapping[str, str],
           installed: Mapping[str, tuple[str, ...]], foreign: Mapping[str, int]) -> HookPlan:
    """Hooks and feeds for ``wanted`` (feed name -> the want and the sessions it serves).

    ``installed``: our Mirrors on the switch now and the ports they select, so that a
    port keeps its hook (and its slot-mates theirs) while it is wanted; ``foreign``:
    other owners' Mirrors per bridge; ``ofports``/``macs``: by iface-id."""
    hooks: list[Hook] = []
    feeds: dict[str, Feed] = {}
    problems: dict[str, str] = {}
    by_bridge: dict[str, list[Want]] = {}
    for want, _ in wanted.values():
        by_bridge.setdefault(want.bridge, []).append(want)
    for bridge, wants in sorted(by_bridge.items()):
        room = MAX_MIRRORS_PER_BRIDGE - foreign.get(bridge, 0)
        index = bridges.index(bridge)
        # a vswitch source: a hook of its own, those installed kept first
        whole = sorted((w for w in wants if w.select == "all"),
                       key=lambda w: (bridge_hook(bridge, w.vlan, w.feed).name not in installed,
                                      w.feed))
        for w in whole:
            if room <= 0:
                problems[w.feed] = _full(bridge, foreign.get(bridge, 0))
                continue
            room -= 1
            h = bridge_hook(bridge, w.vlan, w.feed)
            hooks.append(h)
            feeds[w.feed] = Feed(w.feed, h.name, feed_id(index, w, 0), h.rules)
        selects = [s for s in DIRECTIONS if any(w.select == s for w in wants)]
        share, extra = divmod(max(room, 0), len(selects) or 1)
        for i, select in enumerate(selects):
            slots = min(HOOK_SLOTS, share + (i < extra))
            ports = {w.port: w for w in wants if w.select == select}
            if not slots:
                for w in ports.values():
                    problems[w.feed] = _full(bridge, foreign.get(bridge, 0))
                continue
            sessions = {w.port: wanted[w.feed][1] for w in ports.values()}
            members = _fill(bridge, select, slots, sessions, installed)
            for slot, names in enumerate(members):
                if not names:
                    continue
                h = slot_hook(bridge, select, slot, tuple(sorted(names)))
                hooks.append(h)
                shared = len(names) > 1
                owners: dict[str, list[str]] = {}  # MAC -> the ifaces that have it here
                for name in names:
                    iface = ports[name].iface or ""
                    owners.setdefault(macs.get(iface, ""), []).append(iface)
                for name in names:
                    w = ports[name]
                    iface = w.iface or ""
                    ofport = ofports.get(iface, 0)
                    mac = macs.get(iface, "") if shared else ""
                    twins = [i for i in owners.get(mac, ()) if i != iface]
                    if ofport <= 0:
                        problems[w.feed] = f"waiting for the switch to number port {name}"
                    elif shared and not mac:
                        problems[w.feed] = (
                            f"iface {iface} shares a hook on bridge {bridge} with "
                            f"{len(names) - 1} other source port(s) and has no MAC address "
                            "(Interface external_ids:attached-mac) to tell its frames apart")
                    elif shared and twins:
                        problems[w.feed] = (
                            f"iface {iface} has the MAC address {mac} of iface {twins[0]}, "
                            f"which shares its hook on bridge {bridge}: their frames cannot "
                            "be told apart")
                    else:
                        feeds[w.feed] = Feed(w.feed, h.name, feed_id(index, w, ofport), h.rules,
                                             DIRECTIONS[select][2] if shared else "", mac)
    return HookPlan(tuple(sorted(hooks, key=lambda h: h.name)), feeds, problems)


def _full(bridge: str, theirs: int) -> str:
    return (f"bridge {bridge} has no room for another Mirror (the OVS limit is "
            f"{MAX_MIRRORS_PER_BRIDGE} a bridge, {theirs} of them another owner's)")


def _fill(bridge: str, select: str, slots: int, sessions: Mapping[str, tuple[str, ...]],
          installed: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """Ports (by name, with the sessions each serves) into ``slots`` hooks: a port stays
    in the hook that selects it now.  A new port takes an empty hook when every port
    still to place can have one (alone, nothing in the frame can make it count as
    another); else it joins the ports of its sessions, else an empty hook, else the one
    serving the fewest sessions (then ports): slot-mates serve the same sessions where
    they can, and as many ports as can be are alone."""
    members: list[list[str]] = [[] for _ in range(slots)]
    serving: list[set[tuple[str, ...]]] = [set() for _ in range(slots)]
    placed: set[str] = set()
    for slot in range(slots):
        for name in installed.get(slot_hook(bridge, select, slot).name, ()):
            if name in sessions and name not in placed:
                members[slot].append(name)
                serving[slot].add(sessions[name])
                placed.add(name)
    new = sorted(set(sessions) - placed, key=lambda n: (sessions[n], n))
    for left, name in zip(range(len(new), 0, -1), new):
        mine = sessions[name]
        empty = [i for i in range(slots) if not members[i]]
        same = [i for i in range(slots) if mine in serving[i]]
        # every port left can still have a hook of its own: take one
        slot = (empty[0] if empty and left <= len(empty) else
                min(same, key=lambda i: (len(members[i]), i)) if same else
                empty[0] if empty else
                min(range(slots), key=lambda i: (len(serving[i]), len(members[i]), i)))
        members[slot].append(name)
        serving[slot].add(mine)
    return members


def entry_flows(hook: Hook, feeds: Iterable[Feed], in_port: int,
                own_tunnel: Iterable[dict] = (), guard: Optional[int] = None,
                guarded: frozenset[int] = frozenset()) -> tuple[Flow, ...]:
    """classify's flows for a hook's copies (each feed's number into reg1), and each
    feed's two verdict flows (what no session took, what a reject took).

    A hook with one feed needs only ``in_port``; a shared one matches each port's
    MAC, and what matches none (a broadcast, a frame to a MAC no source has) is
    dropped and counted by the hook: the copy does not say which of its ports took it.
    ``own_tunnel``: for a vswitch hook, this chassis's own tunnel packets, dropped
    first so that a copy is never mirrored again.  ``guarded``: the feeds whose copies
    may meet a cap, which first pass the ``guard`` meter (see compiler.GUARD_METER)."""
    out = []
    for f in feeds:
        match = {"in_port": in_port, **({f.field: f.mac} if f.field else {})}
        marks = ((("meter", guard),) if f.id in guarded and guard is not None else ()) + (
            ("set_field", "reg1", f.id),) + (
            (("set_field", "reg3", TOWARD_PORT),) if hook.select == "dst" else ())
        out += [flow("classify", 200, match, marks, goto=FILTER_TABLES[0], kind="source",
                     obj=f.name),
                flow("verdict", 100, {"reg1": f.id, "reg2": 0}, kind="verdict",
                     obj=verdict_obj(f.name, "unmatched")),
                flow("verdict", 100, {"reg1": f.id, "reg2": REJECTED}, kind="verdict",
                     obj=verdict_obj(f.name, "rejected"))]
    if len(hook.ports) > 1:
        out.append(flow("classify", 150, {"in_port": in_port}, kind="source",
                        obj=hook_obj(hook.name, "unattributed")))
    # a cookie of their own: the feed's entry counts only what goes on to be judged
    out += [flow("classify", 250, {**m, "in_port": in_port}, kind="source",
                 obj=hook_obj(hook.name, "own-tunnel")) for m in own_tunnel]
    return tuple(out)
