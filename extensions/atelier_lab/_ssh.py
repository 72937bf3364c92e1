"""Remote-SSH into the session through the hub: an sshd behind the server's own proxy.

Rule this module keeps: the session's sshd takes keys only, never passwords, listens on
127.0.0.1 alone, and is reached only through ``/user/NAME[/SERVER]/sshd/`` (a raw
websocket that jupyter-server-proxy bridges to it), so the hub's token check is the
front door. Its host key lives on the persistent home (``~/.ssh``), so clients see the
same key across restarts and profile changes. An SSH login gets the environment the
kernel gets (the session contract, the image's Python first on PATH), minus the
server's own JupyterHub variables: it is forwarded from this server's environment,
never written a second time.

Two entry points: ``setup_sshd`` for jupyter-server-proxy (``jupyter_serverproxy_servers``)
and a server extension (``atelier_lab._ssh``) whose ``/atelier/ssh`` endpoint, owner-only
like every route of the server, installs a public key and tells the host key.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["HOST_KEY_NAME", "add_authorized_key", "ensure_host_key", "login_env", "setup_sshd", "sshd_config",
           "sshd_quote"]

HOST_KEY_NAME = "atelier_host_ed25519"
# Variables of the server process an SSH login must not inherit: the hub's ones (the
# server's own identity and token) and what sshd or the login shell sets itself.
_NOT_FORWARDED_PREFIXES = ("JUPYTERHUB_", "JPY_")
_NOT_FORWARDED = {"HOME", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", "_", "TERM", "USER", "LOGNAME", "SHELL",
                  "MAIL", "SSH_AUTH_SOCK", "ATELIER_SESSION_FILES"}
_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa|sk-ssh-ed25519@openssh\.com)"
                         r" [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$")


def login_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment an SSH login gets: the server's, minus what is the server's own (pure).

    ``ATELIER_LOGIN_PATH`` keeps the server's PATH for login shells, whose /etc/profile
    resets PATH (images/base/atelier-login.sh puts it back).

    >>> env = login_env({"PATH": "/opt/atelier/venv/bin:/usr/bin", "MLFLOW_TRACKING_URI": "http://x",
    ...                  "JUPYTERHUB_API_TOKEN": "t", "HOME": "/home/jovyan"})
    >>> sorted(env), env["ATELIER_LOGIN_PATH"]
    (['ATELIER_LOGIN_PATH', 'MLFLOW_TRACKING_URI', 'PATH'], '/opt/atelier/venv/bin:/usr/bin')
    """
    env = {k: v for k, v in environ.items()
           if k not in _NOT_FORWARDED and not k.startswith(_NOT_FORWARDED_PREFIXES)
           and "\n" not in v and "\r" not in v and "\0" not in v}
    if "PATH" in env:
        env["ATELIER_LOGIN_PATH"] = env["PATH"]
    return env


def sshd_quote(text: str) -> str:
    """One word of an sshd_config line, as sshd's own splitter reads it back (pure):
    double quotes around it, backslash before ``"`` and ``\\``.
    ref: openssh-portable misc.c argv_split (the parser of config lines)

    >>> print(sshd_quote('RAY={"CPU": 2}'))
    "RAY={\\"CPU\\": 2}"
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sshd_config(*, port: int, host_key: str, authorized_keys: str, env: dict[str, str],
                log_level: str = "INFO") -> str:
    """The whole sshd_config of a session's sshd (pure): keys only, loopback only.

    >>> text = sshd_config(port=2222, host_key="/h/.ssh/k", authorized_keys="/h/.ssh/authorized_keys", env={})
    >>> "PasswordAuthentication no" in text and "ListenAddress 127.0.0.1:2222" in text
    True
    """
    lines = [
        f"ListenAddress 127.0.0.1:{port}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized_keys}",
        # Key login only: no password, no keyboard-interactive, no host-based trust.
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitEmptyPasswords no",
        "UsePAM no",
        # The session's processes are its user's; sshd runs as that user (not root).
        "PermitRootLogin no",
        "StrictModes yes",
        # Last-login data lives in /var/log/lastlog, which a container does not keep.
        "PrintLastLog no",
        "PrintMotd no",
        # ssh -L (VS Code's server, notebooks' ports) and sftp/scp.
        "AllowTcpForwarding local",
        "GatewayPorts no",
        "AllowStreamLocalForwarding no",
        "PermitTunnel no",
        # Not root: no pid file in /run (and -D keeps sshd under the proxy's supervisor).
        "PidFile none",
        "X11Forwarding no",
        "Subsystem sftp internal-sftp",
        # A dead client (laptop asleep) is dropped in about 3 minutes, not hours.
        "ClientAliveInterval 60",
        "ClientAliveCountMax 3",
        f"LogLevel {log_level}",
    ]
    if env:
        # One SetEnv line (sshd keeps only the first); it overrides sshd's default PATH.
        lines.append("SetEnv " + " ".join(sshd_quote(f"{k}={v}") for k, v in sorted(env.items())))
    return "\n".join(lines) + "\n"


def _ssh_dir() -> Path:
    d = Path.home() / ".ssh"
    d.mkdir(mode=0o700, exist_ok=True)
    d.chmod(0o700)  # sshd's StrictModes refuses keys in a folder others may write
    return d


def ensure_host_key() -> Path:
    """The session's host key on the persistent home, made once (ed25519, no passphrase).
    A lock keeps the sshd launcher and the endpoint from making two."""
    d = _ssh_dir()
    key = d / HOST_KEY_NAME
    with open(d / f".{HOST_KEY_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (key.exists() and key.with_suffix(".pub").exists()):
            key.unlink(missing_ok=True)
            key.with_suffix(".pub").unlink(missing_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "atelier-session-host",
                            "-f", str(key)], check=True, stdin=subprocess.DEVNULL)
    return key


def add_authorized_key(public_key: str) -> bool:
    """Append one public key to ``~/.ssh/authorized_keys`` unless it is there; True if added.
    Raises ValueError naming the field for anything that is not one OpenSSH public key line."""
    line = public_key.strip()
    if not _PUBLIC_KEY.match(line):
        raise ValueError("public_key: expected one OpenSSH public key line such as "
                         "'ssh-ed25519 AAAA... comment' (the contents of ~/.ssh/atelier_ed25519.pub)")
    path = _ssh_dir() / "authorized_keys"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        have = {" ".join(k.split()[:2]) for k in f.read().splitlines() if k.strip()}
        added = " ".join(line.split()[:2]) not in have
        if added:
            f.write(line + "\n")
    path.chmod(0o600)
    return added


def _sshd_command(port: int) -> list[str]:
    host_key = ensure_host_key()
    # The config (with the session's settings in SetEnv) stays off the command line, which
    # others could read in a process listing, and out of the server's log.
    run = Path(tempfile.mkdtemp(prefix="atelier-sshd-"))
    conf = run / "sshd_config"
    conf.touch(mode=0o600)
    conf.write_text(sshd_config(port=port, host_key=str(host_key),
                                authorized_keys=str(Path.home() / ".ssh" / "authorized_keys"),
                                env=login_env(dict(os.environ)),
                                log_level=os.environ.get("ATELIER_SSHD_LOG_LEVEL", "INFO")))
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    # -D: stay in the foreground for the proxy's supervisor; -e: log to the server's log.
    return [sshd, "-D", "-e", "-f", str(conf)]


def setup_sshd() -> dict:
    """jupyter-server-proxy's entry for ``/sshd/``: a raw TCP bridge, started on first use."""
    return {
        "command": _sshd_command,
        "raw_socket_proxy": True,
        "timeout": 60,
        "launcher_entry": {"enabled": False},
    }


# -- the server extension: /atelier/ssh --------------------------------------------------


def _jupyter_server_extension_points():
    return [{"module": "atelier_lab._ssh"}]


def _load_jupyter_server_extension(server_app) -> None:
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join
    from tornado import web

    class SSHKeyHandler(APIHandler):
        """GET: the host key; POST {"public_key": ...}: install it, then the same answer.
        The server lets only its owner's token or login through (JupyterHub's rule)."""

        def _answer(self, **extra) -> None:
            key = ensure_host_key()
            self.finish(json.dumps({"host_key": key.with_suffix(".pub").read_text().strip(),
                                    "user": getpass.getuser(),
                                    "home": str(Path.home()), **extra}))

        @web.authenticated
        def get(self):
            self._answer()

        @web.authenticated
        def post(self):
            try:
                body = json.loads(self.request.body or b"{}")
                added = add_authorized_key(str(body.get("public_key", "")))
            except (ValueError, AttributeError) as exc:
                raise web.HTTPError(400, str(exc)) from None
            self._answer(added=added)

    base = server_app.web_app.settings["base_url"]
    server_app.web_app.add_handlers(".*$", [(url_path_join(base, "atelier/ssh"), SSHKeyHandler)])
