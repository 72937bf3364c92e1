"""Personal Ray clusters in embedded mode: a Ray head and workers beside one session.

Rule this module keeps: a personal cluster is Ray's own ``ray start``, run in
containers built from the same builders as the session that asked for it
(:func:`atelier_hub.embedded.container_spawner.host_config`, the session's own image and
environment), and it lives inside that session: every node joins the session
container's network namespace (only ``lo``: the cluster is reachable from that session
alone, on loopback addresses of its own, :data:`HEAD_IP` and :func:`worker_ip`) and its
process namespace (Ray's driver finds the head's raylet among the processes it sees,
and when the session's first process ends the kernel ends every node's, so the
cluster goes with the session by construction). Ray's temporary folder is on the home
(:data:`TEMP_DIR`), where the session's driver reaches the head's sockets. Ray's token
authentication is on, with a token made for that session's cluster and mounted read-only
into its nodes; the session gets it from the service's answer to its own hub token.

Everything here is pure: the checks of a request (:func:`check_request`, errors naming
the field and the fix), the nodes' commands, environment, labels and Docker settings.
The service (:mod:`atelier_hub.services.ray_clusters_server`) does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .image_paths import HOME as IMAGE_HOME

__all__ = ["DASHBOARD_PATH", "DASHBOARD_PORT", "HEAD_IP", "RayClusterError", "TEMP_DIR", "TOKEN_PATH",
           "check_request", "cluster_env", "dashboard_url", "head_command", "node_labels", "node_host_config",
           "object_store_bytes", "worker_command", "worker_ip"]

#: the head's address inside the session. Ray rewrites 127.0.0.1 into the machine's
#: address but keeps any other loopback address (RECIPES.md, "Ray (measured here)"); this
#: one is unlikely to be taken by a user's own `ray start` in the session.
HEAD_IP = "127.0.50.1"
#: the head's dashboard port, on :data:`HEAD_IP` (Ray's default port; the address is the cluster's own)
DASHBOARD_PORT = 8265
#: where a session's own server proxies its cluster's dashboard (atelier_lab's handler),
#: under the server's URL: reachable through the hub by the server's owner alone
DASHBOARD_PATH = "atelier/ray/dashboard/"
#: where Ray keeps its sockets and logs: on the home, which the session and every node
#: mount at the same path (the driver opens the head's raylet and object store sockets)
TEMP_DIR = f"{IMAGE_HOME}/.atelier/ray"
#: the cluster's token inside each node (a read-only mount of one file)
TOKEN_PATH = "/run/atelier/ray-token"
#: the most workers one cluster may have whatever the limit (one loopback address each)
WORKERS_CAP = 200

LABEL = "dev.atelier.ray"  # "head" or "worker"
SESSION_LABEL = "dev.atelier.ray-session"  # the id of the session container it lives in
PORT_LABEL = "dev.atelier.ray-port"  # the head's GCS port

# The session's variables a node does not take: the server's own (its OAuth client, its
# URL and prefix) and the session's single-machine Ray switches (a worker with
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 refuses to join; RAY_OVERRIDE_RESOURCES would
# size every node as the session).
_DROP = re.compile(r"^(JUPYTERHUB_(?!API_TOKEN$|API_URL$|USER$|BASE_URL$).*|JPY_API_TOKEN|RAY_(?!USAGE_STATS_ENABLED$).*)$")


class RayClusterError(ValueError):
    """A request the user can fix: ``field`` names what is wrong; the message says how."""

    def __init__(self, field: str, message: str, *, status: int = 400):
        super().__init__(message)
        self.field = field
        self.status = status


def worker_ip(index: int) -> str:
    """Worker ``index``'s loopback address inside the session (0-based).

    >>> worker_ip(0), worker_ip(1)
    ('127.0.50.10', '127.0.50.11')
    """
    return f"127.0.50.{10 + index}"


#: where the per-user worker limit is set, in embedded mode (a cluster's is its cluster settings')
WORKERS_SETTING = "ray_workers_per_user in the capacity settings, atelier dev --capacity FILE"


def check_request(body, *, profile_names: list[str], default_profile: str, workers_max: int,
                  workers_in_use: int, limit_setting: str = WORKERS_SETTING) -> dict:
    """The cluster a POST asks for, ``{"server", "workers", "profile"}``, each field checked;
    :class:`RayClusterError` names the field and the fix. ``workers_in_use``: the
    user's workers in their other clusters, which count against ``workers_max``.

    >>> check_request({"workers": 2}, profile_names=["cpu-small"], default_profile="cpu-small", workers_max=4,
    ...               workers_in_use=0)
    {'server': '', 'workers': 2, 'profile': 'cpu-small'}
    >>> check_request({"workers": 3}, profile_names=["cpu-small"], default_profile="cpu-small", workers_max=4,
    ...               workers_in_use=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    atelier_hub.ray_clusters.RayClusterError: 3 more would make 5 Ray workers of yours, and this deployment allows 4 ...
    """
    if not isinstance(body, dict):
        raise RayClusterError("body", 'send a JSON object, e.g. {"workers": 2, "profile": "cpu-small"}')
    server = body.get("server") or ""
    if not isinstance(server, str) or len(server) > 255 or "/" in server:
        raise RayClusterError("server", f"{str(server)[:60]!r} is not a server name: give the name of one of "
                              "your running servers ('' for the default one)")
    workers = body.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise RayClusterError("workers", f"{str(workers)[:20]!r} is not a number of workers: give a whole number "
                              "of at least 1, e.g. ray_cluster(workers=2) or atelier ray up --workers 2")
    if workers > min(workers_max, WORKERS_CAP) - workers_in_use:
        left = max(0, min(workers_max, WORKERS_CAP) - workers_in_use)
        fix = f"ask for at most {left}" if left else "none is left to you"
        raise RayClusterError("workers", f"{workers} more would make {workers + workers_in_use} Ray workers of "
                              f"yours, and this deployment allows {workers_max} per user "
                              f"({limit_setting}): {fix}, "
                              "or stop another cluster (atelier ray down SERVER)", status=409)
    profile = body.get("profile") or default_profile
    if profile not in profile_names:
        raise RayClusterError("profile", f"unknown profile {str(profile)[:63]!r}; choose one of: "
                              f"{', '.join(profile_names)} (ray_cluster(profile=NAME), atelier ray up --profile NAME)")
    return {"server": server, "workers": workers, "profile": profile}


def object_store_bytes(shm_size: int) -> int:
    """A node's object store: most of its /dev/shm (Ray's default, 30% of the memory
    limit, is more than a node's /dev/shm, and Ray then keeps objects in files on the
    temporary folder, here the user's home).

    >>> object_store_bytes(2**30)
    858993459
    """
    return max(80 * 2**20, int(shm_size * 0.8))


#: each node's dashboard agent on a port of Ray's choosing: by default every agent also
#: listens on 127.0.0.1:52365, which the session's nodes share (measured: a worker's agent
#: then gives up its HTTP service, "Agent port #52365 failed to bind"), as does the
#: session's own single-machine Ray
_AGENT = ("--dashboard-agent-listen-port=0",)


def head_command(port: int, *, object_store: int) -> list[str]:
    r"""The head's command: Ray's GCS on :data:`HEAD_IP`, no CPU for tasks (they run on
    the workers), Ray's dashboard on :data:`HEAD_IP`:\ :data:`DASHBOARD_PORT` (inside the
    session's network namespace: its own server proxies it, :data:`DASHBOARD_PATH`).

    >>> head_command(23456, object_store=2**30)[:4]
    ['ray', 'start', '--head', '--block']
    """
    return ["ray", "start", "--head", "--block", f"--node-ip-address={HEAD_IP}", f"--port={port}", "--num-cpus=0",
            f"--object-store-memory={object_store}", "--include-dashboard=true", f"--dashboard-host={HEAD_IP}",
            f"--dashboard-port={DASHBOARD_PORT}", *_AGENT, f"--temp-dir={TEMP_DIR}", "--disable-usage-stats"]


def dashboard_url(hub_base: str, user: str, server: str) -> str:
    """Where a cluster's owner opens its dashboard: the path, under the hub's URL, of the
    session's own proxy of it (:data:`DASHBOARD_PATH`), as JupyterHub spells a server's URL.

    >>> dashboard_url("/", "ada", "")
    '/user/ada/atelier/ray/dashboard/'
    >>> dashboard_url("/hub-base/", "a b@x.org", "gpu")
    '/hub-base/user/a%20b@x.org/gpu/atelier/ray/dashboard/'
    """
    from urllib.parse import quote

    base = "/" + hub_base.strip("/") + "/" if hub_base.strip("/") else "/"
    named = f"{quote(server, safe='@~')}/" if server else ""
    return f"{base}user/{quote(user, safe='@~')}/{named}{DASHBOARD_PATH}"


def worker_command(port: int, index: int, *, cpus: int, object_store: int, gpus: int = 0) -> list[str]:
    """Worker ``index``'s command: join the head, with the profile's CPUs and GPUs. Its
    temporary folder (sockets, logs) is its own /tmp: by default a worker takes the
    head's, on the home, where nodes started together bind the same socket path
    (measured: the later raylets abort with "bind: Address already in use").

    >>> worker_command(23456, 1, cpus=2, object_store=2**30)[4:6]
    ['--node-ip-address=127.0.50.11', '--num-cpus=2']
    """
    return ["ray", "start", "--block", f"--address={HEAD_IP}:{port}", f"--node-ip-address={worker_ip(index)}",
            f"--num-cpus={cpus}", f"--num-gpus={gpus}", f"--object-store-memory={object_store}", *_AGENT,
            "--temp-dir=/tmp/ray"]


def cluster_env(session_env: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """A node's environment: the session container's own (its services' settings, the
    user's own credentials, its config files for the start hook) less what belongs to
    the server or to single-machine Ray, plus Ray's token authentication (pure).

    >>> env = cluster_env(["AWS_ACCESS_KEY_ID=ak", "JUPYTERHUB_API_TOKEN=t", "JUPYTERHUB_SERVICE_URL=http://x",
    ...                    "RAY_OVERRIDE_RESOURCES={}", "RAY_USAGE_STATS_ENABLED=0", "MLFLOW_TRACKING_URI=u"])
    >>> sorted(env)  # doctest: +NORMALIZE_WHITESPACE
    ['AWS_ACCESS_KEY_ID', 'JUPYTERHUB_API_TOKEN', 'MLFLOW_TRACKING_URI', 'RAY_AUTH_MODE', 'RAY_AUTH_TOKEN_PATH',
     'RAY_USAGE_STATS_ENABLED', 'TINI_SUBREAPER']
    """
    pairs = session_env.items() if isinstance(session_env, Mapping) else (
        item.split("=", 1) for item in session_env if "=" in item)
    env = {k: v for k, v in pairs if not _DROP.match(k)}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=TOKEN_PATH)
    # The image's tini is not the first process of the session's process namespace it
    # joins: as a subreaper it still reaps what Ray's processes leave.
    env["TINI_SUBREAPER"] = "1"
    return env


def node_labels(session_labels: Mapping[str, str], *, role: str, session_id: str, port: int,
                profile: str) -> dict[str, str]:
    """A node's labels: the session's stack, user and server (so the hub's tests and
    clean-ups find it as they find sessions), and the cluster's own.

    >>> node_labels({"dev.atelier.stack": "ab", "dev.atelier.user": "ada", "dev.atelier.server": "",
    ...              "dev.atelier.profile": "cpu-small", "other": "x"}, role="head", session_id="c0", port=9,
    ...             profile="cpu-large")["dev.atelier.profile"]
    'cpu-large'
    """
    labels = {k: v for k, v in session_labels.items()
              if k in ("dev.atelier.stack", "dev.atelier.user", "dev.atelier.server")}
    labels.update({LABEL: role, SESSION_LABEL: session_id, PORT_LABEL: str(port), "dev.atelier.profile": profile,
                   "dev.atelier.job": ""})
    return labels


def node_host_config(base: dict, *, session_id: str, home: str, token_file: str, memory: int,
                     cpus: float) -> dict:
    """A node's Docker host settings: the session builder's ``base``
    (:func:`~atelier_hub.embedded.container_spawner.host_config` with ``network=False``),
    the profile's memory and CPU limits, the session's network and process namespaces,
    the user's home and the cluster's token (read-only); removed once it exits.

    >>> c = node_host_config({"cap_drop": ["ALL"]}, session_id="c0", home="/s/homes/ada", token_file="/s/t",
    ...                      memory=2**30, cpus=1.5)
    >>> c["network_mode"], c["pid_mode"], c["nano_cpus"], c["binds"]["/s/t"]
    ('container:c0', 'container:c0', 1500000000, {'bind': '/run/atelier/ray-token', 'mode': 'ro'})
    """
    return {
        **base,
        "mem_limit": memory,
        "nano_cpus": int(cpus * 1e9),
        "network_mode": f"container:{session_id}",
        "pid_mode": f"container:{session_id}",
        "binds": {home: {"bind": IMAGE_HOME, "mode": "rw"}, token_file: {"bind": TOKEN_PATH, "mode": "ro"}},
        "auto_remove": True,
    }
