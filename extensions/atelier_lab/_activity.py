"""The session's side of idle culling: a Jupyter server extension reporting activity.

Rule this module keeps: what counts as activity is the list :data:`SIGNALS`, one small
function each (a busy kernel, an open terminal, an SSH connection, GPU use above a
threshold, a personal Ray cluster running tasks); adding one is one function and one
line. Every ``ATELIER_ACTIVITY_INTERVAL`` seconds the extension samples them; while any
is active it moves the server's own last activity (jupyter-server counts every
``*_last_activity`` setting) and it reports to the culler (``ATELIER_CULLER_URL``) which
signals are active, so the hub log can say what kept a server alive. Jupyter's own last
activity does not move while a kernel runs a silent loop (no message on iopub), which is
why a busy kernel is a signal here.

What the session reports as its last activity is work, not API traffic: kernel
messages, terminal I/O, saved files and active signals (an open JupyterLab tab polls
the server forever; an idle IDE window must not keep a server alive).

The culler answers with the server's plan (when it stops, whether to warn), served to
JupyterLab at ``/api/atelier/culling``; ``POST /api/atelier/culling/extend`` asks the
culler to postpone; ``POST /api/atelier/culling/saving`` announces that the saves of the
next 30 s are the warning's own (unsaved work saved before the stop), not work. A
signal that cannot be read here (no ``nvidia-smi``, no personal Ray cluster) is skipped.
ref: jupyter_server/serverapp.py ``ServerWebApplication.last_activity`` (the
``*_last_activity`` hook) and ``services/kernels/kernelmanager.py`` (``execution_state``
kept from iopub status messages).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from jupyter_server.base.handlers import APIHandler
from tornado import httpclient, web
from tornado.ioloop import IOLoop, PeriodicCallback

__all__ = ["SIGNALS", "kernels_busy", "terminals_open", "ssh_connections", "gpu_busy", "ray_cluster_busy"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


async def kernels_busy(app) -> str | None:
    km = app.web_app.settings["kernel_manager"]
    busy = [kid for kid in km.list_kernel_ids() if getattr(km.get_kernel(kid), "execution_state", "") == "busy"]
    return f"{len(busy)} kernel(s) busy" if busy else None


async def terminals_open(app) -> str | None:
    tm = app.web_app.settings.get("terminal_manager")
    n = len(getattr(tm, "terminals", {}) or {}) if tm is not None else 0
    return f"{n} terminal(s) open" if n else None


def _ssh_sessions(proc: Path = Path("/proc")) -> int:
    """Established SSH connections: sshd's per-connection processes ("sshd: USER@pts/0").

    A process with that title whose parent has one too is the same connection: sshd
    forks for the command it runs, and the child keeps the title until it execs. It is
    counted once, so an open session is "1 SSH connection(s)" at every look."""
    titled: dict[str, str] = {}  # pid -> parent pid
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if (cmd.startswith("sshd: ") or cmd.startswith("sshd-session: ")) and "@" in cmd:
            try:  # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses
                titled[entry.name] = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                titled[entry.name] = ""
    return sum(1 for parent in titled.values() if parent not in titled)


async def ssh_connections(app) -> str | None:
    n = _ssh_sessions()
    return f"{n} SSH connection(s)" if n else None


async def gpu_busy(app) -> str | None:
    exe = shutil.which("nvidia-smi")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if exe is None or visible == "":
        return None  # no GPU here (or none given to this session): not a signal
    cmd = [exe, "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"]
    if visible and all(part.strip().isdigit() for part in visible.split(",")):
        cmd += ["-i", visible]
    try:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    except (OSError, asyncio.TimeoutError):
        return None
    threshold = int(os.environ.get("ATELIER_GPU_BUSY_PERCENT", "10"))
    busy = []
    for line in out.decode().splitlines():
        index, _, util = line.partition(",")
        if util.strip().isdigit() and int(util) >= threshold:
            busy.append(f"GPU {index.strip()} at {int(util)}%")
    return ", ".join(busy) or None


# Ray's own view of a cluster's nodes (its autoscaler's state in the GCS): a node is busy
# while a task or an actor holds some of its CPUs, GPUs or custom resources. Not the
# node's status: it stays RUNNING while a driver is connected through Ray's client (a
# kernel that called ray.init("ray://...") and sits idle). Run in a child process with
# the cluster's token: importing Ray in the Jupyter server would cost it memory for good.
RAY_PROBE = """
import json, sys
from ray._raylet import GcsClient
from ray.autoscaler.v2.sdk import get_cluster_resource_state
state = get_cluster_resource_state(GcsClient(address=sys.argv[1]))
held = lambda n: any(n.available_resources.get(k, 0) < v for k, v in n.total_resources.items()
                     if not k.startswith('node:') and k not in ('memory', 'object_store_memory'))
print(json.dumps(['RUNNING' if held(n) else 'IDLE' for n in state.node_states]))
"""


async def ray_cluster_busy(app, env=os.environ) -> str | None:
    """Work on this session's personal Ray cluster (``atelier_lab.ray_cluster``): nodes
    whose resources a task or an actor holds, as Ray's GCS reports them. A script that
    submitted work and a kernel that sits idle while its tasks run keep the session."""
    import sys

    from ._ray import RayClusterUnavailable, _request

    if not env.get("ATELIER_RAY_CLUSTERS_URL"):
        return None
    try:
        clusters = (await asyncio.to_thread(_request, "GET", "/api/clusters", env=env, timeout=20))["clusters"]
    except RayClusterUnavailable:
        return None
    mine = [c for c in clusters if c.get("server") == env.get("JUPYTERHUB_SERVER_NAME", "")]
    if not mine:
        return None
    child_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": mine[0].get("token", "")}
    # The head's GCS: the cluster's address in embedded mode; beside Ray's client URL on a cluster.
    gcs = mine[0].get("gcs_address") or mine[0]["address"]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", RAY_PROBE, gcs, env=child_env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except asyncio.TimeoutError:
        proc.kill()
        return None
    try:
        running = json.loads(out).count("RUNNING")
    except ValueError:
        return None
    return f"Ray cluster: {running} node(s) running tasks" if running else None


#: name -> async function(serverapp) returning a detail while active, else None
SIGNALS = {
    "kernel-busy": kernels_busy,
    "terminal": terminals_open,
    "ssh": ssh_connections,
    "gpu": gpu_busy,
    "ray": ray_cluster_busy,
}


class Reporter:
    def __init__(self, app, *, culler_url: str, token: str, prefix: str):
        self.app, self.culler_url, self.token, self.prefix = app, culler_url.rstrip("/"), token, prefix
        self.plan: dict = {"cull_at": None, "warn": False}
        self.active: dict[str, str] = {}
        self.saved = app.web_app.settings["started"]
        self.saving_until = self.saved

    async def sample(self) -> dict[str, str]:
        active = {}
        for name, signal in SIGNALS.items():
            try:
                detail = await signal(self.app)
            except Exception as exc:  # one broken signal must not stop the others
                self.app.log.warning("atelier activity signal %s failed: %s", name, exc)
                continue
            if detail:
                active[name] = detail
        if active:
            self.app.web_app.settings["atelier_last_activity"] = _utcnow()
        self.active = active
        return active

    async def post(self, path: str, body: dict) -> None:
        req = httpclient.HTTPRequest(f"{self.culler_url}/api/{path}", method="POST", body=json.dumps(body),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"}, request_timeout=30)
        resp = await httpclient.AsyncHTTPClient().fetch(req)
        self.plan = json.loads(resp.body)

    def work_activity(self) -> datetime:
        """The last time someone or something worked here: a kernel message, terminal
        I/O, a saved file or an active signal. Not API calls: an open JupyterLab tab
        polls the server forever, and an idle IDE window must not keep a server alive."""
        settings = self.app.web_app.settings
        times = [settings["started"], settings["kernel_manager"].last_kernel_activity, self.saved]
        times += [settings[k] for k in ("terminal_last_activity", "atelier_last_activity") if settings.get(k)]
        return max(times)

    def on_save(self, **_) -> None:
        # The warning's own saves of unsaved work are not work: they must not keep the server.
        if _utcnow() >= self.saving_until:
            self.saved = _utcnow()

    async def tick(self) -> None:
        active = await self.sample()
        try:
            await self.post("report", {"prefix": self.prefix, "active": active,
                                       "last_activity": self.work_activity().isoformat()})
        except Exception as exc:  # the culler restarting: report again next time
            self.app.log.warning("atelier activity report to %s failed: %s", self.culler_url, exc)


class CullingHandler(APIHandler):
    # The Lab's poll of the plan is not activity (else an open tab keeps a server alive).
    _track_activity = False

    @web.authenticated
    def get(self):
        r = self.settings["atelier_reporter"]
        self.finish({**r.plan, "active": r.active, "now": _utcnow().isoformat()})


class ExtendHandler(APIHandler):
    @web.authenticated
    async def post(self):
        r = self.settings["atelier_reporter"]
        try:
            await r.post("extend", {"prefix": r.prefix})
        except Exception as exc:
            raise web.HTTPError(502, f"the culler did not answer: {exc}") from None
        self.finish({**r.plan, "active": r.active, "now": _utcnow().isoformat()})


class SavingHandler(APIHandler):
    """JupyterLab is about to save unsaved documents because the server is stopping."""

    _track_activity = False

    @web.authenticated
    def post(self):
        r = self.settings["atelier_reporter"]
        r.saving_until = _utcnow() + timedelta(seconds=30)
        self.finish({"saving_until": r.saving_until.isoformat()})


def load(serverapp) -> None:
    url = os.environ.get("ATELIER_CULLER_URL")
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not url or not token:
        serverapp.log.info("atelier activity: no culler configured; nothing reported")
        return
    reporter = Reporter(serverapp, culler_url=url, token=token,
                        prefix=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", serverapp.base_url))
    web_app = serverapp.web_app
    web_app.settings["atelier_reporter"] = reporter
    serverapp.contents_manager.register_post_save_hook(reporter.on_save)
    base = web_app.settings["base_url"].rstrip("/")
    web_app.add_handlers(".*$", [(f"{base}/api/atelier/culling", CullingHandler),
                                 (f"{base}/api/atelier/culling/extend", ExtendHandler),
                                 (f"{base}/api/atelier/culling/saving", SavingHandler)])
    interval = float(os.environ.get("ATELIER_ACTIVITY_INTERVAL", "60"))
    PeriodicCallback(reporter.tick, interval * 1000).start()
    IOLoop.current().add_callback(reporter.tick)
    serverapp.log.info("atelier activity: reporting %s every %g s to %s", ", ".join(SIGNALS), interval, url)
