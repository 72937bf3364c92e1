"""The front of the MLflow tracking server: hub login in, MLflow behind, from the first second.

Rule this module keeps: nobody reaches MLflow without a hub identity. Browsers log in
through the hub (OAuth cookie); sessions and scripts send their hub API token
(``MLFLOW_TRACKING_TOKEN``, sent by MLflow as ``Authorization: Bearer``). The front
listens at once, so the hub (which waits for each managed service's URL before it
routes the login page) is never held up by MLflow's start; until ``mlflow server``
answers, ``/health`` says 503 and every other request waits a bounded time
(``--request-wait``) and then fails with a message naming the endpoint. The real
server listens on a private 127.0.0.1 port, supervised by :class:`._process.Supervisor`:
its own process group, restarted if it dies, ended with this process.
ref: ../shared/RECIPES.md (MLflow orphans its uvicorn child on SIGKILL)

Run by the hub as ``python -m atelier_hub.services.mlflow_front --state DIR --record F ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import httpclient, httputil, web
from tornado.httpserver import HTTPServer
from tornado.log import access_log

from ._process import Supervisor, free_port

# Hop-by-hop headers and credentials that must not travel to MLflow.
_DROP_REQUEST = {"host", "authorization", "cookie", "connection", "origin", "referer",
                 "content-length", "transfer-encoding", "keep-alive", "upgrade"}
_DROP_RESPONSE = {"connection", "transfer-encoding", "content-length", "keep-alive", "server"}


class ProxyHandler(HubOAuthenticated, web.RequestHandler):
    """Forwards every request under the service prefix to the private MLflow server."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, backend: Backend, open_paths: frozenset[str], health: str):
        self.backend = backend
        self.open_paths = open_paths
        self.health = health

    def check_xsrf_cookie(self):
        """MLflow's UI sends no _xsrf token: accept cookie-authenticated writes that the
        browser itself marks same-origin, the standard CSRF defence, refuse the rest."""
        site = self.request.headers.get("Sec-Fetch-Site")
        if site in ("same-origin", "none"):
            return
        origin = self.request.headers.get("Origin")
        if site is None and origin and urlparse(origin).netloc == self.request.host:
            return
        raise web.HTTPError(403, "cross-site request refused")

    def _user_or_login(self) -> bool:
        if self.request.path in self.open_paths or self.current_user:
            return True
        browser_page = "text/html" in self.request.headers.get("Accept", "")
        if self.request.method in ("GET", "HEAD") and browser_page and "Authorization" not in self.request.headers:
            self.redirect(self.get_login_url())
            return False
        raise web.HTTPError(
            403, "MLflow here needs a JupyterHub login: set MLFLOW_TRACKING_TOKEN to your hub API token"
        )

    async def _forward(self, *_path):
        if not self._user_or_login():
            return
        if not self.backend.ready:
            # /health tells the truth at once (quietly: it is polled); a real request
            # waits for MLflow a while.
            if self.request.path == self.health:
                self.set_status(503)
                self.finish({"error_code": 503, "message": self.backend.starting_message()})
                return
            if not await self.backend.wait_ready():
                raise web.HTTPError(503, self.backend.starting_message())
        headers = httputil.HTTPHeaders()
        for name, value in self.request.headers.get_all():
            if name.lower() not in _DROP_REQUEST:
                headers.add(name, value)
        headers["X-Forwarded-Host"] = self.request.host
        headers["X-Forwarded-Proto"] = self.request.protocol
        if self.current_user:
            headers["X-Forwarded-User"] = self.current_user["name"]
        body = self.request.body if self.request.method not in ("GET", "HEAD", "OPTIONS") else None
        if body is None and self.request.method in ("POST", "PUT", "PATCH"):
            body = b""

        started = False

        def on_header(line: str) -> None:
            nonlocal started
            line = line.rstrip("\r\n")
            if line.startswith("HTTP/"):
                status = httputil.parse_response_start_line(line)
                self.set_status(status.code, status.reason)
                self._headers = httputil.HTTPHeaders()
            elif line:
                name, _, value = line.partition(":")
                if name.lower() not in _DROP_RESPONSE:
                    self.add_header(name.strip(), value.strip())
            started = True

        def on_chunk(chunk: bytes) -> None:
            self.write(chunk)
            self.flush()

        request = httpclient.HTTPRequest(
            self.backend.url + self.request.uri,
            method=self.request.method,
            headers=headers,
            body=body,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            decompress_response=False,
            header_callback=on_header,
            streaming_callback=on_chunk,
            request_timeout=3600,
        )
        try:
            await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as exc:
            if not started:
                raise web.HTTPError(502, f"MLflow server not reachable: {exc}") from None
        self.finish()

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error_code": status_code, "message": message}))

    get = head = post = put = patch = delete = options = _forward




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

    async def probe(self, prefix: str) -> bool:
        """Ready once /health answers and the tracking store answers a real call (the
        store's tables are created on the first start, which takes seconds)."""
        client = httpclient.AsyncHTTPClient()
        for path in (f"{prefix}/health", f"{prefix}/ajax-api/2.0/mlflow/experiments/search?max_results=1"):
            try:
                r = await client.fetch(self.url + path, raise_error=False, request_timeout=30)
            except OSError:
                return False
            if r.code != 200:
                return False
        return True


def _log_request(handler: web.RequestHandler) -> None:
    """Tornado's request log, less the readiness probes (one a second while starting)."""
    if handler.request.path.endswith("/health"):
        return
    status = handler.get_status()
    log = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
    log("%d %s %.2fms", status, handler._request_summary(), 1000.0 * handler.request.request_time())


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


def server_command(*, port: int, prefix: str, state: Path, artifacts_destination: str) -> tuple[list[str], dict]:
    """The command and environment of MLflow's tracking server worker (pure, apart from
    a fresh boot id): what ``mlflow server --workers 1 --static-prefix PREFIX
    --backend-store-uri sqlite:///STATE/mlflow.db --artifacts-destination DEST`` runs.

    >>> cmd, env = server_command(port=5000, prefix="/services/mlflow", state=Path("/s"),
    ...                           artifacts_destination="s3://b/")
    >>> cmd[1:3], cmd[-1], env["_MLFLOW_STATIC_PREFIX"], env["_MLFLOW_SERVER_SERVE_ARTIFACTS"]
    (['-m', 'uvicorn'], 'mlflow.server.fastapi_app:app', '/services/mlflow', 'true')
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
    }
    # MLflow's own log format for uvicorn; found without importing MLflow here.
    spec = importlib.util.find_spec("mlflow")
    log_config = Path(spec.submodule_search_locations[0]) / "server" / "uvicorn_log_config.yaml" if spec else None
    cmd = [sys.executable, "-m", "uvicorn",
           *(["--log-config", str(log_config)] if log_config and log_config.exists() else []),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "mlflow.server.fastapi_app:app"]
    return cmd, env


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, type=Path, help="folder for the backend store")
    ap.add_argument("--record", required=True, type=Path, help="file recording the server's process group")
    ap.add_argument("--artifacts-destination", required=True)
    ap.add_argument("--public-url", default="", help="the URL users reach MLflow at, for messages")
    # Under the session's MLFLOW_HTTP_REQUEST_TIMEOUT (60 s), so the client sees the 503
    # and its own retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES) wait for the rest.
    ap.add_argument("--request-wait", type=float, default=50,
                    help="seconds a request waits for a starting MLflow before it gets 503")
    args = ap.parse_args(argv)

    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    listen = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    public = args.public_url or os.environ.get("JUPYTERHUB_PUBLIC_URL") or prefix
    args.state.mkdir(parents=True, exist_ok=True)
    args.record.parent.mkdir(parents=True, exist_ok=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # ten processes -> two
    backend = Backend(public=public, wait=args.request_wait)
    sup = Supervisor([], name="mlflow server", record_file=args.record, env=env, grace=10)

    def before_start() -> None:
        # A new private port at each start: a predecessor's port may still linger.
        port = free_port()
        backend.url, backend.ready, backend.since = f"http://127.0.0.1:{port}", False, time.monotonic()
        sup.cmd, server_env = server_command(port=port, prefix=prefix, state=args.state,
                                             artifacts_destination=args.artifacts_destination)
        sup.env = {**env, **server_env}

    sup.before_start = before_start

    async def run() -> None:
        app = web.Application(
            [
                (rf"{prefix}/oauth_callback", HubOAuthCallbackHandler),
                (rf"{prefix}(/.*)?", ProxyHandler,
                 {"backend": backend, "open_paths": frozenset({f"{prefix}/health"}),
                  "health": f"{prefix}/health"}),
            ],
            cookie_secret=os.urandom(32),
            log_function=_log_request,
        )
        # Artifact uploads arrive whole through the hub's proxy.
        HTTPServer(app, max_body_size=4 * 1024**3, max_buffer_size=4 * 1024**3).listen(
            listen.port, listen.hostname
        )
        print(f"MLflow front listening at {prefix}/; starting mlflow server ...", flush=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        sup.start()
        while not stopping.is_set():
            if not sup.check():
                break
            alive = sup.proc is not None and sup.proc.poll() is None
            if not alive:
                backend.ready = False
            elif not backend.ready and await backend.probe(prefix):
                backend.ready = True
                print(f"MLflow ready behind hub login at {prefix}/ "
                      f"({time.monotonic() - backend.since:.0f} s)", flush=True)
            try:
                await asyncio.wait_for(stopping.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        sup.stop()

    asyncio.run(run())


if __name__ == "__main__":
    main()
