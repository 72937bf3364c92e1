"""The home page's time to first paint with 5 servers, against JupyterHub's stock home.

Two hubs side by side on 127.0.0.1, each with one user holding 5 running named servers:
- Atelier's (``atelier dev``, process sessions, without Trino), whose ``/hub/home`` lists
  each server's profile, state, uptime, idle stop, cost and ways in, the user's jobs and
  latest MLflow runs (atelier_hub.home, embedded/templates/home.html);
- a stock JupyterHub from the same installation (its own ``home.html``, DummyAuthenticator,
  SimpleLocalProcessSpawner), the baseline.

Headless Chromium (Debian's, as the browser tests drive it) loads each ``/hub/home``
ROUNDS times, alternating; the figure is the median of the browser's own
``first-contentful-paint`` per hub, and their ratio (target: within 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "browser"))
sys.path.insert(0, str(REPO / "hub"))
from atelier_hub.install.paths import tool_path  # noqa: E402
from atelier_hub.services._process import free_port  # noqa: E402
from chromium import CHROMIUM, FLAGS  # noqa: E402
from stack import Stack  # noqa: E402

SERVERS = 5
STOCK_CONFIG = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{root}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{root}/cookie_secret"
c.JupyterHub.pid_file = "{root}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = {{"bench"}}
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = {servers}
c.JupyterHub.spawner_class = "simple"
c.Spawner.notebook_dir = "{root}"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = ["--allow-root"]  # the bench may run as root, as the tests do
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}}]
"""


class StockHub:
    """A stock JupyterHub (no Atelier configuration) on free loopback ports."""

    def __init__(self, root: Path):
        self.root, self.port, self.password, self.token = root, free_port(), "bench-password", os.urandom(16).hex()
        bindir = Path(sys.executable).parent
        (root / "jupyterhub_config.py").write_text(STOCK_CONFIG.format(
            port=self.port, hub_port=free_port(), proxy_api_port=free_port(), root=root, password=self.password,
            chp=str(tool_path("configurable-http-proxy")), servers=SERVERS, token=self.token,
            singleuser=str(bindir / "jupyterhub-singleuser")))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "hub.log", "wb")
        self.proc = subprocess.Popen([str(bindir / "jupyterhub"), "-f", str(root / "jupyterhub_config.py")],
                                     cwd=root, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"token {self.token}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.http.get(f"{self.url}/hub/api/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the stock hub did not start: {(root / 'hub.log').read_text()[-3000:]}")
            time.sleep(0.5)

    def spawn_all(self, user: str) -> None:
        assert self.http.post(f"{self.url}/hub/api/users/{user}", timeout=30).status_code in (201, 409)
        for i in range(SERVERS):
            r = self.http.post(f"{self.url}/hub/api/users/{user}/servers/s{i}", timeout=60)
            assert r.status_code in (201, 202), r.text
        deadline = time.monotonic() + 240
        while True:
            servers = self.http.get(f"{self.url}/hub/api/users/{user}", timeout=30).json()["servers"]
            if len(servers) == SERVERS and all(s["ready"] for s in servers.values()):
                return
            assert time.monotonic() < deadline, servers
            time.sleep(1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
        self.log.close()


def _first_paint(page, url: str) -> float:
    page.goto(url, wait_until="load")
    page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0", timeout=30_000)
    return page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")


def _login(page, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(f"{url}/hub/**")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-home-") as tmp:
        stack = Stack(Path(tmp) / "state", name="bench-home", args=("--without", "trino"),
                      env={"ATELIER_SESSIONS": "process"}).start()
        (Path(tmp) / "stock").mkdir()
        stock = None
        try:
            stock = StockHub(Path(tmp) / "stock")
            admin_password = (stack.state / "initial-admin-password").read_text().strip()
            stack.login("admin", admin_password)  # the hub knows its admin
            for i in range(SERVERS):
                stack.spawn("admin", "cpu-small", server=f"s{i}")
            stock.spawn_all("bench")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                pages = {}
                for label, url, user, password in (("atelier", stack.url, "admin", admin_password),
                                                   ("stock", stock.url, "bench", stock.password)):
                    pages[label] = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
                    _login(pages[label], url, user, password)
                    _first_paint(pages[label], f"{url}/hub/home")  # warm: templates compiled, files cached
                times: dict[str, list[float]] = {"atelier": [], "stock": []}
                for _ in range(args.rounds):
                    for label, url in (("atelier", stack.url), ("stock", stock.url)):
                        times[label].append(_first_paint(pages[label], f"{url}/hub/home"))
                browser.close()
            ours, theirs = (statistics.median(times[k]) for k in ("atelier", "stock"))
            print(json.dumps({k: [round(t, 1) for t in v] for k, v in times.items()}))
            print(f"home page with {SERVERS} servers, first contentful paint (median of {args.rounds}): "
                  f"Atelier {ours:.0f} ms, stock JupyterHub {theirs:.0f} ms -> ratio {ours / theirs:.2f}x "
                  f"(target <= 1.5x)")
        finally:
            if stock is not None:
                stock.stop()
            stack.stop()


if __name__ == "__main__":
    main()
