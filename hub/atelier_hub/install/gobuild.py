"""Every Go tool Atelier builds, built one way: one toolchain, one set of flags, one
``go build`` per module.

Rule this module keeps: standard library only (it runs from the system Python). Each
tool group is a Go module of the repository (a folder with ``go.mod``, a committed
``go.sum`` and a ``tools.go`` naming the main packages) whose binaries are built in one
``go build -o DIR pkg1 pkg2 ...``, so the packages they share compile once. The flags
are the same for every group: ``CGO_ENABLED=0`` (static binaries, no C toolchain),
``-trimpath``, ``-ldflags "-s -w"`` (plus the group's ``-X`` version settings),
``-buildvcs=false`` and ``-mod=readonly`` (every module's hash is checked against the
committed go.sum; nothing is re-resolved), under one pinned toolchain (``GOTOOLCHAIN``:
an older local Go fetches it once from the module proxy). The binaries land in a
versioned folder of ``${ATELIER_CACHE:-~/.cache/atelier}`` with a stamp of the group's
inputs (go.mod, go.sum, packages, flags, toolchain): a finished group is never rebuilt,
a changed one always is, and only a finished build gets the real names.

Why here: the runtime installer (versitygw, the S3 server) and the test suite's own
tools (``tests/k8s/control_plane.py``: Kubernetes, etcd, kwok, helm;
``tests/terraform/terraform_tools.py``: terraform, tflint) both build Go, and the tests
already import the installer's steps from ``hub/``; runtime code never imports this
module (it reads :mod:`atelier_hub.install.paths` alone), so the installer stays apart.

Downloads overlap compilation: :func:`prefetch` starts ``go list -deps`` (which fetches
exactly the modules the build needs) of every group in the background; a build that
reaches a module still being fetched waits on Go's own lock for it, and a failed
prefetch is reported by name while the build, fetching again, fails with its own step
name if the network really is down.

Bumping a version: change the group's go.mod, delete its go.sum, run the build once
(``-mod=mod`` is used when go.sum is absent and writes one in the cache's copy), then
copy that go.sum back next to go.mod and commit it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import _steps
from .paths import cache_dir

__all__ = ["GO_TOOLCHAIN", "GoGroup", "go_env", "build", "prefetch", "default_binary_name", "module_copy", "report_prefetch"]

# The one Go toolchain every tool is built with (the newest go.mod among the groups asks
# for 1.26.3: tflint). A local Go of 1.21 or newer switches to it by itself.
GO_TOOLCHAIN = "go1.26.8"
COMMON_LDFLAGS = "-s -w"


@dataclass(frozen=True)
class GoGroup:
    """Binaries built together from one Go module of the repository.

    ``binaries`` maps each binary's name to its main package; ``out`` is the folder
    they land in; ``xflags`` are ``-X importpath.name=value`` settings (a setting for a
    package a binary does not link is ignored by the linker); ``expect`` is the cold
    build time shown to the user; ``retry`` the command that retries the step.
    """

    name: str
    gomod: Path
    binaries: dict[str, str]
    out: Path
    xflags: tuple[str, ...] = ()
    expect: str = ""
    retry: str = ""
    extra: dict = field(default_factory=dict)

    def paths(self) -> dict[str, Path]:
        return {name: self.out / name for name in self.binaries}

    def ldflags(self) -> str:
        return " ".join([COMMON_LDFLAGS, *(f"-X {x}" for x in self.xflags)])

    def stamp(self) -> str:
        """Hash of everything the binaries are built from (not the Go caches)."""
        h = hashlib.sha256(f"{GO_TOOLCHAIN}\n{self.ldflags()}\n{sorted(self.binaries.items())}\n".encode())
        for name in ("go.mod", "go.sum", "tools.go"):
            p = self.gomod / name
            h.update(name.encode() + b"\0" + (p.read_bytes() if p.exists() else b"-"))
        return h.hexdigest()[:16]

    def built(self) -> bool:
        """Whether every binary is there, built from the current inputs."""
        stamp = self.out / ".go-inputs"
        return (stamp.exists() and stamp.read_text().strip() == self.stamp()
                and all(os.access(p, os.X_OK) for p in self.paths().values()))


def default_binary_name(package: str) -> str:
    """The file name ``go build -o DIR`` gives a main package.

    >>> default_binary_name("go.etcd.io/etcd/server/v3"), default_binary_name("sigs.k8s.io/kwok/cmd/kwok")
    ('server', 'kwok')
    """
    parts = package.rstrip("/").split("/")
    return parts[-2] if len(parts) > 1 and re.fullmatch(r"v[0-9]+", parts[-1]) else parts[-1]


def go() -> str:
    exe = shutil.which("go")
    if exe is None:
        sys.exit(f"[atelier install] Go (1.21 or newer; it fetches {GO_TOOLCHAIN} itself) is needed to build "
                 "versitygw (the S3 server) and the test suite's Kubernetes and Terraform tools: "
                 "install it from https://go.dev/dl/ or with `apt-get install golang`")
    return exe


def go_env(gomod: Path | None = None) -> dict:
    """The environment of every Go command here. GOFLAGS, GOBIN or GOTOOLCHAIN of the
    caller must not change these builds."""
    mode = "readonly" if gomod is None or (gomod / "go.sum").exists() else "mod"
    return {"CGO_ENABLED": "0", "GOFLAGS": f"-mod={mode} -buildvcs=false -trimpath", "GOBIN": "",
            "GOTOOLCHAIN": GO_TOOLCHAIN}


def module_copy(group: GoGroup) -> Path:
    """The group's module copied into the cache: a build without a committed go.sum
    writes one there, never into the repository."""
    src = group.out.parent / f".{group.out.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    for name in ("go.mod", "go.sum", "tools.go"):
        want, have = group.gomod / name, src / name
        if not want.exists():
            have.unlink(missing_ok=True)
        elif not have.exists() or have.read_bytes() != want.read_bytes():
            # Written aside, then renamed: a background fetch reading the copy never sees half a file.
            part = have.with_name(f".{name}.part")
            shutil.copyfile(want, part)
            part.replace(have)
    return src


def _log(group: GoGroup, what: str) -> Path:
    d = cache_dir() / "go-logs"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{group.name}.{what}.log"


def prefetch(groups: list[GoGroup]) -> list[tuple[GoGroup, subprocess.Popen]]:
    """Start fetching every unbuilt group's modules in the background (returns at once).
    Pass the result to :func:`report_prefetch` at the end."""
    started = []
    for group in groups:
        if group.built():
            continue
        src = module_copy(group)
        log = _log(group, "prefetch").open("w")
        proc = subprocess.Popen([go(), "list", "-deps", "-f", "", *group.binaries.values()], cwd=src,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **go_env(group.gomod)})
        _steps.say(f"fetching the Go modules of {group.name} in the background (log: {log.name})")
        started.append((group, proc))
    return started


def report_prefetch(started: list[tuple[GoGroup, subprocess.Popen]]) -> None:
    """Wait for the background fetches and name any that failed (the builds fetch again
    and fail by their own name when the proxy is really unreachable)."""
    for group, proc in started:
        if proc.wait() != 0:
            log = _log(group, "prefetch")
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
            _steps.say(f"fetching the Go modules of {group.name} failed (exit {proc.returncode}; {log}):\n{tail}\n"
                       "check that the Go module proxy (GOPROXY) is reachable")


def build(group: GoGroup) -> dict[str, Path]:
    """Build the group's binaries unless they are there from the current inputs; return
    their paths. A lock in the cache keeps two installs from building a group at once."""
    import fcntl

    if group.built():
        return group.paths()
    group.out.parent.mkdir(parents=True, exist_ok=True)
    with open(group.out.parent / f".{group.out.name}.build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent install waits here, then reuses
        if group.built():
            return group.paths()
        src = module_copy(group)
        tmp = group.out.parent / f".{group.out.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # nice: a cold build takes both cores for many minutes; what else runs keeps a share.
        _steps.run(["nice", "-n", "10", go(), "build", "-ldflags", group.ldflags(), "-o", str(tmp) + "/",
                    *group.binaries.values()],
                   what=f"building {group.name} ({', '.join(group.binaries)}) with Go", expect=group.expect,
                   cwd=src, env=go_env(group.gomod), retry=group.retry)
        for name, package in group.binaries.items():
            built = tmp / default_binary_name(package)
            if built.name != name:
                built.replace(tmp / name)
        group.out.mkdir(parents=True, exist_ok=True)
        for name in group.binaries:  # only finished binaries get the real names
            (tmp / name).replace(group.out / name)
        shutil.rmtree(tmp)
        (group.out / ".go-inputs").write_text(group.stamp() + "\n")
    return group.paths()
