"""The S3-compatible store (versitygw): the shared bucket every session reads and
writes, and MLflow's artifact bucket. One S3 account per user and per service
(:mod:`.s3_accounts`); the server itself is run by :mod:`.s3_server`.

Rules this module keeps:

- the store's address is decided here, once; sessions get it through
  :meth:`S3.endpoints` (without keys: the deployment settings every session reads hold
  none) and their own user's keys from the spawner (:meth:`S3Accounts.for_user`, at
  the first spawn), put in by :meth:`S3Service.with_keys`, the one overlay of
  per-account keys. No session holds the root keys or another user's keys.
- what a session gets from the store (:meth:`S3Service.session_env`) is a pure
  function of these settings.
- keys travel through environments, never on a command line that ``ps`` shows.

As a program (the hub runs it)::

    python -m atelier_hub.services.s3 --state STATE --record F --port P --ready F

runs versitygw under a supervisor (:mod:`.s3_server`).
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from ..settings import ServiceSettings, SessionContext
from ._process import http_status
from .base import Service, Site
from .s3_accounts import (
    MLFLOW_BUCKET,
    SERVICE_ACCOUNTS,
    SHARED_BUCKET,
    S3Accounts,
    S3AdminError,
    private_prefix,
    service_access_key,
    user_access_key,
)

__all__ = ["SHARED_BUCKET", "MLFLOW_BUCKET", "S3", "S3Service", "S3Accounts", "S3AdminError",
           "user_access_key", "service_access_key", "private_prefix", "SERVICE"]

#: where the supervisor says the store is ready (accounts and policies made)
READY_FILE = "run/s3.ready"


class S3Service(ServiceSettings):
    """An S3-compatible store and the shared bucket every session may read and write."""

    about: ClassVar[str] = "The object store and the shared bucket."

    endpoint_url: str | None = Field(
        None, description="Endpoint of the store; null on AWS itself, `http://127.0.0.1:PORT` in embedded mode. "
        "Sessions get it as `AWS_ENDPOINT_URL` (boto3, the AWS CLI) and `MLFLOW_S3_ENDPOINT_URL`.")
    region: str = Field("us-east-1", description="Region, as `AWS_REGION` and `AWS_DEFAULT_REGION`.")
    bucket: str = Field(description="The shared bucket, exported as `ATELIER_SHARED_BUCKET`.")
    access_key_id: str | None = Field(
        None, description="Static key for every session; null in embedded mode (each user's sessions get "
        "their own S3 account's keys) and on a cluster with IRSA.")
    secret_access_key: str | None = Field(None, description="The static key's secret (embedded mode only).")

    def with_keys(self, keys: dict[str, str] | None) -> S3Service:
        """These settings with one account's keys instead of any (``keys`` None or empty:
        none at all).

        >>> S3Service(bucket="b", access_key_id="a", secret_access_key="s").with_keys(None).access_key_id is None
        True
        """
        keys = keys or {}
        return self.model_copy(update={"access_key_id": keys.get("access_key_id"),
                                       "secret_access_key": keys.get("secret_access_key")})

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        env = {"ATELIER_SHARED_BUCKET": self.bucket}
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = self.region
        if self.endpoint_url:
            # boto3 >= 1.28 and the AWS CLI read AWS_ENDPOINT_URL; MLflow's S3 artifact
            # client reads MLFLOW_S3_ENDPOINT_URL.
            env["AWS_ENDPOINT_URL"] = env["MLFLOW_S3_ENDPOINT_URL"] = self.endpoint_url
        # A store that is down fails in seconds, naming its endpoint, instead of retrying
        # for minutes (botocore's own retry settings).
        env["AWS_RETRY_MODE"] = "standard"
        env["AWS_MAX_ATTEMPTS"] = "3"
        if self.access_key_id and self.secret_access_key:
            env["AWS_ACCESS_KEY_ID"] = self.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        if ctx.config_dir:
            env["FSSPEC_CONFIG_DIR"] = f"{ctx.config_dir}/fsspec"
        return env

    def session_files(self, ctx: SessionContext) -> dict[str, str]:
        if not self.endpoint_url:
            return {}
        # fsspec/s3fs (pandas, pyarrow datasets with s3:// paths) take their defaults from here.
        s3 = {"client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region}}
        return {"fsspec/conf.json": json.dumps({"s3": s3}, indent=2)}


def with_keys(services, keys: dict[str, str] | None):
    """``services`` (a ``Services`` model) with the S3 entry carrying ``keys`` (see
    :meth:`S3Service.with_keys`); unchanged where it names no store."""
    if services.s3 is None:
        return services
    return services.model_copy(update={"s3": services.s3.with_keys(keys)})


class S3(Service):
    name = "s3"
    title = "S3"
    settings = S3Service
    needs = ("versitygw",)

    def url(self, site: Site) -> str:
        return self.local_url(site)

    def root_keys(self, site: Site) -> dict[str, str]:
        """versitygw's root user: the store's and the hub's alone (users and services
        get accounts of their own, :mod:`.s3_accounts`)."""
        return json.loads(site.secret("s3.json", lambda: json.dumps({
            "access_key_id": "atelier" + secrets.token_hex(6),
            "secret_access_key": secrets.token_urlsafe(30),
        })))

    def prepare(self, site: Site) -> None:
        for bucket in (SHARED_BUCKET, MLFLOW_BUCKET):
            # A folder is a bucket to versitygw's posix backend: the buckets exist before
            # the S3 server answers, so no session can race their creation.
            (site.path("s3") / bucket).mkdir(parents=True, exist_ok=True)
        site.path("s3-iam").mkdir(mode=0o700, exist_ok=True)

    def endpoints(self, site: Site) -> dict:
        # No keys here: every session reads these settings; its own keys come from the spawner.
        return {"s3": S3Service(endpoint_url=self.url(site), bucket=SHARED_BUCKET)}

    def accounts(self, site: Site) -> S3Accounts:
        return S3Accounts(keys_dir=site.path("secrets/s3-accounts"), endpoint=self.url(site),
                          root=self.root_keys(site))

    def view_for(self, site: Site, services, name: str):
        """The S3 entry carries service ``name``'s own account's keys (none for a
        service without an account)."""
        if services.s3 is None or name == self.name:
            return services
        return with_keys(services, self.accounts(site).service_keys(name) if name in SERVICE_ACCOUNTS else None)

    def hub_service(self, site: Site, services) -> dict:
        root = self.root_keys(site)
        # No "url": the hub neither waits for the store (atelier dev checks it) nor
        # routes it through its public proxy (sessions reach it on 127.0.0.1).
        return {
            "name": self.name,
            "display": False,
            "environment": {
                "ROOT_ACCESS_KEY_ID": root["access_key_id"],
                "ROOT_SECRET_ACCESS_KEY": root["secret_access_key"],
            },
            "command": [
                sys.executable, "-m", "atelier_hub.services.s3",
                "--state", str(site.root), "--record", str(self.record_file(site.root)),
                "--port", str(self.port(site)), "--ready", str(self.ready_file(site)),
            ],
        }

    def remove_user(self, site: Site, name: str) -> None:
        """The one place a removed hub user's S3 keys are deleted (their account on the
        store, their key file, their place in the policies). Their objects stay."""
        try:
            self.accounts(site).remove_user(name)
        except S3AdminError as exc:
            # The store is down (at the hub's start-up it is not started yet): its
            # supervisor's next provisioning finishes the removal.
            print(f"s3: {name}'s account is deleted when the store is up ({exc})", file=sys.stderr, flush=True)

    def ready_file(self, site: Site) -> Path:
        return site.path(READY_FILE)

    def ready(self, site: Site) -> bool:
        # The accounts and policies are made (the supervisor writes the file), and an
        # anonymous request is refused (403) by a store that is up.
        return self.ready_file(site).exists() and http_status(f"{self.url(site)}/") in (200, 403)

    def banner(self, site: Site) -> str:
        return f"{self.url(site)}  (bucket {SHARED_BUCKET}; sessions: boto3, s3fs, Spark s3a)"


SERVICE = S3()


if __name__ == "__main__":
    from .s3_server import main

    main()
