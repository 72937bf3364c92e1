"""VS Code's Remote-SSH way, for real: OpenSSH's own client, through the real hub, into a
spawned container session, with only what `atelier vscode --ssh-config F --no-open` wrote.

The user (sshu) has a stopped server; `atelier vscode` starts it, makes the key, installs
it through the hub and writes the Host block. Then ssh, sftp, scp and `ssh -L` run
through `atelier ssh-proxy`; a wrong token, no token, another real user's token and a
password login are refused; after a restart with another profile the pinned host key
still matches (StrictHostKeyChecking yes).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from atelier_hub.connect import ssh_alias
from kernel import run_code
from stack import VENV_BIN, free_port
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.integration

USER, OTHER = "sshu", "sshother"
ALIAS = ssh_alias(user=USER)
ENV_PROBE = """
import json, os, sys
import mlflow
print(json.dumps({
    "home": os.path.expanduser("~"), "cwd": os.getcwd(), "python": sys.executable,
    "path0": os.environ["PATH"].split(":")[0],
    "tracking_uri": mlflow.get_tracking_uri(),
    "env": {k: v for k, v in os.environ.items()
            if k.startswith(("MLFLOW_", "AWS_", "ATELIER_PROFILE")) or k in ("SPARK_CONF_DIR", "PYTHONUSERBASE")},
    "pid1": open("/proc/1/cmdline").read().replace("\\0", " "),
}))
"""


@pytest.fixture(scope="module")
def hub(containers):
    """The shared stack (tests/conftest.py), in container mode, with this file's two users."""
    for name in (USER, OTHER):
        containers.add_user(name)
    yield containers
    for name in (USER, OTHER):
        try:
            containers.stop_server(name)
        except Exception:  # noqa: BLE001 (best effort: the shared stack's stop ends them anyway)
            pass


@pytest.fixture(scope="module")
def laptop(hub, tmp_path_factory):
    """The user's machine: its own HOME (key, known hosts, login) and the env `atelier` reads."""
    home = tmp_path_factory.mktemp("laptop")
    token = hub.user_token(USER)
    env = {**os.environ, "HOME": str(home), "ATELIER_HUB_URL": hub.url, "ATELIER_TOKEN": token,
           "XDG_CONFIG_HOME": str(home / ".config")}
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    return {"home": home, "env": env, "token": token, "config": home / "ssh_config"}


def atelier(laptop, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "atelier"), *args], env=env or laptop["env"], capture_output=True,
                          text=True, timeout=timeout)


def ssh(laptop, *args, env=None, timeout=180, tool="ssh") -> subprocess.CompletedProcess:
    # BatchMode: never a prompt (a password or host-key question fails instead of hanging).
    return subprocess.run([tool, "-F", str(laptop["config"]), "-o", "BatchMode=yes", *args],
                          env=env or laptop["env"], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def session(hub, laptop):
    """`atelier vscode --ssh-config F --no-open` on a stopped server: it starts it."""
    assert not hub.api("GET", f"/users/{USER}").json()["servers"], "the server must start stopped"
    r = atelier(laptop, "vscode", "--profile", "cpu-small", "--ssh-config", str(laptop["config"]), "--no-open")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{hub.hub_log()}"
    assert f"code --remote ssh-remote+{ALIAS} /home/jovyan" in r.stdout
    model = hub.api("GET", f"/users/{USER}").json()["servers"][""]
    assert model["ready"] and model["user_options"] == {"profile": "cpu-small"}
    return model


def test_vscode_writes_key_config_and_pinned_host_key_but_no_token(laptop, session):
    key = laptop["home"] / ".ssh" / "atelier_ed25519"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    text = laptop["config"].read_text()
    assert f"Host {ALIAS}\n" in text and "ssh-proxy" in text and "StrictHostKeyChecking yes" in text
    assert laptop["token"] not in text
    known = (laptop["home"] / ".ssh" / "atelier_known_hosts").read_text()
    assert known.startswith(f"{ALIAS} ssh-ed25519 ")


def test_ssh_lands_in_the_session_with_its_contract(hub, laptop, session):
    r = ssh(laptop, ALIAS, "python -c " + shlex.quote(ENV_PROBE))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    # The container session itself: its PID 1 is the image's start hook, its home the image's.
    assert "atelier-session-start" in got["pid1"] and "jupyterhub-singleuser" in got["pid1"]
    assert got["home"] == got["cwd"] == "/home/jovyan"
    assert got["python"].startswith("/opt/atelier/venv/bin/") and got["path0"] == "/opt/atelier/venv/bin"
    assert got["env"]["ATELIER_PROFILE"] == "cpu-small"
    assert got["tracking_uri"] == got["env"]["MLFLOW_TRACKING_URI"] == f"{hub.url}/services/mlflow"
    # The same settings the kernel of that server gets.
    kernel = json.loads(run_code(hub.url, session["url"], laptop["token"], ENV_PROBE).strip().splitlines()[-1])
    assert got["env"] == kernel["env"]
    assert {"SPARK_CONF_DIR", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_TOKEN"} <= set(got["env"])
    # The user's package layer (docs/user-guide.md, "Your own packages"): pip installs there from SSH too.
    assert got["env"]["PYTHONUSERBASE"] == "/home/jovyan/.atelier/layers/base-py3.11"
    # A login shell (VS Code's terminal) too, after Debian's /etc/profile resets PATH.
    login = ssh(laptop, ALIAS, "bash -lc 'command -v python; echo $ATELIER_PROFILE; python -m site --user-site; "
                               "pip --version | cut -d\" \" -f1'")
    assert login.stdout.split() == ["/opt/atelier/venv/bin/python", "cpu-small",
                                    "/home/jovyan/.atelier/layers/base-py3.11/lib/python3.11/site-packages",
                                    "pip"], login.stdout + login.stderr


def test_sftp_scp_and_local_forwarding(laptop, session, tmp_path):
    marker = uuid.uuid4().hex
    local = tmp_path / "up.txt"
    local.write_text(marker)
    batch = tmp_path / "batch"
    batch.write_text(f"put {local} sftp-up.txt\n")
    r = ssh(laptop, "-b", str(batch), ALIAS, tool="sftp")
    assert r.returncode == 0, r.stderr
    r = ssh(laptop, str(local), f"{ALIAS}:scp-up.txt", tool="scp")
    assert r.returncode == 0, r.stderr
    assert ssh(laptop, ALIAS, "cat sftp-up.txt scp-up.txt").stdout == marker * 2

    # -L: a web server started in the session over ssh, reached through the tunnel.
    inner, outer = free_port(), free_port()
    ssh(laptop, ALIAS, f"mkdir -p www && echo {marker} > www/m.txt")
    server = subprocess.Popen(["ssh", "-F", str(laptop["config"]), "-o", "BatchMode=yes", ALIAS,
                               f"cd www && exec python -m http.server {inner} --bind 127.0.0.1"],
                              env=laptop["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tunnel = subprocess.Popen(["ssh", "-F", str(laptop["config"]), "-o", "BatchMode=yes",
                               "-o", "ExitOnForwardFailure=yes", "-N", "-L", f"127.0.0.1:{outer}:127.0.0.1:{inner}",
                               ALIAS], env=laptop["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and body != marker:
            assert tunnel.poll() is None, tunnel.stderr.read().decode()
            try:
                body = requests.get(f"http://127.0.0.1:{outer}/m.txt", timeout=5).text.strip()
            except requests.RequestException:
                time.sleep(1)
        assert body == marker
        # What the culler can count: one sshd child per open connection in the session.
        ps = ssh(laptop, ALIAS, "ps -eo args").stdout
        assert sum(line.startswith("sshd: jovyan") for line in ps.splitlines()) >= 2, ps
    finally:
        for p in (tunnel, server):
            p.terminate()
            p.wait(30)


def test_wrong_missing_and_other_users_tokens_are_refused(hub, laptop, session):
    env = {**laptop["env"], "ATELIER_TOKEN": "not-a-token-" + uuid.uuid4().hex}
    r = ssh(laptop, ALIAS, "true", env=env)
    assert r.returncode == 255 and "the hub refused the token" in r.stderr, r.stderr

    other = {**laptop["env"], "ATELIER_TOKEN": hub.user_token(OTHER)}
    r = ssh(laptop, ALIAS, "true", env=other)
    assert r.returncode == 255 and f"does not give access to {USER}'s server" in r.stderr, r.stderr

    missing = {k: v for k, v in laptop["env"].items() if k != "ATELIER_TOKEN"}
    r = ssh(laptop, ALIAS, "true", env=missing)
    assert r.returncode == 255 and "no login" in r.stderr, r.stderr
    # ... and the hub itself refuses the websocket without a token (not only our proxy).
    with pytest.raises(InvalidStatus) as exc:
        connect(f"{hub.user_url(USER).replace('http://', 'ws://')}sshd/", proxy=None, open_timeout=60).close()
    assert exc.value.response.status_code in (302, 401, 403)

    # Another user cannot install a key in this session either.
    r = requests.post(f"{hub.user_url(USER)}atelier/ssh", json={"public_key": "ssh-ed25519 AAAA x"},
                      headers={"Authorization": f"token {other['ATELIER_TOKEN']}"}, timeout=60,
                      allow_redirects=False)
    assert r.status_code == 403


def test_password_login_is_refused(laptop, session):
    r = ssh(laptop, "-v", "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password,keyboard-interactive", ALIAS, "true")
    assert r.returncode == 255
    # The session's sshd offers nothing but keys.
    assert "Authentications that can continue: publickey\n" in r.stderr, r.stderr
    assert "Permission denied (publickey)" in r.stderr


def test_a_saved_login_is_what_an_editors_ssh_uses(hub, laptop, session):
    """VS Code runs ssh without ATELIER_*: the ProxyCommand then reads `atelier login`'s file."""
    bare = {k: v for k, v in laptop["env"].items() if k not in ("ATELIER_TOKEN", "ATELIER_HUB_URL")}
    r = subprocess.run([str(VENV_BIN / "atelier"), "login", "--hub", hub.url, "--token-stdin"],
                       input=laptop["token"] + "\n", env=bare, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"as {USER}" in r.stdout, r.stderr
    saved = laptop["home"] / ".config" / "atelier" / "login.json"
    assert (saved.stat().st_mode & 0o777) == 0o600
    assert laptop["token"] not in r.stdout + r.stderr
    r = ssh(laptop, ALIAS, "echo $ATELIER_PROFILE", env=bare)
    assert r.returncode == 0 and r.stdout.strip() == "cpu-small", r.stderr


def test_a_named_server_gets_its_own_alias_beside_the_first(hub, laptop, session):
    named = ssh_alias(user=USER, server="two")
    r = atelier(laptop, "vscode", "two", "--profile", "cpu-large", "--ssh-config", str(laptop["config"]),
                "--no-open")
    try:
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        assert f"code --remote ssh-remote+{named} /home/jovyan" in r.stdout
        text = laptop["config"].read_text()
        assert f"Host {named}\n" in text and f"Host {ALIAS}\n" in text
        got = [ssh(laptop, alias, "echo $ATELIER_PROFILE").stdout.strip() for alias in (named, ALIAS)]
        assert got == ["cpu-large", "cpu-small"]
    finally:
        hub.stop_server(USER, "two")


def test_host_key_is_unchanged_after_a_restart_with_another_profile(hub, laptop, session):
    known = laptop["home"] / ".ssh" / "atelier_known_hosts"
    before = known.read_text()
    hub.stop_server(USER)
    r = atelier(laptop, "vscode", "--profile", "cpu-large", "--ssh-config", str(laptop["config"]), "--no-open")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert known.read_text() == before
    # ssh with the key pinned before the restart: a changed key would be refused.
    r = ssh(laptop, ALIAS, "echo $ATELIER_PROFILE")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "cpu-large"


def test_bad_input_is_named():
    r = subprocess.run([str(VENV_BIN / "atelier"), "login", "--hub", "hub.example.org", "--token-stdin"],
                       input="x\n", capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HOME": str(Path("/nonexistent"))})
    assert r.returncode == 2 and "--hub hub.example.org: expected the hub's URL" in r.stderr
