"""brtap's OpenFlow side, through os-ken embedded in the agent's process.

os-ken owns the connection and the handshake; the messages of a pass are
written and read by :mod:`~sdnagent.switch.ofcodec` (os-ken's own objects cost
most of a pass at scale).  This module tracks its own requests (a message,
then a barrier; the replies in between are the answer), reads what the switch
holds (every flow: brtap is the agent's, so a flow it did not write is
removed) and applies a diff as one atomic bundle: every change or none.
On each connection it asks the switch to report flow changes made by anyone
else (ONF flow monitoring, OpenFlow 1.3), so that a flow added, changed or
deleted by hand is repaired at once.
"""
from __future__ import annotations

import functools
import logging
import struct
import threading
import time
from typing import Any, Callable, Iterator, Optional

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser
from os_ken.ofproto.ofproto_common import ONF_EXPERIMENTER_ID

from sdnagent.compile.flows import Flow, FlowDiff, Meter, MeterDiff
from sdnagent.switch import ofcodec

LOG = logging.getLogger(__name__)


class OFError(RuntimeError):
    """The switch refused a message, or is not connected."""


NXFME_ABBREV = 3  # a flow update that only names the xid of our own request


_XIDS = threading.Lock()  # os-ken's Datapath.set_xid is not safe across threads


def _reserve(dp: Any, count: int) -> int:
    """``count`` consecutive xids (wrapping as os-ken does) for messages we encode."""
    with _XIDS:
        first = (dp.xid + 1) & dp.ofproto.MAX_XID
        dp.xid = (dp.xid + count) & dp.ofproto.MAX_XID
        return first


class _RawFlowStats:
    """The entries of one flow statistics reply, left as bytes for ofcodec."""

    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    @classmethod
    def parser(cls, buf: Any, offset: int) -> "_RawFlowStats":
        return cls(bytes(buf[offset:]))


class _FlowStatsReply(ofproto_v1_3_parser.OFPFlowStatsReply):
    cls_stats_body_cls = _RawFlowStats


_FlowStatsReply.__name__ = "OFPFlowStatsReply"  # os-ken names the event after the class


def _read_flow_stats_raw() -> None:
    """Let flow statistics replies reach the agent unparsed: os-ken's parser is the
    slow half of a dump.  Process-wide; the agent is os-ken's only user in its process."""
    types = ofproto_v1_3_parser.OFPMultipartReply._STATS_MSG_TYPES
    types[ofproto_v1_3.OFPMP_FLOW] = _FlowStatsReply


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

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPAggregateStatsReply,
                 ofp_event.EventOFPMeterStatsReply, ofp_event.EventOFPMeterConfigStatsReply],
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
        xid = _reserve(dp, 1)
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


class OFSwitch:
    """The embedded os-ken controller that brtap connects to."""

    def __init__(self, listen_address: str, listen_port: int, timeout: float = 10):
        self.listen = (listen_address, listen_port)
        self.timeout = timeout
        self.app: Optional[TapOFApp] = None
        self._bundle_id = int(time.time()) & 0xFFFF
        # what the switch holds as we know it, by flow key; kept up to date in proportion
        # to each change, never rebuilt from scratch but by a dump
        self._cache: Optional[dict[tuple, Flow]] = None
        self._cache_dp: Any = None
        # brtap's meters as we know them (by id), kept as the flows are
        self._meters: Optional[dict[int, Meter]] = None
        self._meters_dp: Any = None

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
        _read_flow_stats_raw()
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

    def _request(self, dp: Any, data: bytes = b"", xid: Optional[int] = None, what: str = "",
                 timeout: Optional[float] = None) -> list[Any]:
        """Send ``data`` (one encoded message numbered ``xid``, if any) and a barrier; the
        replies to it once the barrier is answered, or OFError with the switch's error.

        A switch that does not answer in time is not trusted again on that
        connection: it is dropped, so the switch reconnects and the next pass
        starts from a fresh handshake and a dump of what it really holds.
        """
        assert self.app is not None
        what = what or "barrier"
        barrier_xid = _reserve(dp, 1)
        waiter = _Waiter(dp, xid)
        self.app.expect(waiter, barrier_xid)
        timeout = self.timeout if timeout is None else timeout
        try:
            self._send(dp, data + ofcodec.barrier(barrier_xid))
            if not waiter.done.wait(timeout):
                self.drop(dp)
                raise OFError(f"{what}: no answer from the switch within {timeout:g} s; "
                              "dropped the connection, the switch will reconnect")
        finally:
            self.app.forget(waiter, barrier_xid)
        if waiter.error:
            raise OFError(f"{what}: {waiter.error}")
        error = self.app.errors.pop(xid, None) if xid is not None else None
        if error is not None:
            raise OFError(f"{what}: the switch refused it (error type {error.type}, code "
                          f"{error.code})")
        return waiter.replies

    def drop(self, dp: Any) -> None:
        """Close one connection to the switch and forget what we knew through it."""
        if self._cache_dp is dp:
            self._cache, self._cache_dp = None, None
        if self._meters_dp is dp:
            self._meters, self._meters_dp = None, None
        LOG.warning("dropping the OpenFlow connection of %s (%s)", self.target,
                    getattr(dp, "address", "?"))
        dp.close()

    def _send(self, dp: Any, data: bytes) -> None:
        if not dp.send(data):
            raise OFError("the OpenFlow connection closed while sending")

    def _barrier(self, dp: Any, xids: list[int], what: str) -> None:
        """Wait until the switch processed ``xids``; raise with its first error."""
        self._request(dp, what=what)
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
            return frozenset(self._cache.values())
        if self._cache is not None and self._cache_dp is dp:
            ofcodec.remember(self._cache.values())  # what we expect back decodes for free
        self._cache = None
        self._cache_dp = dp
        dumped = self._dump(dp)
        self._cache = {f.key: f for f in dumped}
        return dumped

    def believed(self) -> Optional[frozenset[Flow]]:
        """What we believe the current connection's switch holds, if we know."""
        dp = self.app.datapath if self.app else None
        if dp is None or self._cache is None or self._cache_dp is not dp:
            return None
        return frozenset(self._cache.values())

    def knows(self) -> bool:
        """Whether we know what the current connection's switch holds (cheap)."""
        dp = self.app.datapath if self.app else None
        return dp is not None and self._cache is not None and self._cache_dp is dp

    def consistent(self) -> bool:
        """Whether the switch still holds as many flows as we believe it does.

        One small request instead of a dump: the periodic safety net at any
        flow count.  Flows changed in place are reported by flow monitoring."""
        dp = self._dp()
        if self._cache is None or self._cache_dp is not dp:
            return False
        return self._flow_count(dp) == len(self._cache)

    def _flow_count(self, dp: Any) -> int:
        return self._aggregate(dp)[0]

    def _aggregate(self, dp: Any) -> tuple[int, int, int]:
        xid = _reserve(dp, 1)
        replies = self._request(dp, ofcodec.aggregate_stats_request(xid), xid,
                                "aggregate statistics request")
        if not replies:
            raise OFError("aggregate statistics request: the switch answered with no statistics")
        body = replies[0].body
        return body.flow_count, body.packet_count, body.byte_count

    def totals(self) -> tuple[int, int, int]:
        """brtap's flow count and the packets and bytes of all its flows: one small
        request that tells whether any counter moved."""
        return self._aggregate(self._dp())

    def _dump(self, dp: Any) -> frozenset[Flow]:
        return frozenset(f for f, _, _ in self._stats(dp))

    def _stats(self, dp: Any) -> Iterator[tuple[Flow, int, int]]:
        """Every flow with its packets and bytes; the wait grows with the count, so that a
        large dump's slow answer does not read as a dead switch."""
        count = self._flow_count(dp)
        xid = _reserve(dp, 1)
        replies = self._request(dp, ofcodec.flow_stats_request(xid), xid,
                                "flow statistics request", timeout=self.timeout + count / 5000)
        for r in replies:
            for e in r.body:
                yield from ofcodec.decode_flow_stats(e.data)

    def counts(self) -> dict[int, tuple[int, int]]:
        """Packets and bytes of brtap's flows, summed by cookie (one dump; the flows it
        reads decode from cache)."""
        dp = self._dp()
        if self._cache is not None and self._cache_dp is dp:
            ofcodec.remember(self._cache.values())  # what we expect back decodes for free
        out: dict[int, tuple[int, int]] = {}
        for f, packets, nbytes in self._stats(dp):
            p, b = out.get(f.cookie, (0, 0))
            out[f.cookie] = (p + packets, b + nbytes)
        return out

    def forget_except(self, live: set[Flow]) -> None:
        """Drop cached encodings and decodings of flows that are not ``live``."""
        ofcodec.keep(live)

    def apply(self, change: FlowDiff) -> None:
        """Apply ``change`` atomically: an ONF bundle, checked before it is committed."""
        if not change:
            return
        dp = self._dp()
        known, self._cache = self._cache, None  # unknown until the bundle is committed
        self._bundle_id = bid = (self._bundle_id + 1) & 0xFFFFFFFF
        flags = ofcodec.ONF_BF_ATOMIC | ofcodec.ONF_BF_ORDERED
        count = 1 + len(change.delete) + len(change.add)
        first = _reserve(dp, count)
        xids = [(first + i) & 0xFFFFFFFF for i in range(count)]
        batch: list[bytes] = []
        for msg in ofcodec.bundle(bid, change.delete, change.add, first):
            batch.append(msg)
            if len(batch) == _BATCH:  # a few large writes, sent while the rest is written
                self._send(dp, b"".join(batch))
                batch = []
        if batch:
            self._send(dp, b"".join(batch))
        try:
            self._barrier(dp, xids, "bundle")
        except OFError:
            dp.send(ofcodec.bundle_ctrl(bid, ofcodec.ONF_BCT_DISCARD_REQUEST, flags,
                                        _reserve(dp, 1)))
            raise
        commit = _reserve(dp, 1)
        self._send(dp, ofcodec.bundle_ctrl(bid, ofcodec.ONF_BCT_COMMIT_REQUEST, flags, commit))
        self._barrier(dp, [commit], "bundle commit")
        if known is not None and self._cache_dp is dp:
            for f in change.delete:
                known.pop(f.key, None)
            known.update((f.key, f) for f in change.add)
            self._cache = known


    # ------------------------------------------------------------ meters

    def meters(self, refresh: bool = False) -> dict[int, Meter]:
        """brtap's meters by id: read from the switch after a (re)connection, a failure or
        when asked, else what our last changes left there."""
        dp = self._dp()
        if self._meters is not None and self._meters_dp is dp and not refresh:
            return dict(self._meters)
        self._meters = None
        xid = _reserve(dp, 1)
        found: dict[int, Meter] = {}
        for reply in self._request(dp, ofcodec.meter_request(ofcodec.OFPMP_METER_CONFIG, xid),
                                   xid, "meter configuration request"):
            for m in reply.body:
                kbps = bool(m.flags & ofcodec.OFPMF_KBPS)
                rates = [b.rate for b in m.bands if b.type == ofcodec.OFPMBT_DROP]
                # a meter someone else shaped (other bands): rate 0, so it is put right
                rate = rates[0] if len(rates) == len(m.bands) == 1 else 0
                found[m.meter_id] = Meter(m.meter_id, kbps, rate)
        self._meters, self._meters_dp = dict(found), dp
        return found

    def apply_meters(self, change: MeterDiff, deleting: bool) -> None:
        """Put (add or modify) the meters of ``change``, or delete its gone ones
        (``deleting``): puts before the flows that use them, deletes after."""
        todo = ([(ofcodec.OFPMC_DELETE, Meter(i, False, 0)) for i in change.delete] if deleting
                else [(ofcodec.OFPMC_MODIFY if m.id in (self._meters or {}) else
                       ofcodec.OFPMC_ADD, m) for m in change.put])
        if not todo:
            return
        dp = self._dp()
        known, self._meters = self._meters, None  # unknown until the switch confirms
        first = _reserve(dp, len(todo))
        xids = [(first + i) & 0xFFFFFFFF for i in range(len(todo))]
        self._send(dp, b"".join(ofcodec.meter_mod(cmd, m.id, m.kbps, m.rate, x)
                                for (cmd, m), x in zip(todo, xids)))
        self._barrier(dp, xids, "meter change")
        if known is not None and self._meters_dp is dp:
            for cmd, m in todo:
                if cmd == ofcodec.OFPMC_DELETE:
                    known.pop(m.id, None)
                else:
                    known[m.id] = m
            self._meters = known

    def meter_drops(self) -> dict[int, tuple[int, int]]:
        """The packets and bytes each meter's band dropped, by meter id."""
        dp = self._dp()
        xid = _reserve(dp, 1)
        out = {}
        for reply in self._request(dp, ofcodec.meter_request(ofcodec.OFPMP_METER, xid), xid,
                                   "meter statistics request"):
            for m in reply.body:
                out[m.meter_id] = (sum(b.packet_band_count for b in m.band_stats),
                                   sum(b.byte_band_count for b in m.band_stats))
        return out


_BATCH = 1024  # messages per write to the connection
