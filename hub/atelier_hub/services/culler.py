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

from ..profiles import load_profiles
from ..settings import CullerService
from . import Service
from ._process import http_status

PREFIX = "/services/culler"
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


def culler_command(*, profiles_dir: str, audit: str) -> list[str]:
    """The service's command line; the cluster configuration runs the same."""
    profiles = load_profiles(profiles_dir)
    every = check_every(profiles)
    return [sys.executable, "-m", "atelier_hub.services.culler_server", "--profiles", str(profiles_dir),
            "--audit", audit, "--every", str(every), "--stale-after", str(max(60, 3 * min(60, every * 2)))]


class Culler(Service):
    name = "culler"
    title = "Idle culler"
    optional = True
    # Sessions report their activity (and the Extend button) with their hub token.
    session_scopes = (f"access:services!service={name}",)
    hub_scopes = HUB_SCOPES

    def endpoints(self, stack) -> dict:
        return {"culler": CullerService(url=f"{stack.url}{PREFIX}")}

    def hub_service(self, stack, services) -> dict:
        return {
            "name": self.name,
            "display": False,
            "url": f"http://127.0.0.1:{stack.ports[self.name]}",
            "command": self.supervised(stack, culler_command(
                profiles_dir=stack.profiles_dir, audit=str(stack.path("logs/culler-audit.jsonl")))),
        }

    def ready(self, stack) -> bool:
        return http_status(f"http://127.0.0.1:{stack.ports[self.name]}{PREFIX}/health") == 200

    def banner(self, stack) -> str:
        return "idle servers stop per profile (decisions in STATE/logs/culler-audit.jsonl)"


SERVICE = Culler()
