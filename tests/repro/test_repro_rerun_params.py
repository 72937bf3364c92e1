"""``repro rerun`` and the parsed arguments: a re-run gets the recorded parameters back,
``--set`` changes one where the program's parser writes it, and a secret the record
redacted is never handed to the program as the marker (the re-run refuses, naming the
parameter and the ``--set`` that supplies it). Real argparse, click, typer and Hydra
(``chdir=True``) programs, real git, a real MLflow server, the real ``repro`` command."""

from __future__ import annotations

import hashlib
import secrets
import textwrap
from pathlib import Path

import pytest
from repro_testlib import assert_ok, git, make_repo, output_of, run_id_of, run_py

pytestmark = pytest.mark.integration

# Each prints what it was given; the password only as a digest.
REPORT = """
def report(run, lr, layers, password):
    import hashlib
    print("RUN_ID", run.info.run_id, flush=True)
    digest = hashlib.sha256(str(password).encode()).hexdigest()[:12]
    print("OUTPUT", lr, list(layers), digest, flush=True)
"""

APPS = {
    "argparse": """
        import argparse, os
        import repro

        parser = argparse.ArgumentParser()
        parser.add_argument("-l", "--lr", type=float, default=0.1)
        parser.add_argument("--layers", type=int, nargs="+", default=[64])
        parser.add_argument("-p", "--db-password")
        parser.add_argument("--fast", action="store_true")
        args = parser.parse_args()
        with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
            report(run, args.lr, args.layers, args.db_password)
    """,
    "click": """
        import os
        import click, repro

        @click.command()
        @click.option("-l", "--lr", type=float, default=0.1)
        @click.option("--layers", type=int, multiple=True, default=[64])
        @click.option("-p", "--db-password")
        @click.option("--fast/--no-fast", default=False)
        def main(lr, layers, db_password, fast):
            with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
                report(run, lr, layers, db_password)

        main()
    """,
    "typer": """
        import os
        from typing import List, Optional
        import typer, repro

        def main(lr: float = typer.Option(0.1, "-l", "--lr"),
                 layers: List[int] = typer.Option([64]),
                 db_password: Optional[str] = typer.Option(None, "-p", "--db-password"),
                 fast: bool = False):
            with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
                report(run, lr, layers, db_password)

        typer.run(main)
    """,
    "hydra": """
        import os
        import hydra, repro

        @hydra.main(version_base=None, config_path="conf", config_name="config")
        def main(cfg):
            assert "/outputs/" in os.getcwd()  # chdir=True
            with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
                report(run, cfg.lr, cfg.layers, cfg.db.password)

        main()
    """,
}
HYDRA_CONFIG = textwrap.dedent(
    """
    lr: 0.1
    layers: [64]
    db:
      host: localhost
      password: null
    hydra:
      job:
        chdir: true
      run:
        dir: outputs/${now:%H-%M-%S-%f}
    """
)
ARGS = {
    "argparse": ["-l", "0.5", "--layers", "32", "16", "-p", "{secret}"],
    "click": ["--lr", "0.5", "--layers", "32", "--layers", "16", "-p{secret}"],
    "typer": ["--lr", "0.5", "--layers", "32", "--layers", "16", "--db-password={secret}"],
    "hydra": ["lr=0.5", "layers=[32,16]", "db.password={secret}"],
}
SECRET_PARAM = {"argparse": "args.db_password", "click": "args.db_password",
                "typer": "args.db_password", "hydra": "config.db.password"}


@pytest.fixture
def cli(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]):
    """``repro ARGS`` in this process (no MLflow import per call) -> (status, out, err);
    a re-run's own child process gets the test's environment."""
    from repro._cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def call(args: list[str], cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        capfd.readouterr()
        status = main(args)
        out, err = capfd.readouterr()
        return status, out, err

    return call


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _app_repo(tmp_path: Path, kind: str) -> Path:
    repo = make_repo(tmp_path / "repo")
    (repo / "app.py").write_text(REPORT + textwrap.dedent(APPS[kind]))
    (repo / ".gitignore").write_text("outputs/\n")
    paths = ["app.py", ".gitignore"]
    if kind == "hydra":
        (repo / "conf").mkdir()
        (repo / "conf" / "config.yaml").write_text(HYDRA_CONFIG)
        paths.append("conf/config.yaml")
    git(repo, "add", *paths)
    git(repo, "commit", "-q", "-m", kind)
    return repo


@pytest.mark.parametrize("kind", list(APPS))
def test_rerun_replays_and_changes_parsed_arguments(
    kind: str, tmp_path: Path, env: dict[str, str], client, cli
) -> None:
    repo = _app_repo(tmp_path, kind)
    secret = secrets.token_hex(8)
    first = assert_ok(run_py(["app.py", *[a.format(secret=secret) for a in ARGS[kind]]], repo, env))
    assert output_of(first) == f"0.5 [32, 16] {_digest(secret)}"
    run_id = run_id_of(first)
    run = client.get_run(run_id)
    prefix = "config" if kind == "hydra" else "args"
    assert run.data.params[f"{prefix}.lr"] == "0.5"
    assert run.data.params[SECRET_PARAM[kind]] == "[REDACTED]"
    assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if secret in v]
    # Only the program's own arguments (not Hydra's own argparse, or its `hydra` node).
    assert run.data.tags["repro.params"] == f"{kind} ({len(run.data.params)})"
    # The entry point survives Hydra's chdir=True: the script, started from the root.
    assert run.data.tags["repro.entry_point"] == "app.py"
    assert run.data.tags["repro.entry_point.type"] == "script"
    if kind == "hydra":
        assert run.data.tags["repro.cwd"].startswith("outputs/")
        assert run.data.tags["repro.launch_dir"] == "."
    status, show, _ = cli(["show", run_id], repo)
    assert f"parsed     {kind} (" in show and f"param      {prefix}.lr = 0.5" in show, show

    # The password was redacted: it is never passed on as "[REDACTED]".
    status, out, err = cli(["rerun", run_id], repo)
    assert status == 1, out
    assert SECRET_PARAM[kind] in err and f"--set {SECRET_PARAM[kind]}=VALUE" in err, err
    assert "[REDACTED]" not in out

    # Supplied with --set (by its short name), with another parameter changed.
    new = secrets.token_hex(8)
    short = "db.password" if kind == "hydra" else "db_password"
    status, out, err = cli(["rerun", run_id, "--set", f"{short}={new}", "--set", "lr=0.25"],
                           repo)
    assert status == 0, out + err
    assert f"OUTPUT 0.25 [32, 16] {_digest(new)}" in out, out
    assert f"set        {prefix}.lr: 0.5 → 0.25" in out
    assert new not in out and new not in err  # printed masked
    rerun_id = next(line.split()[1] for line in out.splitlines() if line.startswith("RUN_ID "))
    rerun = client.get_run(rerun_id)
    assert rerun.data.tags["repro.rerun_of"] == run_id
    assert rerun.data.params[f"{prefix}.lr"] == "0.25"
    assert rerun.data.params[SECRET_PARAM[kind]] == "[REDACTED]"
    status, diff, _ = cli(["diff", run_id, rerun_id], repo)
    assert f"{prefix}.lr: 0.5 → 0.25" in diff

    # A multi-valued parameter, spelled as its parser wants it.
    layers = "[8,4]" if kind == "hydra" else "8 4"
    status, dry, err = cli(["rerun", run_id, "--dry-run", "--set", f"{short}=x",
                            "--set", f"layers={layers}"], repo)
    assert status == 0, err
    command = next(line for line in dry.splitlines() if line.startswith("command "))
    expected = {"argparse": "--layers 8 4", "click": "--layers 8 --layers 4",
                "typer": "--layers 8 --layers 4", "hydra": "'layers=[8,4]'"}[kind]
    assert expected in command and "32" not in command, command
    assert "=x" not in command and " x" not in command  # the secret is shown masked

def test_a_secret_in_the_recorded_changes_must_be_supplied(
    tmp_path: Path, env: dict[str, str], client, cli
) -> None:
    """The Hydra config's password is in the uncommitted config file: the diff holds the
    marker in its place, so the re-run would read "[REDACTED]" as the password."""
    repo = _app_repo(tmp_path, "hydra")
    secret = secrets.token_hex(16)
    config = repo / "conf" / "config.yaml"
    config.write_text(HYDRA_CONFIG.replace("password: null", f"password: {secret}"))
    run_id = run_id_of(assert_ok(run_py(["app.py", "lr=0.5"], repo, env)))
    assert client.get_run(run_id).data.tags["repro.redacted"] == "diff:1"
    git(repo, "checkout", "-q", "conf/config.yaml")
    status, _, err = cli(["rerun", run_id], repo)
    assert status == 1
    assert "config.db.password" in err and "--set config.db.password=VALUE" in err, err
    status, out, err = cli(["rerun", run_id, "--set", f"db.password={secret}"], repo)
    assert status == 0, out + err
    assert f"OUTPUT 0.5 [64] {_digest(secret)}" in out


def test_set_errors_name_the_fix(tmp_path: Path, env: dict[str, str], cli) -> None:
    repo = _app_repo(tmp_path, "argparse")
    run_id = run_id_of(assert_ok(run_py(["app.py", "--lr", "0.5"], repo, env)))
    status, _, err = cli(["rerun", run_id, "--dry-run", "--set", "lr"], repo)
    assert status == 1 and "NAME=VALUE" in err
    status, _, err = cli(["rerun", run_id, "--set", "lr=1", "--", "python", "app.py"], repo)
    assert status == 1 and "--set changes the recorded command" in err
    # A flag: on, and off again.
    status, out, _ = cli(["rerun", run_id, "--dry-run", "--set", "fast=true"], repo)
    assert status == 0 and "--fast" in out.split("command ", 1)[1]
    # --as-job is for an Atelier session: outside one it says so and runs nothing.
    status, _, err = cli(["rerun", run_id, "--profile", "gpu-1"], repo)
    assert status == 1 and "--profile is for --as-job" in err
    status, out, err = cli(["rerun", run_id, "--as-job"], repo)
    assert status == 1 and "jobs service" in err and "atelier" in err and out == "", err
