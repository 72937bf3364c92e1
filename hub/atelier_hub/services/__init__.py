"""The managed services, one descriptor each: the list everything else iterates over.

Rule this package keeps: a service is one module here exposing one :class:`Service`
instance, and one line in :data:`SERVICES`. The descriptor alone says

- which installable parts it needs (:mod:`atelier_hub.install.paths` names them),
- the endpoints it gives sessions (its part of the deployment settings),
- how the hub starts it (a hub-managed service entry, run through a supervisor of
  :mod:`._process` so that its processes die with it),
- how to tell it is ready, and the banner line ``atelier dev`` prints then.

The hub config, the state folder (ports, deployment settings), ``atelier dev``'s
readiness and banner all loop over :data:`SERVICES`; none of them names a service.
Endpoints are computed once, by :meth:`Service.endpoints`, and handed to the
service entries (:meth:`Service.hub_service`) as well as to the sessions.

Adding a service (a feature store, say) is ``services/feast.py`` with
``SERVICE = Feast()`` and one line below; see the README ("Adding a service").
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # the state folder imports this package, not the other way round
    from ..embedded import Embedded
    from ..settings import Services

__all__ = ["Service", "SERVICES", "by_name", "enabled"]


class Service:
    """What every managed service says about itself. Subclasses override what applies."""

    #: short name: the hub service's name, the key of its port in ``atelier.json`` and
    #: of its endpoints in the deployment settings
    name: ClassVar[str]
    #: what the banner calls it
    title: ClassVar[str]
    #: installable parts it needs (``atelier dev`` refuses to start without them)
    needs: ClassVar[tuple[str, ...]] = ()
    #: may be switched off with ``atelier dev --without NAME``
    optional: ClassVar[bool] = False
    #: it listens on a port of its own, chosen at the first start and kept after
    has_port: ClassVar[bool] = True
    #: hub scopes a session's token gets for it (e.g. access to a hub-authenticated front)
    session_scopes: ClassVar[tuple[str, ...]] = ()
    #: hub scopes the service's own token gets (a role named after it), e.g. to stop servers
    hub_scopes: ClassVar[tuple[str, ...]] = ()

    def prepare(self, stack: Embedded) -> None:
        """Create what must exist before anything starts (folders, buckets); never
        overwrites what is there."""

    def endpoints(self, stack: Embedded) -> dict:
        """Its part of the deployment settings: ``{field of Services: model}``."""
        return {}

    def view_for(self, stack: Embedded, services: Services, name: str) -> Services:
        """``services`` as the managed service ``name`` is handed them; by default unchanged."""
        return services

    def hub_service(self, stack: Embedded, services: Services) -> dict | None:
        """The JupyterHub service entry that runs it, or None (nothing to run)."""
        return None

    def remove_user(self, stack: Embedded, name: str) -> None:
        """Forget what it keeps for user ``name`` (their keys, say), who was removed.
        Called in the hub's process by :meth:`Embedded.remove_user`, possibly while it is
        not running (at the hub's start-up)."""

    def ready(self, stack: Embedded) -> bool:
        """Whether it answers as users need it to (no side effect, quick)."""
        return True

    def banner(self, stack: Embedded) -> str:
        """The banner's line for it, once ready."""
        return ""

    def log_path(self, stack: Embedded) -> Path:
        """Where to look when it does not become ready."""
        return stack.path("logs/hub.log")

    def supervised(self, stack: Embedded, command: list[str]) -> list[str]:
        """``command`` run under a :class:`~._process.Supervisor` that records its group in
        :meth:`record_file`, restarts it when it dies and ends it when the hub dies (a hub
        killed hard leaves no orphan), with the hub's variables passed on."""
        return [sys.executable, "-m", "atelier_hub.services._process", "--name", self.name,
                "--record", str(self.record_file(stack.root)), "--hub-env", "--", *command]

    def record_file(self, state: str | Path) -> Path:
        """Where its supervisor records its process group, in the state folder ``state``."""
        return Path(state) / "run" / f"{self.name}.pgid"


def _all() -> list[Service]:
    from . import culler, mlflow, ray, s3, spark, trino, usage

    # Start order: the hub starts managed services one after another, so the store
    # that the others use comes first.
    return [
        s3.SERVICE,
        mlflow.SERVICE,
        trino.SERVICE,
        spark.SERVICE,
        ray.SERVICE,
        culler.SERVICE,
        usage.SERVICE,
    ]


SERVICES: list[Service] = _all()


def by_name(name: str) -> Service:
    """The descriptor called ``name``; KeyError lists the known ones.

    >>> by_name("mlflow").title
    'MLflow'
    >>> [s.name for s in enabled(["ray", "s3"])]
    ['s3', 'ray']
    """
    for svc in SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(f"no service {name!r}; known: {', '.join(s.name for s in SERVICES)}")


def enabled(names: list[str] | tuple[str, ...]) -> list[Service]:
    """The descriptors of ``names``, in :data:`SERVICES` order."""
    return [svc for svc in SERVICES if svc.name in names]
