"""The usage page: its descriptor. Admins see what each user and profile ran; every
other user sees their own.

Rule this module keeps: the page reads the same usage file and the same totals
(:func:`atelier_hub.usage.summarize`) as ``atelier usage``, so the two never disagree;
it sits behind the hub's login. Every user (and their sessions' tokens) may reach it;
it shows a user who is not an admin their own lines only (:mod:`.usage_page`). It is
linked from the hub's Services menu.
"""

from __future__ import annotations

import sys

from ._process import http_status
from .base import Service, Site

PREFIX = "/services/usage"


def usage_command(usage_file: str) -> list[str]:
    """The page's command line; the cluster configuration runs the same."""
    return [sys.executable, "-m", "atelier_hub.services.usage_page", "--usage-file", usage_file]


class Usage(Service):
    name = "usage"
    title = "Usage"
    prefix = PREFIX
    optional = True
    # Users see their own usage and cost (the page filters by who asks).
    session_scopes = (f"access:services!service={name}",)

    def hub_service(self, site: Site, services) -> dict:
        return {
            "name": self.name,
            "display": True,
            "url": self.local_url(site),
            "oauth_no_confirm": True,
            "command": self.supervised(site, usage_command(str(site.path("usage.jsonl")))),
        }

    def ready(self, site: Site) -> bool:
        return http_status(f"{self.local_url(site)}{PREFIX}/health") == 200

    def banner(self, site: Site) -> str:
        return f"{self.public_url(site)}/  (your usage and cost; admins: per user and profile; `atelier usage` prints the same)"


SERVICE = Usage()
