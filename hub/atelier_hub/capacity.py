"""GPU capacity and the queue's order: who starts next when GPUs free up, as pure functions.

Rule this module keeps: one order, computed here and nowhere else, decides which
waiting server or job gets the next free GPUs (:func:`queue_order`), and the queue
admits strictly in that order (:func:`admissible`); the same order gives each waiting
request its position and its ETA (:func:`etas`). The embedded hub keeps the queue
itself (:class:`atelier_hub.embedded.gpus.GPUPool`) and asks these functions; nothing
here does I/O or reads a clock.

The order, as the settings (:class:`CapacitySettings`) state it:

- each group (a hub group named in ``groups``; a user in none of them is in
  ``default_group``) has a ``weight`` and ``guaranteed_gpus``;
- a group's *standing* is ``(GPUs it holds - guaranteed_gpus) / weight``: negative while
  below its guarantee, and above it, its use beyond the guarantee per unit of weight;
- the next request is the head of the group with the lowest standing (the one furthest
  below its share); ties go to the earlier request. Within a group: first come, first
  served. The order is built one request at a time, each pick counting for its group
  as if it held its GPUs already, so two under-served groups take turns;
- admission is strict: a request that needs more GPUs than are free holds those
  behind it (no back-filling), so a 4-GPU request is not starved by 1-GPU ones.

A user over ``gpus_per_user`` (what they hold plus what they wait for) is refused at
once, naming their own holders (:func:`over_limit`); they are never queued.

ETA (:func:`etas`): each holder's GPUs come back at its known end (a server's idle-cull
deadline or ``max_age``; a job's expected length, :func:`expected_run`: the median of the
user's last runs of the same command on the same profile, else on that profile, capped by
its ``--timeout`` and ``max_age``, which stand alone where there is no history); the queue is walked in order, each
request starting when enough GPUs have come back for it and those ahead of it, and
its own expected end then counted in turn. A holder with no known end (a job without
a timeout) never gives its GPUs back in this reckoning; a request that cannot start
within it has no ETA ("unknown"). It is an estimate: a user who stops early makes it
pessimistic, an Extend click or GPU activity optimistic.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from .schema import StrictModel

__all__ = ["CAPACITY_FILE", "CapacityError", "CapacitySettings", "GroupShare", "Holder", "Request", "SNAPSHOT_FILE",
           "admissible", "etas", "expected_run",
           "group_of", "load_capacity", "ordinal", "over_limit", "queue_order", "standing", "wait_text"]

#: the capacity settings `atelier dev --capacity FILE` was given, validated, in the state folder
CAPACITY_FILE = "capacity.json"
#: the queue as the embedded hub last saw it, in the state folder (``atelier profiles
#: --free``, the home page and the jobs service read it)
SNAPSHOT_FILE = "run/capacity.json"


class CapacityError(ValueError):
    """The capacity settings are invalid; the message names the field and the fix."""


class GroupShare(StrictModel):
    """One team's share of the GPU pool."""

    weight: float = Field(1.0, gt=0, description="The group's weight in fair sharing: above their guarantees, "
                          "two groups of weights 2 and 1 get GPUs 2 to 1.")
    guaranteed_gpus: int = Field(0, ge=0, description="GPUs the group gets first whenever it holds fewer and "
                                 "asks for more (Kueue's nominal quota); 0: none guaranteed.")


class CapacitySettings(StrictModel):
    """The GPU pool of an embedded stack and how it is shared (`atelier dev --capacity FILE`)."""

    gpu_devices: list[int] | None = Field(
        None, description="Device ids of the GPU pool, e.g. `[0, 1, 2, 3]`; null: the GPUs `nvidia-smi` lists. "
        "A list given here stands in for devices: each id is handed to one session at a time as "
        "`CUDA_VISIBLE_DEVICES` (the queue tests run on ids no GPU backs).")
    gpus_per_user: int | None = Field(
        None, ge=1, description="GPUs one user may hold and wait for at once, servers and jobs together; a "
        "request past it is refused naming what holds them; null: the pool's size.")
    groups: dict[str, GroupShare] = Field(
        default_factory=dict, description="Fair share per hub group: `{team-a: {weight: 1, guaranteed_gpus: 2}}`. "
        "A user in several is counted in the first listed here.")
    default_group: str = Field("everyone", description="The group of users in none of `groups` (weight 1, "
                               "nothing guaranteed unless listed in `groups`).")
    ray_workers_per_user: int = Field(
        4, ge=0, description="Ray workers one user may run at once in personal Ray clusters (`ray_cluster()`, "
        "`atelier ray up`), over all their sessions; each is a container sized by the profile asked for. "
        "0: no personal clusters.")
    max_wait: int = Field(86400, ge=60, description="Seconds a spawn may wait in the queue; after that it "
                          "leaves the queue with a message saying so (never a spawn timeout).")

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value: dict[str, GroupShare]) -> dict[str, GroupShare]:
        for name in value:
            if not name.strip():
                raise ValueError("a group name is empty: name the hub group, e.g. team-a")
        return value

    @field_validator("gpu_devices")
    @classmethod
    def _distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if len(set(value)) != len(value):
                raise ValueError(f"{value} lists a device twice: name each device id once")
            if any(i < 0 for i in value):
                raise ValueError(f"{value} has a negative id: device ids are 0, 1, 2, ...")
        return value

    @model_validator(mode="after")
    def _guarantees_fit(self) -> CapacitySettings:
        if self.gpu_devices is not None:
            self.check_pool(len(self.gpu_devices))
        return self

    def share(self, group: str) -> GroupShare:
        return self.groups.get(group, GroupShare())

    def check_pool(self, total: int) -> None:
        """Raise ValueError when the guarantees add up to more GPUs than the pool has."""
        promised = sum(g.guaranteed_gpus for g in self.groups.values())
        if promised > total:
            raise ValueError(f"groups guarantee {promised} GPUs but the pool has {total}: lower "
                             "groups.*.guaranteed_gpus or add devices")


def load_capacity(path: str | Path) -> CapacitySettings:
    """Read capacity settings (JSON or YAML); :class:`CapacityError` names the field and the fix."""
    from .settings import load_settings_file

    return load_settings_file(path, CapacitySettings, what="capacity settings", error=CapacityError)


@dataclass(frozen=True)
class Request:
    """A server or job waiting for GPUs."""

    key: str  # "user/server"
    user: str
    group: str
    gpus: int
    since: float  # when it asked (seconds, any clock shared with ``now``)
    kind: str = "server"  # or "job"
    #: seconds it is expected to hold its GPUs once started (None: unknown)
    runs_for: float | None = None


@dataclass(frozen=True)
class Holder:
    """A server or job holding GPUs."""

    key: str
    user: str
    group: str
    gpus: int
    kind: str = "server"
    #: when its GPUs are expected back (None: unknown)
    ends_at: float | None = None


def group_of(user_groups: set[str] | list[str], settings: CapacitySettings) -> str:
    """The group a user counts in: the first of ``settings.groups`` they belong to, else the default.

    >>> s = CapacitySettings(groups={"b": {}, "a": {}})
    >>> group_of({"a", "b"}, s), group_of(set(), s)
    ('b', 'everyone')
    """
    return next((name for name in settings.groups if name in set(user_groups)), settings.default_group)


def standing(group: str, held: int, settings: CapacitySettings) -> float:
    """How far a group is from its share: negative below its guarantee (pure).

    >>> s = CapacitySettings(groups={"a": {"weight": 2, "guaranteed_gpus": 1}})
    >>> standing("a", 0, s), standing("a", 5, s), standing("other", 2, s)
    (-0.5, 2.0, 2.0)
    """
    share = settings.share(group)
    return (held - share.guaranteed_gpus) / share.weight


def queue_order(waiting: list[Request], holders: list[Holder], settings: CapacitySettings) -> list[Request]:
    """Every waiting request in the order they get GPUs (module docstring: the rule)."""
    held: dict[str, int] = defaultdict(int)
    for h in holders:
        held[h.group] += h.gpus
    lines: dict[str, list[Request]] = defaultdict(list)
    for r in sorted(waiting, key=lambda r: (r.since, r.key)):
        lines[r.group].append(r)
    order: list[Request] = []
    while any(lines.values()):
        heads = [line[0] for line in lines.values() if line]
        pick = min(heads, key=lambda r: (standing(r.group, held[r.group], settings), r.since, r.key))
        order.append(pick)
        lines[pick.group].pop(0)
        held[pick.group] += pick.gpus
    return order


def admissible(waiting: list[Request], holders: list[Holder], settings: CapacitySettings,
               free: int) -> list[Request]:
    """The requests that start now: the head of :func:`queue_order` while it fits in ``free``."""
    started = []
    for r in queue_order(waiting, holders, settings):
        if r.gpus > free:
            break
        started.append(r)
        free -= r.gpus
    return started


def etas(order: list[Request], holders: list[Holder], *, free: int, now: float) -> dict[str, float | None]:
    """When each request of ``order`` is expected to start (module docstring: how); None: unknown."""
    releases = [(max(h.ends_at, now), h.gpus) for h in holders if h.ends_at is not None]
    heapq.heapify(releases)
    out: dict[str, float | None] = {}
    t, avail = now, free
    for i, r in enumerate(order):
        while avail < r.gpus and releases:
            end, n = heapq.heappop(releases)
            t, avail = max(t, end), avail + n
        if avail < r.gpus:
            out.update({later.key: None for later in order[i:]})
            break
        avail -= r.gpus
        out[r.key] = t
        if r.runs_for is not None:
            heapq.heappush(releases, (t + r.runs_for, r.gpus))
    return out


#: how many of a user's latest finished jobs :func:`expected_run` takes the median of
HISTORY_RUNS = 5


def expected_run(history: list[dict], *, profile: str, command: list[str] | None,
                 limits: tuple[float | None, ...] = ()) -> float | None:
    """How long a job is expected to hold its GPUs, in seconds (pure): the median of the
    last :data:`HISTORY_RUNS` of ``history`` (the user's finished jobs, oldest first, each
    ``{"profile", "command", "seconds"}``) with the same command on the same profile, else
    of those on the same profile; capped by ``limits`` (its ``--timeout``, the profile's
    ``max_age``: a job ends there at the latest), which alone decide without history.
    None: nothing known.

    >>> h = [{"profile": "gpu-1", "command": ["python", "a.py"], "seconds": s} for s in (600, 900, 1200)]
    >>> h.append({"profile": "gpu-1", "command": ["python", "b.py"], "seconds": 60})
    >>> expected_run(h, profile="gpu-1", command=["python", "a.py"])
    900
    >>> expected_run(h, profile="gpu-1", command=["python", "c.py"], limits=(None, 700))
    700
    >>> expected_run(h, profile="gpu-4", command=None, limits=(3600,)), expected_run([], profile="x", command=None)
    (3600, None)
    """
    same_profile = [r for r in history if r.get("profile") == profile and r.get("seconds") is not None]
    same = [r for r in same_profile if command is not None and r.get("command") == command] or same_profile
    known = [x for x in limits if x]
    if not same:
        return min(known) if known else None
    seconds = sorted(r["seconds"] for r in same[-HISTORY_RUNS:])
    typical = seconds[len(seconds) // 2]
    return min([typical, *known])


def over_limit(user: str, gpus: int, *, key: str, holders: list[Holder], waiting: list[Request],
               limit: int | None) -> str | None:
    """Why ``user`` may not ask for ``gpus`` more (their own holders named), or None when they may.

    >>> h = [Holder("ann/a", "ann", "everyone", 1), Holder("ann/job-t", "ann", "everyone", 1, kind="job")]
    >>> over_limit("ann", 1, key="ann/b", holders=h, waiting=[], limit=2).split(": ", 2)[2]
    'server a (1 GPU), job t (1 GPU). Stop one of them, or wait for it to end.'
    """
    if limit is None:
        return None
    mine = [(x.key, x.kind, x.gpus, "") for x in holders if x.user == user and x.key != key]
    mine += [(x.key, x.kind, x.gpus, ", waiting") for x in waiting if x.user == user and x.key != key]
    used = sum(n for _, _, n, _ in mine)
    if used + gpus <= limit:
        return None
    if gpus > limit:
        return (f"this profile needs {gpus} GPUs and you may hold {limit} at a time: choose a smaller profile, or "
                "ask an admin to raise gpus_per_user (the capacity or cluster settings)")

    def label(key: str, kind: str) -> str:
        name = key.split("/", 1)[1] or "default"
        return f"job {name.removeprefix('job-')}" if kind == "job" else f"server {name}"

    held = ", ".join(f"{label(k, kind)} ({n} GPU{'s' if n != 1 else ''}{note})" for k, kind, n, note in mine)
    return (f"GPU limit reached: you may hold {limit} GPU{'s' if limit != 1 else ''} at a time, and these hold "
            f"{used}: {held}. Stop one of them, or wait for it to end.")


def ordinal(n: int) -> str:
    """``2nd`` for 2, as a position is said (pure).

    >>> [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22)]
    ['1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '22nd']
    """
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def wait_text(eta: float | None, now: float) -> str:
    """``about 25 min`` / ``any moment`` / ``unknown`` for an ETA (pure).

    >>> wait_text(1000 + 25 * 60, 1000), wait_text(1010, 1000), wait_text(None, 0)
    ('about 25 min', 'any moment', 'time unknown')
    """
    if eta is None:
        return "time unknown"
    minutes = round((eta - now) / 60)
    return "any moment" if minutes < 1 else f"about {minutes} min"
