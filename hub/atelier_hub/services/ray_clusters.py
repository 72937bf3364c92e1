"""Personal Ray clusters: their descriptor. ``ray_cluster()`` and ``atelier ray`` ask here.

Rule this module keeps: the service starts a Ray head and workers for the caller's own
running session and no one else's (:mod:`atelier_hub.ray_clusters` says how they are
built and why they live inside that session); it keeps no state of its own beyond each
cluster's token file: the clusters are found again from the Docker engine's labels, so a
hub that restarts neither loses nor ends a live user's cluster, and removes those whose
session is gone. Users reach it with their own hub token (a session's, or
``atelier login``'s). Embedded mode with container sessions only.
"""

from __future__ import annotations

import json
import sys
from typing import ClassVar

from pydantic import Field

from ..settings import ServiceSettings, SessionContext
from ._process import http_status
from .base import Service, Site

PREFIX = "/services/ray_clusters"


class RayClustersService(ServiceSettings):
    """Personal Ray clusters (embedded mode: containers beside the session)."""

    about: ClassVar[str] = "Personal Ray clusters started from a session (`ray_cluster()`, `atelier ray up`)."

    url: str = Field(description="Where sessions ask for a cluster (`ATELIER_RAY_CLUSTERS_URL`). The per-user "
                     "limit on workers is the capacity settings' `ray_workers_per_user`.")

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        return {"ATELIER_RAY_CLUSTERS_URL": self.url}


def ray_clusters_command(*, state: str, profiles_dir: str, kubernetes: dict | None = None) -> list[str]:
    """The service's command line: the embedded mode's (containers on the local engine),
    or, with ``kubernetes`` (a cluster's settings), KubeRay's backend in a hub pod.

    >>> ray_clusters_command(state="/s", profiles_dir="/p")[2:]
    ['atelier_hub.services.ray_clusters_server', '--state', '/s', '--profiles', '/p']
    >>> ray_clusters_command(state="/s", profiles_dir="/p", kubernetes={"namespace": "a"})[2:]
    ['atelier_hub.services.ray_clusters_kube', '--state', '/s', '--profiles', '/p', '--kubernetes', '{"namespace": "a"}']
    """
    module = "ray_clusters_kube" if kubernetes is not None else "ray_clusters_server"
    return [sys.executable, "-m", f"atelier_hub.services.{module}", "--state", state, "--profiles", profiles_dir,
            *(["--kubernetes", json.dumps(kubernetes)] if kubernetes is not None else [])]


class RayClusters(Service):
    name = "ray_clusters"
    title = "Ray clusters"
    settings = RayClustersService
    prefix = PREFIX
    optional = True
    # ray_cluster() in a kernel: the session's own token reaches the service.
    session_scopes = (f"access:services!service={name}",)

    def endpoints(self, site: Site) -> dict:
        return {self.name: RayClustersService(url=self.public_url(site))}

    def hub_service(self, site: Site, services) -> dict:
        return {
            "name": self.name,
            "display": False,
            "url": self.local_url(site),
            "command": self.supervised(site, ray_clusters_command(state=str(site.root),
                                                                  profiles_dir=site.profiles_dir)),
        }

    def ready(self, site: Site) -> bool:
        return http_status(f"{self.local_url(site)}{PREFIX}/health") == 200

    def banner(self, site: Site) -> str:
        return f"{self.public_url(site)}/api/clusters  (in a session: ray_cluster(workers=2); `atelier ray up`)"


SERVICE = RayClusters()
