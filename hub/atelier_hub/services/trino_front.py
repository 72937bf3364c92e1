"""The front of Trino: a hub token in, the token's user as Trino's user, Trino behind.

Rule this module keeps: nobody queries Trino without a hub identity, and nobody
chooses whom they query as. Clients send their hub API token (the session's
``JUPYTERHUB_API_TOKEN``) in one of the ways Trino's own clients can send a secret over
plain HTTP on loopback:

- ``Authorization: Bearer|token TOKEN``, or Basic with the token as the password
  (the Python client with ``allow_insecure_auth``, SQLAlchemy/``%sql``);
- the extra credential ``hub_token=TOKEN`` (the Java CLI, which sends a password or an
  access token only over TLS).

The front asks the hub who the token belongs to (cached briefly), then forwards the
request with ``X-Trino-User`` set to that user, whatever the client sent, and with a
short-lived JWT for that user signed by a key made at each start (:func:`sign_jwt`):
Trino itself requires that JWT (``http-server.authentication.type=JWT``), so a local
process that finds Trino's private port is refused. The token never reaches Trino.
Follow-up requests of a query (its ``nextUri``) carry the same credentials; a client
that drops them is answered for the user who started that query, known from its id
(on a statement URI exactly, which holds the query's secret slug).

Paths are decided before anything else (:func:`._front.decided_path`): decoded, dot
segments and doubled slashes resolved, encoded slashes and path parameters (``;``,
which Jetty strips) refused with 400; every rule here is matched against that path
and Trino gets that path. The hub is asked about a token again after a few seconds
(:data:`._front.HUB_AUTH_CACHE_S`), so a removed user stops here at once.

Each user sees and cancels only their own queries: Trino's own access control says so
(``queries`` rules, :mod:`.trino_etc`). A hub admin's calls to the query-management
endpoints (``/v1/query...``: list, details, cancel) go as :data:`SERVICE_USER`, whom
those rules let see and cancel every query; the front logs each such call.
ref: https://trino.io/docs/current/develop/client-protocol.html
ref: https://trino.io/docs/current/security/jwt.html
ref: https://trino.io/docs/current/security/file-system-access-control.html (query rules)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable

from . import _front
from ._front import RefusedPath, decided_path, forward_path, identity

__all__ = ["sign_jwt", "hub_token", "strip_hub_credential", "FrontState", "make_app", "CREDENTIAL",
           "SERVICE_USER", "management_call"]

CREDENTIAL = "hub_token"
#: Trino's user for this service's own work (readiness, admins' query management): a
#: ``service/`` name, which no hub user can have, as the MLflow front's accounts.
SERVICE_USER = "service/trino"
#: seconds a minted JWT is valid (it is minted again well before)
JWT_LIFETIME = 600
# Beside the fronts' own (hop-by-hop, credentials): identities only the front decides.
_DROP_REQUEST = _front.DROP_REQUEST | {
    "accept-encoding",  # answers come back plain, so their URIs can be put back
    "x-trino-user", "x-trino-original-user", "x-trino-original-roles", "x-trino-extra-credential",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "forwarded"}
# A statement URI as Trino hands it out: /v1/statement/{queued|executing}/ID/SLUG/TOKEN.
_STATEMENT = re.compile(r"/v1/statement/(?:queued|executing)/([^/]+)/[^/]+/[0-9]+")
# Trino's query-management endpoints (list, details, cancel, kill, preempt).
_MANAGEMENT = re.compile(r"/v1/query(?:/.*)?")
# The URIs of Trino's statement answers (QueryResults). ref: client-protocol.html
_URI_FIELDS = ("nextUri", "infoUri", "partialCancelUri")
# What anyone may ask without a token: whether Trino is up (the clients' own check).
_OPEN = {"/v1/info", "/v1/info/state"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(key: bytes, *, subject: str, now: float | None = None, lifetime: int = JWT_LIFETIME) -> str:
    """An HS256 JWT for ``subject`` (pure, given ``now``). RFC 7519; Trino reads ``sub``.

    >>> token = sign_jwt(b"k" * 32, subject="ada", now=0)
    >>> json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    {'sub': 'ada', 'iat': 0, 'exp': 600}
    """
    now = int(time.time() if now is None else now)
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps({"sub": subject, "iat": now, "exp": now + lifetime}, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _credentials(header: str) -> list[tuple[str, str]]:
    pairs = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            pairs.append((name.strip(), value.strip()))
    return pairs


def hub_token(headers) -> str | None:
    """The hub token a request carries, if any (``headers``: a mapping with ``get``
    and ``get_list``, as Tornado's).

    >>> from tornado.httputil import HTTPHeaders
    >>> hub_token(HTTPHeaders({"Authorization": "Bearer abc"}))
    'abc'
    >>> hub_token(HTTPHeaders({"Authorization": "Basic " + base64.b64encode(b"ada:abc").decode()}))
    'abc'
    >>> hub_token(HTTPHeaders({"X-Trino-Extra-Credential": "other=1, hub_token=abc"}))
    'abc'
    >>> hub_token(HTTPHeaders({"X-Trino-User": "ada"})) is None
    True
    """
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            password = ""
        if password:
            return password
    for header in headers.get_list("X-Trino-Extra-Credential"):
        for name, cred in _credentials(header):
            if name == CREDENTIAL and cred:
                return cred
    return None


def strip_hub_credential(values: list[str]) -> str | None:
    """The extra credentials a client sent, less the hub token (it is not Trino's).

    >>> strip_hub_credential(["a=1, hub_token=x", "b=2"])
    'a=1, b=2'
    >>> strip_hub_credential(["hub_token=x"]) is None
    True
    """
    kept = [f"{n}={v}" for header in values for n, v in _credentials(header) if n != CREDENTIAL]
    return ", ".join(kept) or None


class FrontState:
    """What the front knows: where Trino is, the key Trino trusts, who started which query."""

    def __init__(self, *, key: bytes, backend: Callable[[], str], max_queries: int = 10000,
                 rules=None):
        self.key = key
        self.backend = backend
        #: Trino's rules (:class:`.trino_server.Rules`): a user they do not name yet (new
        #: on the hub) is read from the hub before their request goes on
        self.rules = rules
        self._jwts: dict[str, tuple[str, float]] = {}
        self._queries: OrderedDict[str, str] = OrderedDict()
        self._max_queries = max_queries

    def jwt(self, user: str) -> str:
        token, made = self._jwts.get(user, ("", 0.0))
        if time.time() - made > JWT_LIFETIME / 2:
            token, made = sign_jwt(self.key, subject=user), time.time()
            self._jwts[user] = (token, made)
        return token

    def started(self, query_id: str, user: str) -> None:
        self._queries[query_id] = user
        while len(self._queries) > self._max_queries:
            self._queries.popitem(last=False)

    def user_of_query(self, path: str) -> str | None:
        """Who started the query of the statement URI ``path`` (a decided path), if the
        front saw it start.

        >>> state = FrontState(key=b"k", backend=str)
        >>> state.started("q1", "ada")
        >>> state.user_of_query("/v1/statement/executing/q1/y0/2"), state.user_of_query("/v1/statement/executing/q1/x")
        ('ada', None)
        """
        m = _STATEMENT.fullmatch(path)
        return self._queries.get(m.group(1)) if m else None


def management_call(path: str) -> bool:
    """Whether ``path`` (a decided path) is one of Trino's query-management endpoints.

    >>> management_call("/v1/query"), management_call("/v1/query/q1"), management_call("/v1/queryx")
    (True, True, False)
    """
    return _MANAGEMENT.fullmatch(path) is not None


def make_app(state: FrontState, hub_auth):
    """The Tornado application of the front (``hub_auth``: a JupyterHub ``HubAuth``)."""
    from tornado import httpclient, web
    from tornado.log import app_log

    class Forward(web.RequestHandler):
        SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")

        async def _user(self) -> tuple[str, bool] | None:
            token = hub_token(self.request.headers)
            if token is None:
                return None
            try:
                model = await hub_auth.user_for_token(token, sync=False)
            except web.HTTPError as exc:  # the hub itself failed to answer
                raise web.HTTPError(503, "the hub did not answer who this token belongs to "
                                         f"({exc.status_code}); try again in a few seconds") from None
            if not model or not hub_auth.check_scopes(hub_auth.access_scopes, model):
                raise web.HTTPError(403, "this hub token may not use Trino (it is unknown, revoked, or lacks "
                                         f"the scope {', '.join(sorted(hub_auth.access_scopes))})")
            return identity(model)

        async def _forward(self, *_):
            try:
                path = decided_path(self.request.path)
            except RefusedPath as exc:
                raise web.HTTPError(400, str(exc)) from None
            if ";" in path:
                raise web.HTTPError(400, f"path {self.request.path!r}: ';' starts a path parameter, which Trino "
                                         "drops and this front does not; leave it out")
            ident = await self._user()
            user = ident[0] if ident else None
            if user is None and path not in _OPEN:
                user = state.user_of_query(path)
            if user is None and path not in _OPEN:
                raise web.HTTPError(401, "Trino here needs your hub API token: connect_trino(), %sql and "
                                         "the trino CLI send JUPYTERHUB_API_TOKEN; others may send it as "
                                         f"Authorization: Bearer TOKEN or the extra credential {CREDENTIAL}=TOKEN")
            as_user = user
            if ident and ident[1] and management_call(path):
                # Trino's rules let the service see and cancel every query; admins act through it.
                as_user = SERVICE_USER
                app_log.info("Trino front: admin %s: %s %s (as %s)", user, self.request.method, path, SERVICE_USER)
            headers = _front.copy_headers(self.request.headers.get_all(), _DROP_REQUEST)
            extra = strip_hub_credential(self.request.headers.get_list("X-Trino-Extra-Credential"))
            if extra:
                headers["X-Trino-Extra-Credential"] = extra
            if ident and state.rules is not None and not state.rules.knows(user, ident[1]):
                await asyncio.get_running_loop().run_in_executor(None, state.rules.know, user, ident[1])
            if as_user is not None:
                headers["X-Trino-User"] = as_user
                headers["Authorization"] = f"Bearer {state.jwt(as_user)}"
            # Trino builds nextUri from these (http-server.process-forwarded): back to the
            # front. "https": Trino checks JWTs only on requests it counts as secure; the
            # scheme is put back in the answer (the hop to Trino is loopback).
            headers["X-Forwarded-Host"] = self.request.host
            headers["X-Forwarded-Proto"] = "https"
            body = self.request.body if self.request.method in ("POST", "PUT") else None
            query = f"?{self.request.query}" if self.request.query else ""
            request = httpclient.HTTPRequest(
                state.backend() + forward_path(path) + query, method=self.request.method, headers=headers,
                body=body, allow_nonstandard_methods=True, follow_redirects=False, decompress_response=False,
                request_timeout=600)
            try:
                response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
            except (OSError, httpclient.HTTPClientError):  # refused, reset, timed out
                response = None
            if response is None or response.code == 599:
                _front.answer_starting(self, "Trino is starting (or restarting); try again in a few seconds")
                return
            self.set_status(response.code, response.reason)
            secure, plain = f"https://{self.request.host}/", f"{self.request.protocol}://{self.request.host}/"
            for name, value in response.headers.get_all():
                if name.lower() == "location" and value.startswith(secure):
                    value = plain + value.removeprefix(secure)
                if name.lower() not in _front.DROP_RESPONSE:
                    self.add_header(name, value)
            if response.code in (204, 304) or self.request.method == "HEAD":
                self.finish()  # no body may follow (tornado refuses to write one)
                return
            body = response.body or b""
            if (path == "/v1/statement" or path.startswith("/v1/statement/")) and response.code == 200 and body:
                body = self._answer(body, user, secure=secure, plain=plain)
            self.finish(body)

        def _answer(self, body: bytes, user: str | None, *, secure: str, plain: str) -> bytes:
            """A statement answer with its URIs back on the client's scheme (only the
            protocol's URI fields: rows are never touched); a query's id remembered."""
            try:
                doc = json.loads(body)
            except ValueError:
                return body
            if not isinstance(doc, dict):
                return body
            for field in _URI_FIELDS:
                value = doc.get(field)
                if isinstance(value, str) and value.startswith(secure):
                    doc[field] = plain + value.removeprefix(secure)
            if user is not None and self.request.method == "POST" and isinstance(doc.get("id"), str):
                state.started(doc["id"], user)
            return json.dumps(doc).encode()

        def write_error(self, status_code, **kwargs):
            _front.finish_json_error(self, status_code, kwargs, code_key="error")

        get = head = post = put = delete = _forward

    return web.Application([(r"/.*", Forward)])
