"""What the tapdb client and the local switch share: an ovsdbapp backend
with its own connection, and transactions given as plain functions."""
from __future__ import annotations

from typing import Any, Callable, Optional

from ovsdbapp import api as ovsdbapp_api
from ovsdbapp.backend import ovs_idl
from ovsdbapp.backend.ovs_idl import command, connection


class NotifyingIdl(connection.OvsdbIdl):
    """An IDL that calls ``on_change(table_name)`` for every row change it receives."""

    on_change: Optional[Callable[[str], None]] = None

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if self.on_change is not None:
            self.on_change(row._table.name)


class FuncCommand(command.BaseCommand):
    """A command given as ``func(txn)``; its return value is the result."""

    def __init__(self, api: Any, func: Callable[[Any], Any], description: str):
        super().__init__(api)
        self.func = func
        self.description = description

    def run_idl(self, txn: Any) -> None:
        self.result = self.func(txn)

    def __str__(self) -> str:
        return self.description


class Backend(ovs_idl.Backend, ovsdbapp_api.API):
    """One connection per instance (ovsdbapp caches one per class by default)."""

    def __init__(self, conn: connection.Connection):
        self._conn = conn
        super().__init__(conn, start=True, auto_index=False)

    @property
    def ovsdb_connection(self) -> connection.Connection:
        return self._conn

    @ovsdb_connection.setter
    def ovsdb_connection(self, conn: connection.Connection) -> None:
        self._conn = conn

    def close(self) -> None:
        self._conn.stop(timeout=5)

    def run(self, func: Callable[[Any], Any], description: str) -> Any:
        """Run ``func(txn)`` in one transaction; errors raise."""
        return FuncCommand(self, func, description).execute(check_error=True, log_errors=False)

    def read(self, func: Callable[[Any], Any]) -> Any:
        """Call ``func(idl)`` while the IDL cannot change under it."""
        with self._conn.lock:
            return func(self.idl)
