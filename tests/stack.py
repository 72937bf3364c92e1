"""Test harness: a real embedded stack started the way a user starts it (`atelier dev`).

Nothing here is a fake: the hub, configurable-http-proxy, versitygw and the MLflow
server are the real programs, on 127.0.0.1 ports chosen free at start.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

# The one port probe and log tail, shared with the services themselves.
from atelier_hub.services._process import free_port, tail  # noqa: F401 (re-exported for the suites)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
OUTPUT = REPO / "test-output"
# The `atelier dev` logs this process has handed out (see _own_log).
_LOGS: set[Path] = set()


def _own_log(name: str) -> Path:
    """A fresh file for one stack's `atelier dev` output. Its own even when both xdist
    workers start a stack of the same name (each test run's "session-plain" stack), or one
    worker starts two (the "vscode" stacks of two files): the session mode is read from
    it, and a test reading it must see only its own stack's lines."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path, n = OUTPUT / f"{name}-{worker}-atelier-dev.log", 1
    while path in _LOGS:
        n += 1
        path = OUTPUT / f"{name}-{worker}-{n}-atelier-dev.log"
    _LOGS.add(path)
    path.write_bytes(b"")  # a previous run's lines are not this stack's
    return path


def raw_request(url: str, method: str, path: str, *, headers: dict[str, str], body: bytes | str | None = None,
                timeout: float = 120) -> tuple[int, str]:
    """One request to the server at ``url`` (``http://HOST:PORT``; any path of it is
    ignored) with ``path`` sent exactly as written: requests and urllib would resolve its
    dot segments and re-quote it, which is what the path-spelling attacks must get past.
    Its status and body."""
    server = urlsplit(url)
    conn = http.client.HTTPConnection(server.hostname, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


class _BrowserCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie set with ``Domain=localhost`` kept, for the host that set it. With
    per-user origins the hub sets its session-id cookie on its domain, ``localhost``, and
    binds its XSRF tokens to it; ``http.cookiejar`` wants a dot inside a cookie's domain
    and drops it (so every form a logged-in test posts would fail its XSRF check).
    Kept as a host-only cookie of the host that set it, it goes back to the hub, which
    is all a test needs (requests copies cookies into a jar of the default policy
    before sending, so the cookie itself has to carry the fix)."""

    def set_ok_domain(self, cookie, request):
        if cookie.domain.lstrip(".") == "localhost":
            host = http.cookiejar.eff_request_host(request)[1]
            if host.split(".")[0] == "localhost":  # the hub's own host set it
                cookie.domain, cookie.domain_specified, cookie.domain_initial_dot = host, False, False
                return True
        return super().set_ok_domain(cookie, request)


def browser_session() -> requests.Session:
    """A requests session that keeps cookies as a browser would, never through a proxy or
    a CA bundle from the environment (loopback only)."""
    s = requests.Session()
    s.trust_env = False
    s.cookies.set_policy(_BrowserCookies())
    return s


class HubClient:
    """What a test does with a running hub: its REST API, its login form, spawns.

    Subclasses set ``url``, ``admin_token`` and ``log`` (the hub's log, quoted on failure).
    """

    url: str
    admin_token: str
    log: Path

    def __init__(self) -> None:
        # Loopback only: never through a proxy or CA bundle from the environment.
        self.http = browser_session()

    def hub_log(self, n: int = 60) -> str:
        return tail(self.log, n)

    def api(self, method: str, path: str, *, token: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"token {token or self.admin_token}"}
        return self.http.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kw)

    def try_login(self, name: str, password: str) -> tuple[requests.Session, requests.Response]:
        """One attempt through the hub's own login form, as a browser makes it: the
        browser-like session and the form's answer (302 when logged in)."""
        s = browser_session()
        page = s.get(f"{self.url}/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        r = s.post(f"{self.url}/hub/login?next=", data={"username": name, "password": password, "_xsrf": xsrf},
                   timeout=120, allow_redirects=False)
        return s, r

    def login(self, name: str, password: str) -> requests.Session:
        """A browser-like session logged in through the hub's own login form."""
        s, r = self.try_login(name, password)
        assert r.status_code == 302, f"login refused: {r.status_code}"
        return s

    def user_url(self, user: str, server: str = "") -> str:
        """Where a user's server answers, as the hub's API says (its own origin where the
        hub gives each user one)."""
        return urljoin(self.url + "/", self.api("GET", f"/users/{user}").json()["servers"][server]["url"])

    def progress_message(self, user: str, server: str, pattern: str, *, timeout: float = 60,
                         seen: list[str] | None = None) -> str:
        """The first message of the server's progress stream (the spawn page's) matching
        ``pattern``; every message read is appended to ``seen`` where one is given."""
        return self.progress_event(user, server, pattern, timeout=timeout, seen=seen)["message"]

    def progress_event(self, user: str, server: str, pattern: str, *, timeout: float = 60,
                       seen: list[str] | None = None) -> dict:
        """The first event of the server's progress stream whose message matches ``pattern``
        (the whole event, as the hub sends it)."""
        url = f"{self.url}/hub/api/users/{user}/servers/{server}/progress"
        seen = [] if seen is None else seen
        deadline = time.monotonic() + timeout
        with self.http.get(url, headers={"Authorization": f"token {self.admin_token}"}, stream=True,
                           timeout=timeout) as r:
            assert r.status_code == 200, r.text
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    message = event.get("message", "")
                    seen.append(message)
                    if re.search(pattern, message):
                        return event
                if time.monotonic() > deadline:
                    break
        raise AssertionError(f"no progress message of {user}/{server} matched {pattern!r}; seen: {seen}")

    def request_spawn(self, user: str, profile: str | None, server: str = "") -> requests.Response:
        """Ask for a server through the REST API, as KubeSpawner takes it: {"profile": NAME}."""
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        return self.api("POST", path, json={} if profile is None else {"profile": profile})

    def spawn(self, user: str, profile: str | None, server: str = "", *, timeout: float = 240) -> dict:
        """Start a server through the REST API and wait until the hub calls it ready."""
        r = self.request_spawn(user, profile, server)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"spawn {user}/{server} answered {r.status_code}: {r.text}\n{self.hub_log()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{user}").json()["servers"].get(server)
            if model and model["ready"]:
                return model
            if not model or (not model["pending"] and not model["ready"]):
                raise RuntimeError(f"spawn {user}/{server} failed:\n{self.hub_log()}")
            time.sleep(0.3)
        raise RuntimeError(f"spawn {user}/{server} not ready in {timeout} s:\n{self.hub_log()}")

    def stop_server(self, user: str, server: str = "", *, remove: bool = True) -> None:
        """Stop a server; a named one is removed too (stopped ones count toward the hub's limit)."""
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        r = self.api("DELETE", path, json={"remove": True} if server and remove else None)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{user}").json()["servers"].get(server)
            if model is None or (not model["pending"] and not model["ready"]):
                return
            time.sleep(0.3)
        raise RuntimeError(f"server {user}/{server} did not stop:\n{self.hub_log()}")


class Stack(HubClient):
    """One `atelier dev` process and the ways a test talks to it."""

    def __init__(self, state: Path, *, port: int | None = None, name: str = "stack",
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        super().__init__()
        # Extra `atelier dev` arguments (e.g. --without trino) and environment (e.g. ATELIER_SESSIONS).
        self.args, self.env = tuple(args), dict(env or {})
        self.state = Path(state)
        self.port = port or free_port()
        # The hub's public address; each user's servers answer at NAME.localhost (user_url).
        self.url = f"http://localhost:{self.port}"
        self.name = name
        self.proc: subprocess.Popen | None = None
        OUTPUT.mkdir(exist_ok=True)
        self.out = _own_log(name)  # appended to by each start of this stack
        self.log = self.state / "logs" / "hub.log"

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 420) -> Stack:
        ready = self.state.parent / f"{self.name}-ready.json"
        ready.unlink(missing_ok=True)
        started_at = self.out.stat().st_size
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "atelier"), "dev", "--port", str(self.port), "--state", str(self.state),
                 "--ready-file", str(ready), "--timeout", str(timeout - 20), *self.args],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"atelier dev exited {self.proc.returncode}:\n{tail(self.out)}\n"
                                   f"hub log:\n{tail(self.state / 'logs/hub.log')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"atelier dev not ready in {timeout} s:\n{tail(self.out)}")
            time.sleep(0.5)
        self.admin_token = (self.state / "admin-token").read_text().strip()
        # The mode this start of `atelier dev` chose and printed (container sessions or
        # single-user processes); an earlier start of this stack may have chosen another.
        this_start = self.out.read_bytes()[started_at:].decode(errors="replace")
        modes = re.findall(r"^Sessions: (\w+) mode", this_start, re.M)
        self.mode = modes[-1] if modes else "unknown"
        return self

    def stop(self, timeout: float = 150) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        self.proc = None

    def atelier(self, token: str, *args: str, timeout: float = 300, home: Path | None = None,
                input: str | None = None) -> subprocess.CompletedProcess:
        """The real `atelier` command, as on a laptop after `atelier login` (no saved login):
        ATELIER_HUB_URL and ATELIER_TOKEN name this hub and ``token``."""
        env = {**os.environ, "ATELIER_HUB_URL": self.url, "ATELIER_TOKEN": token,
               "XDG_CONFIG_HOME": str(home or self.state.parent / "laptop-config")}
        return subprocess.run([str(VENV_BIN / "atelier"), *args], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=REPO, input=input)

    # -- hub REST API ----------------------------------------------------------------------

    def add_user(self, name: str, *, admin: bool = False) -> str:
        cmd = [str(VENV_BIN / "atelier"), "users", "--state", str(self.state), "add", name]
        out = subprocess.run(cmd + (["--admin"] if admin else []), capture_output=True, text=True, check=True)
        # The hub learns of the user too (as when an admin adds one on the admin page).
        r = self.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text
        return out.stdout.rsplit(": ", 1)[1].strip()

    def user_token(self, name: str) -> str:
        r = self.api("POST", f"/users/{name}/tokens", json={"note": "tests", "expires_in": 3600})
        r.raise_for_status()
        return r.json()["token"]

    # -- the services, from outside any session ------------------------------------------------

    def s3(self):
        import boto3

        keys = json.loads((self.state / "secrets" / "s3.json").read_text())
        port = json.loads((self.state / "atelier.json").read_text())["ports"]["s3"]
        return boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"],
        )

    def mlflow(self):
        """An MlflowClient through the hub-authenticated URL, with the admin token."""
        from mlflow.tracking import MlflowClient

        os.environ["MLFLOW_TRACKING_TOKEN"] = self.admin_token
        return MlflowClient(tracking_uri=f"{self.url}/services/mlflow")
