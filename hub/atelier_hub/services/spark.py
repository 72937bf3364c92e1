"""Spark: no process of its own (each session starts its driver), only the settings
every session's ``SparkSession.builder.getOrCreate()`` reads.

Rule this module keeps: the s3a jars and the Java Spark runs on are named here, from
the installer's paths; the rest of the session's Spark config comes from the profile and the store
(:func:`spark_defaults`, pure).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..install.paths import JAVA17_HOME, spark_jars
from ..profiles import Profile
from ..settings import ServiceSettings, SessionContext
from .base import Service, Site


class SparkService(ServiceSettings):
    """How ``SparkSession.builder.getOrCreate()`` starts in a session."""

    about: ClassVar[str] = "How sessions start Spark."

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

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        env = {}
        if ctx.config_dir:
            env["SPARK_CONF_DIR"] = f"{ctx.config_dir}/spark"
        if self.local_ip:
            env["SPARK_LOCAL_IP"] = self.local_ip
        if self.java_home:
            env["JAVA_HOME"] = self.java_home
        return env

    def session_files(self, ctx: SessionContext) -> dict[str, str]:
        conf = spark_defaults(ctx.profile, services=ctx.services, cpus=ctx.cpus)
        return {"spark/spark-defaults.conf": "".join(f"{k} {v}\n" for k, v in conf.items())}


def spark_defaults(profile: Profile, *, services, cpus: int) -> dict[str, str]:
    """``spark-defaults.conf`` entries for a session: ``cpus`` cores (the session's CPU
    count, as its thread pools) and the profile's memory, s3a on the deployment's store.
    Credentials are not written: s3a's default provider chain reads the session's AWS_*
    variables (or IRSA on a cluster).

    >>> from atelier_hub.profiles import Profile
    >>> from atelier_hub.services import Services
    >>> p = Profile(name="cpu-large", display_name="L", cpu={"limit": 8}, memory={"limit": "16G"})
    >>> spark_defaults(p, services=Services(spark=SparkService()), cpus=8)["spark.master"]
    'local[8]'
    """
    sp = services.spark
    if sp is None:
        return {}
    cores = cpus
    mib = profile.memory.limit // 2**20
    conf: dict[str, str] = {}
    if sp.master is None:
        # Local mode: the whole job runs in the driver JVM, which gets half the session's
        # memory (the Python kernel and the OS keep the rest).
        conf["spark.master"] = f"local[{cores}]"
        conf["spark.driver.memory"] = f"{max(512, mib // 2)}m"
    else:
        conf["spark.master"] = sp.master
        conf["spark.executor.cores"] = str(cores)
        conf["spark.executor.memory"] = f"{max(512, mib * 3 // 4)}m"
    if sp.local_ip:
        conf["spark.driver.bindAddress"] = conf["spark.driver.host"] = sp.local_ip
    if sp.jars:
        conf["spark.jars"] = ",".join(sp.jars)
    s3 = getattr(services, "s3", None)
    if s3 is not None:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = s3.region
        if s3.endpoint_url:
            conf["spark.hadoop.fs.s3a.endpoint"] = s3.endpoint_url
            conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
            conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(s3.endpoint_url.startswith("https")).lower()
        # Bounded retries: a store that is down fails the job in seconds, not minutes.
        conf["spark.hadoop.fs.s3a.attempts.maximum"] = "3"
        conf["spark.hadoop.fs.s3a.retry.limit"] = "3"
        conf["spark.hadoop.fs.s3a.connection.establish.timeout"] = "5s"
    conf.update(sp.conf)
    return conf


class Spark(Service):
    name = "spark"
    title = "Spark"
    settings = SparkService
    needs = ("spark",)
    has_port = False

    def endpoints(self, site: Site) -> dict:
        return {"spark": SparkService(
            jars=[str(p) for p in spark_jars()],
            java_home=str(JAVA17_HOME),
            local_ip="127.0.0.1",
        )}

    def banner(self, site: Site) -> str:
        return "local[N] sized to the profile, s3a on the shared bucket"


SERVICE = Spark()
