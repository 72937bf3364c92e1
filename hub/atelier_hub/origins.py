"""Per-user web origins: each user's servers are a web origin of their own.

Rule this module keeps: the hub and Atelier's own services answer at the hub's host
(``localhost:8000`` in embedded mode; the cluster settings' ``public_url`` on a
cluster); each user's servers answer at ``NAME.<hub host>``
(JupyterHub's ``subdomain_host``, with JupyterHub's own IDNA naming for the label). A
page that one user's server serves (a file in their labextensions folder, an SVG, a
notebook's HTML output) then runs in that user's origin: the hub's cookie is
host-only, so it never reaches that page, and the hub's pages and API are
cross-origin to it (no CORS, SameSite cookies, the hub's XSRF check).
ref: JupyterHub's web-security docs ("Enable subdomains"), jupyterhub/utils.py
(subdomain_hook_idna).

Services stay on the hub's host, not on subdomains of their own (JupyterHub's default):
they are Atelier's programs, not users' (MLflow sends artifacts as attachments), and
sessions and clients reach them as ``localhost``, a name every resolver knows.

Names under ``.localhost`` always mean this machine (RFC 6761 section 6.3): browsers and
curl resolve them by themselves, glibc here does not (nsswitch has no such rule). So
Atelier's own Python clients that reach a user's server (the CLI, the tests) call
:func:`resolve_localhost_names` once. Standard library only (the CLI imports it first).
"""

from __future__ import annotations

import socket

__all__ = ["update_origins", "subdomain_hook", "resolve_localhost_names", "is_localhost_name"]


def update_origins(c, public_url: str) -> None:
    """The hub's configuration for this rule, in both modes: the hub at ``public_url``
    (``scheme://host[:port]``), each user's servers at ``NAME.host``, services at ``host``.

    >>> from traitlets.config import Config
    >>> c = Config(); update_origins(c, "https://atelier.example.org")
    >>> c.JupyterHub.subdomain_host, c.JupyterHub.subdomain_hook is subdomain_hook
    ('https://atelier.example.org', True)
    """
    c.JupyterHub.subdomain_host = public_url
    c.JupyterHub.subdomain_hook = subdomain_hook


def subdomain_hook(name: str, domain: str, kind: str) -> str:
    """JupyterHub's ``subdomain_hook``: users get ``NAME.DOMAIN`` (JupyterHub's IDNA
    encoding), services the hub's own ``DOMAIN``.

    >>> subdomain_hook("ann", "localhost", "user"), subdomain_hook("mlflow", "localhost", "service")
    ('ann.localhost', 'localhost')
    """
    if kind == "service":
        return domain
    from jupyterhub.utils import subdomain_hook_idna

    return subdomain_hook_idna(name, domain, kind)


def is_localhost_name(host: str | bytes | None) -> bool:
    """Whether ``host`` is a name under ``.localhost`` (RFC 6761: always loopback).

    >>> [is_localhost_name(h) for h in ("ann.localhost", "A.LOCALHOST.", "localhost", "example.org", None)]
    [True, True, False, False, False]
    """
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return isinstance(host, str) and host.lower().rstrip(".").endswith(".localhost")


_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    # Only names under .localhost change; every other name goes to the system as it is.
    return _system_getaddrinfo("127.0.0.1" if is_localhost_name(host) else host, *args, **kwargs)


def resolve_localhost_names() -> None:
    """Make this process resolve ``NAME.localhost`` to 127.0.0.1, as browsers do (idempotent).

    >>> resolve_localhost_names(); socket.getaddrinfo("ann.localhost", 80)[0][4][0]
    '127.0.0.1'
    """
    socket.getaddrinfo = _getaddrinfo
