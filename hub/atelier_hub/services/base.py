"""What every managed service's descriptor is, and what a deployment gives it.

Rule this module keeps: a descriptor (:class:`Service`) works against :class:`Site`
alone, a small mode-free view of what a deployment gives it (the hub's public URL,
ports, paths, generated secrets), never against a mode's own objects: the embedded
stack's state folder is one Site, a hub pod on a cluster can be another. Its part of
the deployment settings is a :class:`~atelier_hub.settings.ServiceSettings` model of
its own, which also says what a session's environment gets from it. This module
imports no descriptor; :mod:`atelier_hub.services` lists them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol

from pydantic import ValidationError

from ..settings import ServiceSettings, SettingsError

__all__ = ["Service", "Site", "local_url"]


def local_url(port: int) -> str:
    """The address of a server of this deployment on loopback (every service here
    listens on 127.0.0.1 only).

    >>> local_url(9000)
    'http://127.0.0.1:9000'
    """
    return f"http://127.0.0.1:{port}"


class Site(Protocol):
    """What a deployment gives a service descriptor (the embedded state folder is one)."""

    #: the hub's public URL; services routed behind its proxy answer under it
    @property
    def url(self) -> str: ...

    #: where the deployment keeps its data (the services' folders are under it)
    @property
    def root(self) -> Path: ...

    #: the profiles folder
    profiles_dir: str

    #: each service's port on 127.0.0.1, by service name (those that listen)
    ports: dict[str, int]

    def path(self, name: str) -> Path:
        """``name`` under :attr:`root`."""

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """The generated secret ``name`` (made once by ``make``, kept readable by this
        OS account only)."""


class Service:
    """What every managed service says about itself. Subclasses override what applies."""

    #: short name: the hub service's name, the key of its port and of its endpoints in
    #: the deployment settings
    name: ClassVar[str]
    #: what the banner calls it
    title: ClassVar[str]
    #: its part of the deployment settings (a field of ``Services`` named :attr:`name`),
    #: None: it gives sessions nothing
    settings: ClassVar[type[ServiceSettings] | None] = None
    #: installable parts it needs (``atelier dev`` refuses to start without them)
    needs: ClassVar[tuple[str, ...]] = ()
    #: may be switched off with ``atelier dev --without NAME``
    optional: ClassVar[bool] = False
    #: it listens on a port of its own, chosen at the first start and kept after
    has_port: ClassVar[bool] = True
    #: where it answers behind the hub's proxy (``/services/NAME``), if it is routed there
    prefix: ClassVar[str | None] = None
    #: hub scopes a session's token gets for it (e.g. access to a hub-authenticated front)
    session_scopes: ClassVar[tuple[str, ...]] = ()
    #: hub scopes the service's own token gets (a role named after it), e.g. to stop servers
    hub_scopes: ClassVar[tuple[str, ...]] = ()

    # -- where it is -----------------------------------------------------------------------

    def port(self, site: Site) -> int:
        return site.ports[self.name]

    def local_url(self, site: Site) -> str:
        """Its own address on loopback (the one place it is spelled)."""
        return local_url(self.port(site))

    def public_url(self, site: Site) -> str:
        """Where users reach it behind the hub's proxy (its :attr:`prefix`)."""
        return f"{site.url}{self.prefix}"

    # -- what it does ----------------------------------------------------------------------

    def prepare(self, site: Site) -> None:
        """Create what must exist before anything starts (folders, buckets); never
        overwrites what is there."""

    def endpoints(self, site: Site) -> dict:
        """Its part of the deployment settings: ``{field of Services: model}``."""
        return {}

    def view_for(self, site: Site, services, name: str):
        """``services`` as the managed service ``name`` is handed them; by default unchanged."""
        return services

    def hub_service(self, site: Site, services) -> dict | None:
        """The JupyterHub service entry that runs it, or None (nothing to run)."""
        return None

    def remove_user(self, site: Site, name: str) -> None:
        """Forget what it keeps for user ``name`` (their keys, say), who was removed.
        Called in the hub's process by :meth:`atelier_hub.embedded.stack.EmbeddedStack.remove_user`,
        possibly while it is not running (at the hub's start-up)."""

    def kept_setting(self, site: Site, field: str, **required):
        """The value an admin gave ``services.NAME.FIELD`` in ``STATE/deployment.json``
        (None when absent), checked by this service's settings model (``required``: its
        other required fields, any value): kept when ``atelier dev`` writes the file again.
        A bad one raises :class:`SettingsError` naming the file, the field and the fix."""
        path = site.path("deployment.json")
        try:
            old = (json.loads(path.read_text()).get("services") or {}).get(self.name) or {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{path}: cannot read it ({exc}); fix it or delete it (atelier dev writes it "
                                f"again, without services.{self.name}.{field})") from None
        if old.get(field) is None:
            return None
        try:
            return getattr(self.settings(**required, **{field: old[field]}), field)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise SettingsError(f"{path}: services.{self.name}.{field}: {problem}") from None

    def ready(self, site: Site) -> bool:
        """Whether it answers as users need it to (no side effect, quick)."""
        return True

    def banner(self, site: Site) -> str:
        """The banner's line for it, once ready."""
        return ""

    def log_path(self, site: Site) -> Path:
        """Where to look when it does not become ready."""
        return site.path("logs/hub.log")

    def supervised(self, site: Site, command: list[str]) -> list[str]:
        """``command`` run under a :class:`~._process.Supervisor` that records its group in
        :meth:`record_file`, restarts it when it dies and ends it when the hub dies (a hub
        killed hard leaves no orphan), with the hub's variables passed on."""
        return [sys.executable, "-m", "atelier_hub.services._process", "--name", self.name,
                "--record", str(self.record_file(site.root)), "--hub-env", "--", *command]

    def record_file(self, state: str | Path) -> Path:
        """Where its supervisor records its process group, in the state folder ``state``."""
        return Path(state) / "run" / f"{self.name}.pgid"
