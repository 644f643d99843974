"""Whether a change whose answer was lost landed: the tokens in Tap_Global.last_change."""
from __future__ import annotations

from sdnagent.tapdb import ops, schema

LIMIT = schema.load()["tables"]["Tap_Global"]["columns"]["last_change"]["type"]["key"]["maxLength"]


def test_the_history_keeps_the_newest_tokens_that_fit():
    tokens = [ops.new_token() for _ in range(20)]
    assert len(set(tokens)) == 20 and all(len(t) == 8 and " " not in t for t in tokens)
    last = None
    for t in tokens:
        last = ops.history(t, last)
        assert len(last) <= LIMIT
    kept = last.split()
    assert kept == tokens[::-1][:len(kept)] and len(kept) == (LIMIT + 1) // 9
    # a token of another length (an older writer's) is kept only while it fits
    assert ops.history("x" * 8, "y" * 60) == "x" * 8
    assert ops.history("x" * 8, "y" * 55) == "x" * 8 + " " + "y" * 55
    assert ops.history("x" * 8, None) == "x" * 8


def test_landed_knows_whenever_the_history_covers_the_changes_since():
    # ours was first after generation 5, two others came after it
    last_change = "other2 other1 mine old"
    assert ops.landed("mine", 5, 8, last_change) is True
    # not among the three since generation 5: another writer came first
    assert ops.landed("mine", 5, 8, "other3 other2 other1 old") is False
    assert ops.landed("mine", 5, 5, "old") is False
    # a token older than the read is not ours, whatever it says
    assert ops.landed("old", 5, 8, last_change) is False
    # more changes since than tokens kept: unknown, never guessed
    assert ops.landed("mine", 5, 9, "other3 other2 other1") is None
    assert ops.landed("mine", 5, 6, None) is None
