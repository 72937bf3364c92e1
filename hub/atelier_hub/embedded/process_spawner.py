"""The embedded spawner: one local process per server, sized and configured by its profile.

Rule this module keeps: the profile named in the spawn request (form or REST API, as
KubeSpawner takes it: ``{"profile": "gpu-1"}``) is resolved and checked server-side
before anything starts, and the session's environment comes from
:func:`atelier_hub.session.session_env` alone. Override order: spawner config ->
profile -> request.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode, default

from ..session import session_env, session_files
from .cgroups import SessionCgroup
from .spawner_base import EmbeddedSpawnerMixin

__all__ = ["AtelierLocalSpawner"]


class AtelierLocalSpawner(EmbeddedSpawnerMixin, SimpleLocalProcessSpawner):
    """Local-process sessions sized by ``profiles/`` (embedded mode)."""

    sessions_dir = Unicode(
        config=True,
        help="""
        Folder for each server's generated config files (Spark, fsspec, Trino CLI), one
        sub-folder per user and server, rewritten at every start.

            c.AtelierLocalSpawner.sessions_dir = "/srv/atelier/state/sessions"
        """,
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._cgroup: SessionCgroup | None = None

    # -- the process ---------------------------------------------------------------------

    @default("cmd")
    def _cmd_default(self):
        return [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]

    def get_env(self):
        env = super().get_env()
        # The session finds the same Python environment and tools as the hub.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
        # Session-wide Jupyter settings (no calls home for news or updates); a user's
        # own ~/.jupyter still takes precedence.
        env["JUPYTER_CONFIG_PATH"] = str(Path(__file__).parents[1] / "session_config")
        # PySpark's workers and Ray's use the session's Python, not whatever is first on PATH.
        env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        if self.profile is not None:
            env.update(
                session_env(
                    self.profile,
                    username=self.user.name,
                    services=self.session_services(),
                    cpus=self.cpus,
                    api_token=self.api_token,
                    gpu_ids=self.gpu_ids,
                    config_dir=str(self.config_dir) if self.sessions_dir else None,
                )
            )
        return env

    @property
    def config_dir(self) -> Path:
        return Path(self.sessions_dir) / self.user.name / (self.name or "default")

    def write_session_files(self) -> None:
        """The libraries' own config files for this server (secrets stay in the env)."""
        if not self.sessions_dir or self.profile is None:
            return
        files = session_files(self.profile, username=self.user.name, services=self.session_services(),
                              cpus=self.cpus, git=self.deployment.git)
        for rel, text in files.items():
            path = self.config_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def make_preexec_fn(self, name):
        base = super().make_preexec_fn(name)
        cgroup = self._cgroup

        def preexec():
            if cgroup is not None:
                cgroup.preexec()
            base()

        return preexec

    async def start(self):
        if self.profile is None:  # started without the pre-spawn hook (never by the hub)
            self.run_pre_spawn_hook()
        self._cgroup = SessionCgroup(
            f"{self.user.name}-{self.name or 'default'}",
            mem_limit=self.profile.memory.limit,
            cpu_limit=self.profile.cpu.limit,
            log=self.log,
        )
        self._cgroup.create()
        self.write_session_files()
        self.log.info(
            "Starting %s with profile %s (GPUs: %s)", self._key, self.profile.name, self.gpu_ids or "none"
        )
        return await super().start()

    async def stop(self, now=False):
        await super().stop(now=now)
        if self._cgroup is not None:
            self._cgroup.remove()
