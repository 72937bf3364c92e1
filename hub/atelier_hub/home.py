"""The hub's home page (``/hub/home``): each of a user's servers with its profile, state,
uptime, planned idle stop, cost so far and the ways in.

Rule this module keeps: the page is JupyterHub's own ``home.html`` extended by
``embedded/templates/home.html``; its facts come from one callable in the hub's
``template_vars`` (:class:`Home`), evaluated only when the home page asks (other pages
get a view that reads nothing). Each row is a pure function (:func:`server_row`) of
what the hub knows of the server, its profile, the culler's latest decision (the plan
file the culler writes, :data:`atelier_hub.services.culler.PLAN_FILE`) and the usage
file's open run for it (:func:`atelier_hub.usage.current_run`). A part whose source is
absent (no culler, no usage file, no code-server in the sessions) is left out, not
guessed. A job's server (``job-NAME``) is not a row of its own: the user's jobs are a
table below, from the jobs service's records (``STATE/jobs/USER/NAME.json``,
:func:`job_row`), where the jobs service runs. A server waiting for GPUs is ``queued``,
with its place and wait as the spawn page gives them, and the user's GPUs held against
their limit are shown, both from the GPU queue as the hub last saved it
(``STATE/run/capacity.json``, the same view as ``atelier profiles --free``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .capacity import CapacityError, CapacitySettings, load_capacity, ordinal, wait_text
from .connect import vscode_command
from .jobs import JobRecord, is_job, job_server
from .profiles import Profile, ProfileError, format_memory, load_profiles
from .usage import current_run, parse_when, read_events

__all__ = ["Home", "server_row", "job_row", "span", "sizes"]

#: the jobs the home page lists: the running ones and the latest that ended
JOBS_SHOWN = 10

# JupyterHub's own logger: what goes wrong here is in the hub's log
log = logging.getLogger("JupyterHub")


def _or_none(what: str, compute, default):
    """``compute()``, or ``default`` with the error in the hub's log: a part of the page
    whose source cannot be read is left out, the page itself still shows."""
    try:
        return compute()
    except Exception:
        log.exception("home page: %s could not be read; left out", what)
        return default


def span(seconds: float) -> str:
    """A duration as people read it on a dashboard.

    >>> span(42), span(600), span(3 * 3600 + 5 * 60), span(2 * 86400 + 3600)
    ('42 s', '10 min', '3 h 5 min', '2 d 1 h')
    """
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def sizes(profile: Profile) -> str:
    """The profile's sizes in one line, as its card in the picker gives them.

    >>> sizes(Profile(name="g", display_name="G", cpu={"limit": 8}, memory={"limit": "32G"},
    ...               gpu={"count": 1, "type": "NVIDIA A10G"}))
    '8 CPU · 32G · 1 GPU (NVIDIA A10G)'
    >>> sizes(Profile(name="m", display_name="M", cpu={"limit": 4}, memory={"limit": "16G"},
    ...               gpu={"count": 1, "resource": "nvidia.com/mig-1g.10gb"}))
    '4 CPU · 16G · 1 GPU slice (nvidia.com/mig-1g.10gb)'
    """
    out = f"{profile.cpu.limit:g} CPU · {format_memory(profile.memory.limit)}"
    if profile.gpu_slice:
        out += f" · {profile.gpu_count} GPU slice ({profile.gpu.kubernetes_resource})"
    elif profile.gpu_count:
        out += f" · {profile.gpu_count} GPU" + (f" ({profile.gpu.type})" if profile.gpu.type else "")
    return out


def _utc(t: datetime | str | None) -> datetime | None:
    if t is None or t == "":
        return None
    if isinstance(t, str):
        return parse_when(t)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)  # the hub's database keeps naive UTC


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def server_row(*, user: str, server: dict, profile: Profile | None, decision: dict | None, culler: bool,
               run: dict | None, now: datetime, hub_url: str, vscode: bool) -> dict:
    """One server's row. ``server``: ``name``, ``ready``, ``pending`` (``spawn``, ``stop``
    or None), ``started``, ``url`` (the hub's facts); ``decision``: the culler's latest for
    it, or None; ``culler``: whether a culler runs at all; ``run``: its open usage run.

    >>> from datetime import timedelta
    >>> t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    >>> p = Profile(name="cpu-small", display_name="Small CPU", cpu={"limit": 2}, memory={"limit": "4G"},
    ...             price={"cpu_hour": 0.5})
    >>> row = server_row(user="ada", server={"name": "", "ready": True, "pending": None, "started": t0,
    ...                  "url": "/user/ada/"}, profile=p, culler=True, run={"cost": 2.0, "priced": True,
    ...                  "cpu_hours": 4.0, "gpu_hours": 0.0},
    ...                  decision={"started": "2026-01-01T12:00:00.000000Z", "action": "keep",
    ...                  "cull_at": "2026-01-01T14:30:00Z", "reason": "active 1 min ago"},
    ...                  now=t0 + timedelta(hours=2), hub_url="http://127.0.0.1:8000", vscode=True)
    >>> row["state"], row["uptime"], row["cull"]["in"], row["cost"], row["ssh"]
    ('running', '2 h 0 min', '30 min', '2.00', 'atelier vscode --hub http://127.0.0.1:8000')
    """
    name = server["name"]
    started = _utc(server.get("started"))
    pending = server.get("pending")
    state = {"spawn": "starting", "stop": "stopping"}.get(pending) or ("running" if server.get("ready") else
                                                                       "stopped")
    row = {"name": name, "label": name or "default", "state": state, "url": server["url"],
           "profile": profile.name if profile else None,
           "profile_title": profile.display_name if profile else None,
           "sizes": sizes(profile) if profile else None,
           "uptime": None, "started": None, "cull": None, "cost": None, "usage": None,
           "lab_url": None, "vscode_url": None,
           "ssh": vscode_command(server=name, hub_url=hub_url),
           "spawn_url": None}
    if state == "stopped":
        return row
    if started is not None:
        row["started"] = _iso(started)
        row["uptime"] = span((now - started).total_seconds())
    if state == "running":
        row["lab_url"] = f"{server['url']}lab"
        if vscode:
            row["vscode_url"] = f"{server['url']}vscode/"
    if culler and state == "running" and profile is not None:
        decided = decision is not None and started is not None and _utc(decision.get("started")) == started
        if decided and decision.get("action") == "keep":
            at = _utc(decision["cull_at"])
            row["cull"] = {"at": _iso(at), "at_text": at.astimezone(timezone.utc).strftime("%H:%M UTC"),
                           "in": span((at - now).total_seconds()), "reason": decision["reason"],
                           "timeout": span(profile.idle_timeout)}
        else:  # not checked by the culler yet: what its profile promises
            row["cull"] = {"at": None, "in": None, "reason": None, "timeout": span(profile.idle_timeout)}
    if run is not None:
        row["usage"] = f"{run['cpu_hours']:.2f} CPU-h" + (f" · {run['gpu_hours']:.2f} GPU-h"
                                                           if run["gpu_hours"] else "")
        if run["priced"]:
            row["cost"] = f"{run['cost']:.2f}"
    return row


def load_queue(snapshot_file: str | Path | None, capacity_file: str | Path | None = None,
               plan_file: str | Path | None = None):
    """The GPU queue as the embedded hub last saved it (``STATE/run/capacity.json``), to
    reckon places and ETAs apart from the hub (the home page, the jobs service); None
    where no GPU was asked for yet, or it cannot be read."""
    from .embedded.gpus import GPUPool

    if snapshot_file is None:
        return None
    try:
        snapshot = json.loads(Path(snapshot_file).read_text())
        settings = (load_capacity(capacity_file) if capacity_file and Path(capacity_file).is_file()
                    else CapacitySettings())
    except (OSError, ValueError, CapacityError):
        return None
    return GPUPool.from_snapshot(snapshot, settings, plan_file=Path(plan_file) if plan_file else None)


def queue_text(place, now: float) -> str:
    """Where a waiting server or job stands, as the pages and ``atelier jobs`` say it.

    >>> from atelier_hub.embedded.gpus import Place
    >>> queue_text(Place(position=2, waiting=3, eta=1000 + 25 * 60, free=0, total=4), 1000)
    '2nd of 3 waiting, about 25 min'
    """
    return f"{ordinal(place.position)} of {place.waiting} waiting, {wait_text(place.eta, now)}"


def job_row(rec: JobRecord, *, server: dict | None, now: datetime, place=None) -> dict:
    """One job's row: its name, profile, state, when it started, how long it ran, its exit
    code, the line that prints its output, and whether it has ended (``over``). ``server``:
    the hub's facts of its server (``ready``, ``pending``), None when it has none;
    ``place``: where it waits in the GPU queue (its state is then ``queued``, and
    ``queue`` says where).

    >>> t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    >>> rec = JobRecord(name="train", user="ada", profile="cpu-large", command=["python", "t.py"],
    ...                 submitted=t0.timestamp(), ended=t0.timestamp() + 90, exit_code=0)
    >>> r = job_row(rec, server=None, now=t0)
    >>> r["state"], r["started"], r["duration"], r["exit_code"], r["logs"]
    ('succeeded', '2026-01-01T12:00:00Z', '1 min', '0', 'atelier logs train')
    """
    state = rec.state(server=server)
    end = rec.ended if rec.ended is not None else now.timestamp()
    row = {"name": rec.name, "profile": rec.profile, "state": state, "command": " ".join(rec.command),
           "started": _iso(datetime.fromtimestamp(rec.submitted, timezone.utc)),
           "duration": span(end - rec.submitted),
           "exit_code": "" if rec.exit_code is None else str(rec.exit_code),
           "logs": f"atelier logs {rec.name}" + ("" if rec.over else " -f"), "over": rec.over}
    if place is not None and state == "starting":
        row.update(state="queued", queue=queue_text(place, now.timestamp()))
    return row


def chosen_profile(user_options: dict) -> str | None:
    """The profile a server was started with: the REST API gives a name, the spawn form
    the field as it was posted (a list).

    >>> chosen_profile({"profile": "cpu-small"}), chosen_profile({"profile": ["cpu-large"]}), chosen_profile({})
    ('cpu-small', 'cpu-large', None)
    """
    chosen = user_options.get("profile")
    if isinstance(chosen, list):
        chosen = chosen[0] if chosen else None
    return chosen if isinstance(chosen, str) else None


def _facts(user, spawner) -> dict:
    """What the hub knows of one server: ``spawner`` is a Spawner (active) or the
    database's row (``orm.Spawner``) of one that is not, as ``User.all_spawners`` gives."""
    orm = getattr(spawner, "orm_spawner", spawner)
    active = orm is not spawner
    return {"name": orm.name, "started": orm.started, "user_options": orm.user_options or {},
            "ready": bool(active and spawner.ready), "pending": spawner.pending if active else None,
            "url": user.server_url(orm.name)}


@dataclass
class _View:
    home: Home
    user: object

    def servers(self) -> list[dict]:
        return self.home.rows(self.user)

    @property
    def culler(self) -> bool:
        return self.home.plan_file is not None

    @property
    def usage(self) -> bool:
        return self.home.usage_file is not None

    @property
    def mlflow(self) -> bool:
        """Whether the page lists the user's latest MLflow runs (read by the page itself
        through the MLflow front, as the user: the hub holds no MLflow identity)."""
        return self.home.mlflow

    @property
    def cards(self) -> bool:
        return self.home.cards

    @property
    def has_jobs(self) -> bool:
        return self.home.jobs_dir is not None

    def jobs(self) -> list[dict]:
        return _or_none("the jobs", lambda: self.home.job_rows(self.user), [])

    def gpus(self) -> dict | None:
        return _or_none("the GPU quota", lambda: self.home.gpu_quota(self.user), None)


class Home:
    """The ``template_vars`` entry of the home page: called with the current user on every
    page, it returns a view whose :meth:`_View.servers` reads the files only when asked."""

    def __init__(self, *, profiles_dir: str | Path, hub_url: str, usage_file: str | Path | None = None,
                 plan_file: str | Path | None = None, vscode: bool = False,
                 jobs_dir: str | Path | None = None, capacity_file: str | Path | None = None,
                 snapshot_file: str | Path | None = None, mlflow: bool = False, cards: bool = False):
        self.profiles_dir = Path(profiles_dir)
        self.jobs_dir = Path(jobs_dir) if jobs_dir else None
        self.capacity_file = Path(capacity_file) if capacity_file else None
        self.snapshot_file = Path(snapshot_file) if snapshot_file else None
        self.hub_url = hub_url
        self.usage_file = Path(usage_file) if usage_file else None
        self.plan_file = Path(plan_file) if plan_file else None
        self.vscode = vscode
        self.mlflow = mlflow
        # Whether "New server" shows the spawn form's profile cards inline (the spawner's
        # own form: Atelier's cards and their capacity lines, in embedded mode).
        self.cards = cards

    def __eq__(self, other) -> bool:
        """Two homes over the same files and parts are the same configuration."""
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None

    def __call__(self, user):
        return _View(self, user) if user is not None else None

    def _profiles(self) -> tuple[dict[str, Profile], Profile | None]:
        try:
            profiles = load_profiles(self.profiles_dir)
        except ProfileError:  # the spawn form says what is wrong with them
            return {}, None
        return {p.name: p for p in profiles}, next((p for p in profiles if p.default), profiles[0])

    def _plan(self) -> dict:
        try:
            return json.loads(self.plan_file.read_text()) if self.plan_file else {}
        except (FileNotFoundError, ValueError):
            return {}

    def _pool(self):
        """The GPU queue as the hub last saved it; None where no GPU was asked for yet."""
        return load_queue(self.snapshot_file, self.capacity_file, self.plan_file)

    def gpu_quota(self, user) -> dict | None:
        """The user's GPUs held (and waited for) against their limit, where there is one."""
        pool = self._pool()
        if pool is None or pool.settings.gpus_per_user is None or not pool.gpus:
            return None
        held = sum(len(ids) for key, ids in pool.held.items() if key.split("/", 1)[0] == user.name)
        waiting = sum(r.gpus for r in pool.waiting.values() if r.user == user.name)
        return {"held": held, "waiting": waiting, "limit": pool.settings.gpus_per_user,
                "free": len(pool.free()), "total": len(pool.gpus)}

    def rows(self, user) -> list[dict]:
        now = datetime.now(timezone.utc)
        profiles, default = self._profiles()
        plan = self._plan()
        pool = _or_none("the GPU queue", self._pool, None)
        events = read_events(self.usage_file) if self.usage_file else []
        rows = []
        for spawner in user.all_spawners(include_default=True):
            server = _facts(user, spawner)
            name = server["name"]
            if not name and not server["ready"] and not server["pending"]:
                continue  # the hub keeps a row for every user's default server; "Start my server" stands for it
            if is_job(name, server["user_options"]):
                continue  # in the jobs' table
            profile = profiles.get(chosen_profile(server["user_options"]), default)

            def full_row(server=server, name=name, profile=profile):
                run = current_run(events, user=user.name, server=name, now=now) if self.usage_file else None
                return server_row(user=user.name, server=server, profile=profile, culler=self.plan_file is not None,
                                  decision=plan.get(f"{user.name}/{name}" if name else user.name), run=run,
                                  now=now, hub_url=self.hub_url, vscode=self.vscode)

            # A row whose facts cannot be read shows its name, state and ways in, no more.
            row = _or_none(f"server {name or 'default'!r}", full_row, None) or {
                "name": name, "label": name or "default", "url": server["url"],
                "state": "running" if server["ready"] else "starting" if server["pending"] else "stopped",
                **dict.fromkeys(("profile", "profile_title", "sizes", "uptime", "started", "cull", "cost", "usage",
                                 "lab_url", "vscode_url"), None),
                "ssh": vscode_command(server=name, hub_url=self.hub_url)}
            row["spawn_url"] = f"spawn/{user.escaped_name}" + (f"/{name}" if name else "")
            key = f"{user.name}/{name}"
            place = (_or_none("a queued server's place", lambda key=key: pool.place(key, now=now.timestamp()), None)
                     if pool is not None and server["pending"] else None)
            if place is not None:
                row["state"] = "queued"
                row["queue"] = queue_text(place, now.timestamp())
            rows.append(row)
        return rows

    def job_rows(self, user) -> list[dict]:
        """The user's running jobs and the latest that ended, newest first (at most
        :data:`JOBS_SHOWN`)."""
        if self.jobs_dir is None:
            return []
        now = datetime.now(timezone.utc)
        servers = {}
        for spawner in user.all_spawners(include_default=False):
            facts = _facts(user, spawner)
            servers[facts["name"]] = facts
        recs = JobRecord.newest_first(JobRecord.all(self.jobs_dir, user.name))[:JOBS_SHOWN]
        pool = _or_none("the GPU queue", self._pool, None) if any(not r.over for r in recs) else None

        def place(rec: JobRecord):
            key = f"{user.name}/{job_server(rec.name)}"
            return _or_none("a queued job's place", lambda: pool.place(key, now=now.timestamp()), None) if pool else None

        return [job_row(r, server=servers.get(job_server(r.name)), now=now, place=None if r.over else place(r))
                for r in recs]
