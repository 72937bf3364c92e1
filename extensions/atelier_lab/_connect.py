"""What the Connect panel shows: this session's facts and the commands that reach it.

Rule this module keeps: every fact comes from the session contract the spawner set
(``ATELIER_*`` and JupyterHub's ``JUPYTERHUB_*`` variables), never from a guess; the
commands are written in exactly the forms the ``atelier`` CLI takes (issue 15):
``atelier login --hub URL``, ``atelier vscode [SERVER]``, the ssh alias
``atelier-USER`` (``atelier-USER-SERVER`` for a named server), ``code --remote
ssh-remote+ALIAS HOME``, ``atelier run --profile P -- ...`` where the hub runs jobs
(``ATELIER_JOBS=1``), a personal Ray cluster where the hub runs them
(``ATELIER_RAY_CLUSTERS_URL``) and, in cluster mode, ``atelier kubeconfig [SERVER]``.
:func:`session_facts` is pure; the server extension only feeds it the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._ray import DASHBOARD_PATH

__all__ = ["ssh_alias", "session_facts", "hub_root"]

# Characters ssh would read as something else in a Host alias.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# What a browser's window.location.origin looks like; anything else is ignored.
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def ssh_alias(*, user: str, server: str = "") -> str:
    """The ``Host`` alias ``atelier vscode`` writes into ~/.ssh/config: the rule of
    ``atelier_hub.connect.ssh_alias`` (the hub's CLI, not installed in sessions; a unit
    test checks that the two agree).

    >>> ssh_alias(user="ada"), ssh_alias(user="ada", server="big"), ssh_alias(user="a@b.org")
    ('atelier-ada', 'atelier-ada-big', 'atelier-a-b.org')
    """
    return _UNSAFE.sub("-", f"atelier-{user}" + (f"-{server}" if server else ""))


def hub_root(*, public_hub_url: str = "", origin: str = "") -> str:
    """The URL a user gives ``atelier login --hub``: the hub's public address without
    ``/hub/``. JupyterHub passes it only when its ``public_url`` is configured; otherwise
    the address the browser used to reach this page is the one that works.

    >>> hub_root(public_hub_url="https://hub.example.org/hub/")
    'https://hub.example.org'
    >>> hub_root(origin="http://127.0.0.1:8000")
    'http://127.0.0.1:8000'
    >>> hub_root(origin="javascript:alert(1)")
    ''
    """
    if public_hub_url:
        return re.sub(r"/hub/?$", "", public_hub_url.rstrip("/") + "/").rstrip("/")
    return origin.rstrip("/") if _ORIGIN.match(origin.rstrip("/")) else ""


def session_facts(env: Mapping[str, str], *, home: str, origin: str = "", vscode: bool = False) -> dict:
    """The panel's model: who, where, how big, and the commands, filled in.

    ``vscode``: whether code-server and its proxy are installed in this image.

    >>> env = {"JUPYTERHUB_USER": "ada", "JUPYTERHUB_SERVER_NAME": "", "ATELIER_PROFILE": "cpu-small",
    ...        "ATELIER_CPU_LIMIT": "2", "ATELIER_MEM_LIMIT_DISPLAY": "4G", "ATELIER_GPU_COUNT": "0",
    ...        "JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}
    >>> f = session_facts(env, home="/home/jovyan", origin="http://127.0.0.1:8000", vscode=True)
    >>> [c["command"] for c in f["commands"]][:3]
    ['atelier login --hub http://127.0.0.1:8000', 'atelier vscode', 'code --remote ssh-remote+atelier-ada /home/jovyan']
    >>> f["vscode_url"], f["gpu"]
    ('http://127.0.0.1:8000/user/ada/vscode/', 'none')
    >>> session_facts({**env, "JUPYTERHUB_PUBLIC_URL": "http://ada.localhost:8000/user/ada/",
    ...                "JUPYTERHUB_PUBLIC_HUB_URL": "http://localhost:8000/hub/"}, home="/h", vscode=True)["vscode_url"]
    'http://ada.localhost:8000/user/ada/vscode/'
    """
    user = env.get("ATELIER_USER") or env.get("JUPYTERHUB_USER") or ""
    server = env.get("JUPYTERHUB_SERVER_NAME", "")
    hub = hub_root(public_hub_url=env.get("JUPYTERHUB_PUBLIC_HUB_URL", ""), origin=origin)
    alias = ssh_alias(user=user, server=server)
    cluster = bool(env.get("KUBERNETES_SERVICE_HOST"))
    named = f" {server}" if server else ""
    gpus = int(env.get("ATELIER_GPU_COUNT") or 0)
    gpu_type = env.get("ATELIER_GPU_TYPE", "")

    commands = [
        {"id": "login", "title": "Log in once from your machine (saved, mode 0600)",
         "command": f"atelier login --hub {hub or 'URL'}"},
        {"id": "vscode", "title": "VS Code Remote-SSH: starts the server, installs a key, writes ~/.ssh/config",
         "command": f"atelier vscode{named}"},
        {"id": "code", "title": "Open it again later (what atelier vscode runs)",
         "command": f"code --remote ssh-remote+{alias} {home}"},
        {"id": "ssh", "title": "A shell, ssh -L, sftp or scp (PyCharm, Cursor: the same alias)",
         "command": f"ssh {alias}"},
    ]
    profile = env.get("ATELIER_PROFILE", "")
    if env.get("ATELIER_JOBS") == "1" and profile:
        # Where this hub runs jobs (container sessions): the same profile, without a browser.
        commands.append({"id": "run", "title": "Run a script as a job on this profile (the laptop may close; "
                         "atelier jobs, atelier logs NAME -f)",
                         "command": f"atelier run --profile {profile} -- python train.py"})
    if env.get("ATELIER_RAY_CLUSTERS_URL"):
        # The cluster lives inside this session and stops with it (atelier_lab._ray).
        commands.append({"id": "ray", "title": "A personal Ray cluster inside this session, stopped with it "
                         "(atelier ray status, atelier ray down)",
                         "command": f"atelier ray up{named} --workers 2"})
    if cluster:
        commands.append({"id": "kubeconfig",
                         "title": "Kubernetes extension attach: a kubeconfig for your own pods",
                         "command": f"atelier kubeconfig{named}"})
    # This server's own address: its own origin where the hub gives each user one
    # (JUPYTERHUB_PUBLIC_URL, e.g. http://ada.localhost:8000/user/ada/), else a path on the hub.
    server_url = env.get("JUPYTERHUB_PUBLIC_URL") or f"{hub}{env.get('JUPYTERHUB_SERVICE_PREFIX', '/')}"
    return {
        "user": user,
        "server": server,
        "hub_url": hub,
        "alias": alias,
        "home": home,
        "mode": "cluster" if cluster else "embedded",
        "profile": profile,
        "profile_display_name": env.get("ATELIER_PROFILE_DISPLAY_NAME", ""),
        "cpu": env.get("ATELIER_CPU_LIMIT", ""),
        "memory": env.get("ATELIER_MEM_LIMIT_DISPLAY") or env.get("ATELIER_MEM_LIMIT", ""),
        "gpu": (f"{gpus} x {gpu_type}" if gpu_type else str(gpus)) if gpus else "none",
        "vscode_url": f"{server_url}vscode/" if vscode else "",
        # this server's proxy of its personal Ray cluster's dashboard (atelier_lab._ray_dashboard)
        "ray_dashboard_url": f"{server_url}{DASHBOARD_PATH}" if env.get("ATELIER_RAY_CLUSTERS_URL") else "",
        "commands": commands,
    }
