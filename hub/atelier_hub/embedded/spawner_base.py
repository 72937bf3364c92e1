"""What both embedded spawners (a local process, a container) share: the profile picker,
the GPU pool and its queue, and the checks a spawn request passes before anything starts.

Rule this module keeps: a request is checked by one method, the same way, whether it
came from the form (the refusal shows above the form) or the REST API (the status and
message: 400/403/413 from :class:`ProfileSpawnerMixin`, 409 for GPUs that are not there,
never will be, or are past the user's own limit, naming what holds theirs). A GPU
request the pool cannot meet *now* is not refused: the spawn waits in the pool's queue
(:mod:`atelier_hub.capacity`'s order), its progress page showing its position and ETA,
until its GPUs are handed over; stopping it leaves the queue. A server's GPUs are held
from the moment they are handed over until it stops or fails to start.

JupyterHub's ``start_timeout`` counts from the call of ``start()``, which includes the
wait: a spawn that queues gets ``start_timeout + max_wait`` (the capacity settings) for
that start only, and the configured ``start_timeout`` again from the moment its GPUs
are handed over; a wait past ``max_wait`` ends with a message saying so, not a timeout.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from pathlib import Path
from typing import ClassVar

import jinja2
from tornado import web
from traitlets import Unicode, default

from ..capacity import SNAPSHOT_FILE, CapacitySettings, Holder, Request, group_of, load_capacity, ordinal, wait_text
from ..jobs import is_job
from ..profile_spawner import ProfileSpawnerMixin
from ..profiles import Profile, format_memory, visible_profiles
from ..services import Deployment
from .gpus import GPUPool

__all__ = ["EmbeddedSpawnerMixin", "SNAPSHOT_FILE", "capacity_note", "free_memory", "gpu_refusal",
           "render_profile_form"]



def gpu_refusal(message: str) -> web.HTTPError:
    """409: the GPUs a profile needs are not there, can never be free here, or are past the
    user's own limit."""
    return web.HTTPError(409, message, reason=message)


def capacity_notes(pool, profiles: list[Profile], *, probe, now: float) -> dict[str, str]:
    """Each profile's capacity line (:func:`capacity_note`) as ``pool``'s queue stands at
    ``now``, for the request ``probe(profile)`` (a GPU profile that would wait: its place
    and wait); the spawn form's and ``atelier profiles --free``'s."""
    memory, notes = free_memory(), {}
    for p in profiles:
        place, eta = None, ""
        if p.gpu_count and 0 < p.gpu_count <= len(pool.gpus):
            request = probe(p)
            if not pool.would_start_now(request):
                where = pool.place(request.key, now=now, extra=request)
                place, eta = where.position, wait_text(where.eta, now)
        notes[p.name] = capacity_note(p, free=len(pool.free()), total=len(pool.gpus), place=place, eta=eta,
                                      memory_free=memory)
    return notes


def free_memory() -> int | None:
    """Bytes of memory this machine can give a new session now (``MemAvailable``); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def capacity_note(profile: Profile, *, free: int, total: int, place: int | None = None, eta: str = "",
                  memory_free: int | None = None) -> str:
    """A card's capacity line (pure): ``place`` is the position a request of this profile
    would take in the queue (None: it fits now).

    >>> from atelier_hub.profiles import Profile
    >>> g = Profile(name="g", display_name="G", cpu={"limit": 8}, memory={"limit": "32G"}, gpu={"count": 1})
    >>> capacity_note(g, free=3, total=8), capacity_note(g, free=0, total=4, place=2, eta="about 25 min")
    ('3 of 8 GPUs free · fits now', '0 of 4 GPUs free · full: you would be 2nd in line, about 25 min')
    >>> capacity_note(g, free=0, total=0)
    'No GPU on this machine'
    >>> capacity_note(Profile(name="s", display_name="S", cpu={"limit": 8}, memory={"limit": "32G"},
    ...                       gpu={"count": 1, "shared": True}), free=4, total=4)
    "GPU slices come from a cluster's device plugin: not on this machine"
    """
    needs = profile.memory.guarantee
    if profile.gpu_slice:
        return "GPU slices come from a cluster's device plugin: not on this machine"
    if profile.gpu_count:
        if total == 0:
            return "No GPU on this machine"
        if profile.gpu_count > total:
            return f"needs {profile.gpu_count} GPUs; this machine has {total}"
        gpus = f"{free} of {total} GPUs free · "
    else:
        gpus = ""
    if needs and memory_free is not None and memory_free < needs:
        return (f"{gpus}not enough free memory now: {memory_free / 10**9:.1f}G free, "
                f"{format_memory(needs)} guaranteed")
    if place is not None:
        return f"{gpus}full: you would be {ordinal(place)} in line, {eta}"
    return f"{gpus}fits now"


def render_profile_form(profiles: list[Profile], *, notes: dict[str, str] | None = None) -> str:
    """HTML of the profile picker (``templates/profile_form.html``): one card per profile
    with its sizes and its capacity line from ``notes`` (pure).

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="cpu-small", display_name="Small", cpu={"limit": 2}, memory={"limit": "4G"})
    >>> 'value="cpu-small" checked' in render_profile_form([p], notes={"cpu-small": "fits now"})
    True
    """
    notes = notes or {}
    default = next((p.name for p in profiles if p.default), profiles[0].name if profiles else "")
    cards = [{"name": p.name, "display_name": p.display_name, "description": p.description,
              "cpu": f"{p.cpu.limit:g}", "memory": format_memory(p.memory.limit),
              "gpu": f"{p.gpu_count} × {p.gpu.type or 'GPU'}" if p.gpu else "none",
              "slice": p.gpu_slice,
              "note": notes.get(p.name, "")} for p in profiles]
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

    capacity_file = Unicode(
        "",
        config=True,
        help="""
        Capacity settings (JSON or YAML, :class:`atelier_hub.capacity.CapacitySettings`): the
        GPU pool's devices, the per-user GPU limit, the groups' fair share, the longest
        wait in the queue. Empty: the defaults (the GPUs nvidia-smi lists, no limit).

            c.AtelierDockerSpawner.capacity_file = "/srv/atelier/state/capacity.json"
        """,
    )

    _gpu_pool: ClassVar[GPUPool | None] = None
    _capacity: ClassVar[CapacitySettings | None] = None
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
            run = Path(self.state_dir) if self.state_dir else None
            from ..services.culler import PLAN_FILE

            cls._gpu_pool = GPUPool.from_settings(
                self.capacity, plan_file=run / PLAN_FILE if run else None,
                snapshot_file=run / SNAPSHOT_FILE if run else None)
        return cls._gpu_pool

    @property
    def capacity(self) -> CapacitySettings:
        cls = type(self)
        if cls._capacity is None:
            cls._capacity = load_capacity(self.capacity_file) if self.capacity_file else CapacitySettings()
        return cls._capacity

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
            profiles = visible_profiles(spawner.profiles, spawner.groups())
            return render_profile_form(profiles, notes=spawner.capacity_notes(profiles))

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

    def capacity_notes(self, profiles: list[Profile], *, now: float | None = None) -> dict[str, str]:
        """Each profile's capacity line for this user, as the queue stands now."""
        now = time.time() if now is None else now
        return capacity_notes(self.gpu_pool, profiles, now=now,
                              probe=lambda p: self._gpu_request(p, key=f"{self.user.name}/\0form", since=now))

    def _gpu_request(self, profile: Profile, *, key: str | None = None, since: float | None = None,
                     options: dict | None = None) -> Request:
        """This server's request for ``profile``'s GPUs: its group, kind and how long it
        is expected to hold them (:meth:`gpu_holds_for`)."""
        options = self.user_options if options is None else options
        runs_for = self.gpu_holds_for(profile, options,
                                      records=Path(self.state_dir) / "jobs" if self.state_dir else None)
        return Request(key=key or self._key, user=self.user.name, group=group_of(self.groups(), self.capacity),
                       gpus=profile.gpu_count, since=time.time() if since is None else since,
                       kind="job" if is_job(self.name, options) else "server", runs_for=runs_for)

    def check_request(self, options: dict | None) -> Profile:
        """The requested profile, if this user may use it and its GPUs can ever be met here.

        Raises HTTPError: 400/403/413 (see ProfileSpawnerMixin), 409 for GPUs that are
        not there, more than the pool has, or past the user's own GPU limit (naming what
        holds theirs). GPUs that are only busy now are not refused: the spawn waits."""
        profile = super().check_request(options)
        if profile.gpu_slice:
            raise gpu_refusal(f"Profile {profile.name!r} asks for {profile.gpu_slice}; GPU slices are handed out by a "
                              "cluster's NVIDIA device plugin, which this machine has not. Choose a whole-GPU or a "
                              "CPU profile.")
        if profile.gpu_count:
            pool = self.gpu_pool
            if self._key not in pool.held:
                why = pool.refusal(self._gpu_request(profile, options=options), profile=profile.name)
                if why:
                    raise gpu_refusal(why)
        return profile

    #: the pending hand-over of this server's GPUs while it waits in the queue
    _grant: asyncio.Future | None = None

    def run_pre_spawn_hook(self):
        # The request is checked first (ProfileSpawnerMixin: self.profile), then this
        # server's GPUs are asked for (held at once, or a place in the queue) and its S3
        # keys made, before anything starts.
        result = super().run_pre_spawn_hook()
        self._grant = None
        if self.profile.gpu_count:
            got = self.gpu_pool.request(self._gpu_request(self.profile))
            if isinstance(got, list):
                self.gpu_ids = got
            else:
                self._grant = got
                self.extend_start_timeout(self.capacity.max_wait)
                self.log.info("%s waits for %d GPU(s): %s", self._key, self.profile.gpu_count,
                              self._queue_message())
        try:
            self.s3_keys = self._user_s3_keys()
        except BaseException:  # nothing starts: the GPUs or the place in line go too
            self.gpu_pool.leave(self._key)
            self.gpu_pool.release(self._key)
            raise
        return result

    def _queue_message(self) -> str:
        place = self.gpu_pool.place(self._key)
        if place is None:
            return "your GPUs are being handed over"
        n = self.profile.gpu_count
        return (f"Waiting for {n} GPU{'s' if n != 1 else ''}: {ordinal(place.position)} in line "
                f"({place.waiting} waiting, {place.total - place.free} of {place.total} GPUs in use), "
                f"{wait_text(place.eta, time.time())}")

    async def _wait_for_gpus(self) -> None:
        grant, max_wait = self._grant, self.capacity.max_wait
        try:
            self.gpu_ids = await asyncio.wait_for(asyncio.shield(grant), max_wait)
        except asyncio.TimeoutError:
            msg = (f"Waited {max_wait // 60} min in the queue for {self.profile.gpu_count} GPU(s) and none came "
                   "free: start it again later, or choose a smaller profile (the capacity settings' max_wait)")
            raise web.HTTPError(503, msg, reason=msg) from None
        finally:
            self.gpu_pool.leave(self._key) if self._key not in self.gpu_pool.held else None
            self.restore_start_timeout()
            self._grant = None

    async def progress(self):
        """The queue's position and ETA while this spawn waits (a line each time they
        change), then the spawner's own progress."""
        last = None
        while self._grant is not None and not self._grant.done():
            message = self._queue_message()
            if message != last:
                yield {"progress": 5, "message": message}
                last = message
            await asyncio.wait([self._grant], timeout=2)
        async for event in super().progress():
            yield event

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

    async def wait_for_gpus(self) -> None:
        """Wait for this server's GPUs where it is queued (at once otherwise). A spawner
        calls it before it builds anything from ``gpu_ids`` (the container's device
        requests); the mixin's ``start`` calls it in any case. A cancel or ``max_wait``
        takes the request out of the queue."""
        if self._grant is None:
            return
        await self._wait_for_gpus()
        self.log.info("%s got GPU(s) %s from the queue", self._key, self.gpu_ids)
        self._handed_over = True

    _handed_over: bool = False

    async def start(self):
        try:
            await self.wait_for_gpus()
            if self._handed_over:
                self._handed_over = False
                # The configured start_timeout again, from the hand-over.
                return await asyncio.wait_for(super().start(), self.start_timeout)
            return await super().start()
        except BaseException:  # a failure, or a stop that cancelled the spawn: out of the queue too
            self.gpu_pool.leave(self._key)
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
        if self.gpu_ids:
            self.gpu_pool.restore(self._key, self.gpu_ids, holder=Holder(
                key=self._key, user=self.user.name, group=group_of(self.groups(), self.capacity),
                gpus=len(self.gpu_ids), kind="job" if is_job(self.name, self.user_options) else "server"))

    def clear_state(self):
        super().clear_state()
        self.gpu_ids = []
