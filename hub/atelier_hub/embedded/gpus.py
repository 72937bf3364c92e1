"""GPUs of this machine, for the embedded spawner, and the queue in front of them.

Rule this module keeps: a GPU is handed to one session at a time, and never silently
fewer than asked. A request that can never be met here (no GPU, more than the pool
has, past the user's own limit) is refused at once with the reason; one that cannot
be met *now* waits in the pool's queue, and GPUs that free up go to waiting requests
in the order of :func:`atelier_hub.capacity.queue_order`, and only in that order. The
pool's devices are the capacity settings' ``gpu_devices`` where given (ids no GPU
needs to back: the queue tests'), else what ``nvidia-smi`` lists.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from ..capacity import (
    CapacitySettings,
    Holder,
    Request,
    admissible,
    etas,
    over_limit,
    queue_order,
)

__all__ = ["detect_gpus", "GPUPool", "GPUUnavailable", "Place"]


class GPUUnavailable(RuntimeError):
    """A GPU profile cannot get its GPUs on this machine, now or ever."""


def detect_gpus(timeout: float = 10.0) -> list[tuple[int, str]]:
    """(index, name) of each NVIDIA GPU that ``nvidia-smi`` reports; [] without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=timeout, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            gpus.append((int(index), name.strip()))
    return gpus


@dataclass(frozen=True)
class Place:
    """Where a request stands: its position (1: next), how many wait, its ETA."""

    position: int
    waiting: int
    eta: float | None
    free: int
    total: int


@dataclass
class GPUPool:
    """Which of the machine's GPUs each server holds (server key -> GPU indexes), and
    which servers wait for some (:mod:`atelier_hub.capacity`'s order)."""

    gpus: list[tuple[int, str]]
    settings: CapacitySettings = field(default_factory=CapacitySettings)
    held: dict[str, list[int]] = field(default_factory=dict)
    #: what each holder is (its user, group, kind, expected end)
    holders: dict[str, Holder] = field(default_factory=dict)
    waiting: dict[str, Request] = field(default_factory=dict)
    #: the culler's plan (``user/server`` -> its ``cull_at``): servers' ends for ETAs
    plan_file: Path | None = None
    #: written at each change, for ``atelier profiles --free`` (the CLI runs apart from the hub)
    snapshot_file: Path | None = None
    _grants: dict[str, asyncio.Future] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: CapacitySettings, **kw) -> GPUPool:
        if settings.gpu_devices is not None:
            gpus = [(i, "device from the capacity settings") for i in settings.gpu_devices]
        else:
            gpus = detect_gpus()
        return cls(gpus, settings=settings, **kw)

    @classmethod
    def from_snapshot(cls, data: dict | None, settings: CapacitySettings, *, plan_file: Path | None = None) -> GPUPool:
        """The pool as a hub saved it (:meth:`_save`), to reckon with apart from the hub (the
        CLI); ``None``: the settings' devices (or nvidia-smi's), nothing held or waiting."""
        if data is None:
            return cls.from_settings(settings, plan_file=plan_file)
        return cls([(i, "") for i in data["devices"]], settings=settings, plan_file=plan_file,
                   held={k: list(v) for k, v in data["held"].items()},
                   holders={h["key"]: Holder(**h) for h in data["holders"]},
                   waiting={r["key"]: Request(**r) for r in data["waiting"]})

    def free(self) -> list[int]:
        taken = {i for ids in self.held.values() for i in ids}
        return [i for i, _ in self.gpus if i not in taken]

    # -- refusals that do not wait -------------------------------------------------------

    def refusal(self, request: Request, *, profile: str) -> str | None:
        """Why ``request`` can never be met here, or None (then it runs or waits)."""
        count, total = request.gpus, len(self.gpus)
        if not self.gpus:
            return (f"Profile {profile!r} needs {count} GPU(s), but this machine has no NVIDIA GPU "
                    "(nvidia-smi found none). Choose a CPU profile.")
        if count > total:
            return (f"Profile {profile!r} needs {count} GPU(s) and this machine has {total}: it can never "
                    "start here. Choose a smaller profile.")
        limit = self.settings.gpus_per_user
        return over_limit(request.user, count, key=request.key, holders=list(self.holders.values()),
                          waiting=list(self.waiting.values()), limit=limit)

    # -- the queue -------------------------------------------------------------------------

    def request(self, request: Request) -> list[int] | asyncio.Future:
        """The GPUs at once where ``request`` is first in line and they are free, else a
        future of them (the request waits; :meth:`leave` takes it out)."""
        if request.key in self.held:
            return self.held[request.key]
        self.waiting[request.key] = request
        self._admit()
        if request.key in self.held:
            return self.held[request.key]
        future = asyncio.get_running_loop().create_future()
        self._grants[request.key] = future
        self._save()
        return future

    def leave(self, key: str) -> None:
        """Take a waiting request out of the queue (a cancelled spawn); those behind it move up."""
        self.waiting.pop(key, None)
        future = self._grants.pop(key, None)
        if future is not None and not future.done():
            future.cancel()
        self._admit()
        self._save()

    def _admit(self) -> None:
        now = time.time()
        for r in admissible(list(self.waiting.values()), list(self.holders.values()), self.settings,
                            len(self.free())):
            ids = self.free()[:r.gpus]
            self.held[r.key] = ids
            self.holders[r.key] = Holder(key=r.key, user=r.user, group=r.group, gpus=r.gpus, kind=r.kind,
                                         ends_at=now + r.runs_for if r.runs_for is not None else None)
            del self.waiting[r.key]
            future = self._grants.pop(r.key, None)
            if future is not None and not future.done():
                future.set_result(ids)
        self._save()

    def restore(self, key: str, ids: list[int], *, holder: Holder | None = None) -> None:
        """Record GPUs a server already held before a hub restart."""
        if ids:
            self.held[key] = list(ids)
            self.holders[key] = holder or Holder(key=key, user=key.split("/", 1)[0],
                                                 group=self.settings.default_group, gpus=len(ids))
            self._save()

    def release(self, key: str) -> None:
        self.held.pop(key, None)
        self.holders.pop(key, None)
        self._admit()

    # -- where a request stands ---------------------------------------------------------

    def _holders_now(self) -> list[Holder]:
        """The holders, each server's end from the culler's latest decision where it has one."""
        try:
            plan = json.loads(self.plan_file.read_text()) if self.plan_file else {}
        except (OSError, ValueError):
            plan = {}
        out = []
        for h in self.holders.values():
            user, _, server = h.key.partition("/")
            decided = plan.get(f"{user}/{server}" if server else user) or {}
            if h.kind == "server" and decided.get("cull_at"):
                try:
                    h = Holder(**{**asdict(h), "ends_at": datetime.fromisoformat(decided["cull_at"]).timestamp()})
                except ValueError:
                    pass
            out.append(h)
        return out

    def place(self, key: str, *, now: float | None = None, extra: Request | None = None) -> Place | None:
        """Where the waiting request ``key`` stands (``extra``: a request not made yet, to
        say where it would stand); None when it is not waiting."""
        now = time.time() if now is None else now
        waiting = list(self.waiting.values()) + ([extra] if extra else [])
        holders = self._holders_now()
        order = queue_order(waiting, holders, self.settings)
        keys = [r.key for r in order]
        if key not in keys:
            return None
        free = len(self.free())
        return Place(position=keys.index(key) + 1, waiting=len(order),
                     eta=etas(order, holders, free=free, now=now)[key], free=free, total=len(self.gpus))

    def would_start_now(self, request: Request) -> bool:
        """Whether ``request``, made now, would get its GPUs at once."""
        started = admissible([*self.waiting.values(), request], list(self.holders.values()), self.settings,
                             len(self.free()))
        return any(r.key == request.key for r in started)

    def _save(self) -> None:
        if self.snapshot_file is None:
            return
        data = {"time": time.time(), "devices": [i for i, _ in self.gpus], "held": self.held,
                "holders": [asdict(h) for h in self._holders_now()],
                "waiting": [asdict(r) for r in self.waiting.values()]}
        try:
            self.snapshot_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.snapshot_file.with_name(self.snapshot_file.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.snapshot_file)
        except OSError:  # a full disk must not stop the queue; the CLI's view is then older
            pass
