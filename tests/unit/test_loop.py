"""The reconcile loop's waiting, without a switch or tapdb."""
from __future__ import annotations

import threading
import time
import types

from sdnagent.agent.agent import Agent


def waiter() -> types.SimpleNamespace:
    return types.SimpleNamespace(wake=threading.Event(), stopping=threading.Event())


def test_a_change_cuts_a_backoff_short_but_not_below_half_a_second():
    agent = waiter()
    threading.Timer(0.1, agent.wake.set).start()  # a change while the pass failed
    started = time.monotonic()
    assert Agent._backoff(agent, 30.0) is True
    assert 0.5 <= time.monotonic() - started < 5


def test_a_backoff_without_changes_runs_out():
    agent = waiter()
    started = time.monotonic()
    assert Agent._backoff(agent, 0.6) is False
    assert time.monotonic() - started >= 0.6


def test_stopping_ends_a_backoff():
    agent = waiter()
    threading.Timer(0.1, agent.stopping.set).start()
    started = time.monotonic()
    assert Agent._backoff(agent, 30.0) is False
    assert time.monotonic() - started < 5
