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

from ..settings import MLflowService
from . import Service
from ._process import http_status
from .s3 import MLFLOW_BUCKET

PREFIX = "/services/mlflow"


def personal_experiment(user: str) -> str:
    """The experiment a user's runs go to by default (their sessions'
    ``MLFLOW_EXPERIMENT_NAME``); the front makes it as that user, so it is theirs.

    >>> personal_experiment("ada")
    'users/ada'
    """
    return f"users/{user}"


class MLflow(Service):
    name = "mlflow"
    title = "MLflow"
    # The session's hub token is its MLflow token (MLFLOW_TRACKING_TOKEN).
    session_scopes = ("access:services!service=mlflow",)

    def endpoints(self, stack) -> dict:
        return {"mlflow": MLflowService(tracking_uri=f"{stack.url}{PREFIX}", auth="hub")}

    def hub_service(self, stack, services) -> dict:
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
            "url": f"http://127.0.0.1:{stack.ports[self.name]}",
            "oauth_no_confirm": True,
            # The front listens at once; MLflow itself comes up behind it.
            "timeout": 60,
            "environment": env,
            "command": [
                sys.executable, "-m", "atelier_hub.services.mlflow_front",
                "--state", str(stack.path("mlflow")),
                "--record", str(self.record_file(stack.root)),
                "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/",
                "--public-url", f"{stack.url}{PREFIX}",
            ],
        }

    def ready(self, stack) -> bool:
        # The front answers 503 on /health until MLflow itself does.
        return http_status(f"{stack.url}{PREFIX}/health") == 200

    def banner(self, stack) -> str:
        return f"{stack.url}{PREFIX}/  (same login; sessions: mlflow.start_run())"


SERVICE = MLflow()
