"""The embedded spawner: one local process per server, sized and configured by its profile.

Rule this module keeps: the profile named in the spawn request (form or REST API, as
KubeSpawner takes it: ``{"profile": "gpu-1"}``) is resolved and checked server-side
before anything starts, and the session's environment comes from
:func:`atelier_hub.session.session_env` alone. Override order: spawner config ->
profile -> request.
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path
from typing import ClassVar

from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado import web
from traitlets import Unicode, default

from .cgroups import SessionCgroup
from .gpus import GPUPool, GPUUnavailable, detect_gpus
from .profile_spawner import ProfileSpawnerMixin
from .profiles import (
    Profile,
    format_memory,
    to_embedded,
    visible_profiles,
)
from .session import session_env, session_files

__all__ = ["AtelierLocalSpawner", "render_profile_form"]


def _gpu_note(profile: Profile, free: int, total: int) -> str:
    if not profile.gpu_count:
        return ""
    if total == 0:
        return "No GPU on this machine"
    return f"{free} of {total} GPUs free"


def render_profile_form(profiles: list[Profile], *, free_gpus: int, total_gpus: int) -> str:
    """HTML of the profile picker: one card per profile with its sizes (pure).

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-small", display_name="Small", cpu={"limit": 2}, memory={"limit": "4G"})
    >>> 'value="cpu-small"' in render_profile_form([p], free_gpus=0, total_gpus=0)
    True
    """
    cards = []
    default = next((p.name for p in profiles if p.default), profiles[0].name if profiles else "")
    for p in profiles:
        gpu = f"{p.gpu_count} × {html.escape(p.gpu.type or 'GPU')}" if p.gpu else "none"
        note = _gpu_note(p, free_gpus, total_gpus)
        cards.append(
            f"""
  <label class="atelier-profile card" data-profile="{html.escape(p.name)}">
    <input type="radio" name="profile" value="{html.escape(p.name)}"{' checked' if p.name == default else ''}>
    <div class="card-body">
      <h3 class="card-title">{html.escape(p.display_name)} <code>{html.escape(p.name)}</code></h3>
      <p class="card-text">{html.escape(p.description)}</p>
      <dl>
        <dt>CPU</dt><dd>{p.cpu.limit:g} cores</dd>
        <dt>Memory</dt><dd>{format_memory(p.memory.limit)}</dd>
        <dt>GPU</dt><dd>{gpu}</dd>
      </dl>
      {f'<p class="atelier-gpu-note">{html.escape(note)}</p>' if note else ''}
    </div>
  </label>"""
        )
    return f"""
<style>
  .atelier-profiles {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr)); gap: 1rem; margin: 1rem 0; }}
  .atelier-profile {{ cursor: pointer; padding: .25rem; }}
  .atelier-profile:has(input:checked) {{ outline: 3px solid #f37726; }}
  .atelier-profile input {{ margin: .5rem; }}
  .atelier-profile dl {{ display: grid; grid-template-columns: auto 1fr; gap: 0 .75rem; margin: 0; }}
  .atelier-profile dt {{ font-weight: 600; }}
  .atelier-gpu-note {{ color: #a94442; margin: .5rem 0 0; }}
</style>
<p>Choose a profile. Your home folder is the same whichever you pick.</p>
<div class="atelier-profiles">{''.join(cards)}
</div>
"""


class AtelierLocalSpawner(ProfileSpawnerMixin, SimpleLocalProcessSpawner):
    """Local-process sessions sized by ``profiles/`` (embedded mode)."""

    sessions_dir = Unicode(
        config=True,
        help="""
        Folder for each server's generated config files (Spark, fsspec, Trino CLI), one
        sub-folder per user and server, rewritten at every start.

            c.AtelierLocalSpawner.sessions_dir = "/srv/atelier/state/sessions"
        """,
    )

    _gpu_pool: ClassVar[GPUPool | None] = None

    gpu_ids: list[int]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gpu_ids = []
        self._cgroup: SessionCgroup | None = None

    # -- shared, loaded once per hub process -------------------------------------------

    @property
    def gpu_pool(self) -> GPUPool:
        cls = type(self)
        if cls._gpu_pool is None:
            cls._gpu_pool = GPUPool(detect_gpus())
        return cls._gpu_pool

    @property
    def _key(self) -> str:
        return f"{self.user.name}/{self.name}"

    # -- the spawn form and the request --------------------------------------------------

    @default("options_form")
    def _options_form_default(self):
        def form(spawner: AtelierLocalSpawner) -> str:
            pool = spawner.gpu_pool
            return render_profile_form(
                visible_profiles(spawner.profiles, spawner.groups()),
                free_gpus=len(pool.free()),
                total_gpus=len(pool.gpus),
            )

        return form

    def options_from_form(self, formdata):
        options = {"profile": (formdata.get("profile") or [""])[0]}
        # Checked here too, so the form page shows the refusal at once; the hub shows
        # str(error) above the form, hence a plain error with just the message.
        try:
            self._check(options)
        except web.HTTPError as exc:
            raise ValueError(exc.log_message) from None
        return options

    def _check(self, options: dict) -> Profile:
        """The requested profile, if this user may use it and its GPUs are free now.

        Raises HTTPError (400/403, see ProfileSpawnerMixin) or GPUUnavailable."""
        profile = self.resolve_request(options)
        pool = self.gpu_pool
        if profile.gpu_count and self._key not in pool.held:
            probe = f"check:{self._key}"
            pool.acquire(probe, profile.gpu_count, profile=profile.name)
            pool.release(probe)
        return profile

    def run_pre_spawn_hook(self):
        # Before anything starts: a bad request is refused here (the REST API answers
        # with the status and message) and the hub stays healthy.
        try:
            self.profile = self._check(self.user_options)
            self.gpu_ids = self.gpu_pool.acquire(self._key, self.profile.gpu_count, profile=self.profile.name)
        except GPUUnavailable as exc:
            raise web.HTTPError(409, str(exc), reason=str(exc)) from None
        return super().run_pre_spawn_hook()

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
        env["JUPYTER_CONFIG_PATH"] = str(Path(__file__).with_name("session_config"))
        # PySpark's workers and Ray's use the session's Python, not whatever is first on PATH.
        env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        if self.profile is not None:
            res = to_embedded(self.profile, host_cpus=os.cpu_count() or 1)
            env.update(
                session_env(
                    self.profile,
                    username=self.user.name,
                    services=self.deployment.services,
                    threads=res.threads,
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
        files = session_files(self.profile, username=self.user.name, services=self.deployment.services)
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
        try:
            return await super().start()
        except Exception:
            self.gpu_pool.release(self._key)
            raise

    async def stop(self, now=False):
        await super().stop(now=now)
        self.gpu_pool.release(self._key)
        if self._cgroup is not None:
            self._cgroup.remove()

    # -- state kept across hub restarts ------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.profile is not None:
            state["profile"] = self.profile.name
        if self.gpu_ids:
            state["gpu_ids"] = self.gpu_ids
        return state

    def load_state(self, state):
        super().load_state(state)
        name = state.get("profile")
        self.profile = self.profile_named(name)
        self.gpu_ids = list(state.get("gpu_ids", []))
        self.gpu_pool.restore(self._key, self.gpu_ids)

    def clear_state(self):
        super().clear_state()
        self.gpu_ids = []
