"""A connection lost in the middle of a command, as when a leader dies: between tapctl and a
real tapdb, a proxy on loopback drops a write before it reaches tapdb, or lets it through
and drops the answer, or holds every connection for a while; the command must make its
change exactly once, report no false error, and --wait must keep the chassis it waits for."""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Optional

import pytest

from sdnagent.cli import tapctl
from sdnagent.tapdb import client, ops

COMMIT = b'"op":"update","table":"Tap_Global"'  # a change's commit, as rpc writes it
DELETE = b'"op":"delete","table":"Chassis"'  # chassis-del's


class Proxy:
    """TCP on 127.0.0.1 to tapdb's unix socket.  ``cut(marker, lose)`` arms it for the
    first request holding ``marker``: lose "request" (never forwarded) or "answer"
    (forwarded, and tapdb's answer dropped); ``meanwhile()`` runs then, before that
    connection is closed.  ``watch(marker)`` tells when a request holding it passed.
    ``hold()`` closes every connection and refuses new ones until ``release()``."""

    def __init__(self, unix_path: str):
        self.path = unix_path
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.remote = f"tcp:127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.marker: Optional[bytes] = None
        self.lose = ""
        self.meanwhile: Callable[[], None] = lambda: None
        self.fired = threading.Event()
        self.held = False
        self.watches: list[tuple[bytes, threading.Event]] = []
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, marker: bytes, lose: str, meanwhile: Callable[[], None] = lambda: None) -> None:
        with self.lock:
            self.marker, self.lose, self.meanwhile = marker, lose, meanwhile

    def watch(self, marker: bytes) -> threading.Event:
        passed = threading.Event()
        with self.lock:
            self.watches.append((marker, passed))
        return passed

    def hold(self) -> None:
        with self.lock:
            self.held = True
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            self._close(pair)

    def release(self) -> None:
        with self.lock:
            self.held = False

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.hold()

    @staticmethod
    def _close(pair: tuple[socket.socket, socket.socket]) -> None:
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.held:
                    near.close()
                    continue
                far = socket.socket(socket.AF_UNIX)
                far.connect(self.path)
                pair = (near, far)
                self.pairs.append(pair)
            cutting = threading.Event()  # this connection's answer is to be dropped
            threading.Thread(target=self._up, args=(pair, cutting), daemon=True).start()
            threading.Thread(target=self._down, args=(pair, cutting), daemon=True).start()

    def _up(self, pair: tuple[socket.socket, socket.socket], cutting: threading.Event) -> None:
        near, far = pair
        seen = b""
        while True:
            try:
                data = near.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            seen = (seen + data)[-4096:]
            with self.lock:
                for marker, passed in self.watches:
                    if marker in seen:
                        passed.set()
                armed = self.marker is not None and self.marker in seen
                if armed:
                    self.marker = None
                    lose = self.lose
            if armed and lose == "request":
                self.meanwhile()
                self.fired.set()
                self._close(pair)
                return
            if armed:
                cutting.set()
            try:
                far.sendall(data)
            except OSError:
                return

    def _down(self, pair: tuple[socket.socket, socket.socket], cutting: threading.Event) -> None:
        near, far = pair
        while True:
            try:
                data = far.recv(1 << 16)
            except OSError:
                return
            if not data:
                self._close(pair)
                return
            if cutting.is_set():  # tapdb answered the write: the answer is lost
                self.meanwhile()
                self.fired.set()
                self._close(pair)
                return
            try:
                near.sendall(data)
            except OSError:
                return


@pytest.fixture
def proxy(tapdb):
    p = Proxy(tapdb.remote[len("unix:"):])
    yield p
    p.close()


def state(tapdb) -> tuple[int, dict[str, int]]:
    """The generation, and each target's tunnel key."""
    api = ops.connect(tapdb.remote, 10)
    try:
        every = api.everything()
        [res] = api.conn.transact(ops.select("Tap_Global", columns=["generation"]))
        return res["rows"][0]["generation"], {
            t.name: t.tunnel_key for t in every.snapshot.intent.targets.values()}
    finally:
        api.close()


def run(proxy: Proxy, capsys, *args: str) -> tuple[int, str]:
    """tapctl through the proxy; a second member that is the same proxy (so that tapctl
    connects again through it, as to a cluster's next leader)."""
    capsys.readouterr()
    rc = tapctl.main(["--db", f"{proxy.remote},{proxy.remote}", "--timeout", "10", *args])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("lose", ["request", "answer"])
def test_a_write_whose_connection_is_lost_is_made_once(tapdb, proxy, capsys, lose):
    """Lost before tapdb had it: sent again, made. Lost after tapdb made it: not made
    again, and no error (a second target-add of the name would say it exists)."""
    rc, err = run(proxy, capsys, "target-add", "target-01", "--vxlan", "192.168.1.1")
    assert (rc, err) == (0, "")
    proxy.cut(COMMIT, lose)
    rc, err = run(proxy, capsys, "target-add", "target-02", "--vxlan", "192.168.1.2")
    assert proxy.fired.is_set()
    assert (rc, err) == (0, ""), err
    assert state(tapdb) == (2, {"target-01": 1, "target-02": 2})


def test_others_writing_before_the_reconnection_do_not_hide_a_made_change(tapdb, proxy,
                                                                         capsys):
    """The answer lost, then two other changes committed before tapctl is back: its
    token is still among the latest changes', so it knows its change was made."""
    rival = ops.connect(tapdb.remote, 10)

    def two_more() -> None:
        rival.target_add("target-03", vxlan="192.168.1.3")
        rival.target_add("target-04", vxlan="192.168.1.4")
    try:
        proxy.cut(COMMIT, "answer", two_more)
        rc, err = run(proxy, capsys, "target-add", "target-02", "--vxlan", "192.168.1.2")
        assert proxy.fired.is_set()
        assert (rc, err) == (0, ""), err
    finally:
        rival.close()
    assert state(tapdb) == (3, {"target-02": 1, "target-03": 2, "target-04": 3})


def test_a_lost_write_that_another_writer_overtook_is_judged_again(tapdb, proxy, capsys):
    """Dropped before tapdb had it, and another change committed meanwhile: judged again
    on fresh data (the next free key), made once."""
    rival = ops.connect(tapdb.remote, 10)
    try:
        proxy.cut(COMMIT, "request",
                  lambda: rival.target_add("target-03", vxlan="192.168.1.3"))
        rc, err = run(proxy, capsys, "target-add", "target-02", "--vxlan", "192.168.1.2")
        assert proxy.fired.is_set()
    finally:
        rival.close()
    assert (rc, err) == (0, ""), err
    assert state(tapdb)[1] == {"target-03": 1, "target-02": 2}


def test_chassis_del_whose_answer_is_lost_is_done(tapdb, proxy, capsys):
    """The delete made, its answer lost: the retry finds no chassis and reports success,
    not 'no chassis named'."""
    agent = client.connect(tapdb.remote, 10, chassis="host-z")
    try:
        agent.register_chassis("host-z", "10.255.0.26", "gre")
        agent.heartbeat("host-z", 1000, 10)  # silent long ago
    finally:
        agent.close()
    proxy.cut(DELETE, "answer")
    rc, err = run(proxy, capsys, "chassis-del", "host-z")
    assert proxy.fired.is_set()
    assert (rc, err) == (0, ""), err
    api = ops.connect(tapdb.remote, 10)
    try:
        assert api.everything().chassis == []
    finally:
        api.close()


def test_wait_keeps_its_chassis_across_a_lost_connection(tapdb, proxy, capsys):
    """The connection of a --wait is lost (as in a leader change) and comes back only
    once a chassis it waits for is silent: that chassis is named, not taken for one the
    wait never had to wait for (which judging the chassis again on the new connection
    would do)."""
    agent = client.connect(tapdb.remote, 10, chassis="host-f")
    result: list[tuple[int, str]] = []
    try:
        agent.register_chassis("host-f", "10.255.0.6", "gre")
        beat = int(time.time())
        agent.heartbeat("host-f", beat, 2)  # alive for 6 s: the wait begins well before
        monitor = proxy.watch(b'"method":"monitor"')
        worker = threading.Thread(target=lambda: result.append(
            run(proxy, capsys, "--wait", "--timeout", "30", "filter-add", "filter-01")))
        worker.start()
        assert monitor.wait(10), "the wait did not begin"
        proxy.hold()
        while time.time() <= beat + 3 * 2 + 0.5:  # until host-f is silent
            time.sleep(0.1)
        proxy.release()
        worker.join(40)
    finally:
        proxy.release()
        agent.close()
    [(rc, err)] = result
    assert rc == tapctl.EXIT_NOT_APPLIED, err
    assert "but host-f went silent during the wait before applying it (chassis host-f " \
           "silent for" in err, err
