"""Atelier's hub: profiles, the session contract, the embedded stack and the `atelier` CLI.

Imports stay lazy: the installer (``python3 -m atelier_hub.install``) runs from the system Python before the virtualenv
(and so pydantic or JupyterHub) exists.
"""

from ._version import __version__

__all__ = ["configure", "__version__"]


def configure(c, state=None, *, cluster=None):
    """Configure JupyterHub for Atelier, embedded or on a cluster as its settings say;
    see :func:`atelier_hub.config.configure`."""
    from .config import configure as _configure

    return _configure(c, state, cluster=cluster)
