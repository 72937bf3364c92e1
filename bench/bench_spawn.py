"""Spawn request -> ready server: Atelier's two embedded modes against plain JupyterHubs.

Four hubs run side by side on this machine with the same JupyterHub, proxy and
JupyterLab: Atelier with container sessions, a plain JupyterHub with plain
DockerSpawner on the same image (host networking; Atelier's sessions have a network
namespace each and start a relay beside it, which the ratio includes), Atelier's
single-user process mode, and a plain JupyterHub with SimpleLocalProcessSpawner.
Spawns rotate between them so load drifts hit all alike. Prints the median of N spawns
each and the ratio of each Atelier mode to its plain counterpart. Where no Docker
engine or base image is there, the two container hubs are left out and it says so.
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
from atelier_hub.embedded.engine import engine, session_mode  # noqa: E402
from atelier_hub.install.paths import image_ref, tool_path  # noqa: E402
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
{spawner}
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}}]
"""


SIMPLE = """
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = ["{singleuser}"]
c.Spawner.args = ["--allow-root"]
c.Spawner.default_url = "/lab"
c.SimpleLocalProcessSpawner.home_dir_template = "{dir}/homes/{{username}}"
"""

# Plain DockerSpawner on host networking, as its own docstring says to run it there
# (there is no Docker bridge on these machines): the same image, no limits, no mounts.
DOCKER = """
from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port

class HostDockerSpawner(DockerSpawner):
    async def start(self):
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self):
        return self.host_ip, self.port

c.JupyterHub.spawner_class = HostDockerSpawner
c.DockerSpawner.image = "{image}"
c.DockerSpawner.network_name = "host"
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.ip = "127.0.0.1"
c.DockerSpawner.host_ip = "127.0.0.1"
c.DockerSpawner.remove = True
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.prefix = "bench-plain"
c.DockerSpawner.client_kwargs = {{"base_url": "{docker_host}"}}
c.Spawner.default_url = "/lab"
"""


class PlainHub(HubClient):
    """A plain JupyterHub (no Atelier) with ``spawner`` ("simple" or "docker"); ``extra``:
    more lines of its configuration."""

    def __init__(self, directory: Path, spawner: str, extra: str = ""):
        super().__init__()
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_hex(32)
        cfg = directory / "jupyterhub_config.py"
        spawner_config = {"simple": SIMPLE, "docker": DOCKER}[spawner].format(
            singleuser=VENV_BIN / "jupyterhub-singleuser", dir=directory, image=image_ref("base"),
            docker_host=engine().host)
        cfg.write_text(PLAIN_CONFIG.format(
            port=self.port, hub_port=free_port(), api_port=free_port(), dir=directory,
            chp=tool_path("configurable-http-proxy"), token=self.admin_token, spawner=spawner_config) + extra)
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
    containers = session_mode(start=True)
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        tmp = Path(tmp)
        print("starting the hubs ...", flush=True)
        hubs: dict[str, tuple[HubClient, dict]] = {}
        try:
            # Trino is off: it is not part of a spawn, and four hubs share two cores.
            if containers.name == "container":
                hubs["atelier containers"] = (Stack(tmp / "c", name="bench-c", args=("--no-trino",)).start(),
                                              {"profile": args.profile})
                (tmp / "docker").mkdir()
                hubs["plain DockerSpawner"] = (PlainHub(tmp / "docker", "docker"), {})
            else:
                print(f"  (no container hubs: {containers.reason})")
            hubs["atelier single-user"] = (Stack(tmp / "p", name="bench-p", args=("--no-trino",),
                                                 env={"ATELIER_SESSIONS": "process"}).start(),
                                           {"profile": args.profile})
            (tmp / "simple").mkdir()
            hubs["plain SimpleLocalProcess"] = (PlainHub(tmp / "simple", "simple"), {})
            for hub, _ in hubs.values():
                if isinstance(hub, Stack):
                    hub.add_user("bench")
                else:
                    assert hub.api("POST", "/users/bench").status_code in (201, 409)
            # One untimed spawn each: first-start costs (bytecode, caches) are not the subject.
            for hub, body in hubs.values():
                spawn_seconds(hub, "bench", body)
            times: dict[str, list[float]] = {name: [] for name in hubs}
            names = list(hubs)
            for i in range(args.n):
                for name in names[i % len(names):] + names[:i % len(names)]:
                    hub, body = hubs[name]
                    times[name].append(spawn_seconds(hub, "bench", body))
                    print(f"  spawn {i + 1}/{args.n} {name:<26} {times[name][-1]:.2f} s", flush=True)
        finally:
            for hub, _ in hubs.values():
                hub.stop()
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"\nSpawn request -> ready server (median of {args.n}, same machine, JupyterHub, JupyterLab; "
          f"profile {args.profile})")
    for name, m in med.items():
        print(f"  {name:<28}: {m:6.2f} s")
    for atelier, plain in (("atelier containers", "plain DockerSpawner"),
                           ("atelier single-user", "plain SimpleLocalProcess")):
        if atelier in med:
            print(f"  ratio {atelier} / {plain:<24}: {med[atelier] / med[plain]:6.2f}x")


if __name__ == "__main__":
    main()
