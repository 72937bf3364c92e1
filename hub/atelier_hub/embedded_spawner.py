"""What both embedded spawners (a local process, a container) share: the profile picker,
the GPU pool, and the checks a spawn request passes before anything starts.

Rule this module keeps: a request is checked once, the same way, whether it came from
the form (the refusal shows above the form) or the REST API (the status and message:
400/403 from :class:`ProfileSpawnerMixin`, 409 for GPUs that are not there or not free),
and a server's GPUs are held from its pre-spawn hook until it stops or fails to start.
"""

from __future__ import annotations

import html
from typing import ClassVar

from tornado import web
from traitlets import Unicode, default

from .gpus import GPUPool, GPUUnavailable, detect_gpus
from .profile_spawner import ProfileSpawnerMixin
from .profiles import Profile, format_memory, visible_profiles
from .services import Deployment

__all__ = ["EmbeddedSpawnerMixin", "render_profile_form"]


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
            self._check(options)
        except web.HTTPError as exc:
            raise ValueError(exc.log_message) from None
        except GPUUnavailable as exc:
            raise ValueError(str(exc)) from None
        return options

    def _check(self, options: dict) -> Profile:
        """The requested profile, if this user may use it and its GPUs are free now.

        Raises HTTPError (400/403, see ProfileSpawnerMixin) or GPUUnavailable."""
        profile = self.resolve_request(options)
        if profile.gpu_count:
            pool = self.gpu_pool
            if self._key not in pool.held:
                probe = f"check:{self._key}"
                pool.acquire(probe, profile.gpu_count, profile=profile.name)  # raises: no/too few GPUs
                pool.release(probe)
            self._check_gpu_session(profile)
        return profile

    def _check_gpu_session(self, profile: Profile) -> None:
        """What else a GPU profile needs in this spawner (raise GPUUnavailable); nothing here."""

    def run_pre_spawn_hook(self):
        # Before anything starts: a bad request is refused here (the REST API answers
        # with the status and message) and the hub stays healthy.
        try:
            self.profile = self._check(self.user_options)
            self.gpu_ids = self.gpu_pool.acquire(self._key, self.profile.gpu_count, profile=self.profile.name)
        except GPUUnavailable as exc:
            raise web.HTTPError(409, str(exc), reason=str(exc)) from None
        self.s3_keys = self._user_s3_keys()
        return super().run_pre_spawn_hook()

    def _user_s3_keys(self) -> dict[str, str] | None:
        if not self.state_dir or self.deployment.services.s3 is None:
            return None
        from .embedded import StateFolder
        from .services.s3 import SERVICE as S3
        from .services.s3 import S3AdminError

        try:
            return S3.accounts(StateFolder.load(self.state_dir)).for_user(self.user.name)
        except S3AdminError as exc:
            msg = f"Your S3 account could not be made: {exc}"
            raise web.HTTPError(503, msg, reason=msg) from None

    def session_services(self):
        """The deployment's services as this user's sessions see them: the S3 entry
        carries this user's own keys (never another user's or the store's root keys)."""
        from .services.s3 import with_keys

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
        if self.profile is not None:
            state["profile"] = self.profile.name
        if self.gpu_ids:
            state["gpu_ids"] = self.gpu_ids
        return state

    def load_state(self, state):
        super().load_state(state)
        self.profile = self.profile_named(state.get("profile"))
        self.gpu_ids = list(state.get("gpu_ids", []))
        self.gpu_pool.restore(self._key, self.gpu_ids)

    def clear_state(self):
        super().clear_state()
        self.gpu_ids = []
