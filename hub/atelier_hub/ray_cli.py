"""``atelier ray up|status|down``: the Ray clusters service's client.

Rule this module keeps: it talks only to the Ray clusters service
(``/services/ray_clusters/api/``) with the user's login (:class:`atelier_hub.remote.Login`),
as ``atelier run`` talks to the jobs service; the service's refusals are printed as they
come (they name the field and the fix). The cluster's token is never printed: a
session's ``ray_cluster()`` of the same shape returns the running cluster with it set.
"""

from __future__ import annotations

from urllib.parse import quote, urljoin

from .remote import Login, service_answer

API = "/services/ray_clusters/api/clusters"


def _answer(r, what: str) -> dict:
    return service_answer(r, service="Ray clusters service", what=what)


def _where(server: str) -> str:
    return f"server {server!r}" if server else "your default server"


def use_line(cluster: dict) -> str:
    """How to use a running cluster from its session (what ``atelier ray up`` prints).

    >>> use_line({"workers": 2, "profile": "cpu-small", "address": "127.0.50.1:2"})
    'from atelier_lab import ray_cluster; cluster = ray_cluster(workers=2, profile="cpu-small"); ray.init(cluster.address)'
    """
    return (f'from atelier_lab import ray_cluster; cluster = ray_cluster(workers={cluster["workers"]}, '
            f'profile="{cluster["profile"]}"); ray.init(cluster.address)')


def dashboard_line(login: Login, cluster: dict) -> str:
    """Where the cluster's owner opens its dashboard in a browser: through the hub, in
    their session's own server.

    >>> dashboard_line(Login("http://127.0.0.1:8000/", "t"), {"dashboard_url": "/user/ada/atelier/ray/dashboard/"})
    'http://127.0.0.1:8000/user/ada/atelier/ray/dashboard/'
    """
    return urljoin(login.hub_url, cluster.get("dashboard_url") or "")


def cmd_up(args) -> None:
    login = Login.resolve(args.hub)
    body = {"server": args.server, "workers": args.workers, "profile": args.profile}
    r = login.request("POST", API, json={k: v for k, v in body.items() if v is not None}, timeout=330)
    c = _answer(r, "the cluster")
    state = "started" if c.get("created") else "already running"
    print(f"Ray cluster {state} in {_where(c['server'])}: head at {c['address']}, {c['workers']} "
          f"{c['profile']} worker(s).\nIn that session (it stops with it, or with `atelier ray down`):\n  "
          + use_line(c))
    if c.get("dashboard_url"):
        print(f"Its dashboard, for you alone (your hub login): {dashboard_line(login, c)}")


def cmd_status(args) -> None:
    login = Login.resolve(args.hub)
    clusters = _answer(login.request("GET", API), "your clusters")["clusters"]
    if not clusters:
        print("No Ray cluster of yours is running (start one: atelier ray up [SERVER] --workers N).")
        return
    rows = [(c["server"] or "(default)", c["profile"], str(c["workers"]), c["address"],
             f"{sum(n['state'] == 'running' for n in c['nodes'])}/{len(c['nodes'])}", dashboard_line(login, c))
            for c in clusters]
    table = [("SERVER", "PROFILE", "WORKERS", "ADDRESS", "NODES RUNNING", "DASHBOARD"), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_down(args) -> None:
    login = Login.resolve(args.hub)
    r = login.request("DELETE", f"{API}?server={quote(args.server, safe='')}")
    done = _answer(r, "stopping the cluster")
    print(f"Stopped the Ray cluster in {_where(args.server)} ({done['removed']} node(s) removed).")


def add_parsers(sub, wrap) -> None:
    """``atelier ray up|status|down``, each run through ``wrap`` (a RemoteError becomes one line)."""
    hub_help = "the hub's URL (default: $ATELIER_HUB_URL, else the saved login)"
    ray = sub.add_parser("ray", help="a personal Ray cluster inside one of your sessions (embedded: for trying "
                                     "the API on one machine)")
    rsub = ray.add_subparsers(dest="action", required=True)
    up = rsub.add_parser("up", help="start a Ray head and workers inside a running session")
    up.add_argument("server", nargs="?", default="", help="the session's server name (default: your default server)")
    up.add_argument("--workers", type=int, default=1, help="how many workers (default 1; the deployment caps it)")
    up.add_argument("--profile", help="the profile that sizes each worker (default: the default profile)")
    up.add_argument("--hub", help=hub_help)
    up.set_defaults(func=wrap(cmd_up))
    st = rsub.add_parser("status", help="your running clusters: server, profile, workers, address, dashboard")
    st.add_argument("--hub", help=hub_help)
    st.set_defaults(func=wrap(cmd_status))
    down = rsub.add_parser("down", help="stop the cluster of a session (its containers are removed)")
    down.add_argument("server", nargs="?", default="", help="the session's server name (default: your default server)")
    down.add_argument("--hub", help=hub_help)
    down.set_defaults(func=wrap(cmd_down))
