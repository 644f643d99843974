"""The bounds of what a chassis may write, as the packaged schema states them."""
from __future__ import annotations

from sdnagent.tapdb import schema


def test_every_column_a_chassis_may_write_is_bounded():
    tables = schema.load()["tables"]
    for table, (auth, update) in schema.CHASSIS_PERMISSIONS.items():
        columns = tables[table]["columns"]
        # an agent inserts whole rows: every column of its tables counts, not only updates
        for name, spec in columns.items():
            kind = spec["type"]
            assert not isinstance(kind, str) or kind in ("integer", "boolean"), (table, name)
            if isinstance(kind, str):
                continue
            assert kind.get("max", 1) != "unlimited", (table, name)
            for part in ("key", "value"):
                base = kind.get(part)
                if base == "string" or (isinstance(base, dict) and base["type"] == "string"):
                    assert isinstance(base, dict) and ("maxLength" in base or "enum" in base), (
                        table, name, part)
        assert "external_ids" not in update, table


def test_over_bounds_names_the_columns():
    assert schema.over_bounds("Chassis", {"name": "hv-1", "tunnel_ip": "10.0.0.1"}) == []
    assert schema.over_bounds("Chassis", {"name": "h" * 254, "tunnel_ip": "x" * 46}) == [
        "name", "tunnel_ip"]
    assert schema.over_bounds("Source_Status", {
        "status": ["map", [[f"k{i}", "v"] for i in range(17)]]}) == ["status"]
    assert schema.over_bounds("Source_Status", {
        "status": ["map", [["reason", "r" * 2049]]]}) == ["status"]
    assert schema.over_bounds("Source_Status", {"status": ["map", [["k" * 33, "v"]]]}) == [
        "status"]
    assert schema.over_bounds("Session_Stats", {
        "counters": ["map", [[f"k{i}", i] for i in range(128)]]}) == []


def test_pruning_deletes_rows_and_empties_external_ids():
    found = {"Chassis": [{"_uuid": ["uuid", "a"], "name": "hv-1",
                          "external_ids": ["map", [["k", "v" * 2000]]]},
                         {"_uuid": ["uuid", "b"], "name": "h" * 300,
                          "external_ids": ["map", []]}],
             "Binding": [{"_uuid": ["uuid", "c"], "iface_id": "vm-1", "chassis": "hv-1"}]}
    ops, count = schema.pruning_transaction(found)
    assert count == 2
    assert ops == [{"op": "update", "table": "Chassis", "where": [["_uuid", "==", ["uuid", "a"]]],
                    "row": {"external_ids": ["map", []]}},
                   {"op": "delete", "table": "Chassis", "where": [["_uuid", "==", ["uuid", "b"]]]}]
