"""The front of the MLflow tracking server: hub login in, MLflow behind, from the first second.

Rule this module keeps: nobody reaches MLflow without a hub identity, and MLflow sees
each request as that identity. Browsers log in through the hub (OAuth cookie); sessions
and scripts send their hub API token (``MLFLOW_TRACKING_TOKEN``, sent by MLflow as
``Authorization: Bearer``). Behind the front runs MLflow's own auth app (what ``mlflow
server --app-name basic-auth`` runs): the front makes an MLflow account for each hub
identity (:class:`.mlflow_accounts.Accounts`; passwords kept 0600 in the state folder)
and calls MLflow as that account, so MLflow's permission model decides who may change
what, and a request that does not come through the front has no password (401). The
front also stamps the hub user on each new run, keeps ``mlflow.user`` as stamped and
``users/NAME`` experiment names for their user (:func:`rewrite_body`), and streams
request and response bodies both ways, with back-pressure, so a multi-GB artifact
passes in bounded memory (:class:`ProxyHandler`, :func:`backend_path`). Every rule is
matched against the decided path (:func:`._front.decided_path`: decoded, dot segments
and doubled slashes resolved, encoded slashes refused), and that path is what MLflow
gets; the hub is asked about a token again after a few seconds, so a removed user
stops here at once.

The front listens at once, so the hub (which waits for each managed service's URL
before it routes the login page) is never held up by MLflow's start; until MLflow
answers, ``/health`` says 503 and every other request waits a bounded time
(``--request-wait``) and then fails with a message naming the endpoint. The real
server (:mod:`.mlflow_server`) listens on a private 127.0.0.1 port, supervised until
ready by :class:`._process.ReadyWatch`: its own process group, restarted if it dies,
ended with this process. What the two fronts share (header filters, JSON errors, the
503 while starting) is :mod:`._front`'s.

In cluster mode (``--server-url``) the same front runs in the hub pod before the
deployment's own MLflow server (a Deployment running MLflow's auth app, with the same
static prefix), whose admin password is mounted in the hub pod; each account's
password is derived from it (:class:`.mlflow_accounts.DerivedCredentials`), so
no password is stored in the hub pod (with ``--state``, the accounts' names are, on the
hub's volume). Only the hub pod may reach that server (the network policy), and without
an account's password it answers 401 anyway.

In both modes the front reads the hub's users every few seconds (its token has
``list:users``) and deletes the MLflow account of each user the hub no longer has
(:meth:`.mlflow_accounts.Accounts.remove_gone`): a removed user's account goes within
seconds of the removal, or at the front's next start.

Run by the hub as ``python -m atelier_hub.services.mlflow_front --state DIR --record F ...``
(embedded) or ``... --server-url URL --admin-password-file F --listen HOST:PORT`` (cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import httpclient, httputil, web
from tornado.httpserver import HTTPServer
from tornado.log import access_log

from . import _front
from ._api import USERS_EVERY_S, hub_users
from ._front import HUB_AUTH_CACHE_S, RefusedPath, decided_path, forward_path, identity
from ._process import ReadyWatch, Supervisor, die_with_parent, free_port
from .base import local_url
from .mlflow import personal_experiment
from .mlflow_accounts import Accounts, DerivedCredentials, prepare_auth
from .mlflow_server import FRONT_USER, Backend, server_command

__all__ = ["identity", "rewrite_rule", "rewrite_body", "hub_managed", "switched_off", "with_ui_defaults", "backend_path",
           "Refused", "ProxyHandler", "main"]

# Hop-by-hop headers and credentials that must not travel to MLflow.
_DROP_REQUEST = _front.DROP_REQUEST | {"origin", "referer"}

# The front collects at most this much of the few calls it rewrites (JSON of a few keys).
SMALL_BODY_MAX = 1024**2
_API = r"/(?:ajax-)?api/2\.0/mlflow/"
# The calls whose body the front reads (and, for runs/create, rewrites) before MLflow does.
_RULES = ("runs/create", "experiments/create", "experiments/update", "runs/set-tag", "runs/delete-tag",
          "runs/log-batch")
# Written by the front when a run is created; no call changes it after (MLflow would).
USER_TAG = "mlflow.user"


class Refused(ValueError):
    """A call the front will not pass on: ``status`` (400, 403) and a message that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def rewrite_rule(path: str, *, prefix: str, method: str) -> str | None:
    """Which of the calls the front reads the body of ``path`` is, if any (see
    :func:`rewrite_body`). ``path`` is the decided one (:func:`._front.decided_path`);
    a trailing slash does not hide a call.

    >>> rewrite_rule("/services/mlflow/ajax-api/2.0/mlflow/runs/create/", prefix="/services/mlflow", method="POST")
    'runs/create'
    >>> rewrite_rule("/services/mlflow/api/2.0/mlflow/runs/update", prefix="/services/mlflow", method="POST")
    """
    m = re.fullmatch(re.escape(prefix) + _API + "(.+?)/?", path) if method == "POST" else None
    return m.group(1) if m and m.group(1) in _RULES else None


def hub_managed(path: str, *, prefix: str) -> bool:
    """Whether ``path`` is one of MLflow's own account calls (sign-up, create, password,
    admin flag, delete), which the front refuses: accounts follow the hub's users, and a
    password changed behind the front's back would lock its user out.

    >>> hub_managed("/p/api/2.0/mlflow/users/update-password", prefix="/p"), hub_managed("/p/signup", prefix="/p")
    (True, True)
    >>> hub_managed("/p/api/2.0/mlflow/users/current", prefix="/p")
    False
    """
    return re.fullmatch(re.escape(prefix) + rf"(?:/signup|{_API}users/(?:create|create-ui|update-password|"
                        r"update-admin|delete))/?", path) is not None


def switched_off(path: str, *, prefix: str) -> str | None:
    """Why the front refuses ``path``, if it belongs to a part of MLflow that Atelier
    switches off; else None.

    MLflow's assistant (``/ajax-api/3.0/mlflow/assistant``) runs the Bash tool calls of
    a model its caller chooses on the tracking server's machine, for any request from
    127.0.0.1, and every request the front forwards comes from there: any user could run
    commands as the server, which holds everyone's runs and the accounts' passwords.
    ref: mlflow/server/assistant/api.py (_is_localhost), mlflow/assistant/providers/tool_executor.py

    >>> switched_off("/p/ajax-api/3.0/mlflow/assistant/config", prefix="/p")[:29]
    "MLflow's assistant is off her"
    >>> switched_off("/p/ajax-api/3.0/mlflow/assistantx", prefix="/p") is None
    True
    """
    if re.fullmatch(re.escape(prefix) + r"/(?:ajax-)?api/[^/]+/mlflow/assistant(?:/.*)?", path):
        return ("MLflow's assistant is off here: it would run commands on the tracking server's machine "
                "for whoever calls it (see docs/security.md)")
    return None


# MLflow's UI keeps some choices in the browser (localStorage; the key is NAME_v1, the
# value JSON). Where the browser has none, the front's copy of the UI's page sets:
# - the sidebar's "GenAI" or "Model training" choice, which starts on GenAI: Atelier's users
#   train models;
# - that the assistant's panel was opened once already: on a page at localhost the UI opens
#   it on the first load, and the front refuses the assistant (:func:`switched_off`).
# A user's own choice stays. ref: mlflow/server/js (useLocalStorage: key + "_v" + version)
UI_CHOICES = {"mlflow.workflowType_v1": '"machine_learning"', "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}
UI_DEFAULTS = ("<script>try{for(const[k,v]of Object.entries(" + json.dumps(UI_CHOICES)
               + "))if(localStorage.getItem(k)===null)localStorage.setItem(k,v)}catch(e){}</script>").encode()


def with_ui_defaults(page: bytes) -> bytes:
    """MLflow's UI page with :data:`UI_DEFAULTS` first in its head (unchanged if it has none).

    >>> with_ui_defaults(b"<html><head><title>MLflow</title>").count(b'machine_learning')
    1
    >>> with_ui_defaults(b"<p>no head</p>")
    b'<p>no head</p>'
    """
    at = page.lower().find(b"<head>")
    return page if at < 0 else page[:at + 6] + UI_DEFAULTS + page[at + 6:]


def _spellings(data: dict, field: str) -> list:
    """Every value ``data`` gives ``field``: MLflow takes a field by its proto name
    (``new_name``) or its JSON name (``newName``), so a check must see both.
    ref: mlflow/server/handlers.py (_get_request_message, _reject_conflicting_field_aliases)"""
    head, *rest = field.split("_")
    camel = head + "".join(w.title() for w in rest)
    return [data[k] for k in dict.fromkeys((field, camel)) if k in data]


def rewrite_body(rule: str, body: bytes, *, user: str, admin: bool) -> bytes:
    """The body MLflow gets for a call of ``rule`` by the MLflow account ``user`` (pure);
    :class:`Refused` for a call the front does not pass on.

    The body is read as MLflow reads it (JSON, or a JSON string of JSON from older
    clients, fields by either spelling) and passed on re-written, so MLflow acts on
    what was checked. A new run records the hub user, whatever the client sent:
    MLflow's client fills ``user_id`` and the ``mlflow.user`` tag from the OS account,
    and MLflow's server stores what it is sent. ``mlflow.user`` is not changed after
    (set, deleted or logged in a batch), by anyone: it says who made the run.
    Experiment names under ``users/`` are their user's (each session's default
    experiment is ``users/NAME``): nobody else may take one first.

    >>> json.loads(rewrite_body("runs/create", b'{"experiment_id": "1", "userId": "root",'
    ...     b' "tags": [{"key": "mlflow.user", "value": "root"}]}', user="ada", admin=False))
    {'experiment_id': '1', 'tags': [{'key': 'mlflow.user', 'value': 'ada'}], 'user_id': 'ada'}
    >>> rewrite_body("experiments/create", b'{"name": "users/bob"}', user="ada", admin=False)
    Traceback (most recent call last):
    atelier_hub.services.mlflow_front.Refused: experiment name 'users/bob': ...; ada may use users/ada or users/ada/...
    >>> rewrite_body("runs/set-tag", b'{"run_id": "r", "key": "mlflow.user", "value": "bob"}', user="a", admin=True)
    Traceback (most recent call last):
    atelier_hub.services.mlflow_front.Refused: tag 'mlflow.user' is set by the MLflow front when a run is created ...
    """
    try:
        data = json.loads(body) if body.strip() else {}
        if isinstance(data, str):
            data = json.loads(data)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Refused(400, f"the body of {rule} must be a JSON object")
    if rule == "runs/create":
        tags = [t for t in data.get("tags") or [] if not (isinstance(t, dict) and t.get("key") == USER_TAG)]
        data.pop("userId", None)
        data["user_id"] = user
        data["tags"] = [*tags, {"key": USER_TAG, "value": user}]
    elif rule in ("runs/set-tag", "runs/delete-tag", "runs/log-batch"):
        if rule == "runs/log-batch":
            tags = [t for value in _spellings(data, "tags") for t in (value if isinstance(value, list) else [value])]
            keys = [t.get("key") for t in tags if isinstance(t, dict)]
        else:
            keys = _spellings(data, "key")
        if USER_TAG in keys:
            raise Refused(403, f"tag {USER_TAG!r} is set by the MLflow front when a run is created (the hub user "
                               "who made it) and is never changed after; leave it out of set_tag, delete_tag "
                               "and log_batch")
    else:
        own = personal_experiment(user)
        for name in _spellings(data, "name" if rule == "experiments/create" else "new_name"):
            if isinstance(name, str) and name.startswith("users/") and not admin and not (
                    name == own or name.startswith(own + "/")):
                raise Refused(403, f"experiment name {name!r}: names under users/ belong to their user; "
                                   f"{user} may use {own} or {own}/...")
    return json.dumps(data).encode()


def backend_path(uri: str, *, prefix: str, method: str) -> str:
    """Where MLflow answers ``uri``: artifact downloads and uploads go to MLflow's native
    streaming routes, which it serves without the static prefix (under the prefix they
    reach its Flask app, which holds the whole body in memory). Its auth middleware
    guards those routes by the same experiment permissions.
    ref: mlflow/server/fastapi_app.py (artifact_router has no prefix),
    mlflow/server/auth/__init__.py (_is_native_fastapi_proxy_artifact_path)

    >>> backend_path("/services/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/a.bin",
    ...              prefix="/services/mlflow", method="PUT")
    '/api/2.0/mlflow-artifacts/artifacts/1/r/a.bin'
    >>> backend_path("/services/mlflow/api/2.0/mlflow/runs/get?run_id=1", prefix="/services/mlflow", method="GET")
    '/services/mlflow/api/2.0/mlflow/runs/get?run_id=1'
    """
    if method in ("GET", "PUT"):
        for api in ("/api/2.0/mlflow-artifacts/artifacts/", "/ajax-api/2.0/mlflow-artifacts/artifacts/"):
            if uri.startswith(prefix + api):
                return uri[len(prefix):]
    return uri


@web.stream_request_body
class ProxyHandler(HubOAuthenticated, web.RequestHandler):
    """Forwards every request under the service prefix to the private MLflow server,
    as the hub user's own MLflow account, streaming both bodies."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, backend: Backend, accounts: Accounts, open_paths: frozenset[str], health: str,
                   prefix: str):
        self.backend = backend
        self.accounts = accounts
        self.open_paths = open_paths
        self.health = health
        self.prefix = prefix
        self._queue: asyncio.Queue | None = None
        self._upstream: asyncio.Future | None = None
        self._small: bytearray | None = None
        self._rule: str | None = None
        self._ident: tuple[str, bool] | None = None
        self._counted: str | None = None  # whose request this is at MLflow (Accounts.begin)
        self._fetch_args: dict = {}
        self._page: bytearray | None = None
        self._body_read = False
        self._path = ""

    def check_xsrf_cookie(self):
        """MLflow's UI sends no _xsrf token: accept cookie-authenticated writes that the
        browser itself marks same-origin, the standard CSRF defence, refuse the rest."""
        site = self.request.headers.get("Sec-Fetch-Site")
        if site in ("same-origin", "none"):
            return
        origin = self.request.headers.get("Origin")
        if site is None and origin and urlparse(origin).netloc == self.request.host:
            return
        raise web.HTTPError(403, "cross-site request refused")

    def _user_or_login(self) -> bool:
        if self._path in self.open_paths or self.current_user:
            return True
        browser_page = "text/html" in self.request.headers.get("Accept", "")
        if self.request.method in ("GET", "HEAD") and browser_page and "Authorization" not in self.request.headers:
            self._closing()
            self.redirect(self.get_login_url())
            return False
        raise web.HTTPError(
            403, "MLflow here needs a JupyterHub login: set MLFLOW_TRACKING_TOKEN to your hub API token"
        )

    def _has_body(self) -> bool:
        h = self.request.headers
        return self.request.method in ("POST", "PUT", "PATCH") or (
            h.get("Content-Length", "0") != "0" or "Transfer-Encoding" in h)

    async def prepare(self):
        """Runs before the body arrives: the login, MLflow's readiness and the upstream
        request are settled first, so the body goes straight through (or, for the few
        small calls the front rewrites, is collected up to a bound). Every decision is
        made on the decided path (:func:`._front.decided_path`), and that path is the one
        forwarded: MLflow decodes what it gets, so a raw path would be read twice."""
        try:
            self._path = decided_path(self.request.path)
        except RefusedPath as exc:
            raise web.HTTPError(400, str(exc)) from None
        if self._path != self.prefix and not self._path.startswith(self.prefix + "/"):
            raise web.HTTPError(400, f"path {self.request.path!r} leads outside {self.prefix}/; "
                                     "send the path without '..'")
        if not self._user_or_login():
            return
        if (why := switched_off(self._path, prefix=self.prefix)) is not None:
            raise web.HTTPError(403, why)
        if hub_managed(self._path, prefix=self.prefix):
            raise web.HTTPError(403, "MLflow's accounts here follow the hub's users: manage them with "
                                     "`atelier users` or the hub's admin page")
        if not self.backend.ready:
            # /health tells the truth at once (quietly: it is polled); a real request
            # waits for MLflow a while.
            if self._path == self.health:
                _front.answer_starting(self, self.backend.starting_message(), code_key="error_code")
                return
            if not await self.backend.wait_ready():
                raise web.HTTPError(503, self.backend.starting_message())
        headers = _front.copy_headers(self.request.headers.get_all(), _DROP_REQUEST)
        headers["X-Forwarded-Host"] = self.request.host
        headers["X-Forwarded-Proto"] = self.request.protocol
        if self.current_user:
            self._ident = identity(self.current_user)
            headers["Authorization"] = await self.accounts.authorization(*self._ident)
            self._counted = self._ident[0]
            self.accounts.begin(self._counted)
        if self.request.method == "GET" and self._path in (self.prefix + "/", self.prefix + "/index.html"):
            # The UI's page (1 KB) is read whole, uncompressed, to set the UI's defaults.
            self._page = bytearray()
            headers.pop("Accept-Encoding", None)
        query = f"?{self.request.query}" if self.request.query else ""
        self._fetch_args = {"url": self.backend.url + backend_path(forward_path(self._path) + query,
                                                                   prefix=self.prefix, method=self.request.method),
                            "headers": headers}
        if not self._has_body():
            return
        self._rule = rewrite_rule(self._path, prefix=self.prefix, method=self.request.method)
        if self._rule and self._ident:
            self._small = bytearray()
            return
        # The body streams: a few chunks in flight at most (tornado waits for
        # data_received before it reads on), so memory stays flat for any size.
        if "Content-Length" in self.request.headers:
            headers["Content-Length"] = self.request.headers["Content-Length"]
        self._queue = asyncio.Queue(maxsize=4)

        async def producer(write):
            while (chunk := await self._queue.get()) is not None:
                await write(chunk)

        self._upstream = asyncio.ensure_future(self._fetch(body_producer=producer))

    async def data_received(self, chunk: bytes):
        if self._small is not None:
            if len(self._small) + len(chunk) > SMALL_BODY_MAX:
                raise web.HTTPError(413, f"request body over {SMALL_BODY_MAX} bytes for {self.request.path}")
            self._small += chunk
        elif self._queue is not None:
            await self._offer(chunk)

    async def _offer(self, item: bytes | None) -> None:
        """Hand a piece of the body (None: the end) to the upstream request, unless MLflow
        has already answered (e.g. 403 before the body ended) and reads no more."""
        put = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({put, self._upstream}, return_when=asyncio.FIRST_COMPLETED)
        put.cancel()

    async def _fetch(self, **body) -> None:
        started = False

        def on_header(line: str) -> None:
            nonlocal started
            line = line.rstrip("\r\n")
            if line.startswith("HTTP/"):
                status = httputil.parse_response_start_line(line)
                self.set_status(status.code, status.reason)
                self._headers = httputil.HTTPHeaders()
            elif line:
                name, _, value = line.partition(":")
                if self._page is not None and name.lower() == "content-length":
                    return  # the page changes length
                if name.lower() not in _front.DROP_RESPONSE:
                    self.add_header(name.strip(), value.strip())
            started = True

        def on_chunk(chunk: bytes):
            if self._page is not None:
                self._page += chunk
                return None
            self.write(chunk)
            # Returned to tornado's client, which waits for it before reading on:
            # a slow reader slows MLflow down instead of filling this process.
            return self.flush()

        request = httpclient.HTTPRequest(
            self._fetch_args["url"],
            method=self.request.method,
            headers=self._fetch_args["headers"],
            allow_nonstandard_methods=True,
            follow_redirects=False,
            decompress_response=False,
            header_callback=on_header,
            streaming_callback=on_chunk,
            request_timeout=3600,
            **body,
        )
        try:
            await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as exc:
            if not started:
                raise web.HTTPError(502, f"MLflow server not reachable: {exc}") from None

    async def _forward(self, *_path):
        self._body_read = True  # tornado calls the method once the whole body has arrived
        if self._finished:
            return
        if self._queue is not None:
            await self._offer(None)
            await self._upstream
        elif self._small is not None:
            name, admin = self._ident
            try:
                body = rewrite_body(self._rule, bytes(self._small), user=name, admin=admin)
            except Refused as exc:
                raise web.HTTPError(exc.status, str(exc)) from None
            # The body changed length: MLflow reads the new one's.
            self._fetch_args["headers"].pop("Content-Length", None)
            self._fetch_args["headers"]["Content-Type"] = "application/json"
            await self._fetch(body=body)
        else:
            await self._fetch(body=b"" if self.request.method in ("POST", "PUT", "PATCH") else None)
        if self._page is not None:
            self.write(with_ui_defaults(bytes(self._page)))
        self.finish()

    def on_connection_close(self):
        if self._upstream is not None and not self._upstream.done():
            self._upstream.cancel()
        self._uncount()

    def on_finish(self):
        self._uncount()

    def _uncount(self) -> None:
        if self._counted is not None:
            self.accounts.end(self._counted)
            self._counted = None

    def _closing(self) -> None:
        if not self._body_read:
            # Answered before the request was read to its end (in prepare, for a GET too:
            # tornado has not yet marked even an empty body read): tornado drops the
            # connection after this answer, so say so; a client (the hub's proxy) reusing
            # it would get nothing (CI27: "socket hang up", a 503, after a refused GET;
            # CI14: the same after the login redirect).
            self.set_header("Connection", "close")

    def write_error(self, status_code, **kwargs):
        self._closing()
        _front.finish_json_error(self, status_code, kwargs, code_key="error_code")

    get = head = post = put = patch = delete = options = _forward


def _log_request(handler: web.RequestHandler) -> None:
    """Tornado's request log, less the readiness probes (one a second while starting)."""
    if handler.request.path.endswith("/health"):
        return
    status = handler.get_status()
    log = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
    log("%d %s %.2fms", status, handler._request_summary(), 1000.0 * handler.request.request_time())

def _admin_password(path: Path) -> str:
    """The deployment's MLflow admin password, from the file the hub pod mounts (a
    Secret); a message naming the file and the fix when it is missing or empty."""
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise SystemExit(f"MLflow front: cannot read the MLflow admin password from {path} ({exc.strerror}); "
                         "the cluster settings' mlflow.admin_secret names the Secret (key `admin-password`) "
                         "mounted there") from None
    if not password:
        raise SystemExit(f"MLflow front: {path} is empty; put the MLflow admin password (the server's "
                         "MLFLOW_AUTH_ADMIN_PASSWORD) in the Secret's `admin-password` key")
    return password


def main(argv: list[str] | None = None) -> None:
    die_with_parent()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, help="folder for the backend store (embedded: a private server); "
                    "cluster mode: where the names of the accounts made are kept")
    ap.add_argument("--record", type=Path, help="file recording the server's process group (embedded)")
    ap.add_argument("--artifacts-destination", help="where the private server writes artifacts (embedded)")
    ap.add_argument("--server-url", help="cluster mode: the deployment's MLflow server (`mlflow server --app-name "
                    "basic-auth --static-prefix PREFIX`), whose admin is " + FRONT_USER + "; no private server")
    ap.add_argument("--admin-password-file", type=Path,
                    help="cluster mode: the file holding that server's admin password (a mounted Secret)")
    ap.add_argument("--listen", help="HOST:PORT to listen on (default: the hub's JUPYTERHUB_SERVICE_URL)")
    ap.add_argument("--public-url", default="", help="the URL users reach MLflow at, for messages")
    # Under the session's MLFLOW_HTTP_REQUEST_TIMEOUT (60 s), so the client sees the 503
    # and its own retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES) wait for the rest.
    ap.add_argument("--request-wait", type=float, default=50,
                    help="seconds a request waits for a starting MLflow before it gets 503")
    args = ap.parse_args(argv)
    if args.server_url and not args.admin_password_file:
        ap.error("--server-url needs --admin-password-file (the server's admin password)")
    if not args.server_url and not (args.state and args.record and args.artifacts_destination):
        ap.error("without --server-url, --state, --record and --artifacts-destination are needed")

    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    if args.listen:
        host, _, port = args.listen.rpartition(":")
    else:
        listen = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
        host, port = listen.hostname, listen.port
    public = args.public_url or os.environ.get("JUPYTERHUB_PUBLIC_URL") or prefix
    # What MLflow writes (its tracking store, the auth store) is this account's alone.
    os.umask(0o077)
    backend = Backend(public=public, wait=args.request_wait)
    if args.server_url:
        # Cluster mode: the deployment's server; accounts' passwords derived, nothing stored.
        names = None
        if args.state:
            args.state.mkdir(parents=True, exist_ok=True)
            names = args.state / "accounts.json"
        credentials = DerivedCredentials(_admin_password(args.admin_password_file), names)
        backend.url = args.server_url.rstrip("/")
        sup = None
    else:
        args.state.mkdir(parents=True, exist_ok=True)
        args.record.parent.mkdir(parents=True, exist_ok=True)
        credentials, auth_env = prepare_auth(args.state / "auth")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # ten processes -> two
        sup = Supervisor([], name="mlflow server", record_file=args.record, env=env, grace=10)

        def before_start() -> None:
            # A new private port at each start: a predecessor's port may still linger.
            port = free_port()
            backend.url, backend.ready, backend.since = local_url(port), False, time.monotonic()
            sup.cmd, server_env = server_command(port=port, prefix=prefix, state=args.state,
                                                 artifacts_destination=args.artifacts_destination, auth=auth_env)
            sup.env = {**env, **server_env}

        sup.before_start = before_start
    accounts = Accounts(credentials=credentials, backend=backend, prefix=prefix)

    # Every handler's hub_auth is this one instance (a singleton): the hub is asked again
    # about a token after HUB_AUTH_CACHE_S, so a removed user is refused within seconds.
    HubOAuth.instance(cache_max_age=HUB_AUTH_CACHE_S)

    async def run() -> None:
        # Long uploads and downloads must not queue the UI's calls behind them; a
        # download streams (streaming_callback), so its size is not held here.
        httpclient.AsyncHTTPClient.configure(None, max_clients=64, max_body_size=1 << 42)
        app = web.Application(
            [
                (rf"{prefix}/oauth_callback", HubOAuthCallbackHandler),
                (rf"{prefix}(/.*)?", ProxyHandler,
                 {"backend": backend, "accounts": accounts, "open_paths": frozenset({f"{prefix}/health"}),
                  "health": f"{prefix}/health", "prefix": prefix}),
            ],
            cookie_secret=os.urandom(32),
            log_function=_log_request,
        )
        # Bodies stream through (ProxyHandler): the size limit is MLflow's and the store's.
        HTTPServer(app, max_body_size=1 << 42).listen(int(port), host)
        print(f"MLflow front listening at {prefix}/; "
              f"{'waiting for ' + backend.url if sup is None else 'starting mlflow server'} ...", flush=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        def ready(_pid: int) -> None:
            backend.ready = True
            print(f"MLflow ready behind hub login at {prefix}/ "
                  f"({time.monotonic() - backend.since:.0f} s)", flush=True)

        def lost() -> None:
            backend.ready = False

        follow = asyncio.create_task(follow_hub_users(accounts, backend, stopping))
        if sup is None:
            await watch_server(backend, prefix, credentials.header(FRONT_USER), stopping, ready, lost)
            follow.cancel()
            return
        watch = ReadyWatch(sup, on_ready=ready, on_lost=lost)
        sup.start()
        while not stopping.is_set() and watch.step():
            if watch.probing is not None and await backend.probe(prefix, credentials.header(FRONT_USER)):
                watch.ready()
            try:
                await asyncio.wait_for(stopping.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        watch.close()
        follow.cancel()

    asyncio.run(run())


async def follow_hub_users(accounts: Accounts, backend: Backend, stopping: asyncio.Event) -> None:
    """Every :data:`USERS_EVERY_S` seconds, while MLflow answers: the accounts of users
    the hub no longer has are deleted (:meth:`Accounts.remove_gone`). Without a hub
    token (the front run by hand) there is nothing to follow."""
    api_url, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if not (api_url and token):
        return
    while not stopping.is_set():
        if backend.ready:
            read_at = time.monotonic()
            try:
                users = await asyncio.to_thread(hub_users, api_url, token)
            except (OSError, ValueError, KeyError) as exc:
                print(f"MLflow front: the hub's users could not be read ({exc}); accounts stay", flush=True)
            else:
                await accounts.remove_gone(set(users), read_at)
        try:
            await asyncio.wait_for(stopping.wait(), USERS_EVERY_S)
        except asyncio.TimeoutError:
            pass


async def watch_server(backend: Backend, prefix: str, authorization: str, stopping: asyncio.Event,
                       ready, lost) -> None:
    """Cluster mode: the deployment's server is another Deployment's; the front only
    follows whether it answers (as its admin), every second while not, every 10 s after."""
    while not stopping.is_set():
        up = await backend.probe(prefix, authorization)
        if up and not backend.ready:
            ready(0)
        elif not up and backend.ready:
            print(f"MLflow at {backend.url} stopped answering", flush=True)
            lost()
        try:
            await asyncio.wait_for(stopping.wait(), 10 if up else 1)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    main()
