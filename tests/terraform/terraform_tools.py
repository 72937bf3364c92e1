"""Install (once per machine) the tools the Terraform checks run.

Rule this module keeps: standard library only (``make install-test`` runs it from the
system Python), every tool lands in a versioned folder of
``${ATELIER_CACHE:-~/.cache/atelier}`` outside the clone, and a tool that is already
there is never rebuilt or reinstalled. It belongs to the test suite: deploying needs a
terraform of your own, with registry access.

- ``terraform-v1.11.4/terraform``: built from the Go module proxy with the module in
  ``gomod/`` (terraform's nested modules need replace lines, see its go.mod).
- ``tflint-v0.64.0/tflint``: built from the proxy with the module in ``gomod-tflint/``
  (its dependencies are too far from terraform's to share one build); its bundled
  Terraform ruleset runs offline (the AWS ruleset would be downloaded from GitHub: not used).
  Both are built by :mod:`atelier_hub.install.gobuild`, the one toolchain and set of
  flags of every Go tool.
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
import sys
import time
from pathlib import Path

TERRAFORM_VERSION = "v1.11.4"
TFLINT_VERSION = "v0.64.0"
CHECKOV_VERSION = "3.3.30"

HERE = Path(__file__).resolve().parent

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub"))
from atelier_hub.install import _steps, gobuild  # noqa: E402 (stdlib only)
from atelier_hub.install.paths import cache_dir, tool_path  # noqa: E402

RETRY = "python3 tests/terraform/terraform_tools.py"


def go_groups() -> dict[str, gobuild.GoGroup]:
    """terraform and tflint, each its own Go build (their dependencies disagree)."""
    return {
        # version.dev=no: what HashiCorp's release builds set, else it calls itself "-dev".
        "terraform": gobuild.GoGroup(
            name=f"terraform-{TERRAFORM_VERSION}", gomod=HERE / "gomod",
            binaries={"terraform": "github.com/hashicorp/terraform"},
            out=cache_dir() / f"terraform-{TERRAFORM_VERSION}",
            xflags=("github.com/hashicorp/terraform/version.dev=no",), expect="10-16 min cold", retry=RETRY),
        "tflint": gobuild.GoGroup(
            name=f"tflint-{TFLINT_VERSION}", gomod=HERE / "gomod-tflint",
            binaries={"tflint": "github.com/terraform-linters/tflint"},
            out=cache_dir() / f"tflint-{TFLINT_VERSION}", expect="3-10 min cold", retry=RETRY),
    }


def tool_paths() -> dict[str, Path]:
    """Where each tool's executable lives (it may not exist yet).

    >>> sorted(tool_paths())
    ['checkov', 'terraform', 'tflint']
    """
    groups = go_groups()
    return {
        "terraform": groups["terraform"].paths()["terraform"],
        "tflint": groups["tflint"].paths()["tflint"],
        "checkov": cache_dir() / f"checkov-{CHECKOV_VERSION}" / "bin" / "checkov",
    }


def missing_tools() -> list[str]:
    stale = [name for name, group in go_groups().items() if not group.built()]
    return stale + [name for name, path in tool_paths().items()
                    if name not in stale and not os.access(path, os.X_OK)]


def say(msg: str) -> None:
    _steps.say(msg)


def _run(cmd: list[str], *, what: str, expect: str) -> None:
    _steps.run(cmd, what=what, expect=expect, retry=RETRY)


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


def ensure_tools(*, go_only: bool = False) -> dict[str, Path]:
    """Install whatever tool is missing or stale; return every tool's path.
    ``go_only``: terraform and tflint alone (``make install-test`` builds them while the
    runtime install runs, and makes checkov's environment after it, with its uv)."""
    paths = tool_paths()
    if missing_tools():
        say(f"installing the Terraform checks' tools, once per machine (missing or stale: "
            f"{', '.join(missing_tools())})")
    for group in go_groups().values():
        gobuild.build(group)  # returns at once when built from the current inputs
    if not go_only and not os.access(paths["checkov"], os.X_OK):
        cache_dir().mkdir(parents=True, exist_ok=True)
        with open(cache_dir() / ".terraform-tools.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent install waits here, then reuses
            if not os.access(paths["checkov"], os.X_OK):
                _install_checkov(paths["checkov"])
    return paths


def main() -> None:
    t0 = time.monotonic()
    for name, path in ensure_tools(go_only="--go-only" in sys.argv[1:]).items():
        say(f"{name}: {path}")
    say(f"Terraform check tools ready in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
