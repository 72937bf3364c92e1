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
from pydantic import BaseModel, Field, ValidationError

from .schema import StrictModel, parse_problem

__all__ = [
    "Deployment", "S3Service", "MLflowService", "TrinoService", "SparkService", "RayService", "Services",
    "SettingsError", "load_deployment", "load_settings_file",
]


M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """The deployment settings file is invalid; the message names the field and the fix."""


class S3Service(StrictModel):
    """An S3-compatible store and the shared bucket every session may read and write."""

    endpoint_url: str | None = Field(
        None, description="Endpoint of the store; null on AWS itself, `http://127.0.0.1:PORT` in embedded mode. "
        "Sessions get it as `AWS_ENDPOINT_URL` (boto3, the AWS CLI) and `MLFLOW_S3_ENDPOINT_URL`.")
    region: str = Field("us-east-1", description="Region, as `AWS_REGION` and `AWS_DEFAULT_REGION`.")
    bucket: str = Field(description="The shared bucket, exported as `ATELIER_SHARED_BUCKET`.")
    access_key_id: str | None = Field(
        None, description="Static key for sessions (embedded mode only); on a cluster sessions get IRSA "
        "instead and this stays null.")
    secret_access_key: str | None = Field(None, description="The static key's secret (embedded mode only).")


class MLflowService(StrictModel):
    """The MLflow tracking server."""

    tracking_uri: str = Field(description="What sessions get as `MLFLOW_TRACKING_URI`.")
    auth: Literal["hub", "none"] = Field(
        "hub", description="`hub`: the server sits behind JupyterHub auth, so the session's own hub API token "
        "is its MLflow token (`MLFLOW_TRACKING_TOKEN`); `none`: an open server.")


class TrinoService(StrictModel):
    """A Trino (Presto) coordinator sessions query."""

    url: str = Field(description="`http://HOST:PORT` of the coordinator, as `ATELIER_TRINO_URL`.")
    catalog: str = Field("tpch", description="Default catalog of `%sql`, the `trino` CLI and `connect_trino()`.")
    default_schema: str | None = Field("tiny", description="Default schema in that catalog; null for none.")


class SparkService(StrictModel):
    """How ``SparkSession.builder.getOrCreate()`` starts in a session."""

    master: str | None = Field(
        None, description="null: a local master sized to the profile (`local[CPU limit]`); else e.g. `k8s://...`, "
        "with `spark.executor.*` from the profile.")
    jars: list[str] = Field(default_factory=list,
                            description="The s3a connector (hadoop-aws and the AWS SDK bundle), as paths where "
                            "sessions run.")
    java_home: str | None = Field(None, description="The Java Spark runs on (`JAVA_HOME`); Spark 4.3 needs 17+.")
    local_ip: str | None = Field(
        None, description="Where the driver binds (`SPARK_LOCAL_IP`): `127.0.0.1` in embedded mode (Spark "
        "otherwise binds the machine's external interface); null on a cluster (the pod's address).")
    conf: dict[str, str] = Field(default_factory=dict,
                                 description="Extra `spark-defaults.conf` entries, applied last.")


class RayService(StrictModel):
    """Ray: join a cluster at ``address``, or (None) start a local one sized to the profile."""

    address: str | None = Field(None, description="`RAY_ADDRESS` of a Ray cluster; null: a local `ray.init()` "
                                "sized to the profile.")


class Services(StrictModel):
    """The services of a deployment; a null one is absent (sessions get no settings for it)."""

    s3: S3Service | None = Field(None, description="The object store and the shared bucket.")
    mlflow: MLflowService | None = Field(None, description="The MLflow tracking server.")
    trino: TrinoService | None = Field(None, description="The Trino coordinator.")
    spark: SparkService | None = Field(None, description="How sessions start Spark.")
    ray: RayService | None = Field(None, description="How sessions start or join Ray.")


class Deployment(StrictModel):
    """Everything about a deployment that a session's environment depends on.

    >>> Deployment().services.s3 is None  # a service left out gives sessions no settings
    True
    """

    services: Services = Field(default_factory=Services, description="The services sessions are configured for.")


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


def load_deployment(path: str | Path) -> Deployment:
    """Read a deployment settings file (JSON or YAML).

    >>> load_deployment("deployment.yaml").services.s3.bucket  # doctest: +SKIP
    'atelier-shared'
    """
    return load_settings_file(path, Deployment, what="deployment settings", error=SettingsError)
