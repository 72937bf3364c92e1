"""Ray: no process of its own in embedded mode; a session's ``ray.init()`` starts a
local Ray sized to its profile (the session contract sets Ray's own variables).

Rule this module keeps: only the deployment's Ray part is decided here (no address:
local Ray); the sizing is the session contract's job.
"""

from __future__ import annotations

import json
from typing import ClassVar

from pydantic import Field

from ..settings import ServiceSettings, SessionContext
from .base import Service, Site


class RayService(ServiceSettings):
    """Ray: join a cluster at ``address``, or (None) start a local one sized to the profile."""

    about: ClassVar[str] = "How sessions start or join Ray."

    address: str | None = Field(None, description="`RAY_ADDRESS` of a Ray cluster; null: a local `ray.init()` "
                                "sized to the profile.")

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        # Ray's own switches: no usage reporting to the outside; join a cluster when
        # one is configured, else a local ray.init() gets the profile's size (the
        # variable Ray's autoscaler uses to size a node).
        env = {"RAY_USAGE_STATS_ENABLED": "0"}
        if self.address:
            env["RAY_ADDRESS"] = self.address
            return env
        # The session's one CPU count, as its thread pools and Spark get (profiles.session_cpus).
        env["RAY_OVERRIDE_RESOURCES"] = json.dumps({"CPU": ctx.cpus, "GPU": ctx.profile.gpu_count})
        # Ray's single-machine mode: every Ray process binds 127.0.0.1 instead of the
        # machine's network address. ref: ray/_private/services.py get_node_ip_address
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        # The raylet waits 30 s for its agents to start, then aborts; a busy laptop
        # needs longer. (Ray reads its settings as RAY_<name> variables.)
        env["RAY_agent_register_timeout_ms"] = "120000"
        return env


class Ray(Service):
    name = "ray"
    title = "Ray"
    settings = RayService
    has_port = False

    def endpoints(self, site: Site) -> dict:
        return {"ray": RayService()}

    def banner(self, site: Site) -> str:
        return "ray.init() on loopback, sized to the profile"


SERVICE = Ray()
