"""Install (once per machine) the tools the Terraform checks run.

Rule this module keeps: standard library only (``make install-test`` runs it from the
system Python), every tool lands in a versioned folder of
``${ATELIER_CACHE:-~/.cache/atelier}`` outside the clone, and a tool that is already
there is never rebuilt or reinstalled. It belongs to the test suite: deploying needs a
terraform of your own, with registry access.

- ``terraform-v1.11.4/terraform``: built from the Go module proxy with the module in
  ``gomod/`` (terraform's nested modules need replace lines, see its go.mod).
- ``tflint-v0.64.0/tflint``: ``go install`` from the proxy; its bundled Terraform
  ruleset runs offline (the AWS ruleset would be downloaded from GitHub: not used).
- ``checkov-3.3.30/``: a virtual environment of its own made with uv. Not in
  requirements-dev.txt: checkov pins an older boto3, botocore and packaging than the
  project's, so the two cannot share one environment.

Cold cost measured here (2 cores shared with other builds, load 12-16): terraform
16 min 24 s (peak RSS 1.4 GB), tflint 9 min 52 s (1.4 GB), checkov 22 s; binaries
90 MB + 74 MB, checkov's environment 194 MB. Warm: under a second, nothing is rebuilt.
Go's module and build caches (several GB, shared with the Kubernetes build) may be
deleted afterwards: only the binaries are reused.

Run it alone with ``python3 tests/terraform/terraform_tools.py``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TERRAFORM_VERSION = "v1.11.4"
TFLINT_VERSION = "v0.64.0"
CHECKOV_VERSION = "3.3.30"

GOMOD = Path(__file__).resolve().parent / "gomod"

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub"))
from atelier_hub.install.paths import cache_dir, tool_path  # noqa: E402 (stdlib only)


def tool_paths() -> dict[str, Path]:
    """Where each tool's executable lives (it may not exist yet).

    >>> sorted(tool_paths())
    ['checkov', 'terraform', 'tflint']
    """
    return {
        "terraform": cache_dir() / f"terraform-{TERRAFORM_VERSION}" / "terraform",
        "tflint": cache_dir() / f"tflint-{TFLINT_VERSION}" / "tflint",
        "checkov": cache_dir() / f"checkov-{CHECKOV_VERSION}" / "bin" / "checkov",
    }


def missing_tools() -> list[str]:
    return [name for name, path in tool_paths().items() if not os.access(path, os.X_OK)]


def say(msg: str) -> None:
    print(f"[atelier install] {msg}", flush=True)


def _run(cmd: list[str], *, what: str, expect: str, cwd: Path | None = None, env: dict | None = None) -> None:
    say(f"{what} (about {expect}) ...")
    t0 = time.monotonic()
    try:
        subprocess.run(cmd, check=True, cwd=cwd, env={**os.environ, **(env or {})})
    except subprocess.CalledProcessError as exc:
        sys.exit(f"[atelier install] {what} failed (exit {exc.returncode}); see the output above. "
                 "Rerun `python3 tests/terraform/terraform_tools.py` to retry: finished tools are kept.")
    say(f"{what}: done in {time.monotonic() - t0:.0f} s")


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        sys.exit("[atelier install] Go (1.21 or newer; it fetches the 1.26 toolchain tflint needs itself) is "
                 "needed to build terraform and tflint for the Terraform checks: install it from "
                 "https://go.dev/dl/ or `apt-get install golang`")
    return go


def _go_env(**extra: str) -> dict:
    # CGO off: static binaries, no C toolchain. -buildvcs=false: the cache folder is no
    # repository. A GOFLAGS or GOBIN of the caller must not redirect these builds.
    return {"CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false", "GOBIN": "", **extra}


def _build_terraform(go: str, target: Path) -> None:
    src = target.parent / "src"
    src.mkdir(parents=True, exist_ok=True)
    # The build writes go.sum into the cache's copy, never into the repository. With
    # gomod/go.sum present the build is -mod=readonly: every module's hash is checked.
    for name in ("go.mod", "tools.go", "go.sum"):
        if (GOMOD / name).exists():
            shutil.copyfile(GOMOD / name, src / name)
    mode = "readonly" if (GOMOD / "go.sum").exists() else "mod"
    tmp = target.with_name(".terraform.partial")
    # version.dev=no: what HashiCorp's release builds set, else it calls itself "-dev".
    ldflags = "-s -w -X github.com/hashicorp/terraform/version.dev=no"
    _run([go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), "github.com/hashicorp/terraform"],
         what=f"building terraform {TERRAFORM_VERSION} from the Go module proxy", expect="16 min cold",
         cwd=src, env=_go_env(GOFLAGS=f"-mod={mode} -buildvcs=false"))
    tmp.replace(target)  # only a finished binary gets the real name


def _build_tflint(go: str, target: Path) -> None:
    staging = target.parent / ".gobin"
    _run([go, "install", f"github.com/terraform-linters/tflint@{TFLINT_VERSION}"],
         what=f"building tflint {TFLINT_VERSION} from the Go module proxy", expect="10 min cold",
         env=_go_env(GOBIN=str(staging)))
    (staging / "tflint").replace(target)
    staging.rmdir()


def _install_checkov(target: Path) -> None:
    uv = tool_path("uv")
    if not os.access(uv, os.X_OK):
        sys.exit(f"[atelier install] uv is missing ({uv}); run `make install` first")
    venv = target.parents[1]
    # --clear: a half-made environment from a failed install is replaced, not reused.
    _run([str(uv), "venv", "--quiet", "--clear", "--python", sys.executable, str(venv)],
         what=f"making checkov {CHECKOV_VERSION}'s environment", expect="5 s")
    _run([str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
          f"checkov=={CHECKOV_VERSION}"], what=f"installing checkov {CHECKOV_VERSION} from PyPI", expect="30 s")


def ensure_tools() -> dict[str, Path]:
    """Install whatever tool is missing; return every tool's path.

    A lock in the cache folder keeps two installs from building at the same time.
    """
    paths = tool_paths()
    if not missing_tools():
        return paths
    say(f"installing the Terraform checks' tools, once per machine (missing: {', '.join(missing_tools())})")
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".terraform-tools.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent install waits here, then reuses
        for name, install in (("checkov", _install_checkov), ("terraform", _build_terraform),
                              ("tflint", _build_tflint)):
            if os.access(paths[name], os.X_OK):
                continue
            if name == "checkov":
                install(paths[name])
            else:
                paths[name].parent.mkdir(parents=True, exist_ok=True)
                install(_go(), paths[name])
    return paths


def main() -> None:
    t0 = time.monotonic()
    for name, path in ensure_tools().items():
        say(f"{name}: {path}")
    say(f"Terraform check tools ready in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
