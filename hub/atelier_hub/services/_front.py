"""What the hub-authenticated fronts (MLflow's, Trino's) and the culler share.

Rules this module keeps:

- A front forwards neither hop-by-hop headers nor the client's own credentials
  (:data:`DROP_REQUEST`, :data:`DROP_RESPONSE`, :func:`copy_headers`); each front adds
  the identities only it decides. Its errors are JSON with the status and a message
  that says what to do (:func:`finish_json_error`), and a backend still starting is a
  503 saying so (:func:`answer_starting`), never a hung request or an HTML page.

- A front decides on one path and forwards that same path. :func:`decided_path` turns
  the raw request path into the path the backend will see (percent-decoded once, dot
  segments resolved, doubled slashes merged) and refuses what a backend could read
  differently: a backslash or an encoded slash, an escape that still decodes to something
  else a second time (``%252F``), a bad escape or bytes that are not UTF-8, control
  characters. :func:`forward_path` writes the decided path back in the one form every
  backend decodes to it. The fronts match their rules against the decided path only.
- Who a hub token belongs to is asked of the hub again after at most
  :data:`HUB_AUTH_CACHE_S` seconds: a removed user's token or a revoked one stops at
  every front within that (JupyterHub's own default caches the answer for 5 minutes).
- One identity per hub token (:func:`identity`): a user by their name, a service as
  ``service/NAME``, which no hub user can be called.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote_to_bytes

__all__ = ["HUB_AUTH_CACHE_S", "DROP_REQUEST", "DROP_RESPONSE", "RefusedPath", "decided_path", "forward_path",
           "identity", "copy_headers", "error_message", "finish_json_error", "answer_starting"]

#: request headers no front passes on: hop-by-hop ones, and the client's credentials
#: (the front sends the backend its own)
DROP_REQUEST = frozenset({"host", "authorization", "cookie", "connection", "content-length", "transfer-encoding",
                          "keep-alive", "upgrade"})
#: response headers no front passes back (hop-by-hop; the server's own name)
DROP_RESPONSE = frozenset({"connection", "transfer-encoding", "content-length", "keep-alive", "server"})

#: seconds a front (or the culler) trusts the hub's answer about a token; a removed
#: user's token stops everywhere within this plus one request's time.
HUB_AUTH_CACHE_S = 5

_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Encoded '/' and '\': a backend may split on them after decoding, or not (Jetty
# refuses them, Werkzeug splits) -- either way not the path the front decided on.
_ENCODED_SEPARATOR = re.compile(r"%(?:2[fF]|5[cC])")
# What stays readable in a forwarded path (RFC 3986 pchar, less '%'); all else is escaped.
_SAFE = "/:@!$&'()*+,;=~"


class RefusedPath(ValueError):
    """A request path a front will not forward; the message says why and what to send."""


def decided_path(raw: str) -> str:
    """The path a front decides on, and forwards, for the raw request path ``raw``
    (pure). Raises :class:`RefusedPath` for a path a backend could read otherwise.

    >>> decided_path("/p/api/2.0/mlflow/run%73/create")
    '/p/api/2.0/mlflow/runs/create'
    >>> decided_path("/p/api//2.0/./mlflow/x/../runs/create")
    '/p/api/2.0/mlflow/runs/create'
    >>> decided_path("/p/artifacts/a%20b.txt"), decided_path("/p/ui/")
    ('/p/artifacts/a b.txt', '/p/ui/')
    >>> decided_path("/p/api/2.0/mlflow/runs%2Fcreate")
    Traceback (most recent call last):
    atelier_hub.services._front.RefusedPath: path '/p/api/2.0/mlflow/runs%2Fcreate': ... send '/' itself
    >>> decided_path("/p/api/2.0/mlflow/runs%252Fcreate")
    Traceback (most recent call last):
    atelier_hub.services._front.RefusedPath: path '/p/api/2.0/mlflow/runs%252Fcreate': ... (encoded twice); ...
    """
    if not raw.startswith("/"):
        raise RefusedPath(f"path {raw!r}: a request path starts with '/'")
    if "\\" in raw or _ENCODED_SEPARATOR.search(raw):
        raise RefusedPath(f"path {raw!r}: a backslash or an encoded slash (%2F, %5C) is read differently by "
                          "different servers; send '/' itself")
    if _BAD_ESCAPE.search(raw):
        raise RefusedPath(f"path {raw!r}: '%' must start a two-digit hex escape (write '%' itself as %25)")
    try:
        # Tornado hands the request line over as latin-1: these are the bytes sent.
        text = unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise RefusedPath(f"path {raw!r}: not UTF-8 once decoded; percent-encode UTF-8 bytes") from None
    if _ESCAPE.search(text):
        raise RefusedPath(f"path {raw!r}: it still holds a %-escape once decoded (encoded twice); "
                          "encode the path once")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise RefusedPath(f"path {raw!r}: control characters are not allowed in a path")
    segments: list[str] = []
    for segment in text.split("/")[1:]:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise RefusedPath(f"path {raw!r}: '..' climbs above '/'")
            segments.pop()
        else:
            segments.append(segment)
    last = text.rsplit("/", 1)[-1]
    trailing = bool(segments) and (text.endswith("/") or last in (".", ".."))
    return "/" + "/".join(segments) + ("/" if trailing else "")


def forward_path(path: str) -> str:
    """``path`` (a :func:`decided_path`) as it goes to the backend, escaped so that the
    backend's one decoding gives ``path`` back (pure).

    >>> forward_path("/p/artifacts/a b%.txt")
    '/p/artifacts/a%20b%25.txt'
    >>> forward_path("/v1/statement/queued/q1/y/1")
    '/v1/statement/queued/q1/y/1'
    """
    return quote(path, safe=_SAFE)


def identity(model: dict) -> tuple[str, bool]:
    """The backend identity of a hub identity (the model the hub's token check returns)
    and whether it administers the service: hub admins do, and so does a service that
    may administer the hub's users (the CLI's admin token). Services get a ``service/``
    prefix, which no hub user name can carry (it would break the hub's own URLs).

    >>> identity({"kind": "user", "name": "ada", "admin": False, "scopes": ["self"]})
    ('ada', False)
    >>> identity({"kind": "service", "name": "atelier-admin", "admin": False, "scopes": ["admin:users"]})
    ('service/atelier-admin', True)
    """
    name = model["name"] if model.get("kind", "user") == "user" else f"service/{model['name']}"
    return name, bool(model.get("admin")) or "admin:users" in model.get("scopes", ())


def copy_headers(pairs: Iterable[tuple[str, str]], drop: Iterable[str]):
    """The headers of ``pairs`` (name, value) less those named in ``drop`` (lower case),
    as a Tornado ``HTTPHeaders``.

    >>> dict(copy_headers([("Host", "h"), ("Accept", "*/*"), ("Cookie", "c")], DROP_REQUEST))
    {'Accept': '*/*'}
    """
    from tornado import httputil

    headers = httputil.HTTPHeaders()
    for name, value in pairs:
        if name.lower() not in drop:
            headers.add(name, value)
    return headers


def error_message(handler, kwargs: dict) -> str:
    """The message of the error a Tornado handler's ``write_error`` is called for."""
    from tornado import web

    exc = kwargs.get("exc_info", (None, None))[1]
    # Tornado keeps log_message as a %-format (a message given alone has each '%' doubled).
    return exc.log_message % exc.args if isinstance(exc, web.HTTPError) and exc.log_message else handler._reason


def finish_json_error(handler, status_code: int, kwargs: dict, *, code_key: str) -> None:
    """Answer an error as JSON: ``{code_key: status, "message": ...}`` (each front keeps
    the key its clients read: MLflow's ``error_code``, Trino's ``error``)."""
    handler.set_header("Content-Type", "application/json")
    handler.finish(json.dumps({code_key: status_code, "message": error_message(handler, kwargs)}))


def answer_starting(handler, message: str, *, code_key: str | None = None) -> None:
    """503 while the backend is starting, with ``message`` (and the status under
    ``code_key``, for clients that read it there)."""
    handler.set_status(503)
    handler.finish({**({code_key: 503} if code_key else {}), "message": message})
