"""``configure(c)``: JupyterHub configuration for Atelier, one ``update_<section>`` each.

Rule this module keeps: config should never append or mutate, only set (as The
Littlest JupyterHub's configurer does). ``hub/jupyterhub_config.py`` and the Zero to
JupyterHub chart's ``hub.extraConfig`` both call :func:`configure`, so there is one
code path; ``jupyterhub_config.d``-style overrides go after it in the calling file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .embedded import ADMIN_USER, MLFLOW_BUCKET, SHARED_BUCKET, Embedded
from .install.paths import tool_path, trino_paths

__all__ = ["configure"]


def update_hub(c, stack: Embedded) -> None:
    """Where the hub and its proxy listen (127.0.0.1 only) and where its state lives."""
    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = stack.port
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = stack.hub_port
    c.JupyterHub.db_url = f"sqlite:///{stack.path('jupyterhub.sqlite')}"
    c.JupyterHub.cookie_secret_file = str(stack.path("secrets/jupyterhub_cookie_secret"))
    c.JupyterHub.pid_file = str(stack.path("logs/jupyterhub.pid"))
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 5
    c.JupyterHub.default_url = "/hub/home"
    c.ConfigurableHTTPProxy.command = [str(tool_path("configurable-http-proxy"))]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{stack.proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = stack.proxy_token()
    c.ConfigurableHTTPProxy.pid_file = str(stack.path("logs/proxy.pid"))


def update_auth(c, stack: Embedded) -> None:
    c.JupyterHub.authenticator_class = "atelier_hub.auth.AtelierAuthenticator"
    c.AtelierAuthenticator.users_file = str(stack.path("users.json"))


def update_spawner(c, stack: Embedded) -> None:
    """Containers where a Docker engine and the base image are there, else local
    processes (single-user mode); :func:`atelier_hub.engine.session_mode` decides."""
    from .engine import docker_host, session_mode

    if session_mode().name == "container":
        from .container_spawner import update_container_spawner

        update_container_spawner(c, state=stack.root, profiles_dir=stack.profiles_dir,
                                 deployment_file=str(stack.path("deployment.json")),
                                 homes_dir=str(stack.path("homes")), docker_host=docker_host())
        return
    # Single-user mode: sessions are processes of the hub's OS user, able to read each
    # other and the hub's state, so only the person running `atelier dev` may log in.
    c.AtelierAuthenticator.only_user = ADMIN_USER
    c.JupyterHub.spawner_class = "atelier_hub.spawner.AtelierLocalSpawner"
    c.AtelierLocalSpawner.profiles_dir = stack.profiles_dir
    c.AtelierLocalSpawner.deployment_file = str(stack.path("deployment.json"))
    c.AtelierLocalSpawner.sessions_dir = str(stack.path("sessions"))
    # One home per user, whatever the profile or server name.
    c.AtelierLocalSpawner.home_dir_template = str(stack.path("homes")) + "/{username}"
    c.AtelierLocalSpawner.default_url = "/lab"
    # jupyter-server refuses to run as root unless told; the embedded mode often is root.
    c.AtelierLocalSpawner.args = ["--allow-root"] if os.geteuid() == 0 else []
    c.AtelierLocalSpawner.start_timeout = 180
    c.AtelierLocalSpawner.http_timeout = 180
    # The session's hub token may also reach MLflow (it is the session's MLflow token).
    c.AtelierLocalSpawner.server_token_scopes = [
        "users:activity!user",
        "access:servers!server",
        "access:services!service=mlflow",
    ]


def update_services(c, stack: Embedded) -> None:
    """S3, MLflow and the CLI's admin identity, as hub-managed services."""
    keys = stack.s3_keys()
    s3_env = {
        "AWS_ACCESS_KEY_ID": keys["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": keys["secret_access_key"],
        "AWS_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{stack.s3_port}",
    }
    c.JupyterHub.services = [
        {
            "name": "s3",
            "display": False,
            "url": f"http://127.0.0.1:{stack.s3_port}",
            # Keys through the environment, never on a command line that `ps` shows.
            "environment": {
                "ROOT_ACCESS_KEY_ID": keys["access_key_id"],
                "ROOT_SECRET_ACCESS_KEY": keys["secret_access_key"],
            },
            "command": [
                str(tool_path("versitygw")), "--port", f"127.0.0.1:{stack.s3_port}", "--quiet",
                "posix", str(stack.path("s3")),
            ],
        },
        # Before MLflow: the hub starts services one after another and waits for those
        # with a URL; Trino has none, so it warms up while MLflow starts.
        *([trino_service(stack, keys)] if stack.trino_port else []),
        {
            "name": "mlflow",
            "display": True,
            "url": f"http://127.0.0.1:{stack.mlflow_port}",
            "oauth_no_confirm": True,
            # MLflow needs 11-52 s to start here; the hub's default 30 s wait then exits.
            "timeout": 240,
            "environment": s3_env,
            "command": [
                sys.executable, "-m", "atelier_hub.services.mlflow",
                "--state", str(stack.path("mlflow")),
                "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/",
            ],
        },
        {"name": "atelier-admin", "api_token": stack.admin_token(), "display": False},
    ]
    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", "access:services!service=mlflow"]},
        {
            "name": "atelier-admin",
            "description": "The admin token in STATE/admin-token, for scripts and the CLI",
            "scopes": ["admin:users", "admin:servers", "admin:groups", "tokens", "read:hub",
                       "access:servers", "access:services", "proxy"],
            "services": ["atelier-admin"],
        },
    ]


def trino_service(stack: Embedded, keys: dict[str, str]) -> dict:
    """Trino as a managed service: no ``url``, so no route through the hub's proxy
    (Trino has no login here); sessions reach it on 127.0.0.1 directly."""
    from .services.trino import default_java_home

    return {
        "name": "trino",
        "display": False,
        # Keys through the environment; the catalog file names them as ${ENV:...}.
        "environment": {
            "AWS_ACCESS_KEY_ID": keys["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": keys["secret_access_key"],
            "AWS_REGION": "us-east-1",
        },
        "command": [
            sys.executable, "-m", "atelier_hub.services.trino",
            "--state", str(stack.path("trino")),
            "--port", str(stack.trino_port),
            "--s3-endpoint", f"http://127.0.0.1:{stack.s3_port}",
            "--bucket", SHARED_BUCKET,
            "--java-home", str(default_java_home()),
            "--trino-home", str(trino_paths().home),
        ],
    }


def configure(c, state: str | Path | None = None) -> None:
    """Configure JupyterHub for the embedded stack whose state folder is ``state``
    (default: ``$ATELIER_STATE``, set by ``atelier dev``)."""
    state = state or os.environ.get("ATELIER_STATE")
    if not state:
        raise SystemExit("ATELIER_STATE is not set: start the hub with `atelier dev` (or `make dev`)")
    stack = Embedded.load(state)
    for bucket in (SHARED_BUCKET, MLFLOW_BUCKET):
        # A folder is a bucket to versitygw's posix backend: the buckets exist before
        # the S3 server answers, so no session can race their creation.
        (stack.path("s3") / bucket).mkdir(parents=True, exist_ok=True)
    update_hub(c, stack)
    update_auth(c, stack)
    update_spawner(c, stack)
    update_services(c, stack)
