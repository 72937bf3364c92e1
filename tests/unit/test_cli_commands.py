"""The `atelier` command's paths that need no server: `users`, `profiles` and
`render values`, with good and bad input.

The CLI's rule: a user's mistake ends with exit status 2 and one line on stderr naming
the thing and the fix, no traceback, nothing half-written. Most cases call the CLI's
``main`` in this process (the same code, without a Python start-up each); the last two
run the real command as a person types it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from atelier_hub.cli import main
from atelier_hub.embedded.auth import check_password

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def atelier(capsys):
    """``atelier ARGS...`` in this process: its exit status, stdout and stderr."""
    def run(*args: str) -> SimpleNamespace:
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def atelier_process(*args: str) -> subprocess.CompletedProcess:
    """The real command in its own process (this checkout's hub package first)."""
    path = os.pathsep.join(p for p in (str(REPO / "hub"), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "atelier_hub.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": path})


def refused(r) -> str:
    """The one line a refused command printed (after checking how it ended)."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("atelier: "), r.stderr
    return lines[0]


# -- atelier users ------------------------------------------------------------------------------


def test_users_add_list_passwd_remove(tmp_path, atelier):
    state = str(tmp_path / "state")
    users_file = tmp_path / "state" / "users.json"

    r = atelier("users", "--state", state, "list")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")  # no user yet

    r = atelier("users", "--state", state, "add", "ada")
    assert r.returncode == 0 and r.stdout.startswith("Added ada. Password (shown once): "), r.stdout
    first = r.stdout.rsplit(": ", 1)[1].strip()
    assert len(first) >= 12
    r = atelier("users", "--state", state, "add", "bo", "--admin", "--no-password")
    assert r.stdout.startswith("Added bo. Invite link for bo (shown once; works once, for 7 days): "
                               "http://HUB/hub/invite/bo?code="), r.stdout
    code = r.stdout.rsplit("code=", 1)[1].strip()
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    stored = json.loads(users_file.read_text())["users"]
    assert first not in users_file.read_text() and code not in users_file.read_text()  # only hashes are kept
    assert check_password(first, stored["ada"]["password"])
    assert stored["bo"]["password"] is None and stored["bo"]["admin"] is True and stored["bo"]["invite"]["expires"]

    r = atelier("users", "--state", state, "list")
    assert (r.returncode, r.stdout) == (0, "ada\nbo (admin, invited)\n")
    r = atelier("users", "--state", state, "invite", "bo", "--expires-in", "2h")
    assert r.stdout.startswith("Invite link for bo (shown once; works once, for 2 hours): "), r.stdout

    r = atelier("users", "--state", state, "passwd", "ada")
    assert r.returncode == 0 and r.stdout.startswith("New password for ada (shown once): "), r.stdout
    second = r.stdout.rsplit(": ", 1)[1].strip()
    hashed = json.loads(users_file.read_text())["users"]["ada"]["password"]
    assert second != first and check_password(second, hashed) and not check_password(first, hashed)

    home = tmp_path / "state" / "homes" / "ada"
    home.mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    r = atelier("users", "--state", state, "remove", "ada")
    assert (r.returncode, r.stdout) == (0, "Removed ada: the hub has never run here. Their home folder is kept.\n")
    assert (home / "notes.txt").read_text() == "mine"
    assert atelier("users", "--state", state, "list").stdout == "bo (admin, invited)\n"


@pytest.mark.parametrize(
    "args, line",
    [
        (["add", "Ada Lovelace"], "atelier: user name 'Ada Lovelace' is not valid: use lower-case letters, digits, "
                                  "'.', '_' or '-' (at most 64), starting with a letter or digit"),
        (["add", "ada"], "atelier: user 'ada' already exists; use `atelier users passwd ada` to reset it"),
        (["passwd", "nobody"], "atelier: no user 'nobody'; add it with `atelier users add nobody`"),
        (["remove", "nobody"], "atelier: no user 'nobody'; `atelier users list` shows who exists"),
        (["invite", "nobody"], "atelier: no user 'nobody'; add it with `atelier users add nobody --no-password`"),
        (["invite", "ada", "--expires-in", "soon"], "atelier: --expires-in 'soon' is not a duration: give a "
                                                    "positive number with s, m, h or d (e.g. 7d)"),
    ],
)
def test_users_bad_input_is_one_line_and_changes_nothing(tmp_path, atelier, args, line):
    state = str(tmp_path / "state")
    assert atelier("users", "--state", state, "add", "ada").returncode == 0
    before = (tmp_path / "state" / "users.json").read_bytes()
    assert refused(atelier("users", "--state", state, *args)) == line
    assert (tmp_path / "state" / "users.json").read_bytes() == before


@pytest.mark.parametrize("action", [["list"], ["add", "ada"], ["passwd", "ada"], ["remove", "ada"]])
def test_users_with_a_damaged_users_file_say_so_and_leave_it(tmp_path, atelier, action):
    users_file = tmp_path / "users.json"
    users_file.write_text('{"users": {"ada": ')
    line = refused(atelier("users", "--state", str(tmp_path), *action))
    assert line.startswith(f"atelier: {users_file}: not valid JSON (") and line.endswith("restore it from a backup")
    assert users_file.read_text() == '{"users": {"ada": '


# -- atelier profiles ---------------------------------------------------------------------------


def test_profiles_lists_the_shipped_profiles(atelier):
    r = atelier("profiles", "--dir", str(REPO / "profiles"))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == [
        "NAME           CPU   MEMORY  GPU  DESCRIPTION",
        "cpu-small*       2       4G    0  For notebooks, light data work and editing code.",
        "highmem          4      64G    0  For data sets that must fit in memory (pandas, large joins).",
        "cpu-large        8      16G    0  For feature engineering, Spark in local mode and classical ML on many cores.",
        "gpu-1            8      32G    1  One NVIDIA GPU for training, fine-tuning and inference.",
        "gpu-4           32     192G    4  Four NVIDIA GPUs on one machine for distributed training.",
        "(* the default)",
    ]


def test_profiles_lists_a_folder_of_its_own(tmp_path, atelier):
    (tmp_path / "tiny.yaml").write_text("name: tiny\ndisplay_name: Tiny\ndescription: One core.\n"
                                        "cpu: {limit: 1.5}\nmemory: {limit: 512M}\n")
    r = atelier("profiles", "--dir", str(tmp_path))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines()[1:] == ["tiny           1.5     512M    0  One core.", "(* the default)"]
    (tmp_path / "tiny.yaml").unlink()
    r = atelier("profiles", "--dir", str(tmp_path))
    assert r.returncode == 1 and r.stderr.strip() == f"{tmp_path}: no *.yaml profile files; add one such as cpu-small.yaml"


def test_profiles_of_a_missing_folder_name_it(tmp_path, atelier):
    r = atelier("profiles", "--dir", str(tmp_path / "none"))
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"{tmp_path / 'none'}: profiles folder not found; pass the folder that holds *.yaml"


# -- atelier render values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, text, lines",
    [
        ("--deployment", "services:\n  mlflow:\n    tracking_uri: 5\n    colour: red\n",
         ["atelier: {f}: services.mlflow.tracking_uri: Input should be a valid string",
          "{f}: services.mlflow.colour: Extra inputs are not permitted; remove it or check its spelling"]),
        ("--cluster", "storage:\n  capacity: 5\ngpu_servers_per_user: -1\n",
         ["atelier: {f}: storage.capacity: Input should be a valid string",
          "{f}: gpu_servers_per_user: Input should be greater than or equal to 0"]),
        ("--deployment", None, ["atelier: {f}: cannot read deployment settings (No such file or directory); "
                                "check the path"]),
        ("--cluster", None, ["atelier: {f}: cannot read cluster settings (No such file or directory); check the path"]),
    ],
)
def test_render_values_with_a_bad_settings_file_names_file_and_field(tmp_path, atelier, option, text, lines):
    settings = tmp_path / "settings.yaml"
    if text is not None:
        settings.write_text(text)
    out = tmp_path / "values.yaml"
    r = atelier("render", "values", option, str(settings), "--out", str(out))
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    # One line per problem, each naming the file and the field.
    assert r.stderr.splitlines() == [line.format(f=settings) for line in lines]
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("option", ["--deployment", "--cluster"])
def test_render_values_with_settings_that_are_not_yaml(tmp_path, atelier, option):
    settings = tmp_path / "settings.yaml"
    settings.write_text("services: [unclosed\n")
    r = atelier("render", "values", option, str(settings))
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"atelier: {settings}: not valid YAML: "), r.stderr
    assert "line 2, column 1" in r.stderr  # where the parser gave up
    assert r.stderr.count("\n") == 1, r.stderr  # one line, not the parser's drawing of the spot


@pytest.mark.parametrize(
    "url, fix",
    [
        # What a browser sees: a scheme, a DNS name (its wildcard gets the users' servers), a port at most.
        ("atelier.example.org", "must start with https://"),
        ("ftp://atelier.example.org", "must start with https://"),
        ("https://", "has no host"),
        ("https://atelier.example.org/jupyter", "has a path or query ('/jupyter'): give the scheme and host only"),
        ("https://atelier.example.org/?next=/hub", "has a path or query ('/?next=/hub')"),
        ("https://ann:pw@atelier.example.org", "remove them"),
        ("https://atelier.example.org:99999", "is not a URL"),
        # A wildcard DNS record needs a name: no *.10.0.0.5.
        ("https://10.0.0.5", "names an IP address (10.0.0.5)"),
        ("https://atelier_hub.example.org", "is not a DNS name"),
    ],
)
def test_render_values_refuses_a_malformed_public_url(tmp_path, atelier, url, fix):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(f"public_url: {json.dumps(url)}\n")
    out = tmp_path / "values.yaml"
    line = refused(atelier("render", "values", "--cluster", str(cluster), "--out", str(out)))
    # The file, the field, then what is wrong and the fix.
    assert line.startswith(f"atelier: {cluster}: public_url: "), line
    assert fix in line, line
    assert not out.exists()


def test_render_values_refuses_without_a_public_url(tmp_path, atelier):
    """Never values where every user's server shares the hub's origin: the field is
    named, with what the platform team must provide (wildcard DNS, a certificate)."""
    out = tmp_path / "values.yaml"
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("gpu_servers_per_user: 2\n")
    for args, where in ((["--cluster", str(cluster)], f"{cluster}: "), ([], "")):
        line = refused(atelier("render", "values", *args, "--out", str(out)))
        assert line.startswith(f"atelier: {where}public_url: not set; "), line
        for fix in ("public_url: https://atelier.example.org", "*.atelier.example.org", "TLS certificate"):
            assert fix in line, line
        assert not out.exists()
    cluster.write_text("public_url: https://atelier.example.org\n")
    r = atelier("render", "values", "--cluster", str(cluster), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "subdomain_host: https://atelier.example.org\n" in out.read_text()


# -- the real command ------------------------------------------------------------------------------


def test_the_real_command_lists_profiles_and_refuses_in_one_line(tmp_path):
    r = atelier_process("profiles", "--dir", str(REPO / "profiles"))
    assert r.returncode == 0 and r.stdout.splitlines()[1].startswith("cpu-small*"), r.stderr
    r = atelier_process("users", "--state", str(tmp_path), "remove", "nobody")
    assert refused(r) == "atelier: no user 'nobody'; `atelier users list` shows who exists"
