"""A session's controls: parsing, the compiled sample and caps, meters, trace, counters."""
from __future__ import annotations

import dataclasses

import pytest

from sdnagent import controls, model, trace
from sdnagent.compile import compiler, counters, flows, pipeline
from sdnagent.compile.compiler import LocalPort
from sdnagent.switch import ofcodec
from tests.unit import oftable
from tests.unit.test_compile import _many_ports, _many_sources_intent, compile_all, entry, \
    inventory

NOW = 1_800_000_000_000  # ms


# ------------------------------------------------------------ words


@pytest.mark.parametrize("text, want", [("1/4", 4), ("1/ 65536", 65536), ("1/1", None),
                                        ("none", None), ("NONE", None)])
def test_sample_words(text, want):
    assert controls.parse_sample(text) == want


@pytest.mark.parametrize("text, error", [
    ("4", "sample: '4' is not allowed; give 1/N, one connection in N, with N from 1 to 65536, "
          "or none"),
    ("2/4", "sample: '2/4' is not allowed; give 1/N"),
    ("1/0", "sample: 0 is out of range; allowed 1..65536"),
    ("1/65537", "sample: 65537 is out of range; allowed 1..65536"),
    ("1/x", "sample: 'x' is not an integer; allowed 1..65536")])
def test_bad_samples_name_the_field_and_what_is_allowed(text, error):
    with pytest.raises(model.IntentError) as exc:
        controls.parse_sample(text)
    assert str(exc.value).startswith(error)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("2h", 7200),
                                           ("1d", 86400), ("1h30m", 5400), ("5", 5),
                                           ("366d", 366 * 86400)])
def test_durations(text, seconds):
    assert controls.parse_duration(text) == seconds * 1000


@pytest.mark.parametrize("text", ["10x", "0s", "367d", "", "m", "-5", "1.5h"])
def test_bad_durations(text):
    with pytest.raises(model.IntentError, match="^duration: "):
        controls.parse_duration(text)


def test_until_is_absolute_utc_unless_it_has_an_offset_and_in_the_future():
    assert controls.parse_until("2027-01-15T08:00:01Z", NOW) == NOW + 1000
    assert (controls.parse_until("2027-01-15 10:00:00+01:00", NOW)
            == controls.parse_until("2027-01-15T09:00:00", NOW) == NOW + 3_600_000)
    with pytest.raises(model.IntentError, match=r"^until: '2020-01-01' is in the past"):
        controls.parse_until("2020-01-01", NOW)
    with pytest.raises(model.IntentError, match="more than 366 days ahead"):
        controls.parse_until("2029-01-01", NOW)
    with pytest.raises(model.IntentError, match="^until: 'tomorrow' is not a time; give ISO 8601"):
        controls.parse_until("tomorrow", NOW)


def test_caps_and_session_set():
    s = model.Session("s", 1, 1, "t", enabled=True)
    s = controls.changed(s, controls.Change(max_pps="100", sample="1/4", duration="10m"), NOW)
    assert (s.max_pps, s.max_kbps, s.sample, s.ends_at) == (100, None, 4, NOW + 600_000)
    assert controls.describe(s, NOW + 1000) == [
        "capped at 100 packets/s per chassis", "sampling 1 connection in 4",
        "ends in 9m 59s (at 2027-01-15 08:10:00 UTC)"]
    s = controls.changed(s, controls.Change(max_pps="none", max_kbps="5000", no_end=True), NOW)
    assert (s.max_pps, s.max_kbps, s.sample, s.ends_at) == (None, 5000, 4, 0)
    with pytest.raises(model.IntentError, match="^session: nothing to change"):
        controls.changed(s, controls.Change(), NOW)
    with pytest.raises(model.IntentError, match=r"^max-pps: 0 is out of range; allowed "
                                                r"1\.\.100000000"):
        controls.changed(s, controls.Change(max_pps="0"), NOW)
    with pytest.raises(model.IntentError, match="^no-end: give --no-end alone"):
        controls.changed(s, controls.Change(no_end=True, duration="5m"), NOW)
    with pytest.raises(model.IntentError, match="^duration: give --duration or --until, not both"):
        controls.changed(s, controls.Change(duration="5m", until="2027-01-16"), NOW)


def test_an_ended_session_needs_a_new_end_to_be_enabled_and_its_new_end_clears_the_reason():
    s = model.Session("s", 1, 1, "t", ends_at=NOW - 5, stop_reason=controls.end_reason(NOW - 5))
    with pytest.raises(model.IntentError, match=r"^session: session 's' ended at 2027-01-15 "
                                                r"07:59:59 UTC; give it a new end first"):
        controls.check_enable(s, NOW)
    assert controls.describe(s, NOW) == ["stopped: its time ended at 2027-01-15 07:59:59 UTC"]
    again = controls.changed(s, controls.Change(duration="1h"), NOW)
    controls.check_enable(again, NOW)
    assert again.stop_reason is None and again.ends_at == NOW + 3_600_000


# ------------------------------------------------------------ the data plane


def _controlled(**controls_):
    flt = model.Filter("wide")
    everything = [model.new_rule(flt, d, priority="1", action="accept", protocol="all")
                  for d in model.RULE_DIRECTIONS]
    intent = _many_sources_intent(everything[:1], everything[1:], n_sources=2,
                                  direction="both")
    sess = dataclasses.replace(intent.sessions["s"], **controls_)
    intent = model.Intent.of(intent.targets.values(), intent.filters.values(), [sess])
    inv = inventory(ports={**_many_ports(2), "vm-t": LocalPort("vm-t", "brtap", "tgt", 9)})
    return intent, compile_all(intent, inv)


def _tcp(i: int, reverse: bool = False) -> dict:
    a, b = f"10.1.{i // 250}.{i % 250 + 1}", "192.168.0.230"
    sport, dport = 20000 + i, 80
    if reverse:
        a, b, sport, dport = b, a, dport, sport
    return {"eth_type": 0x0800, "ipv4_src": a, "ipv4_dst": b, "ip_proto": 6,
            "tcp_src": sport, "tcp_dst": dport}


def test_a_session_without_controls_goes_from_its_filter_to_forward_as_before():
    intent, (plan, ofports, table) = _controlled()
    assert not [f for f in table if f.table in (16, 17, 18) and f.priority]
    assert not [f for f in table if any(a[0] == "meter" for a in f.actions)]
    session = [f for f in table if f.cookie == flows.cookie("rule", "s/inbound/1")]
    assert session and all(f.actions[-1] == ("goto", pipeline.table("forward").id)
                           for f in session)
    assert compiler.plan_meters(intent, plan) == frozenset()


def test_sampling_keeps_whole_connections_about_one_in_n():
    """400 connections through a session sampling 1/4: each connection's two directions
    (a source port's in and out) are mirrored alike, 50 to 150 of them, and what is left
    out hits the session's unsampled flow (counted)."""
    intent, (plan, ofports, table) = _controlled(sample=4)
    ports = _many_ports(2)
    kept = 0
    for i in range(400):
        hits: list = []
        there = oftable.run(table, {**entry(plan, ofports, ports, "vm-1", "out"), **_tcp(i)},
                            hits)
        back = oftable.run(table, {**entry(plan, ofports, ports, "vm-1", "in"),
                                   **_tcp(i, reverse=True)})
        assert bool(there) == bool(back), i
        kept += bool(there)
        assert (flows.cookie("unsampled", "s") in {f.cookie for f in hits}) == (not there)
        # the trace says the same of it
        share = trace.sample_share(intent.sessions["s"], trace.parse_packet(
            "tcp,nw_src={ipv4_src},nw_dst={ipv4_dst},tp_src={tcp_src},tp_dst={tcp_dst}".format(
                **_tcp(i))))
        assert (share == 0) == bool(there)
    assert 50 <= kept <= 150, kept


def test_caps_are_meters_a_copy_passes_on_its_way_to_forward():
    intent, (plan, ofports, table) = _controlled(max_pps=100, max_kbps=2000, sample=2)
    guard = flows.Meter(compiler.GUARD_METER, False, compiler.GUARD_RATE)
    assert compiler.plan_meters(intent, plan) == {flows.Meter(1, False, 100),
                                                   flows.Meter(1 + 32768, True, 2000), guard}
    ports = _many_ports(2)
    for i in range(40):
        hits: list = []
        if not oftable.run(table, {**entry(plan, ofports, ports, "vm-2", "in"), **_tcp(i)},
                           hits):
            continue
        metered = [a[1] for f in hits for a in f.actions if a[0] == "meter"]
        # the guard first, in brtap's first flow: OVS then clones what brtap does
        assert metered == [compiler.GUARD_METER, 1, 1 + 32768]
        assert hits[0].table == 0 and hits[0].actions[0] == ("meter", compiler.GUARD_METER)
        assert [pipeline.TABLES[[t.id for t in pipeline.TABLES].index(f.table)].name
                for f in hits][-5:] == [pipeline.FILTER_TABLES[0], "sample",
                                        "limit_pps", "limit_kbps", "forward"]
        break
    else:
        raise AssertionError("no connection was sampled")


def test_only_a_packet_rate_cap_goes_through_limit_pps_only():
    intent, (plan, ofports, table) = _controlled(max_pps=7)
    ports = _many_ports(2)
    hits: list = []
    assert oftable.run(table, {**entry(plan, ofports, ports, "vm-1", "in"), **_tcp(1)}, hits)
    assert [f.table for f in hits][-2:] == [17, 20]
    assert compiler.plan_meters(intent, plan) == {
        flows.Meter(1, False, 7), flows.Meter(compiler.GUARD_METER, False, compiler.GUARD_RATE)}


def test_meters_diff_and_codec():
    installed = {1: flows.Meter(1, False, 100), 2: flows.Meter(2, True, 5),
                 3: flows.Meter(3, False, 1)}
    change = flows.diff_meters(installed, frozenset({flows.Meter(1, False, 100),
                                                     flows.Meter(2, True, 6),
                                                     flows.Meter(4, False, 9)}))
    assert change.put == (flows.Meter(2, True, 6), flows.Meter(4, False, 9))
    assert change.delete == (3,)
    assert not flows.diff_meters(installed, frozenset(installed.values()))
    actions = (("meter", 7), ("set_field", "reg0", 3), ("goto", 20))
    blob = ofcodec.encode_instructions(actions)
    assert blob[:8] == bytes.fromhex("0006000800000007")  # the meter instruction first
    assert ofcodec._read_instructions(blob) == actions
    assert ofcodec._read_instructions(ofcodec.encode_instructions((("meter", 9), ("goto", 18)))
                                      ) == (("meter", 9), ("goto", 18))


def test_counters_of_caps_and_samples():
    intent, (plan, ofports, table) = _controlled(max_pps=10, max_kbps=20, sample=3)
    cp = counters.plan_counters(intent, plan)
    assert cp.meters == {"s": (1, 1 + 32768)}
    got = counters.counters(cp, {flows.cookie("unsampled", "s"): (12, 1200),
                                 flows.cookie("forward", "s"): (20, 2000)},
                            {1: (5, 500), 1 + 32768: (2, 200), 99: (1000, 1)})["s"]
    # OVS credits the forward flow with what the meters dropped after it too
    assert (got["dropped"], got["unsampled"], got["packets"], got["bytes"]) == (7, 12, 13, 1300)
    # what meters since changed (OVS counts them from zero again) had dropped is kept
    got = counters.counters(cp, {flows.cookie("forward", "s"): (20, 2000)}, {1: (1, 100)},
                            {"s": (4, 400)})["s"]
    assert (got["dropped"], got["packets"], got["bytes"]) == (5, 15, 1500)


def test_trace_says_a_connection_is_not_sampled_and_names_the_caps():
    from tests.unit.test_model import example
    intent = example()
    sess = dataclasses.replace(intent.sessions["session-01"], sample=4, max_pps=50)
    intent = model.Intent.of(intent.targets.values(), intent.filters.values(),
                             [sess, *(s for s in intent.sessions.values() if s is not sess
                                      and s.name != "session-01")])
    bindings = {"vm-230": ("host-a",), "vm-164": ("host-b",)}
    chassis = {"host-a": ("10.255.0.1", "vxlan"), "host-b": ("10.255.0.2", "vxlan")}
    outcomes = set()
    for sport in range(40000, 40040):
        packet = f"tcp,nw_src=192.168.0.161,nw_dst=192.168.0.230,tp_src={sport},tp_dst=1234"
        text = trace.describe(intent, "vm-230", "in", packet, bindings, chassis)
        share = trace.sample_share(sess, trace.parse_packet(packet))
        if share:
            assert (f"not mirrored: session-01 accepts it, but it samples 1 connection in 4 "
                    f"(share 0) and this connection hashes to share {share}") in text
        else:
            assert "mirrored by session-01: " in text
            assert ("  session-01 is capped at 50 packets/s per chassis; sampling 1 connection "
                    "in 4: copies over a cap are dropped") in text
        outcomes.add(bool(share))
    assert outcomes == {True, False}


# ------------------------------------------------------------ the session clock


def test_the_session_clock_wakes_for_the_earliest_end_of_an_enabled_session():
    from sdnagent.tapdb import clock
    ends: dict = {}
    clock.merge(ends, {"Mirror_Session": {
        "u1": {"new": {"enabled": True, "ends_at": NOW + 5000}},
        "u2": {"new": {"enabled": False, "ends_at": NOW + 1000}},  # off: nothing to stop
        "u3": {"new": {"enabled": True, "ends_at": 0}}}})  # no end
    assert clock.next_end(ends) == NOW + 5000
    assert not clock.due(ends, NOW + 4999) and clock.due(ends, NOW + 5000)
    # an update carries only what changed; a deleted row goes
    clock.merge(ends, {"Mirror_Session": {"u3": {"new": {"ends_at": NOW + 10},
                                                 "old": {"ends_at": 0}},
                                          "u1": {"old": {"enabled": True}}}})
    assert ends == {"u2": (False, NOW + 1000), "u3": (True, NOW + 10)}
    assert clock.next_end(ends) == NOW + 10
    clock.merge(ends, {"Mirror_Session": {"u3": {"new": {"enabled": False},
                                                 "old": {"enabled": True}}}})
    assert clock.next_end(ends) is None
