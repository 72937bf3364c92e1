"""Ray: no process of its own in embedded mode; a session's ``ray.init()`` starts a
local Ray sized to its profile (the session contract sets Ray's own variables).

Rule this module keeps: only the deployment's Ray part is decided here (no address:
local Ray); the sizing is the session contract's job.
"""

from __future__ import annotations

from ..settings import RayService
from . import Service


class Ray(Service):
    name = "ray"
    title = "Ray"
    has_port = False

    def endpoints(self, stack) -> dict:
        return {"ray": RayService()}

    def banner(self, stack) -> str:
        return "ray.init() on loopback, sized to the profile"


SERVICE = Ray()
