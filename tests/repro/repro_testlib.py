"""Helpers for the repro tests: plain functions and constants (fixtures: conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

PYTHON = sys.executable
BIN = Path(sys.executable).parent
_CACHE = Path(os.environ.get("ATELIER_CACHE", Path.home() / ".cache" / "atelier"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(uri: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def start_mlflow_server(root: Path, *, timeout: float = 180) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``mlflow server`` (sqlite backend, proxied artifacts under ``root``) in its own
    process group; returns the process and its URI once ``/health`` answers."""
    port = free_port()
    log = root / "server.log"
    mlflow_bin = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    wait_healthy(uri, proc, log, timeout=timeout)
    return proc, uri


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """End ``proc``'s whole group: MLflow's uvicorn child would otherwise keep the port."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: no inherited MLflow, rank or repro settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "REPRO_", "ATELIER_", "JUPYTERHUB_", "GIT_"))
        and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK",
                      "SLURM_PROCID", "PYTHONDONTWRITEBYTECODE", "JPY_SESSION_NAME")
    }
    env["PYTHONPYCACHEPREFIX"] = str(_CACHE / "pycache-repro-tests")
    env["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
    env.update(extra)
    return env


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=child_env()
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


#: The script most tests run: logs a param and metrics, prints its run id and OUTPUT,
#: a value computed from the code (so a re-run shows which code ran).
TRAIN = textwrap.dedent(
    """
    import os, sys, time
    import mlflow, repro
    import model

    lr = sys.argv[sys.argv.index("--lr") + 1] if "--lr" in sys.argv else "none"
    with repro.start_run(os.environ.get("TEST_EXPERIMENT"), run_name="t") as run:
        mlflow.log_param("lr", lr)
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        print("RUN_ID", run.info.run_id if run else None, flush=True)
        print("OUTPUT", model.value(), flush=True)
        if os.environ.get("TEST_HANG"):
            print("LOGGED", flush=True)
            time.sleep(120)
    """
)
MODEL = "def value():\n    return 41\n"


def make_repo(path: Path, *, commit: bool = True, remote: str | None = None) -> Path:
    """A git repository holding train.py and model.py (committed unless ``commit=False``)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.py").write_text(TRAIN)
    (path / "model.py").write_text(MODEL)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@example.com")
    if remote:
        git(path, "remote", "add", "origin", remote)
    if commit:
        git(path, "add", "train.py", "model.py")
        git(path, "commit", "-q", "-m", "initial")
    return path


def run_py(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 90
           ) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` as a real subprocess and return it (output captured)."""
    return subprocess.run(
        [PYTHON, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``proc``, once it is known to have exited 0 (else its output in the failure)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    """What a test script printed after ``OUTPUT ``."""
    return next(line.split(" ", 1)[1] for line in proc.stdout.splitlines()
                if line.startswith("OUTPUT "))


def run_id_of(proc: subprocess.CompletedProcess[str]) -> str:
    for line in proc.stdout.splitlines():
        if line.startswith("RUN_ID "):
            return line.split()[1]
    raise AssertionError(f"no RUN_ID in output:\n{proc.stdout}\n{proc.stderr}")


def repro_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
              ) -> subprocess.CompletedProcess[str]:
    """Run the installed ``repro`` console script."""
    exe = shutil.which("repro", path=str(BIN)) or "repro"
    return subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


class Forwarder:
    """A TCP port that forwards to the test server while ``up``: lets a test make "the
    server" unreachable and bring it back without restarting MLflow."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.sock: socket.socket | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def down(self) -> None:
        if self.sock is not None:
            # shutdown first: a close alone leaves the port listening while the accept
            # thread still holds the socket (Linux).
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _files_of(local: Path, prefix: str) -> dict[str, bytes]:
    """The files in a downloaded artifact folder (``prefix`` + relative path -> content),
    with ``repro/record.json``'s files unpacked beside it as ``repro/NAME``."""
    from repro import _record

    out = {}
    for path in local.rglob("*"):
        if not path.is_file():
            continue
        rel = prefix + path.relative_to(local).as_posix()
        out[rel] = path.read_bytes()
        if rel == f"{_record.ARTIFACT_DIR}/{_record.BUNDLE}":
            out.update({f"{_record.ARTIFACT_DIR}/{n}": c for n, c in _record.unpack(out[rel]).items()})
    return out


def recorded_files(client, run_id: str, dst: Path) -> dict[str, bytes]:
    """The files repro recorded for a run (``repro/NAME`` -> content), read with MLflow's own
    client: artifacts of their own as they are, ``repro/record.json``'s files unpacked."""
    dst.mkdir(parents=True, exist_ok=True)
    if not client.list_artifacts(run_id, "repro"):
        return {}
    files = _files_of(Path(client.download_artifacts(run_id, "repro", str(dst))), "repro/")
    files.pop("repro/record.json", None)
    return files


def all_text_of_run(client, run_id: str, dst: Path) -> str:
    """Every tag, param and downloaded artifact of a run (the files inside repro/record.json
    too), as one string to search."""
    run = client.get_run(run_id)
    parts = [f"{k}={v}" for k, v in run.data.tags.items()]
    parts += [f"{k}={v}" for k, v in run.data.params.items()]
    local = Path(client.download_artifacts(run_id, "", str(dst)))
    parts += [c.decode("utf-8", "replace") for c in _files_of(local, "").values()]
    return "\n".join(parts)
