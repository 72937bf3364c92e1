"""How a user names a session from their own machine: SSH host aliases and the commands.

Rule this module keeps: one place says what a session's SSH alias is and which commands
reach it (``atelier vscode``, ``atelier kubeconfig``, ``code --remote ...``), so the CLI
that writes ``~/.ssh/config`` and the Connect panel that shows the steps never disagree.
Pure functions only; nothing here reads files or the network.
"""

from __future__ import annotations

import re
import shlex

from .image_paths import HOME as SESSION_HOME

__all__ = ["code_command", "k8s_code_command", "kubeconfig_command", "ray_up_command", "ssh_alias", "vscode_command"]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def ssh_alias(*, user: str, server: str = "") -> str:
    """The SSH host alias of a user's server: ``atelier-USER``, ``atelier-USER-SERVER`` for
    a named one. Characters ssh would read as something else (``@``, spaces, pattern
    characters) become ``-``.

    >>> ssh_alias(user="ada"), ssh_alias(user="ada", server="gpu"), ssh_alias(user="a@b.org")
    ('atelier-ada', 'atelier-ada-gpu', 'atelier-a-b.org')
    """
    name = f"atelier-{user}" + (f"-{server}" if server else "")
    return _UNSAFE.sub("-", name)


def vscode_command(*, server: str = "", hub_url: str | None = None, profile: str | None = None) -> str:
    """The one command that sets up Remote-SSH for a server (starts it when stopped).

    >>> vscode_command(server="gpu", hub_url="https://hub.example.org", profile="gpu-1")
    'atelier vscode gpu --hub https://hub.example.org --profile gpu-1'
    """
    words = ["atelier", "vscode"] + ([server] if server else [])
    if hub_url:
        words += ["--hub", hub_url]
    if profile:
        words += ["--profile", profile]
    return shlex.join(words)


def code_command(*, alias: str, home: str = SESSION_HOME) -> str:
    """VS Code opening the session's home over Remote-SSH.

    >>> code_command(alias="atelier-ada")
    'code --remote ssh-remote+atelier-ada /home/jovyan'
    """
    return shlex.join(["code", "--remote", f"ssh-remote+{alias}", home])


def kubeconfig_command(*, server: str = "", hub_url: str | None = None) -> str:
    """The command that writes a kubeconfig reaching only this user's pods (cluster mode).

    >>> kubeconfig_command(server="gpu")
    'atelier kubeconfig gpu'
    """
    words = ["atelier", "kubeconfig"] + ([server] if server else [])
    if hub_url:
        words += ["--hub", hub_url]
    return shlex.join(words)


def ray_up_command(*, server: str = "", workers: int = 2) -> str:
    """The command that starts a personal Ray cluster inside a session (``atelier ray up``).

    >>> ray_up_command(server="big")
    'atelier ray up big --workers 2'
    """
    return shlex.join(["atelier", "ray", "up"] + ([server] if server else []) + ["--workers", str(workers)])


def k8s_code_command(*, context: str, namespace: str, pod: str, container: str = "notebook",
                     home: str = SESSION_HOME) -> str:
    """VS Code attached to the session's container through the Dev Containers extension
    (the window its "Attach Visual Studio Code" opens). ref: the remote authority
    ``k8s-container+...`` as reported in vscode-kubernetes-tools issue 1207

    >>> print(k8s_code_command(context="atelier-ada", namespace="ns", pod="jupyter-ada"))
    code --folder-uri vscode-remote://k8s-container+context=atelier-ada+podname=jupyter-ada+namespace=ns+name=notebook/home/jovyan
    """
    uri = f"vscode-remote://k8s-container+context={context}+podname={pod}+namespace={namespace}+name={container}{home}"
    return shlex.join(["code", "--folder-uri", uri])
