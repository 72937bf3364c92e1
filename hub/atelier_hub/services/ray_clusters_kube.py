"""The Ray clusters service on a cluster: KubeRay's ``RayCluster`` per session that asks.

Rule this module keeps: the same API, checks and answers as the embedded mode
(:class:`~atelier_hub.services.ray_clusters_server.Clusters`), with KubeRay's operator
in place of the Docker engine. It acts for the caller alone: the session pod it builds
on is found by the annotations KubeSpawner gives the caller's pods (the user's and the
server's names), a cluster is found by the labels it was made with, and another user's
clusters are neither listed nor reachable (404, as a server that does not exist).

What it makes (:mod:`atelier_hub.cluster.ray` builds them): the cluster's token Secret,
a NetworkPolicy that lets only the owner's sessions and the cluster's own pods reach its
pods, and the ``RayCluster``, all owned by the session's pod, so Kubernetes' garbage
collector removes them, and KubeRay's pods, when the pod goes. Nothing of a cluster is
kept here: a restarted hub pod finds them again in the API server. It answers a POST
once the head is ready (its Ray client port answers); workers the cluster cannot place
yet keep starting in the background, and ``atelier ray status`` shows them.

Its identity is the hub's ServiceAccount, with the Role of ``atelier render hub-rbac``
(``rayclusters`` and ``networkpolicies`` in the hub's namespace). Each node counts in the usage record as kind
``ray``, as in the embedded mode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time

from tornado import web

from ..cluster.ray import (
    KUBERAY_CLUSTER_LABEL,
    PROFILE_ANNOTATION,
    RAY_API,
    SERVER_ANNOTATION,
    USER_ANNOTATION,
    USER_LABEL,
    check_gpus,
    cluster_model,
    cluster_name,
    cluster_workers,
    head_profile,
    label_value,
    network_policy_manifest,
    ray_cluster_manifest,
    token_secret_manifest,
)
from ..profiles import ProfileError, resolve_profile
from ..ray_clusters import RayClusterError
from .ray_clusters_server import Clusters, arguments, no_cluster, serve

__all__ = ["KubeClusters"]

log = logging.getLogger("atelier.ray_clusters")

#: seconds a new cluster's head may take to answer (its image is the session's: on the node already)
READY_TIMEOUT = 240
_GROUP, _VERSION = RAY_API.split("/")


class KubeClusters(Clusters):
    """Personal Ray clusters as KubeRay ``RayCluster`` objects in ``settings["namespace"]``."""

    def __init__(self, settings: dict, *, state, profiles_dir: str):
        super().__init__(state=state, profiles_dir=profiles_dir, engine=None)
        self.settings = settings
        self.namespace = settings["namespace"]
        self._api = None

    # -- the API server ----------------------------------------------------------------
    async def api(self):
        """kubernetes_asyncio's client from the hub pod's ServiceAccount (made at first use)."""
        if self._api is None:
            from kubernetes_asyncio import client, config

            config.load_incluster_config()
            api_client = client.ApiClient()
            self._api = (client.CoreV1Api(api_client), client.CustomObjectsApi(api_client))
        return self._api

    def _networking(self):
        from kubernetes_asyncio import client

        return client.NetworkingV1Api(self._api[0].api_client)

    async def _clusters(self, user: str | None = None) -> list[dict]:
        """Atelier's RayClusters, or ``user``'s: selected by the API server on the label (each
        session's activity reporter asks for its user's), then by the name itself (the
        label holds a slug of it)."""
        _, custom = await self.api()
        selector = "app.kubernetes.io/managed-by=atelier"
        if user is not None:
            selector += f",{USER_LABEL}={label_value(user)}"
        found = await custom.list_namespaced_custom_object(_GROUP, _VERSION, self.namespace, "rayclusters",
                                                           label_selector=selector)
        return [rc for rc in found.get("items", [])
                if user is None or (rc["metadata"].get("annotations") or {}).get(USER_ANNOTATION) == user]

    async def _pods(self, rc_name: str) -> list[dict]:
        core, _ = await self.api()
        pods = await core.list_namespaced_pod(self.namespace, label_selector=f"{KUBERAY_CLUSTER_LABEL}={rc_name}",
                                              _preload_content=False)
        return (await pods.json()).get("items", [])

    async def _session_pod(self, user: str, server: str) -> dict | None:
        """The user's running session pod for ``server`` (not a job's)."""
        core, _ = await self.api()
        pods = await core.list_namespaced_pod(self.namespace, label_selector="component=singleuser-server",
                                              _preload_content=False)
        for pod in (await pods.json()).get("items", []):
            ann = pod["metadata"].get("annotations") or {}
            if (ann.get("hub.jupyter.org/username") == user and ann.get("hub.jupyter.org/servername", "") == server
                    and "atelier.dev/job" not in (pod["metadata"].get("labels") or {})
                    and pod.get("status", {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")):
                return pod
        return None

    async def _token(self, rc: dict) -> str:
        import base64

        core, _ = await self.api()
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            secret = await core.read_namespaced_secret(f"{rc['metadata']['name']}-token", self.namespace)
        except ApiException:
            return ""
        return base64.b64decode((secret.data or {}).get("token", "")).decode()

    async def _model(self, rc: dict, token: str | None = None) -> dict:
        """The answer for ``rc``; its token read from its Secret unless the caller has it."""
        token = await self._token(rc) if token is None else token
        return cluster_model(rc, await self._pods(rc["metadata"]["name"]), token=token,
                             client_port=self.settings["client_port"], gcs_port=self.settings["gcs_port"],
                             head_ip=self.settings.get("head_ip"), dashboard_port=self.settings["dashboard_port"],
                             hub_base=os.environ.get("JUPYTERHUB_BASE_URL", "/"))

    limit_setting = "ray_clusters.workers_per_user in the cluster settings"

    def workers_max(self) -> int:
        return self.settings["workers_per_user"]

    # -- the API ---------------------------------------------------------------------------
    async def list(self, user: str) -> list[dict]:
        return [await self._model(rc) for rc in sorted(await self._clusters(user), key=lambda r: r["metadata"]["name"])]

    async def create(self, user: dict, body) -> tuple[int, dict]:
        name = user["name"]
        server = body.get("server") if isinstance(body, dict) else None
        pod = await self._session_pod(name, server or "") if isinstance(server, (str, type(None))) else None
        mine = await self._clusters(name)
        own = cluster_name(pod["metadata"]["name"]) if pod else None
        # The user's other clusters: (workers, profile) each, counted against both limits.
        others = [(cluster_workers(rc), (rc["metadata"].get("annotations") or {}).get(PROFILE_ANNOTATION, ""))
                  for rc in mine if rc["metadata"]["name"] != own]
        profiles, request = self.checked(body, sum(n for n, _ in others))
        gpus = {p.name: p.gpu_count for p in profiles}
        gpus_in_use = sum(n * gpus.get(name, 0) for n, name in others)
        if pod is None:
            shown = f"server {request['server']!r}" if request["server"] else "default server"
            raise RayClusterError("server", f"your {shown} is not running: start it first (a cluster belongs to "
                                  "the session that asks for it, and goes with it)", status=409)
        try:
            profile = resolve_profile(profiles, request["profile"], groups=set(user.get("groups") or []))
        except ProfileError as exc:
            raise RayClusterError("profile", str(exc)) from None
        check_gpus(workers=request["workers"], profile=profile, in_use=gpus_in_use,
                   limit=self.settings["gpus_per_user"])
        async with self.locks.setdefault(own, asyncio.Lock()):
            have = next((rc for rc in await self._clusters(name) if rc["metadata"]["name"] == own), None)
            if have is not None:
                model = await self._model(have)
                if (model["workers"], model["profile"]) == (request["workers"], request["profile"]):
                    return 200, {**model, "created": False}
                raise RayClusterError("workers", f"this session already has a cluster of {model['workers']} "
                                      f"{model['profile']} worker(s): use it as it is, or stop it first "
                                      "(atelier ray down, or leave its `with ray_cluster(...)` block)", status=409)
            core, custom = await self.api()
            token = secrets.token_urlsafe(32)
            secret = token_secret_manifest(pod, token)
            rc = ray_cluster_manifest(
                pod, profile=profile, workers=request["workers"],
                head={"cpu": str(self.settings["head_cpu"]), "memory": self.settings["head_memory"]},
                gcs_port=self.settings["gcs_port"], client_port=self.settings["client_port"],
                head_ip=self.settings.get("head_ip"), token_secret=secret["metadata"]["name"],
                dashboard_port=self.settings["dashboard_port"])
            self.starting.add(own)
            try:
                await core.create_namespaced_secret(self.namespace, secret)
                await self._networking().create_namespaced_network_policy(self.namespace,
                                                                           network_policy_manifest(pod))
                await custom.create_namespaced_custom_object(_GROUP, _VERSION, self.namespace, "rayclusters", rc)
                log.info("ray cluster %s of %s (server %r): head and %d %s worker(s) asked of KubeRay", own, name,
                         request["server"], request["workers"], profile.name)
                model = await self.wait_head(own, token)
            except Exception:
                await self._remove(own)  # no half-made cluster is left behind
                raise
            finally:
                self.starting.discard(own)
            head, *workers = self.usage_keys(name, request["server"], request["workers"])
            self.count("start", [head], head_profile(profile, cpu=self.settings["head_cpu"],
                                                     memory=self.settings["head_memory"]), groups=user.get("groups"))
            self.count("start", workers, profile, groups=user.get("groups"))
            return 201, {**model, "created": True}

    async def wait_head(self, rc_name: str, token: str) -> dict:
        """Until the head pod is ready (its readiness probe: Ray's client port answers)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        _, custom = await self.api()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                rc = await custom.get_namespaced_custom_object(_GROUP, _VERSION, self.namespace, "rayclusters", rc_name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                raise web.HTTPError(409, "the cluster was deleted while starting (its session stopped?)") from None
            model = await self._model(rc, token)
            head = next((n for n in model["nodes"] if n["role"] == "head"), None)
            if head and head["state"] == "running" and model["address"]:
                return model
            if head and head["state"] in ("failed", "succeeded"):
                raise web.HTTPError(500, f"the cluster's head ended while starting ({head['state']}); "
                                         "`kubectl logs` of its pod says why")
            if time.monotonic() > deadline:
                raise web.HTTPError(504, f"the cluster's head was not ready within {READY_TIMEOUT} s "
                                         f"({head['state'] if head else 'no pod yet'}); try again")
            await asyncio.sleep(1)

    async def _remove(self, rc_name: str) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        core, custom = await self.api()
        for call in (lambda: custom.delete_namespaced_custom_object(_GROUP, _VERSION, self.namespace, "rayclusters",
                                                                    rc_name, propagation_policy="Background"),
                     lambda: core.delete_namespaced_secret(f"{rc_name}-token", self.namespace),
                     lambda: self._networking().delete_namespaced_network_policy(rc_name, self.namespace)):
            try:
                await call()
            except ApiException as exc:
                if exc.status != 404:
                    raise

    async def delete(self, user: str, server: str) -> int:
        mine = [rc for rc in await self._clusters(user)
                if (rc["metadata"].get("annotations") or {}).get(SERVER_ANNOTATION, "") == server]
        if not mine:
            raise no_cluster(server)
        removed = 0
        for rc in mine:
            name = rc["metadata"]["name"]
            async with self.locks.setdefault(name, asyncio.Lock()):
                removed += len(await self._pods(name))
                await self._remove(name)
        self.count("stop", sorted(k for k in self.open_runs if k[0] == user and k[1].startswith(f"{server}/ray-")))
        return removed

    @staticmethod
    def usage_keys(user: str, server: str, workers: int) -> list[tuple[str, str]]:
        """The nodes' runs in the usage record (the embedded mode's keys).

        >>> KubeClusters.usage_keys("gil", "", 2)
        [('gil', '/ray-head'), ('gil', '/ray-worker-0'), ('gil', '/ray-worker-1')]
        """
        return [(user, f"{server}/ray-head"), *((user, f"{server}/ray-worker-{i}") for i in range(workers))]

    async def sweep(self) -> None:
        """Stop the usage runs of clusters that are gone (their session went: the garbage
        collector removed them)."""
        live = set()
        for rc in await self._clusters():
            ann = rc["metadata"].get("annotations") or {}
            live.update(self.usage_keys(ann.get(USER_ANNOTATION, ""), ann.get(SERVER_ANNOTATION, ""),
                                        cluster_workers(rc)))
        if not self.starting:
            self.count("stop", sorted(self.open_runs - live))


def main(argv: list[str] | None = None) -> None:
    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--kubernetes", metavar="JSON", required=True, help="the cluster settings' `ray_clusters`, "
                    "plus `namespace`: where the sessions and their RayClusters are")
    args = ap.parse_args(argv)
    serve(lambda: KubeClusters(json.loads(args.kubernetes), state=args.state, profiles_dir=args.profiles), args)


if __name__ == "__main__":
    main()
