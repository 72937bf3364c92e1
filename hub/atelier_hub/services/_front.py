"""What the hub-authenticated fronts (MLflow's, Trino's) and the culler share.

Rules this module keeps:

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

import re
from urllib.parse import quote, unquote_to_bytes

__all__ = ["HUB_AUTH_CACHE_S", "RefusedPath", "decided_path", "forward_path", "identity"]

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
