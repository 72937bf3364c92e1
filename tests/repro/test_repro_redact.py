"""The redaction table: what counts as a secret, and how each form is rewritten.

Values below are fixed placeholders ("VALUE"), not secrets; the end-to-end test in
test_integration.py uses secrets generated at run time.
"""

from __future__ import annotations

import pytest
from repro._redact import REDACTED, is_secret_name, redact_argv, redact_env, redact_value

R = REDACTED


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("--token", True),  # the plain word
        ("--hf-token", True),  # as the last word
        ("--hftoken", True),  # glued to another word
        ("HF_TOKEN", True),  # environment-variable style
        ("--token-file", True),  # strong words count anywhere (a path is harmless to hide)
        ("--api-key", True),  # "key" as the last word
        ("--apiKey", True),  # camelCase is split into words
        ("AWS_SECRET_ACCESS_KEY", True),  # "secret" anywhere
        ("--password", True),  # the plain word
        ("db.password", True),  # Hydra / OmegaConf dotted keys
        ("--passwd", True),  # Unix spelling
        ("--client-secret", True),  # OAuth client secrets
        ("--credentials", True),  # plural too
        ("--auth", True),  # bare "auth"
        ("--oauth", True),  # ends with "auth"
        ("--authorization", True),  # HTTP header name
        ("--cookie", True),  # session cookies, as the last word
        ("--max-new-tokens", False),  # plural: a count, not a token
        ("--tokenizer", False),  # a model component
        ("--num-key-value-heads", False),  # "key" not last: a model dimension
        ("--keyboard", False),  # "key" inside another word
        ("--author", False),  # "auth" inside another word
        ("--lr", False),  # ordinary hyperparameter
        ("--sort-key", True),  # a false positive we accept: "key" is last
    ],
)
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # --name VALUE: the next argument goes
        (["--token", "VALUE"], ["--token", R]),
        # --name=VALUE: the part after "=" goes
        (["--token=VALUE"], [f"--token={R}"]),
        # only the value after the secret option, not later arguments
        (["--api-key", "VALUE", "--lr", "0.1"], ["--api-key", R, "--lr", "0.1"]),
        # --password=VALUE form
        (["--password=VALUE"], [f"--password={R}"]),
        # single-dash long options (Go / Java style)
        (["-token", "VALUE"], ["-token", R]),
        # a secret-looking flag followed by another option redacts nothing
        (["--use-auth", "--lr", "0.1"], ["--use-auth", "--lr", "0.1"]),
        # KEY=VALUE pairs, also Hydra overrides with + and ++
        (["HF_TOKEN=VALUE"], [f"HF_TOKEN={R}"]),
        # dotted keys (Hydra, OmegaConf)
        (["db.password=VALUE"], [f"db.password={R}"]),
        # Hydra's "add" prefix
        (["+trainer.api_key=VALUE"], [f"+trainer.api_key={R}"]),
        # Hydra's "force add" prefix
        (["++x.secret=VALUE"], [f"++x.secret={R}"]),
        # an ordinary Hydra override stays
        (["lr=0.1"], ["lr=0.1"]),
        # credentials inside URLs, whatever the option
        (["--db", "postgresql://bob:VALUE@db/x"], ["--db", f"postgresql://{R}@db/x"]),
        # a token as the URL's user name, in --name=value form
        (["--src=https://VALUE@github.com/o/r"], [f"--src=https://{R}@github.com/o/r"]),
        # secret query parameters of signed URLs
        (["https://h/f?sig=VALUE&x=1"], [f"https://h/f?sig={R}&x=1"]),
        # well-known token formats, even as positionals
        (["ghp_" + "a" * 36], [R]),
        # a Hugging Face token
        (["hf_" + "b" * 34], [R]),
        # nothing secret: unchanged
        (["train.py", "--epochs", "3", "data/x.csv"], ["train.py", "--epochs", "3", "data/x.csv"]),
        # a negative number is a value, not an option
        (["--shift", "-0.5"], ["--shift", "-0.5"]),
    ],
)
def test_redact_argv(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


def test_redact_env_by_name_and_value() -> None:
    env = {
        "ATELIER_PROFILE": "gpu-1",  # plain
        "ATELIER_API_TOKEN": "VALUE",  # secret by name
        "ATELIER_DB_URL": "postgresql://u:VALUE@h/db",  # secret inside the value
    }
    assert redact_env(env) == {
        "ATELIER_PROFILE": "gpu-1",
        "ATELIER_API_TOKEN": R,
        "ATELIER_DB_URL": f"postgresql://{R}@h/db",
    }


def test_redact_value_leaves_plain_text() -> None:
    assert redact_value("just text, no secrets") == "just text, no secrets"


@pytest.mark.parametrize("name", ["--pw", "--db-pwd", "--hf-tok", "--passw", "DB_PW", "--pswd"])
def test_abbreviations_are_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # short flags: -p PASSWORD (mysql, sshpass, docker login), but -p PORT stays
        (["-p", "VALUE"], ["-p", R]),
        (["-p", "8080"], ["-p", "8080"]),
        (["-pVALUE"], [f"-p{R}"]),
        (["-p8080"], ["-p8080"]),
        # -u user:password (curl)
        (["-u", "bob:VALUE"], ["-u", f"bob:{R}"]),
        # abbreviations
        (["--pw", "VALUE"], ["--pw", R]),
        (["--db-pwd=VALUE"], [f"--db-pwd={R}"]),
        # --set / --conf pairs whose key names a secret, in both spellings
        (["--set=db.password=VALUE"], [f"--set=db.password={R}"]),
        (["--conf=spark.hadoop.fs.s3a.secret.key=VALUE"],
         [f"--conf=spark.hadoop.fs.s3a.secret.key={R}"]),
        (["--set", "a=1,db.password=VALUE"], ["--set", f"a=1,db.password={R}"]),
        # JSON arguments
        (["--config", '{"lr": 0.1, "api_key": "VALUE"}'],
         ["--config", f'{{"lr": 0.1, "api_key": "{R}"}}']),
        (['--cfg={"db": {"password": "VALUE"}}'], [f'--cfg={{"db": {{"password": "{R}"}}}}']),
        # URLs with credentials but no scheme
        (["--db", "bob:VALUE@db.example.com:5432/x"], ["--db", f"{R}@db.example.com:5432/x"]),
        # Authorization headers
        (["-H", "Authorization: Bearer VALUE"], ["-H", f"Authorization: {R}"]),
        (["--header=X-Api-Key: VALUE"], [f"--header=X-Api-Key: {R}"]),
        # connection strings
        (["--conn", "Server=db;Database=x;User Id=u;Password=VALUE;"],
         ["--conn", f"Server=db;Database=x;User Id=u;Password={R};"]),
        # passwords containing "@"
        (["--db", "postgresql://bob:p@ss@db/x"], ["--db", f"postgresql://{R}@db/x"]),
        # not secrets: an e-mail address, an scp-like git remote, a time
        (["--to", "bob@example.com"], ["--to", "bob@example.com"]),
        (["git@github.com:org/repo.git"], ["git@github.com:org/repo.git"]),
        (["--at", "12:30"], ["--at", "12:30"]),
    ],
)
def test_redact_argv_more_forms(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


def test_notebook_json_is_scanned_in_diffs_and_saved_files() -> None:
    """A notebook's cell source is a JSON string: its quotes arrive escaped
    (``"API_KEY = \\"…\\"\\n",``), in the diff of a tracked notebook and in a saved
    untracked one alike."""
    import json
    import secrets

    from repro._redact import scan_content, scan_diff

    key = secrets.token_hex(12)
    notebook = json.dumps({"cells": [{"cell_type": "code",
                                      "source": [f'API_KEY = "{key}"\n', "x = 1"]}]}, indent=1)
    saved, n = scan_content(notebook.encode())
    assert n == 1 and key not in saved.decode()
    assert json.loads(saved)["cells"][0]["source"][0] == f'API_KEY = "{R}"\n'
    line = json.dumps(f'API_KEY = "{key}"\n')
    diff, n = scan_diff(f"+++ b/nb.ipynb\n+    {line},\n".encode())
    assert n == 1 and key not in diff.decode()
