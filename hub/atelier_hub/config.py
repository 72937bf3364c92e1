"""``configure(c)``: JupyterHub configuration for Atelier, one ``update_<section>`` each.

Rule this module keeps: config should never append or mutate, only set (as The
Littlest JupyterHub's configurer does). ``hub/jupyterhub_config.py`` and the Zero to
JupyterHub chart's ``hub.extraConfig`` both call :func:`configure`, so there is one
code path; it picks the mode from the settings it finds (:func:`settings_mode`), and
loads only that mode's code. ``jupyterhub_config.d``-style overrides go after it in
the calling file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .capacity import CAPACITY_FILE
from .cluster import CHART_DIR, CLUSTER_FILE, DEPLOYMENT_FILE, PROFILES_DIR
from .input_limits import bound_hub_requests, trim_saved_options
from .install.paths import tool_path
from .origins import update_origins
from .profiles import ProfileError, load_profiles
from .services._process import PARENT_PID_VAR

if TYPE_CHECKING:
    from .embedded.stack import EmbeddedStack

__all__ = ["configure"]

#: the hub's database, in the state folder
HUB_DB = "jupyterhub.sqlite"


def update_hub(c, stack: EmbeddedStack) -> None:
    """Where the hub and its proxy listen (127.0.0.1 only), the hosts they answer at
    (the hub's, and one per user), and where its state lives."""
    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = stack.port
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = stack.hub_port
    c.JupyterHub.db_url = f"sqlite:///{stack.path(HUB_DB)}"
    c.JupyterHub.cookie_secret_file = str(stack.path("secrets/jupyterhub_cookie_secret"))
    c.JupyterHub.pid_file = str(stack.path("logs/jupyterhub.pid"))
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 5
    c.JupyterHub.default_url = "/hub/home"
    # Each user's servers are their own web origin (NAME.localhost:PORT; origins.py), so
    # nothing a user's server serves can act with another user's hub cookie.
    update_origins(c, stack.url)
    c.ConfigurableHTTPProxy.command = [str(tool_path("configurable-http-proxy"))]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{stack.proxy_api_port}"
    c.ConfigurableHTTPProxy.auth_token = stack.proxy_token()
    c.ConfigurableHTTPProxy.pid_file = str(stack.path("logs/proxy.pid"))


def update_auth(c, stack: EmbeddedStack) -> None:
    """The users file decides who exists: at start-up the hub deletes from its database
    anyone removed from the file while it was down (AtelierAuthenticator.add_user
    refuses them), and every removal runs the stack's one clean-up hook."""
    c.JupyterHub.authenticator_class = "atelier_hub.embedded.auth.AtelierAuthenticator"
    c.AtelierAuthenticator.users_file = str(stack.path("users.json"))
    c.AtelierAuthenticator.delete_invalid_users = True
    c.AtelierAuthenticator.on_user_removed = stack.remove_user
    c.AtelierAuthenticator.public_url = stack.url
    # The admin page says where invite links are made (embedded/templates/admin.html); the
    # home page is Atelier's (embedded/templates/home.html, update_home); every page has
    # Atelier's look (embedded/templates/page.html, atelier_hub.look).
    from .look import TEMPLATES

    c.JupyterHub.template_paths = [str(TEMPLATES)]


def update_home(c, stack: EmbeddedStack) -> None:
    """The home page (embedded/templates/home.html, beside the admin page's): each server's
    profile, state, uptime, planned idle stop, cost so far and ways in (:mod:`.home`). The
    planned stop appears where the culler runs, VS Code in the browser where sessions are
    containers of the base image (which carries code-server), the user's jobs where the
    jobs service runs, their latest MLflow runs where MLflow runs."""
    from .embedded.engine import session_mode
    from .embedded.spawner_base import SNAPSHOT_FILE
    from .home import Home
    from .look import template_vars
    from .services.culler import PLAN_FILE

    running = {svc.name for svc in stack.running}
    c.JupyterHub.template_vars = {**template_vars(), "atelier_invites": True, "atelier_home": Home(
        profiles_dir=stack.profiles_dir, hub_url=stack.url, usage_file=stack.path("usage.jsonl"),
        plan_file=stack.path(PLAN_FILE) if "culler" in running else None, vscode=session_mode().name == "container",
        jobs_dir=stack.path("jobs") if "jobs" in running else None,
        capacity_file=stack.path(CAPACITY_FILE), snapshot_file=stack.path(SNAPSHOT_FILE),
        mlflow="mlflow" in running, cards=True)}


def update_spawner(c, stack: EmbeddedStack) -> None:
    """Containers where a Docker engine and the base image are there, else local
    processes (single-user mode); :func:`atelier_hub.embedded.engine.session_mode` decides."""
    from .embedded.engine import docker_host, session_mode

    # The session's hub token also reaches the services that sit behind hub auth
    # (MLflow: it is the session's MLflow token).
    scopes = ["users:activity!user", "access:servers!server", *stack.session_scopes]
    # Every spawner records its servers' starts and stops (``atelier usage``).
    c.ProfileSpawnerMixin.usage_file = str(stack.path("usage.jsonl"))
    # The GPU pool and its queue's fair share (`atelier dev --capacity FILE`); absent: the defaults.
    if stack.path(CAPACITY_FILE).is_file():
        c.EmbeddedSpawnerMixin.capacity_file = str(stack.path(CAPACITY_FILE))
    if session_mode().name == "container":
        from .embedded.container_spawner import update_container_spawner

        update_container_spawner(c, state=stack.root, profiles_dir=stack.profiles_dir,
                                 deployment_file=str(stack.path("deployment.json")),
                                 homes_dir=str(stack.path("homes")), docker_host=docker_host(),
                                 token_scopes=scopes)
        return
    # Single-user mode: sessions are processes of the hub's OS user, able to read each
    # other and the hub's state, so only the person running `atelier dev` may log in.
    from .embedded.state_folder import ADMIN_USER

    c.AtelierAuthenticator.only_user = ADMIN_USER
    c.JupyterHub.spawner_class = "atelier_hub.embedded.process_spawner.AtelierLocalSpawner"
    c.AtelierLocalSpawner.profiles_dir = stack.profiles_dir
    c.AtelierLocalSpawner.deployment_file = str(stack.path("deployment.json"))
    c.AtelierLocalSpawner.state_dir = str(stack.root)
    c.AtelierLocalSpawner.sessions_dir = str(stack.path("sessions"))
    # One home per user, whatever the profile or server name.
    c.AtelierLocalSpawner.home_dir_template = str(stack.path("homes")) + "/{username}"
    c.AtelierLocalSpawner.default_url = "/lab"
    # jupyter-server refuses to run as root unless told; the embedded mode often is root.
    c.AtelierLocalSpawner.args = ["--allow-root"] if os.geteuid() == 0 else []
    c.AtelierLocalSpawner.start_timeout = 180
    c.AtelierLocalSpawner.http_timeout = 180
    c.AtelierLocalSpawner.server_token_scopes = scopes


def _restart_exited_services_sooner(seconds: int = 5) -> None:
    """The hub restarts a managed service that exited when its spawner's poll notices,
    every 30 s by default; services are spawned without the hub's config, so the only
    place to shorten it is the spawner class the hub builds them from. Each service's
    own supervisor restarts its server at once; this covers the supervisor itself.
    ref: jupyterhub/services/service.py (Service.start builds _ServiceSpawner(...))
    """
    from jupyterhub.services import service
    from traitlets import Float, Integer

    base = service._ServiceSpawner
    if getattr(base, "_atelier", False):
        return
    service._ServiceSpawner = type("_ServiceSpawner", (base,), {
        "poll_interval": Integer(seconds), "poll_jitter": Float(0.0), "_atelier": True,
        "__doc__": base.__doc__})


def _route_the_hub_before_services_answer() -> None:
    """The login page must not wait for the services. JupyterHub starts its managed
    services one by one and, for each one with a URL (MLflow's front, the culler, the
    usage page), waits until it answers HTTP before the next one, and adds the proxy's
    route to itself only after the last (8 s of a start on a quiet machine, 20 s on a
    busy one, while the proxy answers 404 for /hub/login). Here such a service's start
    and wait go on in the background: the hub routes itself and its services at once,
    and each service answers behind its route when it is up (the proxy says 503 until
    then, and `atelier dev` announces each service when it is ready). A service that
    exits or never answers is logged as JupyterHub logs it, and restarted by the hub's
    poll (:func:`_restart_exited_services_sooner`), instead of taking the hub down.
    ref: jupyterhub/app.py (JupyterHub.start: ``for service ... await start_service``)
    """
    import asyncio

    from jupyterhub.app import JupyterHub

    original = JupyterHub.start_service
    if getattr(original, "_atelier", False):
        return

    async def start_service(self, service_name, service, ssl_context=None):
        if not (service.managed and service.url):
            return await original(self, service_name, service, ssl_context)
        task = asyncio.ensure_future(original(self, service_name, service, ssl_context))
        self._atelier_service_starts = {**getattr(self, "_atelier_service_starts", {}), service_name: task}
        return True

    start_service._atelier = True
    start_service.__doc__ = original.__doc__
    JupyterHub.start_service = start_service


def update_services(c, stack: EmbeddedStack) -> None:
    """Every running service's hub-managed entry (from its descriptor), and the CLI's
    admin identity. The endpoints come from the deployment settings, computed once."""
    _restart_exited_services_sooner()
    _route_the_hub_before_services_answer()
    services = stack.deployment().services
    entries = [svc.hub_service(stack, stack.services_for(svc.name, services)) for svc in stack.running]
    for entry in entries:
        if entry is not None and "command" in entry:
            # This hub's pid: each service process ends itself when it is gone, even
            # when that happened before the process got going (_process.die_with_parent).
            entry["environment"] = {**entry.get("environment", {}), PARENT_PID_VAR: str(os.getpid())}
    c.JupyterHub.services = [
        *(entry for entry in entries if entry is not None),
        {"name": "atelier-admin", "api_token": stack.admin_token(), "display": False},
    ]
    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", *stack.session_scopes]},
        *({"name": f"{svc.name}-service", "scopes": list(svc.hub_scopes), "services": [svc.name]}
          for svc in stack.running if svc.hub_scopes),
        {
            "name": "atelier-admin",
            "description": "The admin token in STATE/admin-token, for scripts and the CLI",
            "scopes": ["admin:users", "admin:servers", "admin:groups", "tokens", "read:hub",
                       "access:servers", "access:services", "proxy"],
            "services": ["atelier-admin"],
        },
    ]


def _bound_input(stack: EmbeddedStack) -> None:
    """Bounded input (:mod:`.input_limits`): the hub's HTTP server refuses bodies past
    their limits, and spawn options an older hub stored past theirs are cut back before
    the hub opens its database (the hub loads this file before its ``init_db``). Sets
    nothing in ``c``: both act on this hub process and its state folder."""
    bound_hub_requests()
    try:
        names = [p.name for p in load_profiles(stack.profiles_dir)]
    except ProfileError:  # the spawner reports the profiles' errors; no name is kept meanwhile
        names = []
    trim_saved_options(stack.path(HUB_DB), profiles=names, log=logging.getLogger("JupyterHub"))


#: set by ``atelier dev``: the embedded stack's state folder
STATE_VAR = "ATELIER_STATE"
#: a folder with the cluster's settings (``cluster.yaml``, ``deployment.json``, ``profiles/``);
#: default the chart's (:data:`atelier_hub.cluster.CHART_DIR`, where its ``hub.extraFiles`` put them)
CLUSTER_VAR = "ATELIER_CLUSTER_DIR"


def settings_mode(state: str | Path | None = None, cluster: str | Path | None = None) -> tuple[str, Path]:
    """Which mode the settings this hub is given ask for: ``("embedded", state folder)``
    or ``("cluster", settings folder)``, with the fix when it is neither or both.

    Embedded where a state folder is named (``state``, else ``$ATELIER_STATE``); cluster
    where a cluster settings folder is (``cluster``, else ``$ATELIER_CLUSTER_DIR``, else
    :data:`CHART_DIR` when the chart's files are there: ``cluster.yaml``).

    >>> settings_mode("/tmp/state", None)
    ('embedded', PosixPath('/tmp/state'))
    """
    state = state or os.environ.get(STATE_VAR)
    cluster = cluster or os.environ.get(CLUSTER_VAR)
    if not cluster and (Path(CHART_DIR) / CLUSTER_FILE).is_file():
        cluster = CHART_DIR
    if state and cluster:
        raise SystemExit(
            f"{STATE_VAR}={state} and the cluster settings in {cluster} both name a mode: unset {STATE_VAR} "
            f"for a hub on a cluster, or {CLUSTER_VAR} for the embedded stack (`atelier dev`)")
    if state:
        return "embedded", Path(state)
    if cluster:
        if not (Path(cluster) / CLUSTER_FILE).is_file():
            raise SystemExit(f"{CLUSTER_VAR}={cluster} has no {CLUSTER_FILE}: point it at the folder with the "
                             f"cluster settings, the deployment settings and profiles/ "
                             f"(`atelier render values` puts them in the chart's {CHART_DIR})")
        return "cluster", Path(cluster)
    raise SystemExit(
        f"no mode to configure: {STATE_VAR} is not set (start the embedded hub with `atelier dev` or "
        f"`make dev`) and no cluster settings were found ({CLUSTER_VAR}, or {CHART_DIR}/{CLUSTER_FILE} as the "
        f"chart's values from `atelier render values` put it)")


def configure_cluster(c, folder: Path) -> None:
    """KubeSpawner from the cluster settings in ``folder`` (the chart's ``hub.extraFiles``
    layout). The home is the chart's where its ``singleuser.storage`` has already set
    KubeSpawner's volumes (the chart's config runs before ``hub.extraConfig`` and
    always sets them); a hub outside the chart (the cluster tests) gets it here."""
    from .cluster.kubespawner import configure_kubespawner

    deployment = folder / DEPLOYMENT_FILE
    configure_kubespawner(
        c,
        profiles_dir=folder / PROFILES_DIR,
        deployment_file=deployment if deployment.is_file() else None,
        cluster_file=folder / CLUSTER_FILE,
        storage=not ("KubeSpawner" in c and "volumes" in c.KubeSpawner),
    )


def configure_embedded(c, state: Path) -> None:
    """The embedded stack whose state folder is ``state``: the hub, its login, the
    spawner and the managed services."""
    from .embedded.stack import EmbeddedStack

    stack = EmbeddedStack.load(state)
    for svc in stack.running:
        svc.prepare(stack)
    _bound_input(stack)
    update_hub(c, stack)
    update_auth(c, stack)
    update_spawner(c, stack)
    update_home(c, stack)
    update_services(c, stack)


def configure(c, state: str | Path | None = None, *, cluster: str | Path | None = None) -> None:
    """Configure JupyterHub for Atelier, in the mode its settings name
    (:func:`settings_mode`): the embedded stack of ``state`` (default
    ``$ATELIER_STATE``, set by ``atelier dev``), or a hub on a cluster from the
    settings folder ``cluster`` (default ``$ATELIER_CLUSTER_DIR``, else the chart's
    files)."""
    mode, folder = settings_mode(state, cluster)
    if mode == "cluster":
        configure_cluster(c, folder)
    else:
        configure_embedded(c, folder)
