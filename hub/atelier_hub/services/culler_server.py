"""The culler service's process: jupyterhub-idle-culler's loop, deciding per profile.

Rule this module keeps: the upstream culler (``jupyterhub_idle_culler.cull_idle``, pinned)
lists the ready servers and stops them through the hub's API; every decision is ours,
made by :func:`atelier_hub.culling.decide` from the server's profile (its spawner state,
else its ``user_options``, else the default profile), the hub's last activity and the
session's own activity reports. The latest decision for each server is also kept whole in
the plan file (``--plan``, replaced at once), which the hub's home page reads. Upstream's
single ``--timeout`` and ``--max-age`` are not used: its ``cull_arbiter`` hook gets each
server's model, so one culler serves every profile. Each decision is logged (the hub log)
and, when it changes, written as one JSON line to the audit file.

Sessions (``atelier_lab._activity``) POST reports to ``PREFIX/api/report`` with their hub
token (the hub says whose it is, asked again after a few seconds: a removed user's
token stops here within :data:`._front.HUB_AUTH_CACHE_S`); the answer is the server's
plan (when it stops, whether to warn). ``PREFIX/api/extend`` postpones the stop by a
whole idle timeout.

ref: jupyterhub-idle-culler 2.0.0 ``__init__.py`` (``cull_idle``, ``cull_arbiter``,
``handle_server``): the arbiter's result decides alone once ``max_age`` is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlparse

from jupyterhub.services.auth import HubAuth, HubAuthenticated
from jupyterhub_idle_culler import cull_idle, parse_date
from tornado import web

from ..culling import Decision, Policy, Report, decide
from ..jobs import is_job
from ..profiles import Profile, load_profiles
from ._api import HealthHandler
from ._front import HUB_AUTH_CACHE_S

log = logging.getLogger("atelier.culler")

#: a job's idle timeout: never, in practice (a hundred years)
JOB_IDLE_TIMEOUT = 100 * 365 * 24 * 3600


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


class Culler:
    """What the culler knows between cycles, keyed by server URL prefix (``/user/ada/``)."""

    def __init__(self, *, profiles: list[Profile], audit: Path, stale_after: float, plan: Path | None = None):
        self.profiles = {p.name: p for p in profiles}
        self.default = next((p for p in profiles if p.default), profiles[0])
        self.audit = audit
        self.plan_file = plan
        self.stale_after = stale_after
        self.reports: dict[str, Report] = {}
        self.extended: dict[str, datetime] = {}
        self.servers: dict[str, dict] = {}
        self.decisions: dict[str, Decision] = {}
        self._audited: dict[str, tuple] = {}
        self._plan: dict[str, dict] = {}

    def profile_of(self, server: dict) -> Profile:
        name = (server.get("state") or {}).get("profile") or (server.get("user_options") or {}).get("profile")
        return self.profiles.get(name, self.default)

    def decide(self, prefix: str, server: dict, now: datetime) -> Decision:
        p = self.profile_of(server)
        policy = Policy(idle_timeout=p.idle_timeout, max_age=p.culling.max_age, warn_before=p.warn_before)
        if is_job(server.get("name"), server.get("user_options")):
            # A job is work until its command ends (it sends no activity reports: no
            # Jupyter server runs in it); only its profile's max_age ends it.
            policy = Policy(idle_timeout=JOB_IDLE_TIMEOUT, max_age=p.culling.max_age)
        last = server.get("last_activity")
        return decide(now=now, policy=policy, started=parse_date(server["started"]),
                      hub_last_activity=parse_date(last) if last else None, report=self.reports.get(prefix),
                      extended_at=self.extended.get(prefix), stale_after=self.stale_after)

    def record(self, prefix: str, server: dict, decision: Decision) -> None:
        """Log the decision; write an audit line when it differs from the last one."""
        self.decisions[prefix] = decision
        name = prefix.strip("/").split("/", 1)[-1]
        profile = self.profile_of(server).name
        log.info("%s %s (profile %s): %s", "Stopping" if decision.action == "cull" else "Keeping", name,
                 profile, decision.reason)
        self.write_plan(name, server, profile, decision)
        key = (decision.action, decision.signal, decision.warn, decision.reason.split(" ")[0])
        if self._audited.get(prefix) == key:
            return
        self._audited[prefix] = key
        line = {"time": _iso(_now()), "server": name, "profile": profile, "action": decision.action,
                "signal": decision.signal, "warn": decision.warn, "cull_at": _iso(decision.cull_at),
                "reason": decision.reason}
        self.audit.parent.mkdir(parents=True, exist_ok=True)
        with self.audit.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def write_plan(self, name: str, server: dict, profile: str, decision: Decision) -> None:
        """The latest decision per server (``user/server``), the whole file replaced at once
        (a reader never sees half of it); ``started`` tells a later run of the same server
        name from the one decided on."""
        if self.plan_file is None:
            return
        self._plan[name] = {"time": _iso(_now()), "started": server.get("started"), "profile": profile,
                            "action": decision.action, "signal": decision.signal,
                            "cull_at": _iso(decision.cull_at), "reason": decision.reason}
        self.plan_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.plan_file.with_name(self.plan_file.name + ".tmp")
        tmp.write_text(json.dumps(self._plan, indent=1))
        os.replace(tmp, self.plan_file)

    def arbiter(self, *, inactive, inactive_limit, server, **_) -> bool:
        # The hub's API gives a full URL where each user has an origin of their own
        # (http://ada.localhost:8000/user/ada/); sessions report their path prefix.
        prefix = urlparse(server["url"]).path
        self.servers[prefix] = server
        decision = self.decide(prefix, server, _now())
        self.record(prefix, server, decision)
        if decision.action == "cull":
            self.reports.pop(prefix, None)
            self.extended.pop(prefix, None)
        return decision.action == "cull"

    def plan(self, prefix: str) -> dict:
        """What a session is told: when it stops and whether to warn now."""
        server = self.servers.get(prefix)
        if server is None:
            return {"cull_at": None, "warn": False}
        d = self.decide(prefix, server, _now())
        p = self.profile_of(server)
        return {"cull_at": _iso(d.cull_at), "warn": d.warn, "reason": d.reason, "signal": d.signal,
                "profile": p.name, "idle_timeout": p.idle_timeout, "warn_before": p.warn_before}


_SIGNAL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def _printable(value, limit: int = 120) -> str:
    """One line of printable text (no log line forged through a newline).

    >>> _printable("1 kernel busy\\nfake line")
    '1 kernel busy fake line'
    """
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return text[:limit]


class _SessionHandler(HubAuthenticated, web.RequestHandler):
    """Token-authenticated (the session's hub token); a user speaks only for their own servers."""

    def initialize(self, culler: Culler, hub_prefix: str):
        self.culler = culler
        self.hub_prefix = hub_prefix

    def check_xsrf_cookie(self):
        pass  # token-authenticated API: no cookies accepted (HubAuthenticated without OAuth)

    def own_prefix(self) -> str:
        user = self.current_user
        if not user:
            raise web.HTTPError(403, "send your hub token: Authorization: token TOKEN")
        try:
            prefix = json.loads(self.request.body or b"{}")["prefix"]
        except (ValueError, KeyError, TypeError):
            raise web.HTTPError(400, 'body must be JSON with "prefix": the server\'s URL prefix') from None
        mine = f"{self.hub_prefix}user/{quote(user['name'], safe='')}/"
        if not isinstance(prefix, str) or not prefix.startswith(mine):
            raise web.HTTPError(403, f"{prefix!r} is not one of your servers")
        return prefix


class ReportHandler(_SessionHandler):
    def post(self):
        prefix = self.own_prefix()
        body = json.loads(self.request.body)
        last = body.get("last_activity")
        # What a session says ends up in the hub log and the audit: names and short details only.
        active = {k: _printable(v) for k, v in dict(body.get("active") or {}).items()
                  if isinstance(k, str) and _SIGNAL_NAME.match(k)}
        self.culler.reports[prefix] = Report(time=_now(), last_activity=parse_date(last) if last else None,
                                             active=active)
        self.finish(self.culler.plan(prefix))


class ExtendHandler(_SessionHandler):
    def post(self):
        prefix = self.own_prefix()
        self.culler.extended[prefix] = _now()
        log.info("Extend for %s: the idle timer starts again", prefix)
        self.finish(self.culler.plan(prefix))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", required=True, help="the profiles folder (each profile's culling settings)")
    ap.add_argument("--audit", required=True, type=Path, help="JSON-lines file of decisions")
    ap.add_argument("--plan", type=Path, help="JSON file of each server's latest decision (the home page's)")
    ap.add_argument("--every", type=float, default=60, help="seconds between checks")
    ap.add_argument("--stale-after", type=float, default=180,
                    help="seconds after which a session's last report no longer counts")
    ap.add_argument("--listen", help="HOST:PORT to listen on; default: the hub's JUPYTERHUB_SERVICE_URL "
                    "(a cluster's hub pod gives 0.0.0.0:PORT, so sessions reach it through the hub's Service)")
    ap.add_argument("--prefix", help="URL prefix; default: the hub's JUPYTERHUB_SERVICE_PREFIX")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")

    culler = Culler(profiles=load_profiles(args.profiles), audit=args.audit, stale_after=args.stale_after,
                    plan=args.plan)
    api_url = os.environ["JUPYTERHUB_API_URL"].rstrip("/")
    prefix = (args.prefix or os.environ["JUPYTERHUB_SERVICE_PREFIX"]).rstrip("/")
    hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/")
    listen = urlparse(f"http://{args.listen}" if args.listen else os.environ["JUPYTERHUB_SERVICE_URL"])
    kw = {"culler": culler, "hub_prefix": hub_prefix}
    # The handlers' one hub_auth (a singleton), asking the hub again after a few seconds
    # (JupyterHub's default trusts an answer for 5 minutes).
    HubAuth.instance(cache_max_age=HUB_AUTH_CACHE_S)
    app = web.Application([
        (rf"{prefix}/api/report", ReportHandler, kw),
        (rf"{prefix}/api/extend", ExtendHandler, kw),
        (rf"{prefix}/health", HealthHandler),
    ])

    async def run() -> None:
        app.listen(listen.port, listen.hostname)
        log.info("culler listening at %s/, checking every %g s; profiles: %s", prefix, args.every,
                 ", ".join(f"{p.name} {p.idle_timeout} s" for p in culler.profiles.values()))
        cycle = partial(cull_idle, url=api_url, api_token=os.environ["JUPYTERHUB_API_TOKEN"], inactive_limit=0,
                        logger=log, max_age=0, cull_arbiter=culler.arbiter, remove_named_servers=False)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        while not stopping.is_set():
            try:
                await cycle()
            except Exception:  # the hub restarting, say: try again next cycle
                log.exception("cull cycle failed")
            try:
                await asyncio.wait_for(stopping.wait(), args.every)
            except asyncio.TimeoutError:
                pass

    asyncio.run(run())


if __name__ == "__main__":
    main()
