"""No secret reaches the tracking server: not in the command line (every form a user
types), not in the uncommitted diff. Secrets are generated at run time; a real script in
a real repository, a real MLflow server, the real ``repro`` command."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from repro_testlib import PYTHON, all_text_of_run, assert_ok, git, make_repo, repro_cli, run_id_of, run_py

pytestmark = pytest.mark.integration


def test_no_secret_in_arguments_or_diff(tmp_path: Path, env: dict[str, str], client) -> None:
    s = [secrets.token_urlsafe(12).replace("-", "x").replace("_", "y") for _ in range(12)]
    repo = make_repo(tmp_path / "repo")
    (repo / "config.py").write_text("LR = 0.1\n")
    git(repo, "add", "config.py")
    git(repo, "commit", "-q", "-m", "config")
    # A key pasted into a tracked config file, and a GitHub token in a comment.
    (repo / "config.py").write_text(
        f'LR = 0.1\nAPI_KEY = "{s[0]}"\n# ghp_{s[1]}{"A" * 24}\npassword: {s[2]}\n'
    )
    args = [
        "train.py", "-p", s[3], "--pw", s[4], f"--set=db.password={s[5]}",
        "--config", json.dumps({"lr": 0.1, "api_key": s[6]}),
        "--db", f"bob:{s[7]}@db.example.com:5432/x",
        "-H", f"Authorization: Bearer {s[8]}",
        "--conn", f"Server=db;Database=x;User Id=u;Password={s[9]};",
        "--url", f"postgresql://bob:{s[10]}@{s[11]}@db/x",
    ]
    run_id = run_id_of(assert_ok(run_py(args, repo, env)))
    text = all_text_of_run(client, run_id, tmp_path / "dl")
    leaked = [i for i, secret in enumerate(s) if secret in text]
    assert not leaked, leaked
    tags = client.get_run(run_id).data.tags
    assert tags["repro.redacted"] == "command,diff:3"
    assert "LR = 0.1" in text  # the rest of the diff is kept
    show = assert_ok(repro_cli(["show", run_id], env, repo)).stdout
    assert "redacted   command,diff:3" in show
    dry = assert_ok(repro_cli(["rerun", run_id, "--dry-run", "--", PYTHON, "train.py"], env, repo))
    assert "secrets in the recorded changes were replaced" in dry.stdout
    assert "the diff applies cleanly" in dry.stdout
