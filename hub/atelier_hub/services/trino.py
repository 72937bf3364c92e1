"""Trino (Presto): its descriptor. A single-node coordinator on 127.0.0.1 with the
``tpch`` catalog and a ``hive`` catalog on the shared bucket, behind a hub-authenticated front.

Rule this module keeps: the address sessions get is the front's (:mod:`.trino_front`,
run by the server's supervisor :mod:`.trino_server`): queries run as the hub user whose
token came with them, and Trino itself, on a private port, accepts only the front. The
server is handed the S3 store's endpoint and bucket from the deployment settings, with
the keys of Trino's own S3 account (through its environment only). It has no ``url``
in the hub: it is not routed through the hub's proxy (Trino's clients need their own
address), and the hub does not wait for it. A removed user's unfinished queries are
cancelled at their removal (:meth:`Trino.remove_user`).
"""

from __future__ import annotations

import re
import sys
from typing import ClassVar

from pydantic import Field, field_validator

from ..install.paths import trino_paths
from ..settings import ServiceSettings, SessionContext
from .base import Service, Site
from .trino_etc import USER_SCHEMA_PREFIX

_SCHEMA = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: what the server's supervisor reads of the hub (:mod:`.trino_server`) to write Trino's
#: table rules: the users' names and who is admin (``read:users:name`` holds both); no
#: more (groups name no rule yet)
HUB_SCOPES = ("list:users", "read:users:name")


class TrinoService(ServiceSettings):
    """A Trino (Presto) coordinator sessions query."""

    about: ClassVar[str] = "The Trino coordinator."

    url: str = Field(description="`http://HOST:PORT` of the coordinator, as `ATELIER_TRINO_URL`.")
    catalog: str = Field("tpch", description="Default catalog of `%sql`, the `trino` CLI and `connect_trino()`.")
    default_schema: str | None = Field("tiny", description="Default schema in that catalog; null for none.")
    shared_schemas: list[str] | None = Field(
        None, description="Schemas (in every catalog) where every user may create, change and drop every table, "
                          "e.g. `[team]` for `hive.team`; made in the `hive` catalog at Trino's start. null (the "
                          "default): none; each user changes tables only in their own schema `users_NAME` "
                          "(docs/user-guide.md, \"In a session\").")

    @field_validator("shared_schemas")
    @classmethod
    def _shared(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not _SCHEMA.fullmatch(name):
                raise ValueError(f"{name!r} is not a schema name: use lower-case letters, digits and '_', "
                                 "starting with a letter (e.g. team_data)")
            if name.startswith(USER_SCHEMA_PREFIX) or name == "information_schema":
                raise ValueError(f"{name!r} cannot be shared: {USER_SCHEMA_PREFIX}NAME is each user's own schema "
                                 "and information_schema Trino's; choose another name")
        return value

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        env = {"ATELIER_TRINO_URL": self.url}
        # jupysql's %sql connects to DATABASE_URL when no connection is named. The hub
        # token is the password (Trino's front checks it; jupysql masks passwords when it
        # shows the URL); plain HTTP on loopback needs the client's allow_insecure_auth.
        host = self.url.split("://", 1)[-1].rstrip("/")
        login = f"{ctx.username}:{ctx.api_token}" if ctx.api_token else ctx.username
        env["DATABASE_URL"] = f"trino://{login}@{host}/{self.catalog}" + (
            f"/{self.default_schema}" if self.default_schema else "") + (
            "?allow_insecure_auth=true" if ctx.api_token else "")
        if ctx.config_dir:
            env["TRINO_CONFIG"] = f"{ctx.config_dir}/trino/config"
        return env

    def session_files(self, ctx: SessionContext) -> dict[str, str]:
        lines = [f"server={self.url}", f"user={ctx.username}", f"catalog={self.catalog}"]
        if self.default_schema:
            lines.append(f"schema={self.default_schema}")
        return {"trino/config": "\n".join(lines) + "\n"}


class Trino(Service):
    name = "trino"
    title = "Trino"
    needs = ("trino",)
    optional = True
    # The session's hub token is its Trino credential (the front checks it).
    session_scopes = ("access:services!service=trino",)
    settings = TrinoService
    hub_scopes = HUB_SCOPES

    def url(self, site: Site) -> str:
        return self.local_url(site)

    def endpoints(self, site: Site) -> dict:
        shared = self.kept_setting(site, "shared_schemas", url="http://x")
        return {"trino": TrinoService(url=self.url(site), shared_schemas=shared)}

    def hub_service(self, site: Site, services) -> dict:
        from .trino_server import default_java_home

        s3 = services.s3
        cmd = [
            sys.executable, "-m", "atelier_hub.services.trino_server",
            "--state", str(site.path("trino")),
            "--record", str(self.record_file(site.root)),
            "--front-port", str(self.port(site)),
            "--trino-home", str(trino_paths().home),
        ]
        java = default_java_home()
        if java:
            cmd += ["--java-home", java]
        trino = services.trino
        for schema in (trino.shared_schemas if trino is not None else None) or []:
            cmd += ["--shared-schema", schema]
        env = {}
        if s3 is not None:
            cmd += ["--s3-endpoint", s3.endpoint_url or "", "--bucket", s3.bucket, "--region", s3.region]
            if s3.access_key_id:
                # The catalog file names them as ${ENV:...}: no secret on disk or in `ps`.
                env = {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key or "",
                       "AWS_REGION": s3.region}
        return {"name": self.name, "display": False, "environment": env, "command": cmd}

    def remove_user(self, site: Site, name: str) -> None:
        """Cancel the removed user's unfinished queries: the front refuses their token
        within seconds, but a query already running would go on (and answer whoever
        polls its statement URI) until it ends."""
        from .trino_server import cancel_queries_of, local_token, read_ready

        state = site.path("trino")
        info = read_ready(state)
        if info is None:
            return  # not running: no query of theirs runs either
        try:
            ids = cancel_queries_of(info["url"], name, token=local_token(state))
        except (OSError, ValueError) as exc:
            print(f"trino: the running queries of the removed user {name} could not be cancelled ({exc}); "
                  "Trino ends them when their client stops polling", file=sys.stderr, flush=True)
            return
        if ids:
            print(f"trino: cancelled {len(ids)} running quer{'y' if len(ids) == 1 else 'ies'} of the removed user "
                  f"{name}", flush=True)

    def ready(self, site: Site) -> bool:
        # Written by the server's supervisor once a real query has succeeded.
        from .trino_server import read_ready

        return read_ready(site.path("trino")) is not None

    def log_path(self, site: Site):
        return site.path("trino/logs/server.log")

    def banner(self, site: Site) -> str:
        return f"{self.url(site)}  (sessions: atelier_lab.connect_trino(), %sql, trino)"


SERVICE = Trino()
