"""Deployment settings: the one place that names the services every session uses.

Rule this module keeps: endpoints are read here once and handed on; nothing else in
the hub reads a service address from the environment or hard-codes one. Changing an
endpoint here changes every new session. Unset is ``None`` (the service is absent),
which is distinct from an empty value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "Deployment", "S3Service", "MLflowService", "TrinoService", "SparkService", "RayService", "Services",
    "SettingsError", "load_deployment", "load_settings_file",
]


M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """The deployment settings file is invalid; the message names the field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class S3Service(_Strict):
    """An S3-compatible store and the shared bucket every session may read and write."""

    endpoint_url: str | None = Field(None, description="None on AWS itself; http://127.0.0.1:PORT in embedded mode")
    region: str = "us-east-1"
    bucket: str = Field(description="the shared bucket, exported as ATELIER_SHARED_BUCKET")
    # Static keys are for the embedded mode only; on a cluster sessions get IRSA instead.
    access_key_id: str | None = None
    secret_access_key: str | None = None


class MLflowService(_Strict):
    """The MLflow tracking server."""

    tracking_uri: str
    # "hub": the server sits behind JupyterHub auth, so the session's own hub API token
    # is its MLflow token (MLFLOW_TRACKING_TOKEN). "none": an open server.
    auth: Literal["hub", "none"] = "hub"


class TrinoService(_Strict):
    """A Trino (Presto) coordinator sessions query."""

    url: str = Field(description="http://HOST:PORT of the coordinator")
    catalog: str = "tpch"
    default_schema: str | None = "tiny"


class SparkService(_Strict):
    """How ``SparkSession.builder.getOrCreate()`` starts in a session."""

    # None: a local master sized to the profile (local[CPU limit]); else e.g. k8s://...
    # and spark.executor.* come from the profile.
    master: str | None = None
    # The s3a connector (hadoop-aws and the AWS SDK bundle), as paths where sessions run.
    jars: list[str] = Field(default_factory=list)
    java_home: str | None = None
    # Where the driver binds; 127.0.0.1 in embedded mode (Spark otherwise binds the
    # machine's external interface). None on a cluster (the pod's address).
    local_ip: str | None = None
    conf: dict[str, str] = Field(default_factory=dict)


class RayService(_Strict):
    """Ray: join a cluster at ``address``, or (None) start a local one sized to the profile."""

    address: str | None = None


class Services(_Strict):
    s3: S3Service | None = None
    mlflow: MLflowService | None = None
    trino: TrinoService | None = None
    spark: SparkService | None = None
    ray: RayService | None = None


class Deployment(_Strict):
    """Everything about a deployment that a session's environment depends on."""

    services: Services = Field(default_factory=Services)


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
        raise error(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {exc}") from None
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        lines = [
            f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            + ("; remove it or check its spelling" if e["type"] == "extra_forbidden" else "")
            for e in exc.errors()
        ]
        raise error("\n".join(lines)) from None


def load_deployment(path: str | Path) -> Deployment:
    """Read a deployment settings file (JSON or YAML).

    >>> load_deployment("deployment.yaml").services.s3.bucket  # doctest: +SKIP
    'atelier-shared'
    """
    return load_settings_file(path, Deployment, what="deployment settings", error=SettingsError)
