"""The ``atelier`` commands a user runs on their own machine: ``login``, ``vscode``,
``ssh-proxy``, ``kubeconfig``.

Rule this module keeps: the user's token travels only in an ``Authorization`` header to
the hub, and rests only in the login file (mode 0600) or the caller's environment
(``ATELIER_HUB_URL`` + ``ATELIER_TOKEN``); it is never written into ``~/.ssh/config``,
a command line or a log. The SSH host key comes from the session over that
authenticated channel and is pinned (``StrictHostKeyChecking yes``), never trusted on
first use. Files this writes (the SSH config, known hosts, the key) keep every other
line the user had.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

from .connect import code_command, k8s_code_command, ssh_alias
from .image_paths import HOME as SESSION_HOME
from .origins import is_localhost_name
from .private_files import write_private

__all__ = ["Login", "host_block", "login_path", "upsert_block", "upsert_known_host"]

KEY_NAME = "atelier_ed25519"
KNOWN_HOSTS_NAME = "atelier_known_hosts"


class RemoteError(Exception):
    """A problem the user can fix; the message says how."""


class HubUnreachable(RemoteError):
    """No answer from the hub's address at all (down, restarting, or a wrong URL)."""


def service_answer(r, *, service: str, what: str) -> dict:
    """The JSON body of a hub service's answer ``r``; a refusal (4xx, 5xx) becomes a
    RemoteError with the service's own message (which names the field and the fix), or
    one naming ``service``, the status and ``what`` was asked for."""
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code >= 400:
        raise RemoteError(str(body.get("message") or f"the {service} answered {r.status_code} for {what}"))
    return body


# -- the login -----------------------------------------------------------------------------


def login_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "atelier" / "login.json"


@dataclass(frozen=True)
class Login:
    hub_url: str
    token: str

    @classmethod
    def resolve(cls, hub_url: str | None = None) -> Login:
        """ATELIER_HUB_URL + ATELIER_TOKEN when set (``--hub`` may name the hub), else the saved login."""
        token = os.environ.get("ATELIER_TOKEN")
        url = hub_url or os.environ.get("ATELIER_HUB_URL")
        if token and url:
            return cls(url.rstrip("/"), token)
        saved = cls.saved()
        if saved and (not url or url.rstrip("/") == saved.hub_url):
            return saved
        where = f" for {url}" if url else ""
        raise RemoteError(f"no login{where}: run `atelier login --hub URL` (paste a token from URL/hub/token), "
                          "or set ATELIER_HUB_URL and ATELIER_TOKEN")

    @classmethod
    def saved(cls) -> Login | None:
        path = login_path()
        try:
            data = json.loads(path.read_text())
            return cls(str(data["hub_url"]).rstrip("/"), str(data["token"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self) -> Path:
        path = login_path()
        # Created 0600 before any byte of the token is written.
        write_private(path, json.dumps({"hub_url": self.hub_url, "token": self.token}))
        return path

    # -- the hub's REST API and the server's routes --

    def request(self, method: str, path: str, **kw):
        import requests

        url = path if urlsplit(path).scheme else self.hub_url + path
        try:
            r = requests.request(method, url, headers={"Authorization": f"token {self.token}"},
                                 timeout=kw.pop("timeout", 60), allow_redirects=False, **kw)
        except requests.RequestException as exc:
            raise HubUnreachable(f"cannot reach the hub at {self.hub_url} ({type(exc).__name__}); "
                                 "check --hub / ATELIER_HUB_URL") from None
        if r.status_code in (401, 403):
            raise RemoteError(f"the hub refused the token ({r.status_code} for {path}): get a new one at "
                              f"{self.hub_url}/hub/token and run `atelier login --hub {self.hub_url}`")
        return r

    def user(self) -> dict:
        r = self.request("GET", "/hub/api/user")
        if r.status_code != 200:
            raise RemoteError(f"the hub answered {r.status_code} for /hub/api/user: {r.text[:200]}")
        return r.json()

    def server_url(self, model: dict) -> str:
        """Where a server (its model from the hub's API) answers: on a hub with per-user
        origins the model's URL is absolute (``http://ada.localhost:8000/user/ada/``),
        else a path on the hub.

        >>> Login("http://localhost:8000", "t").server_url({"url": "http://ada.localhost:8000/user/ada/"})
        'http://ada.localhost:8000/user/ada/'
        >>> Login("https://hub.example.org", "t").server_url({"url": "/user/ada/gpu/"})
        'https://hub.example.org/user/ada/gpu/'
        """
        return urljoin(self.hub_url + "/", model["url"])


def ensure_server(login: Login, user: str, server: str, *, profile: str | None, timeout: float,
                  say=print) -> dict:
    """The server, started with ``profile`` when it is not running; waits until ready."""
    api = f"/hub/api/users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}" if server else "server")
    model = login.user().get("servers", {}).get(server)
    if not (model and (model.get("ready") or model.get("pending"))):
        say(f"Starting {'server ' + repr(server) if server else 'your server'}"
            f"{' with profile ' + profile if profile else ' with the default profile'} ...")
        r = login.request("POST", api, json={"profile": profile} if profile else {})
        if r.status_code not in (201, 202):
            raise RemoteError(f"the hub did not start the server ({r.status_code}): {_message(r)}")
    elif profile and model.get("user_options", {}).get("profile") not in (None, profile):
        say(f"Note: the server already runs profile {model['user_options']['profile']}; "
            "stop it first to change the profile.")
    deadline = time.monotonic() + timeout
    while True:
        model = login.user().get("servers", {}).get(server)
        if model and model.get("ready"):
            return model
        if not model or not model.get("pending"):
            raise RemoteError("the server stopped while starting; see the hub's page for its log")
        if time.monotonic() > deadline:
            raise RemoteError(f"the server was not ready in {timeout:.0f} s; try again or raise --timeout")
        time.sleep(1)


def _message(r) -> str:
    try:
        return str(r.json().get("message") or r.text)[:300]
    except ValueError:
        return r.text[:300]


# -- files in ~/.ssh (pure text transforms, then one writer) -------------------------------


def host_block(*, alias: str, proxy_command: str, identity_file: Path, known_hosts: Path,
               user: str = "jovyan") -> str:
    """The ``Host`` block of one session (pure). Paths are absolute: ssh expands ``~`` from
    the password database, not ``$HOME``.

    >>> print(host_block(alias="atelier-ada", proxy_command="atelier ssh-proxy --hub http://h --user ada",
    ...                  identity_file=Path("/k"), known_hosts=Path("/kh")).splitlines()[1])
    Host atelier-ada
    """
    return "\n".join([
        f"# >>> {alias} (written by atelier vscode) >>>",
        f"Host {alias}",
        f"    User {user}",
        f"    ProxyCommand {proxy_command}",
        f"    IdentityFile {identity_file}",
        "    IdentitiesOnly yes",
        "    PreferredAuthentications publickey",
        f"    UserKnownHostsFile {known_hosts}",
        "    StrictHostKeyChecking yes",
        "    ServerAliveInterval 30",
        f"# <<< {alias} <<<",
        "",
    ])


def upsert_block(text: str, *, alias: str, block: str) -> str:
    """``text`` with the block of ``alias`` replaced, or ``block`` first when there is none:
    ssh takes the first value it reads, so an older ``Host *`` must not win (pure).

    >>> upsert_block("Host *\\n  User me\\n", alias="a", block="# >>> a x\\nHost a\\n# <<< a <<<\\n")
    '# >>> a x\\nHost a\\n# <<< a <<<\\n\\nHost *\\n  User me\\n'
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"# >>> {alias} ")), None)
    if start is not None:
        end = next((i for i in range(start, len(lines)) if lines[i].startswith(f"# <<< {alias} <<<")), None)
        if end is not None:
            return "".join(lines[:start]) + block + "".join(lines[end + 1:])
    return block + ("\n" + text if text else "")


def upsert_known_host(text: str, *, alias: str, host_key: str) -> str:
    """``text`` (a known_hosts file) with ``alias`` pinned to ``host_key`` alone, in the
    place of its old line when it had one (pure).

    >>> upsert_known_host("a ssh-ed25519 OLD\\nb ssh-ed25519 B\\n", alias="a", host_key="ssh-ed25519 NEW c")
    'a ssh-ed25519 NEW\\nb ssh-ed25519 B\\n'
    >>> upsert_known_host("b ssh-ed25519 B\\n", alias="a", host_key="ssh-ed25519 A")
    'b ssh-ed25519 B\\na ssh-ed25519 A\\n'
    """
    pinned = f"{alias} {' '.join(host_key.split()[:2])}"
    lines, placed = [], False
    for line in text.splitlines():
        if line.split(" ", 1)[0] == alias:
            if not placed:
                lines.append(pinned)
                placed = True
        else:
            lines.append(line)
    if not placed:
        lines.append(pinned)
    return "\n".join(lines) + "\n"


def ensure_key(path: Path) -> Path:
    """An ed25519 key pair at ``path`` (made with the machine's ssh-keygen when missing)."""
    if path.exists() and path.with_suffix(".pub").exists():
        return path
    if shutil.which("ssh-keygen") is None:
        raise RemoteError("ssh-keygen is not installed: install OpenSSH's client "
                          "(Debian/Ubuntu: apt-get install openssh-client; macOS and Windows have it)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"atelier@{socket.gethostname()}",
                    "-f", str(path)], check=True, stdin=subprocess.DEVNULL)
    return path


def _atelier_executable() -> str:
    """The ``atelier`` that ssh runs as ProxyCommand: this one, by absolute path, since an
    editor's ssh may not have this virtualenv on PATH."""
    me = Path(sys.argv[0])
    if me.name == "atelier" and me.exists():
        return str(me.absolute())
    return shutil.which("atelier") or "atelier"


# -- atelier login / vscode / ssh-proxy ----------------------------------------------------


def cmd_login(args) -> None:
    import getpass

    url = args.hub.rstrip("/")
    if urlsplit(url).scheme not in ("http", "https"):
        raise RemoteError(f"--hub {args.hub}: expected the hub's URL, such as https://hub.example.org")
    if args.token_stdin:
        token = sys.stdin.readline().strip()
    else:
        print(f"Make a token at {url}/hub/token, then paste it here (input hidden).")
        token = getpass.getpass("Token: ").strip()
    if not token:
        raise RemoteError(f"no token given: make one at {url}/hub/token")
    login = Login(url, token)
    name = login.user()["name"]
    path = login.save()
    print(f"Logged in to {url} as {name}; saved in {path} (mode 0600).")


def cmd_vscode(args) -> None:
    login = Login.resolve(args.hub)
    me = login.user()
    user, server = me["name"], args.server or ""
    server_url = login.server_url(ensure_server(login, user, server, profile=args.profile, timeout=args.timeout))

    ssh_dir = Path.home() / ".ssh"
    key = ensure_key(Path(args.identity_file) if args.identity_file else ssh_dir / KEY_NAME)
    r = login.request("POST", server_url + "atelier/ssh",
                      json={"public_key": key.with_suffix(".pub").read_text().strip()})
    if r.status_code != 200:
        raise RemoteError(f"the session did not take the key ({r.status_code} at {server_url}"
                          f"atelier/ssh): {_message(r)}; is its image current (`make images`)?")
    session = r.json()

    alias = ssh_alias(user=user, server=server)
    known = ssh_dir / KNOWN_HOSTS_NAME
    write_private(known, upsert_known_host(known.read_text() if known.exists() else "",
                                            alias=alias, host_key=session["host_key"]))
    words = [_atelier_executable(), "ssh-proxy", "--hub", login.hub_url, "--user", user]
    if server:
        words += ["--server", server]
    config = Path(args.ssh_config) if args.ssh_config else ssh_dir / "config"
    block = host_block(alias=alias, proxy_command=shlex.join(words), identity_file=key.absolute(),
                       known_hosts=known.absolute(), user=session.get("user", "jovyan"))
    write_private(config, upsert_block(config.read_text() if config.exists() else "", alias=alias, block=block))
    home = session.get("home", SESSION_HOME)
    code = code_command(alias=alias, home=home)
    print(f"SSH host {alias} written to {config} (key {key}, host key pinned in {known}).")
    print(f"  ssh {alias}" + (f"   (with -F {config})" if args.ssh_config else ""))
    if not os.environ.get("ATELIER_TOKEN") and Login.saved() is None:
        print("  Note: ssh reads your token from ATELIER_TOKEN or `atelier login`; run `atelier login` "
              "so that VS Code's ssh finds it.")
    print(f"Open VS Code on it:\n  {code}")
    if args.no_open:
        return
    if shutil.which("code") is None:
        print("(`code` is not on PATH: install VS Code and its Remote - SSH extension, then run the line above.)")
        return
    subprocess.run(shlex.split(code), check=False)


def cmd_ssh_proxy(args) -> None:
    """stdin/stdout <-> the session's sshd, through the hub's proxy (ssh's ProxyCommand)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    login = Login.resolve(args.hub)
    me = login.user()  # a refused token ends here, with its own message
    model = me.get("servers", {}).get(args.server or "") if me["name"] == args.user else None
    if me["name"] != args.user:
        # Only the owner's token opens a session's sshd; the hub would refuse it too.
        sys.exit(f"atelier ssh-proxy: the token (of {me['name']}) does not give access to {args.user}'s server")
    if not (model and model.get("ready")):
        sys.exit("atelier ssh-proxy: the server is not running; start it with `atelier vscode`")
    # The server's own origin (NAME.localhost on an embedded hub), as the hub's API gives it.
    parts = urlsplit(login.server_url(model) + "sshd/")
    url = parts._replace(scheme="wss" if parts.scheme == "https" else "ws").geturl()
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1") or is_localhost_name(parts.hostname)
    try:
        ws = connect(url, additional_headers={"Authorization": f"token {login.token}"},
                     compression=None, max_size=None, open_timeout=90, ping_interval=30, ping_timeout=60,
                     proxy=None if loopback else True)
    except InvalidStatus as exc:
        sys.exit(f"atelier ssh-proxy: the hub answered HTTP {exc.response.status_code} ({url})")
    except OSError as exc:
        sys.exit(f"atelier ssh-proxy: cannot reach {url} ({exc})")

    def upstream() -> None:
        try:
            while data := os.read(0, 65536):
                ws.send(data)
        except Exception:  # the websocket closed under us: the main loop ends too
            pass
        finally:
            ws.close()

    threading.Thread(target=upstream, daemon=True).start()
    out = sys.stdout.buffer
    try:
        for message in ws:
            out.write(message if isinstance(message, bytes) else message.encode())
            out.flush()
    except Exception:  # a connection dropped mid-session: ssh reports it to the user
        pass


# -- atelier kubeconfig --------------------------------------------------------------------


def cmd_kubeconfig(args) -> None:
    """A kubeconfig from the hub (cluster mode) for the user's own pods, and the attach steps."""
    import yaml

    login = Login.resolve(args.hub)
    user, server = login.user()["name"], args.server or ""
    path = f"/hub/api/atelier/users/{quote(user, safe='')}" + (f"/servers/{quote(server, safe='')}" if server else "")
    r = login.request("POST", path + "/kubeconfig", json={"duration": args.duration})
    if r.status_code == 404 and "atelier" not in r.text:
        raise RemoteError(f"{login.hub_url} hands out no kubeconfigs: it is not a cluster-mode hub "
                          "(use `atelier vscode` for Remote-SSH)")
    if r.status_code != 200:
        raise RemoteError(f"the hub gave no kubeconfig ({r.status_code}): {_message(r)}")
    got = r.json()
    config = got["kubeconfig"]
    out = Path(args.output) if args.output else (
        Path.home() / ".kube" / f"{ssh_alias(user=user, server=server)}.yaml")
    write_private(out, yaml.safe_dump(config, sort_keys=False))
    context, pod, ns = config["current-context"], got["pod"], got["namespace"]
    print(f"""Kubeconfig for pod {pod} (namespace {ns}) written to {out}
  It reaches only your own pods: get/watch, exec, port-forward, logs. Token valid until {got['expires']}
  or until the pod stops; run `atelier kubeconfig{' ' + server if server else ''}` again for a new one.

With kubectl (on PATH):
  export KUBECONFIG={out}
  kubectl get pod {pod}
  kubectl exec -it {pod} -- bash -l
  kubectl port-forward pod/{pod} 8501:8501

In VS Code (extensions: Kubernetes, Dev Containers; kubectl on PATH):
  1. Set "vs-kubernetes": {{"vs-kubernetes.kubeconfig": "{out}"}} in settings.json, or start VS Code
     from a shell with KUBECONFIG={out}.
  2. Command Palette -> "Dev Containers: Attach to Running Kubernetes Container..." -> {pod};
     or Kubernetes view -> Workloads -> Pods -> {pod} -> Attach Visual Studio Code.
     (Listing every pod of the namespace is refused by design: open your pod by name.)
  Or at once:
  {k8s_code_command(context=context, namespace=ns, pod=pod, container=got.get('container', 'notebook'))}""")
