"""The jobs service: its descriptor. ``atelier run`` submits here; jobs run as named servers.

Rule this module keeps: the service runs no job itself. It asks the hub to start the
user's named server ``job-NAME`` with the job in its spawn options, so the spawner
builds the job's container as it builds a session's (:mod:`atelier_hub.jobs`); it keeps
each submission's record under ``STATE/jobs`` and reads the output and exit code the
job leaves on the home. Users reach it with their own hub token (``atelier login``,
or a session's), and see only their own jobs.
"""

from __future__ import annotations

import sys
from typing import ClassVar
from urllib.parse import urlparse

from pydantic import Field

from ..settings import ServiceSettings, SessionContext
from ._process import http_status
from .base import Service, Site
from .mlflow import PREFIX as MLFLOW_PREFIX

PREFIX = "/services/jobs"
#: the hub scopes the service's token holds: start, stop and remove users' servers
HUB_SCOPES = ("list:users", "read:users:name", "read:servers", "servers", "delete:servers")


def jobs_command(*, jobs_dir: str, homes_dir: str | None, profiles_dir: str, mlflow: str | None = None,
                 queue: tuple[str, str, str] | None = None) -> list[str]:
    """The service's command line; ``homes_dir``: the users' homes, where each job's runner
    leaves its output and exit code (None: the hub serves them, on a cluster); ``mlflow``:
    MLflow's UI, where the page links each job's runs (a path on the hub's origin);
    ``queue``: the embedded hub's GPU queue as it saves it, its capacity settings and the
    culler's plan (a queued job's place and ETA).

    >>> jobs_command(jobs_dir="/s/jobs", homes_dir="/s/homes", profiles_dir="/p")[2:]
    ['atelier_hub.services.jobs_server', '--jobs', '/s/jobs', '--profiles', '/p', '--homes', '/s/homes']
    >>> jobs_command(jobs_dir="/j", homes_dir="/h", profiles_dir="/p", mlflow="/services/mlflow")[-2:]
    ['--mlflow', '/services/mlflow']
    >>> jobs_command(jobs_dir="/j", homes_dir=None, profiles_dir="/p")[-2:]
    ['--output', 'hub']
    """
    return [sys.executable, "-m", "atelier_hub.services.jobs_server", "--jobs", jobs_dir, "--profiles", profiles_dir,
            *(["--homes", homes_dir] if homes_dir else ["--output", "hub"]), *(["--mlflow", mlflow] if mlflow else []),
            *([f"--queue={queue[0]}", f"--capacity={queue[1]}", f"--plan={queue[2]}"] if queue else [])]


class JobsService(ServiceSettings):
    """The jobs service, as sessions reach it (``atelier_lab.run(...)``)."""

    about: ClassVar[str] = "Jobs: commands and notebooks run once on a profile (`atelier run`, `atelier_lab.run()`)."

    url: str = Field(description="Its base URL as sessions reach it (`ATELIER_JOBS_URL`), e.g. "
                     "`http://localhost:8000/services/jobs`.")

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        return {"ATELIER_JOBS_URL": self.url}


class Jobs(Service):
    name = "jobs"
    title = "Jobs"
    prefix = PREFIX
    optional = True
    settings = JobsService
    # `atelier run` from a session or a laptop, atelier_lab.run() in a kernel: the
    # user's own token reaches the service.
    session_scopes = (f"access:services!service={name}",)
    hub_scopes = HUB_SCOPES

    def endpoints(self, site: Site) -> dict:
        return {self.name: JobsService(url=self.public_url(site))}

    def hub_service(self, site: Site, services) -> dict:
        from ..capacity import CAPACITY_FILE, SNAPSHOT_FILE
        from .culler import PLAN_FILE

        return {
            "name": self.name,
            # its page (PREFIX/): the user's jobs, in the hub's Services menu
            "display": True,
            "oauth_no_confirm": True,
            "url": self.local_url(site),
            "command": self.supervised(site, jobs_command(
                jobs_dir=str(site.path("jobs")), homes_dir=str(site.path("homes")),
                profiles_dir=site.profiles_dir,
                mlflow=urlparse(f"{site.url}{MLFLOW_PREFIX}").path if getattr(services, "mlflow", None) else None,
                queue=(str(site.path(SNAPSHOT_FILE)), str(site.path(CAPACITY_FILE)), str(site.path(PLAN_FILE))))),
        }

    def ready(self, site: Site) -> bool:
        return http_status(f"{self.local_url(site)}{PREFIX}/health") == 200

    def banner(self, site: Site) -> str:
        return f"{self.public_url(site)}/api/jobs  (`atelier run --profile P -- CMD`; `atelier jobs`)"


SERVICE = Jobs()
