"""The MLflow tracking server, behind the hub's login: its descriptor.

Rule this module keeps: the tracking URI sessions get is the hub's public URL plus
``/services/mlflow`` (one URL for a session, a script on this machine and a browser;
the hub checks the token), and the front (:mod:`.mlflow_front`) answers there from its
first second, so the hub never waits for MLflow to start. MLflow's artifacts go to
the S3 store's MLflow bucket, with the store's endpoint and keys taken from the
deployment settings the front is handed (one place for them).
"""

from __future__ import annotations

import sys
from typing import ClassVar, Literal

from pydantic import Field

from ..settings import ServiceSettings, SessionContext
from ._process import http_status
from .base import Service, Site
from .s3_accounts import MLFLOW_BUCKET

PREFIX = "/services/mlflow"
#: what the front's own hub token may do: read the hub's users (Accounts.remove_gone)
HUB_SCOPES = ("list:users", "read:users:name")


def personal_experiment(user: str) -> str:
    """The experiment a user's runs go to by default (their sessions'
    ``MLFLOW_EXPERIMENT_NAME``); the front makes it as that user, so it is theirs.

    >>> personal_experiment("ada")
    'users/ada'
    """
    return f"users/{user}"


class MLflowService(ServiceSettings):
    """The MLflow tracking server."""

    about: ClassVar[str] = "The MLflow tracking server."

    tracking_uri: str = Field(description="What sessions get as `MLFLOW_TRACKING_URI`.")
    auth: Literal["hub", "none"] = Field(
        "hub", description="`hub`: the server sits behind JupyterHub auth, so the session's own hub API token "
        "is its MLflow token (`MLFLOW_TRACKING_TOKEN`); `none`: an open server.")

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        env = {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            # MLflow retries 7 times with doubling back-off by default (minutes); 3 is ~15 s.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        }
        if self.auth == "hub" and ctx.api_token:
            # MLflow sends it as "Authorization: Bearer ..."; JupyterHub's service
            # auth accepts bearer tokens. ref: jupyterhub/services/auth.py auth_header_pat
            env["MLFLOW_TRACKING_TOKEN"] = ctx.api_token
        if self.auth == "hub":
            # The user's own experiment (the front makes it theirs): in MLflow's
            # "Default" everyone may only read, and a run there would be anyone's to edit.
            env["MLFLOW_EXPERIMENT_NAME"] = personal_experiment(ctx.username)
        return env


class MLflow(Service):
    name = "mlflow"
    title = "MLflow"
    settings = MLflowService
    prefix = PREFIX
    # The session's hub token is its MLflow token (MLFLOW_TRACKING_TOKEN).
    session_scopes = ("access:services!service=mlflow",)
    # The front reads the hub's users: a removed user's MLflow account goes.
    hub_scopes = HUB_SCOPES

    def endpoints(self, site: Site) -> dict:
        return {"mlflow": MLflowService(tracking_uri=self.public_url(site), auth="hub")}

    def hub_service(self, site: Site, services) -> dict:
        env = {}
        if services.s3 is not None:
            env = {
                "AWS_ACCESS_KEY_ID": services.s3.access_key_id or "",
                "AWS_SECRET_ACCESS_KEY": services.s3.secret_access_key or "",
                "AWS_REGION": services.s3.region,
                "MLFLOW_S3_ENDPOINT_URL": services.s3.endpoint_url or "",
            }
        return {
            "name": self.name,
            "display": True,
            "url": self.local_url(site),
            "oauth_no_confirm": True,
            # The front listens at once; MLflow itself comes up behind it.
            "timeout": 60,
            "environment": env,
            "command": [
                sys.executable, "-m", "atelier_hub.services.mlflow_front",
                "--state", str(site.path("mlflow")),
                "--record", str(self.record_file(site.root)),
                "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/",
                "--public-url", self.public_url(site),
            ],
        }

    def ready(self, site: Site) -> bool:
        # The front answers 503 on /health until MLflow itself does.
        return http_status(f"{self.public_url(site)}/health") == 200

    def banner(self, site: Site) -> str:
        return f"{self.public_url(site)}/  (same login; sessions: mlflow.start_run())"


SERVICE = MLflow()
