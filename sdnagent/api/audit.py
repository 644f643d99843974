"""The audit trail: every write the API was asked for, accepted or refused, one JSON
object a line, appended to a file an operator can ship (and admins read back)."""
from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._file = os.fdopen(fd, "a", buffering=1)  # a line at a time

    def write(self, **record: Any) -> None:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", **record}
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            os.fsync(self._file.fileno())

    def tail(self, limit: int) -> list[dict]:
        """The latest ``limit`` records, oldest first."""
        with self._lock, open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in deque(f, maxlen=limit) if line.strip()]

    def close(self) -> None:
        self._file.close()
