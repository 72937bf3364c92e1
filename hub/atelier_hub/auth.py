"""Embedded-mode login: users and password hashes in ``<state>/users.json`` (mode 0600).

Rule this module keeps: a password is never stored, logged or returned except once,
to the person who asked for it (``atelier users add`` prints it); only scrypt hashes
are kept. Only names in the file may log in. A user an admin adds in the hub's admin
page (or with ``atelier users add NAME --no-password``) has no password yet and sets
it at first login, as JupyterHub's FirstUseAuthenticator does.
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

from jupyterhub.auth import Authenticator
from traitlets import Int, Unicode

__all__ = ["UsersFile", "AtelierAuthenticator", "hash_password", "check_password", "UserError"]

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


class AtelierAuthenticator(Authenticator):
    """Password login against the embedded users file."""

    users_file = Unicode(
        "users.json",
        config=True,
        help="""
        Path of the users file (hashes only), relative to the hub's working directory.

            c.AtelierAuthenticator.users_file = "/var/lib/atelier/users.json"
        """,
    )
    min_password_length = Int(
        8, config=True, help="Shortest password a user may choose at first login."
    )

    only_user = Unicode(
        "",
        config=True,
        help="""
        When set, the one user who may log in (the embedded single-user mode, whose
        sessions are processes of the hub's own OS user and so not isolated).

            c.AtelierAuthenticator.only_user = "admin"
        """,
    )

    @property
    def _file(self) -> UsersFile:
        return UsersFile(self.users_file)

    async def authenticate(self, handler, data):
        name = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        try:
            users = self._file.load()
        except UserError as exc:
            self.log.error("%s", exc)
            return None
        entry = users.get(name)
        if entry is None:
            return None
        if entry.get("password") is None:
            # Added by an admin without a password: the first login chooses it.
            if len(password) < self.min_password_length:
                return None
            self._file.set_password(name, password)
            self.log.info("User %s set a password at first login", name)
        elif not check_password(password, entry["password"]):
            return None
        return {"name": name, "admin": bool(entry.get("admin"))}

    def check_allowed(self, username, authentication=None):
        if self.only_user and username != self.only_user:
            self.log.warning("Refused %s: single-user mode lets only %s log in", username, self.only_user)
            return False
        return username in self._file.load()

    def add_user(self, user):
        """Called when an admin adds a user in the hub: record them, without a password."""
        users = self._file.load()
        if user.name not in users:
            users[user.name] = {"password": None, "admin": bool(user.admin)}
            self._file.save(users)
        return super().add_user(user)

    def delete_user(self, user):
        users = self._file.load()
        if users.pop(user.name, None) is not None:
            self._file.save(users)
        return super().delete_user(user)
