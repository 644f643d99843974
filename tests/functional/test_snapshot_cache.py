"""An agent's cached read of tapdb always equals a full read, through every kind of change."""
from __future__ import annotations

import time

from sdnagent.tapdb import client, ops
from tests.functional.test_tapctl import configure_example


def cached(api: client.TapdbApi) -> client.SnapshotCache:
    cache = client.SnapshotCache()
    with api.ovsdb_connection.lock:
        api.idl.on_row = cache.changed
    return cache


def settle(api: ops.IntentDb, reader: client.TapdbApi) -> None:
    """Wait until ``reader``'s IDL has what ``api`` committed last."""
    def generation(a):
        return a.read(lambda idl: [r.generation for r in idl.tables["Tap_Global"].rows.values()])
    deadline = time.monotonic() + 5
    while generation(reader) != [api.committed_generation]:
        assert time.monotonic() < deadline, "the reader never saw the change"
        time.sleep(0.01)


def same(reader: client.TapdbApi, cache: client.SnapshotCache) -> client.Snapshot:
    full, fast = reader.read(lambda idl: (client.read_snapshot(idl), cache.read(idl)))
    assert fast.intent == full.intent
    assert fast.rows.keys() == full.rows.keys()
    assert all(fast.rows[k] is full.rows[k] for k in full.rows)
    return fast


def test_cached_reads_follow_every_change(tapdb, api):
    reader = client.connect(tapdb.remote)
    try:
        cache = cached(reader)
        same(reader, cache)
        configure_example(tapdb)
        api.filter_add("filter-09")  # a change of ours, to know the generation
        settle(api, reader)
        first = same(reader, cache)
        assert len(first.intent.sessions) == 2
        steps = [
            lambda: api.rule_add("filter-01", "inbound", priority="5", action="reject",
                                 protocol="udp"),
            lambda: api.rule_del("filter-01", "inbound", "1"),
            lambda: api.set_enabled("session", "session-02", False),
            lambda: api.set_enabled("target", "target-02", False),
            lambda: api.source_add("session-02", port="vm-99", direction="out"),
            lambda: api.source_del("session-01", "vm-230"),
            lambda: api.target_add("target-03", vxlan="10.9.9.9"),
            lambda: api.session_add("session-03", target="target-03", priority="7",
                                    filter="filter-01"),
            lambda: api.delete("session", "session-02"),
            lambda: api.delete("target", "target-02"),
            lambda: api.filter_add("filter-03"),
        ]
        for step in steps:
            step()
            settle(api, reader)
            same(reader, cache)
        # a status written by an agent (in its own table: the intent read does not change),
        # and a row changed by another client in place
        snap = same(reader, cache)
        assert reader.write_status("host-a", snap, {}, {"target-01": {"state": "active",
                                                                      "chassis": "host-a"}}) == 1
        assert same(reader, cache).intent == snap.intent
        assert api.snapshot().intent.targets["target-01"].status == (
            ("chassis", "host-a"), ("state", "active"))
        rule = first.rows["rule", "filter-02", "inbound", 1]
        reader.run(lambda txn: setattr(reader.idl.tables["Filter_Rule"].rows[rule.uuid], "action",
                                       "reject"), "change a rule in place")
        deadline = time.monotonic() + 5
        while reader.read(lambda idl: idl.tables["Filter_Rule"].rows[rule.uuid].action) != "reject":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert same(reader, cache).intent.filters["filter-02"].inbound[0].action == "reject"
    finally:
        reader.close()


def test_a_narrowed_view_of_sources_is_followed(tapdb, api):
    """Sources entering and leaving an agent's monitoring condition."""
    configure_example(tapdb)
    reader = client.connect(tapdb.remote, chassis="host-a")
    try:
        cache = cached(reader)
        reader.watch("host-a", set(), set())
        deadline = time.monotonic() + 5
        while any(s.sources for s in same(reader, cache).intent.sessions.values()):
            assert time.monotonic() < deadline, "sources still in view"
            time.sleep(0.01)
        reader.watch("host-a", {"vm-230"}, set())
        deadline = time.monotonic() + 5
        while not all(s.sources for s in same(reader, cache).intent.sessions.values()):
            assert time.monotonic() < deadline, "sources never came into view"
            time.sleep(0.01)
    finally:
        reader.close()
