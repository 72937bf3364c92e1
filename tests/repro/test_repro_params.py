"""Parsed arguments become MLflow parameters: argparse, click (and so typer, which is
built on it) and OmegaConf configs (what a Hydra app receives), found without repro
parsing or importing anything. Real scripts, a real MLflow server."""

from __future__ import annotations

import secrets
import textwrap
from pathlib import Path

import pytest
from repro_testlib import make_repo, repro_cli, run_id_of, run_py

pytestmark = pytest.mark.integration

SCRIPTS = {
    "argparse": """
        import argparse, os
        import mlflow, repro

        def main(args):
            with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
                mlflow.log_param("lr", args.lr * 2)  # the script's own param: no clash
                print("RUN_ID", run.info.run_id, flush=True)

        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float, default=0.1)
        parser.add_argument("--layers", type=int, nargs="+", default=[64])
        parser.add_argument("-p", "--db-password")
        main(parser.parse_args())
    """,
    "click": """
        import os
        import click, repro

        @click.command()
        @click.option("--lr", type=float, default=0.1)
        @click.option("--layers", type=int, multiple=True, default=[64])
        @click.option("-p", "--db-password")
        def main(lr, layers, db_password):
            with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
                print("RUN_ID", run.info.run_id, flush=True)

        main()
    """,
    "omegaconf": """
        import os, sys
        from omegaconf import OmegaConf
        import repro

        def app(cfg):  # what @hydra.main hands to the task function
            with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
                print("RUN_ID", run.info.run_id, flush=True)

        base = OmegaConf.create({"lr": 0.1, "layers": [64], "db": {"password": None},
                                 "run": {"name": "${lr}"}})
        app(OmegaConf.merge(base, OmegaConf.from_dotlist(sys.argv[1:])))
    """,
}
ARGS = {
    "argparse": ["--lr", "0.5", "--layers", "32", "16", "-p", "{secret}"],
    "click": ["--lr", "0.5", "--layers", "32", "--layers", "16", "-p", "{secret}"],
    "omegaconf": ["lr=0.5", "layers=[32,16]", "db.password={secret}"],
}


@pytest.mark.parametrize("kind", list(SCRIPTS))
def test_arguments_are_logged_as_params(
    kind: str, tmp_path: Path, env: dict[str, str], client
) -> None:
    secret = secrets.token_hex(8)
    repo = make_repo(tmp_path / "repo")
    (repo / "app.py").write_text(textwrap.dedent(SCRIPTS[kind]))
    args = [a.format(secret=secret) for a in ARGS[kind]]
    proc = run_py(["app.py", *args], repo, env)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc)
    run = client.get_run(run_id)
    params = run.data.params
    prefix = "config" if kind == "omegaconf" else "args"
    assert params[f"{prefix}.lr"] == "0.5"
    assert params[f"{prefix}.layers"] in ("[32, 16]", "(32, 16)")
    assert params[f"{prefix}.db_password" if kind != "omegaconf" else "config.db.password"] \
        == "[REDACTED]"
    if kind == "omegaconf":
        assert params["config.run.name"] == "0.5"  # interpolations resolved
    if kind == "argparse":
        assert params["lr"] == "1.0"
    assert all(secret not in v for v in params.values())
    assert all(secret not in v for v in run.data.tags.values())
    assert run.data.tags["repro.params"].startswith(kind)
    show = repro_cli(["show", run_id], env, repo).stdout
    assert f"param      {prefix}.lr = 0.5" in show
