"""Build (once per machine) the Kubernetes control plane the cluster-mode tests run.

Rule this module keeps: standard library only (``make install-test`` runs it from the
system Python), every binary lands in a versioned folder of
``${ATELIER_CACHE:-~/.cache/atelier}`` outside the clone, and a binary that is already
there is never rebuilt. It belongs to the test suite, not to the shipped package:
users never need a control plane of their own. Everything comes from the Go module
proxy.

- ``kubernetes-v1.36.3/bin/``: kube-apiserver, kube-controller-manager,
  kube-scheduler, kubelet (from ``k8s.io/kubernetes``) and etcd (from
  ``go.etcd.io/etcd``, at the version that Kubernetes release pins), built in one Go
  module, ``gomod/``, so their shared packages compile once; ``pause``, the pod
  sandbox's process, compiled (gcc, static) from the same release's
  ``build/pause/linux/pause.c``.
- ``kwok-v0.8.0/kwok``: simulates nodes and pod lifecycles (``sigs.k8s.io/kwok``).
- From Debian (apt): containerd (the real node's runtime; docker.io brings it too) and
  containernetworking-plugins (its ``loopback`` plugin is the node's only network).

Run it alone with ``python3 tests/k8s/control_plane.py`` (what ``make install-test`` does).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"  # the version k8s.io/kubernetes v1.36.3 requires
KWOK_VERSION = "v0.8.0"

GOMOD = Path(__file__).resolve().parent / "gomod"

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub"))
from atelier_hub.install.paths import cache_dir  # noqa: E402 (stdlib only)

# binary name -> (Go package, cold build time measured on 2 busy cores). Ordered so
# the longest build comes first: later ones reuse its compiled packages from Go's cache.
_KUBE_PACKAGES = {
    "kube-apiserver": ("k8s.io/kubernetes/cmd/kube-apiserver", "11 min cold"),
    "kube-controller-manager": ("k8s.io/kubernetes/cmd/kube-controller-manager", "6 min cold"),
    "kube-scheduler": ("k8s.io/kubernetes/cmd/kube-scheduler", "20 s cold"),
    # The real node (tests/k8s/k8s_node.py): ~5 min cold, ~30 s after the others.
    "kubelet": ("k8s.io/kubernetes/cmd/kubelet", "30 s after the others, 5 min alone"),
    "etcd": ("go.etcd.io/etcd/server/v3", "30 s cold"),
}


def control_plane_paths() -> dict[str, Path]:
    """Where each control-plane binary lives (they may not exist yet).

    >>> sorted(control_plane_paths())
    ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kwok', 'pause']
    """
    kube_bin = cache_dir() / f"kubernetes-{KUBERNETES_VERSION}" / "bin"
    paths = {name: kube_bin / name for name in (*_KUBE_PACKAGES, "pause")}
    paths["kwok"] = cache_dir() / f"kwok-{KWOK_VERSION}" / "kwok"
    return paths


# Debian packages of the real node, keyed by the file that shows each is installed.
NODE_PACKAGES = {"containerd": "/usr/bin/containerd", "containernetworking-plugins": "/usr/lib/cni/loopback"}


def missing_binaries() -> list[str]:
    return [name for name, path in control_plane_paths().items() if not os.access(path, os.X_OK)]


def missing_node_packages() -> list[str]:
    return [pkg for pkg, marker in NODE_PACKAGES.items() if not os.access(marker, os.X_OK)]


def say(msg: str) -> None:
    print(f"[atelier install] {msg}", flush=True)


def _run(cmd: list[str], *, what: str, expect: str, cwd: Path | None = None, env: dict) -> None:
    say(f"{what} (about {expect}) ...")
    t0 = time.monotonic()
    try:
        subprocess.run(cmd, check=True, cwd=cwd, env={**os.environ, **env})
    except subprocess.CalledProcessError as exc:
        sys.exit(f"[atelier install] {what} failed (exit {exc.returncode}); see the output above. "
                 f"Rerun `python3 tests/k8s/control_plane.py` to retry: finished "
                 f"binaries are kept.")
    say(f"{what}: done in {time.monotonic() - t0:.0f} s")


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        sys.exit("[atelier install] Go (1.21 or newer; it fetches the 1.26 toolchain itself) is "
                 "needed to build the Kubernetes control plane for the cluster-mode tests: "
                 "install it from https://go.dev/dl/ or `apt-get install golang`")
    return go


def _build_env() -> dict:
    # CGO off: static binaries, no C toolchain needed. With gomod/go.sum in the repo the
    # build is -mod=readonly: every module's hash is checked against it, nothing is
    # re-resolved. Without one (a bumped version), -mod=mod resolves and records the
    # sums in the cache's copy; copy that go.sum back into gomod/.
    mode = "readonly" if (GOMOD / "go.sum").exists() else "mod"
    return {"CGO_ENABLED": "0", "GOFLAGS": f"-mod={mode} -buildvcs=false"}


def _prepare_module(src: Path) -> None:
    """Copy gomod/ into the cache: the build writes go.sum there, never into the repo."""
    src.mkdir(parents=True, exist_ok=True)
    for name in ("go.mod", "tools.go", "go.sum"):
        if (GOMOD / name).exists():
            shutil.copyfile(GOMOD / name, src / name)


def ensure_control_plane() -> dict[str, Path]:
    """Build whatever control-plane binary is missing; return every binary's path.

    Takes about 27 min cold on 2 busy cores (API server 11, controller-manager 6, kubelet 1,
    kwok 8; kwok shares few packages with Kubernetes), nothing warm. Go's module and
    build caches (~4 GB) may be deleted afterwards: only the binaries are reused.
    A lock in the cache folder keeps two installs from building at the same time.
    """
    paths = control_plane_paths()
    if not missing_binaries():
        _ensure_node_packages()  # returns at once when they are installed
        return paths
    say(f"building the Kubernetes control plane for the cluster-mode tests, once per machine "
        f"(about 27 min cold; missing: {', '.join(missing_binaries())})")
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".controlplane-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent install waits here, then reuses
        go = _go()
        kube_dir = paths["kube-apiserver"].parents[1]
        ldflags = f"-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}"
        for name, (package, expect) in _KUBE_PACKAGES.items():
            if os.access(paths[name], os.X_OK):
                continue
            _prepare_module(kube_dir / "src")
            tmp = paths[name].with_name(f".{name}.partial")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            version = ETCD_VERSION if name == "etcd" else KUBERNETES_VERSION
            flags = "-s -w" if name == "etcd" else ldflags
            _run([go, "build", "-trimpath", "-ldflags", flags, "-o", str(tmp), package],
                 what=f"building {name} {version} from the Go module proxy", expect=expect,
                 cwd=kube_dir / "src", env=_build_env())
            tmp.replace(paths[name])  # only a finished binary gets the real name
        if not os.access(paths["pause"], os.X_OK):
            _build_pause(go, src=kube_dir / "src", target=paths["pause"])
        if not os.access(paths["kwok"], os.X_OK):
            staging = paths["kwok"].parent / ".gobin"
            _run([go, "install", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
                 what=f"building kwok {KWOK_VERSION} (simulated nodes)", expect="8 min cold",
                 env={"CGO_ENABLED": "0", "GOBIN": str(staging), "GOFLAGS": "-buildvcs=false"})
            (staging / "kwok").replace(paths["kwok"])
            staging.rmdir()
    _ensure_node_packages()
    return paths


def _build_pause(go: str, *, src: Path, target: Path) -> None:
    """The sandbox process every pod starts with, from this Kubernetes release's source
    (no registry holds registry.k8s.io/pause for us): static, so the image is one file."""
    if shutil.which("gcc") is None:
        sys.exit("[atelier install] gcc is needed to compile the pod sandbox's pause process: "
                 "apt-get install gcc libc6-dev")
    _prepare_module(src)  # the module's source comes from Go's module cache (fetched if dropped)
    module = subprocess.run([go, "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"], cwd=src, check=True,
                            capture_output=True, text=True, env={**os.environ, **_build_env()}).stdout.strip()
    tmp = target.with_name(".pause.partial")
    _run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={KUBERNETES_VERSION}", "-o", str(tmp),
          str(Path(module) / "build/pause/linux/pause.c")],
         what="compiling the pod sandbox's pause process", expect="2 s", env={})
    tmp.replace(target)


def _ensure_node_packages() -> None:
    # The project's installer step (apt as root on Debian, else a clear message).
    from atelier_hub.install._steps import ensure_apt

    ensure_apt(NODE_PACKAGES, why="the cluster-mode tests' real node (containerd and its loopback network)")


def main() -> None:
    t0 = time.monotonic()
    paths = ensure_control_plane()
    for name, path in paths.items():
        say(f"{name}: {path}")
    say(f"control plane ready in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
