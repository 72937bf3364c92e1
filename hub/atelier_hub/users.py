"""The embedded mode's logins: ``<state>/users.json`` (mode 0600), scrypt hashes only.

Rule this module keeps: a password is never stored, logged or returned except once,
to the person who asked for it (``atelier users add`` prints it); only scrypt hashes
are kept. Standard library only, so the CLI and the state folder read and write the
users file without importing JupyterHub (the authenticator in :mod:`.auth` does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

__all__ = ["UsersFile", "hash_password", "check_password", "check_username", "UserError"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserError(ValueError):
    """A user name or password request is invalid; the message says how to fix it."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """scrypt hash in the form ``scrypt$n$r$p$salt$hash``.

    >>> check_password("s3cret-pw", hash_password("s3cret-pw"))
    True
    """
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt)}${b64(digest)}"


def check_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; False for a malformed or missing hash."""
    try:
        kind, n, r, p, salt, digest = (stored or "").split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), dklen=32, n=int(n), r=int(r), p=int(p)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def check_username(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise UserError(
            f"user name {name!r} is not valid: use lower-case letters, digits, '.', '_' or '-' "
            "(at most 64), starting with a letter or digit"
        )
    return name


class UsersFile:
    """The users file: ``{"users": {"ada": {"password": HASH | null, "admin": bool}}}``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise UserError(f"{self.path}: not valid JSON ({exc}); restore it from a backup") from None
        return dict(data.get("users", {}))

    def save(self, users: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Written then renamed, so a crash never leaves a half-written users file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"users": users}, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)

    def add(self, name: str, *, admin: bool = False, password: bool = True) -> str | None:
        """Add a user; returns the generated password (or None with ``password=False``)."""
        check_username(name)
        users = self.load()
        if name in users:
            raise UserError(f"user {name!r} already exists; use `atelier users passwd {name}` to reset it")
        plain = secrets.token_urlsafe(12) if password else None
        users[name] = {"password": hash_password(plain) if plain else None, "admin": admin}
        self.save(users)
        return plain

    def set_password(self, name: str, password: str | None = None) -> str:
        users = self.load()
        if name not in users:
            raise UserError(f"no user {name!r}; add it with `atelier users add {name}`")
        plain = password or secrets.token_urlsafe(12)
        users[name]["password"] = hash_password(plain)
        self.save(users)
        return plain

    def remove(self, name: str) -> None:
        users = self.load()
        if users.pop(name, None) is None:
            raise UserError(f"no user {name!r}; `atelier users list` shows who exists")
        self.save(users)
