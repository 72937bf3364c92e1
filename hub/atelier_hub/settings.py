"""Deployment settings: what they are made of, and how a file of them is read.

Rule this module keeps: endpoints are read from the deployment settings once and
handed on; nothing else in the hub reads a service address from the environment or
hard-codes one. Changing an endpoint there changes every new session. Unset is
``None`` (the service is absent), which is distinct from an empty value. This module
names no service: each service's module defines its part (a :class:`ServiceSettings`)
and what a session gets from it, and :mod:`atelier_hub.services` composes the parts
into ``Services`` and ``Deployment``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from .profiles import Profile
from .schema import StrictModel, parse_problem

__all__ = ["GitSettings", "ServiceSettings", "SessionContext", "SettingsError", "service_parts", "load_deployment",
           "load_settings_file"]


M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """The deployment settings file is invalid; the message names the field and the fix."""


#: a DNS name of two labels or more (letters, digits, inner hyphens)
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


class GitSettings(StrictModel):
    """Who a session's git commits as, when the user has not said so in their ~/.gitconfig."""

    email_domain: str = Field(
        "users.noreply.atelier",
        description="Domain of each session's git email: USER@email_domain, USER the hub user name "
                    "(e.g. `users.noreply.example.org`).")

    @field_validator("email_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not _DOMAIN.fullmatch(value):
            raise ValueError(f"{value!r} is not a domain name: write one such as users.noreply.example.org")
        return value


@dataclass(frozen=True)
class SessionContext:
    """What a service's settings may read when they configure one session (see
    :meth:`ServiceSettings.session_env`): the profile, the user, the hub token, the
    session's config folder, and the deployment's other services (Spark's s3a settings
    follow the store's)."""

    profile: Profile
    username: str
    #: the deployment's services (a ``Services`` model, :mod:`atelier_hub.services`)
    services: BaseModel
    #: the session's one CPU count (:func:`atelier_hub.profiles.session_cpus`): its thread
    #: pools, Spark's local[N] and Ray's CPUs all take it
    cpus: int = 1
    api_token: str | None = None
    #: where :meth:`ServiceSettings.session_files` are written; None: nowhere
    config_dir: str | None = None


class ServiceSettings(StrictModel):
    """One service's part of the deployment settings. Each service module subclasses it
    and says, as pure functions of its fields, what a session gets from it."""

    #: what the deployment settings say of its field in ``Services``
    about: ClassVar[str] = ""

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        """Environment variables of a session configured for this service."""
        return {}

    def session_files(self, ctx: SessionContext) -> dict[str, str]:
        """Config files of such a session, by path relative to its config folder."""
        return {}


def service_parts(services: BaseModel) -> list[ServiceSettings]:
    """The services a deployment names (fields of a ``Services`` model that are set), in
    the model's field order.

    >>> service_parts(StrictModel())
    []
    """
    parts = (getattr(services, name) for name in type(services).model_fields)
    return [part for part in parts if part is not None]


def load_settings_file(path: str | Path, model: type[M], *, what: str, error: type[ValueError]) -> M:
    """Read a JSON or YAML settings file into ``model``; every problem becomes one ``error``
    line naming the file, the field and the fix."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror}); check the path") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise error(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {parse_problem(exc)}") from None
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        lines = [
            f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            + ("; remove it or check its spelling" if e["type"] == "extra_forbidden" else "")
            for e in exc.errors()
        ]
        raise error("\n".join(lines)) from None


def load_deployment(path: str | Path, model: type[M]) -> M:
    """Read a deployment settings file (JSON or YAML) into ``model`` (the ``Deployment``
    that :mod:`atelier_hub.services` composes from the services' own settings)."""
    return load_settings_file(path, model, what="deployment settings", error=SettingsError)
