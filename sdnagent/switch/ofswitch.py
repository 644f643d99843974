"""brtap's OpenFlow side, through os-ken embedded in the agent's process.

os-ken owns the connection, the handshake and message parsing; this module
tracks its own requests (a message, then a barrier; the replies in between
are the answer), turns :class:`~sdnagent.compile.flows.Flow` data into FlowMods and
back, reads what the switch holds (every flow: brtap is the agent's, so a
flow it did not write is removed) and applies a diff as one atomic bundle:
every change or none.  On each connection it asks the switch to report flow
changes made by anyone else (ONF flow monitoring, OpenFlow 1.3), so that a
flow added, changed or deleted by hand is repaired at once.
"""
from __future__ import annotations

import functools
import logging
import struct
import threading
import time
from typing import Any, Callable, Optional

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto.ofproto_common import ONF_EXPERIMENTER_ID

from sdnagent.compile.flows import Flow, FlowDiff

LOG = logging.getLogger(__name__)


class OFError(RuntimeError):
    """The switch refused a message, or is not connected."""


NXFME_ABBREV = 3  # a flow update that only names the xid of our own request


class _Xid:
    """Lets os-ken number a message that we encode ourselves."""

    xid: Optional[int] = None

    def set_xid(self, xid: int) -> None:
        self.xid = xid


_XIDS = threading.Lock()  # os-ken's Datapath.set_xid is not safe across threads


def _number(dp: Any, msg: Any) -> int:
    with _XIDS:
        return dp.set_xid(msg)


class _Waiter:
    """One request in flight: the replies to its message, then its barrier's answer."""

    def __init__(self, dp: Any, xid: Optional[int]):
        self.dp = dp
        self.xid = xid
        self.replies: list[Any] = []
        self.error: Optional[str] = None
        self.done = threading.Event()


def _guarded(handler: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """Log a handler's exception instead of raising it: with os-ken's native hub any
    exception leaving a handler ends that app's event thread, silently and for good.
    (os-ken's own ofctl service dies that way when it sees a switch's features before
    the datapath has its id, which is why the agent does not use it.)"""
    @functools.wraps(handler)
    def run(self: Any, ev: Any) -> None:
        try:
            handler(self, ev)
        except Exception:  # noqa: BLE001 (reported, and the thread lives on)
            LOG.exception("OpenFlow event handler %s failed", handler.__name__)
    return run


class TapOFApp(app_manager.OSKenApp):
    """Tracks brtap's datapath, the switch's answers to our requests and its errors."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS: dict = {}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.datapath = None
        self.errors: dict[int, Any] = {}
        self.connected = threading.Event()
        self.on_change: Callable[[str], None] = lambda why: None
        self._monitor_xid: Optional[int] = None
        self._lock = threading.Lock()
        self._by_xid: dict[int, _Waiter] = {}  # the message's xid
        self._by_barrier: dict[int, _Waiter] = {}  # its barrier's xid

    def expect(self, waiter: _Waiter, barrier_xid: int) -> None:
        with self._lock:
            if waiter.xid is not None:
                self._by_xid[waiter.xid] = waiter
            self._by_barrier[barrier_xid] = waiter

    def forget(self, waiter: _Waiter, barrier_xid: int) -> None:
        with self._lock:
            self._by_xid.pop(waiter.xid, None)  # type: ignore[arg-type]
            self._by_barrier.pop(barrier_xid, None)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @_guarded
    def _state_change(self, ev: Any) -> None:
        if ev.state == MAIN_DISPATCHER:
            self.datapath = ev.datapath
            self._monitor(ev.datapath)
            self.connected.set()
            self.on_change(f"switch {ev.datapath.id:#x} connected")
            return
        with self._lock:  # whatever waited on this connection will not be answered
            for waiter in self._by_barrier.values():
                if waiter.dp is ev.datapath:
                    waiter.error = "the OpenFlow connection closed"
                    waiter.done.set()
        if ev.datapath is self.datapath:
            # only this connection: after a vswitchd restart the old one may die
            # after the new one (same datapath id) is already up
            self.datapath = None
            self.connected.clear()
            self.on_change("switch disconnected")

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPAggregateStatsReply],
                MAIN_DISPATCHER)
    @_guarded
    def _reply(self, ev: Any) -> None:
        with self._lock:
            waiter = self._by_xid.get(ev.msg.xid)
        if waiter is not None and waiter.dp is ev.msg.datapath:
            waiter.replies.append(ev.msg)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @_guarded
    def _barrier_reply(self, ev: Any) -> None:
        with self._lock:
            waiter = self._by_barrier.get(ev.msg.xid)
        if waiter is not None and waiter.dp is ev.msg.datapath:
            waiter.done.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    @_guarded
    def _error(self, ev: Any) -> None:
        self.errors[ev.msg.xid] = ev.msg

    def _monitor(self, dp: Any) -> None:
        """Ask for every flow change on any table made by another connection (not ours).

        Encoded here: os-ken 4.2's ONFFlowMonitorStatsRequest leaves out an empty
        match, and OVS then refuses the request.  An OpenFlow 1.3 experimenter
        multipart request (ONF, 1870) with one onf_flow_monitor_request: id, flags,
        match_len, out_port (any), table_id (all), then an empty OXM match.
        """
        ofp = dp.ofproto
        flags = ofp.ONFFMF_ADD | ofp.ONFFMF_DELETE | ofp.ONFFMF_MODIFY
        match = struct.pack("!HH4x", ofp.OFPMT_OXM, 4)  # no field: every flow
        body = struct.pack("!IHHIB3x", 1, flags, 4, ofp.OFPP_ANY, ofp.OFPTT_ALL) + match
        xid = _number(dp, _Xid())
        self._monitor_xid = xid
        dp.send(struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REQUEST, 24 + len(body),
                            xid)
                + struct.pack("!HH4xII", ofp.OFPMP_EXPERIMENTER, 0, ONF_EXPERIMENTER_ID,
                              ofp.ONFMP_FLOW_MONITOR)
                + body)

    @set_ev_cls(ofp_event.EventOFPExperimenterStatsReply, MAIN_DISPATCHER)
    @_guarded
    def _flow_update(self, ev: Any) -> None:
        msg = ev.msg
        ofp = msg.datapath.ofproto
        if (msg.datapath is not self.datapath or msg.xid == self._monitor_xid
                or getattr(msg.body, "exp_type", None) != ofp.ONFMP_FLOW_MONITOR):
            return
        # our own changes come back abbreviated (NXFME_ABBREV: the xid only): not drift
        data, offset = bytes(msg.body.data), 0
        while offset + 4 <= len(data):
            length, event = struct.unpack_from("!HH", data, offset)
            if event != NXFME_ABBREV:
                self.on_change("drift: brtap's flows changed by another controller")
                return
            offset += max(length, 4)


def _to_flowmod(dp: Any, f: Flow, command: int) -> Any:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    actions, inst = [], []
    for a in f.actions:
        if a[0] == "output":
            actions.append(parser.OFPActionOutput(a[1], 0))
        elif a[0] == "output_trunc":
            actions.append(parser.NXActionOutputTrunc(port=a[1], max_len=a[2]))
        elif a[0] == "set_field":
            actions.append(parser.OFPActionSetField(**{a[1]: a[2]}))
        elif a[0] == "goto":
            continue
        else:
            raise AssertionError(f"unknown action {a}")
    if actions:
        inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    for a in f.actions:
        if a[0] == "goto":
            inst.append(parser.OFPInstructionGotoTable(a[1]))
    return parser.OFPFlowMod(dp, cookie=f.cookie, table_id=f.table, command=command,
                             priority=f.priority, match=parser.OFPMatch(**dict(f.match)),
                             instructions=inst if command != ofp.OFPFC_DELETE_STRICT else [],
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)


def _from_stats(stat: Any) -> Flow:
    """A flow as the switch reports it, in the form the compiler produces."""
    actions: list[tuple] = []
    for inst in stat.instructions:
        if hasattr(inst, "actions"):
            for a in inst.actions:
                name = type(a).__name__
                if name == "OFPActionOutput":
                    actions.append(("output", a.port))
                elif name == "NXActionOutputTrunc":
                    actions.append(("output_trunc", a.port, a.max_len))
                elif name == "OFPActionSetField":
                    actions.append(("set_field", a.key, a.value))
                else:  # something we never write: keep it visible, so the diff replaces it
                    actions.append(("unknown", repr(a)))
    for inst in stat.instructions:
        if hasattr(inst, "table_id") and not hasattr(inst, "actions"):
            actions.append(("goto", inst.table_id))
    match = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                         for k, v in stat.match.items()))
    return Flow(stat.table_id, stat.priority, match, tuple(actions), stat.cookie)


class OFSwitch:
    """The embedded os-ken controller that brtap connects to."""

    def __init__(self, listen_address: str, listen_port: int, timeout: float = 10):
        self.listen = (listen_address, listen_port)
        self.timeout = timeout
        self.app: Optional[TapOFApp] = None
        self._bundle_id = int(time.time()) & 0xFFFF
        self._cache: Optional[frozenset[Flow]] = None  # what the switch holds, as we know it
        self._cache_dp: Any = None

    @property
    def target(self) -> str:
        """The controller target to set on brtap."""
        return f"tcp:{self.listen[0]}:{self.listen[1]}"

    def start(self, on_change: Callable[[str], None]) -> None:
        from os_ken import cfg as osken_cfg
        from os_ken.controller import controller  # noqa: F401 (registers the ofp_* options)
        osken_cfg.CONF(project="os_ken", args=[])  # os-ken's own options, not ours
        osken_cfg.CONF.set_override("ofp_listen_host", self.listen[0])
        osken_cfg.CONF.set_override("ofp_tcp_listen_port", self.listen[1])
        mgr = app_manager.AppManager.get_instance()
        mgr.load_apps([__name__])
        contexts = mgr.create_contexts()
        mgr.instantiate_apps(**contexts)
        self.app = next(a for a in mgr.applications.values() if isinstance(a, TapOFApp))
        self.app.on_change = on_change

    def wait_connected(self, timeout: float) -> bool:
        assert self.app is not None
        return self.app.connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self.app is not None and self.app.datapath is not None

    def _dp(self) -> Any:
        dp = self.app.datapath if self.app else None
        if dp is None:
            raise OFError("brtap is not connected to the agent's OpenFlow controller")
        return dp

    def _request(self, dp: Any, msg: Any = None, timeout: Optional[float] = None) -> list[Any]:
        """Send ``msg`` (if any) and a barrier; the replies to ``msg`` once the barrier is
        answered, or OFError with the switch's error.

        A switch that does not answer in time is not trusted again on that
        connection: it is dropped, so the switch reconnects and the next pass
        starts from a fresh handshake and a dump of what it really holds.
        """
        assert self.app is not None
        what = type(msg).__name__ if msg is not None else "OFPBarrierRequest"
        if msg is not None:
            _number(dp, msg)
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        _number(dp, barrier)
        waiter = _Waiter(dp, msg.xid if msg is not None else None)
        self.app.expect(waiter, barrier.xid)
        timeout = self.timeout if timeout is None else timeout
        try:
            if msg is not None:
                self._send(dp, msg)
            self._send(dp, barrier)
            if not waiter.done.wait(timeout):
                self.drop(dp)
                raise OFError(f"{what}: no answer from the switch within {timeout:g} s; "
                              "dropped the connection, the switch will reconnect")
        finally:
            self.app.forget(waiter, barrier.xid)
        if waiter.error:
            raise OFError(f"{what}: {waiter.error}")
        error = self.app.errors.pop(waiter.xid, None) if waiter.xid is not None else None
        if error is not None:
            raise OFError(f"{what}: the switch refused it (error type {error.type}, code "
                          f"{error.code})")
        return waiter.replies

    def drop(self, dp: Any) -> None:
        """Close one connection to the switch and forget what we knew through it."""
        if self._cache_dp is dp:
            self._cache, self._cache_dp = None, None
        LOG.warning("dropping the OpenFlow connection of %s (%s)", self.target,
                    getattr(dp, "address", "?"))
        dp.close()

    def _send(self, dp: Any, msg: Any) -> None:
        if not dp.send_msg(msg):
            raise OFError("the OpenFlow connection closed while sending")

    def _barrier(self, dp: Any, xids: list[int], what: str) -> None:
        """Wait until the switch processed ``xids``; raise with its first error."""
        self._request(dp)
        errors = [self.app.errors.pop(x) for x in xids if x in self.app.errors]
        if errors:
            e = errors[0]
            raise OFError(f"{what}: the switch refused it (error type {e.type}, code {e.code}; "
                          f"{len(errors)} error(s))")

    def installed(self, refresh: bool = False) -> frozenset[Flow]:
        """Every flow on brtap, whoever wrote it.

        Read from the switch when asked, after a (re)connection or a failure;
        otherwise what our last bundles left there, as OVN's ofctrl keeps its
        installed table: parsing a dump costs more than everything else in a pass.
        """
        dp = self._dp()
        if self._cache is not None and self._cache_dp is dp and not refresh:
            return self._cache
        self._cache = None
        self._cache_dp = dp
        self._cache = self._dump(dp)
        return self._cache

    def believed(self) -> Optional[frozenset[Flow]]:
        """What we believe the current connection's switch holds, if we know."""
        dp = self.app.datapath if self.app else None
        return self._cache if dp is not None and self._cache_dp is dp else None

    def consistent(self) -> bool:
        """Whether the switch still holds as many flows as we believe it does.

        One small request instead of a dump: the periodic safety net at any
        flow count.  Flows changed in place are reported by flow monitoring."""
        dp = self._dp()
        if self._cache is None or self._cache_dp is not dp:
            return False
        return self._flow_count(dp) == len(self._cache)

    def _flow_count(self, dp: Any) -> int:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        req = parser.OFPAggregateStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                              0, 0, parser.OFPMatch())
        replies = self._request(dp, req)
        if not replies:
            raise OFError("OFPAggregateStatsRequest: the switch answered with no statistics")
        return replies[0].body.flow_count

    def _dump(self, dp: Any) -> frozenset[Flow]:
        """Every flow; the wait grows with the count, since os-ken parses a large dump
        slowly (about 10,000 flows/s here) and a slow answer must not read as a dead one."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        count = self._flow_count(dp)
        req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         0, 0, parser.OFPMatch())
        replies = self._request(dp, req, timeout=self.timeout + count / 1000)
        return frozenset(_from_stats(s) for r in replies for s in r.body)

    def apply(self, change: FlowDiff) -> None:
        """Apply ``change`` atomically: an ONF bundle, checked before it is committed."""
        if not change:
            return
        dp = self._dp()
        known, self._cache = self._cache, None  # unknown until the bundle is committed
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self._bundle_id = (self._bundle_id + 1) & 0xFFFFFFFF
        bid, flags = self._bundle_id, ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        msgs = [parser.ONFBundleCtrlMsg(dp, bid, ofp.ONF_BCT_OPEN_REQUEST, flags, [])]
        msgs += [parser.ONFBundleAddMsg(dp, bid, flags,
                                        _to_flowmod(dp, f, ofp.OFPFC_DELETE_STRICT), [])
                 for f in change.delete]
        msgs += [parser.ONFBundleAddMsg(dp, bid, flags, _to_flowmod(dp, f, ofp.OFPFC_ADD), [])
                 for f in change.add]
        xids = []
        for m in msgs:
            _number(dp, m)
            xids.append(m.xid)
            self._send(dp, m)
        try:
            self._barrier(dp, xids, "bundle")
        except OFError:
            discard = parser.ONFBundleCtrlMsg(dp, bid, ofp.ONF_BCT_DISCARD_REQUEST, flags, [])
            dp.send_msg(discard)
            raise
        commit = parser.ONFBundleCtrlMsg(dp, bid, ofp.ONF_BCT_COMMIT_REQUEST, flags, [])
        _number(dp, commit)
        self._send(dp, commit)
        self._barrier(dp, [commit.xid], "bundle commit")
        if known is not None and self._cache_dp is dp:
            flows = {f.key: f for f in known}
            for f in change.delete:
                flows.pop(f.key, None)
            flows.update((f.key, f) for f in change.add)
            self._cache = frozenset(flows.values())
