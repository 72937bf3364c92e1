"""atelier-lab's JupyterLab extension (``extensions/src``, TypeScript) built into
``extensions/atelier_lab/labextension``, which the wheel ships as
``share/jupyter/labextensions/atelier-lab`` (the base image's JupyterLab loads it).

Rule this module keeps: the build runs only when its inputs changed (a stamp of the
sources, the lock and JupyterLab's core package file sits in the output), and
node_modules lives in the cache, never in the checkout: the sources are copied into
``CACHE/atelier-lab-labext-VERSION/``, npm installs there from the committed lock (from
scratch only when the lock changes), and the built extension is copied back.
The builder is ``@jupyter/builder``, the one JupyterLab 4.6's own staging package names
(ref: jupyterlab/staging/package.json), given JupyterLab's core package file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from . import _steps
from .paths import REPO, VENV, cache_dir

__all__ = ["EXTENSION", "OUTPUT", "ensure_lab_extension", "sources_hash"]

EXTENSION = REPO / "extensions"
OUTPUT = EXTENSION / "atelier_lab" / "labextension"
SOURCES = ("package.json", "package-lock.json", "tsconfig.json", "src", "style")
STAMP = ".atelier-built"


def _files(root: Path) -> list[Path]:
    out = []
    for name in SOURCES:
        p = root / name
        out += [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    return out


def sources_hash(root: Path = EXTENSION, *, core: bytes = b"") -> str:
    """Hash of the extension's sources and JupyterLab's core package file.

    >>> import tempfile
    >>> empty = Path(tempfile.mkdtemp())
    >>> sources_hash(empty) == sources_hash(empty) != sources_hash(empty, core=b"{}")
    True
    """
    h = hashlib.sha256(core)
    for f in _files(root):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _core_package_file() -> Path:
    """JupyterLab's staging/package.json, from the interpreter that has JupyterLab."""
    for python in (VENV / "bin" / "python", Path(sys.executable)):
        if not python.exists():
            continue
        r = subprocess.run([str(python), "-c", "import jupyterlab, os; print(os.path.dirname(jupyterlab.__file__))"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return Path(r.stdout.strip()) / "staging" / "package.json"
    sys.exit("[atelier install] building atelier-lab's JupyterLab extension needs JupyterLab in .venv: "
             "run `make install` (it installs .venv first)")


def ensure_lab_extension() -> Path:
    core = _core_package_file()
    stamp = sources_hash(core=core.read_bytes())
    if (OUTPUT / STAMP).exists() and (OUTPUT / STAMP).read_text() == stamp:
        return OUTPUT
    if shutil.which("npm") is None or shutil.which("node") is None:
        sys.exit("[atelier install] atelier-lab's JupyterLab extension needs Node.js 20+ and npm: "
                 "apt-get install nodejs npm")
    version = json.loads((EXTENSION / "package.json").read_text())["version"]
    work = cache_dir() / f"atelier-lab-labext-{version}"
    work.mkdir(parents=True, exist_ok=True)
    for name in (*SOURCES, "lib", "tsconfig.tsbuildinfo", "atelier_lab"):
        target = work / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    for name in SOURCES:
        src = EXTENSION / name
        if src.is_dir():
            shutil.copytree(src, work / name)
        elif src.exists():
            shutil.copy2(src, work / name)
    lock = EXTENSION / "package-lock.json"

    def deps() -> str:
        return hashlib.sha256((EXTENSION / "package.json").read_bytes()
                              + (lock.read_bytes() if lock.exists() else b"")).hexdigest()

    deps_stamp = work / "node_modules" / ".atelier-deps"
    if not deps_stamp.exists() or deps_stamp.read_text() != deps():
        # npm ci installs exactly the committed lock; without one (a dependency was just
        # changed) npm install writes it, and it is copied back to be committed.
        npm = ["npm", "ci"] if lock.exists() else ["npm", "install"]
        _steps.run([*npm, "--no-audit", "--no-fund"], what="installing the JupyterLab extension's npm packages",
                   expect="30 s, once per lock", cwd=work)
        if not lock.exists():
            shutil.copy2(work / "package-lock.json", lock)
        deps_stamp.write_text(deps())
    _steps.run([str(work / "node_modules" / ".bin" / "tsc")], what="compiling the JupyterLab extension (tsc)",
               expect="10 s", cwd=work)
    _steps.run(["node", str(work / "node_modules" / "@jupyter" / "builder" / "lib" / "build-labextension.js"),
                "--core-package-file", str(core), str(work)],
               what="building the JupyterLab extension (webpack)", expect="30 s", cwd=work,
               stdout=subprocess.DEVNULL)
    shutil.rmtree(OUTPUT, ignore_errors=True)
    shutil.copytree(work / "atelier_lab" / "labextension", OUTPUT)
    (OUTPUT / STAMP).write_text(stamp)
    return OUTPUT


def link_into(venv: Path = VENV) -> None:
    """The venv's JupyterLab (process-mode sessions, editable install) finds the built
    extension and its server extension, as an installed wheel's would be found."""
    links = {
        venv / "share" / "jupyter" / "labextensions" / "atelier-lab": OUTPUT,
        venv / "etc" / "jupyter" / "jupyter_server_config.d" / "atelier_lab.json":
            EXTENSION / "jupyter-config" / "server-config" / "atelier_lab.json",
    }
    for link, target in links.items():
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(target)


def main() -> None:
    _steps.say(f"JupyterLab extension: {ensure_lab_extension()}")


if __name__ == "__main__":
    main()
