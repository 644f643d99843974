"""The reconcile loop: events only mark work; one loop recomputes from full state.

Each pass reads tapdb and the local switch and keeps only what concerns this
chassis; when that is what the last pass applied, it stops there (other
chassis's changes, its own status and binding writes coming back).  Otherwise
it plans ports and flows with the pure compiler, applies the port changes (one
OVSDB transaction), the flow diff (one OpenFlow bundle), then writes status
for what was applied.  Any error makes the next pass a full resync after a
backoff, which any change reported by tapdb or the switch cuts short.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from typing import Any, Optional

from sdnagent import mtu as mtu_bounds
from sdnagent import tls
from sdnagent.agent import underlay
from sdnagent.agent.metrics import Metrics
from sdnagent.compile import compiler, counters, flows
from sdnagent.switch.ofswitch import OFError, OFSwitch
from sdnagent.switch.ovsdb import LocalSwitch, SwitchError
from sdnagent.tapdb import client

LOG = logging.getLogger("sdnagent")


class Agent:
    def __init__(self, conf: Any):
        self.conf = conf
        self.chassis: str = conf.host
        self.tapdb: Optional[client.TapdbApi] = None
        self.of = OFSwitch(conf.ovs.of_listen_address, conf.ovs.of_listen_port,
                           conf.ovs.of_request_timeout)
        self.switch = LocalSwitch(conf.ovs.ovsdb_connection, conf.ovs.tap_bridge,
                                  tuple(conf.ovs.integration_bridges), conf.ovs.datapath_type,
                                  self.of.target, conf.tapdb.timeout)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._reasons: set[str] = set()
        self._lock = threading.Lock()
        self._watched: Optional[tuple] = None
        self._applied: Optional[tuple] = None  # the inputs of the last pass that succeeded
        self._groups: Optional[dict] = None  # its flows by group: what brtap holds
        self._rejected: dict[str, str] = {}  # chassis rows set aside, as last logged
        # what the last applied pass counts: its counter plan and the rows it read
        self._counted: Optional[tuple[counters.CounterPlan, Any]] = None
        # the counter plan and brtap's totals last seen, when they changed, when last read
        self._count_key: Optional[tuple] = None
        self._count_changed = self._count_read = 0.0
        # what each capped session's meters had dropped at the last reading, when they
        # last dropped more, and the sessions whose caps dropped copies within CAPPED_HOLD
        # (their status says so)
        self._dropped: dict[str, int] = {}
        self._dropping: dict[str, float] = {}
        # what meters changed or deleted since had dropped, by session (while its forward
        # flows, which counted those copies, stay)
        self._carried: dict[str, tuple[int, int]] = {}
        self._capped: frozenset[str] = frozenset()
        self.metrics = Metrics()
        # the underlay's, learnt again with each heartbeat
        self.mtu: Optional[int] = self._underlay_mtu()
        LOG.info("underlay MTU at %s: %s", conf.tunnel.local_ip,
                 self.mtu if self.mtu is not None else "unknown (set [tunnel] mtu)")

    # ------------------------------------------------------------ events

    def mark(self, reason: str) -> None:
        """Note that something changed; the loop will reconcile soon."""
        with self._lock:
            self._reasons.add(reason)
        self.wake.set()

    def _take_reasons(self) -> list[str]:
        with self._lock:
            reasons, self._reasons = sorted(self._reasons), set()
        return reasons

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Connect to everything, retrying with backoff until it works or we stop."""
        if self.conf.metrics.listen_port:
            where = f"{self.conf.metrics.listen_address}:{self.conf.metrics.listen_port}"
            try:
                self.metrics.serve(str(self.conf.metrics.listen_address),
                                   self.conf.metrics.listen_port)
            except OSError as exc:  # mirroring matters more than its metrics
                self.metrics.errors.labels("metrics").inc()
                LOG.error("no metrics endpoint: cannot listen on %s: %s ([metrics] "
                          "listen_address, listen_port)", where, exc.strerror or exc)
        self.of.start(lambda why: self.mark(why))
        self._retry("the local switch", lambda: self.switch.start(
            lambda table: self.mark(f"local {table}")))
        creds = tls.of(self.conf.tapdb.ssl_key_file, self.conf.tapdb.ssl_cert_file,
                       self.conf.tapdb.ssl_ca_cert_file,
                       "[tapdb] ssl_key_file, ssl_cert_file, ssl_ca_cert_file")
        self.tapdb = self._retry("tapdb", lambda: client.connect(
            self.conf.tapdb.connection, self.conf.tapdb.timeout, chassis=self.chassis,
            creds=creds))
        self.tapdb.snapshots = cache = client.SnapshotCache()
        with self.tapdb.ovsdb_connection.lock:
            self.tapdb.idl.on_row = cache.changed
        self.tapdb.idl.on_change = self._tapdb_changed
        self._retry("tapdb", self._heartbeat)
        self._connections()
        self.mark("start")

    def _tapdb_changed(self, table: str) -> None:
        # of these this agent sees only its own rows: its heartbeat and counters coming back
        if table not in ("Chassis_Private", "Session_Stats"):
            self.mark(f"tapdb {table}")

    def _retry(self, what: str, func: Any) -> Any:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                return func()
            except (client.TapdbError, SwitchError) as exc:
                LOG.warning("cannot reach %s yet (%s); retrying in %.1f s", what, exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 30)
        raise SystemExit(0)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.metrics.stop()

    def _heartbeat(self) -> None:
        """Keep this chassis's row right (someone may have changed it) and say we are alive."""
        assert self.tapdb is not None
        if not self.tapdb.idl.is_connected():  # a transaction would wait out its timeout
            raise client.TapdbError(f"tapdb at {self.conf.tapdb.connection} is not connected")
        mtu = self._underlay_mtu()
        if mtu != self.mtu:
            LOG.info("underlay MTU at %s: %s", self.conf.tunnel.local_ip,
                     mtu if mtu is not None else "unknown (set [tunnel] mtu)")
            self.mtu = mtu
            self.mark("underlay MTU")
        # a heartbeat that cannot land soon is given up and sent again at the next beat:
        # one stuck on a connection being replaced must not make the chassis look silent
        within = max(1.0, min(self.conf.heartbeat_interval, self.conf.tapdb.timeout))
        self.tapdb.register_chassis(self.chassis, str(self.conf.tunnel.local_ip),
                                    self.conf.tunnel.encap, mtu, timeout=within)
        self.tapdb.heartbeat(self.chassis, int(time.time()),
                             max(1, round(self.conf.heartbeat_interval)), timeout=within)

    def _underlay_mtu(self) -> Optional[int]:
        """``[tunnel] mtu``, else the MTU of the interface holding the tunnel address."""
        if self.conf.tunnel.mtu is not None:
            return self.conf.tunnel.mtu
        found = underlay.mtu_of(str(self.conf.tunnel.local_ip))
        return None if found is None else min(found, mtu_bounds.MTU[1])

    def _beat(self) -> None:
        """Heartbeats, on a thread of their own: a tapdb that is slow to answer, or gone
        before the connection knows it, holds them for its timeout, never the passes
        that keep the switch."""
        while not self.stopping.wait(self.conf.heartbeat_interval):
            try:
                self._heartbeat()
            except Exception as exc:
                self.metrics.errors.labels("heartbeat").inc()
                LOG.warning("heartbeat failed: %s", exc)

    def run(self) -> None:
        """Reconcile until stopped."""
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()
        backoff = 0.0
        next_resync = time.monotonic() + self.conf.resync_interval
        next_beat = time.monotonic() + self.conf.heartbeat_interval
        stats_every = self.conf.metrics.stats_interval
        next_stats = time.monotonic() + stats_every if stats_every else float("inf")
        while not self.stopping.is_set():
            timeout = max(0.0, min(next_resync, next_beat, next_stats) - time.monotonic())
            self.wake.wait(timeout)
            if self.stopping.is_set():
                break
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.conf.heartbeat_interval
                self._connections()
            if now >= next_stats:
                next_stats = now + stats_every
                try:
                    self.count()
                except Exception as exc:
                    self.metrics.errors.labels("counters").inc()
                    LOG.warning("reading or publishing counters failed: %s", _why(exc))
            if now >= next_resync:
                self.mark("periodic resync")
            if not self.wake.is_set():
                continue
            time.sleep(0.002)  # let the rest of a burst of events land in this pass
            self.wake.clear()
            reasons = self._take_reasons()
            try:
                again = self.reconcile(reasons)
                self._connections()
                backoff = 0.0
                if "periodic resync" in reasons:  # events must not postpone it forever
                    next_resync = time.monotonic() + self.conf.resync_interval
                if again:
                    self.mark(again)
            except Exception as exc:  # any failure: full resync after a backoff
                self._applied = self._groups = self._counted = None
                self.metrics.passes.labels("failed").inc()
                self.metrics.errors.labels(_kind(exc)).inc()
                self._connections()
                backoff = min(max(backoff * 2, 0.5), 30.0)
                LOG.error("reconcile failed: %s; full resync in %.1f s, or at the next change",
                          _why(exc), backoff,
                          exc_info=not isinstance(exc, (OFError, SwitchError, client.TapdbError)))
                if self._backoff(backoff):
                    backoff = 0.0
                self.mark(f"resync after error: {_why(exc)}")

    def _backoff(self, delay: float) -> bool:
        """Wait ``delay`` seconds, or less when tapdb or the switch reports a change (but
        at least half a second, so that a pass failing on its own echo cannot spin).
        Returns whether a change cut it short."""
        floor = min(delay, 0.5)
        self.wake.clear()
        if self.stopping.wait(floor):
            return False
        woken = self.wake.wait(delay - floor)
        return woken and not self.stopping.is_set()

    # ------------------------------------------------------------ one pass

    def reconcile(self, reasons: list[str]) -> Optional[str]:
        """One full pass; returns a reason to run again soon, or None."""
        assert self.tapdb is not None
        started = time.monotonic()
        conf = self.conf
        if reasons == ["periodic resync"] and self._applied is not None and self.of.connected:
            # nothing reported a change since the last pass: reading tapdb again could
            # only confirm it, while the switch could have lost flows unseen
            if self.of.consistent():
                LOG.debug("reconcile (periodic resync): brtap holds the flows installed; "
                          "%.1f ms", (time.monotonic() - started) * 1000)
                return None
            reasons = [*reasons, "resync: brtap holds another number of flows than installed"]
        clock = _Phases(started)
        view = self.tapdb.agent_view()
        local = self.switch.inventory()
        self._log_rejected(view.rejected)
        # before anything can end the pass: a change elsewhere (a source added to a session
        # to a target here) may call for rows not yet in view
        self._watch(view.snapshot, local)
        intent = compiler.concerning(view.snapshot.intent, self.chassis, frozenset(local["ports"]))
        inputs = (intent, view.chassis_ips, view.rejected, view.bindings, local,
                  _port_target_ifaces(view.snapshot.intent), self.mtu, self._capped)
        # the switch's own word after any error, on drift, and when a periodic check finds
        # that it holds another number of flows than we believe
        full = any(r.split(" ")[0] in ("resync", "drift:") for r in reasons)
        if (not full and "periodic resync" in reasons and self.of.connected
                and not self.of.consistent()):
            full = True
        # with tapdb away, a write would hold the pass for its timeout: the switch is kept
        # from what the agent knows, and tapdb is told once it is back (that is an event)
        reachable = self.tapdb.idl.is_connected()
        if inputs == self._applied and not full and not any(
                r.split(" ")[0] in FORCING for r in reasons):
            if reachable:
                self.tapdb.report_applied(self.chassis, view.generation)
            self.metrics.passes.labels("unchanged").inc()
            LOG.debug("reconcile (%s): nothing that concerns chassis %s changed; %.1f ms",
                      ", ".join(reasons), self.chassis, (time.monotonic() - started) * 1000)
            return None
        clock.mark("read")
        self._applied = None
        if reachable:
            self._publish_bindings(intent, local)
        inv = compiler.Inventory(chassis=self.chassis, encap=conf.tunnel.encap,
                                 integration_bridges=tuple(conf.ovs.integration_bridges),
                                 tap_bridge=conf.ovs.tap_bridge, chassis_ips=view.chassis_ips,
                                 bindings=view.bindings, local_ip=str(conf.tunnel.local_ip),
                                 rejected_chassis=view.rejected, mtu=self.mtu,
                                 **{k: v for k, v in local.items() if k != "owned"})
        plan = compiler.plan_ports(intent, inv)
        clock.mark("plan")
        port_changes = self.switch.apply(plan)
        needed = ({h.patch_tap for h in plan.hooks} | {t.name for t in plan.tunnels}
                  | set(plan.nics) | set(plan.local_targets.values()))
        ofports = self.switch.wait_ofports(needed, timeout=1.0)
        if not self.of.connected and not self.of.wait_connected(5.0):
            raise OFError(f"{conf.ovs.tap_bridge} has not connected to {self.of.target}")
        clock.mark("ports")
        groups = compiler.plan_flow_groups(intent, plan, ofports, conf.tunnel.encap,
                                           str(conf.tunnel.local_ip))
        clock.mark("plan")
        known, self._groups = self._groups, None
        believed = None
        if known is not None and self.of.knows() and not full:
            # brtap holds the last pass's flows: look only into the groups that changed
            change = flows.diff_groups(known, groups)
        else:
            believed = self.of.believed()
            installed = self.of.installed(refresh=full)
            change = flows.diff(installed, frozenset(f for g in groups.values() for f in g))
        on_switch = self.of.meters(refresh=full or known is None)
        meters = flows.diff_meters(on_switch, compiler.plan_meters(intent, plan))
        clock.mark("diff")
        self._carry_drops(intent, {m.id for m in meters.put if m.id in on_switch}
                          | set(meters.delete))
        self.of.apply_meters(meters, deleting=False)  # before the flows that use them
        for m in meters.put:  # a new meter drops from zero: its first drops are news
            name = self._metered(intent, m.id)
            if m.id not in on_switch and name is not None:
                self._dropped.setdefault(name, self._carried.get(name, (0, 0))[0])
        self.of.apply(change)
        self.of.apply_meters(meters, deleting=True)  # after the flows that used them
        self._groups = groups
        self._housekeeping(groups)
        clock.mark("flows")
        if believed is not None and installed != believed:  # drift, now repaired
            LOG.warning("repaired %s: %s", conf.ovs.tap_bridge,
                        _repairs(flows.diff(installed, believed)))
        waiting = sorted(n for n in needed if ofports.get(n, 0) == 0)
        source_status, target_status = self._status(plan, ofports, intent)
        updated = (self.tapdb.write_status(self.chassis, view.snapshot, source_status,
                                           target_status) if reachable else 0)
        clock.mark("status")
        # a pass that changed nothing (a heartbeat, a statistics-free event) stays quiet
        level = logging.INFO if (port_changes or change or updated or waiting) else logging.DEBUG
        level = logging.INFO if meters else level
        LOG.log(level, "reconcile (%s): ports %s; flows +%d -%d, %d installed;%s status %d "
                 "updated; %.1f ms (%s)%s", ", ".join(reasons) or "-",
                 "; ".join(port_changes) or "unchanged",
                 len(change.add), len(change.delete), sum(map(len, groups.values())),
                 f" meters {len(meters.put)} set, {len(meters.delete)} deleted;" if meters
                 else "", updated,
                 (time.monotonic() - started) * 1000, clock,
                 f"; waiting for the switch to number {', '.join(waiting)}" if waiting else "")
        m = self.metrics
        m.passes.labels("applied").inc()
        m.pass_seconds.observe(time.monotonic() - started)
        m.flows.set(sum(map(len, groups.values())))
        m.flow_mods.labels("add").inc(len(change.add))
        m.flow_mods.labels("delete").inc(len(change.delete))
        self._counted = (counters.plan_counters(intent, plan), view.snapshot)
        # a replaced hook is created on the next pass; an ofport still to come arrives as an
        # OVSDB event, which marks work by itself
        if port_changes:
            return "ports changed"
        if not reachable:  # bindings, statuses and what was applied: still to tell tapdb
            return None
        self._applied = inputs
        # the flows are committed and a barrier confirmed it: say which intent that was
        self.tapdb.report_applied(self.chassis, view.generation)
        return None

    def _housekeeping(self, groups: dict[str, tuple[flows.Flow, ...]]) -> None:
        """Let the caches keyed by flows and sessions hold what brtap holds now, not what
        it once held: memory comes back after large sessions go, and churn does not grow
        it.  Cheap checks each pass; the pruning (in proportion to the caches) only when
        they hold over twice what is live."""
        if compiler.memo_count() > 2 * len(groups) + 64:
            compiler.retain(groups)
        live = sum(map(len, groups.values()))
        if flows.shared_count() > 2 * live + 1024:
            before = flows.shared_count()
            alive = {f for g in groups.values() for f in g}
            flows.keep_shared(alive)
            self.of.forget_except(alive)
            _give_back_memory()
            LOG.debug("caches pruned to the %d flows installed (%d shared values before, %d "
                      "after)", live, before, flows.shared_count())

    def count(self) -> int:
        """Read the switch's counters of what this chassis mirrors and publish them where
        they changed (rows no other agent monitors); returns the rows written.  Nothing
        to count, or no packet since the last reading (brtap's totals as they were): no
        dump, no read."""
        if self._counted is None or self.tapdb is None or not self.of.connected:
            return 0
        plan, snapshot = self._counted
        values: dict[str, dict[str, int]] = {}
        if plan.flows:
            key, now = (plan, self.of.totals()), time.monotonic()
            if key != self._count_key:
                self._count_key, self._count_changed = key, now
            elif self._count_read - self._count_changed >= STATS_LAG:
                self._note_capped(now)  # nothing moves: no cap drops more
                return 0  # read since everything stopped moving
            drops = self.of.meter_drops() if plan.meters else {}
            self._carried = {s: c for s, c in self._carried.items() if s in plan.flows}
            values = counters.counters(plan, self.of.counts(), drops, self._carried)
            self._count_read = now
        dropped = {s: v["dropped"] for s, v in values.items() if "dropped" in v}
        now = time.monotonic()
        self._dropping = {s: now if n > self._dropped.get(s, n) else self._dropping[s]
                          for s, n in dropped.items()
                          if n > self._dropped.get(s, n) or s in self._dropping}
        self._dropped = dropped
        self._note_capped(now)
        for s in self._capped & set(values):
            values[s]["capped"] = 1
        self.metrics.mirrored.update(values)
        return self.tapdb.write_counters(self.chassis, snapshot, values)

    @staticmethod
    def _metered(intent: Any, meter_id: int) -> Optional[str]:
        """The session a meter is a cap of (its id comes from the session's priority)."""
        return next((s.name for s in intent.sessions.values()
                     if meter_id in compiler.meter_ids(s)), None)

    def _carry_drops(self, intent: Any, ids: set[int]) -> None:
        """Before meters are changed (OVS then counts from zero) or deleted, keep what they
        dropped: a session's forward flows counted those copies too, and go on counting."""
        if not ids:
            return
        try:
            drops = self.of.meter_drops()
        except OFError as exc:
            LOG.warning("reading the meters before changing them failed: %s", exc)
            return
        for i in ids & set(drops):
            name = self._metered(intent, i)
            if name is not None:
                p, b = self._carried.get(name, (0, 0))
                self._carried[name] = (p + drops[i][0], b + drops[i][1])

    def _note_capped(self, now: float) -> None:
        """Which sessions' caps dropped copies within CAPPED_HOLD: a change is work for a
        pass, which puts it in their sources' statuses (steady while a cap holds, not
        flickering between readings)."""
        capped = frozenset(s for s, t in self._dropping.items() if now - t < CAPPED_HOLD)
        if capped != self._capped:
            for name in sorted(capped - self._capped):
                LOG.info("session %s: its caps are dropping copies on chassis %s", name,
                         self.chassis)
            for name in sorted(self._capped - capped):
                LOG.info("session %s: its caps no longer drop copies on chassis %s", name,
                         self.chassis)
            self._capped = capped
            self.mark("caps")

    def _connections(self) -> None:
        """The connection gauges, refreshed after every pass and at every heartbeat."""
        for peer, api in (("tapdb", self.tapdb), ("ovsdb", self.switch.api)):
            idl = api.idl if api is not None else None
            self.metrics.connected.labels(peer).set(int(bool(idl and idl.is_connected())))
        self.metrics.connected.labels("openflow").set(int(self.of.connected))

    def _log_rejected(self, rejected: dict[str, str]) -> None:
        """One line when a chassis row is set aside, and when it is right again."""
        for name, why in sorted(rejected.items()):
            if self._rejected.get(name) != why:
                LOG.warning("chassis %s set aside (nothing is tunnelled to it): %s", name, why)
        for name in sorted(set(self._rejected) - set(rejected)):
            LOG.info("chassis %s is no longer set aside", name)
        self._rejected = dict(rejected)

    def _status(self, plan: compiler.PortPlan, ofports: dict[str, int],
                intent: Any) -> tuple[dict, dict]:
        hooks = {h.name: h for h in plan.hooks}
        sources = {}
        for key, status in plan.source_status.items():
            taps = [hooks[plan.feeds[n].hook].patch_tap for n in plan.source_feeds.get(key, ())]
            waiting = [t for t in taps if ofports.get(t, 0) <= 0]
            if status.state == "active" and waiting:
                status = compiler.Status("pending", f"waiting for the switch to add {waiting[0]}")
            elif status.state == "active" and key[0] in self._capped:
                status = compiler.capped(status, intent.sessions[key[0]], self.chassis)
            sources[key] = status.as_map(self.chassis)
        targets = {name: status.as_map(self.chassis)
                   for name, status in plan.target_status.items()}
        return sources, targets

    def _watch(self, snapshot: Any, local: dict) -> None:
        """Narrow tapdb monitoring to what concerns this chassis: its sources, where the
        targets it may send to live, and who sends to the targets it hosts."""
        assert self.tapdb is not None
        intent = snapshot.intent
        local_ifaces = frozenset(local["ports"])
        target_ifaces = _port_target_ifaces(intent)
        here = {t.name for t in intent.targets.values()
                if t.kind.lives_on(t, self.chassis, local_ifaces)}
        sending = [s for s in intent.sessions.values() if s.target in here]
        sources = self.tapdb.source_uuids(snapshot.rows["session", s.name] for s in sending)
        source_ifaces = frozenset(src.iface_id for s in sending for src in s.sources
                                  if src.type == "port" and src.iface_id)
        watched = (local_ifaces, target_ifaces, sources, source_ifaces)
        if self._watched != watched:
            self.tapdb.watch(self.chassis, set(local_ifaces), set(target_ifaces), sources,
                             source_ifaces)
            self._watched = watched

    def _publish_bindings(self, intent: Any, local: dict) -> None:
        """Say where the ifaces that are sources or targets live, so others find them."""
        assert self.tapdb is not None
        wanted = {t.kind.iface(t) for t in intent.targets.values()} - {None}
        for sess in intent.sessions.values():
            wanted |= {s.iface_id for s in sess.sources if s.type == "port"}
        self.tapdb.publish_bindings(self.chassis, {i for i in wanted if i in local["ports"]})


# flow statistics reach OpenFlow as ovs-vswitchd's revalidators run (about every half
# second, later under load): counters are read again until a reading this long after the
# last packet
STATS_LAG = 2.0
# a session is capped (its status says so) while its caps dropped copies this recently
CAPPED_HOLD = 10.0

# reasons that make a pass run even when its inputs look unchanged: the switch's
# state may differ from what the agent believes
FORCING = {"start", "resync", "switch", "ports", "drift:"}


class _Phases:
    """Where a pass spends its time, for its log line: ``read 12, plan 30, ...`` (ms)."""

    def __init__(self, started: float):
        self._last = started
        self._spent: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self._spent[phase] = self._spent.get(phase, 0.0) + (now - self._last) * 1000
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in self._spent.items())


def _repairs(change: flows.FlowDiff) -> str:
    """What it takes to turn brtap back into what the agent had installed: by kind,
    and the flows that are not ours."""
    ours = {f.key for f in change.add}
    foreign = [f for f in change.delete if not flows.is_ours(f.cookie)]
    fixed: dict[str, int] = {}
    for f in change.add:
        fixed[flows.cookie_kind(f.cookie)] = fixed.get(flows.cookie_kind(f.cookie), 0) + 1
    stale = [f for f in change.delete if flows.is_ours(f.cookie) and f.key not in ours]
    parts = []
    if fixed:
        parts.append("put back or corrected " + ", ".join(f"{n} {k}" for k, n in
                                                           sorted(fixed.items())) + " flow(s)")
    if stale:
        parts.append(f"removed {len(stale)} flow(s) of ours no longer wanted")
    if foreign:
        shown = "; ".join(f"table={f.table} priority={f.priority} cookie={f.cookie:#x}"
                          for f in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        parts.append(f"removed {len(foreign)} flow(s) the agent did not write ({shown}{more})")
    return "; ".join(parts)


def _give_back_memory() -> None:
    """Return freed heap pages to the system (glibc), so that RSS falls after large
    sessions are deleted; elsewhere a no-op."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _port_target_ifaces(intent: Any) -> frozenset[str]:
    return frozenset(i for t in intent.targets.values() if (i := t.kind.iface(t)))


def _kind(exc: BaseException) -> str:
    """What failed, for the errors metric."""
    return ("tapdb" if isinstance(exc, client.TapdbError) else
            "switch" if isinstance(exc, SwitchError) else
            "openflow" if isinstance(exc, OFError) else "internal")


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
