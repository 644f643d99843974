"""The local Open_vSwitch database: brtap, hooks (Mirror + patch pair), tunnel ports.

The integration bridges belong to someone else: on them we only add and
remove our own Mirrors and patch ports, by mutation, so concurrent writers
(Neutron, OVN, the cloud's agent) never conflict with us.  Our rows carry
``external_ids:sdnagent-hook`` or ``sdnagent-port`` so we touch nothing else.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from ovsdbapp.backend.ovs_idl import connection

from sdnagent import ovsdbutil
from sdnagent.compile.compiler import LocalPort, PortPlan
from sdnagent.compile.hooks import Hook

HOOK_KEY = "sdnagent-hook"
PORT_KEY = "sdnagent-port"
# only the columns we use: statistics and status columns change every few seconds
COLUMNS = {
    "Open_vSwitch": ["bridges"],
    "Bridge": ["name", "ports", "mirrors", "controller", "fail_mode", "protocols",
               "datapath_type", "other_config"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "options", "external_ids", "ofport", "error"],
    "Mirror": ["name", "select_all", "select_dst_port", "select_src_port", "select_vlan",
               "output_port", "external_ids"],
    "Controller": ["target"],
}


# tunnel ports that OVS could confuse with the chassis tunnel (docs/design.md, §5)
TUNNEL_TYPES = frozenset({"gre", "vxlan", "geneve", "erspan", "stt", "ip6gre", "ip6erspan"})


class SwitchError(RuntimeError):
    """The local switch cannot be reached or refused a change."""


def _mac(text: Optional[str]) -> str:
    """A MAC address as brtap's flows write it, or "" when there is none that parses."""
    parts = (text or "").strip().lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                  for p in parts):
        return ""
    return ":".join(parts)


def _ofport(iface: Any) -> int:
    """-1: the switch could not add the interface; 0: not assigned yet."""
    return iface.ofport[0] if iface.ofport else 0


class LocalSwitch:
    def __init__(self, remote: str, tap_bridge: str, integration_bridges: tuple[str, ...],
                 datapath_type: str, controller: str, timeout: float = 10):
        self.remote = remote
        self.tap_bridge = tap_bridge
        self.integration_bridges = tuple(integration_bridges)
        self.datapath_type = datapath_type
        self.controller = controller
        self.timeout = timeout
        self.api: Optional[ovsdbutil.Backend] = None
        self._last: Optional[tuple[int, dict[str, Any]]] = None  # (change_seqno, inventory)
        self._settled: Optional[tuple] = None  # (ports planned, change_seqno) found in place

    def start(self, on_change: Callable[[str], None]) -> None:
        try:
            helper = ovsdbutil.schema_helper(self.remote, "Open_vSwitch", self.timeout)
        except ovsdbutil.FetchError as exc:
            raise SwitchError(f"cannot reach the local switch at {self.remote}: {exc}") from exc
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        idl = ovsdbutil.NotifyingIdl(self.remote, helper)
        idl.on_change = on_change
        try:
            self.api = ovsdbutil.Backend(connection.Connection(idl, self.timeout))
        except Exception as exc:  # ovsdbapp's timeout, or the connection failed
            idl.close()
            raise SwitchError(f"cannot reach the local switch at {self.remote}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from exc

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()

    # ------------------------------------------------------------ reading

    def inventory(self) -> dict[str, Any]:
        """This host's side of :class:`~sdnagent.compile.compiler.Inventory`.

        Read again only when the local database changed since the last read (the
        IDL's change sequence number): reading every port costs more than the rest
        of a pass that follows one change in tapdb.  Treat it as read-only."""
        assert self.api is not None
        return self.api.read(self._cached_inventory)

    def _cached_inventory(self, idl: Any) -> dict[str, Any]:
        seqno = idl.change_seqno
        if self._last is None or self._last[0] != seqno:
            self._last = (seqno, self._inventory(idl))
        return self._last[1]

    def _inventory(self, idl: Any) -> dict[str, Any]:
        ports: dict[str, LocalPort] = {}
        foreign: dict[str, int] = {}
        hooks: dict[str, tuple[str, ...]] = {}  # our Mirrors: the ports each selects
        brtap_ofports: dict[str, int] = {}
        brtap_errors: dict[str, str] = {}
        bridges = set()
        port_bridges: dict[str, str] = {}
        foreign_tunnels: set[tuple[str, str, str]] = set()  # (name, type, UDP port)
        watched = set(self.integration_bridges) | {self.tap_bridge}
        owned: set[tuple] = set()  # our rows as they are: any change by hand makes a pass run
        for br in idl.tables["Bridge"].rows.values():
            bridges.add(br.name)
            if br.name == self.tap_bridge:
                owned.add(("bridge", br.name, tuple(br.fail_mode), tuple(br.protocols),
                           br.datapath_type, tuple(c.target for c in br.controller),
                           br.other_config.get("disable-in-band")))
            for m in br.mirrors:
                if HOOK_KEY in m.external_ids:
                    hooks[m.external_ids[HOOK_KEY]] = tuple(sorted(
                        p.name for p in (*m.select_dst_port, *m.select_src_port)))
                    owned.add(("mirror", br.name, m.name,
                               tuple(sorted(p.name for p in m.select_dst_port)),
                               tuple(sorted(p.name for p in m.select_src_port)),
                               bool(m.select_all), tuple(m.select_vlan),
                               tuple(p.name for p in m.output_port)))
                else:
                    foreign[br.name] = foreign.get(br.name, 0) + 1
            for port in br.ports:
                port_bridges[port.name] = br.name
                if HOOK_KEY in port.external_ids or PORT_KEY in port.external_ids:
                    owned.update(("port", br.name, port.name, i.name, i.type,
                                  tuple(sorted(i.options.items()))) for i in port.interfaces)
                for iface in port.interfaces:
                    if iface.type in TUNNEL_TYPES and PORT_KEY not in port.external_ids:
                        foreign_tunnels.add((iface.name, iface.type,
                                             iface.options.get("dst_port", "")))
                    if br.name == self.tap_bridge:
                        brtap_ofports[iface.name] = _ofport(iface)
                        if iface.error:
                            brtap_errors[iface.name] = iface.error[0]
                    iface_id = iface.external_ids.get("iface-id")
                    if iface_id and br.name in watched:
                        ports[iface_id] = LocalPort(iface_id, br.name, port.name, _ofport(iface),
                                                    _mac(iface.external_ids.get("attached-mac")))
        return {"ports": ports, "bridges": frozenset(bridges), "foreign_mirrors": foreign,
                "hook_members": hooks,
                "brtap_ofports": brtap_ofports,
                "brtap_errors": brtap_errors, "port_bridges": port_bridges,
                "foreign_tunnels": tuple(sorted(foreign_tunnels)),
                "owned": frozenset(owned)}

    def wait_ofports(self, names: set[str], timeout: float) -> dict[str, int]:
        """brtap's ofports, once every port in ``names`` that exists has one (or the time
        is up).  A port not in the database (a hook removed to be created again) is not
        waited for; one still to come is numbered in an OVSDB event, a pass of its own."""
        deadline = time.monotonic() + timeout
        while True:
            ofports = self.inventory()["brtap_ofports"]
            if all(ofports.get(n, -1) != 0 for n in names) or time.monotonic() > deadline:
                return ofports
            time.sleep(0.01)

    # ------------------------------------------------------------ writing

    def apply(self, plan: PortPlan) -> list[str]:
        """Make brtap, the hooks, tunnel ports and NICs as planned, in one transaction.

        Returns what changed, for the log.  A hook whose Mirror or patch pair
        differs from the plan is removed now and created again on the next pass:
        OVS 3.1 does not revalidate traffic for a Mirror edited in place.
        """
        assert self.api is not None
        wanted = (plan.hooks, plan.tunnels, plan.nics)
        if self.api.read(lambda idl: self._settled == (wanted, idl.change_seqno)):
            return []  # what the last transaction found already there, and nothing moved since
        try:
            changes = self.api.run(lambda txn: _Apply(self, txn, plan).run(), "apply ports")
        except RuntimeError as exc:
            self._settled = None
            raise SwitchError(f"the local switch refused the change: {exc}") from exc
        self._settled = None if changes else self.api.read(lambda idl: (wanted,
                                                                        idl.change_seqno))
        return changes


class _Apply:
    """One transaction's worth of port changes."""

    def __init__(self, switch: LocalSwitch, txn: Any, plan: PortPlan):
        self.sw = switch
        self.txn = txn
        self.plan = plan
        self.tables = switch.api.tables
        self.bridges = {b.name: b for b in self.tables["Bridge"].rows.values()}
        self.changes: list[str] = []
        self.new_bridge: Optional[Any] = None  # brtap, when this transaction creates it
        self.new_bridge_ports: list[Any] = []

    def run(self) -> list[str]:
        brtap = self._ensure_brtap()
        self._tap_ports(brtap)
        self._hooks(brtap)
        if self.new_bridge is not None:
            self.new_bridge.ports = self.new_bridge_ports
        return self.changes

    def _ports(self, bridge: Any) -> list[Any]:
        """A bridge's ports; a row inserted in this transaction cannot be read yet."""
        return [] if bridge is self.new_bridge else list(bridge.ports)

    def _insert(self, table: str, **columns: Any) -> Any:
        row = self.txn.insert(self.tables[table])
        for k, v in columns.items():
            setattr(row, k, v)
        return row

    def _add_port(self, bridge: Any, name: str, type_: str = "", options: Optional[dict] = None,
                  external_ids: Optional[dict] = None) -> Any:
        iface = self._insert("Interface", name=name, type=type_, options=options or {},
                             external_ids=external_ids or {})
        port = self._insert("Port", name=name, interfaces=[iface], external_ids=external_ids or {})
        if bridge is self.new_bridge:
            self.new_bridge_ports.append(port)
        else:
            bridge.addvalue("ports", port)
        return port

    def _ensure_brtap(self) -> Any:
        sw = self.sw
        settings = {"fail_mode": ["secure"], "protocols": ["OpenFlow13"],
                    "datapath_type": sw.datapath_type}
        br = self.bridges.get(sw.tap_bridge)
        if br is None:
            # the controller is set in the same transaction, before any flow exists
            ctrl = self._insert("Controller", target=sw.controller)
            br = self._insert("Bridge", name=sw.tap_bridge, controller=[ctrl],
                              other_config={"disable-in-band": "true"}, **settings)
            self.new_bridge = br
            self._add_port(br, sw.tap_bridge, "internal")
            root = next(iter(self.tables["Open_vSwitch"].rows.values()))
            root.addvalue("bridges", br)
            self.bridges[br.name] = br
            self.changes.append(f"created {sw.tap_bridge}")
            return br
        for column, value in settings.items():
            if getattr(br, column) != value:
                setattr(br, column, value)
                self.changes.append(f"{sw.tap_bridge} {column}={value}")
        if br.other_config.get("disable-in-band") != "true":
            br.setkey("other_config", "disable-in-band", "true")
        if [c.target for c in br.controller] != [sw.controller]:
            br.controller = [self._insert("Controller", target=sw.controller)]
            self.changes.append(f"{sw.tap_bridge} controller {sw.controller}")
        return br

    def _tap_ports(self, brtap: Any) -> None:
        wanted = {t.name: ("tunnel", t.type, dict(t.options)) for t in self.plan.tunnels}
        wanted.update({n: ("nic", "", {}) for n in self.plan.nics})
        existing = {p.name: p for p in self._ports(brtap)}
        for port in self._ports(brtap):
            role = port.external_ids.get(PORT_KEY)
            if role is None:
                continue
            iface = port.interfaces[0] if port.interfaces else None
            want = wanted.get(port.name)
            if want is None or iface is None or want[0] != role or (
                    role == "tunnel" and (iface.type, dict(iface.options)) != want[1:]):
                brtap.delvalue("ports", port)
                existing.pop(port.name)
                self.changes.append(f"removed {port.name}")
        for name, (role, type_, options) in sorted(wanted.items()):
            if name not in existing:
                self._add_port(brtap, name, type_, options, {PORT_KEY: role})
                self.changes.append(f"added {role} {name}")

    def _hooks(self, brtap: Any) -> None:
        mirrors: dict[str, tuple[Any, Any]] = {}
        patches: dict[str, list[tuple[Any, Any]]] = {}
        for br in self.bridges.values():
            if br is self.new_bridge:
                continue
            for m in br.mirrors:
                if HOOK_KEY in m.external_ids:
                    mirrors[m.external_ids[HOOK_KEY]] = (br, m)
            for p in br.ports:
                if HOOK_KEY in p.external_ids:
                    patches.setdefault(p.external_ids[HOOK_KEY], []).append((br, p))
        wanted = {h.name: h for h in self.plan.hooks}
        for name in sorted(set(mirrors) | set(patches)):
            hook = wanted.get(name)
            if hook is not None and self._intact(hook, mirrors.get(name), patches.get(name, [])):
                self._select(hook, *mirrors[name])
                wanted.pop(name)
                continue
            if name in mirrors:
                br, m = mirrors[name]
                br.delvalue("mirrors", m)
            for br, p in patches.get(name, []):
                br.delvalue("ports", p)
            self.changes.append(f"removed hook {name}")
            wanted.pop(name, None)  # created again on the next pass
        for hook in sorted(wanted.values(), key=lambda h: h.name):
            self._create_hook(hook, brtap)

    def _intact(self, hook: Hook, mirror: Optional[tuple[Any, Any]],
                patches: list[tuple[Any, Any]]) -> bool:
        """Whether the hook's Mirror and patch pair are ours as planned, but perhaps for the
        ports it selects (those :meth:`_select` edits in place)."""
        if mirror is None or len(patches) != 2:
            return False
        br, m = mirror
        names = {(b.name, p.name) for b, p in patches}
        if br.name != hook.bridge or names != {(hook.bridge, hook.patch_source),
                                               (self.sw.tap_bridge, hook.patch_tap)}:
            return False
        # what the Mirror must not select besides the ports that _select may edit
        other = {"dst": list(m.select_src_port), "src": list(m.select_dst_port),
                 "all": [*m.select_dst_port, *m.select_src_port]}[hook.select]
        return (not other
                and bool(m.select_all) == (hook.select == "all")
                and list(m.select_vlan) == ([hook.vlan] if hook.vlan is not None else [])
                and [p.name for p in m.output_port] == [hook.patch_source])

    def _select(self, hook: Hook, bridge: Any, mirror: Any) -> None:
        """Make a shared hook select exactly its ports now: sources join and leave a Mirror
        that others' copies keep using.  OVS 3.1 does not revalidate traffic for a Mirror
        edited on its own; the same pass changes brtap's flows for the ports that came or
        went (their entry flows), and that revalidates the datapath, which brtap shares."""
        if hook.select == "all":
            return
        column = "select_dst_port" if hook.select == "dst" else "select_src_port"
        have = sorted(p.name for p in getattr(mirror, column))
        if have == list(hook.ports):
            return
        by_name = {p.name: p for p in self._ports(bridge)}
        setattr(mirror, column, [by_name[n] for n in hook.ports if n in by_name])
        gone, came = set(have) - set(hook.ports), set(hook.ports) - set(have)
        self.changes.append(f"hook {hook.name} ({hook.bridge} {hook.select}): "
                            + ", ".join([*(f"+{n}" for n in sorted(came)),
                                         *(f"-{n}" for n in sorted(gone))]))

    def _create_hook(self, hook: Hook, brtap: Any) -> None:
        """The patch pair and the Mirror together: a patch port that is not yet a
        Mirror's output would be an ordinary port that NORMAL floods into brtap."""
        bridge = self.bridges.get(hook.bridge)
        if bridge is None:
            return
        by_name = {p.name: p for p in self._ports(bridge)}
        selected = [by_name[n] for n in hook.ports if n in by_name]
        if hook.select != "all" and not selected:
            return
        ids = {HOOK_KEY: hook.name}
        out = self._add_port(bridge, hook.patch_source, "patch", {"peer": hook.patch_tap}, ids)
        self._add_port(brtap, hook.patch_tap, "patch", {"peer": hook.patch_source}, ids)
        m = self._insert("Mirror", name=hook.name, external_ids=ids, output_port=[out])
        if hook.select == "dst":
            m.select_dst_port = selected
        elif hook.select == "src":
            m.select_src_port = selected
        else:
            m.select_all = True
            if hook.vlan is not None:
                m.select_vlan = [hook.vlan]
        bridge.addvalue("mirrors", m)
        what = (", ".join(hook.ports) if hook.ports else
                f"vlan {hook.vlan}" if hook.vlan is not None else "all")
        self.changes.append(f"added hook {hook.name} ({hook.bridge} {hook.select} {what})")
