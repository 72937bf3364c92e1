"""The managed services, one descriptor each: the list everything else iterates over.

Rule this package keeps: a service is one module here exposing one
:class:`~.base.Service` instance as ``SERVICE``, and one line in :data:`MODULES`. The
descriptor alone says

- which installable parts it needs (:mod:`atelier_hub.install.paths` names them),
- its part of the deployment settings (a :class:`~atelier_hub.settings.ServiceSettings`
  model, which also says, as pure functions of its fields, what a session's
  environment and config files get from it),
- the endpoints it gives sessions, from what the deployment gives it (:class:`~.base.Site`),
- how the hub starts it (a hub-managed service entry, run through a supervisor of
  :mod:`._process` so that its processes die with it),
- how to tell it is ready, and the banner line ``atelier dev`` prints then.

The hub config, the stack's life cycle (:mod:`atelier_hub.embedded.stack`: ports, deployment
settings), the session contract, ``atelier dev``'s readiness and banner all loop over
:data:`SERVICES` (or over the :data:`Services` model composed from it); none of them
names a service. Endpoints are computed once, by :meth:`~.base.Service.endpoints`,
and handed to the service entries (:meth:`~.base.Service.hub_service`) as well as to
the sessions.

Adding a service (a feature store, say) is ``services/feast.py`` with
``SERVICE = Feast()`` and one line in :data:`MODULES`; see docs/admin-guide.md ("Services: one module each").
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import BaseModel, Field, create_model

from ..schema import StrictModel
from ..settings import GitSettings, SettingsError
from ..settings import load_deployment as _load
from .base import Service, Site

__all__ = ["Service", "Site", "MODULES", "SERVICES", "Services", "Deployment", "by_name", "enabled",
           "load_deployment", "services_model"]

#: the service modules, in start order: the hub starts managed services one after
#: another, so the store that the others use comes first. A module path without a dot
#: is one of this package's.
MODULES = [
    "s3",
    "mlflow",
    "trino",
    "spark",
    "ray",
    "culler",
    "jobs",
    "ray_clusters",
    "usage",
    "credentials",
]


def _load_services(modules: list[str]) -> list[Service]:
    return [importlib.import_module(m if "." in m else f"{__name__}.{m}").SERVICE for m in modules]


def services_model(services: list[Service]) -> tuple[type[BaseModel], type[BaseModel]]:
    """The ``Services`` and ``Deployment`` models of these descriptors: one optional
    field per service with settings, named after it, in list order."""
    fields = {svc.name: (svc.settings | None, Field(None, description=svc.settings.about))
              for svc in services if svc.settings is not None}
    services_cls = create_model("Services", __base__=StrictModel, __doc__=(
        "The services of a deployment; a null one is absent (sessions get no settings for it)."), **fields)
    deployment_cls = create_model("Deployment", __base__=StrictModel, __doc__=(
        "Everything about a deployment that a session's environment depends on."),
        services=(services_cls, Field(default_factory=services_cls,
                                      description="The services sessions are configured for.")),
        git=(GitSettings, Field(default_factory=GitSettings,
                                description="Each session's git identity (docs/user-guide.md, \"Your own packages, and git\").")))
    return services_cls, deployment_cls


SERVICES: list[Service] = _load_services(MODULES)
Services, Deployment = services_model(SERVICES)


def load_deployment(path: str | Path) -> BaseModel:
    """Read a deployment settings file (JSON or YAML); :class:`SettingsError` names the
    field and the fix.

    >>> load_deployment("deployment.yaml").services.s3.bucket  # doctest: +SKIP
    'atelier-shared'
    >>> Deployment().services.s3 is None  # a service left out gives sessions no settings
    True
    """
    return _load(path, Deployment)


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


__all__ += ["SettingsError"]
