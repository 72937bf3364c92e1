"""The usage page: its descriptor. Admins see what each user and profile ran.

Rule this module keeps: the page reads the same usage file and the same totals
(:func:`atelier_hub.usage.summarize`) as ``atelier usage``, so the two never disagree;
it sits behind the hub's login, and only accounts holding ``access:services`` for it
(the hub's admins) get in. It is linked from the hub's Services menu.
"""

from __future__ import annotations

import sys

from . import Service
from ._process import http_status

PREFIX = "/services/usage"


class Usage(Service):
    name = "usage"
    title = "Usage"
    optional = True

    def hub_service(self, stack, services) -> dict:
        return {
            "name": self.name,
            "display": True,
            "url": f"http://127.0.0.1:{stack.ports[self.name]}",
            "oauth_no_confirm": True,
            "command": self.supervised(stack, [sys.executable, "-m", "atelier_hub.services.usage_page",
                                               "--usage-file", str(stack.path("usage.jsonl"))]),
        }

    def ready(self, stack) -> bool:
        return http_status(f"http://127.0.0.1:{stack.ports[self.name]}{PREFIX}/health") == 200

    def banner(self, stack) -> str:
        return f"{stack.url}{PREFIX}/  (admins: usage per user and profile; `atelier usage` prints the same)"


SERVICE = Usage()
