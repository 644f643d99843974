"""Who calls the API: bearer tokens, stored hashed in a file the operator keeps.

A token is 32 random bytes (base64url); the file holds one line per identity,
``NAME ROLE SHA256-OF-TOKEN``, so that a copy of the file lets nobody in.  The
roles: ``admin`` (every call) and ``reader`` (every read, no write).
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Optional

ROLES = ("admin", "reader")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class IdentityError(ValueError):
    """A bad identity or tokens file, in one line."""


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    role: str

    @property
    def writes(self) -> bool:
        return self.role == "admin"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load(path: Path) -> dict[str, Identity]:
    """The identities of a tokens file, by token digest."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise IdentityError(f"tokens file {path}: {exc.strerror}") from None
    out: dict[str, Identity] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or fields[1] not in ROLES or not re.fullmatch(r"[0-9a-f]{64}",
                                                                          fields[2]):
            raise IdentityError(f"tokens file {path}, line {number}: not NAME ROLE SHA256 "
                                f"(ROLE one of {', '.join(ROLES)})")
        out[fields[2]] = Identity(fields[0], fields[1])
    return out


def add(path: Path, name: str, role: str) -> str:
    """A new identity in the tokens file; returns its token (shown once, kept nowhere)."""
    if not _NAME.match(name):
        raise IdentityError(f"name: {name!r} is not allowed; use up to 64 letters, digits "
                            "and _.@-")
    if role not in ROLES:
        raise IdentityError(f"role: {role!r} is not allowed; use one of {', '.join(ROLES)}")
    known = load(path) if path.exists() else {}
    if any(i.name == name for i in known.values()):
        raise IdentityError(f"name: an identity named {name!r} already exists")
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{name} {role} {_digest(token)}\n")
    return token


def who(identities: dict[str, Identity], token: Optional[str]) -> Optional[Identity]:
    """The identity a bearer token is, or None."""
    if not token:
        return None
    digest = _digest(token)
    for known, identity in identities.items():  # compared in constant time, each
        if hmac.compare_digest(known, digest):
            return identity
    return None
