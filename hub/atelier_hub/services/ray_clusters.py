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

import sys
from typing import ClassVar

from pydantic import Field

from ..settings import ServiceSettings, SessionContext
from ._process import http_status
from .base import Service, Site

PREFIX = "/services/ray_clusters"
#: the per-user limit on workers when the deployment names none
WORKERS_MAX = 4


class RayClustersService(ServiceSettings):
    """Personal Ray clusters (embedded mode: containers beside the session)."""

    about: ClassVar[str] = "Personal Ray clusters started from a session (`ray_cluster()`, `atelier ray up`)."

    url: str = Field(description="Where sessions ask for a cluster (`ATELIER_RAY_CLUSTERS_URL`).")
    workers_max: int = Field(WORKERS_MAX, ge=0, description="Most Ray workers one user may run at once, "
                             "over all their clusters; each is a container sized by the profile asked for.")

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        return {"ATELIER_RAY_CLUSTERS_URL": self.url}


def ray_clusters_command(*, state: str, homes_dir: str, profiles_dir: str, workers_max: int) -> list[str]:
    """The service's command line.

    >>> ray_clusters_command(state="/s", homes_dir="/s/homes", profiles_dir="/p", workers_max=4)[2:5]
    ['atelier_hub.services.ray_clusters_server', '--state', '/s']
    """
    return [sys.executable, "-m", "atelier_hub.services.ray_clusters_server", "--state", state, "--homes", homes_dir,
            "--profiles", profiles_dir, "--workers-max", str(workers_max)]


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
        part = getattr(services, self.name, None)
        return {
            "name": self.name,
            "display": False,
            "url": self.local_url(site),
            "command": self.supervised(site, ray_clusters_command(
                state=str(site.root), homes_dir=str(site.path("homes")), profiles_dir=site.profiles_dir,
                workers_max=part.workers_max if part is not None else WORKERS_MAX)),
        }

    def ready(self, site: Site) -> bool:
        return http_status(f"{self.local_url(site)}{PREFIX}/health") == 200

    def banner(self, site: Site) -> str:
        return f"{self.public_url(site)}/api/clusters  (in a session: ray_cluster(workers=2); `atelier ray up`)"


SERVICE = RayClusters()
