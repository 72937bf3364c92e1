"""The usage page's process: bar charts per user and over time, and the totals tables, behind hub login.

Rule this module keeps: it renders :func:`atelier_hub.usage.summarize` of the usage file
and nothing else (``?since=DATE&until=DATE`` as ``atelier usage`` takes them); the HTML
is a pure function (:func:`render_page`) with no script, whose only asset is the hub's own
stylesheet (Atelier's look, :mod:`atelier_hub.look`), and every value in it is escaped.
``PREFIX/api/usage`` answers the same as JSON.

Who sees what (:func:`sees_everyone`): the hub's admins (and tokens holding
``admin:users``, such as the CLI's admin service) see every user's lines; any other user
sees their own lines only, never another's: the summary is made from their lines alone.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web

from ..look import service_page
from ..usage import FIELDS, only_user, parse_when, read_events, summarize
from ._api import HealthHandler, serve_until_signalled
from ._front import HUB_AUTH_CACHE_S

_LABELS = {"servers": "servers", "hours": "hours", "cpu_hours": "CPU-hours",
           "memory_gb_hours": "memory GB-hours", "gpu_hours": "GPU-hours", "cost": "cost"}


#: days the chart over time shows at most (the latest)
DAYS_SHOWN = 31


def sees_everyone(model: dict) -> bool:
    """Whether the hub's model of the caller (``/hub/api/user``) is an admin's.

    >>> sees_everyone({"kind": "user", "name": "ada", "admin": False, "scopes": ["access:services"]})
    False
    >>> sees_everyone({"kind": "service", "name": "atelier-admin", "scopes": ["admin:users", "tokens"]})
    True
    """
    return bool(model.get("admin")) or "admin:users" in (model.get("scopes") or [])


def _bar(kind: str, name: str, cpu_hours: float, top: float, value: str, *, classes: str = "atelier-bar") -> str:
    """One bar of a chart: ``name``, a fill as long as ``cpu_hours`` is against ``top``, ``value``."""
    return (f'<div class="{classes}" data-{kind}="{html.escape(name)}" data-cpu-hours="{cpu_hours}">'
            f'<span class="name">{html.escape(name)}</span>'
            f'<span class="fill" style="width:{60 * cpu_hours / top:.1f}%"></span>'
            f'<span class="value">{html.escape(value)}</span></div>')


def render_page(summary: dict, *, viewer: str | None = None, hub_prefix: str | None = None) -> str:
    """The page for ``summary``: CPU-hours per user as bars, then per day (the latest
    :data:`DAYS_SHOWN`; with the cost where a profile has a price), then the tables, in Atelier's
    look (:func:`atelier_hub.look.service_page`, which ``hub_prefix`` is passed to).

    >>> s = {"since": None, "until": "2026-01-01T00:00:00Z", "total": dict.fromkeys(FIELDS, 0),
    ...      "by_user": {"ada": {"servers": 1, "hours": 1.0, "cpu_hours": 2.0, "memory_gb_hours": 4.0,
    ...                          "gpu_hours": 0.0, "cost": 0.0}}, "by_profile": {}}
    >>> 'data-user="ada"' in render_page(s)
    True
    """
    users = summary["by_user"]
    top = max((v["cpu_hours"] for v in users.values()), default=0) or 1
    bars = "".join(_bar("user", name, v["cpu_hours"], top, f'{v["cpu_hours"]:.2f} CPU-h · {v["gpu_hours"]:.2f} GPU-h',
                        classes="atelier-bar bar")
                   for name, v in sorted(users.items()))
    days = list(summary.get("by_day", {}).items())[-DAYS_SHOWN:]
    day_top = max((v["cpu_hours"] for _, v in days), default=0) or 1
    priced = any(v["cost"] for _, v in days)
    over_time = "".join(_bar("day", day, v["cpu_hours"], day_top,
                             f'{v["cpu_hours"]:.2f} CPU-h' + (f" · cost {v['cost']:.2f}" if priced else ""))
                        for day, v in days)

    def table(title: str, rows: dict, kind: str) -> str:
        head = "".join(f'<th scope="col" class="num">{_LABELS[f]}</th>' for f in FIELDS)
        body = "".join(
            f'<tr data-{kind}="{html.escape(name)}"><th scope="row">{html.escape(name)}</th>'
            + "".join(f'<td class="num" data-field="{f}">{v[f]:g}</td>' for f in FIELDS) + "</tr>"
            for name, v in sorted(rows.items()))
        total = "".join(f'<td class="num" data-field="{f}">{summary["total"][f]:g}</td>' for f in FIELDS)
        return (f'<h2 class="h4">{title}</h2><div class="table-responsive"><table class="table table-sm">'
                f'<thead><tr><th scope="col">{kind}</th>{head}</tr></thead><tbody>{body}'
                f'<tr class="total" data-total=""><th scope="row">total</th>{total}</tr></tbody></table></div>')

    since = html.escape(summary["since"] or "the first record")
    whose = f"Your usage ({html.escape(viewer)})" if viewer else "Usage"
    body = f"""<h1 class="h3 my-3">{whose}</h1>
<p>From {since} to {html.escape(summary["until"])}, from each profile's limits and the time each server ran
(the same as <code>atelier usage</code>).</p>
<h2 class="h4">CPU-hours per user</h2><div class="chart mb-4">{bars or "<p>No server has run yet.</p>"}</div>
<h2 class="h4">Per day (UTC{", the last " + str(DAYS_SHOWN) if len(summary.get("by_day", {})) > DAYS_SHOWN else ""})</h2>
<div class="chart mb-4" id="atelier-usage-days">{over_time or "<p>No server has run yet.</p>"}</div>
{table("Per user", users, "user")}{table("Per profile", summary["by_profile"], "profile")}{
table("Sessions and jobs", summary.get("by_kind", {}), "kind")}{
table("Per group", summary["by_group"], "group") if summary.get("by_group") else ""}"""
    return service_page(whose, body, hub_prefix=hub_prefix, links=(("Usage", "./"),))


class _Usage(HubOAuthenticated, web.RequestHandler):
    def initialize(self, usage_file: Path):
        self.usage_file = usage_file

    def summary(self) -> dict:
        try:
            since, until = (parse_when(v) if (v := self.get_argument(k, None)) else None
                            for k in ("since", "until"))
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        events = read_events(self.usage_file)
        if not sees_everyone(self.current_user):
            events = only_user(events, self.current_user["name"])
        return summarize(events, since=since, until=until)


class PageHandler(_Usage):
    @web.authenticated
    def get(self):
        viewer = None if sees_everyone(self.current_user) else self.current_user["name"]
        self.finish(render_page(self.summary(), viewer=viewer))


class ApiHandler(_Usage):
    @web.authenticated
    def get(self):
        self.finish(self.summary())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--usage-file", required=True, type=Path)
    ap.add_argument("--listen", metavar="HOST:PORT", help="where to listen (default: the host and port of the "
                    "service's URL; in a hub pod the URL names the hub's Service, the page listens on 0.0.0.0)")
    args = ap.parse_args(argv)
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    listen = urlparse(f"http://{args.listen}" if args.listen else os.environ["JUPYTERHUB_SERVICE_URL"])
    kw = {"usage_file": args.usage_file}
    # The handlers' one hub_auth (a singleton), asking the hub again after a few seconds:
    # a removed user's login stops here as at the other services.
    HubOAuth.instance(cache_max_age=HUB_AUTH_CACHE_S)
    app = web.Application([
        (rf"{prefix}/oauth_callback", HubOAuthCallbackHandler),
        (rf"{prefix}/api/usage", ApiHandler, kw),
        (rf"{prefix}/health", HealthHandler),
        (rf"{prefix}/?", PageHandler, kw),
    ], cookie_secret=os.urandom(32))

    asyncio.run(serve_until_signalled(app, listen))


if __name__ == "__main__":
    main()
