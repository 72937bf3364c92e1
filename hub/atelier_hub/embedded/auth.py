"""Embedded-mode login: users and password hashes in ``<state>/users.json`` (mode 0600).

Rules this module keeps:

- only names in the users file may log in, and only with their password; a user
  without one (added on the admin page, by REST or with ``--no-password``) gets a
  one-time invite link with an expiry (``/hub/invite/NAME?code=...``) and cannot log in
  before using it: nobody claims an account by logging in first;
- the users file decides who exists: a user removed from it while the hub was down is
  deleted from the hub's database at the next start (tokens, cookies and servers
  with them), never re-added to the file, and nobody is ever added as admin unless an
  admin asked for it;
- a login attempt costs one scrypt hash whether the name exists or not (unknown names
  are checked against a dummy hash), hashed off the event loop on a small pool, and
  failures back off exponentially per name and per client address;
- removal runs one hook, :meth:`atelier_hub.embedded.stack.EmbeddedStack.remove_user`, where each
  service forgets what it keeps for the user.
"""

from __future__ import annotations

import asyncio
import html
import math
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from jupyterhub import orm
from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from tornado import web
from traitlets import Callable, Float, Int, Unicode

from .users import (
    INVITE_LIFETIME,
    InviteError,
    UserError,
    UsersFile,
    check_password,
    check_username,
    hash_password,
    invite_url,
)

__all__ = ["UsersFile", "AtelierAuthenticator", "Backoff", "hash_password", "check_password", "check_username",
           "UserError", "invite_url"]


class Backoff:
    """Failed attempts per key: after ``free`` of them the key waits ``base`` seconds
    before its next attempt, and each further failure doubles the wait (up to ``cap``).
    A key quiet for ``cap`` seconds past its wait starts over; the oldest keys are
    dropped beyond ``size``, so the table stays small under a flood of new names.

    >>> b = Backoff(free=2, base=2, cap=60)
    >>> b.fail("ada", now=0); b.wait("ada", now=0)
    0.0
    >>> b.fail("ada", now=0); b.wait("ada", now=1)
    1.0
    """

    def __init__(self, *, free: int, base: float, cap: float, size: int = 100_000):
        self.free, self.base, self.cap, self.size = free, base, cap, size
        self._keys: dict[str, tuple[int, float]] = {}  # key: (failures, time of the last one)

    def _delay(self, count: int) -> float:
        if count < self.free:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(count - self.free, 40)))  # 2**40: no float overflow

    def wait(self, key: str, *, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        count, last = self._keys.get(key, (0, 0.0))
        return max(0.0, last + self._delay(count) - now) if count else 0.0

    def fail(self, key: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        count, last = self._keys.pop(key, (0, now))
        if now > last + self._delay(count) + self.cap:
            count = 0  # quiet long enough: start over
        self._keys[key] = (count + 1, now)  # re-inserted last: the dict is oldest first
        while len(self._keys) > self.size:
            del self._keys[next(iter(self._keys))]

    def undo(self, key: str) -> None:
        """Take one failure back (an attempt counted before it was checked, that succeeded)."""
        count, last = self._keys.get(key, (0, 0.0))
        if count <= 1:
            self._keys.pop(key, None)
        else:
            self._keys[key] = (count - 1, last)

    def forget(self, key: str) -> None:
        self._keys.pop(key, None)


def _lower_priority() -> None:
    """Nice the calling thread by 10 (on Linux a thread is its own scheduling entity:
    ``setpriority(PRIO_PROCESS, 0)`` changes the calling thread only)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10))
    except (AttributeError, OSError):  # not Linux, or not allowed: same priority as the loop
        pass


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
        8, config=True, help="Shortest password a user may choose with their invite link."
    )
    invite_lifetime = Int(
        INVITE_LIFETIME, config=True,
        help="Seconds an invite link made in the hub (admin page, REST) stays valid; default 7 days.",
    )
    public_url = Unicode(
        "", config=True,
        help="""The hub's public URL, for the invite links the hub shows (default: the
        address the admin's browser used).

            c.AtelierAuthenticator.public_url = "http://127.0.0.1:8000"
        """,
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

    free_failures_per_name = Int(5, config=True, help="Failed logins for one name after which back-off starts.")
    free_failures_per_address = Int(
        20, config=True, help="Failed logins from one client address (any names) after which back-off starts.")
    backoff_base = Float(1.0, config=True, help="First back-off wait, in seconds; each further failure doubles it.")
    backoff_max = Float(300.0, config=True, help="Longest back-off wait, in seconds.")
    max_pending_hashes = Int(
        16, config=True,
        help="Password checks that may wait for the hashing pool; more are refused at once (503).",
    )

    on_user_removed = Callable(
        None, allow_none=True, config=True,
        help="""Called with a user's name once they are removed (from the hub or, while the
        hub was down, from the users file), so each service forgets what it keeps for
        them. The embedded mode sets it to ``EmbeddedStack.remove_user``.""",
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._by_name = Backoff(free=self.free_failures_per_name, base=self.backoff_base, cap=self.backoff_max)
        self._by_address = Backoff(free=self.free_failures_per_address, base=self.backoff_base,
                                   cap=self.backoff_max)
        # One hashing thread, at a lower priority than the event loop: scrypt takes a
        # core for ~0.1 s, and a flood of logins must not slow the hub's API.
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atelier-scrypt",
                                          initializer=_lower_priority)
        self._pending = 0
        # Unknown names are checked against this, so that they cost what known ones do.
        self._dummy = hash_password(secrets.token_urlsafe(16))

    @property
    def _file(self) -> UsersFile:
        return UsersFile(self.users_file)

    # -- login -----------------------------------------------------------------------------

    @staticmethod
    def client_address(handler) -> str:
        """The client as the proxy saw it: the last X-Forwarded-For entry (the one the
        proxy appended), not Tornado's ``remote_ip``, which trusts a client's X-Real-Ip.
        ref: tornado/httpserver.py _HTTPRequestContext._apply_xheaders"""
        if handler is None:
            return ""
        forwarded = handler.request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
        context = getattr(handler.request.connection, "context", None)
        address = getattr(context, "address", None)
        return str(address[0]) if isinstance(address, tuple) and address else handler.request.remote_ip or ""

    async def _check(self, password: str, stored: str) -> bool:
        if self._pending >= self.max_pending_hashes:
            raise web.HTTPError(503, "The hub is busy checking other logins; try again in a few seconds.")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._hasher, check_password, password, stored)
        finally:
            self._pending -= 1

    async def authenticate(self, handler, data):
        name = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        address = self.client_address(handler)
        # Per-name failures are kept for names a user can have (check_username): any other
        # name can never log in, and keying the table by whatever a client sends let it
        # hold up to 100,000 names of up to a request body's size each.
        by_name = self._valid_name(name)
        wait = max(self._by_name.wait(name) if by_name else 0.0, self._by_address.wait(address))
        if wait:
            raise web.HTTPError(429, f"Too many failed logins for this name or from this address; "
                                     f"try again in {math.ceil(wait)} s.")
        # Counted as failed before the check and taken back on success, so that attempts
        # running at the same moment count against each other (no burst past the limit).
        if by_name:
            self._by_name.fail(name)
        self._by_address.fail(address)
        try:
            users = self._file.load()
        except UserError as exc:
            self.log.error("%s", exc)
            return None
        entry = users.get(name) or {}
        stored = entry.get("password")
        # Always one hash: a name without a password (unknown, or invited) costs the same.
        ok = await self._check(password, stored or self._dummy) and stored is not None
        if not ok:
            if entry and stored is None:
                self.log.info("Refused %s: no password yet; they log in through their invite link", name)
            return None
        self._by_name.forget(name)
        self._by_address.undo(address)
        return {"name": name, "admin": bool(entry.get("admin"))}

    @staticmethod
    def _valid_name(name: str) -> bool:
        try:
            check_username(name)
        except UserError:
            return False
        return True

    def validate_username(self, username):
        """Only names the users file takes (:func:`check_username`: at most 64 characters
        of a-z, 0-9, '.', '_', '-'): the admin page and the REST API add users through
        here, and any name they were given went into users.json and the hub's database."""
        return super().validate_username(username) and self._valid_name(username)

    def check_allowed(self, username, authentication=None):
        if self.only_user and username != self.only_user:
            self.log.warning("Refused %s: single-user mode lets only %s log in", username, self.only_user)
            return False
        return username in self._file.load()

    # -- the users file and the hub's database ---------------------------------------------

    def add_user(self, user):
        """JupyterHub calls this at start-up with its database row (``orm.User``) for
        every user it has, and with its ``User`` wrapper when an admin adds one (admin
        page, REST) or someone logs in for the first time.
        ref: jupyterhub/app.py JupyterHub.init_users, jupyterhub/apihandlers/users.py

        At start-up the users file decides: a user missing from it was removed while the
        hub was down, so this raises and ``delete_invalid_users`` deletes them. (The old
        code wrote them back into the file, with no password and their database admin
        flag: the next person to log in as them chose the password.)"""
        if isinstance(user, orm.User):
            if user.name not in self._file.load():
                self.log.warning("Deleting %s from the hub: removed from %s while the hub was down",
                                 user.name, self.users_file)
                self._removed(user.name)
                raise ValueError(f"{user.name} is not in {self.users_file}")
        else:
            # Checked before the file is written: JupyterHub's own check (in the base
            # class's add_user, below) comes after, and POST /users/NAME has no other.
            if not self.validate_username(user.name):
                raise ValueError(f"invalid user name ({len(user.name)} characters): use lower-case letters, "
                                 "digits, '.', '_' or '-', at most 64")
            with self._file.change() as users:
                if user.name not in users:
                    # Added by an admin: an invite, made (and shown) on /hub/invites.
                    users[user.name] = {"password": None, "admin": bool(user.admin)}
                    self.log.info("Added %s without a password; their invite link is made on /hub/invites",
                                  user.name)
        return super().add_user(user)

    def delete_user(self, user):
        with self._file.change() as users:
            users.pop(user.name, None)
        self._removed(user.name)
        return super().delete_user(user)

    def _removed(self, name: str) -> None:
        if self.on_user_removed is not None:
            try:
                self.on_user_removed(name)
            except Exception:  # a service's clean-up must not keep the user in the hub
                self.log.exception("Clean-up after removing %s failed", name)

    def get_handlers(self, app):
        return [*super().get_handlers(app), (r"/invite/([^/]+)", InviteHandler), (r"/invites", InvitesHandler)]


# -- pages -----------------------------------------------------------------------------------

_PAGE = """{% extends "page.html" %}{% block main %}<div class="container" style="max-width: 40em">
{{ body | safe }}</div>{% endblock %}"""


class _Page(BaseHandler):
    async def _page(self, body: str, *, status: int = 200) -> None:
        # The code is in the URL: never send it on to another site, nor keep it in a cache.
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        self.set_status(status)
        template = self.settings["jinja2_env"].from_string(_PAGE)  # the hub's env renders async
        ns = {**self.template_namespace, "xsrf_token": self.xsrf_token.decode("ascii"), "body": body}
        self.finish(await template.render_async(**ns))

    @property
    def users_file(self) -> UsersFile:  # not `users`: BaseHandler.users is the hub's own registry
        return self.authenticator._file

    def _form(self, inner: str) -> str:
        return (f'<form method="post"><input type="hidden" name="_xsrf" '
                f'value="{html.escape(self.xsrf_token.decode())}">{inner}</form>')


class InviteHandler(_Page):
    """``/hub/invite/NAME?code=CODE``: the new user chooses a password, once."""

    async def _refuse(self, exc: UserError, status: int = 403) -> None:
        await self._page(f'<h2>Invite link refused</h2><p class="alert alert-danger">{html.escape(str(exc))}</p>',
                   status=status)

    async def get(self, name):
        code = self.get_argument("code", "")
        try:
            self.users_file.check_invite(name, code)
        except InviteError as exc:
            return await self._refuse(exc, 410 if "expired" in str(exc) else 403)
        n = self.authenticator.min_password_length
        await self._page(f"<h2>Welcome, {html.escape(name)}</h2><p>Choose your password ({n}+ characters). "
                   "This link works once.</p>" + self._form(
                       f'<input type="hidden" name="code" value="{html.escape(code)}">'
                       '<p><label class="form-label" for="password_input">Password</label>'
                       '<input class="form-control" type="password" name="password" id="password_input" '
                       'autocomplete="new-password"></p>'
                       '<p><label class="form-label" for="again_input">The same again</label>'
                       '<input class="form-control" type="password" name="again" id="again_input" '
                       'autocomplete="new-password"></p>'
                       '<button class="btn btn-primary" id="invite_submit">Set password and log in</button>'))

    async def post(self, name):
        code, password = self.get_argument("code", ""), self.get_argument("password", "", strip=False)
        if password != self.get_argument("again", "", strip=False):
            return await self._refuse(UserError("the two passwords differ; open the link again and retype them"), 400)
        try:
            self.users_file.accept_invite(name, code, password, min_length=self.authenticator.min_password_length)
        except InviteError as exc:
            return await self._refuse(exc, 410 if "expired" in str(exc) else 403)
        except UserError as exc:
            return await self._refuse(exc, 400)
        self.log.info("User %s chose a password with their invite link", name)
        user = await self.login_user({"username": name, "password": password})
        self.redirect(self.get_next_url(user) if user else self.get_login_url())


class InvitesHandler(_Page):
    """``/hub/invites`` (admins only): who has no password yet, and a new one-time link
    for any user, shown once."""

    def _check_admin(self):
        user = self.current_user
        if user is None or not user.admin:
            raise web.HTTPError(403, "Only hub admins make invite links.")

    async def _list(self, shown: str = "") -> None:
        rows = []
        for name, entry in sorted(self.users_file.load().items()):
            state = ("invite pending" if entry.get("invite") else "no password yet") if entry.get("password") is None \
                else "has a password"
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{state}</td><td>" + self._form(
                f'<input type="hidden" name="name" value="{html.escape(name)}">'
                f'<button class="btn btn-sm btn-outline-primary" aria-label="New invite link for {html.escape(name)}">'
                'New invite link</button>') + "</td></tr>")
        await self._page(f"<h2>Invite links</h2>{shown}<p>A new link replaces the user's previous one and works once, "
                   f"for {self.authenticator.invite_lifetime // 3600} hours.</p>"
                   f'<table class="table"><tr><th>User</th><th>State</th><th></th></tr>{"".join(rows)}</table>')

    @web.authenticated
    async def get(self):
        self._check_admin()
        await self._list()

    @web.authenticated
    async def post(self):
        self._check_admin()
        name = self.get_argument("name", "")
        try:
            code = self.users_file.invite(name, expires_in=self.authenticator.invite_lifetime)
        except UserError as exc:
            raise web.HTTPError(400, str(exc)) from None
        base = self.authenticator.public_url or f"{self.request.protocol}://{self.request.host}"
        link = html.escape(invite_url(base, name, code))
        self.log.info("Admin %s made an invite link for %s", self.current_user.name, name)
        await self._list(f'<div class="alert alert-success"><p>Invite link for {html.escape(name)} (shown once; '
                   f'send it to them):</p><p><code id="invite_link">{link}</code></p></div>')
