"""A user's own packages and git identity in real container sessions (issue 32).

Through the real hub, proxy and Docker engine, with the real package index reached
through the session's egress proxy: ``%pip install``, ``pip install``, ``python -m pip
install`` and ``uv pip install`` of small pure-Python packages the image lacks go to
the user layer on the home (docs/user-guide.md, "Your own packages": ``~/.atelier/layers/base-py3.11``)
and are still importable after a restart on another profile. A package the image has, at
another version, is refused by plain pip (never shadowed by accident), installed with
``-I`` on purpose, and then reported once in the next session's log; a repro run there
records the layer's packages marked as the user's. ``atelier-env reset``
moves the layer aside, kept, and the next kernel has the image's packages only. ``git
commit`` in a fresh session commits as the hub user; a second user as themselves; a
user's own ``~/.gitconfig`` wins.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest
import requests
from atelier_hub.embedded.container_spawner import stack_id
from atelier_hub.embedded.engine import engine
from kernel import run_code, server_address

pytestmark = pytest.mark.integration

LAYER = ".atelier/layers/base-py3.11"  # under the home: docs/user-guide.md's promise
SITE = f"{LAYER}/lib/python3.11/site-packages"
# Pure-Python packages on PyPI that the image does not have (images/base/requirements.lock).
BY = {"%pip": "tabulate", "pip": "inflection", "python -m pip": "humanize", "uv pip": "termcolor"}
IMAGE_IDNA = "3.20"  # images/base/requirements.lock


def _json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _sh(*cmds: str) -> str:
    """Kernel code that runs shell commands as a terminal would (the server's environment)
    and prints each one's status and output as JSON."""
    return ("import json, subprocess\n"
            f"r = [subprocess.run(c, shell=True, capture_output=True, text=True) for c in {list(cmds)!r}]\n"
            "print(json.dumps({'rc': [x.returncode for x in r], 'out': [x.stdout + x.stderr for x in r]}))\n")


def _container_log(stack, user: str, server: str) -> str:
    env = {**os.environ, "DOCKER_HOST": engine().host}
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=dev.atelier.stack={stack_id(stack.state)}",
                          "--filter", f"label=dev.atelier.user={user}", "--filter", f"label=dev.atelier.server={server}"],
                         capture_output=True, text=True, check=True, env=env, timeout=60).stdout.split()
    assert len(ids) == 1, ids
    r = subprocess.run(["docker", "logs", ids[0]], capture_output=True, text=True, env=env, timeout=60)
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def installed(containers, alice):
    """alice installs one package each way in a cpu-small session, then stops it."""
    s = containers.spawn("alice", "cpu-small", server="layer")
    try:
        url, token = s["url"], alice["token"]
        pip_out = run_code(containers.url, url, token, f"%pip install -q {BY['%pip']}", timeout=300)
        shell = _json(run_code(containers.url, url, token, _sh(
            f"pip install -q {BY['pip']}",
            f"python -m pip install -q {BY['python -m pip']}",
            f"uv pip install -q {BY['uv pip']}",
            # the image's idna at another version: refused by default, installed on purpose
            "pip install -q idna==3.6",
            "pip install -q -I idna==3.6",
            # a venv of her own, registered as a kernel the way docs/user-guide.md says
            "uv venv -q ~/envs/mine && uv pip install -q --python ~/envs/mine/bin/python ipykernel "
            "&& ~/envs/mine/bin/python -m ipykernel install --user --name mine --display-name 'My env'",
        ), timeout=600))
    finally:
        containers.stop_server("alice", "layer")
    return {"pip_out": pip_out, **shell}


def test_every_way_of_installing_goes_to_the_layer_on_the_home(containers, installed):
    assert installed["rc"][:3] == [0, 0, 0], installed
    home = containers.state / "homes" / "alice"
    for name in BY.values():
        assert (home / SITE / name).is_dir() or (home / SITE / f"{name}.py").is_file(), (name, installed)
    # pip refuses to shadow an image package by accident; -I does it on purpose.
    assert installed["rc"][3] != 0 and "idna" in installed["out"][3], installed
    assert installed["rc"][4] == 0, installed
    assert (home / SITE / "idna-3.6.dist-info").is_dir()


def test_the_packages_are_there_after_a_restart_on_another_profile_and_shadowing_is_reported_once(
        containers, alice, installed):
    s = containers.spawn("alice", "cpu-large", server="layer2")
    try:
        code = ("import importlib, json, os, idna, pandas\n"
                f"mods = {{n: importlib.import_module(n).__file__ for n in {list(BY.values())!r}}}\n"
                "print(json.dumps({'mods': mods, 'idna': idna.__version__, 'profile': os.environ['ATELIER_PROFILE'],"
                " 'pandas': pandas.__file__}))")
        out = _json(run_code(containers.url, s["url"], alice["token"], code, timeout=300))
        # repro records the run's packages, those of the user's layer marked as such.
        recorded = _json(run_code(containers.url, s["url"], alice["token"],
                                  "import json, repro, subprocess\n"
                                  "with repro.start_run(run_name='layer') as run:\n    pass\n"
                                  "r = subprocess.run(['repro', 'show', run.info.run_id, '--file', 'packages.txt'],"
                                  " capture_output=True, text=True)\n"
                                  "print(json.dumps({'rc': r.returncode, 'text': r.stdout + r.stderr, "
                                  "'tag': run.data.tags.get('repro.packages_user') if run.data else None}))",
                                  timeout=300))
        log = _container_log(containers, "alice", "layer2")
        # Her own venv's kernel is in the launcher after the restart, and runs in that venv.
        specs = requests.get(f"{server_address(containers.url, s['url'])}api/kernelspecs",
                             headers={"Authorization": f"token {alice['token']}"}, timeout=60).json()
        prefix = run_code(containers.url, s["url"], alice["token"], "import sys; print(sys.prefix)", kernel="mine",
                          timeout=300).strip()
    finally:
        containers.stop_server("alice", "layer2")
    assert specs["kernelspecs"]["mine"]["spec"]["display_name"] == "My env", sorted(specs["kernelspecs"])
    assert prefix == "/home/jovyan/envs/mine"
    assert out["profile"] == "cpu-large"
    for name, path in out["mods"].items():
        assert path.startswith(f"/home/jovyan/{SITE}/"), (name, path)
    assert out["idna"] == "3.6", out
    assert out["pandas"].startswith("/opt/atelier/venv/"), out  # the image's own, untouched
    packages = dict(line.split("==", 1) for line in recorded["text"].splitlines() if "==" in line)
    assert recorded["rc"] == 0, recorded
    for name in BY.values():
        assert packages[name].endswith("  # user layer"), (name, recorded["text"][:2000])
    assert packages["idna"] == "3.6  # user layer"
    assert not packages["pandas"].endswith("# user layer") and not packages["mlflow-skinny"].endswith("# user layer")
    lines = [line for line in log.splitlines() if "replaces the image's" in line]
    assert len(lines) == 1, log[-3000:]
    assert f"idna 3.6 replaces the image's idna {IMAGE_IDNA}" in lines[0], lines


def test_a_job_imports_the_packages_of_the_layer(containers, alice, installed):
    r = containers.atelier(alice["token"], "run", "--profile", "cpu-small", "--name", "layer-job", "--",
                           "python", "-c", f"import {', '.join(BY.values())}; print('from', tabulate.__file__)")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"from /home/jovyan/{SITE}/tabulate" in r.stdout, r.stdout


def test_atelier_env_reset_moves_the_layer_aside_and_keeps_it(containers, alice, installed):
    s = containers.spawn("alice", "cpu-small", server="layer3")
    try:
        shell = _json(run_code(containers.url, s["url"], alice["token"],
                               _sh("atelier-env status", "atelier-env reset", "atelier-env status"), timeout=300))
        after = _json(run_code(containers.url, s["url"], alice["token"],
                               "import importlib.util, json, idna\n"
                               "print(json.dumps({'idna': idna.__version__, 'tabulate': "
                               "importlib.util.find_spec('tabulate') is not None}))", timeout=300))
    finally:
        containers.stop_server("alice", "layer3")
    assert shell["rc"] == [0, 0, 0], shell
    assert "idna 3.6  (replaces the image's 3.20)" in shell["out"][0] and "tabulate" in shell["out"][0], shell
    assert after == {"idna": IMAGE_IDNA, "tabulate": False}
    layers = containers.state / "homes" / "alice" / ".atelier" / "layers"
    aside = sorted(layers.glob("base-py3.11.reset-*"))
    assert len(aside) == 1, sorted(layers.iterdir())
    assert (aside[0] / "lib/python3.11/site-packages/tabulate").is_dir()
    assert "moved aside by `atelier-env reset`" in shell["out"][2], shell


GIT = ("cd ~ && rm -rf gitprobe && git init -q gitprobe && cd gitprobe && echo hi > a.txt && git add a.txt "
       "&& git commit -q -m first && git log -1 --format='%an <%ae>|%cn'")


GIT_HOST = "git.example.org"  # what the shared stacks name in services.credentials.git_hosts (tests/conftest.py)
# git asks its credential helpers for this URL's user name and password, as before a clone.
FILL = f"printf 'protocol=https\\nhost={GIT_HOST}\\npath=team/repo.git\\n\\n' | GIT_TERMINAL_PROMPT=0 git credential fill"
ALICE_TOKEN = "glpat-alice-only-0123456789"
# A session's own request to the credentials service, naming alice as if it could choose.
ASK_FOR_ALICES = f"""
import json, os, urllib.error, urllib.request
req = urllib.request.Request(os.environ["ATELIER_CREDENTIALS_URL"] + "/api/git/fill?user=alice", method="POST",
                             data=json.dumps({{"protocol": "https", "host": "{GIT_HOST}"}}).encode(),
                             headers={{"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}})
try:
    print(urllib.request.urlopen(req, timeout=30).read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
"""


def test_git_commit_is_the_hub_user_s_and_git_gets_each_user_s_own_token_from_the_hub(containers, alice):
    """A fresh session commits as its hub user (their own ~/.gitconfig wins), and git gets
    the token its user set in the hub for the deployment's git host; gitcarol, a second
    real user, neither sets, lists nor receives alice's."""
    gc_password = containers.add_user("gitcarol")
    assert gc_password
    gc_token = containers.user_token("gitcarol")
    # alice keeps her token in the hub, from her laptop (read from stdin, as when piped).
    r = containers.atelier(alice["token"], "credentials", "set-git", GIT_HOST, "--username", "alice-on-git",
                           input=ALICE_TOKEN + "\n")
    assert r.returncode == 0 and f"token for {GIT_HOST} is kept by the hub" in r.stdout, r.stdout + r.stderr
    assert ALICE_TOKEN not in r.stdout + r.stderr
    # gitcarol can neither replace nor list alice's.
    r = containers.atelier(gc_token, "credentials", "set-git", GIT_HOST, "--user", "alice", input="carols-token\n")
    assert r.returncode == 2 and "user: only an admin" in r.stderr, r.stdout + r.stderr
    r = containers.atelier(gc_token, "credentials", "--user", "alice")
    assert r.returncode == 2 and "user: only an admin" in r.stderr, r.stdout + r.stderr
    r = containers.atelier(alice["token"], "credentials")
    assert r.returncode == 0 and GIT_HOST in r.stdout and "alice-on-git" in r.stdout, r.stdout + r.stderr
    assert ALICE_TOKEN not in r.stdout
    r = containers.atelier(gc_token, "credentials", "set-git", "github.com", input="x\n")
    assert r.returncode == 2 and "host: github.com is not one of the deployment's git hosts" in r.stderr, r.stderr

    a = containers.spawn("alice", "cpu-small", server="git")
    c = containers.spawn("gitcarol", "cpu-small", server="git")
    try:
        mine = _json(run_code(containers.url, a["url"], alice["token"], _sh(
            GIT, FILL, "env; cat /etc/atelier/session/git/*; grep -rl --exclude-dir=.cache "
            f"{ALICE_TOKEN} ~ /etc/atelier 2>/dev/null; true"), timeout=180))
        theirs = _json(run_code(containers.url, c["url"], gc_token, _sh(
            GIT, FILL,
            # gitcarol's session asks the service itself for alice's, with its own token
            "python -c " + shlex.quote(ASK_FOR_ALICES)), timeout=180))
        own = _json(run_code(containers.url, c["url"], gc_token, _sh(
            "git config --global user.name 'Carol Own' && git config --global user.email carol@example.org", GIT),
            timeout=180))
    finally:
        containers.stop_server("alice", "git")
        containers.stop_server("gitcarol", "git")
    assert mine["rc"][:2] == [0, 0] and mine["out"][0].strip() == "alice <alice@users.noreply.atelier>|alice", mine
    assert f"username=alice-on-git\npassword={ALICE_TOKEN}\n" in mine["out"][1], mine
    # The token rests in the hub only: not in the session's environment, config files or home.
    assert ALICE_TOKEN not in mine["out"][2], mine["out"][2][-2000:]
    assert theirs["rc"][0] == 0 and theirs["out"][0].strip() == "gitcarol <gitcarol@users.noreply.atelier>|gitcarol", theirs
    assert theirs["rc"][1] != 0 and f"you have no token for {GIT_HOST}" in theirs["out"][1], theirs
    assert ALICE_TOKEN not in theirs["out"][1] + theirs["out"][2], theirs
    assert "you have no token" in theirs["out"][2], theirs
    assert own["rc"] == [0, 0] and own["out"][1].strip() == "Carol Own <carol@example.org>|Carol Own", own
    assert (containers.state / "homes" / "gitcarol" / ".gitconfig").is_file()
    kept = containers.state / "credentials" / "alice.json"
    assert oct(kept.stat().st_mode & 0o777) == "0o600" and ALICE_TOKEN in kept.read_text()
