"""Atelier's hub: profiles, the session contract, the embedded stack and the `atelier` CLI."""

from .config import configure

__all__ = ["configure"]
__version__ = "0.1.0"
