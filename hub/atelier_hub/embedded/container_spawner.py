"""Embedded-mode sessions as containers: JupyterHub's DockerSpawner sized by ``profiles/``.

Rule this module keeps: a session sees its own home and nothing else of the machine's
files. Each server is one container from ``images/base`` (``images/gpu`` for GPU
profiles) that runs as a non-root uid, with the profile's memory and CPU as its cgroup
limits, no capabilities, a network of its own (below), and only ``STATE/homes/USER``
mounted, at one fixed path. The hub's state folder, its secrets and other users'
homes and processes are never mounted or shared.

Each container runs with Docker's ``--network none``: its own network namespace with
only ``lo``, as a pod has on a cluster, so no port a session opens is reachable from
another session. Its one way out and in is a relay (:mod:`atelier_hub.embedded.netns_relay`)
the spawner starts beside it, on 127.0.0.0/8 only (never a Docker bridge): the
loopback endpoints of the session contract (:func:`forwarded_endpoints`: the hub's
API, its proxy, S3, Trino's front, ...) answer at the same addresses inside, and the
session's server answers the hub and its proxy at 127.0.0.1:PORT of the host. The
relay is recorded in ``STATE/run/relays/`` (``end_leftovers`` ends what a hub killed
hard left), dies with the hub, and is started again when a hub re-adopts the session
(``poll``).

The session's environment and config files come from :mod:`atelier_hub.session`
alone, as in cluster mode: the files travel as JSON in ``ATELIER_SESSION_FILES`` and the
image's start hook (``images/base/atelier-session-start``) writes them, unchanged.

Containers are named ``atelier-STACK-USER--SERVER`` (STACK: a hash of the state folder;
USER and SERVER escaped by DockerSpawner), so two users, two servers or two stacks
never collide. They are removed when their server stops; a hub that restarts finds
its running containers again through the state it saved (DockerSpawner's ``poll``).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from traitlets import Int, Unicode, default

from ..image_paths import HOME as IMAGE_HOME
from ..image_paths import JAVA_HOME as IMAGE_JAVA_HOME
from ..image_paths import PYTHON as IMAGE_PYTHON
from ..image_paths import SESSION_CONFIG_DIR
from ..image_paths import SPARK_JARS as IMAGE_JARS
from ..install.paths import image_ref
from ..profiles import Profile
from ..services import Services
from ..services._process import PARENT_PID_VAR, end_group, end_recorded, record, tail
from ..session import session_env, session_files
from .netns_relay import READY
from .spawner_base import EmbeddedSpawnerMixin, gpu_refusal
from .state_folder import RELAYS_DIR

__all__ = ["AtelierDockerSpawner", "SESSION_CONFIG_DIR", "container_services", "forwarded_endpoints", "host_config",
           "stack_id", "update_container_spawner"]

# Every session's host name (its own: each has its own network namespace and /etc/hosts).
SESSION_HOSTNAME = "atelier"
# Seconds a relay may take to bind its listeners (a Python start on a busy machine).
RELAY_START_TIMEOUT = 60


def stack_id(state: str | Path) -> str:
    """Eight hex digits naming one embedded stack (its state folder) in container names.

    >>> stack_id("/srv/a") != stack_id("/srv/b") and len(stack_id("/srv/a")) == 8
    True
    """
    return hashlib.sha256(str(Path(state).resolve()).encode()).hexdigest()[:8]


def container_services(services: Services) -> Services:
    """The deployment's services as seen from inside an image: Spark's jars and Java
    live at the image's paths, not the hub machine's (pure).

    >>> from atelier_hub.services.spark import SparkService
    >>> s = container_services(Services(spark=SparkService(jars=["/cache/m2/x/hadoop-aws-3.5.0.jar"])))
    >>> s.spark.jars, s.spark.java_home
    (['/opt/atelier/spark-jars/hadoop-aws-3.5.0.jar'], '/usr/lib/jvm/java-17-openjdk-amd64')
    """
    if services.spark is None:
        return services
    jars = [f"{IMAGE_JARS}/{Path(j).name}" for j in services.spark.jars]
    return services.model_copy(update={"spark": services.spark.model_copy(
        update={"jars": jars, "java_home": IMAGE_JAVA_HOME})})


def host_config(profile: Profile, *, pids_limit: int, gpu_ids: list[int] | tuple[int, ...] = (),
                network: bool = True) -> dict:
    """The Docker host settings of a container sized by ``profile``, beyond its memory and
    CPU limits (DockerSpawner's ``mem_limit`` and ``cpu_limit``): a session's, a job's,
    and each node of a personal Ray cluster (:mod:`atelier_hub.ray_clusters`), built here
    for all of them (pure). ``network``:
    the container has a network of its own to name itself in (False: it joins another
    container's, where Docker refuses host entries).

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile.model_validate({"name": "s", "display_name": "S", "cpu": {"limit": 2},
    ...                             "memory": {"guarantee": "1G", "limit": "4G"}})
    >>> c = host_config(p, pids_limit=8192)
    >>> c["memswap_limit"] == p.memory.limit, c["cap_drop"], c["shm_size"] == p.memory.limit // 4
    (True, ['ALL'], True)
    >>> "extra_hosts" in host_config(p, pids_limit=1, network=False)
    False
    """
    limit = profile.memory.limit
    config = {
        # Swap would let a session use more than its profile's memory.
        "memswap_limit": limit,
        "pids_limit": pids_limit,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        # Spark and Ray use /dev/shm; Docker's default is 64 MB.
        "shm_size": min(limit // 4, 2 * 2**30),
    }
    if network:
        # The session's own name resolves to its loopback: with no network Docker
        # writes none for it, and Java (Spark, Hadoop) fails on getLocalHost().
        config["extra_hosts"] = {SESSION_HOSTNAME: "127.0.0.1"}
    if gpu_ids:
        import docker

        config["device_requests"] = [docker.types.DeviceRequest(
            device_ids=[str(i) for i in gpu_ids], capabilities=[["gpu"]])]
    return config


def _loopback(value: str) -> tuple[str, int] | None:
    """``(host, port)`` of a URL (or ``host:port``) on 127.0.0.0/8, else None. The name
    ``localhost`` (the hub's public URL: :mod:`atelier_hub.origins`) is 127.0.0.1, as the
    container's resolver and the proxy's listening address make it.

    >>> _loopback("http://localhost:8000/services/mlflow"), _loopback("http://127.0.0.2:9"), _loopback("x.org:1")
    (('127.0.0.1', 8000), ('127.0.0.2', 9), None)
    """
    try:
        parts = urlsplit(value if "://" in value else f"//{value}")
        host, port = parts.hostname, parts.port
        host = "127.0.0.1" if host == "localhost" else host
        loopback = host is not None and ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:  # not a URL, no IP address, or a bad port
        return None
    return (host, port) if loopback and port else None


#: the egress proxy's port inside a session (the relay's HTTP proxy to public addresses)
EGRESS_PORT = 3128


def proxy_env(port: int) -> dict[str, str]:
    """A session's proxy variables, in both spellings (curl, pip, uv, git, requests and
    gRPC read one or the other): the internet through the relay's egress proxy, the
    hub and the services (on loopback) directly, and every loopback address (a personal
    Ray cluster's head and dashboard, :data:`~atelier_hub.ray_clusters.HEAD_IP`: by name
    too, for Python's urllib, which reads no address ranges) (pure).

    >>> proxy_env(3128)["HTTPS_PROXY"], proxy_env(3128)["no_proxy"]
    ('http://127.0.0.1:3128', 'localhost,127.0.0.1,::1,.localhost,127.0.0.0/8,127.0.50.1')
    """
    from ..ray_clusters import HEAD_IP

    proxy, direct = f"http://127.0.0.1:{port}", f"localhost,127.0.0.1,::1,.localhost,127.0.0.0/8,{HEAD_IP}"
    return {name: value for upper, value in (("HTTP_PROXY", proxy), ("HTTPS_PROXY", proxy), ("NO_PROXY", direct))
            for name in (upper, upper.lower())}


def forwarded_endpoints(services: Services, *, urls: list[str] = ()) -> list[tuple[str, int]]:
    """The loopback endpoints a container session reaches through its relay: each
    ``host:port`` on 127.0.0.0/8 named by the session contract's services, plus
    ``urls`` (the hub's API and public URLs); sorted, once each (pure).

    Any field of any service counts, so a service added later is reached with no change
    here. An endpoint off loopback is not forwarded: a container session has no other
    network.

    >>> from atelier_hub.services.mlflow import MLflowService
    >>> from atelier_hub.services.s3 import S3Service
    >>> s = Services(s3=S3Service(endpoint_url="http://127.0.0.1:9000", bucket="b"),
    ...              mlflow=MLflowService(tracking_uri="http://127.0.0.1:8000/services/mlflow"))
    >>> forwarded_endpoints(s, urls=["http://127.0.0.1:8081/hub/api", "", "https://example.org/"])
    [('127.0.0.1', 8000), ('127.0.0.1', 8081), ('127.0.0.1', 9000)]
    """
    found: set[tuple[str, int]] = set()

    def walk(value) -> None:
        if isinstance(value, str):
            endpoint = _loopback(value)
            if endpoint:
                found.add(endpoint)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(services.model_dump(mode="json"))
    walk(list(urls))
    return sorted(found)


class AtelierDockerSpawner(EmbeddedSpawnerMixin, DockerSpawner):
    """One container per server, sized by its profile (embedded mode)."""

    runs_jobs = True

    homes_dir = Unicode(
        config=True,
        help="""
        Host folder holding one home per user (``HOMES/USER``); only the user's own is
        mounted into their containers, at ``/home/jovyan``.

            c.AtelierDockerSpawner.homes_dir = "/srv/atelier/state/homes"
        """,
    )
    gpu_image = Unicode(
        config=True,
        help="""Image for profiles with GPUs (``images/gpu``: base plus torch).

            c.AtelierDockerSpawner.gpu_image = "atelier-gpu:latest"
        """,
    )
    session_uid = Int(1000, config=True, help="Non-root uid sessions run as (the image's jovyan).")
    session_gid = Int(100, config=True, help="Gid sessions run as (the image's users group).")
    pids_limit = Int(
        8192, config=True,
        help="Most tasks (processes and threads) one session may run: a fork bomb stays inside it. "
             "Spark's JVM and Ray's workers use a few hundred each.",
    )

    @default("image")
    def _image_default(self):
        return image_ref("base")

    @default("gpu_image")
    def _gpu_image_default(self):
        return image_ref("gpu")

    @default("ip")
    def _ip_default(self):
        # The server binds loopback inside its own namespace; the relay brings the hub there.
        return "127.0.0.1"

    @default("network_name")
    def _network_default(self):
        # A network namespace of its own with only lo: nothing it opens is reachable
        # from another session. ("host" shared 127.0.0.1 with every session.)
        return "none"

    @default("use_internal_ip")
    def _internal_ip_default(self):
        # Nothing is published: Docker has no network to publish on (no bridge).
        return True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._relay: subprocess.Popen | None = None
        self._relay_lock = asyncio.Lock()

    @default("remove")
    def _remove_default(self):
        # A stopped server's container goes: the next start gets a fresh one with its
        # profile's limits and a new token; the home is outside it.
        return True

    @default("pull_policy")
    def _pull_default(self):
        # No registry here: images are built locally by `make images`.
        return "never"

    # -- what a GPU profile needs here, beyond free GPUs ----------------------------------

    def _nvidia_runtime(self) -> bool:
        try:
            return "nvidia" in (self.client.info().get("Runtimes") or {})
        except Exception:  # the engine's answer, whatever it is, means "not known to work"
            return False

    def _image_exists(self, ref: str) -> bool:
        try:
            self.client.inspect_image(ref)
        except Exception:  # NotFound, or an engine that cannot say: not usable either way
            return False
        return True

    def check_request(self, options: dict | None) -> Profile:
        """EmbeddedSpawnerMixin's check, then what a GPU profile needs here beyond free
        GPUs: the GPU image and the engine's NVIDIA runtime (409 without them)."""
        profile = super().check_request(options)
        if not profile.gpu_count:
            return profile
        if not self._image_exists(self.gpu_image):
            raise gpu_refusal(
                f"Profile {profile.name!r} runs the image {self.gpu_image}, which is not built here: "
                "run `make images-gpu` (about 3 GB), or choose a CPU profile.")
        if not self._nvidia_runtime():
            raise gpu_refusal(
                f"Profile {profile.name!r} needs {profile.gpu_count} GPU(s), but the Docker engine has no "
                "NVIDIA runtime: install the NVIDIA container toolkit (nvidia-ctk runtime configure) "
                "or choose a CPU profile.")
        return profile

    # -- the container -----------------------------------------------------------------

    def _session_files(self) -> dict[str, str]:
        return session_files(self.profile, username=self.user.name,
                             services=container_services(self.session_services()), cpus=self.cpus,
                             git=self.deployment.git)

    def get_env(self):
        env = super().get_env()
        if self.profile is not None:
            files = self._session_files()
            env.update(session_env(
                self.profile,
                username=self.user.name,
                services=container_services(self.session_services()),
                cpus=self.cpus,
                api_token=self.api_token,
                # The NVIDIA runtime shows the container only its own GPUs, as 0..n-1.
                gpu_ids=list(range(len(self.gpu_ids))),
                config_dir=SESSION_CONFIG_DIR if files else None,
            ))
            env["ATELIER_SESSION_FILES"] = json.dumps(files)
            env["ATELIER_SESSION_DIR"] = SESSION_CONFIG_DIR
            # This spawner runs jobs: the Connect panel shows the `atelier run` line.
            env["ATELIER_JOBS"] = "1"
        env.update(proxy_env(self._egress_port()))
        return env

    def _home(self) -> Path:
        return Path(self.homes_dir) / self.user.name

    def _prepare_home(self) -> None:
        """The user's home, owned by the session uid (a home first used by the process
        spawner belongs to root: its files are handed over once)."""
        home = self._home()
        home.mkdir(parents=True, exist_ok=True)
        st = home.stat()
        if (st.st_uid, st.st_gid) != (self.session_uid, self.session_gid):
            for root, dirs, files in os.walk(home):
                for name in [*dirs, *files]:
                    os.lchown(os.path.join(root, name), self.session_uid, self.session_gid)
            os.chown(home, self.session_uid, self.session_gid)
        home.chmod(0o700)

    def _host_config(self) -> dict:
        return host_config(self.profile, pids_limit=self.pids_limit, gpu_ids=self.gpu_ids)

    # -- the relay: this session's only way to the hub and the services, and back ---------

    def _relay_record(self) -> Path | None:
        if not self.state_dir:
            return None
        return Path(self.state_dir) / RELAYS_DIR / f"{self.object_name}.pid"

    def _relay_log(self) -> Path | None:
        return Path(self.state_dir) / "logs" / "session-relays.log" if self.state_dir else None

    def _inward(self) -> list[tuple[str, int]]:
        api = self.hub.api_url
        if self.hub_connect_url is not None:
            api = self.hub_connect_url
        urls = [api, self.public_url or "", self.public_hub_url or ""]
        return forwarded_endpoints(container_services(self.session_services()), urls=urls)

    def _egress_port(self) -> int:
        """The egress proxy's port inside the session: EGRESS_PORT unless the session
        already uses that port for something the relay forwards."""
        taken = {port for _, port in self._inward()} | {self.port}
        return next(p for p in range(EGRESS_PORT, EGRESS_PORT + 100) if p not in taken)

    def _relay_alive(self) -> bool:
        return self._relay is not None and self._relay.poll() is None

    async def _end_relay(self) -> None:
        """End this session's relay, and a predecessor's still recorded (a relay of a
        previous hub ends with it; the record is checked anyway)."""
        relay, self._relay = self._relay, None
        loop = asyncio.get_running_loop()
        if relay is not None and relay.poll() is None:
            await loop.run_in_executor(None, lambda: end_group(relay.pid, grace=5, leader=relay))
            relay.poll()
        rec = self._relay_record()
        if rec is not None:
            await loop.run_in_executor(None, lambda: end_recorded(rec, grace=5, what="session relay"))

    async def _ensure_relay(self, *, fresh: bool = False) -> None:
        """Start the relay unless it runs (``fresh``: start a new one in any case)."""
        async with self._relay_lock:
            if self._relay_alive() and not fresh:
                return
            await self._end_relay()
            info = await self.docker("inspect_container", self.object_name)
            if info["HostConfig"].get("NetworkMode") != "none":
                return  # a session started by an older Atelier, on the host's network
            pid = info["State"].get("Pid")
            if not info["State"].get("Running") or not pid:
                raise RuntimeError(f"the container {self.object_name} is not running: no network to relay to")
            cmd = [sys.executable, "-m", "atelier_hub.embedded.netns_relay", "--pid", str(pid), "--name", self.object_name,
                   "--outward", f"127.0.0.1:{self.port}"]
            inward = self._inward()
            cmd += [f"--inward={host}:{port}" for host, port in inward]
            cmd += [f"--egress=127.0.0.1:{self._egress_port()}"]
            # The hub's pid: the relay ends itself when the hub is gone (PDEATHSIG, checked
            # against this, as the services do); no other variable of the hub's is passed.
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), PARENT_PID_VAR: str(os.getpid())}
            if os.environ.get("PYTHONPATH"):
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
            log, rec = self._relay_log(), self._relay_record()
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            err = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (kept by the child)
            try:
                # Started from the hub's main thread (the event loop's): PDEATHSIG follows
                # the thread that forks, and this one lives as long as the hub.
                relay = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, start_new_session=True)
            finally:
                if log is not None:
                    err.close()
            self._relay = relay
            if rec is not None:
                rec.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                record(rec, relay.pid)
            loop = asyncio.get_running_loop()
            try:
                line = await asyncio.wait_for(loop.run_in_executor(None, relay.stdout.readline),
                                              RELAY_START_TIMEOUT)
            except asyncio.TimeoutError:
                line = b""
            relay.stdout.close()
            if line.decode(errors="replace").strip() != READY:
                await self._end_relay()
                raise RuntimeError(f"the network relay of {self.object_name} did not start; last lines of "
                                   f"{log}:\n{tail(log, 5) if log else '(no log)'}")
            self.log.info("Relay for %s: %d endpoint(s) inside, its server at 127.0.0.1:%d (pid %d)",
                          self._key, len(inward), self.port, relay.pid)

    async def start(self):
        if self.profile is None:  # started without the pre-spawn hook (never by the hub)
            self.run_pre_spawn_hook()
        p = self.profile
        # A queued GPU server gets its devices first: the container is built with their ids.
        await self.wait_for_gpus()
        if p.gpu_count:
            self.image = self.gpu_image
        self.mem_limit = p.memory.limit
        self.cpu_limit = float(p.cpu.limit)
        # Free on the host, where the relay listens for the hub; inside, the server's own
        # namespace has it free too.
        self.port = random_port()
        self._prepare_home()
        self.volumes = {str(self._home()): {"bind": IMAGE_HOME, "mode": "rw"}}
        self.extra_host_config = self._host_config()
        job = self.job
        if job:
            # The image's entrypoint (its start hook) still runs first: the same session.
            self.cmd = self.job_command(IMAGE_PYTHON)
        self.extra_create_kwargs = {
            "user": f"{self.session_uid}:{self.session_gid}",
            "hostname": SESSION_HOSTNAME,
            "working_dir": IMAGE_HOME,
            "labels": {"dev.atelier.stack": self.prefix.removeprefix("atelier-"),
                       "dev.atelier.user": self.user.name, "dev.atelier.server": self.name or "",
                       "dev.atelier.profile": p.name, "dev.atelier.job": (job or {}).get("name", "")},
        }
        self.log.info("Starting %s in a container from %s with profile %s (GPUs: %s)",
                      self._key, self.image, p.name, self.gpu_ids or "none")
        ip_port = await super().start()
        # The server is still importing: the relay (stdlib only) is up well before it
        # first calls the hub, and the hub waits for it through the relay.
        await self._ensure_relay(fresh=True)
        return ip_port

    async def get_ip_and_port(self):
        # Nothing is published: the relay listens on the host at the port the server
        # listens on inside.
        return self.ip, self.port

    async def poll(self):
        status = await super().poll()
        if status is None:
            # A hub that restarted re-adopts a running session: its predecessor's relay
            # died with it, so the session is unreachable until a new one runs.
            await self._ensure_relay()
        else:  # the container is gone or stopped: so is what relayed to it
            await self._end_relay()
        return status

    async def stop(self, now=False):
        await self._end_relay()
        await super().stop(now=now)

    def get_state(self):
        state = super().get_state()
        if self.object_id:
            state["port"] = self.port  # the relay's, on the host and inside, for a hub that restarts
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("port"):
            self.port = int(state["port"])


def update_container_spawner(c, *, state: str | Path, profiles_dir: str, deployment_file: str,
                             homes_dir: str, docker_host: str, token_scopes: list[str]) -> None:
    """``c.AtelierDockerSpawner`` for one embedded stack (only sets, never appends)."""
    c.JupyterHub.spawner_class = "atelier_hub.embedded.container_spawner.AtelierDockerSpawner"
    s = c.AtelierDockerSpawner
    s.profiles_dir = profiles_dir
    s.deployment_file = deployment_file
    s.state_dir = str(state)
    s.homes_dir = homes_dir
    s.prefix = f"atelier-{stack_id(state)}"
    s.client_kwargs = {"base_url": docker_host}
    s.default_url = "/lab"
    s.start_timeout = 180
    s.http_timeout = 180
    s.server_token_scopes = token_scopes
