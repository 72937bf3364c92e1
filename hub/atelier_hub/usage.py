"""What each user and profile costs: server starts and stops, and their totals.

Rule this module keeps: the hub appends one JSON line per server start and stop to the
usage file (``STATE/usage.jsonl`` in the embedded mode, beside the hub's database on a
cluster), with the user, server, profile and the profile's sizes at that moment, so a
profile changed later does not rewrite history; nothing else writes it. Totals are a
pure function (:func:`summarize`) of those lines and a time window: a server still
running counts until ``now``, and only the part of each run inside the window counts.
CPU-hours use the profile's CPU limit, memory-GB-hours its memory limit (10^9 bytes),
GPU-hours its GPU count. Cost is the profile's price (:class:`atelier_hub.profiles.Price`)
at the start, times those hours; a run whose profile had no price costs 0.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .private_files import append_private

__all__ = ["record", "read_events", "summarize", "render", "parse_when", "only_user", "current_run"]

FIELDS = ("servers", "hours", "cpu_hours", "memory_gb_hours", "gpu_hours", "cost")


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_when(text: str) -> datetime:
    """A date or date-time from the command line, UTC unless it says otherwise.

    >>> parse_when("2026-03-01").isoformat()
    '2026-03-01T00:00:00+00:00'
    """
    try:
        return _parse(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date; write it as 2026-03-01 or 2026-03-01T14:30") from None


def record(path: str | Path, event: str, *, user: str, server: str, profile=None,
           when: datetime | None = None, kind: str | None = None, groups=None) -> None:
    """Append one start or stop line (``O_APPEND``: lines from concurrent stops never mix).
    ``kind``: ``server`` (a session), ``job`` (:mod:`atelier_hub.jobs`) or ``ray`` (a
    node of a personal Ray cluster), on a start; ``groups``: the user's hub groups then."""
    line = {"event": event, "time": _iso(when or datetime.now(timezone.utc)), "user": user, "server": server}
    if kind is not None:
        line["kind"] = kind
    if groups:
        line["groups"] = sorted(groups)
    if profile is not None:
        line.update(profile=profile.name, cpu=profile.cpu.limit, memory=profile.memory.limit,
                    gpus=profile.gpu_count)
        if profile.price is not None:
            line["price_per_hour"] = profile.price.per_hour(cpu=profile.cpu.limit, memory=profile.memory.limit,
                                                            gpus=profile.gpu_count)
    append_private(path, json.dumps(line) + "\n")


def read_events(path: str | Path) -> list[dict]:
    """The lines of a usage file (none if it does not exist yet); a torn last line is skipped."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _runs(events: list[dict], now: datetime) -> list[dict]:
    """Each start paired with the next stop of the same server (or ``now``)."""
    open_runs: dict[tuple[str, str], dict] = {}
    runs = []
    for e in events:
        key = (e["user"], e.get("server", ""))
        if e["event"] == "start":
            if key in open_runs:  # a start without a stop (the hub died): ends where the next begins
                runs.append({**open_runs.pop(key), "stop": _parse(e["time"])})
            open_runs[key] = {**e, "start": _parse(e["time"])}
        elif e["event"] == "stop" and key in open_runs:
            runs.append({**open_runs.pop(key), "stop": _parse(e["time"])})
    runs.extend({**r, "stop": now} for r in open_runs.values())
    return runs


def finished_runs(events: list[dict], *, user: str, kind: str | None = None) -> list[dict]:
    """``user``'s runs (of ``kind``, where given) that a stop line ended, oldest first,
    each with its ``seconds``. A start that the next start of the same server closed (the
    hub died in between) is left out: its length is not known.

    >>> ev = [{"event": "start", "time": "2026-01-01T10:00:00Z", "user": "ada", "server": "job-a", "kind": "job",
    ...        "profile": "gpu-1"}, {"event": "stop", "time": "2026-01-01T10:30:00Z", "user": "ada", "server": "job-a"}]
    >>> [(r["server"], r["profile"], r["seconds"]) for r in finished_runs(ev, user="ada", kind="job")]
    [('job-a', 'gpu-1', 1800.0)]
    """
    runs, open_runs = [], {}
    for e in only_user(events, user):
        server = e.get("server", "")
        if e["event"] == "start":
            open_runs[server] = e
        elif e["event"] == "stop" and server in open_runs:
            start = open_runs.pop(server)
            if kind is None or start.get("kind") == kind:
                runs.append({**start, "seconds": (_parse(e["time"]) - _parse(start["time"])).total_seconds()})
    return runs


def only_user(events: list[dict], user: str) -> list[dict]:
    """The lines of one user: what a user who is not an admin is shown."""
    return [e for e in events if e.get("user") == user]


def _amounts(run: dict, hours: float) -> dict:
    return {"servers": 1, "hours": hours, "cpu_hours": hours * float(run.get("cpu", 0)),
            "memory_gb_hours": hours * float(run.get("memory", 0)) / 1e9,
            "gpu_hours": hours * float(run.get("gpus", 0)),
            "cost": hours * float(run.get("price_per_hour", 0))}


def current_run(events: list[dict], *, user: str, server: str, now: datetime | None = None) -> dict | None:
    """What the running server ``server`` of ``user`` has used since it started (its open
    run), with ``priced`` saying whether its profile had a price; None if it is not running.

    >>> ev = [{"event": "start", "time": "2026-01-01T10:00:00Z", "user": "ada", "server": "gpu",
    ...        "profile": "gpu-1", "cpu": 8, "memory": 32e9, "gpus": 1, "price_per_hour": 1.5}]
    >>> run = current_run(ev, user="ada", server="gpu", now=parse_when("2026-01-01T12:00"))
    >>> run["hours"], run["gpu_hours"], run["cost"], run["priced"]
    (2.0, 2.0, 3.0, True)
    """
    now = now or datetime.now(timezone.utc)
    for run in _runs(only_user(events, user), now):
        if run.get("server", "") == server and run["stop"] is now:
            hours = max(0.0, (now - run["start"]).total_seconds() / 3600)
            return {**{k: round(v, 4) for k, v in _amounts(run, hours).items()}, "profile": run.get("profile"),
                    "start": _iso(run["start"]), "priced": "price_per_hour" in run}
    return None


def _days(start: datetime, stop: datetime) -> list[tuple[str, float]]:
    """The UTC days ``[start, stop]`` touches, each with its hours in it.

    >>> _days(parse_when("2026-01-01T23:30"), parse_when("2026-01-02T00:15"))
    [('2026-01-01', 0.5), ('2026-01-02', 0.25)]
    """
    out = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= stop:
        nxt = day + timedelta(days=1)
        part = (min(stop, nxt) - max(start, day)).total_seconds() / 3600
        if part > 0 or not out:
            out.append((day.strftime("%Y-%m-%d"), max(0.0, part)))
        day = nxt
    return out


def summarize(events: list[dict], *, since: datetime | None = None, until: datetime | None = None,
              now: datetime | None = None) -> dict:
    """Totals per user, per profile, per kind (``server``, ``job``), per hub group
    (``by_group``: a run counts in each group its user was in when it started; a start
    line without groups counts in none), per UTC day
    (``by_day``, ``YYYY-MM-DD``: the part of each run inside that day; ``servers`` counts
    the runs that touched it) and overall for the runs inside [since, until]. A start line
    without a kind (written before jobs existed) is a server's.

    >>> ev = [{"event": "start", "time": "2026-01-01T10:00:00Z", "user": "ada", "server": "",
    ...        "profile": "cpu-small", "cpu": 2, "memory": 4e9, "gpus": 0},
    ...       {"event": "stop", "time": "2026-01-01T11:30:00Z", "user": "ada", "server": ""}]
    >>> summarize(ev)["by_user"]["ada"]
    {'servers': 1, 'hours': 1.5, 'cpu_hours': 3.0, 'memory_gb_hours': 6.0, 'gpu_hours': 0.0, 'cost': 0.0}
    >>> list(summarize(ev)["by_kind"])
    ['server']
    >>> night = [{**ev[0], "time": "2026-01-01T23:00:00Z"}, {**ev[1], "time": "2026-01-02T01:00:00Z"}]
    >>> {d: v["cpu_hours"] for d, v in summarize(night)["by_day"].items()}
    {'2026-01-01': 2.0, '2026-01-02': 2.0}
    """
    now = now or datetime.now(timezone.utc)
    end = min(until, now) if until else now
    out: dict = {"since": _iso(since) if since else None, "until": _iso(end), "by_user": {}, "by_profile": {},
                 "by_kind": {}, "by_group": {}, "by_day": {}, "total": dict.fromkeys(FIELDS, 0)}
    for run in _runs(events, now):
        if (since and run["stop"] < since) or run["start"] > end:
            continue  # entirely outside the window
        start = max(run["start"], since) if since else run["start"]
        stop = min(run["stop"], end)
        hours = max(0.0, (stop - start).total_seconds() / 3600)
        add = _amounts(run, hours)
        for table, key in (("by_user", run["user"]), ("by_profile", run.get("profile", "?")),
                           ("by_kind", run.get("kind") or "server"),
                           *(("by_group", g) for g in run.get("groups") or ())):
            row = out[table].setdefault(key, dict.fromkeys(FIELDS, 0))
            for f in FIELDS:
                row[f] += add[f]
        for f in FIELDS:
            out["total"][f] += add[f]
        for day, part in _days(start, stop):
            row = out["by_day"].setdefault(day, dict.fromkeys(FIELDS, 0))
            for f, v in _amounts(run, part).items():
                row[f] += v
    out["by_day"] = dict(sorted(out["by_day"].items()))
    for row in (*out["by_user"].values(), *out["by_profile"].values(), *out["by_kind"].values(),
                *out["by_group"].values(), *out["by_day"].values(), out["total"]):
        for f in FIELDS[1:]:
            row[f] = round(float(row[f]), 4)
    return out


def render_cost(summary: dict) -> str:
    """The cost lines of ``summary`` (``atelier usage --cost``): per user, profile, kind and
    group, most costly first, then each day and the total; where nothing has a price, one
    line that says how to set one.

    >>> z = dict.fromkeys(FIELDS, 0)
    >>> s = {"since": None, "until": "2026-01-02T00:00:00Z", "total": {**z, "cost": 3.0},
    ...      "by_user": {"ada": {**z, "cost": 1.0}, "bo": {**z, "cost": 2.0}}, "by_profile": {}}
    >>> print(render_cost(s))
    Cost from the first record to 2026-01-02T00:00:00Z
    user     bo                    2.00
    user     ada                   1.00
    total                          3.00
    <BLANKLINE>
    >>> render_cost({**s, "total": z, "by_user": {}}).splitlines()[1][:41]
    'No cost: no profile that ran has a price.'
    """
    lines = [f"Cost from {summary['since'] or 'the first record'} to {summary['until']}"]
    if not summary["total"]["cost"]:
        lines.append("No cost: no profile that ran has a price. An admin sets `price` in a profile "
                     "(docs/reference.md, \"Profiles\"); the hours are in `atelier usage`.")
        return "\n".join(lines) + "\n"
    for group, table in (("user", "by_user"), ("profile", "by_profile"), ("kind", "by_kind"), ("group", "by_group")):
        for name, v in sorted(summary.get(table, {}).items(), key=lambda kv: (-kv[1]["cost"], kv[0])):
            lines.append(f"{group:8} {name:<16} {v['cost']:>9.2f}")
    for day, v in summary.get("by_day", {}).items():
        lines.append(f"{'day':8} {day:<16} {v['cost']:>9.2f}")
    lines.append(f"{'total':8} {'':<16} {summary['total']['cost']:>9.2f}")
    return "\n".join(lines) + "\n"


def render(summary: dict, fmt: str) -> str:
    """``table`` (for people), ``csv`` (for spreadsheets) or ``json`` (for scripts)."""
    if fmt == "json":
        return json.dumps(summary, indent=2) + "\n"
    rows = [("user", k, v) for k, v in sorted(summary["by_user"].items())]
    rows += [("profile", k, v) for k, v in sorted(summary["by_profile"].items())]
    rows += [("kind", k, v) for k, v in sorted(summary.get("by_kind", {}).items())]
    rows += [("group", k, v) for k, v in sorted(summary.get("by_group", {}).items())]
    rows.append(("total", "", summary["total"]))
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["group", "name", *FIELDS])
        for group, name, v in rows:
            w.writerow([group, name, *(v[f] for f in FIELDS)])
        return buf.getvalue()
    lines = [f"Usage from {summary['since'] or 'the first record'} to {summary['until']}",
             f"{'':8} {'NAME':<16} {'SERVERS':>7} {'HOURS':>9} {'CPU-H':>9} {'MEM-GB-H':>10} {'GPU-H':>8} {'COST':>9}"]
    for group, name, v in rows:
        lines.append(f"{group:8} {name:<16} {v['servers']:>7} {v['hours']:>9.2f} {v['cpu_hours']:>9.2f} "
                     f"{v['memory_gb_hours']:>10.2f} {v['gpu_hours']:>8.2f} {v['cost']:>9.2f}")
    return "\n".join(lines) + "\n"
