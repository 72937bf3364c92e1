"""The local Docker engine that embedded-mode sessions run on, started when none runs.

Rule this module keeps: the engine never puts anything on a network other than
loopback, and never changes the shared host's settings. It is started with no bridge
(``--bridge=none``), no iptables rules, no IP forwarding and no masquerading, its data
and exec roots in the cache (outside any clone) and its socket there too; image builds
run with ``--network host``, sessions with ``--network none`` (a namespace of their own,
joined to 127.0.0.1 by :mod:`atelier_hub.embedded.netns_relay`). Standard library only: the CLI
calls it before the hub (or the virtualenv's packages) are imported.

Which session mode runs is decided here, once, with the reason: ``container`` where
the engine answers and the base image exists, else ``process`` (single-user).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..install.paths import docker_socket, image_ref

__all__ = ["Engine", "SessionMode", "engine", "session_mode", "docker_host"]

# Flags that keep the engine off every network but loopback and off the host's
# iptables and sysctls. ref: https://docs.docker.com/reference/cli/dockerd/
ISOLATION_FLAGS = (
    "--bridge=none",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


@dataclass(frozen=True)
class Engine:
    """One Docker engine, known by its socket."""

    socket: Path

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` value for this engine."""
        return f"unix://{self.socket}"

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        """GET on the engine's API (status 0 when it does not answer)."""
        try:
            conn = _UnixHTTP(str(self.socket), timeout)
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        except OSError:
            return 0, b""

    def running(self) -> bool:
        return self.get("/_ping", timeout=2)[0] == 200

    def has_image(self, ref: str) -> bool:
        return self.get(f"/images/{ref}/json")[0] == 200

    def runtimes(self) -> set[str]:
        status, body = self.get("/info")
        return set(json.loads(body).get("Runtimes", {})) if status == 200 else set()

    def start(self, *, timeout: float = 60) -> str:
        """Start ``dockerd`` detached if none answers; returns what happened, in words.

        Raises RuntimeError naming the cause (not root, no dockerd, start failed)."""
        if self.running():
            return f"Docker engine already running ({self.socket})"
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise RuntimeError("dockerd is not installed; `make install` installs Debian's docker.io (as root)")
        if os.geteuid() != 0:
            raise RuntimeError("the Docker engine needs root here (no rootless engine is set up)")
        d = self.socket.parent
        for sub in ("data", "exec"):
            (d / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        log = open(d / "dockerd.log", "ab")
        cmd = [
            dockerd,
            f"--host=unix://{self.socket}",
            f"--data-root={d / 'data'}",
            f"--exec-root={d / 'exec'}",
            f"--pidfile={d / 'dockerd.pid'}",
            "--storage-driver=overlay2",
            *ISOLATION_FLAGS,
            # No daemon.json from the host: this engine's settings are all on this line.
            f"--config-file={d / 'daemon.json'}",
        ]
        (d / "daemon.json").write_text("{}\n")
        # Its own session: Ctrl-C on `atelier dev` does not stop it; sessions outlive a
        # hub restart and are re-adopted. The same engine serves every stack of this machine.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        while not self.running():
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}; see {d / 'dockerd.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer in {timeout:.0f} s; see {d / 'dockerd.log'}")
            time.sleep(0.2)
        return f"Docker engine started ({self.socket}, data in {d / 'data'})"


def engine() -> Engine:
    """This machine's Atelier engine (``$ATELIER_DOCKER_HOST`` names another one)."""
    other = os.environ.get("ATELIER_DOCKER_HOST", "")
    if other.startswith("unix://"):
        return Engine(Path(other.removeprefix("unix://")))
    return Engine(docker_socket())


def docker_host() -> str:
    return engine().host


@dataclass(frozen=True)
class SessionMode:
    """Which spawner runs, and why (the banner's line)."""

    name: str  # "container" or "process"
    reason: str

    @property
    def banner(self) -> str:
        if self.name == "container":
            return (f"containers from {image_ref('base')} (one per server, non-root, only the user's home "
                    "mounted, profile-sized cgroups)")
        return (f"single-user: sessions are local processes of this OS user, so only you may log in "
                f"({self.reason})")


def session_mode(*, start: bool = False) -> SessionMode:
    """``container`` where the engine answers (started first when ``start``) and the base
    image is built; otherwise ``process``, with the reason. ``$ATELIER_SESSIONS=process``
    forces the single-user mode."""
    if os.environ.get("ATELIER_SESSIONS") == "process":
        return SessionMode("process", "ATELIER_SESSIONS=process")
    e = engine()
    if start and not e.running():
        try:
            e.start()
        except RuntimeError as exc:
            return SessionMode("process", str(exc))
    if not e.running():
        return SessionMode("process", f"no Docker engine answers on {e.socket}")
    if not e.has_image(image_ref("base")):
        return SessionMode("process", f"the image {image_ref('base')} is not built; run `make images`")
    return SessionMode("container", "")


def main() -> None:
    """``python -m atelier_hub.embedded.engine``: start the engine if needed and say so."""
    try:
        print(engine().start())
    except RuntimeError as exc:
        raise SystemExit(f"atelier: {exc}") from None


if __name__ == "__main__":
    main()
