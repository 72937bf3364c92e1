"""The jobs service's process: submit, list, follow and cancel jobs (:mod:`atelier_hub.jobs`).

Rule this module keeps: a job starts, runs and stops as its user's named server
``job-NAME`` through the hub's REST API (so the hub's spawner builds it exactly as it
builds a session, and the hub's own checks refuse what a user may not start); this
service adds only the record of each submission (``JOBS/USER/NAME.json``) and reads the
output and exit code the job's runner leaves on the home. Every request is
authenticated with the caller's hub token and sees only the caller's jobs (an admin
may ask for everyone's with ``?all=1``, or one user's with ``?user=NAME``); another
user's job answers 404, as one that does not exist.

    GET    PREFIX/api/jobs[?all=1]            {"jobs": [...]}
    POST   PREFIX/api/jobs                    {"name", "profile", "command": [...], "cwd"} -> 201 the job
    GET    PREFIX/api/jobs/NAME               the job
    GET    PREFIX/api/jobs/NAME/log?offset=N  bytes N.. of its output; X-Atelier-Job-* headers: state,
                                              exit code, next offset
    DELETE PREFIX/api/jobs/NAME               cancel it (its server is stopped and removed)
    GET    PREFIX/                            the page of the caller's jobs (hub login); an admin's ?all=1

A finished job's server is stopped and removed from the hub (its record stays), so
finished jobs do not count against the named-server limit.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import logging
import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlparse

from jupyterhub.services.auth import HubAuth, HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..embedded.gpus import Place
from ..home import job_row, load_queue, queue_text
from ..jobs import JOB_DIR, JobError, JobRecord, check_submission, job_runs, job_server, kept_output, read_home_file
from ..look import service_page
from ..profiles import ProfileError, load_profiles, resolve_profile
from ._api import HealthHandler, UserApi, refusal
from ._front import HUB_AUTH_CACHE_S

log = logging.getLogger("atelier.jobs")

#: bytes of output one log request returns at most
LOG_CHUNK = 1 << 20


def _iso(t: float | None) -> str | None:
    """A time as the API gives it (UTC, ISO 8601).

    >>> _iso(0), _iso(None)
    ('1970-01-01T00:00:00Z', None)
    """
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z") if t is not None else None


class Hub:
    """The hub's REST API, with this service's token."""

    def __init__(self, api_url: str, token: str):
        self.api = api_url.rstrip("/")
        self.token = token
        self.http = AsyncHTTPClient()

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        req = HTTPRequest(f"{self.api}{path}", method=method, headers={"Authorization": f"token {self.token}"},
                          body=json.dumps(body) if body is not None else None, allow_nonstandard_methods=True,
                          request_timeout=120)
        try:
            r = await self.http.fetch(req)
        except HTTPClientError as exc:
            r = exc.response
            if r is None:
                raise
        try:
            return r.code, json.loads(r.body or b"{}")
        except ValueError:
            return r.code, {}

    async def servers(self, user: str) -> dict[str, dict]:
        code, model = await self.call("GET", f"/users/{quote(user, safe='')}")
        if code == 404:
            return {}
        if code != 200:  # a hub that is restarting: nothing is known, and nothing is settled
            raise web.HTTPError(503, f"the hub answered {code} for {user}'s servers; try again in a moment")
        return model.get("servers", {})

    def server_path(self, user: str, name: str) -> str:
        return f"/users/{quote(user, safe='')}/servers/{quote(job_server(name), safe='')}"

    async def job_queue(self, user: str, name: str) -> dict:
        """Where a job waits in Kueue's queue on a cluster, as the hub reads it
        (``{"team", "position", "waiting", "eta"}``; ``{}`` where it does not wait there)."""
        code, place = await self.call("GET", f"/atelier/users/{quote(user, safe='')}/jobs/{quote(name, safe='')}/queue")
        return place if code == 200 else {}

    async def job_output(self, user: str, name: str, offset: int, limit: int = LOG_CHUNK) -> tuple[bytes, int | None]:
        """Bytes ``offset..offset+limit`` of a job's output and its exit code (None while it
        runs), as the hub serves them on a cluster (its pod's log, then the copy kept on
        the hub's volume)."""
        req = HTTPRequest(f"{self.api}/atelier/users/{quote(user, safe='')}/jobs/{quote(name, safe='')}/output"
                          f"?offset={offset}&limit={limit}", headers={"Authorization": f"token {self.token}"},
                          request_timeout=60)
        try:
            r = await self.http.fetch(req)
        except HTTPClientError as exc:
            raise web.HTTPError(503, f"the hub answered {exc.code} for the output of job {name!r}; "
                                "try again in a moment") from None
        code = r.headers.get("X-Atelier-Job-Exit-Code", "")
        return r.body or b"", int(code) if code.lstrip("-").isdigit() else None


class Jobs:
    def __init__(self, *, folder: Path, homes: Path, profiles_dir: str, hub: Hub, mlflow: str | None = None,
                 queue: tuple[Path | None, Path | None, Path | None] = (None, None, None)):
        self.folder, self.homes, self.profiles_dir, self.hub = folder, homes, profiles_dir, hub
        #: MLflow's UI, as the page links it (a path on the hub's origin); None: no MLflow
        self.mlflow = mlflow
        #: the embedded hub's GPU queue as it saves it, its capacity settings, the culler's plan
        self.queue = queue

    def place(self, rec: JobRecord, server: dict | None):
        """Where a job that is starting waits in the GPU queue (``Place``); None where it
        does not wait there (or there is no queue: a cluster, a machine without GPUs)."""
        if self.queue[0] is None or rec.state(server=server) != "starting":
            return None
        pool = load_queue(*self.queue)
        return pool.place(f"{rec.user}/{job_server(rec.name)}") if pool is not None else None

    def home_file(self, rec: JobRecord, what: str, offset: int = 0, limit: int = LOG_CHUNK) -> bytes | None:
        return read_home_file(self.homes / rec.user, f"{JOB_DIR}/{rec.name}/{what}", offset=offset, limit=limit)

    async def output(self, rec: JobRecord, offset: int) -> bytes:
        """Bytes ``offset..`` of the job's output (at most :data:`LOG_CHUNK`)."""
        return self.home_file(rec, "output.log", offset=offset) or b""

    def listed_runs(self, rec: JobRecord) -> bytes | None:
        """The job's ``runs.jsonl`` as its runner left it (on the home)."""
        return self.home_file(rec, "runs.jsonl", limit=64 << 10)

    def runs(self, rec: JobRecord) -> list[dict]:
        """The MLflow runs the job started, each with the link to it in MLflow's UI
        (``url``; None for a spooled run, which has no server id yet)."""
        runs = job_runs(self.listed_runs(rec))
        for run in runs:
            run["url"] = (f"{self.mlflow}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}"
                          if self.mlflow and not run["spooled"] else None)
        return runs

    async def exit_code(self, rec: JobRecord) -> tuple[int, float] | None:
        raw = self.home_file(rec, "exit-code", limit=32)
        try:
            code = int(raw.decode().strip()) if raw else None
        except ValueError:
            code = None
        if code is None:
            return None
        try:
            st = os.stat(self.homes / rec.user / JOB_DIR / rec.name / "exit-code", follow_symlinks=False)
            when = st.st_mtime
        except OSError:
            when = time.time()
        return code, when

    async def settle(self, rec: JobRecord, servers: dict[str, dict]) -> None:
        """Record the end of a job whose runner wrote its exit code, or whose server is
        gone without one; then stop and remove its server from the hub."""
        if not rec.over:
            ended = await self.exit_code(rec)
            server = servers.get(job_server(rec.name))
            if ended is not None:
                rec.exit_code, rec.ended = ended
            elif server is None:
                rec.ended = time.time()
                rec.error = "its container ended without an exit code (stopped by the hub, or out of memory)"
            else:
                return
            rec.save(self.folder)
            log.info("job %s/%s ended: %s", rec.user, rec.name, rec.exit_code if rec.error == "" else rec.error)
        if job_server(rec.name) in servers:
            code, body = await self.hub.call("DELETE", self.hub.server_path(rec.user, rec.name), {"remove": True})
            if code not in (202, 204, 404):
                log.warning("could not remove the server of job %s/%s (%s): %s", rec.user, rec.name, code, body)

    async def servers_of(self, recs: list[JobRecord]) -> dict[str, dict[str, dict]]:
        """The hub's servers of each user who has one of ``recs``."""
        return {u: await self.hub.servers(u) for u in {r.user for r in recs}}

    async def settle_all(self) -> None:
        by_user: dict[str, list[JobRecord]] = {}
        for rec in JobRecord.all(self.folder):
            by_user.setdefault(rec.user, []).append(rec)
        for user, recs in by_user.items():
            servers = await self.hub.servers(user)
            for rec in recs:
                if not rec.over or job_server(rec.name) in servers:
                    await self.settle(rec, servers)

    def model(self, rec: JobRecord, servers: dict[str, dict]) -> dict:
        """The API's job: ``state`` is ``queued`` while it waits for GPUs, with ``queue``:
        its ``position``, how many are ``waiting``, its ``eta`` and the ``text`` the pages show."""
        now = time.time()
        end = rec.ended or now
        server = servers.get(job_server(rec.name))
        place = self.place(rec, server)
        model = {"name": rec.name, "user": rec.user, "profile": rec.profile, "command": rec.command, "cwd": rec.cwd,
                 "state": "queued" if place else rec.state(server=server), "started": _iso(rec.submitted),
                 "ended": _iso(rec.ended),
                 "duration": round(end - rec.submitted, 1), "exit_code": rec.exit_code, "error": rec.error,
                 "runs": self.runs(rec)}
        if place:
            model["queue"] = {"position": place.position, "waiting": place.waiting, "eta": _iso(place.eta),
                              "text": queue_text(place, now)}
        return model


class HubOutputJobs(Jobs):
    """Jobs on a cluster: the service cannot read the homes (each is its user's volume), so
    a job's output and exit code come from the hub (:meth:`Hub.job_output`), which reads
    its pod's log. The MLflow runs a job listed reach the hub as its container's
    termination message; the hub keeps them beside the record (:func:`kept_output`), in
    this service's own folder, once the job ended."""

    async def servers_of(self, recs: list[JobRecord]) -> dict[str, dict[str, dict]]:
        """The hub's servers; the server of each job that is starting carries its place in
        Kueue's queue (``queue``), read from the hub (:meth:`Hub.job_queue`)."""
        servers = await super().servers_of(recs)
        for rec in recs:
            server = servers[rec.user].get(job_server(rec.name))
            if rec.state(server=server) == "starting":
                server["queue"] = await self.hub.job_queue(rec.user, rec.name)
        return servers

    def place(self, rec: JobRecord, server: dict | None):
        queue = (server or {}).get("queue") or {}
        if rec.state(server=server) != "starting" or not queue.get("position"):
            return None
        return Place(position=queue["position"], waiting=queue["waiting"], eta=queue.get("eta"), free=0, total=0)

    async def output(self, rec: JobRecord, offset: int) -> bytes:
        return (await self.hub.job_output(rec.user, rec.name, offset))[0]

    async def exit_code(self, rec: JobRecord) -> tuple[int, float] | None:
        code = (await self.hub.job_output(rec.user, rec.name, 0, limit=0))[1]
        return None if code is None else (code, time.time())

    def listed_runs(self, rec: JobRecord) -> bytes | None:
        _, _, runs = kept_output(self.folder, rec.user, rec.name)
        return read_home_file(runs.parent, runs.name, limit=64 << 10)


class _Api(UserApi):
    other_user_refusal = (404, "no such job of yours: see `atelier jobs`")

    def initialize(self, jobs: Jobs):
        self.jobs = jobs

    def record(self, name: str) -> JobRecord:
        user = self.owner()
        path = JobRecord.path(self.jobs.folder, user, name)
        if "/" in name or not path.is_file():
            raise web.HTTPError(404, f"you have no job named {name!r}: see `atelier jobs`")
        return JobRecord.load(path)


class ListHandler(_Api):
    async def get(self):
        user = self.caller()
        everyone = self.get_argument("all", "") not in ("", "0") and user.get("admin")
        recs = JobRecord.all(self.jobs.folder, None if everyone else self.owner())
        servers = await self.jobs.servers_of(recs)
        self.finish({"jobs": [self.jobs.model(r, servers[r.user]) for r in recs]})

    async def post(self):
        user = self.caller()
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise refusal(400, "the body is not JSON", "body") from None
        profiles = load_profiles(self.jobs.profiles_dir)
        taken = {r.name for r in JobRecord.all(self.jobs.folder, user["name"])}
        try:
            job = check_submission(body, profile_names=[p.name for p in profiles], taken=taken)
            profile = resolve_profile(profiles, job["profile"], groups=set(user.get("groups") or []))
        except JobError as exc:
            raise refusal(exc.status, f"{exc.field}: {exc}", exc.field) from None
        except ProfileError as exc:
            # 400, not 403: a 403 from here would read as a refused token
            raise refusal(400, f"profile: {exc}", "profile") from None
        job["profile"] = profile.name
        rec = JobRecord(name=job["name"], user=user["name"], profile=profile.name, command=job["command"],
                        cwd=job["cwd"])
        code, answer = await self.jobs.hub.call("POST", self.jobs.hub.server_path(rec.user, rec.name),
                                                {"profile": profile.name, "job": job})
        if code not in (201, 202):
            # The hub's refusal (GPUs not free, too many servers) says what to do.
            raise refusal(400 if code == 403 else code if 400 <= code < 500 else 503,
                           f"the hub did not start the job: {answer.get('message') or code}", "profile")
        rec.save(self.jobs.folder)
        log.info("job %s/%s submitted on %s: %d argument(s)", rec.user, rec.name, rec.profile, len(rec.command))
        self.set_status(201)
        self.finish(self.jobs.model(rec, (await self.jobs.servers_of([rec]))[rec.user]))


class JobHandler(_Api):
    async def get(self, name):
        rec = self.record(name)
        servers = (await self.jobs.servers_of([rec]))[rec.user]
        await self.jobs.settle(rec, servers)
        self.finish(self.jobs.model(rec, servers))

    async def delete(self, name):
        rec = self.record(name)
        servers = await self.jobs.hub.servers(rec.user)
        await self.jobs.settle(rec, servers)
        if rec.over:
            state = self.jobs.model(rec, servers)["state"]
            raise refusal(409, f"job {name!r} has already ended ({state}); nothing to cancel", "name")
        rec.cancelled, rec.ended = True, time.time()
        rec.save(self.jobs.folder)
        code, body = await self.jobs.hub.call("DELETE", self.jobs.hub.server_path(rec.user, rec.name),
                                              {"remove": True})
        log.info("job %s/%s cancelled (hub: %s)", rec.user, rec.name, code)
        self.finish(self.jobs.model(rec, await self.jobs.hub.servers(rec.user)))


class LogHandler(_Api):
    async def get(self, name):
        rec = self.record(name)
        try:
            offset = max(0, int(self.get_argument("offset", "0")))
        except ValueError:
            raise refusal(400, "offset: give a byte offset, e.g. ?offset=0", "offset") from None
        servers = await self.jobs.hub.servers(rec.user)
        await self.jobs.settle(rec, servers)  # first: no byte written before the exit code is missed
        data = await self.jobs.output(rec, offset)
        self.set_header("Content-Type", "application/octet-stream")
        # The state only: a follower polls this every second, and the whole model reads the home.
        self.set_header("X-Atelier-Job-State", rec.state(server=servers.get(job_server(rec.name))))
        self.set_header("X-Atelier-Job-Exit-Code", "" if rec.exit_code is None else str(rec.exit_code))
        self.set_header("X-Atelier-Job-Offset", str(offset + len(data)))
        self.finish(data)


_BADGES = {"succeeded": "text-bg-success", "running": "text-bg-primary", "starting": "text-bg-primary",
           "queued": "text-bg-warning", "cancelled": "text-bg-secondary"}


def _run_links(runs: list[dict]) -> str:
    """A job's MLflow runs: a link each (its id's first 8 characters, the whole id on hover);
    a spooled run, not yet on the server, is named without one."""
    esc = html.escape
    return " ".join(
        f'<a class="atelier-run" data-run="{esc(r["run_id"])}" href="{esc(r["url"])}">{esc(r["run_id"][:8])}</a>'
        if r.get("url") else
        f'<span class="atelier-run" data-run="{esc(r["run_id"])}" title="spooled: `repro sync` uploads it">'
        f'{esc(r["run_id"][:8])} (spooled)</span>' for r in runs)


def render_jobs_page(rows: list[dict], *, viewer: str | None) -> str:
    """The jobs page: one row per job (:func:`atelier_hub.home.job_row`, plus ``user`` and
    ``runs``, :meth:`Jobs.runs`), newest first, in Atelier's look. ``viewer``: the user whose
    jobs these are; None for an admin's page of everyone's, which has a user column. Every
    value is escaped.

    >>> row = {"name": "t<1>", "user": "ada", "profile": "cpu-small", "state": "running", "command": "python t.py",
    ...        "started": "2026-01-01T12:00:00Z", "duration": "1 min", "exit_code": "", "logs": "atelier logs t -f",
    ...        "over": False}
    >>> page = render_jobs_page([row], viewer="ada")
    >>> 'data-job="t&lt;1&gt;"' in page and "atelier cancel t&lt;1&gt;" in page and 'data-field="user"' not in page
    True
    >>> 'data-field="user">ada' in render_jobs_page([row], viewer=None)
    True
    >>> run = {"run_id": "0a1b2c3d4e5f", "experiment_id": "7", "spooled": False, "url": "/m/#/experiments/7/runs/0a1b"}
    >>> page = render_jobs_page([{**row, "runs": [run]}], viewer="ada")
    >>> '<a class="atelier-run" data-run="0a1b2c3d4e5f" href="/m/#/experiments/7/runs/0a1b">0a1b2c3d</a>' in page
    True
    """
    esc = html.escape
    user_head = "" if viewer else '<th scope="col">User</th>'
    body = []
    for r in rows:
        follow = f'<code>{esc(r["logs"])}</code>' + ("" if r["over"] else f'<br><code>atelier cancel {esc(r["name"])}</code>')
        body.append(
            f'<tr class="atelier-job" data-job="{esc(r["name"])}" data-state="{esc(r["state"])}">'
            f'<th scope="row" data-field="name"><span title="{esc(r["command"])}">{esc(r["name"])}</span></th>'
            + ("" if viewer else f'<td data-field="user">{esc(r["user"])}</td>')
            + f'<td data-field="profile">{esc(r["profile"])}</td>'
            f'<td data-field="state"><span class="badge {_BADGES.get(r["state"], "text-bg-danger")}">'
            f'{esc(r["state"])}</span>'
            + (f'<div class="small text-muted" data-field="queue">{esc(r["queue"])}</div>' if r.get("queue") else "")
            + '</td>'
            f'<td data-field="started"><time datetime="{esc(r["started"])}">'
            f'{esc(r["started"][:16].replace("T", " "))}</time></td>'
            f'<td class="num" data-field="duration">{esc(r["duration"])}</td>'
            f'<td class="num" data-field="exit-code">{esc(r["exit_code"])}</td>'
            f'<td data-field="runs">{_run_links(r.get("runs") or [])}</td>'
            f'<td data-field="follow">{follow}</td></tr>')
    title = f"Your jobs ({esc(viewer)})" if viewer else "Jobs of every user"
    table = ('<div class="table-responsive"><table class="table table-sm align-middle" id="atelier-job-table">'
             f'<thead><tr><th scope="col">Job</th>{user_head}<th scope="col">Profile</th><th scope="col">State</th>'
             '<th scope="col">Started (UTC)</th><th scope="col" class="num">Duration</th>'
             '<th scope="col" class="num">Exit code</th><th scope="col">MLflow runs</th>'
             '<th scope="col">Output, cancel</th></tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table></div>') if rows else '<p id="atelier-no-jobs">No job yet.</p>'
    intro = ("<p>A job runs a command or a notebook once, in its own container sized by a profile, with your home and "
             "your session's settings: <code>atelier run --profile cpu-small -- python train.py</code> from a "
             "terminal or a laptop (after <code>atelier login</code>), or <code>atelier_lab.run(...)</code> in a "
             "notebook.</p>")
    return service_page(title, f'<h1 class="h3 my-3">{title}</h1>{intro}{table}', links=(("Jobs", "./"),))


class PageHandler(HubOAuthenticated, web.RequestHandler):
    """``PREFIX/``: the caller's jobs in a browser (hub login); an admin's ``?all=1``: everyone's."""

    def initialize(self, jobs: Jobs):
        self.jobs = jobs

    @web.authenticated
    async def get(self):
        user = self.current_user
        everyone = bool(user.get("admin")) and self.get_argument("all", "") not in ("", "0")
        recs = JobRecord.newest_first(JobRecord.all(self.jobs.folder, None if everyone else user["name"]))
        servers = await self.jobs.servers_of(recs)
        now = datetime.now(timezone.utc)
        rows = []
        for r in recs:
            server = servers[r.user].get(job_server(r.name))
            rows.append({**job_row(r, server=server, now=now, place=self.jobs.place(r, server)), "user": r.user,
                         "runs": self.jobs.runs(r)})
        self.finish(render_jobs_page(rows, viewer=None if everyone else user["name"]))


class CallbackHandler(HubOAuthCallbackHandler):
    """The end of the hub's login for the page (its own hub_auth, set in :func:`main`)."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", required=True, type=Path, help="the folder of job records (JOBS/USER/NAME.json)")
    ap.add_argument("--homes", type=Path, help="the folder of homes (HOMES/USER), where "
                    "each job's runner leaves its output and exit code (with --output home)")
    ap.add_argument("--output", choices=("home", "hub"), default="home", help="where a job's output is read: "
                    "on its user's home (--homes), or from the hub (a cluster's: the pod's log)")
    ap.add_argument("--profiles", required=True, help="the profiles folder")
    ap.add_argument("--every", type=float, default=3, help="seconds between checks for ended jobs")
    ap.add_argument("--mlflow", help="MLflow's UI as the page links a job's runs (a path, e.g. /services/mlflow); "
                    "default: no links")
    ap.add_argument("--queue", type=Path, help="the embedded hub's GPU queue as it saves it (STATE/run/capacity.json): "
                    "a queued job's place and ETA; default: none shown")
    ap.add_argument("--capacity", type=Path, help="the capacity settings (with --queue)")
    ap.add_argument("--plan", type=Path, help="the culler's plan: when the holders end (with --queue)")
    ap.add_argument("--listen", help="HOST:PORT to listen on; default: the hub's JUPYTERHUB_SERVICE_URL")
    args = ap.parse_args(argv)
    if args.output == "home" and args.homes is None:
        ap.error("--homes: give the folder of homes (or --output hub, on a cluster)")
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    listen = urlparse(f"http://{args.listen}" if args.listen else os.environ["JUPYTERHUB_SERVICE_URL"])
    args.jobs.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A removed user's token stops here within a few seconds, as at the other services. The
    # API takes tokens only (HubAuth: no cookie, so no cross-site request acts for anyone);
    # the page takes the hub's login (HubOAuth's cookie), and has no action.
    _Api._hub_auth = HubAuth(cache_max_age=HUB_AUTH_CACHE_S)
    PageHandler._hub_auth = CallbackHandler._hub_auth = HubOAuth(cache_max_age=HUB_AUTH_CACHE_S)

    async def run() -> None:
        hub = Hub(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
        kind = HubOutputJobs if args.output == "hub" else Jobs
        jobs = kind(folder=args.jobs, homes=args.homes, profiles_dir=args.profiles, hub=hub, mlflow=args.mlflow,
                    queue=(args.queue, args.capacity, args.plan))
        kw = {"jobs": jobs}
        app = web.Application([
            (rf"{prefix}/api/jobs/?", ListHandler, kw),
            (rf"{prefix}/api/jobs/([^/]+)/log", LogHandler, kw),
            (rf"{prefix}/api/jobs/([^/]+)", JobHandler, kw),
            (rf"{prefix}/health", HealthHandler),
            (rf"{prefix}/oauth_callback", CallbackHandler),
            (rf"{prefix}/?", PageHandler, kw),
        ], cookie_secret=os.urandom(32))
        app.listen(listen.port, listen.hostname)
        log.info("jobs service listening at %s/", prefix)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        while not stopping.is_set():
            try:
                await jobs.settle_all()
            except Exception:  # the hub restarting, say: try again next cycle
                log.exception("checking the jobs failed")
            try:
                await asyncio.wait_for(stopping.wait(), args.every)
            except asyncio.TimeoutError:
                pass

    asyncio.run(run())


if __name__ == "__main__":
    main()
