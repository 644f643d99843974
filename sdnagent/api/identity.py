"""Who calls the API: bearer tokens, stored hashed in a file the operator keeps.

A token is 32 random bytes (base64url); the file holds one line per identity,
``NAME ROLE PROJECT SHA256-OF-TOKEN`` (``-``: no project), so that a copy of the
file lets nobody in.  The roles: ``admin`` (every call, in any project),
``member`` (reads and writes its project's objects, mirrors the ports
registered to it) and ``reader`` (reads its project's objects, or every
project's without one; writes nothing).
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

ROLES = ("admin", "member", "reader")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class IdentityError(ValueError):
    """A bad identity or tokens file, in one line."""


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    role: str
    project: Optional[str] = None  # the only project it sees; None: every project

    @property
    def writes(self) -> bool:
        return self.role in ("admin", "member")

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def sees(self, project: str) -> bool:
        return self.project is None or self.project == project


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
        ok = (len(fields) == 4 and fields[1] in ROLES
              and re.fullmatch(r"[0-9a-f]{64}", fields[3]) is not None
              and (fields[1] != "admin" or fields[2] == "-")
              and (fields[1] != "member" or fields[2] != "-"))
        if not ok:
            raise IdentityError(f"tokens file {path}, line {number}: not NAME ROLE PROJECT "
                                f"SHA256 (ROLE one of {', '.join(ROLES)}; PROJECT - for an "
                                "admin, a project for a member)")
        out[fields[3]] = Identity(fields[0], fields[1], None if fields[2] == "-" else fields[2])
    return out


def add(path: Path, name: str, role: str, project: Optional[str] = None) -> str:
    """A new identity in the tokens file; returns its token (shown once, kept nowhere)."""
    from sdnagent import model
    if not _NAME.match(name):
        raise IdentityError(f"name: {name!r} is not allowed; use up to 64 letters, digits "
                            "and _.@-")
    if role not in ROLES:
        raise IdentityError(f"role: {role!r} is not allowed; use one of {', '.join(ROLES)}")
    if role == "admin" and project is not None:
        raise IdentityError("project: an admin has every project; give none")
    if role == "member" and project is None:
        raise IdentityError("project: a member needs its project (--project)")
    if project is not None:
        try:
            model.parse_project(project)
        except model.IntentError as exc:
            raise IdentityError(str(exc)) from None
    known = load(path) if path.exists() else {}
    if any(i.name == name for i in known.values()):
        raise IdentityError(f"name: an identity named {name!r} already exists")
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{name} {role} {project or '-'} {_digest(token)}\n")
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
