"""Spark: no process of its own (each session starts its driver), only the settings
every session's ``SparkSession.builder.getOrCreate()`` reads.

Rule this module keeps: the s3a jars and the Java Spark runs on are named here, from
the installer's paths; the rest of the session's Spark config comes from the profile
(:func:`atelier_hub.session.spark_defaults`).
"""

from __future__ import annotations

from ..install.paths import JAVA17_HOME, spark_jars
from ..settings import SparkService
from . import Service


class Spark(Service):
    name = "spark"
    title = "Spark"
    needs = ("spark",)
    has_port = False

    def endpoints(self, stack) -> dict:
        return {"spark": SparkService(
            jars=[str(p) for p in spark_jars()],
            java_home=str(JAVA17_HOME),
            local_ip="127.0.0.1",
        )}

    def banner(self, stack) -> str:
        return "local[N] sized to the profile, s3a on the shared bucket"


SERVICE = Spark()
