"""The idle culler: its descriptor. Stops idle servers per profile; homes stay.

Rule this module keeps: the culler is one hub-managed service, the same process in the
embedded mode and on a cluster (:mod:`.culler_server`, on the pinned
``jupyterhub-idle-culler``); sessions reach it behind the hub's proxy at
``/services/culler`` with their own hub token, so its URL is the hub's public URL plus
that prefix, as MLflow's is. How often it checks follows the shortest idle timeout of
the profiles (a quarter of it, 5 to 300 s), so a short test timeout is honoured closely.
"""

from __future__ import annotations

import sys
from typing import ClassVar

from pydantic import Field

from ..profiles import Profile, load_profiles
from ..settings import ServiceSettings, SessionContext
from ._process import http_status
from .base import Service, Site

PREFIX = "/services/culler"
#: each server's latest decision, in the state folder (read by the hub's home page)
PLAN_FILE = "logs/culler-plan.json"
#: what the culler's own token may do: list servers with their profile (server state),
#: see their activity, stop them
HUB_SCOPES = ("list:users", "read:users:name", "read:users:activity", "read:servers", "admin:server_state",
              "delete:servers")


def check_every(profiles) -> int:
    """Seconds between checks: a quarter of the shortest idle timeout, 5 to 300.

    >>> from atelier_hub.profiles import Profile
    >>> check_every([Profile(name="a", display_name="A", cpu={"limit": 1}, memory={"limit": "1G"},
    ...                      culling={"idle_timeout": 60})])
    15
    """
    return max(5, min(300, min(p.idle_timeout for p in profiles) // 4))


def activity_interval(profile: Profile) -> int:
    """Seconds between a session's activity reports: six per idle timeout, 5 to 60.

    >>> from atelier_hub.profiles import Profile
    >>> activity_interval(Profile(name="s", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"}))
    60
    """
    return max(5, min(60, profile.idle_timeout // 6))


class CullerService(ServiceSettings):
    """The idle culler: sessions report their activity to it and learn when they stop."""

    about: ClassVar[str] = "The idle culler; null: sessions are never stopped for idleness."

    url: str = Field(description="Its base URL as sessions reach it (`ATELIER_CULLER_URL`), e.g. "
                     "`http://127.0.0.1:8000/services/culler`; the session's hub token authenticates.")
    gpu_busy_percent: int = Field(10, ge=1, le=100, description="GPU utilisation (nvidia-smi, in percent) "
                                  "from which a session counts as active.")

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        # Read by atelier_lab's server extension: it reports busy kernels, terminals, SSH
        # and GPU use several times per timeout, so the culler sees a job before it idles.
        return {
            "ATELIER_CULLER_URL": self.url,
            "ATELIER_ACTIVITY_INTERVAL": str(activity_interval(ctx.profile)),
            "ATELIER_GPU_BUSY_PERCENT": str(self.gpu_busy_percent),
        }


def culler_command(*, profiles_dir: str, audit: str, plan: str | None = None) -> list[str]:
    """The service's command line; the cluster configuration runs the same."""
    profiles = load_profiles(profiles_dir)
    every = check_every(profiles)
    return [sys.executable, "-m", "atelier_hub.services.culler_server", "--profiles", str(profiles_dir),
            "--audit", audit, *(["--plan", plan] if plan else []), "--every", str(every),
            "--stale-after", str(max(60, 3 * min(60, every * 2)))]


class Culler(Service):
    name = "culler"
    title = "Idle culler"
    settings = CullerService
    prefix = PREFIX
    optional = True
    # Sessions report their activity (and the Extend button) with their hub token.
    session_scopes = (f"access:services!service={name}",)
    hub_scopes = HUB_SCOPES

    def endpoints(self, site: Site) -> dict:
        return {"culler": CullerService(url=self.public_url(site))}

    def hub_service(self, site: Site, services) -> dict:
        return {
            "name": self.name,
            "display": False,
            "url": self.local_url(site),
            "command": self.supervised(site, culler_command(
                profiles_dir=site.profiles_dir, audit=str(site.path("logs/culler-audit.jsonl")),
                plan=str(site.path(PLAN_FILE)))),
        }

    def ready(self, site: Site) -> bool:
        return http_status(f"{self.local_url(site)}{PREFIX}/health") == 200

    def banner(self, site: Site) -> str:
        return "idle servers stop per profile (decisions in STATE/logs/culler-audit.jsonl)"


SERVICE = Culler()
