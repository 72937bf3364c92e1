"""Embedded-mode sessions as containers: JupyterHub's DockerSpawner sized by ``profiles/``.

Rule this module keeps: a session sees its own home and nothing else of the machine's
files. Each server is one container from ``images/base`` (``images/gpu`` for GPU
profiles) that runs as a non-root uid, with the profile's memory and CPU as its cgroup
limits, no capabilities, host networking on 127.0.0.1 (never a Docker bridge), and
only ``STATE/homes/USER`` mounted, at one fixed path. The hub's state folder, its
secrets and other users' homes and processes are never mounted or shared.

The session's environment and config files come from :mod:`atelier_hub.session`
alone, as in cluster mode: the files travel as JSON in ``ATELIER_SESSION_FILES`` and the
image's start hook (``images/base/atelier-session-start``) writes them, unchanged.

Containers are named ``atelier-STACK-USER--SERVER`` (STACK: a hash of the state folder;
USER and SERVER escaped by DockerSpawner), so two users, two servers or two stacks
never collide. They are removed when their server stops; a hub that restarts finds
its running containers again through the state it saved (DockerSpawner's ``poll``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from traitlets import Int, Unicode, default

from .embedded_spawner import EmbeddedSpawnerMixin
from .gpus import GPUUnavailable
from .install.paths import image_ref
from .profiles import Profile, to_embedded
from .session import session_env, session_files
from .settings import Services

__all__ = ["AtelierDockerSpawner", "SESSION_CONFIG_DIR", "IMAGE_HOME", "IMAGE_JARS", "IMAGE_JAVA_HOME",
           "container_services", "stack_id", "update_container_spawner"]

# Fixed paths inside images/base (its Dockerfile creates them).
IMAGE_HOME = "/home/jovyan"
IMAGE_JARS = "/opt/atelier/spark-jars"
IMAGE_JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
# The same folder as cluster mode's (atelier_hub.cluster.kubespawner.SESSION_CONFIG_DIR).
SESSION_CONFIG_DIR = "/etc/atelier/session"


def stack_id(state: str | Path) -> str:
    """Eight hex digits naming one embedded stack (its state folder) in container names.

    >>> stack_id("/srv/a") != stack_id("/srv/b") and len(stack_id("/srv/a")) == 8
    True
    """
    return hashlib.sha256(str(Path(state).resolve()).encode()).hexdigest()[:8]


def container_services(services: Services) -> Services:
    """The deployment's services as seen from inside an image: Spark's jars and Java
    live at the image's paths, not the hub machine's (pure).

    >>> from atelier_hub.settings import SparkService
    >>> s = container_services(Services(spark=SparkService(jars=["/cache/m2/x/hadoop-aws-3.5.0.jar"])))
    >>> s.spark.jars, s.spark.java_home
    (['/opt/atelier/spark-jars/hadoop-aws-3.5.0.jar'], '/usr/lib/jvm/java-17-openjdk-amd64')
    """
    if services.spark is None:
        return services
    jars = [f"{IMAGE_JARS}/{Path(j).name}" for j in services.spark.jars]
    return services.model_copy(update={"spark": services.spark.model_copy(
        update={"jars": jars, "java_home": IMAGE_JAVA_HOME})})


class AtelierDockerSpawner(EmbeddedSpawnerMixin, DockerSpawner):
    """One container per server, sized by its profile (embedded mode)."""

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
        # Host networking: the server binds loopback of the machine itself.
        return "127.0.0.1"

    @default("network_name")
    def _network_default(self):
        return "host"

    @default("use_internal_ip")
    def _internal_ip_default(self):
        # Nothing is published: with host networking Docker refuses port bindings.
        return True

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

    def _check_gpu_session(self, profile: Profile) -> None:
        if not self._image_exists(self.gpu_image):
            raise GPUUnavailable(
                f"Profile {profile.name!r} runs the image {self.gpu_image}, which is not built here: "
                "run `make images-gpu` (about 3 GB), or choose a CPU profile.")
        if not self._nvidia_runtime():
            raise GPUUnavailable(
                f"Profile {profile.name!r} needs {profile.gpu_count} GPU(s), but the Docker engine has no "
                "NVIDIA runtime: install the NVIDIA container toolkit (nvidia-ctk runtime configure) "
                "or choose a CPU profile.")

    # -- the container -----------------------------------------------------------------

    def _session_files(self) -> dict[str, str]:
        return session_files(self.profile, username=self.user.name,
                             services=container_services(self.deployment.services))

    def get_env(self):
        env = super().get_env()
        if self.profile is not None:
            files = self._session_files()
            env.update(session_env(
                self.profile,
                username=self.user.name,
                services=container_services(self.deployment.services),
                threads=to_embedded(self.profile, host_cpus=os.cpu_count() or 1).threads,
                api_token=self.api_token,
                # The NVIDIA runtime shows the container only its own GPUs, as 0..n-1.
                gpu_ids=list(range(len(self.gpu_ids))),
                config_dir=SESSION_CONFIG_DIR if files else None,
            ))
            env["ATELIER_SESSION_FILES"] = json.dumps(files)
            env["ATELIER_SESSION_DIR"] = SESSION_CONFIG_DIR
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
        limit = self.profile.memory.limit
        config = {
            # Swap would let a session use more than its profile's memory.
            "memswap_limit": limit,
            "pids_limit": self.pids_limit,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            # Spark and Ray use /dev/shm; Docker's default is 64 MB.
            "shm_size": min(limit // 4, 2 * 2**30),
        }
        if self.gpu_ids:
            import docker

            config["device_requests"] = [docker.types.DeviceRequest(
                device_ids=[str(i) for i in self.gpu_ids], capabilities=[["gpu"]])]
        return config

    async def start(self):
        if self.profile is None:  # started without the pre-spawn hook (never by the hub)
            self.run_pre_spawn_hook()
        p = self.profile
        if p.gpu_count:
            self.image = self.gpu_image
        self.mem_limit = p.memory.limit
        self.cpu_limit = float(p.cpu.limit)
        # Host networking: every session shares 127.0.0.1, so each needs its own port.
        self.port = random_port()
        self._prepare_home()
        self.volumes = {str(self._home()): {"bind": IMAGE_HOME, "mode": "rw"}}
        self.extra_host_config = self._host_config()
        self.extra_create_kwargs = {
            "user": f"{self.session_uid}:{self.session_gid}",
            "working_dir": IMAGE_HOME,
            "labels": {"dev.atelier.stack": self.prefix.removeprefix("atelier-"),
                       "dev.atelier.user": self.user.name, "dev.atelier.server": self.name or "",
                       "dev.atelier.profile": p.name},
        }
        self.log.info("Starting %s in a container from %s with profile %s (GPUs: %s)",
                      self._key, self.image, p.name, self.gpu_ids or "none")
        return await super().start()

    async def get_ip_and_port(self):
        # Host networking: nothing is published; the server listens where we told it.
        return self.ip, self.port


def update_container_spawner(c, *, state: str | Path, profiles_dir: str, deployment_file: str,
                             homes_dir: str, docker_host: str, token_scopes: list[str]) -> None:
    """``c.AtelierDockerSpawner`` for one embedded stack (only sets, never appends)."""
    c.JupyterHub.spawner_class = "atelier_hub.container_spawner.AtelierDockerSpawner"
    s = c.AtelierDockerSpawner
    s.profiles_dir = profiles_dir
    s.deployment_file = deployment_file
    s.homes_dir = homes_dir
    s.prefix = f"atelier-{stack_id(state)}"
    s.client_kwargs = {"base_url": docker_host}
    s.default_url = "/lab"
    s.start_timeout = 180
    s.http_timeout = 180
    s.server_token_scopes = token_scopes
