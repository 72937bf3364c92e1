"""``connect_trino()``: a Trino DB-API connection from the session's own settings.

The Python client reads no configuration of its own, so this module reads the
session contract that the hub writes (``atelier_hub.session``):

- ``ATELIER_TRINO_URL``: ``http://HOST:PORT`` of the coordinator;
- ``ATELIER_USER`` (or ``JUPYTERHUB_USER``): the user queries run as;
- ``JUPYTERHUB_API_TOKEN``: the session's hub token, sent as the password (the hub's
  Trino front checks it and runs the queries as its owner, whatever user is named);
- ``TRINO_CONFIG``: the Trino CLI's config file (``server=``, ``user=``, ``catalog=``,
  ``schema=`` lines), for the catalog and schema, and the server where the URL
  variable is missing.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["TrinoSettings", "TrinoUnavailable", "connect_trino", "trino_settings", "read_cli_config"]

DEFAULT_CATALOG = "tpch"
DEFAULT_SCHEMA = "tiny"
# Connect within seconds or say so; a query's answers may take longer to come.
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 60.0


class TrinoUnavailable(ConnectionError):
    """Trino is not configured for this session, or does not answer at its endpoint."""


@dataclass(frozen=True)
class TrinoSettings:
    """Where and as whom a session talks to Trino."""

    url: str | None
    user: str
    catalog: str | None = DEFAULT_CATALOG
    schema: str | None = DEFAULT_SCHEMA
    token: str | None = None

    def __repr__(self) -> str:  # never show the token
        return (f"TrinoSettings(url={self.url!r}, user={self.user!r}, catalog={self.catalog!r}, "
                f"schema={self.schema!r}, token={'***' if self.token else None})")


def read_cli_config(path: str | Path) -> dict[str, str]:
    """The ``key=value`` lines of a Trino CLI config file (``#`` comments skipped).

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".config", delete=False)
    >>> _ = f.write("server=http://127.0.0.1:8080\\n# a comment\\ncatalog = hive\\n"); f.close()
    >>> read_cli_config(f.name)
    {'server': 'http://127.0.0.1:8080', 'catalog': 'hive'}
    >>> os.unlink(f.name)
    """
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def _with_scheme(server: str) -> str:
    return server if "://" in server else f"http://{server}"


def trino_settings(environ: Mapping[str, str] | None = None) -> TrinoSettings:
    """The session's Trino settings, from its environment and ``TRINO_CONFIG`` file.

    >>> s = trino_settings({"ATELIER_TRINO_URL": "http://127.0.0.1:8080", "ATELIER_USER": "ada"})
    >>> s.url, s.user, s.catalog, s.schema
    ('http://127.0.0.1:8080', 'ada', 'tpch', 'tiny')
    """
    env = os.environ if environ is None else environ
    cli = read_cli_config(env["TRINO_CONFIG"]) if env.get("TRINO_CONFIG") else {}
    url = env.get("ATELIER_TRINO_URL") or (_with_scheme(cli["server"]) if cli.get("server") else None)
    user = env.get("ATELIER_USER") or env.get("JUPYTERHUB_USER") or cli.get("user") or getpass.getuser()
    return TrinoSettings(
        url=url.rstrip("/") if url else None,
        user=user,
        catalog=cli.get("catalog", DEFAULT_CATALOG) or None,
        schema=cli.get("schema", DEFAULT_SCHEMA if "catalog" not in cli else None) or None,
        token=env.get("JUPYTERHUB_API_TOKEN") or None,
    )


def _not_configured() -> TrinoUnavailable:
    return TrinoUnavailable(
        "Trino is not configured for this session (ATELIER_TRINO_URL is not set). "
        "The deployment may run without Trino (`atelier dev --no-trino`); ask your admin, "
        "or pass url='http://HOST:PORT' to connect_trino()."
    )


def check_trino(url: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise :class:`TrinoUnavailable` unless the coordinator at ``url`` answers and
    has finished starting. One small HTTP request (``/v1/info``), bounded by ``timeout``."""
    # Here, not at module level: `import atelier_lab` stays cheap (urllib pulls in ssl).
    import json
    import socket
    import urllib.error
    import urllib.request

    where = f"Trino (the Atelier service 'trino') at {url}"
    try:
        with urllib.request.urlopen(f"{url}/v1/info", timeout=timeout) as r:
            info = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise TrinoUnavailable(f"{where} answered HTTP {exc.code} to /v1/info; is this a Trino server?") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)  # urllib wraps connection errors
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise TrinoUnavailable(f"{where} did not answer within {timeout:g} s; it may be overloaded "
                                   "or stopped. Try again, or ask your admin to check the service.") from None
        raise TrinoUnavailable(
            f"{where} is not reachable ({reason}). Trino needs up to a minute to start after "
            "the hub does; if this persists, the service is down: ask your admin (hub log)."
        ) from None
    if info.get("starting"):
        raise TrinoUnavailable(f"{where} is still starting; try again in a few seconds.")


def connect_trino(
    *,
    url: str | None = None,
    check: bool = True,
    connect_timeout: float = CONNECT_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
    **overrides,
):
    """A ``trino.dbapi`` connection for this session (user, catalog and schema preset).

    Keyword arguments override the session's settings; any other keyword goes to
    :func:`trino.dbapi.connect` (``session_properties=``, ``source=``...). With
    ``check`` (the default) the coordinator is asked first whether it is up, so a
    stopped Trino raises :class:`TrinoUnavailable` at once instead of at the first
    query; every request is bounded by ``connect_timeout`` and ``request_timeout``.

    >>> conn = connect_trino()  # doctest: +SKIP
    >>> cur = conn.cursor(); cur.execute("SELECT count(*) FROM tpch.tiny.nation")  # doctest: +SKIP
    >>> cur.fetchall()  # doctest: +SKIP
    [[25]]
    """
    settings = trino_settings()
    url = (_with_scheme(url) if url else settings.url)
    if not url:
        raise _not_configured()
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TrinoUnavailable(f"Trino URL {url!r} is not http(s)://HOST:PORT; check ATELIER_TRINO_URL")
    if check:
        check_trino(url, timeout=connect_timeout)
    kwargs = {
        "host": parts.hostname,
        "port": parts.port or (443 if parts.scheme == "https" else 80),
        "http_scheme": parts.scheme,
        "user": settings.user,
        "catalog": settings.catalog,
        "schema": settings.schema,
        "source": "atelier-lab",
        "request_timeout": (connect_timeout, request_timeout),
    }
    import trino.auth
    import trino.dbapi  # here, not at import: `import atelier_lab` stays cheap

    if settings.token and "auth" not in overrides:
        # Loopback HTTP: the client sends a password only when allowed to.
        kwargs["auth"] = trino.auth.BasicAuthentication(settings.user, settings.token)
        kwargs["allow_insecure_auth"] = parts.scheme == "http"
    kwargs.update(overrides)

    return trino.dbapi.connect(**kwargs)
