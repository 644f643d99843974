"""The packaged Tap schema: where it lives and which version it is."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

NAME = "Tap"
DEFAULT_DIR = Path("/var/lib/sdnagent/tapdb")  # where sdnagent-tapdb keeps the database
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "tap.ovsschema"


@lru_cache(maxsize=1)
def load() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def version() -> str:
    return load()["version"]


def initial_transaction() -> list:
    """What a new database holds: the one Tap_Global row writers serialise on."""
    return [NAME, {"op": "insert", "table": "Tap_Global", "row": {"generation": 0}}]


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))
