"""Ray's dashboard of this session's personal cluster, at ``{base_url}atelier/ray/dashboard/``.

Rule this module keeps: the session's own server proxies its cluster's dashboard, so the
dashboard is reached through the hub by the server's owner alone (jupyter_server's own
authentication, which on a hub session admits the owner only, and its XSRF check on
anything but a read). The cluster's dashboard address and Ray token come from the Ray
clusters service's answer to this session's hub token (``ATELIER_RAY_CLUSTERS_URL``,
cached a few seconds: the dashboard's page polls); the token is added to each request
here and never reaches the browser, and the browser's cookies and credentials (the
hub's) never reach Ray. Without a cluster the page says how to start one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import httpclient, web

from ._ray import DASHBOARD_PATH
from ._service import base_url

#: seconds the service's answer is reused (the dashboard's page asks several URLs a second)
CACHE_S = 5
#: headers that belong to one hop, or to the hub (its cookies, its tokens), not to Ray
_NOT_FORWARDED = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                  "trailers", "transfer-encoding", "upgrade", "host", "cookie", "authorization", "content-length",
                  "x-xsrftoken", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
_NOT_RETURNED = {"connection", "keep-alive", "transfer-encoding", "content-length", "set-cookie", "server", "date"}

NO_CLUSTER = ("This session has no personal Ray cluster running. Start one in a notebook with\n"
              "    from atelier_lab import ray_cluster\n"
              "    cluster = ray_cluster(workers=2)\n"
              "or in a terminal with `atelier ray up --workers 2`, then reload this page.\n")
NO_SERVICE = ("This deployment runs no Ray clusters service (ATELIER_RAY_CLUSTERS_URL is not set), so this session "
              "has no personal Ray cluster and no dashboard to show. Single-machine Ray (ray.init()) works here.\n")


class ClusterLookup:
    """This session's cluster, as the Ray clusters service answers the session's token."""

    def __init__(self, env: Mapping[str, str] = os.environ):
        self.env = env
        self.model: dict | None = None
        self.at = -CACHE_S

    async def get(self) -> dict | None:
        if time.monotonic() - self.at < CACHE_S:
            return self.model
        base, token = base_url(self.env, "ATELIER_RAY_CLUSTERS_URL")
        r = await httpclient.AsyncHTTPClient().fetch(
            f"{base}/api/clusters", headers={"Authorization": f"token {token}"}, raise_error=False,
            request_timeout=15)
        if r.code != 200:
            raise web.HTTPError(502, reason="Ray clusters service unavailable",
                                log_message=f"the Ray clusters service at {base} answered {r.code}; try again "
                                            "in a moment")
        server = self.env.get("JUPYTERHUB_SERVER_NAME", "")
        clusters = json.loads(r.body or b"{}").get("clusters") or []
        self.model = next((c for c in clusters if c.get("server", "") == server), None)
        self.at = time.monotonic()
        return self.model


class RayDashboardHandler(JupyterHandler):
    """Every method, proxied to the cluster's dashboard with the cluster's token."""

    def initialize(self, lookup: ClusterLookup, prefix: str) -> None:
        self.lookup = lookup
        self.prefix = prefix

    def _text(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)

    async def _proxy(self, path: str) -> None:
        if not self.lookup.env.get("ATELIER_RAY_CLUSTERS_URL"):
            return self._text(404, NO_SERVICE)
        model = await self.lookup.get()
        if not model or not model.get("dashboard"):
            return self._text(404, NO_CLUSTER)
        query = f"?{self.request.query}" if self.request.query else ""
        url = f"{model['dashboard'].rstrip('/')}/{path}{query}"
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in _NOT_FORWARDED}
        headers["Authorization"] = f"Bearer {model.get('token', '')}"
        method = self.request.method
        body = self.request.body if method in ("POST", "PUT", "PATCH") else None
        request = httpclient.HTTPRequest(url, method=method, headers=headers, body=body, follow_redirects=False,
                                         decompress_response=False, request_timeout=120,
                                         allow_nonstandard_methods=True)
        r = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        if r.code == 599:
            self.lookup.at = -CACHE_S  # the cluster may have gone: ask the service again next time
            return self._text(502, f"Ray's dashboard at {model['dashboard']} did not answer ({r.error}); if the "
                                   "cluster just started, reload in a few seconds.\n")
        self.set_status(r.code, r.reason)
        for key, value in r.headers.get_all():
            if key.lower() in _NOT_RETURNED:
                continue
            if key.lower() == "location" and value.startswith("/"):
                value = self.prefix + value.lstrip("/")
            self.add_header(key, value)
        if r.body and r.code not in (204, 304) and method != "HEAD":
            self.write(r.body)
        self.finish()

    @web.authenticated
    async def _forward(self, path: str) -> None:
        await self._proxy(path)

    get = head = post = put = patch = delete = _forward


def load(serverapp) -> None:
    web_app = serverapp.web_app
    prefix = url_path_join(web_app.settings["base_url"], DASHBOARD_PATH)
    lookup = ClusterLookup()
    web_app.add_handlers(".*$", [
        # the dashboard's page asks for its files and API relative to its own URL: keep the slash
        (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),
        (prefix + "(.*)", RayDashboardHandler, {"lookup": lookup, "prefix": prefix}),
    ])
    serverapp.log.info("atelier_lab: this session's Ray dashboard at %s", prefix)
