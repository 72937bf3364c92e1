"""Bounded input: how much a client may send the hub, and how much of it the hub keeps.

Rule this module keeps: the hub buffers and stores nothing a client sends past a fixed
size. A body over its limit never reaches a handler: it is read and dropped as it
arrives, then answered 413 with a message naming the limit and what to send instead,
and the hub's log names the request, never the content. Spawn options that an older
hub stored past their limit are cut back when the hub starts (the profile name kept).

The limits, and why these numbers:

- **Spawn options** (a server's ``user_options``, which the hub keeps in its database
  to start the server again): 16 KiB of JSON, counted as the database stores it.
  Atelier's spawners read one field, ``{"profile": NAME}``, NAME being a DNS label of at
  most 63 characters; KubeSpawner's form adds a few ``profile-option-*`` choices. The
  same 16 KiB bounds the whole body of every request that sets them: ``POST``, ``PUT``
  and ``PATCH`` on ``/hub/api/users/NAME/server`` and ``/servers/SERVER``, and the spawn
  form (``/hub/spawn``), and of a new token's request (its ``note`` is stored too).
- **Any other request body to the hub**: 1 MiB. The largest the hub API that Atelier
  uses takes is an admin adding users in bulk (``{"usernames": [...]}``, about 70 bytes a
  name: 15,000 names a request); logins, invites, activity reports, tokens and OAuth
  exchanges are under 4 KiB. Uploads go to a user's server or a service, which the
  proxy routes past the hub.
- Up to 1 GiB of a refused body is read (and dropped) so that the client, which sends
  its whole body before it reads an answer, gets the 413; past that Tornado's own
  refusal stands (400, the connection closed).
- **API tokens a user holds**: 100. Each is a database row (with a note of up to
  16 KiB); the CLI, VS Code and scripts hold a few each. A user asking for one more
  through the REST API gets 403 naming the limit and where to delete tokens
  (``/hub/token``); the tokens the hub makes itself (each server's) count among those
  held but are never refused, nor is an admin's or a service's request for another user.

Where: JupyterHub 6.1.1 builds its HTTP server without a body limit (Tornado's default
is 100 MB, each body held in memory until it is complete) and ``tornado_settings`` reach
the web application, not the server; and it stores a spawn request's options before any
spawner hook runs. So the limits are kept by the hub's HTTP server itself, through
Tornado's own hook for choosing the server class, before the body is buffered.
ref: jupyterhub/app.py JupyterHub.start (HTTPServer(...)), jupyterhub/user.py User.spawn
(orm_spawner.user_options = options), tornado/util.py Configurable.configure
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tornado import httputil
from tornado.httpserver import HTTPServer

__all__ = ["USER_OPTIONS_MAX", "HUB_BODY_MAX", "TOKENS_MAX", "bound_hub_requests", "options_too_large", "stored_size",
           "trim_saved_options"]

KiB, MiB = 1024, 1024 * 1024
#: spawn options, as JSON in the hub database; also the body of a request that sets them
USER_OPTIONS_MAX = 16 * KiB
#: any other request body the hub reads
HUB_BODY_MAX = 1 * MiB
#: how much of a refused body is read (and dropped) so that its client gets the 413
DRAIN_MAX = 1024 * MiB
#: API tokens one user may hold, asking for them themselves
TOKENS_MAX = 100

_SPAWN_FIX = 'send only the profile name, e.g. {"profile": "cpu-small"} (the profiles are listed on /hub/spawn)'


def _size(n: int) -> str:
    """A size as the messages name it.

    >>> _size(16 * 1024), _size(1024 * 1024), _size(1500)
    ('16 KiB', '1 MiB', '1500 bytes')
    """
    for unit, name in ((MiB, "MiB"), (KiB, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} bytes"


def stored_size(options) -> int:
    """Bytes of ``options`` as the hub database keeps them (JupyterHub's ``JSONDict``
    column writes ``json.dumps(value)``, non-ASCII escaped).

    >>> stored_size({"profile": "cpu-small"}), stored_size({"x": "é"})
    (24, 15)
    """
    return len(json.dumps(options, default=str).encode())


def options_too_large(size: int) -> str:
    """The refusal for spawn options of ``size`` bytes: the limit, and what to send."""
    return (f"spawn options are limited to {_size(USER_OPTIONS_MAX)} of JSON and these take {size} bytes; "
            f"{_SPAWN_FIX}")


@dataclass(frozen=True)
class _Rule:
    limit: int
    what: str  # what is limited, for the message: "... are limited to N"
    fix: str
    #: the body is JSON that the hub stores: counted as stored, too (escapes make it longer)
    stored: bool = False

    def refusal(self, size: int, *, as_stored: bool = False) -> str:
        took = f"take {size} bytes as the hub would store them" if as_stored else f"this request sends {size} bytes"
        return f"{self.what} limited to {_size(self.limit)} and {took}; {self.fix}"


_SPAWN = _Rule(USER_OPTIONS_MAX, "spawn options are", _SPAWN_FIX, stored=True)
_SPAWN_FORM = _Rule(USER_OPTIONS_MAX, "spawn forms are", "choose a profile and send the form as the page made it")
_TOKEN = _Rule(USER_OPTIONS_MAX, "token requests are", "keep the note to a few words")
_OTHER = _Rule(HUB_BODY_MAX, "request bodies to the hub are",
               "files go to your server (/user/NAME/) or to a service, not to the hub")


def _rule_for(handler_class) -> _Rule:
    """Which limit a request gets, by the hub handler that would read it: by class, not
    by path, so that no spelling of a URL reaches a handler past its limit."""
    from jupyterhub.apihandlers.users import UserServerAPIHandler, UserTokenListAPIHandler
    from jupyterhub.handlers.pages import SpawnHandler

    if not isinstance(handler_class, type):
        return _OTHER
    if issubclass(handler_class, UserServerAPIHandler):
        return _SPAWN
    if issubclass(handler_class, SpawnHandler):
        return _SPAWN_FORM
    if issubclass(handler_class, UserTokenListAPIHandler):
        return _TOKEN
    return _OTHER


def _content_length(headers: httputil.HTTPHeaders) -> int | None:
    value = headers.get("Content-Length")
    if value is None:
        return None
    first = re.split(r",[ \t]*", value)[0].strip()  # Tornado refuses unequal duplicates itself
    return int(first) if first.isdigit() else None


def _json_stored_size(body: bytes) -> int | None:
    try:
        return stored_size(json.loads(body))
    except (ValueError, RecursionError):  # not JSON: the handler answers 400 itself
        return None


class _BoundedRequest(httputil.HTTPMessageDelegate):
    """One request to the hub: passed on while its body is within its limit; otherwise
    read and dropped as it arrives, and answered 413 once it is all in (a client reads
    no answer before it has sent its body). Keep-alive is kept: the body is consumed."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, conn: httputil.HTTPConnection, app) -> None:
        self.inner, self.conn, self.app = inner, conn, app
        self.rule = _OTHER
        self.received = 0
        self.refused: int | None = None  # the size refused
        self.as_stored = False
        self.forwarded = False  # whether the hub's own delegate has the request
        self.kept: list[bytes] | None = None  # a spawn request's body, to count it as stored

    def headers_received(self, start_line, headers):
        self.start_line = start_line
        try:
            request = httputil.HTTPServerRequest(connection=self.conn, start_line=start_line, headers=headers)
            self.rule = _rule_for(self.app.find_handler(request).handler_class)
        except Exception:  # a request Tornado cannot route answers as before, under the hub-wide limit
            self.rule = _OTHER
        declared = _content_length(headers)
        if declared is not None and declared > self.rule.limit:
            self.refused = declared
            # Read the whole body (dropped, chunk by chunk) so the 413 reaches the client.
            self.conn.set_max_body_size(min(declared, DRAIN_MAX))
            return None
        if self.rule.stored:
            self.kept = []
        self.forwarded = True
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk):
        self.received += len(chunk)
        if self.refused is not None:
            return None
        if self.received > self.rule.limit:  # a body sent without a length (chunked)
            self._refuse(self.received)
            return None
        if self.kept is not None:
            self.kept.append(chunk)
        return self.inner.data_received(chunk)

    def finish(self):
        if self.refused is None and self.kept is not None:
            size = _json_stored_size(b"".join(self.kept))
            if size is not None and size > self.rule.limit:
                self.as_stored = True
                self._refuse(size)
        if self.refused is None:
            return self.inner.finish()
        if self.received > self.refused:  # chunked: everything that came
            self.refused = self.received
        self._answer()

    def on_connection_close(self):
        if self.forwarded:
            self.inner.on_connection_close()

    def _refuse(self, size: int) -> None:
        self.refused = size
        if self.forwarded:  # the hub's delegate drops what it buffered
            self.forwarded = False
            self.inner.on_connection_close()

    def _answer(self) -> None:
        hub = self.app.settings["hub"]
        path = self.start_line.path.split("?", 1)[0]
        message = self.rule.refusal(self.refused, as_stored=self.as_stored)
        if path.startswith(hub.base_url + "api/"):  # as JupyterHub's API answers errors
            body, kind = json.dumps({"status": 413, "message": message}).encode(), "application/json"
        else:
            body, kind = (message + "\n").encode(), "text/plain; charset=UTF-8"
        headers = httputil.HTTPHeaders({"Content-Type": kind, "Content-Length": str(len(body))})
        self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", 413, "Content Too Large"), headers, body)
        self.conn.finish()
        log = self.app.settings.get("log") or logging.getLogger("JupyterHub")
        # The request, never its content (a path can be long: cut).
        log.warning("413 %s %s: a body of %d bytes%s, over the %s limit; dropped, nothing stored",
                    self.start_line.method, path[:200], self.refused, " as stored" if self.as_stored else "",
                    _size(self.rule.limit))


class _BoundedHTTPServer(HTTPServer):
    """Tornado's HTTP server, bounding the bodies of the JupyterHub application's requests
    (known by the ``Hub`` in its settings); any other application it serves is untouched."""

    def start_request(self, server_conn, request_conn):
        delegate = super().start_request(server_conn, request_conn)
        from jupyterhub.objects import Hub

        app = self.request_callback
        if isinstance(getattr(app, "settings", None), dict) and isinstance(app.settings.get("hub"), Hub):
            return _BoundedRequest(delegate, request_conn, app)
        return delegate


def bound_hub_requests() -> None:
    """Make the HTTP server JupyterHub builds in this process keep the limits above, and
    its token API the count of tokens (idempotent; called from the hub's configuration,
    before the hub builds its server)."""
    if HTTPServer.configured_class() is not _BoundedHTTPServer:
        HTTPServer.configure(_BoundedHTTPServer)
    _bound_token_count()


def _bound_token_count() -> None:
    """``POST /hub/api/users/NAME/tokens`` by NAME themselves: refused (403) once they
    hold :data:`TOKENS_MAX`. JupyterHub has no such setting; its handler is wrapped in
    place (the hub's configuration runs before its handlers are made).
    ref: jupyterhub/apihandlers/users.py UserTokenListAPIHandler.post"""
    from jupyterhub.apihandlers.users import UserTokenListAPIHandler
    from tornado import web

    post = UserTokenListAPIHandler.post
    if getattr(post, "atelier_bounded", False):
        return

    async def bounded_post(self, user_name):
        requester = self.current_user
        if requester is not None and getattr(requester, "name", None) == user_name \
                and requester.kind == "user" and len(requester.api_tokens) >= TOKENS_MAX:
            raise web.HTTPError(403, f"tokens: you hold {len(requester.api_tokens)} API tokens, the most one user "
                                     f"may ({TOKENS_MAX}); delete those you no longer use on /hub/token, then ask "
                                     "again")
        return await post(self, user_name)

    bounded_post.atelier_bounded = True
    UserTokenListAPIHandler.post = bounded_post


def trim_saved_options(db: str | Path, *, profiles: Iterable[str], log: logging.Logger) -> int:
    """Cut back every server's stored spawn options that exceed :data:`USER_OPTIONS_MAX`
    in the hub's SQLite database ``db`` to ``{"profile": NAME}`` (NAME kept where it is one
    of ``profiles``) or ``{}``, then VACUUM it so that the file shrinks. Run before the
    hub opens the database. Logs each server and size, never the content. Returns how
    many servers' options were cut back."""
    db = Path(db)
    if not db.exists():
        return 0
    known = set(profiles)
    con = sqlite3.connect(db, timeout=30)
    try:
        try:
            rows = con.execute(
                "SELECT s.id, u.name, s.name, length(CAST(s.user_options AS BLOB)) FROM spawners s "
                "LEFT JOIN users u ON u.id = s.user_id WHERE length(CAST(s.user_options AS BLOB)) > ?",
                (USER_OPTIONS_MAX,)).fetchall()
        except sqlite3.OperationalError:  # no spawners table: a database the hub has not set up yet
            return 0
        for sid, user, server, size in rows:
            (text,) = con.execute("SELECT user_options FROM spawners WHERE id = ?", (sid,)).fetchone()
            try:
                profile = json.loads(text).get("profile")
            except (ValueError, RecursionError, AttributeError):
                profile = None
            kept = {"profile": profile} if isinstance(profile, str) and profile in known else {}
            con.execute("UPDATE spawners SET user_options = ? WHERE id = ?", (json.dumps(kept), sid))
            con.commit()
            log.warning("Spawn options of %s/%s took %d bytes, over the %s limit: cut back to %s",
                        str(user)[:64], str(server or "")[:64] or "(default server)", size,
                        _size(USER_OPTIONS_MAX), f"profile {kept['profile']}" if kept else "none (the default profile)")
        if rows:
            before = db.stat().st_size
            try:
                con.execute("VACUUM")
            except sqlite3.OperationalError as exc:  # busy or a full disk: trimmed, just not shrunk
                log.warning("The hub database was not compacted after the cut (%s); it shrinks at a later start", exc)
            else:
                log.info("The hub database was compacted: %d -> %d bytes", before, db.stat().st_size)
        return len(rows)
    finally:
        con.close()
