"""The embedded mode's logins: ``<state>/users.json`` (mode 0600), scrypt hashes only.

Rules this module keeps:

- a password or invite code is never stored, logged or returned except once, to the
  person who asked for it (``atelier users add`` prints it); only hashes are kept;
- a user without a password cannot log in: they get a one-time invite code with an
  expiry, and whoever holds it chooses the password (no first-login claiming);
- every change is a read-modify-write under an exclusive ``fcntl`` lock on
  ``users.json.lock``, written to a uniquely named temp file in the same folder,
  fsynced, renamed over the file and the folder fsynced: the hub and the CLI may write
  at the same moment, and a crash leaves the old file or the new one, never half of one.
  Readers need no lock (a rename is atomic).

Standard library only, so the CLI and the state folder read and write the users file
without importing JupyterHub (the authenticator in :mod:`.auth` does).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from ..private_files import open_private, write_private

__all__ = ["UsersFile", "hash_password", "check_password", "check_username", "UserError",
           "InviteError", "INVITE_LIFETIME", "parse_duration", "invite_url"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
#: how long an invite code is valid unless told otherwise (seconds)
INVITE_LIFETIME = 7 * 24 * 3600


class UserError(ValueError):
    """A user name or password request is invalid; the message says how to fix it."""


class InviteError(UserError):
    """An invite code is unknown, used or expired; the message says what to do."""


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


def parse_duration(text: str, *, option: str = "--expires-in", example: str = "7d") -> int:
    """Seconds in ``90``, ``90s``, ``30m``, ``12h`` or ``7d``; a refusal names ``option``.

    >>> parse_duration("2h"), parse_duration("45")
    (7200, 45)
    """
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text or "")
    if not m or int(m.group(1)) <= 0:
        raise UserError(f"{option} {text!r} is not a duration: give a positive number with s, m, h or d "
                        f"(e.g. {example})")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def invite_url(base: str, name: str, code: str) -> str:
    """The link a new user opens: ``base`` is the hub's public URL (``http://host:port``).

    >>> invite_url("http://127.0.0.1:8000", "cy", "abc")
    'http://127.0.0.1:8000/hub/invite/cy?code=abc'
    """
    # `code` is one of the query keys JupyterHub scrubs from its request log.
    # ref: jupyterhub/log.py SCRUB_PARAM_KEYS
    return f"{base.rstrip('/')}/hub/invite/{quote(name)}?code={quote(code)}"


def _code_hash(code: str) -> str:
    # Invite codes are 256-bit random: a plain SHA-256 is enough (no guessing to slow down).
    return hashlib.sha256(code.encode()).hexdigest()


class UsersFile:
    """The users file: ``{"users": {"ada": {"password": HASH | null, "admin": bool,
    "invite": {"sha256": HEX, "expires": UNIX_TIME} (only while invited)}}}``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- reading and writing -----------------------------------------------------------

    def load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise UserError(f"{self.path}: not valid JSON ({exc}); restore it from a backup") from None
        return dict(data.get("users", {}))

    def _write(self, users: dict[str, dict]) -> None:
        """Atomic replace: unique temp file beside it, fsync, rename, fsync the folder."""
        write_private(self.path, json.dumps({"users": users}, indent=2, sort_keys=True), durable=True)

    @contextlib.contextmanager
    def change(self) -> Iterator[dict[str, dict]]:
        """``with users.change() as u: ...``: the users, read under the lock and written
        back when the block ends without an exception (nothing is written otherwise)."""
        lock = open_private(self.path.with_name(self.path.name + ".lock"))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = self.load()
            before = json.dumps(users, sort_keys=True)
            yield users
            if json.dumps(users, sort_keys=True) != before or not self.path.exists():
                self._write(users)
        finally:
            os.close(lock)  # closing releases the lock

    def save(self, users: dict[str, dict]) -> None:
        """Replace the whole file (under the lock)."""
        with self.change() as current:
            current.clear()
            current.update(users)

    # -- the operations ----------------------------------------------------------------

    def add(self, name: str, *, admin: bool = False, password: bool = True,
            expires_in: int = INVITE_LIFETIME) -> str:
        """Add a user; returns the generated password, or with ``password=False`` the
        one-time invite code (valid ``expires_in`` seconds)."""
        check_username(name)
        with self.change() as users:
            if name in users:
                raise UserError(f"user {name!r} already exists; use `atelier users passwd {name}` to reset it")
            users[name] = {"password": None, "admin": admin}
            if password:
                plain = secrets.token_urlsafe(12)
                users[name]["password"] = hash_password(plain)
            else:
                plain = self._new_invite(users[name], expires_in)
        return plain

    def invite(self, name: str, *, expires_in: int = INVITE_LIFETIME) -> str:
        """A new one-time invite code for ``name`` (any older one stops working); the
        user's password, if any, stays valid until they choose a new one."""
        with self.change() as users:
            if name not in users:
                raise UserError(f"no user {name!r}; add it with `atelier users add {name} --no-password`")
            return self._new_invite(users[name], expires_in)

    @staticmethod
    def _new_invite(entry: dict, expires_in: int) -> str:
        code = secrets.token_urlsafe(32)
        entry["invite"] = {"sha256": _code_hash(code), "expires": int(time.time()) + int(expires_in)}
        return code

    def check_invite(self, name: str, code: str, *, now: float | None = None) -> dict:
        """The user's entry if ``code`` is their current invite; InviteError otherwise."""
        return self._valid_invite(self.load(), name, code, now=now)

    @staticmethod
    def _valid_invite(users: dict, name: str, code: str, *, now: float | None = None) -> dict:
        entry = users.get(name)
        invite = (entry or {}).get("invite")
        if not invite or not hmac.compare_digest(invite.get("sha256", ""), _code_hash(code or "")):
            # One message for unknown, used and replaced codes: none of them says who exists.
            raise InviteError("this invite link is not valid or was already used; "
                              "ask an admin for a new one (atelier users invite NAME)")
        if (now or time.time()) >= invite.get("expires", 0):
            raise InviteError("this invite link has expired; ask an admin for a new one (atelier users invite NAME)")
        return entry

    def accept_invite(self, name: str, code: str, password: str, *, min_length: int = 8) -> None:
        """Use the invite once: set the password and forget the code, in one locked write."""
        if len(password) < min_length:
            raise UserError(f"password: choose at least {min_length} characters")
        with self.change() as users:
            entry = self._valid_invite(users, name, code)
            entry["password"] = hash_password(password)
            del entry["invite"]

    def set_password(self, name: str, password: str | None = None) -> str:
        plain = password or secrets.token_urlsafe(12)
        hashed = hash_password(plain)  # outside the lock: scrypt takes a while
        with self.change() as users:
            if name not in users:
                raise UserError(f"no user {name!r}; add it with `atelier users add {name}`")
            users[name]["password"] = hashed
            users[name].pop("invite", None)
        return plain

    def remove(self, name: str) -> None:
        with self.change() as users:
            if users.pop(name, None) is None:
                raise UserError(f"no user {name!r}; `atelier users list` shows who exists")
