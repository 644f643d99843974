"""A small OVSDB JSON-RPC client (RFC 7047) on a plain socket, for tapctl.

An operator's command must not pay for what a long-running client needs: the
ovs library's IDL (which imports eventlet), a monitor of the whole database,
a connection thread.  tapctl sends a few transactions and is done, so this
speaks the protocol directly: one request at a time, echo answered, every
wait bounded by the timeout.  Cluster remotes are tried in turn and the
leader is used, so reads are never stale.
"""
from __future__ import annotations

import codecs
import json
import select
import socket
import time
from typing import Any, Optional

from sdnagent import tls
from sdnagent.tapdb import schema


class RpcError(RuntimeError):
    """tapdb cannot be reached, or answered with an error."""


class RpcTimeout(RpcError):
    """No answer in time."""


class RpcRefused(RpcError):
    """The server answered a request with an error."""


class Connection:
    def __init__(self, sock: socket.socket, remote: str, timeout: float):
        self.sock = sock
        self.remote = remote
        self.timeout = timeout
        self._pending: list[str] = []  # text received and not yet decoded
        self._size = 0
        self._tried = 0  # the length of the last text that did not decode
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._next_id = 0
        self._decoder = json.JSONDecoder()
        self.creds: Optional[tls.Tls] = None  # for ssl: what a refusal means
        self._heard = False  # whether the server has said anything yet

    def close(self) -> None:
        self.sock.close()

    def call(self, method: str, *params: Any) -> Any:
        """One request; its result, or RpcError with the server's error."""
        self._next_id += 1
        ident = self._next_id
        self._send({"method": method, "params": list(params), "id": ident})
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._receive(deadline)
            if msg.get("id") != ident:
                continue  # a monitor's update, or a stale answer
            if msg.get("error") is not None:
                raise RpcRefused(f"{method}: {msg['error']}")
            return msg.get("result")

    def next_message(self, deadline: float) -> Optional[dict]:
        """The next message the server sends (a monitor's update...), or None at
        ``deadline``."""
        try:
            return self._receive(deadline)
        except RpcTimeout:
            return None

    def transact(self, *ops: dict) -> list:
        """One OVSDB transaction on the Tap database; the results of its operations."""
        return self.call("transact", schema.NAME, *ops)

    def _send(self, msg: dict) -> None:
        try:
            self.sock.sendall(json.dumps(msg, separators=(",", ":")).encode())
        except OSError as exc:
            raise RpcError(self._refusal() or str(exc.strerror or exc)) from exc

    def _receive(self, deadline: float) -> dict:
        """The next message other than an echo request (those are answered)."""
        while True:
            if self._pending and self._worth_decoding():
                text = "".join(self._pending).lstrip()
                self._pending, self._size = [text], len(text)
                try:
                    msg, end = self._decoder.raw_decode(text)
                except json.JSONDecodeError:
                    self._tried = len(text)
                else:
                    rest = text[end:]
                    self._pending, self._size, self._tried = [rest] if rest else [], len(rest), 0
                    if msg.get("method") != "echo":
                        return msg
                    # the server checking that we live: answered here, whoever waits
                    self._send({"result": msg.get("params", []), "error": None,
                                "id": msg.get("id")})
                    continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise RpcTimeout(f"no OVSDB answer within {self.timeout:g} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError as exc:
                raise RpcError(self._refusal() or str(exc.strerror or exc)) from exc
            if not data:
                raise RpcError(self._refusal() or "the server closed the connection")
            self._heard = True
            piece = self._utf8.decode(data)
            if piece:
                self._pending.append(piece)
                self._size += len(piece)

    def _refusal(self) -> Optional[str]:
        """A TLS server that judges our certificate after the handshake (TLS 1.3) closes
        the connection before its first answer: say why, in one line."""
        if self.creds is None or self._heard:
            return None
        return tls.diagnose(self.remote, self.creds, self.timeout)

    def _worth_decoding(self) -> bool:
        """A large answer arrives in many pieces: try to decode what we have only when
        nothing more is waiting and it may be complete (it ends with "}"), or when it
        has doubled since the last try; never once per piece (that is quadratic)."""
        if self._size >= 2 * self._tried:
            return True
        if not self._pending[-1].rstrip().endswith("}"):
            return False
        pending = getattr(self.sock, "pending", None)  # a TLS socket's decrypted bytes
        if pending is not None and pending():
            return False
        return not select.select([self.sock], [], [], 0)[0]


def _open(remote: str, timeout: float, creds: Optional[tls.Tls]) -> Connection:
    kind, _, rest = remote.partition(":")
    try:
        if kind == "ssl":
            import ssl  # only when used: a plain socket does not pay for it
            if creds is None:
                raise RpcError("an ssl: remote needs a private key, a certificate and a CA "
                               "certificate")
            host, _, port = rest.rpartition(":")
            raw = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock: socket.socket = tls.client_context(creds).wrap_socket(raw)
            except (ssl.SSLError, ConnectionResetError) as exc:
                raw.close()
                raise RpcError(tls.refused(creds, exc)) from exc
            conn = Connection(sock, remote, timeout)
            conn.creds = creds
            return conn
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(rest)
            except FileNotFoundError:
                sock.close()
                raise RpcError("no such socket (is sdnagent-tapdb running?)") from None
        elif kind == "tcp":
            host, _, port = rest.rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            raise RpcError("unsupported connection method (use unix:PATH, ssl:IP:PORT or "
                           "tcp:IP:PORT)")
    except (OSError, ValueError) as exc:
        raise RpcError(getattr(exc, "strerror", None) or str(exc)) from exc
    return Connection(sock, remote, timeout)


def _is_leader(conn: Connection) -> bool:
    """Whether this member leads the Tap database (a standalone server always does)."""
    result = conn.call("transact", "_Server",
                       {"op": "select", "table": "Database",
                        "where": [["name", "==", schema.NAME]],
                        "columns": ["model", "leader", "connected"]})
    rows = result[0].get("rows", [])
    return bool(rows) and (rows[0]["model"] != "clustered"
                           or (rows[0]["leader"] is True and rows[0]["connected"] is True))


def connect(remote: str, timeout: float, creds: Optional[tls.Tls] = None) -> Connection:
    """A connection to ``remote``; with several (a cluster), to the leader, trying them
    in turn until one leads or ``timeout`` has passed: a leader being elected (a
    second or two after the last one died) is waited out, not reported.  ``creds``
    for ``ssl:`` remotes."""
    remotes = [r.strip() for r in remote.split(",") if r.strip()]
    if len(remotes) == 1:
        return _open(remotes[0], timeout, creds)
    if not remotes:
        raise RpcError("no remote given")
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        errors = []
        for one in remotes:
            left = deadline - time.monotonic()
            try:
                conn = _open(one, max(left, 0.5), creds)
            except RpcError as exc:
                errors.append(f"{one}: {exc}")
                continue
            try:
                if _is_leader(conn):
                    conn.timeout = timeout
                    return conn
                errors.append(f"{one}: not the leader")
            except RpcError as exc:
                errors.append(f"{one}: {exc}")
            conn.close()
        if time.monotonic() + pause >= deadline:
            raise RpcError("; ".join(errors) + f" (no leader within {timeout:g} s)")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def atoms(value: Any) -> list:
    """The atoms of a column's value as OVSDB writes it: ``["set", [...]]``, or the one
    atom alone (a string, a number, ``["uuid", "..."]``)."""
    return value[1] if isinstance(value, list) and value[0] == "set" else [value]


def schema_version(conn: Connection) -> Optional[str]:
    """The Tap schema version the server runs, or None when it has no Tap database."""
    try:
        return conn.call("get_schema", schema.NAME).get("version")
    except RpcRefused:
        return None
