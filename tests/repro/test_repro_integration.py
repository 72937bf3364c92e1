"""repro end to end: real scripts in real git repositories, a real MLflow server, and the
``repro`` command; every assertion is made from outside, through MlflowClient."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from repro._cli import main
from repro_testlib import (
    MODEL,
    PYTHON,
    TRAIN,
    Forwarder,
    all_text_of_run,
    assert_ok,
    git,
    make_repo,
    output_of,
    recorded_files,
    repro_cli,
    run_id_of,
    run_py,
)

pytestmark = pytest.mark.integration


def tags_of(client, run_id: str) -> dict[str, str]:
    return client.get_run(run_id).data.tags


def artifact_names(client, run_id: str) -> set[str]:
    """The files repro recorded for the run, less repro/editables.*: those depend on the
    editable installs of the venv that runs the tests, not on the test."""
    with tempfile.TemporaryDirectory() as tmp:
        return {name for name in recorded_files(client, run_id, Path(tmp))
                if not name.startswith("repro/editables.")}


def read_artifact(client, run_id: str, path: str, dst: Path) -> str:
    return recorded_files(client, run_id, dst)[path].decode()


def spooled_runs(client, experiment: str, local_id: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`repro.spool.id` = '{local_id}'"
    )


def test_clean_repository(tmp_path: Path, env: dict[str, str], client: MlflowClient) -> None:
    repo = make_repo(tmp_path / "repo", remote="https://example.com/org/proj.git")
    proc = assert_ok(run_py(["train.py", "--lr", "0.1"], repo, env))
    run_id = run_id_of(proc)
    tags = tags_of(client, run_id)
    head = git(repo, "rev-parse", "HEAD")
    assert tags["repro.git"] == "repository"
    assert tags["repro.git.commit"] == head == tags["mlflow.source.git.commit"]
    assert tags["repro.git.branch"] == "main"
    assert tags["repro.git.dirty"] == "clean"
    assert tags["repro.git.remote"] == "https://example.com/org/proj.git"
    assert tags["repro.entry_point"] == "train.py" and tags["repro.entry_point.type"] == "script"
    assert tags["repro.command"].endswith("train.py --lr 0.1")
    assert tags["repro.cwd"] == "."
    assert int(tags["repro.packages"]) > 10
    assert tags["repro.python"].startswith(".".join(map(str, sys.version_info[:2])))
    names = artifact_names(client, run_id)
    assert {"repro/packages.txt", "repro/environment.json"} <= names
    # (repro/editables.* depend on the editable installs of the venv running the tests)
    assert not names & {"repro/diff.patch", "repro/untracked.txt", "repro/untracked.json"}
    packages = read_artifact(client, run_id, "repro/packages.txt", tmp_path / "a")
    import mlflow

    assert any(line.endswith(f"=={mlflow.__version__}") and line.startswith("mlflow")
               for line in packages.splitlines())
    doc = json.loads(read_artifact(client, run_id, "repro/environment.json", tmp_path / "b"))
    assert doc["args"] == ["--lr", "0.1"] and doc["entry_point"]["kind"] == "script"
    run = client.get_run(run_id)
    assert run.data.params == {"lr": "0.1"} and run.info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "loss")) == 3


def test_dirty_repository_records_the_diff(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "model.py").write_text("def value():\n    return 42\n")
    (repo / "notes.txt").write_text("scratch")
    proc = assert_ok(run_py(["train.py"], repo, env))
    assert output_of(proc) == "42"
    run_id = run_id_of(proc)
    tags = tags_of(client, run_id)
    assert tags["repro.git.dirty"] == "dirty"
    assert tags["repro.git.diff"].endswith("bytes")
    assert tags["repro.git.untracked"] == "1"
    assert artifact_names(client, run_id) == {
        "repro/packages.txt", "repro/environment.json", "repro/diff.patch", "repro/untracked.txt",
        "repro/untracked.json",
    }
    diff = read_artifact(client, run_id, "repro/diff.patch", tmp_path / "a")
    assert "+    return 42" in diff and "-    return 41" in diff
    assert read_artifact(client, run_id, "repro/untracked.txt", tmp_path / "b").split() == [
        "notes.txt"
    ]


def test_outside_a_repository(tmp_path: Path, env: dict[str, str], client: MlflowClient) -> None:
    work = tmp_path / "plain"
    work.mkdir()
    (work / "train.py").write_text(TRAIN)
    (work / "model.py").write_text(MODEL)
    run_id = run_id_of(assert_ok(run_py(["train.py"], work, env)))
    tags = tags_of(client, run_id)
    assert tags["repro.git"] == "no repository"
    assert "repro.git.commit" not in tags and "repro.git.dirty" not in tags
    assert tags["repro.entry_point"] == str(work / "train.py")
    assert artifact_names(client, run_id) == {"repro/packages.txt", "repro/environment.json"}


def test_repository_without_commits(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
) -> None:
    repo = make_repo(tmp_path / "repo", commit=False)
    run_id = run_id_of(assert_ok(run_py(["train.py"], repo, env)))
    tags = tags_of(client, run_id)
    assert tags["repro.git"] == "no commits"
    assert tags["repro.git.branch"] == "main" and "repro.git.commit" not in tags
    untracked = read_artifact(client, run_id, "repro/untracked.txt", tmp_path / "a")
    assert untracked.split() == ["model.py", "train.py"]


def test_shallow_clone(tmp_path: Path, env: dict[str, str], client: MlflowClient) -> None:
    origin = make_repo(tmp_path / "origin")
    for i in range(2):
        (origin / "model.py").write_text(f"def value():\n    return {i}\n")
        git(origin, "commit", "-q", "-am", f"change {i}")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{origin}", str(clone)],
                   check=True, capture_output=True)
    run_id = run_id_of(assert_ok(run_py(["train.py"], clone, env)))
    tags = tags_of(client, run_id)
    assert tags["repro.git.shallow"] == "true"
    assert tags["repro.git.commit"] == git(origin, "rev-parse", "HEAD")
    assert tags["repro.git.remote"] == f"file://{origin}"
    assert tags["repro.git.dirty"] == "clean"


def test_python_dash_m_module(tmp_path: Path, env: dict[str, str], client: MlflowClient) -> None:
    repo = make_repo(tmp_path / "repo", commit=False)
    (repo / "pkg").mkdir()
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "train.py").write_text(TRAIN)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "package")
    run_id = run_id_of(assert_ok(run_py(["-m", "pkg.train", "--lr", "0.2"], repo, env)))
    tags = tags_of(client, run_id)
    assert tags["repro.entry_point"] == "python -m pkg.train"
    assert tags["repro.entry_point.type"] == "module"
    assert tags["repro.command"].endswith("-m pkg.train --lr 0.2")
    doc = json.loads(read_artifact(client, run_id, "repro/environment.json", tmp_path / "a"))
    assert doc["args"] == ["--lr", "0.2"] and doc["entry_point"]["target"] == "pkg.train"


def test_secrets_appear_nowhere(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
    spool: Path,
    forwarder: Forwarder,
) -> None:
    s = [secrets.token_hex(12) for _ in range(9)]
    repo = make_repo(tmp_path / "repo", remote=f"https://deploy:{s[8]}@example.com/org/r.git")
    args = ["train.py", "--lr", "0.1", "--token", s[0], "--api-key", s[1], f"--password={s[2]}",
            f"--token={s[3]}", f"db.password={s[4]}", f"HF_TOKEN={s[5]}"]
    run_env = dict(env, ATELIER_PROFILE="gpu-1", JUPYTERHUB_USER="alice", ATELIER_API_TOKEN=s[6],
                   ATELIER_DB_URL=f"postgresql://u:{s[7]}@db/x")
    run_id = run_id_of(assert_ok(run_py(args, repo, run_env)))
    text = all_text_of_run(client, run_id, tmp_path / "dl")
    for secret in s:
        assert secret not in text
    tags = tags_of(client, run_id)
    assert "--token '[REDACTED]'" in tags["repro.command"]
    assert "'db.password=[REDACTED]'" in tags["repro.command"]
    assert tags["repro.env.ATELIER_PROFILE"] == "gpu-1"
    assert tags["repro.env.JUPYTERHUB_USER"] == "alice"
    assert tags["repro.env.ATELIER_API_TOKEN"] == "[REDACTED]"
    assert tags["repro.git.remote"] == "https://example.com/org/r.git"

    # The same run while the server is down: nothing secret in the spool either.
    offline = assert_ok(run_py(args, repo, dict(run_env, MLFLOW_TRACKING_URI=forwarder.uri)))
    blob = b"".join(p.read_bytes() for p in spool.rglob("*") if p.is_file())
    assert blob and all(secret.encode() not in blob for secret in s)
    assert run_id_of(offline)


def test_server_down_spools_then_sync_uploads_once(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
    spool: Path,
    forwarder: Forwarder,
    experiment: str,
) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "model.py").write_text("def value():\n    return 5\n")
    offline = dict(env, MLFLOW_TRACKING_URI=forwarder.uri)  # nobody listens there yet
    began = time.monotonic()
    proc = assert_ok(run_py(["train.py", "--lr", "0.5"], repo, offline))
    assert time.monotonic() - began < 60
    assert output_of(proc) == "5"  # the script went on
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("repro:")]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0] and "repro sync" in warnings[0]
    local_id = run_id_of(proc)
    assert (spool / "runs" / local_id / "events.jsonl").is_file()

    shown = assert_ok(repro_cli(["show", local_id], offline, repo))
    assert "not uploaded yet" in shown.stdout and "train.py --lr 0.5" in shown.stdout

    still_down = repro_cli(["sync"], offline, repo)
    assert still_down.returncode == 1 and "unreachable" in still_down.stdout
    assert "Traceback" not in still_down.stdout + still_down.stderr

    forwarder.up()
    first = assert_ok(repro_cli(["sync"], offline, repo))
    assert f"uploaded {local_id}" in first.stdout
    (remote,) = spooled_runs(client, experiment, local_id)
    rid = remote.info.run_id
    assert remote.info.status == "FINISHED" and remote.data.params == {"lr": "0.5"}
    assert remote.data.tags["repro.git.dirty"] == "dirty"
    assert remote.data.tags["repro.spooled"] == "true"
    assert len(client.get_metric_history(rid, "loss")) == 3
    assert {"repro/diff.patch", "repro/packages.txt"} <= artifact_names(client, rid)

    second = assert_ok(repro_cli(["sync"], offline, repo))
    assert "nothing to sync" in second.stdout
    assert len(spooled_runs(client, experiment, local_id)) == 1
    assert len(client.get_metric_history(rid, "loss")) == 3

    shown = assert_ok(repro_cli(["show", local_id], env, repo))
    assert rid in shown.stdout


def test_killed_mid_run_keeps_what_was_logged(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
    forwarder: Forwarder,
    experiment: str,
) -> None:
    repo = make_repo(tmp_path / "repo")
    offline = dict(env, MLFLOW_TRACKING_URI=forwarder.uri, TEST_HANG="1")
    proc = subprocess.Popen([PYTHON, "train.py", "--lr", "0.3"], cwd=repo, env=offline,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    local_id = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("RUN_ID "):
            local_id = line.split()[1]
        if line.startswith("LOGGED"):
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert local_id

    forwarder.up()
    assert_ok(repro_cli(["sync"], offline, repo))
    (remote,) = spooled_runs(client, experiment, local_id)
    rid = remote.info.run_id
    assert remote.info.status == "KILLED"
    assert remote.data.params == {"lr": "0.3"}
    assert [m.value for m in client.get_metric_history(rid, "loss")] == pytest.approx(
        [1.0, 0.5, 1 / 3]
    )
    assert remote.data.tags["repro.git.commit"] == git(repo, "rev-parse", "HEAD")
    assert {"repro/packages.txt", "repro/environment.json"} <= artifact_names(client, rid)


def test_interrupted_sync_resumes_without_duplicates(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
    spool: Path,
    forwarder: Forwarder,
    experiment: str,
) -> None:
    import repro
    from repro import _spool

    repo = make_repo(tmp_path / "repo")
    offline = dict(env, MLFLOW_TRACKING_URI=forwarder.uri)
    local_id = run_id_of(assert_ok(run_py(["train.py"], repo, offline)))
    forwarder.up()
    result = repro.sync(spool_dir=spool)
    rid = result.uploaded[local_id]
    # Pretend the first sync died before its last step: no local record, no final tag.
    spooled = _spool.find_run(local_id, spool)
    assert spooled is not None
    spooled.synced_file.unlink()
    client.delete_tag(rid, "repro.spool.synced")
    again = repro.sync(spool_dir=spool)
    assert again.uploaded == {local_id: rid}
    assert len(spooled_runs(client, experiment, local_id)) == 1
    assert len(client.get_metric_history(rid, "loss")) == 3
    assert repro.sync(spool_dir=spool).already == {local_id: rid}


def test_rank_other_than_zero_records_nothing(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
    spool: Path,
    experiment: str,
) -> None:
    repo = make_repo(tmp_path / "repo")
    proc = assert_ok(run_py(["train.py"], repo, dict(env, RANK="1", LOCAL_RANK="1", WORLD_SIZE="2")))
    assert run_id_of(proc) == "None"
    assert "OUTPUT 41" in proc.stdout
    exp = client.get_experiment_by_name(experiment)
    assert exp is None or client.search_runs([exp.experiment_id]) == []
    assert not spool.exists()
    rank0 = assert_ok(run_py(["train.py"], repo, dict(env, RANK="0", WORLD_SIZE="2")))
    assert tags_of(client, run_id_of(rank0))["repro.git"] == "repository"


PLAIN = """
import os, mlflow
mlflow.set_experiment(os.environ["TEST_EXPERIMENT"])
with mlflow.start_run() as run:
    mlflow.log_metric("m", 1)
print("RUN_ID", run.info.run_id)
"""


def test_plain_mlflow_start_run_gets_repro_tags(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "plain.py").write_text(PLAIN)
    secret = secrets.token_hex(8)
    run_id = run_id_of(assert_ok(run_py(["plain.py", "--token", secret], repo, env)))
    tags = tags_of(client, run_id)
    assert tags["repro.git.commit"] == git(repo, "rev-parse", "HEAD")
    assert tags["repro.git.branch"] == "main"
    assert tags["repro.entry_point"] == "plain.py"
    assert tags["repro.command"].endswith("plain.py --token '[REDACTED]'")
    assert secret not in json.dumps(tags)
    assert "repro.git.dirty" not in tags and "repro.packages" not in tags  # cheap tags only
    assert client.list_artifacts(run_id) == []
    # REPRO_CONTEXT=0 switches the provider off (repro/README.md): the same run, no repro tag.
    off = run_id_of(assert_ok(run_py(["plain.py"], repo, {**env, "REPRO_CONTEXT": "0"})))
    assert not [k for k in tags_of(client, off) if k.startswith("repro.")], tags_of(client, off)


def test_show_and_diff(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
    experiment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(tmp_path / "repo")
    a = run_id_of(assert_ok(run_py(["train.py", "--lr", "0.1"], repo, env)))
    (repo / "model.py").write_text("def value():\n    return 2\n")
    git(repo, "commit", "-q", "-am", "two")
    (repo / "model.py").write_text("def value():\n    return 3\n")
    b = run_id_of(assert_ok(run_py(["train.py", "--lr", "0.2", "--epochs", "3"], repo, env)))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("REPRO_SPOOL_DIR", env["REPRO_SPOOL_DIR"])

    assert main(["show", a]) == 0
    shown = capsys.readouterr().out
    assert a in shown and "train.py --lr 0.1" in shown
    assert git(repo, "rev-parse", "HEAD~1") in shown and "clean" in shown
    assert "param      lr = 0.1" in shown and "installed (--file packages.txt)" in shown
    assert "artifact   repro/record.json (" in shown

    assert main(["show", a, "--file", "packages.txt"]) == 0
    assert "mlflow" in capsys.readouterr().out.lower()
    assert main(["show", a, "--file", "nope.txt"]) == 1
    err = capsys.readouterr().err
    assert "recorded no file 'nope.txt' (--file)" in err and "packages.txt" in err

    assert main(["diff", a, b]) == 0
    diff = capsys.readouterr().out
    assert f"repro.git.commit: {git(repo, 'rev-parse', 'HEAD~1')} → " in diff
    assert "repro.git.dirty: clean → dirty" in diff
    assert "uncommitted changes differ" in diff and "+    return 3" in diff
    assert "--lr: 0.1 → 0.2" in diff and "+ --epochs: 3" in diff
    assert "lr: 0.1 → 0.2" in diff
    assert "packages:\n  (same)" in diff


def test_cli_errors_are_one_line(
    tmp_path: Path,
    env: dict[str, str],
    forwarder: Forwarder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    unknown = secrets.token_hex(16)
    proc = repro_cli(["show", unknown], env, tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"run {unknown} not found on {env['MLFLOW_TRACKING_URI']}" in proc.stderr

    monkeypatch.setenv("REPRO_SPOOL_DIR", str(tmp_path / "spool"))
    cases = [
        ({"MLFLOW_TRACKING_URI": forwarder.uri}, ["show", unknown], "is unreachable"),
        ({"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}, ["show", "not/an id"],
         "is not a run id"),
        ({}, ["show", unknown], "set MLFLOW_TRACKING_URI or pass --tracking-uri"),
        ({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/none.db"}, ["diff", unknown, unknown],
         "no MLflow database at"),
    ]
    for extra, args, expected in cases:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for k, v in extra.items():
            monkeypatch.setenv(k, v)
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("repro: error: ") and err.count("\n") == 1, err
        assert expected in err


def test_rerun_dry_run_and_real(
    tmp_path: Path,
    env: dict[str, str],
    client: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "model.py").write_text("def value():\n    return 42\n")  # uncommitted
    first = assert_ok(run_py(["train.py", "--lr", "0.1"], repo, env))
    assert output_of(first) == "42"
    original = run_id_of(first)
    # The checkout moves on: another commit, and a different uncommitted change.
    (repo / "model.py").write_text("def value():\n    return 7\n")
    git(repo, "commit", "-q", "-am", "seven")
    (repo / "train.py").write_text(TRAIN + "\n# edited\n")
    before = git(repo, "status", "--porcelain")

    # The real command, as a user types it.
    real = assert_ok(repro_cli(["rerun", original], env, repo))
    assert output_of(real) == "42"  # the recorded code ran, not the checkout's
    rerun_id = run_id_of(real)
    tags = tags_of(client, rerun_id)
    assert tags["repro.rerun_of"] == original
    assert tags["repro.git.commit"] == tags_of(client, original)["repro.git.commit"]
    assert tags["repro.git.dirty"] == "dirty"
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # worktree removed
    assert git(repo, "status", "--porcelain") == before  # the user's tree untouched
    assert "packages   same" in real.stdout

    # The rest in this process (quicker: no MLflow import per call).
    for key in ("MLFLOW_TRACKING_URI", "REPRO_SPOOL_DIR"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(repo)
    capfd.readouterr()
    assert main(["rerun", original, "--dry-run"]) == 0
    dry = capfd.readouterr().out
    assert "the diff applies cleanly" in dry and "dry run" in dry
    # The recorded packages were compared (this process's path may differ from the script's).
    assert re.search(r"^packages   (same \d+ packages as recorded|\d+ differ from the recorded run)", dry, re.M), dry
    assert len(git(repo, "worktree", "list").splitlines()) == 1

    monkeypatch.chdir(tmp_path)
    assert main(["rerun", original]) == 1
    err = capfd.readouterr().err
    assert "not a git repository" in err and "Traceback" not in err


def test_rerun_refuses_redacted_commands(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(tmp_path / "repo")
    run_id = run_id_of(assert_ok(run_py(["train.py", "--token", secrets.token_hex(8)], repo, env)))
    for key in ("MLFLOW_TRACKING_URI", "REPRO_SPOOL_DIR", "PYTHONPYCACHEPREFIX"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(repo)
    capfd.readouterr()
    assert main(["rerun", run_id]) == 1
    assert "redacted secrets (--token)" in capfd.readouterr().err
    # A command given after `--` replaces the recorded one.
    code = "import model; print('OUT', model.value())"
    assert main(["rerun", run_id, "--", PYTHON, "-c", code]) == 0
    assert "OUT 41" in capfd.readouterr().out


def test_a_model_logged_while_spooled_is_synced(
    tmp_path: Path,
    mlflow_server: str,
    client: MlflowClient,
    forwarder: Forwarder,
    experiment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    import repro

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[int], params=None) -> list[int]:
            return model_input

    spool = tmp_path / "spool"
    monkeypatch.setenv("REPRO_SPOOL_DIR", str(spool))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", forwarder.uri)
    try:
        with repro.start_run(experiment) as run:
            info = mlflow.pyfunc.log_model(name="echo", python_model=Echo())
            assert mlflow.get_logged_model(info.model_id).status == "READY"
    finally:
        mlflow.set_tracking_uri(None)
    forwarder.up()
    result = repro.sync(spool_dir=spool)
    rid = result.uploaded[run.info.run_id]
    (output,) = client.get_run(rid).outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.source_run_id == rid and model.name == "echo" and str(model.status) == "READY"
    mlflow.set_tracking_uri(mlflow_server)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
        assert list(loaded.predict([1, 2])) == [1, 2]
    finally:
        mlflow.set_tracking_uri(None)


def test_back_on_the_server_once_it_answers(
    tmp_path: Path,
    client: MlflowClient,
    forwarder: Forwarder,
    experiment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    import repro

    monkeypatch.setenv("REPRO_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", forwarder.uri)
    try:
        with repro.start_run(experiment) as offline:
            pass
        with repro.start_run(experiment) as still_offline:  # still down: spooled again
            pass
        assert mlflow.get_tracking_uri().startswith("repro-spool:")
        forwarder.up()
        with repro.start_run(experiment) as online:
            mlflow.log_metric("m", 1.0)
        assert mlflow.get_tracking_uri() == forwarder.uri
        assert client.get_run(online.info.run_id).data.metrics == {"m": 1.0}
        result = repro.sync(spool_dir=tmp_path / "spool")
        assert set(result.uploaded) == {offline.info.run_id, still_offline.info.run_id}
    finally:
        mlflow.set_tracking_uri(None)
