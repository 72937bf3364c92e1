"""MLflow's tracking server behind the front: its command, its auth app's configuration,
and whether it answers yet.

Rule this module keeps: the server listens on a private 127.0.0.1 port, as MLflow's
own auth app (what ``mlflow server --app-name basic-auth`` runs), started as a uvicorn
worker directly with the variables ``mlflow server`` would hand it (each name checked
against the installed MLflow by a test). Everyone reads everything; what else an
account may do is MLflow's own permission model. Pure, but for a fresh boot id.
ref: ../shared/RECIPES.md (MLflow orphans its uvicorn child on SIGKILL)
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path

from tornado import httpclient

__all__ = ["Backend", "FRONT_USER", "MLFLOW_SERVER_ENV", "MLFLOW_AUTH_ENV", "AUTH_APP", "auth_config",
           "server_command"]

# The front's own MLflow admin account: it makes everyone else's. A ``service/`` name,
# which no hub user can have.
FRONT_USER = "service/mlflow"


class Backend:
    """The private ``mlflow server`` and whether it answers yet."""

    def __init__(self, *, public: str, wait: float):
        self.url = ""
        self.ready = False
        self.public = public
        self.wait = wait
        self.since = time.monotonic()

    def starting_message(self) -> str:
        return (f"MLflow at {self.public} is still starting ({time.monotonic() - self.since:.0f} s so far); "
                "try again in a moment")

    async def wait_ready(self) -> bool:
        deadline = time.monotonic() + self.wait
        while not self.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        return self.ready

    async def probe(self, prefix: str, authorization: str) -> bool:
        """Ready once /health answers and the tracking store answers a real call (the
        store's tables are created on the first start, which takes seconds)."""
        client = httpclient.AsyncHTTPClient()
        for path in (f"{prefix}/health", f"{prefix}/ajax-api/2.0/mlflow/experiments/search?max_results=1"):
            try:
                r = await client.fetch(self.url + path, raise_error=False, request_timeout=30,
                                       headers={"Authorization": authorization})
            except (OSError, httpclient.HTTPClientError):
                # A timeout (599) raises even with raise_error=False: not ready yet,
                # never a reason for the front itself to stop.
                return False
            if r.code != 200:
                return False
        return True



# What `mlflow server` hands its uvicorn workers, by MLflow's own variable names. The
# front starts uvicorn itself: `mlflow server` imports all of MLflow once in the CLI and
# again in the worker, so starting the worker directly halves MLflow's start (measured
# here: 3.7-5.4 s of CPU instead of 8.7-9.5 s). A test checks these names against the
# installed MLflow's, so an upgrade that renames one fails loudly.
# ref: mlflow/server/__init__.py (_run_server's env_map), mlflow/server/constants.py
MLFLOW_SERVER_ENV = {
    "backend": "_MLFLOW_SERVER_FILE_STORE",
    "registry": "_MLFLOW_SERVER_REGISTRY_STORE",
    "artifact_root": "_MLFLOW_SERVER_ARTIFACT_ROOT",
    "serve_artifacts": "_MLFLOW_SERVER_SERVE_ARTIFACTS",
    "artifacts_destination": "_MLFLOW_SERVER_ARTIFACT_DESTINATION",
    "static_prefix": "_MLFLOW_STATIC_PREFIX",
    "boot_id": "_MLFLOW_SERVER_BOOT_ID",
    "in_job_executor": "_MLFLOW_IN_JOB_EXECUTOR",
    "sgi_name": "_MLFLOW_SGI_NAME",
}
# What MLflow's auth app (`mlflow server --app-name basic-auth`) reads; checked the same way.
# ref: mlflow/environment_variables.py, mlflow/server/auth/config.py
MLFLOW_AUTH_ENV = {
    "config": "MLFLOW_AUTH_CONFIG_PATH",
    "admin_username": "MLFLOW_AUTH_ADMIN_USERNAME",
    "admin_password": "MLFLOW_AUTH_ADMIN_PASSWORD",
    "secret_key": "MLFLOW_FLASK_SERVER_SECRET_KEY",
}
# The auth app's entry point (its `basic-auth` entry point), a factory under uvicorn.
AUTH_APP = "mlflow.server.auth:create_app"


def auth_config(*, database: Path) -> str:
    """MLflow's auth configuration (basic_auth.ini) for the front's accounts (pure).

    Everyone reads everything (``default_permission = READ``); MLflow gives whoever
    creates an experiment or registered model MANAGE on it, and a run is governed by
    its experiment. Credential checks are cached for a while: each one is a deliberately
    slow password hash, and every request through the front carries one.

    >>> "default_permission = READ" in auth_config(database=Path("/s/auth.db"))
    True
    """
    return (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{database}\n"
        f"admin_username = {FRONT_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 300\n"
    )


def server_command(*, port: int, prefix: str, state: Path, artifacts_destination: str,
                   auth: dict[str, str]) -> tuple[list[str], dict]:
    """The command and environment of MLflow's tracking server worker (pure, apart from
    a fresh boot id): what ``mlflow server --app-name basic-auth --workers 1
    --static-prefix PREFIX --backend-store-uri sqlite:///STATE/mlflow.db
    --artifacts-destination DEST`` runs. ``auth`` holds the auth app's variables (see
    :data:`MLFLOW_AUTH_ENV`).

    >>> cmd, env = server_command(port=5000, prefix="/services/mlflow", state=Path("/s"),
    ...                           artifacts_destination="s3://b/", auth={})
    >>> cmd[1:3], cmd[-2:], env["_MLFLOW_STATIC_PREFIX"], env["_MLFLOW_SERVER_SERVE_ARTIFACTS"]
    (['-m', 'uvicorn'], ['--factory', 'mlflow.server.auth:create_app'], '/services/mlflow', 'true')
    """
    import uuid

    store = f"sqlite:///{(state / 'mlflow.db').resolve()}"
    env = {
        MLFLOW_SERVER_ENV["backend"]: store,
        MLFLOW_SERVER_ENV["registry"]: store,
        # Clients log artifacts through this server (mlflow-artifacts:/), which writes them
        # to the destination: sessions need no key for the artifact bucket.
        MLFLOW_SERVER_ENV["artifact_root"]: "mlflow-artifacts:/",
        MLFLOW_SERVER_ENV["serve_artifacts"]: "true",
        MLFLOW_SERVER_ENV["artifacts_destination"]: artifacts_destination,
        MLFLOW_SERVER_ENV["static_prefix"]: prefix,
        MLFLOW_SERVER_ENV["boot_id"]: uuid.uuid4().hex,
        MLFLOW_SERVER_ENV["in_job_executor"]: "false",
        MLFLOW_SERVER_ENV["sgi_name"]: "uvicorn",
        # The AI Gateway (its endpoints and UI) is not part of Atelier: off, so the server
        # makes no request to an address a user names (docs/security.md).
        "MLFLOW_ENABLE_AI_GATEWAY": "false",
        **auth,
    }
    # MLflow's own log format for uvicorn; found without importing MLflow here.
    spec = importlib.util.find_spec("mlflow")
    log_config = Path(spec.submodule_search_locations[0]) / "server" / "uvicorn_log_config.yaml" if spec else None
    cmd = [sys.executable, "-m", "uvicorn",
           *(["--log-config", str(log_config)] if log_config and log_config.exists() else []),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--factory", AUTH_APP]
    return cmd, env
