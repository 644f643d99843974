"""The agent's Prometheus endpoint: its passes, flows, errors, connections, and what
each session, rule and source on this chassis mirrored.

Off unless ``[metrics] listen_port`` is set.  Session, rule and source
figures are the switch's own counters as last read (``stats_interval``):
they restart from zero when OVS recreates a flow (a changed rule, a restarted
ovs-vswitchd), which Prometheus's ``rate()`` takes as a counter reset.
"""
from __future__ import annotations

import threading
from typing import Any, Iterator, Optional

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, start_http_server)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# what a session's counter keys (sdnagent.compile.counters) become
_SOURCE_KINDS = {"packets": "source_packets", "bytes": "source_bytes",
                 "unmatched": "source_unmatched_packets", "rejected": "source_rejected_packets"}
_HELP = {
    "session_packets": "Copies this session mirrored on this chassis.",
    "session_bytes": "Bytes of the frames this session mirrored (before truncation).",
    "rule_packets": "Frames this filter rule decided (accept or reject) at this session's "
                    "sources here.",
    "rule_bytes": "Bytes of the frames this filter rule decided.",
    "source_packets": "Copies of this source's frames that brtap took in.",
    "source_bytes": "Bytes of the copies of this source's frames that brtap took in.",
    "source_unmatched_packets": "Copies from this source that no rule of any session took.",
    "source_rejected_packets": "Copies from this source that a reject rule took.",
    "member_packets": "Copies this session sent to this member of its collector group.",
    "member_bytes": "Bytes of the frames this session sent to this group member.",
    "session_dropped": "Copies this session's caps (max-pps, max-kbps) dropped on this chassis.",
    "session_unsampled": "Copies of connections this sampled session did not sample.",
}


class _Mirrored(Collector):
    """Per session, rule, source and group member, from the counters last read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[str, int]] = {}

    def update(self, values: dict[str, dict[str, int]]) -> None:
        with self._lock:
            self._values = values

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self._lock:
            values = self._values
        labels = {"session_packets": ["session"], "session_bytes": ["session"],
                  "session_dropped": ["session"], "session_unsampled": ["session"],
                  "rule_packets": ["session", "direction", "rule"],
                  "rule_bytes": ["session", "direction", "rule"],
                  "member_packets": ["session", "member"], "member_bytes": ["session", "member"]}
        families = {name: CounterMetricFamily(f"sdnagent_{name}", _HELP[name],
                                              labels=labels.get(name, ["session", "source"]))
                    for name in _HELP}
        capped = GaugeMetricFamily("sdnagent_session_capped", "1 while this session's caps "
                                   "are dropping copies on this chassis.", labels=["session"])
        for session, counters in sorted(values.items()):
            for key, value in sorted(counters.items()):
                words = key.split(" ")
                if key == "capped":
                    capped.add_metric([session], value)
                elif len(words) == 1:
                    families[f"session_{words[0]}"].add_metric([session], value)
                elif words[0] == "rule":
                    families[f"rule_{words[3]}"].add_metric([session, words[1], words[2]], value)
                elif words[0] == "source":
                    families[_SOURCE_KINDS[words[2]]].add_metric([session, words[1]], value)
                elif words[0] == "member":
                    families[f"member_{words[2]}"].add_metric([session, words[1]], value)
        yield from families.values()
        yield capped


class Metrics:
    """What the loop reports; cheap to call with no endpoint."""

    def __init__(self) -> None:
        disable_created_metrics()  # a *_created series per counter says nothing here
        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter("sdnagent_passes", "Reconcile passes that ran, by outcome.",
                              ["outcome"], registry=r)
        self.pass_seconds = Histogram(
            "sdnagent_pass_duration_seconds", "How long a reconcile pass took.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.flows = Gauge("sdnagent_flows_installed", "Flows the agent holds on brtap.",
                           registry=r)
        self.flow_mods = Counter("sdnagent_flow_mods", "Flow changes sent to brtap.",
                                 ["kind"], registry=r)
        self.errors = Counter("sdnagent_errors", "Failures, by what failed.", ["kind"],
                              registry=r)
        self.connected = Gauge("sdnagent_connected", "1 while connected to tapdb, the local "
                               "OVSDB, the switch's OpenFlow.", ["peer"], registry=r)
        self.mirrored = _Mirrored()
        r.register(self.mirrored)
        for outcome in ("applied", "unchanged", "failed"):
            self.passes.labels(outcome)
        for kind in ("add", "delete"):
            self.flow_mods.labels(kind)
        for peer in ("tapdb", "ovsdb", "openflow"):
            self.connected.labels(peer).set(0)
        self._server: Optional[Any] = None

    def serve(self, address: str, port: int) -> None:
        """Answer http://ADDRESS:PORT/metrics from a thread of its own."""
        self._server, _ = start_http_server(port, addr=address, registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
