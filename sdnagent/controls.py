"""A session's controls: rate caps, per-connection sampling and an end.

Pure, like :mod:`sdnagent.model`: parsers turn an operator's words into the
values tapdb stores (raising :class:`~sdnagent.model.IntentError` with the one
line a person sees), and the describers say them back.  Where the time matters,
the caller passes ``now`` (milliseconds since the epoch): the end is computed
once, by the writer, and stored as an absolute time; agents never judge it by
their own clocks, the session clock of tapdb does (:mod:`sdnagent.tapdb.clock`).
"""
from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Optional

from sdnagent.model import IntentError, Session, parse_int

MAX_PPS = (1, 100_000_000)
MAX_KBPS = (1, 1_000_000_000)
SAMPLE = (1, 65536)  # 1/1: every connection (no sampling)
MAX_DURATION_S = 366 * 86400
CLEAR = ("none", "off")  # what removes a control on session-set
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _cleared(text: object) -> bool:
    return str(text).strip().lower() in CLEAR


def parse_cap(field: str, text: object, bounds: tuple[int, int]) -> Optional[int]:
    """--max-pps / --max-kbps: a positive integer, or none (no cap)."""
    if _cleared(text):
        return None
    return parse_int(field, text, bounds)


def parse_sample(text: object) -> Optional[int]:
    """--sample 1/N: one connection in N (None: every connection, for 1/1 or none)."""
    words = str(text).strip()
    if _cleared(words):
        return None
    one, slash, n = words.partition("/")
    if not slash or one.strip() != "1":
        raise IntentError("sample", f"{words!r} is not allowed; give 1/N, one connection in N, "
                          f"with N from {SAMPLE[0]} to {SAMPLE[1]}, or none")
    value = parse_int("sample", n.strip(), SAMPLE)
    return None if value == 1 else value


def parse_duration(text: object) -> int:
    """--duration: 90s, 10m, 2h, 1d, 1h30m or plain seconds; in milliseconds."""
    words = str(text).strip().lower()
    if words.isdigit():
        seconds = int(words)
    else:
        found = _DURATION_RE.match(words) if words else None
        if found is None:
            raise IntentError("duration", f"{text!r} is not a duration; give e.g. 90s, 10m, 2h, "
                              "1d or 1h30m")
        seconds = sum(int(v) * u for v, u in zip(found.groups(), (86400, 3600, 60, 1)) if v)
    if not 1 <= seconds <= MAX_DURATION_S:
        raise IntentError("duration", f"{text!r} is out of range; allowed 1s to 366d")
    return seconds * 1000


def parse_until(text: object, now: int) -> int:
    """--until: an ISO 8601 time (UTC unless it has an offset), in the future and at most
    366 days ahead; in milliseconds since the epoch."""
    words = str(text).strip()
    try:
        when = datetime.datetime.fromisoformat(words)
    except ValueError:
        raise IntentError("until", f"{words!r} is not a time; give ISO 8601, e.g. "
                          "2026-12-05T14:00:00Z or 2026-12-05 14:00+01:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    at = int(when.timestamp() * 1000)
    if at <= now:
        raise IntentError("until", f"{words!r} is in the past (now is {stamp(now)})")
    if at - now > MAX_DURATION_S * 1000:
        raise IntentError("until", f"{words!r} is more than 366 days ahead")
    return at


def parse_end(duration: Optional[str], until: Optional[str], now: int) -> Optional[int]:
    """The end that --duration or --until asks for (None: neither was given)."""
    if duration is not None and until is not None:
        raise IntentError("duration", "give --duration or --until, not both")
    if duration is not None:
        return now + parse_duration(duration)
    if until is not None:
        return parse_until(until, now)
    return None


@dataclasses.dataclass(frozen=True)
class Change:
    """What session-set asks to change; None leaves a control as it is."""

    max_pps: Optional[str] = None
    max_kbps: Optional[str] = None
    sample: Optional[str] = None
    duration: Optional[str] = None
    until: Optional[str] = None
    no_end: bool = False

    def __bool__(self) -> bool:
        return any(v not in (None, False) for v in dataclasses.astuple(self))


def changed(session: Session, change: Change, now: int) -> Session:
    """session-set: ``session`` with ``change`` applied, which must ask for something."""
    if not change:
        raise IntentError("session", "nothing to change; give max-pps, max-kbps, sample, "
                          "duration, until or no-end")
    return applied(session, change, now)


def applied(session: Session, change: Change, now: int) -> Session:
    """``session`` with ``change`` applied: a new end clears why it stopped."""
    if change.no_end and (change.duration is not None or change.until is not None):
        raise IntentError("no-end", "give --no-end alone, not with --duration or --until")
    values: dict = {}
    if change.max_pps is not None:
        values["max_pps"] = parse_cap("max-pps", change.max_pps, MAX_PPS)
    if change.max_kbps is not None:
        values["max_kbps"] = parse_cap("max-kbps", change.max_kbps, MAX_KBPS)
    if change.sample is not None:
        values["sample"] = parse_sample(change.sample)
    end = parse_end(change.duration, change.until, now)
    if end is not None or change.no_end:
        values["ends_at"] = end or 0
        values["stop_reason"] = None
    return dataclasses.replace(session, **values)


def ended(session: Session, now: int) -> bool:
    return 0 < session.ends_at <= now


def check_enable(session: Session, now: int) -> None:
    """A session whose end has passed stays off until it is given another end."""
    if ended(session, now):
        raise IntentError("session", f"session {session.name!r} ended at "
                          f"{stamp(session.ends_at)}; give it a new end first (tapctl "
                          "session-set NAME --duration D, --until TIME or --no-end)")


def end_reason(ends_at: int) -> str:
    """What the session clock writes when it stops a session."""
    return f"its time ended at {stamp(ends_at)}"


def stamp(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def span(ms: int) -> str:
    """A duration for people: 1d 2h, 4m 12s, 9s."""
    seconds = max(0, round(ms / 1000))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        value, seconds = divmod(seconds, size)
        if value:
            parts.append(f"{value}{unit}")
    return " ".join(parts[:2]) or "0s"


def describe(session: Session, now: Optional[int] = None) -> list[str]:
    """The controls in words, for show: caps, sampling, and the end or how long is left."""
    out = []
    caps = [f"{session.max_pps} packets/s" if session.max_pps else "",
            f"{session.max_kbps} kbit/s" if session.max_kbps else ""]
    if any(caps):
        out.append("capped at " + " and ".join(c for c in caps if c) + " per chassis")
    if session.sample:
        out.append(f"sampling 1 connection in {session.sample}")
    if session.ends_at and now is not None:
        if session.ends_at > now:
            out.append(f"ends in {span(session.ends_at - now)} (at {stamp(session.ends_at)})")
        elif session.stop_reason:
            out.append(f"stopped: {session.stop_reason}")
        else:
            out.append(f"ended at {stamp(session.ends_at)}")
    return out
