"""Helm for the chart tests, built once per machine from the Go module proxy.

Rule this module keeps: standard library only (like control_plane.py, it runs from the
system Python), the binary lands in ``${ATELIER_CACHE:-~/.cache/atelier}/helm-VERSION/``
outside the clone, and a binary already there is never rebuilt. One small function, so
it can move into the suite's shared Go-tool builder as it is.

Run it alone with ``python3 tests/k8s/helm_tool.py``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HELM_VERSION = "v4.3.2"  # RECIPES.md: builds from the proxy, renders the vendored chart
HELM_PACKAGE = "helm.sh/helm/v4/cmd/helm"

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub"))
from atelier_hub.install.paths import cache_dir  # noqa: E402 (stdlib only)


def helm_path() -> Path:
    """Where the helm binary lives (it may not exist yet).

    >>> helm_path().parent.name
    'helm-v4.3.2'
    """
    return cache_dir() / f"helm-{HELM_VERSION}" / "helm"


def ensure_helm() -> Path:
    """Build helm unless it is there (about 2 min with a warm Go module cache, 1 GB RSS;
    ``nice`` so the other work on this machine keeps its cores). Returns its path."""
    target = helm_path()
    if os.access(target, os.X_OK):
        return target
    go = shutil.which("go")
    if go is None:
        sys.exit("[atelier install] Go is needed to build helm for the chart tests: install it from "
                 "https://go.dev/dl/ or `apt-get install golang`")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build waits here, then reuses
        if os.access(target, os.X_OK):
            return target
        staging = target.parent / ".gobin"
        print(f"[atelier install] building helm {HELM_VERSION} from the Go module proxy (about 2 min) ...",
              flush=True)
        t0 = time.monotonic()
        r = subprocess.run(
            ["nice", "-n", "10", go, "install", "-trimpath", "-ldflags=-s -w", f"{HELM_PACKAGE}@{HELM_VERSION}"],
            env={**os.environ, "CGO_ENABLED": "0", "GOBIN": str(staging), "GOFLAGS": "-buildvcs=false"})
        if r.returncode:
            sys.exit(f"[atelier install] building helm failed (exit {r.returncode}); see the output above")
        (staging / "helm").replace(target)  # only a finished binary gets the real name
        staging.rmdir()
        print(f"[atelier install] helm: done in {time.monotonic() - t0:.0f} s", flush=True)
    return target


if __name__ == "__main__":
    print(ensure_helm())
