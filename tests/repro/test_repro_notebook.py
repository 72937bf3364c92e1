"""A run started from a notebook records the notebook (outputs stripped, secrets
scanned) and the cells the kernel ran. A real Jupyter kernel (``jupyter execute``, with
the session name JupyterLab gives a kernel), a real MLflow server."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repro_testlib import make_repo, recorded_files, repro_cli

pytestmark = pytest.mark.integration


def _notebook(cells: list[str]) -> str:
    return json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [],
                   "execution_count": None} for c in cells],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    })


def test_notebook_is_recorded(tmp_path: Path, env: dict[str, str], client,
                              experiment: str) -> None:
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    assert jupyter, "jupyter is part of the dev install"
    key = secrets.token_hex(12)
    repo = make_repo(tmp_path / "repo")
    nb = repo / "explore.ipynb"
    nb.write_text(_notebook([
        f'API_KEY = "{key}"\nx = 21',
        "import os, repro\nwith repro.start_run(os.environ['TEST_EXPERIMENT']) as run:\n"
        "    print(run.info.run_id)",
    ]))
    proc = subprocess.run([jupyter, "execute", str(nb)], cwd=repo, capture_output=True,
                          text=True, timeout=180, env={**env, "JPY_SESSION_NAME": str(nb)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    tags = run.data.tags
    assert tags["repro.entry_point.type"] == "notebook"
    assert tags["repro.entry_point"] == "explore.ipynb"
    assert "outputs stripped" in tags["repro.notebook"] and "2 cells run" in tags["repro.notebook"]
    files = {k: v.decode() for k, v in recorded_files(client, run.info.run_id, tmp_path / "dl").items()}
    # The notebook is an artifact of its own (opened in MLflow's UI), the rest in record.json.
    assert [a.path for a in client.list_artifacts(run.info.run_id, "repro")
            if a.path.endswith(".ipynb")] == ["repro/notebook.ipynb"]
    saved, history = files["repro/notebook.ipynb"], files["repro/notebook_history.py"]
    assert key not in saved and "x = 21" in saved
    assert key not in history and "repro.start_run" in history
    # Never committed, the notebook is an untracked file too: saved scanned as well.
    untracked = files["repro/untracked.json"]
    assert "explore.ipynb" in untracked and key not in untracked
    show = repro_cli(["show", run.info.run_id], env, repo).stdout
    assert "notebook   " in show

    # The notebook was never committed: the re-run writes the recorded one back (its
    # secret stays the marker) and executes it; --set has no command line to change.
    nb.unlink()
    refused = repro_cli(["rerun", run.info.run_id, "--set", "x=1"], env, repo)
    assert refused.returncode == 1 and "notebook run has no command-line" in refused.stderr
    again = repro_cli(["rerun", run.info.run_id], env, repo, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "jupyter execute" in again.stdout and "exit       0" in again.stdout
    runs = client.search_runs([exp.experiment_id])
    assert [r.data.tags.get("repro.rerun_of") for r in runs].count(run.info.run_id) == 1
