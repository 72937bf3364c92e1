"""The Ray clusters service's process: start, list and stop personal Ray clusters.

Rule this module keeps: every request is authenticated with the caller's hub token and
acts on the caller's own sessions only: a cluster joins the caller's running session
container (found by the labels the container spawner gives it), and another user's
clusters are neither listed nor reachable (404, as a server that does not exist). The
clusters' truth is the Docker engine's: nodes carry the labels of
:func:`atelier_hub.ray_clusters.node_labels`, so nothing is lost when the hub restarts,
and a sweep every few seconds removes the nodes of a session that is gone (they also die
with it: they live in its process namespace) and the token files nothing uses any more.

    GET    PREFIX/api/clusters                 {"clusters": [...]}: the caller's
    POST   PREFIX/api/clusters                 {"server", "workers", "profile"} -> 201 the cluster, once every
                                               node has joined (200: that one already runs)
    DELETE PREFIX/api/clusters?server=NAME     stop it (its nodes are removed)

A cluster's model: ``server``, ``profile``, ``workers``, ``address`` (``HOST:PORT`` inside
the session), ``token`` (Ray's auth token: ``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``),
``dashboard`` (Ray's dashboard, inside the session), ``dashboard_url`` (its path under the
hub's URL: the session's own server proxies it for its owner),
``nodes`` (each one's role and state); a POST's answer also says whether it ``created`` it.

Each node is counted in the usage record (``STATE/usage.jsonl``) as kind ``ray``, with
the profile's sizes, from the moment the cluster answers until its nodes are removed
(``atelier usage`` and the usage page show a "ray" kind row). The key of a node's run is
``SERVER/ray-head`` or ``SERVER/ray-worker-N`` (a server name holds no ``/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import shutil
import signal
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth
from tornado import web

from ..capacity import CAPACITY_FILE, CapacitySettings, load_capacity
from ..image_paths import HOME as IMAGE_HOME
from ..profiles import ProfileError, load_profiles, resolve_profile, session_cpus
from ..ray_clusters import (
    DASHBOARD_PORT,
    HEAD_IP,
    LABEL,
    PORT_LABEL,
    SESSION_LABEL,
    WORKERS_SETTING,
    RayClusterError,
    check_request,
    cluster_env,
    dashboard_url,
    head_command,
    node_host_config,
    node_labels,
    object_store_bytes,
    worker_command,
)
from ..usage import read_events
from ..usage import record as record_usage
from ._api import HealthHandler, UserApi, refusal
from ._front import HUB_AUTH_CACHE_S

log = logging.getLogger("atelier.ray_clusters")

#: seconds a new cluster's nodes may take to join (Ray's start on a busy 2-core machine)
READY_TIMEOUT = 240
#: what `ray start` prints once its node has joined
STARTED = "Ray runtime started"
#: a node's PIDs, as a session's (Ray's workers and their threads)
PIDS_LIMIT = 8192


class Engine:
    """The Docker engine, as this service uses it (blocking calls: run them in a thread)."""

    def __init__(self, docker_host: str, stack: str):
        import docker

        self.docker_host, self.stack = docker_host, stack
        self.NotFound = docker.errors.NotFound
        self._api = None

    @property
    def api(self):
        """The engine's client, made at first use: a hub whose sessions are processes has
        no engine, and this service then refuses requests instead of failing to start."""
        if self._api is None:
            import docker

            try:
                self._api = docker.APIClient(base_url=self.docker_host, version="auto", timeout=120)
            except docker.errors.DockerException:
                raise RayClusterError("server", "personal Ray clusters need container sessions, and no Docker "
                                      f"engine answers at {self.docker_host}: an admin runs `make images` and "
                                      "restarts the hub; meanwhile single-machine ray.init() works", status=409) \
                    from None
        return self._api

    def _list(self, labels: list[str], *, everything: bool = True) -> list[dict]:
        return self.api.containers(all=everything, filters={"label": [f"dev.atelier.stack={self.stack}", *labels]})

    def session(self, user: str, server: str) -> dict | None:
        """The user's running session container for ``server`` (not a job, not a Ray node)."""
        # The server's label is compared here: an empty one (the default server) is not
        # something every engine's label filter matches.
        for c in self._list([f"dev.atelier.user={user}"], everything=False):
            labels = c.get("Labels") or {}
            if labels.get("dev.atelier.server", "") == server and LABEL not in labels \
                    and not labels.get("dev.atelier.job"):
                return self.api.inspect_container(c["Id"])
        return None

    def nodes(self, *, user: str | None = None, session: str | None = None) -> list[dict]:
        labels = [LABEL]
        if user is not None:
            labels.append(f"dev.atelier.user={user}")
        if session is not None:
            labels.append(f"{SESSION_LABEL}={session}")
        return self._list(labels)

    def running(self, container_id: str) -> bool:
        try:
            return bool(self.api.inspect_container(container_id)["State"].get("Running"))
        except self.NotFound:
            return False

    def remove(self, container_id: str) -> None:
        try:
            self.api.remove_container(container_id, force=True)
        except self.NotFound:
            pass
        except Exception as exc:  # noqa: BLE001 (auto-removal already under way: 409)
            if "already in progress" not in str(exc):
                raise

    def logs(self, container_id: str) -> str:
        try:
            return self.api.logs(container_id, stdout=True, stderr=True, tail=200).decode(errors="replace")
        except self.NotFound:
            return ""


def _free_port(pid: int | None) -> int:
    """A port nothing listens on in the session's network namespace (its /proc/PID/net/tcp).

    >>> 20000 <= _free_port(None) < 30000
    True
    """
    taken = set()
    try:
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                taken.add(int(local.rsplit(":", 1)[1], 16))
    except (OSError, ValueError, IndexError):
        pass
    return random.choice([p for p in range(20000, 30000) if p not in taken])


def no_cluster(server: str) -> RayClusterError:
    shown = f"server {server!r}" if server else "your default server"
    return RayClusterError("server", f"no Ray cluster of yours runs in {shown}: see `atelier ray status`", status=404)


class Clusters:
    def __init__(self, *, state: Path, profiles_dir: str, engine: Engine):
        self.state, self.tokens = state, state / "ray_clusters"
        self.profiles_dir, self.engine = profiles_dir, engine
        self.usage_file = state / "usage.jsonl"
        self.open_runs = self.open_ray_runs()  # read once at start, then kept here
        self.locks: dict[str, asyncio.Lock] = {}
        self.starting: set[str] = set()

    def workers_max(self) -> int:
        """The capacity settings' per-user limit (read at each request: `atelier dev
        --capacity` may change it between two starts of the hub)."""
        file = self.state / CAPACITY_FILE
        return (load_capacity(file) if file.is_file() else CapacitySettings()).ray_workers_per_user

    async def call(self, fn, *args, **kw):
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args, **kw))

    def token_file(self, session_id: str) -> Path:
        return self.tokens / session_id / "token"

    def model(self, nodes: list[dict]) -> dict:
        head = next((n for n in nodes if n["Labels"].get(LABEL) == "head"), nodes[0])
        labels = head["Labels"]
        try:
            token = self.token_file(labels[SESSION_LABEL]).read_text().strip()
        except OSError:
            token = ""
        server = labels.get("dev.atelier.server", "")
        return {"server": server, "profile": labels.get("dev.atelier.profile", ""),
                "workers": sum(n["Labels"].get(LABEL) == "worker" for n in nodes),
                "address": f"{HEAD_IP}:{labels.get(PORT_LABEL)}", "token": token,
                "dashboard": f"http://{HEAD_IP}:{DASHBOARD_PORT}",
                "dashboard_url": dashboard_url(os.environ.get("JUPYTERHUB_BASE_URL", "/"),
                                               labels.get("dev.atelier.user", ""), server),
                "nodes": [{"role": n["Labels"].get(LABEL), "name": n["Names"][0].lstrip("/"), "state": n["State"]}
                          for n in sorted(nodes, key=lambda n: (n["Labels"].get(LABEL) != "head", n["Names"][0]))]}

    def by_session(self, nodes: list[dict]) -> dict[str, list[dict]]:
        found: dict[str, list[dict]] = {}
        for n in nodes:
            found.setdefault(n["Labels"].get(SESSION_LABEL, ""), []).append(n)
        return found

    def _start(self, user: str, groups: set[str], request: dict, session: dict) -> dict:
        """Build and start the nodes (blocking); returns the names started."""
        profiles = load_profiles(self.profiles_dir)
        try:
            profile = resolve_profile(profiles, request["profile"], groups=groups)
        except ProfileError as exc:
            raise RayClusterError("profile", str(exc)) from None
        if profile.gpu_count:
            raise RayClusterError("profile", f"profile {profile.name!r} has GPUs; personal Ray clusters in embedded "
                                  "mode run on CPU profiles only: choose one, e.g. cpu-small")
        sid = session["Id"]
        home = next((m["Source"] for m in session.get("Mounts", []) if m.get("Destination") == IMAGE_HOME), None)
        if home is None:
            raise RayClusterError("server", "this session has no home mounted; restart it", status=409)
        user_spec = session["Config"].get("User") or "1000:100"
        uid, _, gid = user_spec.partition(":")
        token_file = self.token_file(sid)
        token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tokens.chmod(0o700)
        if not token_file.is_file():
            # One token per session for as long as it runs: a kernel that made a cluster
            # before keeps the token Ray loaded then.
            tmp = token_file.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(32))
            os.chown(tmp, int(uid or 1000), int(gid or 100))
            tmp.chmod(0o400)
            tmp.replace(token_file)
        port = _free_port(session["State"].get("Pid"))
        env = cluster_env(session["Config"].get("Env") or [])
        # The embedded mode's builder (imported here: a hub pod has no DockerSpawner).
        from ..embedded.container_spawner import host_config

        base = host_config(profile, pids_limit=PIDS_LIMIT, network=False)
        hc = self.engine.api.create_host_config(**node_host_config(
            base, session_id=sid, home=home, token_file=str(token_file), memory=profile.memory.limit,
            cpus=float(profile.cpu.limit)))
        name = session["Name"].lstrip("/")
        cpus = session_cpus(profile, usable=os.cpu_count() or 1)
        store = object_store_bytes(base["shm_size"])
        specs = [("head", f"{name}--ray-head", head_command(port, object_store=store))]
        specs += [("worker", f"{name}--ray-worker-{i}", worker_command(port, i, cpus=cpus, object_store=store))
                  for i in range(request["workers"])]
        started = []
        for role, cname, command in specs:
            # The session's image by its id, not its tag: a tag moved by a rebuild since
            # the session started would give the nodes another Ray than the session's.
            c = self.engine.api.create_container(
                session["Image"], command=command, name=cname, environment=env, user=user_spec,
                working_dir=IMAGE_HOME, host_config=hc,
                labels=node_labels(session["Config"].get("Labels") or {}, role=role, session_id=sid, port=port,
                                   profile=profile.name))
            started.append(c["Id"])
            self.engine.api.start(c["Id"])
        log.info("ray cluster of %s (server %r): head and %d %s worker(s) started at %s:%d", user,
                 request["server"], request["workers"], profile.name, HEAD_IP, port)
        return {"ids": started, "profile": profile}

    @staticmethod
    def usage_key(node: dict) -> tuple[str, str]:
        """(user, ``SERVER/ray-head`` or ``SERVER/ray-worker-N``): a node's run in the usage record."""
        labels = node["Labels"]
        suffix = node["Names"][0].lstrip("/").rsplit("--", 1)[-1]
        return labels.get("dev.atelier.user", ""), f"{labels.get('dev.atelier.server', '')}/{suffix}"

    def count(self, event: str, keys, profile=None, groups=None) -> None:
        """One usage line per node (``start`` with the profile's sizes and its user's hub
        ``groups``, or ``stop``), kind ``ray``."""
        for user, server in keys:
            if event == "stop" and (user, server) not in self.open_runs:
                continue  # never counted (a start that failed), or stopped already
            try:
                record_usage(self.usage_file, event, user=user, server=server, profile=profile,
                             kind="ray" if event == "start" else None, groups=groups)
            except OSError as exc:
                log.warning("the usage record could not be written (%s): %s %s/%s", exc, event, user, server)
                continue
            (self.open_runs.add if event == "start" else self.open_runs.discard)((user, server))

    def open_ray_runs(self) -> set[tuple[str, str]]:
        """The nodes' runs the usage record has a start of and no stop."""
        runs: set[tuple[str, str]] = set()
        for e in read_events(self.usage_file):
            key = (e.get("user", ""), e.get("server", ""))
            if e.get("event") == "start" and e.get("kind") == "ray":
                runs.add(key)
            elif e.get("event") == "stop":
                runs.discard(key)
        return runs

    async def wait_ready(self, ids: list[str]) -> None:
        """Until every node's `ray start` says it joined; a node that exits first fails it."""
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = list(ids)
        while waiting:
            for cid in list(waiting):
                text = await self.call(self.engine.logs, cid)
                if STARTED in text:
                    waiting.remove(cid)
                elif not await self.call(self.engine.running, cid):
                    lines = "\n".join(text.strip().splitlines()[-5:])
                    raise web.HTTPError(500, f"a node of the cluster ended while starting; its last lines:\n{lines}")
            if waiting and time.monotonic() > deadline:
                raise web.HTTPError(504, f"{len(waiting)} node(s) did not join within {READY_TIMEOUT} s; "
                                         "try again, or with fewer workers")
            if waiting:
                await asyncio.sleep(1)

    #: where the per-user worker limit is set (named in a refusal)
    limit_setting = WORKERS_SETTING

    def checked(self, body, in_use: int) -> tuple[list, dict]:
        """The profiles and the request's checked fields (:func:`check_request`): ``in_use``
        is the caller's workers in their other clusters."""
        profiles = load_profiles(self.profiles_dir)
        default = next((p.name for p in profiles if p.default), profiles[0].name if profiles else "")
        return profiles, check_request(body, profile_names=[p.name for p in profiles], default_profile=default,
                                       workers_max=self.workers_max(), workers_in_use=in_use,
                                       limit_setting=self.limit_setting)

    async def create(self, user: dict, body) -> tuple[int, dict]:
        name = user["name"]
        server = body.get("server") if isinstance(body, dict) else None
        session = await self.call(self.engine.session, name, server or "") if isinstance(server, (str, type(None))) \
            else None
        all_nodes = await self.call(self.engine.nodes, user=name)
        groups = self.by_session(all_nodes)
        sid = session["Id"] if session else None
        in_use = sum(n["Labels"].get(LABEL) == "worker" for s, nodes in groups.items() if s != sid for n in nodes)
        _, request = self.checked(body, in_use)
        if session is None:
            shown = f"server {request['server']!r}" if request["server"] else "default server"
            raise RayClusterError("server", f"your {shown} is not running as a container session: start it first "
                                  "(a cluster lives inside the session that asks for it)", status=409)
        async with self.locks.setdefault(sid, asyncio.Lock()):
            mine = await self.call(self.engine.nodes, session=sid)
            if mine:
                have = self.model(mine)
                if (have["workers"], have["profile"]) == (request["workers"], request["profile"]):
                    return 200, {**have, "created": False}
                raise RayClusterError("workers", f"this session already has a cluster of {have['workers']} "
                                      f"{have['profile']} worker(s): use it as it is, or stop it first "
                                      "(atelier ray down, or leave its `with ray_cluster(...)` block)", status=409)
            self.starting.add(sid)
            try:
                started = await self.call(self._start, name, set(user.get("groups") or []), request, session)
                await self.wait_ready(started["ids"])
            except Exception:
                await self.remove_session(sid)  # no half-started cluster is left behind (nor counted)
                raise
            finally:
                self.starting.discard(sid)
            nodes = await self.call(self.engine.nodes, session=sid)
            self.count("start", [self.usage_key(n) for n in nodes], started["profile"], groups=user.get("groups"))
            return 201, {**self.model(nodes), "created": True}

    async def list(self, user: str) -> list[dict]:
        """The user's clusters, one per session."""
        nodes = await self.call(self.engine.nodes, user=user)
        return [self.model(n) for _, n in sorted(self.by_session(nodes).items())]

    async def delete(self, user: str, server: str) -> int:
        """Stop the user's cluster in ``server``; the number of nodes removed."""
        nodes = await self.call(self.engine.nodes, user=user)
        mine = {s: n for s, n in self.by_session(nodes).items()
                if n[0]["Labels"].get("dev.atelier.server", "") == server}
        if not mine:
            raise no_cluster(server)
        removed = 0
        for sid in mine:
            async with self.locks.setdefault(sid, asyncio.Lock()):
                removed += await self.remove_session(sid)
        return removed

    async def remove_session(self, sid: str) -> int:
        nodes = await self.call(self.engine.nodes, session=sid)
        # Workers first: a head removed first leaves them retrying to reach it.
        for n in sorted(nodes, key=lambda n: n["Labels"].get(LABEL) == "head"):
            await self.call(self.engine.remove, n["Id"])
        self.count("stop", [self.usage_key(n) for n in nodes])
        return len(nodes)

    async def sweep(self) -> None:
        """Remove the nodes of sessions that are gone, and clusters whose head is gone;
        then the token folders of sessions that are gone."""
        try:
            everything = await self.call(self.engine.nodes)
        except RayClusterError:  # no engine: no cluster either
            return
        groups = self.by_session(everything)
        # Nodes end with their session and the engine removes them (auto-remove): their
        # runs stop in the usage record once they are gone, whoever removed them.
        self.count("stop", sorted(self.open_runs - {self.usage_key(n) for n in everything}))
        for sid, nodes in groups.items():
            if sid in self.starting:
                continue
            head = [n for n in nodes if n["Labels"].get(LABEL) == "head" and n["State"] == "running"]
            if not sid or not await self.call(self.engine.running, sid) or not head:
                log.info("removing the ray cluster of %s (server %r): its session or its head is gone",
                         nodes[0]["Labels"].get("dev.atelier.user"), nodes[0]["Labels"].get("dev.atelier.server"))
                await self.remove_session(sid)
        if self.tokens.is_dir():
            for folder in self.tokens.iterdir():
                if folder.name not in self.starting and not await self.call(self.engine.running, folder.name):
                    await self.call(shutil.rmtree, folder, True)


class _Api(UserApi):
    def initialize(self, clusters: Clusters):
        self.clusters = clusters

    def _handle_request_exception(self, e):
        if isinstance(e, RayClusterError):  # the pure checks' refusals, answered as the others
            err = refusal(e.status, f"{e.field}: {e}", e.field)
            self.send_error(err.status_code, exc_info=(type(err), err, None))
            return
        super()._handle_request_exception(e)


class ClustersHandler(_Api):
    async def get(self):
        user = self.caller()
        self.finish({"clusters": await self.clusters.list(user["name"])})

    async def post(self):
        user = self.caller()
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise RayClusterError("body", 'the body is not JSON: send {"workers": 2, "profile": "cpu-small"}') from None
        code, model = await self.clusters.create(user, body)
        self.set_status(code)
        self.finish(model)

    async def delete(self):
        user = self.caller()
        server = self.get_argument("server", "")
        removed = await self.clusters.delete(user["name"], server)
        log.info("ray cluster of %s (server %r) stopped: %d node(s) removed", user["name"], server, removed)
        self.finish({"server": server, "removed": removed})


def arguments(description: str) -> argparse.ArgumentParser:
    """The options both backends take (this module's and :mod:`.ray_clusters_kube`'s)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--state", required=True, type=Path, help="the stack's state folder (its containers' names, "
                    "the clusters' token files; the usage record)")
    ap.add_argument("--profiles", required=True, help="the profiles folder")
    ap.add_argument("--every", type=float, default=5, help="seconds between sweeps for clusters whose session is gone")
    ap.add_argument("--listen", help="HOST:PORT to listen on; default: the hub's JUPYTERHUB_SERVICE_URL")
    return ap


def serve(make_clusters, args) -> None:
    """Run the API over the clusters ``make_clusters()`` returns, sweeping every ``args.every`` s."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    listen = urlparse(f"http://{args.listen}" if args.listen else os.environ["JUPYTERHUB_SERVICE_URL"])
    HubAuth.instance(cache_max_age=HUB_AUTH_CACHE_S)

    async def run() -> None:
        clusters = make_clusters()
        kw = {"clusters": clusters}
        app = web.Application([
            (rf"{prefix}/api/clusters/?", ClustersHandler, kw),
            (rf"{prefix}/health", HealthHandler),
        ])
        app.listen(listen.port, listen.hostname)
        log.info("ray clusters service listening at %s/ (at most %d workers per user)", prefix,
                 clusters.workers_max())
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        while not stopping.is_set():
            try:
                await clusters.sweep()
            except Exception:  # the engine restarting, say: try again next cycle
                log.exception("sweeping the ray clusters failed")
            try:
                await asyncio.wait_for(stopping.wait(), args.every)
            except asyncio.TimeoutError:
                pass

    asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    from ..embedded.container_spawner import stack_id
    from ..embedded.engine import docker_host

    serve(lambda: Clusters(state=args.state, profiles_dir=args.profiles,
                           engine=Engine(docker_host(), stack_id(args.state))), args)


if __name__ == "__main__":
    main()
