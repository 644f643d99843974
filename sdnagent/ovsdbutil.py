"""What the tapdb client and the local switch share: an ovsdbapp backend
with its own connection, and transactions given as plain functions."""
from __future__ import annotations

import errno
import os
from typing import Any, Callable, Optional

import ovs.poller
import ovs.timeval
from ovs import jsonrpc, stream
from ovsdbapp import api as ovsdbapp_api
from ovsdbapp.backend import ovs_idl
from ovsdbapp.backend.ovs_idl import command, connection, idlutils
from ovsdbapp.backend.ovs_idl import transaction as ovs_transaction


class FetchError(RuntimeError):
    """No remote answered with the schema in time; the text says why, per remote."""


def schema_helper(remote: str, schema_name: str, timeout: float) -> Any:
    """The schema from the first of ``remote``'s members that serves it within ``timeout``.

    ovsdbapp's own fetch blocks forever on an endpoint that accepts the
    connection but never speaks OVSDB; here every step has a deadline.
    """
    problems = []
    for member in idlutils.parse_connection(remote):
        try:
            return idlutils.create_schema_helper(_fetch(member, schema_name, timeout))
        except FetchError as exc:
            problems.append(f"{member}: {exc}")
    raise FetchError("; ".join(problems))


def _fetch(member: str, schema_name: str, timeout: float) -> Any:
    deadline = ovs.timeval.msec() + int(timeout * 1000)
    err, strm = stream.Stream.open_block(stream.Stream.open(member), int(timeout * 1000))
    if err:
        raise FetchError(os.strerror(err) if err != errno.ETIMEDOUT else
                         f"no connection within {timeout:g} s")
    rpc = jsonrpc.Connection(strm)
    try:
        request = jsonrpc.Message.create_request("get_schema", [schema_name])
        err = rpc.send(request)
        while not err:
            rpc.run()
            err, msg = rpc.recv()
            if err == errno.EAGAIN:
                err = 0
                if ovs.timeval.msec() >= deadline:
                    raise FetchError(f"no OVSDB answer within {timeout:g} s")
                poller = ovs.poller.Poller()
                rpc.wait(poller)
                rpc.recv_wait(poller)
                poller.timer_wait_until(deadline)
                poller.block()
                continue
            if err:
                break
            if msg.type in (jsonrpc.Message.T_REPLY, jsonrpc.Message.T_ERROR) and \
                    msg.id == request.id:
                if msg.error:
                    raise FetchError(f"the server has no database {schema_name} ({msg.error})")
                return msg.result
        raise FetchError(os.strerror(err) if err > 0 else "connection closed")
    finally:
        rpc.close()


class NotifyingIdl(connection.OvsdbIdl):
    """An IDL that calls ``on_change(table_name)`` for every row change it receives, and
    ``on_row(table_name, event, row)`` (under the connection lock) for those that
    keep a cache of what they read."""

    on_change: Optional[Callable[[str], None]] = None
    on_row: Optional[Callable[[str, str, Any], None]] = None

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if self.on_row is not None:
            self.on_row(row._table.name, event, row)
        if self.on_change is not None:
            self.on_change(row._table.name)

    def is_connected(self) -> bool:
        """Whether the session to the server is up now (the IDL keeps it private)."""
        return bool(self._session.is_connected())


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

    def run(self, func: Callable[[Any], Any], description: str,
            timeout: Optional[float] = None) -> Any:
        """Run ``func(txn)`` in one transaction; errors raise.  ``timeout``: the seconds
        it may take, when less than the connection's."""
        return FuncCommand(self, func, description).execute(check_error=True, log_errors=False,
                                                            timeout=timeout)

    def create_transaction(self, check_error: bool = False, log_errors: bool = True,
                           timeout: Optional[float] = None, **kwargs: Any) -> Any:
        return ovs_transaction.Transaction(self, self.ovsdb_connection,
                                           timeout or self.ovsdb_connection.timeout,
                                           check_error, log_errors)

    def wake(self) -> None:
        """Make the connection thread run the IDL now (to send a changed condition).

        Through the transaction queue, with an empty transaction: a bare
        ``alert_notify`` leaves a byte in the queue's alert pipe that only a
        dequeued transaction consumes, and the thread then spins on it forever.
        """
        self.run(lambda txn: None, "wake the IDL")

    def read(self, func: Callable[[Any], Any]) -> Any:
        """Call ``func(idl)`` while the IDL cannot change under it."""
        with self._conn.lock:
            return func(self.idl)
