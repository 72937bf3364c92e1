"""The image's user-layer tool (images/base/atelier-env) and the session's git file, run
here with this machine's Python and git (the container sessions: test_user_layer.py)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

from atelier_hub.services import Services
from atelier_hub.session import session_env, session_files
from stack import REPO

TOOL = runpy.run_path(str(REPO / "images" / "base" / "atelier-env"))
PY = f"py{sys.version_info[0]}.{sys.version_info[1]}"


def _fake_env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "PATH": f"{sys.prefix}/bin:/usr/bin:/bin", **extra}


def test_the_layer_is_per_image_and_python_on_the_home_with_its_bin_after_the_image_s(tmp_path):
    env = _fake_env(tmp_path, ATELIER_IMAGE="gpu")
    assert TOOL["setup"](env) == []
    base = tmp_path / ".atelier" / "layers" / f"gpu-{PY}"
    assert env["PYTHONUSERBASE"] == str(base)
    assert env["PATH"].split(":") == [f"{sys.prefix}/bin", str(base / "bin"), "/usr/bin", "/bin"]
    assert (base / "lib" / f"python{PY[2:]}" / "site-packages").is_dir()
    # A base the deployment set is kept.
    env = _fake_env(tmp_path, PYTHONUSERBASE=str(tmp_path / "mine"))
    TOOL["setup"](env)
    assert env["PYTHONUSERBASE"] == str(tmp_path / "mine")


def test_a_user_package_replacing_an_image_package_is_reported_and_reset_keeps_the_layer(tmp_path):
    env = _fake_env(tmp_path)
    TOOL["setup"](env)
    base = Path(env["PYTHONUSERBASE"])
    site = TOOL["site_dir"](base)
    # pydantic is one of this venv's own packages (the "image" here); the user's copy at 0.0.1
    # is a distribution as pip writes one (a dist-info folder with its METADATA).
    (site / "pydantic-0.0.1.dist-info").mkdir()
    (site / "pydantic-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pydantic\nVersion: 0.0.1\n")
    lines = TOOL["setup"](dict(env))
    assert len(lines) == 1 and "your package pydantic 0.0.1 replaces the image's pydantic" in lines[0], lines
    assert "(replaces the image's" in TOOL["status"](base)

    out = TOOL["reset"](base)
    aside = [p for p in base.parent.iterdir() if p.name.startswith(f"{base.name}.reset-")]
    assert len(aside) == 1 and str(aside[0]) in out
    assert (TOOL["site_dir"](aside[0]) / "pydantic-0.0.1.dist-info" / "METADATA").is_file()
    assert TOOL["setup"](dict(env)) == []
    assert "moved aside by `atelier-env reset`" in TOOL["status"](base)


def test_atelier_env_names_its_commands_when_given_none_or_another():
    r = subprocess.run([sys.executable, str(REPO / "images" / "base" / "atelier-env"), "install"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "give one command: status or reset" in r.stderr


def test_git_reads_the_session_s_identity_and_the_user_s_own_gitconfig_wins(tmp_path):
    from atelier_hub.profiles import Profile

    p = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})
    config_dir = tmp_path / "session"
    files = session_files(p, username="ada", services=Services(), cpus=2)
    env = session_env(p, username="ada", services=Services(), cpus=2, config_dir=str(config_dir))
    for rel, text in files.items():
        (config_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (config_dir / rel).write_text(text)
    home = tmp_path / "home"
    home.mkdir()
    git_env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_SYSTEM": env["GIT_CONFIG_SYSTEM"]}

    def ident() -> str:
        return subprocess.run(["git", "var", "GIT_AUTHOR_IDENT"], capture_output=True, text=True, check=True,
                              env=git_env).stdout.rsplit(" ", 2)[0]

    assert ident() == "ada <ada@users.noreply.atelier>"
    (home / ".gitconfig").write_text("[user]\n    name = Ada Lovelace\n    email = ada@example.org\n")
    assert ident() == "Ada Lovelace <ada@example.org>"


def test_the_deployment_names_the_git_email_domain_and_a_bad_one_names_the_field_and_fix(tmp_path):
    from atelier_hub.profiles import Profile
    from atelier_hub.services import load_deployment
    from atelier_hub.settings import SettingsError

    good = tmp_path / "deployment.yaml"
    good.write_text("git:\n  email_domain: users.noreply.example.org\n")
    p = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})
    files = session_files(p, username="ada", services=Services(), cpus=2, git=load_deployment(good).git)
    assert "email = ada@users.noreply.example.org\n" in files["git/config"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("git:\n  email_domain: not a domain\n")
    try:
        load_deployment(bad)
    except SettingsError as exc:
        message = str(exc)
    else:
        raise AssertionError("a bad email_domain was taken")
    assert "git.email_domain" in message and "users.noreply.example.org" in message, message


def test_a_new_home_gets_the_welcome_notebook_once_and_a_file_of_the_user_s_stays(tmp_path):
    import nbformat

    hook = runpy.run_path(str(REPO / "images" / "base" / "atelier-session-start"))
    source = REPO / "images" / "base" / "welcome" / "Welcome.ipynb"
    nbformat.validate(nbformat.read(source, as_version=4))
    home = tmp_path / "home"
    home.mkdir()
    assert hook["welcome"](home, source) is True
    assert (home / "Welcome.ipynb").read_bytes() == source.read_bytes()
    (home / "Welcome.ipynb").unlink()  # the user deletes it: it does not come back
    assert hook["welcome"](home, source) is False and not (home / "Welcome.ipynb").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "Welcome.ipynb").write_text("mine")
    assert hook["welcome"](other, source) is False and (other / "Welcome.ipynb").read_text() == "mine"


def test_a_new_home_gets_code_servers_settings_and_a_users_own_stay(tmp_path):
    hook = runpy.run_path(str(REPO / "images" / "base" / "atelier-session-start"))
    source = REPO / "images" / "base" / "code-server" / "settings.json"
    assert json.loads(source.read_text())["chat.disableAIFeatures"] is True
    home = tmp_path / "home"
    target = home / ".local" / "share" / "code-server" / "User" / "settings.json"
    assert hook["vscode_settings"](home, source) is True
    assert target.read_bytes() == source.read_bytes()
    target.write_text('{"editor.fontSize": 16}')  # the user's own
    assert hook["vscode_settings"](home, source) is False
    assert target.read_text() == '{"editor.fontSize": 16}'
