"""Packages beyond ``name==version``: the source state of editable installs (their own
git commit and diff) and conda environments, recorded, shown, and compared by
``repro rerun``. An editable install here is what pip writes (a ``*.dist-info`` with a
PEP 610 ``direct_url.json``), a conda environment what conda writes (``conda-meta``
records); the repositories are real git repositories, the server a real MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repro_testlib import assert_ok, git, make_repo, repro_cli, run_id_of, run_py

pytestmark = pytest.mark.integration


def _conda_record(prefix: Path, name: str, version: str) -> None:
    meta = prefix / "conda-meta"
    meta.mkdir(parents=True, exist_ok=True)
    fname = f"{name}-{version}-h0_0"
    (meta / f"{fname}.json").write_text(json.dumps({
        "name": name, "version": version, "build": "h0_0", "channel": "conda-forge",
        "url": f"https://conda.anaconda.org/conda-forge/linux-64/{fname}.conda",
        "md5": "0" * 32,
    }))


def test_editable_installs_and_conda_are_recorded_and_compared(
    tmp_path: Path, env: dict[str, str], client
) -> None:
    lib = make_repo(tmp_path / "libsrc")
    site = tmp_path / "site"
    dist = site / "mylib-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mylib\nVersion: 0.1\n")
    (dist / "direct_url.json").write_text(
        json.dumps({"url": lib.as_uri(), "dir_info": {"editable": True}}))
    (lib / "model.py").write_text("def value():\n    return 5\n")  # uncommitted, in the lib
    conda = tmp_path / "conda-env"
    _conda_record(conda, "python", "3.11.7")
    _conda_record(conda, "libcurl", "8.5.0")
    run_env = {**env, "PYTHONPATH": f"{env.get('PYTHONPATH', '')}:{site}",
               "CONDA_PREFIX": str(conda)}
    repo = make_repo(tmp_path / "repo")
    run_id = run_id_of(assert_ok(run_py(["train.py"], repo, run_env)))
    tags = client.get_run(run_id).data.tags
    commit = git(lib, "rev-parse", "HEAD")
    assert f"mylib@{commit[:12]}*" in tags["repro.editables"].split()
    assert tags["repro.conda"] == "conda-env (2 packages)"
    show = assert_ok(repro_cli(["show", run_id], run_env, repo)).stdout
    assert "editable   " in show and "mylib@" in show and "conda      conda-env (2 packages)" in show

    same = assert_ok(repro_cli(["rerun", run_id, "--dry-run"], run_env, repo)).stdout
    assert "mylib (editable)" not in same and "conda " not in same.split("packages", 1)[1]

    # The editable dependency's code changes, and conda gains a package.
    (lib / "model.py").write_text("def value():\n    return 6\n")
    _conda_record(conda, "zlib", "1.3")
    changed = assert_ok(repro_cli(["rerun", run_id, "--dry-run"], run_env, repo)).stdout
    assert "packages   same" not in changed
    assert "mylib (editable):" in changed and "conda zlib-1.3-h0_0.conda" in changed

    second = run_id_of(assert_ok(run_py(["train.py"], repo, run_env)))
    diff = assert_ok(repro_cli(["diff", run_id, second], run_env, repo)).stdout
    assert "editables.patch differ" in diff and "return 6" in diff
    assert "conda.txt differ" in diff and "zlib" in diff
