"""The container parts: Debian's Docker engine, a Debian base image made locally, and
the images of ``images/``.

Rule this module keeps: each image is built once per set of inputs. Its inputs (the
Dockerfile, the files beside it, the lock, the local distributions it installs, the
image it starts from) are hashed; the image carries the hash as a label and a tag
``inputs-HASH``, and a build runs only when no image has the current hash. No image
registry is reachable here, so the bookworm image every ``FROM`` pins by digest is
replaced, through the ``BASE_IMAGE`` build argument, by one made from Debian's own
packages (debootstrap + ``docker import``), with this machine's extra CA certificates.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import _steps, labext
from .paths import CHP_VERSION, IMAGES, NODE_VERSION, REPO, cache_dir, docker_dir, image_ref, spark_jars, trino_paths

__all__ = ["ensure_engine", "ensure_base_rootfs", "ensure_image", "ensure_images", "image_inputs_hash"]

DEBIAN_SUITE = "bookworm"
# What the local base holds: exactly what images/*/Dockerfile expects of
# debian:bookworm-slim plus Python (the Dockerfiles install the rest with apt).
DEBOOTSTRAP_INCLUDE = ("ca-certificates",)
LOCAL_BASE = f"atelier-debian:{DEBIAN_SUITE}-local"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")

# Per image: the local folders (relative to the repository) its Dockerfile copies, so
# a change there rebuilds it.
IMAGE_SOURCES = {
    "base": ("images/base", "repro", "extensions", "hub/atelier_hub/session_config"),  # + the staged jars
    "gpu": ("images/gpu",),
    "hub": ("images/hub", "hub"),
    "proxy": ("images/proxy",),  # + the staged Node
}
IMAGE_PARENT = {"gpu": "base"}
# Build arguments besides BASE_IMAGE, each a pinned version from paths.py (hashed too).
IMAGE_BUILD_ARGS = {"proxy": {"CHP_VERSION": CHP_VERSION}}


def _docker(*args: str, **kw) -> subprocess.CompletedProcess:
    from ..embedded.engine import docker_host

    return subprocess.run(["docker", *args], env={**os.environ, "DOCKER_HOST": docker_host()}, **kw)


def ensure_engine() -> None:
    """docker.io and debootstrap from Debian, then the engine on its own socket."""
    packages = {"docker.io": "/usr/sbin/dockerd", "debootstrap": "/usr/sbin/debootstrap"}
    missing = [p for p, marker in packages.items() if not Path(marker).exists()]
    if missing:
        # Debian's packages start their daemons on install, with Docker's default
        # bridge (172.17.x) and iptables rules: policy-rc.d forbids any start while
        # they install; the engine is started below, on loopback only.
        policy = Path("/usr/sbin/policy-rc.d")
        ours = not policy.exists()
        if ours and os.geteuid() == 0:
            policy.write_text("#!/bin/sh\n# written by atelier's installer while docker.io installs\nexit 101\n")
            policy.chmod(0o755)
        try:
            _steps.ensure_apt(packages, why="container sessions (the engine) and the local base image")
        finally:
            if ours:
                policy.unlink(missing_ok=True)
    if shutil.which("docker") is None:
        sys.exit("[atelier install] the docker CLI is missing; apt-get install docker-cli (or docker.io)")
    from ..embedded.engine import engine

    try:
        _steps.say(engine().start())
    except RuntimeError as exc:
        sys.exit(f"[atelier install] {exc}")


def _image_label(ref: str, label: str) -> str | None:
    r = _docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', ref,
                capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def _extra_cas() -> list[Path]:
    return sorted(EXTRA_CA_DIR.glob("*.crt")) if EXTRA_CA_DIR.is_dir() else []


def _base_stamp() -> str:
    h = hashlib.sha256(f"{DEBIAN_SUITE} minbase {' '.join(DEBOOTSTRAP_INCLUDE)} v1".encode())
    for ca in _extra_cas():
        h.update(ca.name.encode() + ca.read_bytes())
    return h.hexdigest()[:16]


def _mirror() -> str:
    """The Debian mirror apt uses on this machine (debootstrap takes the same)."""
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and not words[1].endswith("-security"):
                return words[1]
            if words[:1] == ["deb"] and DEBIAN_SUITE in words:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def ensure_base_rootfs() -> str:
    """A bookworm image from Debian's packages, imported as ``LOCAL_BASE``."""
    stamp = _base_stamp()
    if _image_label(LOCAL_BASE, "dev.atelier.stamp") == stamp:
        return LOCAL_BASE
    root = cache_dir() / f"debian-{DEBIAN_SUITE}-rootfs-{stamp}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        _steps.run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_INCLUDE)}",
                    DEBIAN_SUITE, str(root), _mirror()],
                   what=f"making a Debian {DEBIAN_SUITE} base with debootstrap", expect="1-2 min, once",
                   stdout=subprocess.DEVNULL)
        # pip, uv and apt inside the images go through this machine's TLS-inspecting
        # egress: its CA certificates must be trusted there too (else "No matching
        # distribution found").
        for ca in _extra_cas():
            shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
        _steps.run(["chroot", str(root), "update-ca-certificates"], what="adding this machine's CA certificates",
                   stdout=subprocess.DEVNULL)
        # As the Debian images on Docker Hub do: no package caches, no docs in layers.
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        (root / ".complete").write_text(stamp)
    _steps.say(f"importing {root} as {LOCAL_BASE} ...")
    t0 = time.monotonic()
    tar = subprocess.Popen(["tar", "--numeric-owner", "--exclude=./.complete", "-C", str(root), "-c", "."],
                           stdout=subprocess.PIPE)
    r = _docker("import", "--change", f"LABEL dev.atelier.stamp={stamp}", "--change", 'CMD ["bash"]',
                "-", LOCAL_BASE, stdin=tar.stdout, capture_output=True, text=True)
    tar.wait()
    if r.returncode or tar.returncode:
        sys.exit(f"[atelier install] docker import of {root} failed: {r.stderr.strip()}")
    _steps.say(f"imported in {time.monotonic() - t0:.0f} s")
    return LOCAL_BASE


def _hash_tree(h, path: Path) -> None:
    if path.is_file():
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
        return
    for p in sorted(path.rglob("*")):
        # Caches, the staged jars (named in the hash instead) and READMEs never reach an image.
        # Tool caches (ruff, pytest) in a developer's checkout are not inputs either: a fresh
        # clone has none, and the same sources must give the same image.
        skip = ({"__pycache__", ".jars", ".trino", ".node", "node_modules", ".ruff_cache", ".pytest_cache"}
                & set(p.parts) or p.suffix == ".pyc")
        if p.is_file() and not skip and p.name != "README.md":
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())


def image_inputs_hash(name: str, *, base: str) -> str:
    """Hash of everything an image is built from, with the image it starts from."""
    h = hashlib.sha256(f"from {base}\n".encode())
    for rel in IMAGE_SOURCES[name]:
        _hash_tree(h, REPO / rel)
    if name == "base":
        for jar in [*spark_jars(), trino_paths().cli_jar]:
            h.update(jar.name.encode() + str(jar.stat().st_size if jar.exists() else 0).encode())
    if name in ("base", "proxy"):
        h.update(f"node-{NODE_VERSION}".encode())
    for arg, value in IMAGE_BUILD_ARGS.get(name, {}).items():
        h.update(f"{arg}={value}\n".encode())
    return h.hexdigest()[:16]


def _stage_jars() -> None:
    """Spark's s3a jars, Trino's CLI jar and Node 24 into the base image's build context
    (hard links from the cache)."""
    _stage(IMAGES / "base" / ".jars", {j.name: j for j in spark_jars()})
    _stage(IMAGES / "base" / ".trino", {"trino-cli.jar": trino_paths().cli_jar})
    _stage_node(IMAGES / "base" / ".node")


def _stage_node(dest: Path) -> None:
    """Node 24 (for code-server, VS Code in the browser) into the build context, as
    hard links from the cache; replaced when the version changes."""
    prefix = _steps.ensure_node24()
    if (dest / ".complete").exists() and (dest / ".complete").read_text() == (prefix / ".complete").read_text():
        return
    shutil.rmtree(dest, ignore_errors=True)

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(prefix, dest, symlinks=True, copy_function=link)


def _stage(dest: Path, wanted: dict[str, Path]) -> None:
    dest.mkdir(exist_ok=True)
    for old in dest.iterdir():
        if old.name not in wanted:
            old.unlink()
    for name, jar in wanted.items():
        if not jar.exists():
            sys.exit(f"[atelier install] {jar} is missing; the Spark and Trino steps of `make install` fetch it")
        target = dest / name
        if not target.exists():
            try:
                os.link(jar, target)
            except OSError:
                shutil.copy(jar, target)


def _image_id(ref: str) -> str:
    r = _docker("image", "inspect", "--format", "{{.Id}}", ref, capture_output=True, text=True)
    return r.stdout.strip()


def ensure_image(name: str) -> str:
    """Build ``images/NAME`` unless an image with its current inputs exists; returns its tag."""
    if name in IMAGE_PARENT:
        parent = image_ref(IMAGE_PARENT[name])
        base_arg = ("BASE_IMAGE", parent)
        ensure_image(IMAGE_PARENT[name])
    else:
        base_arg = ("BASE_IMAGE", ensure_base_rootfs())
    if name == "base":
        # The image ships atelier-lab's built labextension: build it first (its output is
        # one of the hashed inputs).
        labext.ensure_lab_extension()
    inputs = image_inputs_hash(name, base=_image_id(base_arg[1]))
    tagged = f"atelier-{name}:inputs-{inputs}"
    if _image_label(tagged, "dev.atelier.inputs") == inputs:
        _docker("tag", tagged, image_ref(name), check=True)
        _remove_stale(name, keep=tagged)
        return tagged
    if name == "base":
        _stage_jars()
    if name == "proxy":
        _stage_node(IMAGES / "proxy" / ".node")
    build_args = [a for arg, value in IMAGE_BUILD_ARGS.get(name, {}).items()
                  for a in ("--build-arg", f"{arg}={value}")]
    expect = {"base": "5-10 min cold (pyspark builds from source), seconds when cached",
              "gpu": "5-15 min: ~3 GB of torch and CUDA wheels", "hub": "1-2 min",
              "proxy": "30 s: configurable-http-proxy from npm"}[name]
    # The context is the repository (filtered by .dockerignore): the images install
    # atelier-hub, atelier-lab and atelier-repro from this checkout.
    _steps.run(["docker", "build", "--force-rm", "--network", "host", "-f", str(IMAGES / name / "Dockerfile"),
                "--build-arg", f"{base_arg[0]}={base_arg[1]}", *build_args, "--label", f"dev.atelier.inputs={inputs}",
                "-t", tagged, "-t", image_ref(name), str(REPO)],
               what=f"building the {name} image ({tagged})", expect=expect,
               env={"DOCKER_HOST": f"unix://{docker_dir() / 'docker.sock'}", "DOCKER_BUILDKIT": "0"})
    _remove_stale(name, keep=tagged)
    return tagged


def _remove_stale(name: str, *, keep: str) -> None:
    """Earlier builds of an image (other input hashes) go, so the cache does not grow."""
    r = _docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", f"atelier-{name}",
                capture_output=True, text=True)
    stale = [t for t in r.stdout.split() if t.startswith(f"atelier-{name}:inputs-") and t != keep]
    if stale:
        _docker("image", "rm", *stale, capture_output=True)


def ensure_images(names: tuple[str, ...] = ("base", "hub")) -> None:
    ensure_engine()
    for name in names:
        ensure_image(name)


def ensure_default_images(names: tuple[str, ...] = ("base", "hub")) -> None:
    """What `make install` builds for container sessions, where this machine allows it:
    as root with apt (or an engine already there); elsewhere sessions run in the
    single-user process mode, and the installer says so."""
    from ..embedded.engine import engine

    if os.environ.get("ATELIER_SESSIONS") == "process":
        _steps.say("container images skipped (ATELIER_SESSIONS=process: single-user process sessions)")
        return
    if not engine().running() and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        _steps.say("container images skipped: the Docker engine needs root and Debian's apt here; "
                   "sessions will run in the single-user process mode")
        return
    ensure_images(names)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python3 -m atelier_hub.install.docker",
                                 description="Start the engine and build images/ where their inputs changed.")
    ap.add_argument("names", nargs="*", default=["base", "hub", "proxy"],
                    help="images to build (default: base hub proxy)")
    args = ap.parse_args(argv)
    ensure_images(tuple(args.names))


if __name__ == "__main__":
    main()
