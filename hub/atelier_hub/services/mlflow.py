"""The MLflow tracking server as a hub-managed service, behind JupyterHub login.

Rule this module keeps: nobody reaches MLflow without a hub identity. Browsers log in
through the hub (OAuth cookie); sessions and scripts send their hub API token
(``MLFLOW_TRACKING_TOKEN``, sent by MLflow as ``Authorization: Bearer``). The real
``mlflow server`` listens on a private 127.0.0.1 port and lives in its own process
group, which dies with this process; a group left by a predecessor that was killed
hard is ended before a new one starts, so its port is never held forever.
ref: ../shared/RECIPES.md (MLflow orphans its uvicorn child on SIGKILL)

Run by the hub as ``python -m atelier_hub.services.mlflow --state DIR ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import httpclient, httputil, web
from tornado.httpserver import HTTPServer

# Hop-by-hop headers and credentials that must not travel to MLflow.
_DROP_REQUEST = {"host", "authorization", "cookie", "connection", "origin", "referer",
                 "content-length", "transfer-encoding", "keep-alive", "upgrade"}
_DROP_RESPONSE = {"connection", "transfer-encoding", "content-length", "keep-alive", "server"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec: the child gets SIGTERM if this supervisor dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def end_group(pgid_file: Path) -> None:
    """End the process group recorded in ``pgid_file`` (a predecessor's), if still alive."""
    try:
        pgid = int(pgid_file.read_text())
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        for _ in range(50):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    pgid_file.unlink(missing_ok=True)


class ProxyHandler(HubOAuthenticated, web.RequestHandler):
    """Forwards every request under the service prefix to the private MLflow server."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, backend: str, open_paths: frozenset[str]):
        self.backend = backend
        self.open_paths = open_paths

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
            self.backend + self.request.uri,
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


async def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    client = httpclient.AsyncHTTPClient()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow server exited with code {proc.returncode} before it was ready")
        try:
            r = await client.fetch(url, raise_error=False, request_timeout=5)
            if r.code == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit(f"mlflow server not ready after {timeout:.0f} s at {url}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, help="folder for the backend store and the pid file")
    ap.add_argument("--artifacts-destination", required=True)
    ap.add_argument("--ready-timeout", type=float, default=170)
    args = ap.parse_args(argv)

    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    listen = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    pgid_file = state / "mlflow-server.pgid"
    end_group(pgid_file)

    port = free_port()
    env = dict(os.environ)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # ten processes -> two
    for name in [k for k in env if k.startswith("JUPYTERHUB_")]:
        env.pop(name)  # the hub's token for this service stays with the proxy
    cmd = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--static-prefix", prefix,
        "--backend-store-uri", f"sqlite:///{(state / 'mlflow.db').resolve()}",
        "--artifacts-destination", args.artifacts_destination,
    ]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    pgid_file.write_text(str(proc.pid))

    def stop(*_):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pgid_file.unlink(missing_ok=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    backend = f"http://127.0.0.1:{port}"

    async def run():
        await wait_healthy(f"{backend}{prefix}/health", proc, args.ready_timeout)
        app = web.Application(
            [
                (rf"{prefix}/oauth_callback", HubOAuthCallbackHandler),
                (rf"{prefix}(/.*)?", ProxyHandler,
                 {"backend": backend, "open_paths": frozenset({f"{prefix}/health"})}),
            ],
            cookie_secret=os.urandom(32),
        )
        # Artifact uploads arrive whole through the hub's proxy.
        HTTPServer(app, max_body_size=4 * 1024**3, max_buffer_size=4 * 1024**3).listen(
            listen.port, listen.hostname
        )
        print(f"MLflow ready behind hub login at {prefix}/", flush=True)
        while proc.poll() is None:
            await asyncio.sleep(1)
        sys.exit(f"mlflow server exited with code {proc.returncode}")

    asyncio.run(run())


if __name__ == "__main__":
    main()
