"""A personal Ray cluster from a notebook or a script in a session.

Rule this module keeps: it asks the hub's Ray clusters service (``ATELIER_RAY_CLUSTERS_URL``,
with the session's own hub token) for a cluster and hands back its address; it never
wraps Ray: the caller runs ``ray.init(cluster.address)`` with Ray's own client. The one
thing it sets is Ray's token authentication in this process's environment
(``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``), which a ``with`` block puts back as it was.
Standard library only; a refusal names the field and the fix.

    from atelier_lab import ray_cluster
    with ray_cluster(workers=2, profile="cpu-small") as cluster:
        ray.init(cluster.address)
        ...
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

__all__ = ["RayCluster", "RayClusterUnavailable", "ray_cluster"]

#: seconds to wait for the service to start the nodes (it answers once all have joined)
START_TIMEOUT = 300
#: where this session's own server proxies its cluster's dashboard, under the server's
#: URL (atelier_lab._ray_dashboard; the hub's twin: atelier_hub.ray_clusters.DASHBOARD_PATH)
DASHBOARD_PATH = "atelier/ray/dashboard/"


class RayClusterUnavailable(RuntimeError):
    """The service refused or could not be reached; the message says why and what to do."""


def _request(method: str, path: str, *, env: Mapping[str, str], body: dict | None = None,
             timeout: float = 60) -> dict:
    from ._service import base_url, call

    base, token = base_url(env, "ATELIER_RAY_CLUSTERS_URL")
    if not base or not token:
        raise RayClusterUnavailable(
            "this session has no Ray clusters service (ATELIER_RAY_CLUSTERS_URL is not set): personal clusters "
            "need an embedded hub with container sessions, or, on a cluster, KubeRay and the cluster settings' "
            "`ray_clusters: {enabled: true}` (ask your platform team); single-machine ray.init() works everywhere")
    data, _ = call(method, f"{base}{path}", token=token, error=RayClusterUnavailable, what="Ray clusters service",
                   body=body, timeout=timeout)
    return json.loads(data or b"{}")


def _reload_ray_auth() -> None:
    """Ray reads ``RAY_AUTH_MODE`` once, when ``ray._raylet`` is imported. Where it already
    is (``import ray`` came first, as in most notebooks), its configuration and token are
    read again from the environment, as Ray's own tests do between two clusters
    (``ray/_private/authentication_test_utils.py``, ``reset_auth_token_state``). Nothing
    is touched while this process is connected to a Ray cluster."""
    raylet = sys.modules.get("ray._raylet")
    ray = sys.modules.get("ray")
    if raylet is None or (ray is not None and ray.is_initialized()):
        return
    raylet.Config.initialize("")
    raylet.AuthenticationTokenLoader.instance().reset_cache()


class RayCluster:
    """A running personal cluster: ``address`` for ``ray.init``, its ``workers``,
    ``profile``, ``server`` and ``dashboard_url`` (Ray's dashboard through the hub). As a
    context manager it stops the cluster at the end of the block (one it did not start,
    from ``atelier ray up``, is left running)."""

    def __init__(self, model: dict, *, created: bool, env=os.environ):
        self.address: str = model["address"]
        self.workers: int = model["workers"]
        self.profile: str = model["profile"]
        self.server: str = model.get("server", "")
        self.nodes: list[dict] = model.get("nodes", [])
        #: Ray's dashboard (this session's server proxies it, for its owner): at this server's
        #: own address where the hub gives one (a user's own origin), else under the hub's
        public = env.get("JUPYTERHUB_PUBLIC_URL", "")
        self.dashboard_url: str = (f"{public.rstrip('/')}/{DASHBOARD_PATH}" if public
                                   else model.get("dashboard_url", ""))
        self.created = created
        self._env = env
        self._token = model.get("token", "")
        self._saved = {k: env.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        # Ray's client reads these when it connects (ray.init), so the caller's own
        # ray.init(cluster.address) is authenticated.
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = self._token
        if env is os.environ:
            _reload_ray_auth()

    def __repr__(self) -> str:  # never show the token
        return (f"RayCluster(address={self.address!r}, workers={self.workers}, profile={self.profile!r}, "
                f"dashboard_url={self.dashboard_url!r})")

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc) -> None:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()  # before its nodes go: a driver left connected would wait for them
        if self.created:
            self.down()
        for key, value in self._saved.items():
            if value is None:
                self._env.pop(key, None)
            else:
                self._env[key] = value
        if self._env is os.environ:
            _reload_ray_auth()

    def down(self) -> None:
        """Stop the cluster now (its nodes are removed)."""
        import urllib.parse

        query = urllib.parse.urlencode({"server": self.server})
        try:
            _request("DELETE", f"/api/clusters?{query}", env=self._env)
        except RayClusterUnavailable as exc:
            if "no Ray cluster" not in str(exc):
                raise


def ray_cluster(workers: int = 1, profile: str | None = None, *, env=os.environ) -> RayCluster:
    """Start a Ray cluster of ``workers`` workers, each sized by ``profile`` (default: the
    deployment's default profile), inside this session; returns once every node has
    joined. Where this session already has one of that shape, that one is returned.

    >>> with ray_cluster(workers=2, profile="cpu-small") as cluster:  # doctest: +SKIP
    ...     ray.init(cluster.address)
    """
    body = {"workers": workers, "profile": profile, "server": env.get("JUPYTERHUB_SERVER_NAME", "")}
    model = _request("POST", "/api/clusters", env=env, body=body, timeout=START_TIMEOUT)
    return RayCluster(model, created=model.pop("created", True), env=env)
