"""Spawn request -> ready server: an Atelier profile against a plain JupyterHub.

Both hubs run side by side on this machine with the same JupyterHub, proxy and
JupyterLab; spawns alternate between them so load drifts hit both alike. Prints the
median of N spawns each and the ratio Atelier / plain.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hub"))
from atelier_hub.install.paths import tool_path  # noqa: E402
from stack import VENV_BIN, HubClient, Stack, free_port  # noqa: E402

PLAIN_CONFIG = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
c.ConfigurableHTTPProxy.command = ["{chp}"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.pid_file = "{dir}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = ["{singleuser}"]
c.Spawner.args = ["--allow-root"]
c.Spawner.default_url = "/lab"
c.SimpleLocalProcessSpawner.home_dir_template = "{dir}/homes/{{username}}"
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}}]
"""


class PlainHub(HubClient):
    def __init__(self, directory: Path):
        super().__init__()
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_hex(32)
        cfg = directory / "jupyterhub_config.py"
        cfg.write_text(PLAIN_CONFIG.format(
            port=self.port, hub_port=free_port(), api_port=free_port(), dir=directory,
            chp=tool_path("configurable-http-proxy"), singleuser=VENV_BIN / "jupyterhub-singleuser",
            token=self.admin_token))
        self.log = directory / "hub.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(cfg)], cwd=directory,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise RuntimeError("plain hub did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(120)


def spawn_seconds(hub, user: str, body: dict, *, timeout: float = 300) -> float:
    """Seconds from the spawn request to a ready server; a failed or stuck spawn raises
    (with the hub's log) instead of hanging `make bench`."""
    t0 = time.perf_counter()
    r = hub.api("POST", f"/users/{user}/server", json=body)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn for {user} answered {r.status_code}: {r.text}")
    while True:
        model = hub.api("GET", f"/users/{user}").json()["servers"].get("")
        if model and model["ready"]:
            break
        if not model or not model["pending"]:
            raise RuntimeError(f"spawn for {user} failed:\n{hub.hub_log()}")
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"spawn for {user} not ready in {timeout:.0f} s:\n{hub.hub_log()}")
        time.sleep(0.05)  # finer than HubClient.spawn's polling: this is the figure measured
    elapsed = time.perf_counter() - t0
    hub.stop_server(user)  # bounded too
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="spawns per hub (default 5)")
    ap.add_argument("--profile", default="cpu-small")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "plain").mkdir()
        print("starting both hubs ...", flush=True)
        atelier = Stack(tmp / "state", name="bench").start()
        plain = PlainHub(tmp / "plain")
        try:
            atelier.add_user("bench")
            assert plain.api("POST", "/users/bench").status_code in (201, 409)
            # One untimed spawn each: first-start costs (bytecode, caches) are not the subject.
            spawn_seconds(atelier, "bench", {"profile": args.profile})
            spawn_seconds(plain, "bench", {})
            times = {"atelier": [], "plain": []}
            for i in range(args.n):
                order = [("atelier", atelier, {"profile": args.profile}), ("plain", plain, {})]
                for name, hub, body in order if i % 2 == 0 else order[::-1]:
                    times[name].append(spawn_seconds(hub, "bench", body))
                    print(f"  spawn {i + 1}/{args.n} {name:<8} {times[name][-1]:.2f} s", flush=True)
        finally:
            plain.stop()
            atelier.stop()
    a, p = statistics.median(times["atelier"]), statistics.median(times["plain"])
    print(f"""
Spawn request -> ready server (median of {args.n}, same machine, same JupyterHub and JupyterLab)
  plain JupyterHub + SimpleLocalProcessSpawner : {p:6.2f} s
  Atelier, profile {args.profile:<28}: {a:6.2f} s
  ratio Atelier / plain                        : {a / p:6.2f}x""")


if __name__ == "__main__":
    main()
