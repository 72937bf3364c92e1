"""Build (once per machine) the Kubernetes tools the cluster-mode tests run.

Rule this module keeps: standard library only (``make install-test`` runs it from the
system Python), every binary lands in a versioned folder of
``${ATELIER_CACHE:-~/.cache/atelier}`` outside the clone, and a binary built from the
current inputs is never rebuilt. It belongs to the test suite, not to the shipped
package: users never need a control plane of their own. Everything comes from the Go
module proxy.

- ``kubernetes-v1.36.3/bin/``: kube-apiserver, kube-controller-manager,
  kube-scheduler, kubelet (from ``k8s.io/kubernetes``), etcd (from ``go.etcd.io/etcd``,
  at the version that Kubernetes release pins), kwok (simulated nodes and pod
  lifecycles, ``sigs.k8s.io/kwok``) and helm (``helm.sh/helm/v4``, for the chart
  tests), built in one ``go build`` from one Go module, ``gomod/``, so their shared
  packages compile once (:mod:`atelier_hub.install.gobuild`: the one toolchain and set
  of flags of every Go tool); ``pause``, the pod sandbox's process, compiled (gcc,
  static) from the same release's ``build/pause/linux/pause.c``.
- ``kuberay-v1.5.0/bin/``: KubeRay's operator (``ray-operator``, from
  ``github.com/ray-project/kuberay/ray-operator``) and its CRDs (RayCluster, RayJob,
  RayService: it watches all three) from the same module, a Go build of its own
  (``gomod-kuberay/``, about 2-6 min cold) for the personal Ray clusters' tests.
- ``kueue-v0.17.0/bin/``: Kueue's manager (``sigs.k8s.io/kueue/cmd/kueue``: its
  controllers, its webhooks and its visibility API server) and its CRDs, a Go build of
  its own (``gomod-kueue/``, about 4 min cold) for the GPU queue's tests.
- From Debian (apt): containerd (the real node's runtime; docker.io brings it too) and
  containernetworking-plugins (its ``loopback`` plugin is the node's only network).

Run it alone with ``python3 tests/k8s/control_plane.py`` (what ``make install-test`` does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"  # the version k8s.io/kubernetes v1.36.3 requires
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v4.2.4"  # the newest helm on the Kubernetes v0.36 libraries (gomod/go.mod)
KUBERAY_VERSION = "v1.5.0"  # gomod-kuberay/go.mod
KUEUE_VERSION = "v0.17.0"  # gomod-kueue/go.mod

GOMOD = Path(__file__).resolve().parent / "gomod"
GOMOD_KUBERAY = Path(__file__).resolve().parent / "gomod-kuberay"
GOMOD_KUEUE = Path(__file__).resolve().parent / "gomod-kueue"
#: the CRDs the operator watches (it stops where one is missing), copied out of its module at build time
KUBERAY_CRDS = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "ray.io_rayservices.yaml")
#: every CRD of Kueue's module (its manager watches them all), as its release installs them
KUEUE_CRDS = tuple(f"kueue.x-k8s.io_{kind}.yaml" for kind in (
    "admissionchecks", "clusterqueues", "cohorts", "localqueues", "multikueueclusters", "multikueueconfigs",
    "provisioningrequestconfigs", "resourceflavors", "topologies", "workloadpriorityclasses", "workloads"))

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub"))
from atelier_hub.install import _steps, gobuild  # noqa: E402 (stdlib only)
from atelier_hub.install.paths import cache_dir  # noqa: E402

# binary name -> Go package; the versions are gomod/go.mod's.
_PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "etcd": "go.etcd.io/etcd/server/v3",
    "kwok": "sigs.k8s.io/kwok/cmd/kwok",
    "helm": "helm.sh/helm/v4/cmd/helm",
}


def go_group() -> gobuild.GoGroup:
    """The Kubernetes tools as one Go build (cold: about 15-20 min on 2 busy cores, the
    API server most of it; kwok and helm add a few minutes, their Kubernetes packages
    being the control plane's)."""
    return gobuild.GoGroup(
        name=f"kubernetes-{KUBERNETES_VERSION}", gomod=GOMOD, binaries=dict(_PACKAGES),
        out=cache_dir() / f"kubernetes-{KUBERNETES_VERSION}" / "bin",
        xflags=(f"k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
                f"helm.sh/helm/v4/internal/version.version={HELM_VERSION}"),
        expect="15-20 min cold on 2 cores", retry="python3 tests/k8s/control_plane.py")


def kuberay_group() -> gobuild.GoGroup:
    """KubeRay's operator (``ray-operator``), a Go build of its own: it is built on the
    Kubernetes libraries its controller-runtime pins, not on the control plane's."""
    return gobuild.GoGroup(
        name=f"kuberay-{KUBERAY_VERSION}", gomod=GOMOD_KUBERAY,
        binaries={"ray-operator": "github.com/ray-project/kuberay/ray-operator"},
        out=cache_dir() / f"kuberay-{KUBERAY_VERSION}" / "bin", expect="3-6 min cold on 2 cores",
        retry="python3 tests/k8s/control_plane.py")


def kuberay_paths() -> dict[str, Path]:
    """The operator's binary and its CRDs (they may not exist yet).

    >>> sorted(kuberay_paths())
    ['ray-operator', 'ray.io_rayclusters.yaml', 'ray.io_rayjobs.yaml', 'ray.io_rayservices.yaml']
    """
    out = kuberay_group().out
    return {"ray-operator": out / "ray-operator", **{name: out / name for name in KUBERAY_CRDS}}


def kueue_group() -> gobuild.GoGroup:
    """Kueue's manager, a Go build of its own on the Kubernetes libraries it pins."""
    return gobuild.GoGroup(
        name=f"kueue-{KUEUE_VERSION}", gomod=GOMOD_KUEUE, binaries={"kueue": "sigs.k8s.io/kueue/cmd/kueue"},
        out=cache_dir() / f"kueue-{KUEUE_VERSION}" / "bin",
        xflags=(f"sigs.k8s.io/kueue/pkg/version.GitVersion={KUEUE_VERSION}",),
        expect="4-6 min cold on 2 cores", retry="python3 tests/k8s/control_plane.py")


def kueue_paths() -> dict[str, Path]:
    """Kueue's binary and its CRDs (they may not exist yet).

    >>> sorted(kueue_paths())[:2], len(kueue_paths())
    (['kueue', 'kueue.x-k8s.io_admissionchecks.yaml'], 12)
    """
    out = kueue_group().out
    return {"kueue": out / "kueue", **{name: out / name for name in KUEUE_CRDS}}


# Each operator: its build, its module, where the module keeps its CRDs, and which.
_OPERATORS = {
    "kuberay": (kuberay_group, "github.com/ray-project/kuberay/ray-operator", "config/crd/bases", KUBERAY_CRDS),
    "kueue": (kueue_group, "sigs.k8s.io/kueue", "config/components/crd/bases", KUEUE_CRDS),
}


def _ensure_operator(name: str) -> None:
    """Build an operator (at once when built from the current inputs) and copy its CRDs
    out of its module (Go's module cache, fetched if dropped)."""
    group_of, module_path, folder, crds = _OPERATORS[name]
    group = group_of()
    gobuild.build(group)
    if all((group.out / crd).is_file() for crd in crds):
        return
    src = gobuild.module_copy(group)
    module = subprocess.run([gobuild.go(), "list", "-m", "-f", "{{.Dir}}", module_path],
                            cwd=src, check=True, capture_output=True, text=True,
                            env={**os.environ, **gobuild.go_env(group.gomod)}).stdout.strip()
    for crd in crds:
        part = group.out / f".{crd}.part"
        shutil.copyfile(Path(module) / folder / crd, part)
        part.replace(group.out / crd)


def control_plane_paths() -> dict[str, Path]:
    """Where each binary lives (they may not exist yet).

    >>> sorted(control_plane_paths())
    ['etcd', 'helm', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kwok', 'pause']
    """
    paths = go_group().paths()
    paths["pause"] = go_group().out / "pause"
    return paths


def helm_path() -> Path:
    """The helm the chart tests run (``helm template``, ``helm install``); built with the
    control plane by ``make install-test``."""
    return control_plane_paths()["helm"]


# Debian packages of the real node, keyed by the file that shows each is installed.
NODE_PACKAGES = {"containerd": "/usr/bin/containerd", "containernetworking-plugins": "/usr/lib/cni/loopback"}


def missing_binaries() -> list[str]:
    missing = [] if go_group().built() else list(_PACKAGES)
    missing += [name for name, path in control_plane_paths().items()
                if name not in missing and not os.access(path, os.X_OK)]
    for group, paths in ((kuberay_group(), kuberay_paths()), (kueue_group(), kueue_paths())):
        missing += [name for name, path in paths.items() if not group.built() or not path.is_file()]
    return missing


def missing_node_packages() -> list[str]:
    return [pkg for pkg, marker in NODE_PACKAGES.items() if not os.access(marker, os.X_OK)]


def say(msg: str) -> None:
    _steps.say(msg)


def ensure_control_plane() -> dict[str, Path]:
    """Build whatever binary is missing or stale; return every binary's path. Go's
    module and build caches (~4 GB) may be deleted afterwards: only the binaries are
    reused."""
    paths = control_plane_paths()
    if missing_binaries():
        say(f"building the Kubernetes tools for the cluster-mode tests, once per machine "
            f"(missing or stale: {', '.join(missing_binaries())})")
        gobuild.build(go_group())
        if not os.access(paths["pause"], os.X_OK):
            _build_pause(gobuild.go(), src=gobuild.module_copy(go_group()), target=paths["pause"])
        for operator in _OPERATORS:
            _ensure_operator(operator)
    _ensure_node_packages()  # returns at once when they are installed
    return paths


def _build_pause(go: str, *, src: Path, target: Path) -> None:
    """The sandbox process every pod starts with, from this Kubernetes release's source
    (no registry holds registry.k8s.io/pause for us): static, so the image is one file."""
    if shutil.which("gcc") is None:
        sys.exit("[atelier install] gcc is needed to compile the pod sandbox's pause process: "
                 "apt-get install gcc libc6-dev")
    # The module's source comes from Go's module cache (fetched if dropped).
    module = subprocess.run([go, "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"], cwd=src, check=True,
                            capture_output=True, text=True,
                            env={**os.environ, **gobuild.go_env(GOMOD)}).stdout.strip()
    tmp = target.with_name(".pause.partial")
    _steps.run(["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={KUBERNETES_VERSION}", "-o", str(tmp),
                str(Path(module) / "build/pause/linux/pause.c")],
               what="compiling the pod sandbox's pause process", expect="2 s",
               retry="python3 tests/k8s/control_plane.py")
    tmp.replace(target)


def _ensure_node_packages() -> None:
    # The project's installer step (apt as root on Debian, else a clear message).
    _steps.ensure_apt(NODE_PACKAGES, why="the cluster-mode tests' real node (containerd and its loopback network)")


def main() -> None:
    t0 = time.monotonic()
    paths = ensure_control_plane()
    for name, path in paths.items():
        say(f"{name}: {path}")
    say(f"control plane ready in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
