"""Helpers of the Terraform checks: where things are, and running terraform with no
network side trip (no version check, no user CLI configuration, local state only)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
# Every module, the example root included: each is linted on its own.
MODULES = sorted(p.parent for p in TERRAFORM.rglob("versions.tf") if ".terraform" not in p.parts)


def hcl(value: object) -> str:
    """A string as an HCL string literal (JSON's escapes, plus $ and % doubled so that
    no template sequence is read into it).

    >>> hcl("/a/${b}")
    '"/a/$${b}"'
    """
    return json.dumps(str(value)).replace("${", "$${").replace("%{", "%%{")


def tf_env(home: Path) -> dict[str, str]:
    """Terraform with no network side trip: no version check, no plugin cache, no
    user CLI configuration."""
    return {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
            "TF_CLI_CONFIG_FILE": str(home / "terraformrc"), "HOME": str(home)}


def run(cmd: list, *, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def apply_root(terraform: Path, root: Path, main_tf: str) -> dict:
    """Write a root module, init and apply it with local state; its outputs' values."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.tf").write_text(main_tf)
    (root / "terraformrc").write_text("")
    env = tf_env(root)
    for args in (["init", "-backend=false", "-no-color"], ["apply", "-auto-approve", "-no-color"]):
        done = run([terraform, *args], cwd=root, env=env)
        assert done.returncode == 0, f"terraform {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    done = run([terraform, "output", "-json", "-no-color"], cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    return {name: out["value"] for name, out in json.loads(done.stdout).items()}
