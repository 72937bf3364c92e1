"""``repro rerun`` where the checkout is not the plain case: a program that changes
directory before its run starts (Hydra's ``chdir=True``), dirty and moved submodules.
Real scripts, real git, a real MLflow server, the real ``repro`` command."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from repro_testlib import (
    assert_ok,
    child_env,
    git,
    make_repo,
    output_of,
    recorded_files,
    repro_cli,
    run_id_of,
    run_py,
)

pytestmark = pytest.mark.integration

# Imports repro, then moves into an output folder before starting the run, as Hydra does.
CHDIR = textwrap.dedent(
    """
    import os
    import repro
    import model

    os.makedirs(os.path.join("outputs", "day1"), exist_ok=True)
    os.chdir(os.path.join("outputs", "day1"))
    with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
        print("RUN_ID", run.info.run_id, flush=True)
        print("OUTPUT", model.value(), flush=True)
    """
)


@pytest.mark.parametrize("absolute", [False, True], ids=["relative-path", "absolute-path"])
def test_rerun_after_chdir(tmp_path: Path, env: dict[str, str], client, absolute: bool) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "hydra_like.py").write_text(CHDIR)
    git(repo, "add", "hydra_like.py")
    git(repo, "commit", "-q", "-m", "chdir")
    (repo / "model.py").write_text("def value():\n    return 42\n")
    script = str(repo / "hydra_like.py") if absolute else "hydra_like.py"
    run_id = run_id_of(assert_ok(run_py([script], repo, env)))
    tags = client.get_run(run_id).data.tags
    assert tags["repro.entry_point"] == "hydra_like.py"
    assert tags["repro.entry_point.type"] == "script"
    assert tags["repro.cwd"] == "outputs/day1" and tags["repro.launch_dir"] == "."
    (repo / "model.py").write_text("def value():\n    return 7\n")
    again = assert_ok(repro_cli(["rerun", run_id], env, repo))
    assert output_of(again) == "42"
    show = assert_ok(repro_cli(["show", run_id], env, repo)).stdout
    assert "launched   ." in show


LIBRUN = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "libs", "lib"))
    import libval
    import repro

    with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
        print("RUN_ID", run.info.run_id, flush=True)
        print("OUTPUT", libval.V, flush=True)
    """
)


def test_rerun_restores_a_moved_and_dirty_submodule(tmp_path: Path, env: dict[str, str],
                                                    client) -> None:
    file_ok = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.file.allow",
               "GIT_CONFIG_VALUE_0": "always"}
    env = {**env, **file_ok}
    lib = make_repo(tmp_path / "lib")
    (lib / "libval.py").write_text("V = 1\n")
    git(lib, "add", "libval.py")
    git(lib, "commit", "-q", "-m", "v1")
    repo = make_repo(tmp_path / "repo")
    subprocess.run(["git", "-C", str(repo), "submodule", "add", "-q", str(lib), "libs/lib"],
                   check=True, capture_output=True, env=child_env(**file_ok))
    (repo / "librun.py").write_text(LIBRUN)
    git(repo, "add", "librun.py")
    git(repo, "commit", "-q", "-m", "with lib")
    sub = repo / "libs" / "lib"
    # Moved: a newer commit of the library (pushed), not recorded in the superproject;
    (sub / "libval.py").write_text("V = 2\n")
    git(sub, "commit", "-q", "-am", "v2")
    git(sub, "push", "-q", "origin", "HEAD:refs/heads/v2")
    # and dirty on top of it.
    (sub / "libval.py").write_text("V = 3\n")
    first = assert_ok(run_py(["librun.py"], repo, env))
    assert output_of(first) == "3"
    run_id = run_id_of(first)
    tags = client.get_run(run_id).data.tags
    assert tags["repro.git.dirty"] == "dirty"
    assert tags["repro.git.submodules"].endswith("+*")
    # The checkout goes back to what the superproject records.
    git(sub, "checkout", "-q", "libval.py")
    git(repo, "submodule", "update", "-q")
    assert (sub / "libval.py").read_text() == "V = 1\n"
    again = assert_ok(repro_cli(["rerun", run_id], env, repo))
    assert "submodule  libs/lib at" in again.stdout
    assert output_of(again) == "3", again.stdout + again.stderr


USES_EXTRA = textwrap.dedent(
    """
    import os
    import repro
    import extra  # a new file, not added to git yet

    with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
        print("RUN_ID", run.info.run_id, flush=True)
        print("OUTPUT", extra.V, flush=True)
    """
)


def test_rerun_restores_small_untracked_files(tmp_path: Path, env: dict[str, str],
                                              client) -> None:
    import secrets

    repo = make_repo(tmp_path / "repo")
    (repo / "app.py").write_text(USES_EXTRA)
    git(repo, "add", "app.py")
    git(repo, "commit", "-q", "-m", "app")
    token = secrets.token_hex(16)
    (repo / "extra.py").write_text(f'V = 7\nHF_TOKEN = "{token}"\n')
    (repo / "data").mkdir()
    (repo / "data" / "big.bin").write_bytes(b"\0" * 10)
    run_id = run_id_of(assert_ok(run_py(["app.py"], repo, env)))
    tags = client.get_run(run_id).data.tags
    assert tags["repro.git.untracked.saved"] == "1 files"
    assert tags["repro.redacted"] == "untracked:1"
    saved = recorded_files(client, run_id, tmp_path / "d")["repro/untracked.json"].decode()
    assert token not in saved and "V = 7" in saved
    show = assert_ok(repro_cli(["show", run_id], env, repo)).stdout
    assert "untracked  2 entries (--file untracked.txt), content of 1 files" in show
    listed = assert_ok(repro_cli(["show", run_id, "--file", "untracked.json"], env, repo)).stdout
    assert json.loads(listed)["files"]["extra.py"].startswith("V = 7")
    (repo / "extra.py").unlink()
    again = assert_ok(repro_cli(["rerun", run_id], env, repo))
    assert "1 untracked files restored" in again.stdout
    assert "1 untracked entries were listed by name only" in again.stdout
    assert output_of(again) == "7"
