"""What every Atelier spawner shares, local process or KubeSpawner alike.

Rule this module keeps: the profiles and the deployment settings are loaded once per
hub process from the two configured files, and a spawn request is checked against
them server-side by one method, :meth:`ProfileSpawnerMixin.check_request`, whatever the
form showed: 400 for an unknown profile, 403 for one outside the user's groups, 413 for
options past their size limit (:mod:`.input_limits`; the hub's HTTP server refuses such
a request before it is stored, this catches options stored by an older hub). A mode's
spawner extends that same method with what only it knows (free GPUs, a per-user GPU
limit: 409). The request is checked before anything starts (the pre-spawn hook), and the
profile it resolved is kept in the server's state, here and nowhere else. A server also
remembers the deployment settings it was started with; one re-adopted by a hub whose
settings differ (a service moved while the hub was down) is stopped rather than left
pointing at dead endpoints.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel
from tornado import web
from traitlets import Unicode
from traitlets.config import Configurable

from .input_limits import USER_OPTIONS_MAX, options_too_large, stored_size
from .jobs import RUNNER, JobError, check_submission, is_job, job_server
from .profiles import Profile, ProfileError, load_profiles, resolve_profile, session_cpus
from .settings import load_deployment
from .usage import record

__all__ = ["ProfileSpawnerMixin"]


class ProfileSpawnerMixin(Configurable):
    """Mixed in before the JupyterHub spawner class it extends."""

    profiles_dir = Unicode(
        config=True,
        help="""
        Folder of profile YAML files, loaded and validated when the hub starts.

            c.AtelierLocalSpawner.profiles_dir = "/srv/atelier/profiles"
        """,
    )
    usage_file = Unicode(
        "",
        config=True,
        help="""
        JSON-lines file the hub appends each server's start and stop to (user, profile,
        sizes), read by ``atelier usage`` and the usage page; empty: not recorded.

            c.AtelierLocalSpawner.usage_file = "/srv/atelier/state/usage.jsonl"
        """,
    )
    deployment_file = Unicode(
        config=True,
        help="""
        Deployment settings file (JSON or YAML) naming the services sessions use.

            c.AtelierLocalSpawner.deployment_file = "/srv/atelier/state/deployment.json"
        """,
    )

    # Per concrete spawner class: each reads its own configured files once.
    _profiles: ClassVar[list[Profile] | None] = None
    _deployment: ClassVar[BaseModel | None] = None
    #: the model of the deployment settings (``atelier_hub.services.Deployment``), named
    #: by each concrete spawner: the mode-free core knows no service
    deployment_model: ClassVar[type[BaseModel] | None] = None

    _deployment_digest: ClassVar[str | None] = None
    #: whether this spawner runs a job's command (spawn options with ``job``:
    #: :mod:`atelier_hub.jobs`); one that does not refuses them rather than start a server
    runs_jobs: ClassVar[bool] = False

    profile: Profile | None = None
    #: digest of the deployment settings this server was started with (kept in its state)
    started_digest: str | None = None

    @property
    def profiles(self) -> list[Profile]:
        cls = type(self)
        if cls._profiles is None:
            cls._profiles = load_profiles(self.profiles_dir)
        return cls._profiles

    @property
    def deployment(self) -> BaseModel:
        cls = type(self)
        if cls._deployment is None:
            model = cls.deployment_model
            if model is None:
                raise TypeError(f"{cls.__name__}.deployment_model is not set; a spawner class names the "
                                "deployment settings' model (atelier_hub.services.Deployment)")
            cls._deployment = load_deployment(self.deployment_file, model) if self.deployment_file else model()
        return cls._deployment

    @property
    def deployment_digest(self) -> str:
        """A digest of the deployment settings file: a server started under other
        settings (a service moved to another port while the hub was down) points at
        endpoints that may be dead, and is stopped rather than re-adopted."""
        cls = type(self)
        if cls._deployment_digest is None:
            data = Path(self.deployment_file).read_bytes() if self.deployment_file else b""
            cls._deployment_digest = hashlib.sha256(data).hexdigest()[:16]
        return cls._deployment_digest

    def usable_cpus(self) -> int | None:
        """The CPUs a session of this spawner can really use, where it knows them; None
        here: a pod gets its CPU limit on a node the scheduler picks with room for it."""
        return None

    @property
    def cpus(self) -> int:
        """This server's one CPU count (:func:`atelier_hub.profiles.session_cpus`): its
        thread pools, Spark and Ray."""
        return session_cpus(self.profile, usable=self.usable_cpus())

    def stale(self) -> bool:
        return bool(self.started_digest) and self.started_digest != self.deployment_digest

    _stopping_stale: bool = False

    async def start(self):
        self.started_digest = self.deployment_digest
        result = await super().start()
        self._record_usage("start")
        return result

    async def stop(self, now=False):
        try:
            return await super().stop(now=now)
        finally:
            self._record_usage("stop")

    def _record_usage(self, event: str) -> None:
        if not self.usage_file:
            return
        if event == "stop" and not getattr(self, "_usage_running", False):
            return  # a stop of a server that never started (or was already recorded as stopped)
        try:
            start = event == "start"
            record(self.usage_file, event, user=self.user.name, server=self.name or "",
                   profile=self.profile if start else None,
                   kind=("job" if is_job(self.name, self.user_options) else "server") if start else None,
                   groups=[g.name for g in self.user.groups] if start else None)
        except OSError as exc:  # a full disk must not fail a spawn; the log says what is missing
            self.log.error("usage not recorded for %s/%s (%s): %s", self.user.name, self.name, event, exc)
        self._usage_running = event == "start"

    async def poll(self):
        status = await super().poll()
        if status is None and self.stale() and is_job(self.name, self.user_options):
            # A job runs to its end: hours of work are not thrown away because a service
            # moved (a Trino whose port was still taken when the hub came back, say).
            if not getattr(self, "_stale_job_noted", False):
                self.log.warning("Keeping job %s/%s, started with other service endpoints than this hub's: "
                                 "a job runs to its end", self.user.name, self.name)
                self._stale_job_noted = True
        elif status is None and self.stale() and not self._stopping_stale:
            # stop() polls too: the flag keeps that poll from stopping again.
            self.log.warning("Stopping %s/%s: it was started with other service endpoints than this hub's",
                             self.user.name, self.name or "default")
            self._stopping_stale = True
            try:
                await self.stop()  # gracefully: the server shuts its kernels down
            finally:
                self._stopping_stale = False
            return 0
        return status

    # -- the request, checked before anything starts ---------------------------------------

    _configured_start_timeout: int | None = None

    def extend_start_timeout(self, seconds: int) -> None:
        """Give this start ``seconds`` more (a wait for capacity is not a slow start).
        Called from the pre-spawn hook: JupyterHub reads ``start_timeout`` after it."""
        if self._configured_start_timeout is None:
            self._configured_start_timeout = self.start_timeout
        self.start_timeout = self._configured_start_timeout + seconds

    def restore_start_timeout(self) -> None:
        """The configured ``start_timeout`` again, once the wait is over."""
        if self._configured_start_timeout is not None:
            self.start_timeout, self._configured_start_timeout = self._configured_start_timeout, None

    def run_pre_spawn_hook(self):
        # A refused request leaves nothing behind, and the REST API answers with the
        # status and message of check_request.
        self.profile = self.check_request(self.user_options)
        return super().run_pre_spawn_hook()

    # -- state kept across hub restarts -------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.profile is not None:
            state["profile"] = self.profile.name
        if self.started_digest:
            state["deployment"] = self.started_digest
        if getattr(self, "_usage_running", False):
            state["usage_running"] = True
        return state

    def load_state(self, state):
        super().load_state(state)
        self.profile = self.profile_named(state.get("profile"))
        self.started_digest = state.get("deployment")
        self._usage_running = bool(state.get("usage_running"))

    def clear_state(self):
        super().clear_state()
        self.profile = None
        self.started_digest = None

    def groups(self) -> set[str]:
        return {g.name for g in getattr(self.user, "groups", [])}

    def profile_named(self, name: str | None) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None) if name else None

    def check_request(self, options: dict | None) -> Profile:
        """The profile a request names (the default when none), if this user may start it now.

        Raises :class:`tornado.web.HTTPError` 400 (unknown), 403 (not in the user's groups)
        or 413 (options past their size limit); a mode's spawner extends this method with
        its own refusals (409), calling it first.
        """
        size = stored_size(options or {})
        if size > USER_OPTIONS_MAX:
            msg = options_too_large(size)
            raise web.HTTPError(413, msg, reason="Content Too Large")
        if "job" in (options or {}) and not self.runs_jobs:
            msg = ("job: this hub's sessions cannot run jobs (they need container sessions: start `atelier dev` "
                   "where a Docker engine runs); run the command in a session instead")
            raise web.HTTPError(400, msg, reason=msg)
        requested = (options or {}).get("profile")
        try:
            profile = resolve_profile(self.profiles, requested, groups=self.groups())
        except ProfileError as exc:
            known = isinstance(requested, str) and self.profile_named(requested) is not None
            raise web.HTTPError(403 if known else 400, str(exc), reason=str(exc)) from None
        self._check_job(options, profile)
        return profile

    # -- a job: the same server, its runner in place of jupyterhub-singleuser ---------------

    @property
    def job(self) -> dict | None:
        """The job this server runs (its spawn options' ``job``), or None: a session."""
        job = (self.user_options or {}).get("job")
        return job if isinstance(job, dict) else None

    def job_command(self, python: str) -> list[str]:
        """The container's command for :attr:`job`: the runner, run by the image's ``python``
        after the image's entrypoint (its start hook: the same session), with the job as
        its one argument."""
        job = self.job or {}
        return [python, "-c", RUNNER.read_text(),
                json.dumps({k: job[k] for k in ("name", "command", "cwd", "notebook", "parameters", "timeout")
                            if k in job})]

    def gpu_holds_for(self, profile: Profile, options: dict | None, *, records: Path | None) -> float | None:
        """Seconds a server or job of ``profile`` is expected to hold its GPUs once started,
        for the queue's ETAs (both modes): a job, as long as the user's last runs of it took,
        within its ``--timeout`` and ``max_age`` (:func:`~atelier_hub.capacity.expected_run`;
        ``records``: the jobs service's records, for their commands); a server, its
        profile's ``max_age``, else its ``idle_timeout``, the soonest the culler stops an
        unused one. None: nothing bounds it."""
        from .capacity import expected_run

        job = (options or {}).get("job") if isinstance(options, dict) else None
        if not is_job(self.name, options):
            return profile.culling.max_age or profile.idle_timeout
        history = self._job_history(records) if profile.gpu_count else []
        return expected_run(history, profile=profile.name, command=(job or {}).get("command"),
                            limits=((job or {}).get("timeout"), profile.culling.max_age))

    def _job_history(self, records: Path | None) -> list[dict]:
        """This user's finished jobs, oldest first: each one's profile and seconds from the
        usage records (the time it held its server, not its wait), and its command from
        the jobs service's record of it (in ``records``), where there is one."""
        from .jobs import JobRecord
        from .usage import finished_runs, read_events

        events = read_events(self.usage_file) if self.usage_file else []
        runs = finished_runs(events, user=self.user.name, kind="job")
        if not runs:
            return []
        commands = {}
        if records is not None:
            commands = {job_server(r.name): r.command for r in JobRecord.all(records, self.user.name)}
        return [{"profile": r.get("profile"), "command": commands.get(r.get("server")), "seconds": r["seconds"]}
                for r in runs]

    def _check_job(self, options: dict | None, profile: Profile) -> None:
        job = (options or {}).get("job")
        if job is None:
            return
        try:
            checked = check_submission({**job, "profile": profile.name} if isinstance(job, dict) else job,
                                       profile_names=[profile.name], taken=set())
        except JobError as exc:
            raise web.HTTPError(exc.status, f"job {exc.field}: {exc}", reason=str(exc)) from None
        if self.name != job_server(checked["name"]):
            msg = f"a job named {checked['name']!r} runs as the server {job_server(checked['name'])!r}, not {self.name!r}"
            raise web.HTTPError(400, msg, reason=msg)

    def get_args(self):
        # A job's runner takes its one argument (the job); a server's arguments are not its.
        return [] if self.job else super().get_args()
