"""The session's side of the credentials service, with this machine's git and Python: the
files a session gets make git call the helper for the deployment's hosts only, and the
helper hands git what the service answers for the session's own token. The service
itself, through a real hub and real container sessions: tests/integration/test_user_layer.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from atelier_hub.profiles import Profile
from atelier_hub.services import Services
from atelier_hub.services.credentials import SERVICE as CREDENTIALS
from atelier_hub.services.credentials import CredentialsService, Store
from atelier_hub.session import session_env, session_files
from atelier_hub.settings import SettingsError

PROFILE = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})


class _Answers(BaseHTTPRequestHandler):
    """Where the helper's request lands: it records what came and answers as told."""

    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        answer = json.dumps({"username": "ada-on-git", "password": "tok-of-ada"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def answering():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    _Answers.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/credentials", _Answers.seen
    server.shutdown()


def _session(tmp_path, services) -> dict[str, str]:
    """A session's config folder written as a spawner writes it; git's environment there."""
    config_dir = tmp_path / "session"
    for rel, text in session_files(PROFILE, username="ada", services=services, cpus=2).items():
        (config_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (config_dir / rel).write_text(text)
    env = session_env(PROFILE, username="ada", services=services, cpus=2, config_dir=str(config_dir))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_TERMINAL_PROMPT": "0", "NO_PROXY": "*",
            "JUPYTERHUB_API_TOKEN": "session-token-of-ada",
            **{k: v for k, v in env.items() if k in ("GIT_CONFIG_SYSTEM", "ATELIER_CREDENTIALS_URL")}}


def _fill(env: dict, host: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "credential", "fill"], input=f"protocol=https\nhost={host}\npath=t/r.git\n\n",
                          capture_output=True, text=True, env=env, timeout=60)


def test_git_gets_the_answer_for_a_listed_host_with_the_session_s_own_token(tmp_path, answering):
    url, seen = answering
    env = _session(tmp_path, Services(credentials=CredentialsService(url=url, git_hosts=["git.example.org"])))
    r = _fill(env, "git.example.org")
    assert r.returncode == 0, r.stderr
    assert "username=ada-on-git\npassword=tok-of-ada\n" in r.stdout
    assert seen == [{"path": "/services/credentials/api/git/fill", "auth": "token session-token-of-ada",
                     "body": {"protocol": "https", "host": "git.example.org", "path": ""}}]
    # Another host: git never asks the helper, and has nothing to send.
    r = _fill(env, "github.com")
    assert r.returncode != 0 and len(seen) == 1, (r.stdout, r.stderr)


def test_without_the_service_git_has_no_helper_and_the_include_is_harmless(tmp_path):
    env = _session(tmp_path, Services())
    assert "ATELIER_CREDENTIALS_URL" not in env
    r = subprocess.run(["git", "config", "--system", "--get-regexp", "credential"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1 and r.stdout == "", r  # nothing, and no error about the missing file
    r = subprocess.run(["git", "var", "GIT_AUTHOR_IDENT"], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.startswith("ada <ada@users.noreply.atelier>")


def test_a_service_that_does_not_answer_leaves_git_to_ask_and_says_why(tmp_path):
    env = _session(tmp_path, Services(credentials=CredentialsService(
        url="http://127.0.0.1:9/services/credentials", git_hosts=["git.example.org"])))
    r = _fill(env, "git.example.org")
    assert r.returncode != 0 and "password=" not in r.stdout
    assert "atelier: the hub's credentials service did not answer" in r.stderr, r.stderr


def test_tokens_rest_in_one_private_file_per_user_and_go_with_the_user(tmp_path):
    store = Store(tmp_path / "credentials")
    store.write("ada", {"git": {"git.example.org": {"username": "a", "token": "t", "updated": "x"}}})
    path = tmp_path / "credentials" / "ada.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(ValueError, match="not a user name"):
        store.path("../ada")
    store.forget("ada")
    assert not path.exists() and store.read("ada") == {}


def test_the_hosts_an_admin_names_in_the_state_folder_are_kept_and_a_bad_one_names_the_field(tmp_path):
    class Site:
        root = tmp_path
        url = "http://127.0.0.1:8000"

        def path(self, name):
            return tmp_path / name

    assert CREDENTIALS.endpoints(Site()) == {}  # no file: no host, nothing runs
    (tmp_path / "deployment.json").write_text(json.dumps(
        {"services": {"credentials": {"git_hosts": ["GitHub.com", "git.example.org:8443"]}}}))
    made = CREDENTIALS.endpoints(Site())["credentials"]
    assert made.git_hosts == ["github.com", "git.example.org:8443"]
    assert made.url == "http://127.0.0.1:8000/services/credentials"
    (tmp_path / "deployment.json").write_text(json.dumps(
        {"services": {"credentials": {"git_hosts": ["https://github.com/org"]}}}))
    with pytest.raises(SettingsError, match=r"deployment.json: services.credentials.git_hosts: 'https://github.com/"
                                            r"org' is not a host name: write the host alone"):
        CREDENTIALS.endpoints(Site())


def test_the_embedded_stack_keeps_the_admin_s_git_settings_and_names_a_bad_one(tmp_path):
    from atelier_hub.embedded.stack import EmbeddedStack

    stack = EmbeddedStack(state=str(tmp_path), port=8000, profiles_dir="p", services=[])
    assert stack.kept_git().email_domain == "users.noreply.atelier"
    (tmp_path / "deployment.json").write_text(json.dumps({"git": {"email_domain": "users.noreply.example.org"}}))
    assert stack.deployment().git.email_domain == "users.noreply.example.org"
    (tmp_path / "deployment.json").write_text(json.dumps({"git": {"email_domain": "not a domain"}}))
    with pytest.raises(SettingsError, match=r"deployment.json: git.email_domain: 'not a domain' is not a domain"):
        stack.kept_git()


def test_the_cli_takes_user_before_or_after_the_action():
    import argparse

    from atelier_hub.credentials_cli import add_parsers

    ap = argparse.ArgumentParser()
    add_parsers(ap.add_subparsers(dest="command"), lambda f: f)
    for argv in (["credentials", "--user", "bob", "set-git", "github.com"],
                 ["credentials", "set-git", "github.com", "--user", "bob"]):
        args = ap.parse_args(argv)
        assert (args.user, args.host, args.func.__name__) == ("bob", "github.com", "cmd_set"), argv
    assert ap.parse_args(["credentials", "set-git", "github.com"]).user is None
