"""The API's resources as typed models: what it takes and what it answers (the OpenAPI
document is derived from them).  Values are strings where tapctl takes strings, so that
the service layer judges them once, with tapctl's words."""
from __future__ import annotations

from typing import Any, Generic, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from sdnagent import controls, model

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 400 naming it


class Status(BaseModel):
    state: str = Field(description="active, disabled, pending, error or stale")
    reason: Optional[str] = None
    chassis: Optional[str] = Field(None, description="the chassis that wrote it")


class TargetIn(_In):
    """A new mirror target: exactly one of port, nic, vxlan, erspan, group."""

    name: str
    port: Optional[str] = Field(None, description="a VM vNIC, by its iface-id")
    nic: Optional[str] = Field(None, description="a host NIC: CHASSIS:IFNAME")
    vxlan: Optional[str] = Field(None, description="a collector's IP, by VXLAN")
    erspan: Optional[str] = Field(None, description="a collector's IP, by ERSPAN")
    group: Optional[str] = Field(None, description="collectors' IPs, comma-separated")
    encap: Optional[str] = Field(None, description="a group's: vxlan, gre or erspan")
    version: Optional[str] = Field(None, description="ERSPAN version: 1 (type II) or 2")
    index: Optional[str] = Field(None, description="ERSPAN type II index")
    hardware_id: Optional[str] = Field(None, description="ERSPAN type III hardware ID")
    enabled: bool = False


class Target(BaseModel):
    name: str
    project: str
    type: str
    where: str = Field(description="where it is, in words")
    tunnel_key: int
    enabled: bool
    iface_id: Optional[str] = None
    chassis: Optional[str] = None
    nic: Optional[str] = None
    remote_ip: Optional[str] = None
    options: dict[str, str] = {}
    members: dict[str, str] = Field({}, description="a group's: address -> enabled/disabled")
    status: Optional[Status] = Field(None, description="none for a collector no chassis hosts")


class MemberIn(_In):
    ip: str


class Enabled(_In):
    enabled: bool


class RuleIn(_In):
    direction: Literal["inbound", "outbound"]
    priority: str = Field(description="1..16777216, 1 is evaluated first")
    action: str = Field(description="accept or reject")
    protocol: str = "all"
    ethertype: Optional[str] = None
    src: Optional[str] = None
    dst: Optional[str] = None
    src_port: Optional[str] = None
    dst_port: Optional[str] = None


class Rule(BaseModel):
    direction: str
    priority: int
    action: str
    protocol: str
    ethertype: str
    src: Optional[str] = None
    dst: Optional[str] = None
    src_port: Optional[str] = None
    dst_port: Optional[str] = None


class FilterIn(_In):
    name: str


class Filter(BaseModel):
    name: str
    project: str
    rules: list[Rule]


class SourceIn(_In):
    """A source: a port (with a direction) or a vswitch CHASSIS:BRIDGE[:VLAN]."""

    port: Optional[str] = None
    direction: Optional[str] = None
    vswitch: Optional[str] = None


class Source(BaseModel):
    key: str = Field(description="how the session names it: the iface-id, or the vswitch")
    type: str
    direction: str
    enabled: bool
    status: Status


class SessionIn(_In):
    name: str
    target: str
    priority: str = Field(description="1..32766, unique; 1 is judged first")
    filter: Optional[str] = None
    vni: Optional[str] = Field(None, description="default: the lowest unused from 1")
    packet_length: Optional[str] = Field(None, description="truncate copies to 64..8500 bytes")
    enabled: bool = False
    max_pps: Optional[str] = Field(None, description="at most N copies per second on each "
                                   "chassis; the rest are dropped and counted")
    max_kbps: Optional[str] = Field(None, description="at most N kbit/s of copies on each "
                                    "chassis; the rest are dropped and counted")
    sample: Optional[str] = Field(None, description="1/N: mirror about one connection in N, "
                                  "each whole in both directions")
    duration: Optional[str] = Field(None, description="disable the session this long from now: "
                                    "90s, 10m, 2h, 1d")
    until: Optional[str] = Field(None, description="disable the session at this time (ISO "
                                 "8601, UTC unless it has an offset)")

    def change(self) -> controls.Change:
        return controls.Change(self.max_pps, self.max_kbps, self.sample, self.duration,
                               self.until)


class SessionPatch(_In):
    """What a PATCH of a session may change, in one transaction: give only what changes;
    a cap or the sample is removed with "none"."""

    enabled: Optional[bool] = None
    max_pps: Optional[str] = None
    max_kbps: Optional[str] = None
    sample: Optional[str] = None
    duration: Optional[str] = None
    until: Optional[str] = None
    no_end: bool = Field(False, description="remove the session's end")

    def change(self) -> controls.Change:
        return controls.Change(self.max_pps, self.max_kbps, self.sample, self.duration,
                               self.until, self.no_end)


class Session(BaseModel):
    name: str
    project: str
    priority: int
    vni: int
    target: str
    filter: Optional[str] = None
    packet_length: Optional[int] = None
    enabled: bool
    max_pps: Optional[int] = None
    max_kbps: Optional[int] = None
    sample: Optional[int] = Field(None, description="one connection in N is mirrored")
    ends_at: Optional[str] = Field(None, description="when the session stops (ISO 8601)")
    stop_reason: Optional[str] = Field(None, description="why the session clock stopped it")
    state: str = Field(description="its sources' worst state: error, stale, pending, "
                                   "disabled, active; none without a source")
    sources: list[Source]
    counters: dict[str, int] = Field({}, description="added up over the chassis")


class Registration(_In):
    """A port (by iface-id) registered to a project: its members may mirror it and send
    copies to it."""

    iface_id: str
    project: str


class QuotasIn(_In):
    sessions: Optional[str] = None
    targets: Optional[str] = None
    filters: Optional[str] = None


class Project(BaseModel):
    name: str
    quotas: dict[str, int] = Field(description="what it may have of each")
    usage: dict[str, int] = Field(description="what it has")


class Late(BaseModel):
    chassis: str
    at: int = Field(description="the generation it has applied")
    why: Optional[str] = Field(None, description="why it no longer counts (silent...)")


class Applied(BaseModel):
    """With ``wait=true``: whether every chassis alive when the wait began applied it."""

    generation: int
    complete: bool
    late: list[Late] = []


class Written(BaseModel, Generic[T]):
    """What a change made, what it calls for a person to know, and (``wait``) where it
    was applied."""

    item: Optional[T] = None
    warnings: list[str] = []
    applied: Optional[Applied] = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="how many match, over all pages")
    offset: int
    limit: int


class Chassis(BaseModel):
    name: str
    tunnel_ip: str
    encap: str
    tunnel_mtu: Optional[int] = None
    state: str = Field(description="alive, silent or clock ahead")
    last_heard: Optional[int] = Field(None, description="seconds ago")
    reason: Optional[str] = None


class Stats(BaseModel):
    session: str
    counters: dict[str, int]
    by_chassis: dict[str, dict[str, int]]


class TraceIn(_In):
    port: str
    direction: str = Field(description="in (to the VM) or out (from it)")
    packet: str = Field(description="in ovs-ofctl syntax: tcp,nw_src=...,tp_dst=1234")


class TraceOut(BaseModel):
    lines: list[str]


class AuditRecord(BaseModel):
    time: str
    who: str
    role: str
    method: str
    path: str
    query: Optional[str] = None
    request: Any = Field(None, description="the body asked for (JSON), as sent")
    status: int
    outcome: str


class Error(BaseModel):
    field: Optional[str] = None
    message: str


def status_of(pairs: tuple[tuple[str, str], ...]) -> Optional[Status]:
    st = dict(pairs)
    if not st:
        return None
    return Status(state=st.get("state", "pending"), reason=st.get("reason"),
                  chassis=st.get("chassis"))


def target_of(t: model.Target) -> Target:
    kind = t.kind
    members = {m: dict(t.options).get(f"member:{m}", "") for m in kind.members(t)}
    return Target(name=t.name, project=t.project, type=t.type, where=t.where(), tunnel_key=t.tunnel_key,
                  enabled=t.enabled, iface_id=t.iface_id, chassis=t.chassis, nic=t.nic,
                  remote_ip=t.remote_ip, options=dict(t.options), members=members,
                  status=(status_of(t.status) or Status(state="pending"))
                  if kind.has_status else None)


def rule_of(direction: str, r: model.Rule) -> Rule:
    def rng(p: Optional[model.PortRange]) -> Optional[str]:
        return None if p is None else str(p)
    return Rule(direction=direction, priority=r.priority, action=r.action,
                protocol=model.protocol_name(r.protocol), ethertype=r.ethertype, src=r.src,
                dst=r.dst, src_port=rng(r.src_port), dst_port=rng(r.dst_port))


def filter_of(f: model.Filter) -> Filter:
    return Filter(name=f.name, project=f.project, rules=[rule_of(d, r) for d in model.RULE_DIRECTIONS
                                      for r in f.rules(d)])


SEVERITY = ("error", "stale", "pending", "disabled", "active")


def session_of(s: model.Session, counters: dict[str, int]) -> Session:
    sources = [Source(key=src.key, type=src.type, direction=src.direction, enabled=src.enabled,
                      status=status_of(src.status) or Status(state="pending"))
               for src in s.sources]
    states = {src.status.state for src in sources}
    state = next((st for st in SEVERITY if st in states), "none")
    return Session(name=s.name, project=s.project, priority=s.priority, vni=s.vni, target=s.target,
                   filter=s.filter, packet_length=s.packet_length, enabled=s.enabled,
                   max_pps=s.max_pps, max_kbps=s.max_kbps, sample=s.sample,
                   ends_at=controls.iso(s.ends_at) if s.ends_at else None,
                   stop_reason=s.stop_reason, state=state, sources=sources, counters=counters)
