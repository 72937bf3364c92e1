"""The fixed paths inside a session image (``images/base``; ``images/gpu`` builds on it).

Rule this module keeps: each path the image's Dockerfile makes is named here once, and
every mode (container sessions, KubeSpawner pods, the CLI that opens a session's folder)
takes it from here. A change to the Dockerfile changes this module and nothing else.
No imports: any floor may use it.
"""

__all__ = ["HOME", "SESSION_CONFIG_DIR", "SPARK_JARS", "JAVA_HOME", "PYTHON"]

# The session's home: the Jupyter Docker Stacks' user is jovyan, and z2jh mounts the home
# volume there by default; embedded containers mount STATE/homes/USER at the same path,
# so code that writes under ~ behaves alike in both modes.
HOME = "/home/jovyan"
# The session's generated config files (spark-defaults.conf, fsspec, the Trino CLI's):
# written by the image's start hook (containers) or mounted from the server's Secret (pods).
SESSION_CONFIG_DIR = "/etc/atelier/session"
# Spark's extra jars (hadoop-aws and its SDK), copied in by the Dockerfile.
SPARK_JARS = "/opt/atelier/spark-jars"
# The image's Java, for Spark.
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
# The image's Python (its venv), which runs a job's runner (atelier_hub._job_runner).
PYTHON = "/opt/atelier/venv/bin/python"
