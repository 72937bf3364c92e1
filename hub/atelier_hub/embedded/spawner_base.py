"""What both embedded spawners (a local process, a container) share: the profile picker,
the GPU pool, and the checks a spawn request passes before anything starts.

Rule this module keeps: a request is checked by one method, the same way, whether it
came from the form (the refusal shows above the form) or the REST API (the status and
message: 400/403/413 from :class:`ProfileSpawnerMixin`, 409 for GPUs that are not there
or not free), and a server's GPUs are held from its pre-spawn hook until it stops or
fails to start.
"""

from __future__ import annotations

import functools
import os
from typing import ClassVar

import jinja2
from tornado import web
from traitlets import Unicode, default

from ..profile_spawner import ProfileSpawnerMixin
from ..profiles import Profile, format_memory, visible_profiles
from ..services import Deployment
from .gpus import GPUPool, GPUUnavailable, detect_gpus

__all__ = ["EmbeddedSpawnerMixin", "gpu_refusal", "render_profile_form"]


def gpu_refusal(message: str) -> web.HTTPError:
    """409: the GPUs a profile needs are not there, not free, or not usable here."""
    return web.HTTPError(409, message, reason=message)


def _gpu_note(profile: Profile, free: int, total: int) -> str:
    if not profile.gpu_count:
        return ""
    if total == 0:
        return "No GPU on this machine"
    return f"{free} of {total} GPUs free"


def render_profile_form(profiles: list[Profile], *, free_gpus: int, total_gpus: int) -> str:
    """HTML of the profile picker (``templates/profile_form.html``): one card per profile
    with its sizes (pure).

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-small", display_name="Small", cpu={"limit": 2}, memory={"limit": "4G"})
    >>> 'value="cpu-small" checked' in render_profile_form([p], free_gpus=0, total_gpus=0)
    True
    """
    default = next((p.name for p in profiles if p.default), profiles[0].name if profiles else "")
    cards = [{"name": p.name, "display_name": p.display_name, "description": p.description,
              "cpu": f"{p.cpu.limit:g}", "memory": format_memory(p.memory.limit),
              "gpu": f"{p.gpu_count} × {p.gpu.type or 'GPU'}" if p.gpu else "none",
              "note": _gpu_note(p, free_gpus, total_gpus)} for p in profiles]
    return _form_template().render(cards=cards, default=default)


@functools.cache
def _form_template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("atelier_hub.embedded.state_folder", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("profile_form.html")


class EmbeddedSpawnerMixin(ProfileSpawnerMixin):
    """Mixed in before an embedded spawner's JupyterHub base class."""

    state_dir = Unicode(
        "",
        config=True,
        help="""
        The embedded stack's state folder: its S3 store makes each user an account of
        their own at their first spawn (:class:`atelier_hub.services.s3_accounts.S3Accounts`), and
        their sessions get that account's keys. Empty: sessions get the deployment
        settings' keys, if any.

            c.AtelierDockerSpawner.state_dir = "/srv/atelier/state"
        """,
    )

    _gpu_pool: ClassVar[GPUPool | None] = None
    deployment_model = Deployment

    gpu_ids: list[int]
    #: this user's own S3 keys, from the pre-spawn hook
    s3_keys: dict[str, str] | None = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gpu_ids = []

    # -- shared, loaded once per hub process -------------------------------------------

    @property
    def gpu_pool(self) -> GPUPool:
        cls = type(self)
        if cls._gpu_pool is None:
            cls._gpu_pool = GPUPool(detect_gpus())
        return cls._gpu_pool

    def usable_cpus(self) -> int:
        # Every session runs on this machine: more threads than its cores only contend.
        return os.cpu_count() or 1

    @property
    def _key(self) -> str:
        return f"{self.user.name}/{self.name}"

    # -- the spawn form and the request --------------------------------------------------

    @default("options_form")
    def _options_form_default(self):
        def form(spawner: EmbeddedSpawnerMixin) -> str:
            pool = spawner.gpu_pool
            return render_profile_form(visible_profiles(spawner.profiles, spawner.groups()),
                                       free_gpus=len(pool.free()), total_gpus=len(pool.gpus))

        return form

    def options_from_form(self, formdata):
        options = {"profile": (formdata.get("profile") or [""])[0]}
        # Checked here too, so the form page shows the refusal at once; the hub shows
        # str(error) above the form, hence a plain error with just the message.
        try:
            self.check_request(options)
        except web.HTTPError as exc:
            raise ValueError(exc.log_message) from None
        return options

    def check_request(self, options: dict | None) -> Profile:
        """The requested profile, if this user may use it and its GPUs are free now.

        Raises HTTPError: 400/403/413 (see ProfileSpawnerMixin), 409 for GPUs that are
        not there or not free."""
        profile = super().check_request(options)
        if profile.gpu_count:
            pool = self.gpu_pool
            if self._key not in pool.held:
                probe = f"check:{self._key}"
                try:
                    pool.acquire(probe, profile.gpu_count, profile=profile.name)  # raises: no/too few GPUs
                except GPUUnavailable as exc:
                    raise gpu_refusal(str(exc)) from None
                pool.release(probe)
        return profile

    def run_pre_spawn_hook(self):
        # The request is checked first (ProfileSpawnerMixin: self.profile), then this
        # server's GPUs are held and its S3 keys made, before anything starts.
        result = super().run_pre_spawn_hook()
        try:
            self.gpu_ids = self.gpu_pool.acquire(self._key, self.profile.gpu_count, profile=self.profile.name)
        except GPUUnavailable as exc:  # taken since the check
            raise gpu_refusal(str(exc)) from None
        self.s3_keys = self._user_s3_keys()
        return result

    def _user_s3_keys(self) -> dict[str, str] | None:
        if not self.state_dir or self.deployment.services.s3 is None:
            return None
        from ..services.s3 import SERVICE as S3
        from ..services.s3 import S3AdminError
        from .state_folder import StateFolder

        try:
            return S3.accounts(StateFolder.load(self.state_dir)).for_user(self.user.name)
        except S3AdminError as exc:
            msg = f"Your S3 account could not be made: {exc}"
            raise web.HTTPError(503, msg, reason=msg) from None

    def session_services(self):
        """The deployment's services as this user's sessions see them: the S3 entry
        carries this user's own keys (never another user's or the store's root keys)."""
        from ..services.s3 import with_keys

        services = self.deployment.services
        if not self.state_dir:
            return services
        return with_keys(services, self.s3_keys)

    # -- GPUs held while the server lives ------------------------------------------------

    async def start(self):
        try:
            return await super().start()
        except Exception:
            self.gpu_pool.release(self._key)
            raise

    async def stop(self, now=False):
        await super().stop(now=now)
        self.gpu_pool.release(self._key)

    # -- state kept across hub restarts ------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.gpu_ids:
            state["gpu_ids"] = self.gpu_ids
        return state

    def load_state(self, state):
        super().load_state(state)
        self.gpu_ids = list(state.get("gpu_ids", []))
        self.gpu_pool.restore(self._key, self.gpu_ids)

    def clear_state(self):
        super().clear_state()
        self.gpu_ids = []
