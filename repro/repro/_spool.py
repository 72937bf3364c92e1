"""The local spool: where runs are written while the tracking server cannot be reached.

The rule this module keeps: every logged item is on disk before the logging call
returns, in a form that survives the process being killed at any instant. A spooled run
is a folder ``<spool>/runs/<run_id>/`` holding

- ``events.jsonl``: one JSON object per line, appended with a single ``write`` on an
  ``O_APPEND`` descriptor (create, metrics/params/tags, deleted tags, status, inputs);
  a torn last line (power loss) is ignored when reading;
- ``artifacts/``: files logged as artifacts, written there directly;
- ``synced.json``: written (atomically) once ``repro sync`` has uploaded the run.

MLflow talks to the spool through a tracking store registered for the ``repro-spool``
URI scheme (entry point group ``mlflow.tracking_store``), so ``mlflow.log_metric``,
``mlflow.log_artifact`` and the rest work unchanged while a run is spooled. This module
only holds the file format and paths (standard library only, as light as ``import repro``
must be); the store itself lives in ``_spool_store``, and the entry point MLflow loads
in ``_spool_plugin``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

SCHEME = "repro-spool"


def spool_root() -> Path:
    """``$REPRO_SPOOL_DIR``, else ``$XDG_CACHE_HOME/repro/spool`` (``~/.cache/repro/spool``)."""
    explicit = os.environ.get("REPRO_SPOOL_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache, "repro", "spool").absolute()


def make_uri(root: Path, target: str) -> str:
    """Tracking URI of the spool at ``root`` for runs meant for ``target``.

    >>> make_uri(Path("/s"), "http://h:5000")
    'repro-spool:///s?target=http%3A%2F%2Fh%3A5000'
    """
    return f"{SCHEME}://{quote(str(root))}?target={quote(target, safe='')}"


def parse_uri(uri: str) -> tuple[Path, str]:
    """(spool root, target tracking URI) from a spool URI; see :func:`make_uri`.

    >>> parse_uri("repro-spool:///s?target=http%3A%2F%2Fh%3A5000")
    (PosixPath('/s'), 'http://h:5000')
    """
    parts = urlsplit(uri)
    target = parse_qs(parts.query).get("target", [""])[0]
    return Path(unquote(parts.path) if parts.path else spool_root()), target


def is_spool_uri(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(SCHEME + ":")


def now_ms() -> int:
    return int(time.time() * 1000)


def _process_start(pid: int) -> str | None:
    """Start time of a process (field 22 of /proc/PID/stat), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def process_identity() -> dict[str, Any]:
    """What :func:`writer_alive` needs to know later whether this process still runs."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "proc_start": _process_start(pid)}


def try_lock(path: Path) -> int | None:
    """An exclusive ``flock`` on ``path`` (created if missing), or None if another open
    file (another process, or another ``repro sync`` in this one) holds it. ``flock``
    locks follow the open file, so two threads exclude each other too, and Linux's NFS
    client maps them to NFS locks, so two hosts sharing a home do as well."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def lock_held(path: Path) -> bool | None:
    """Whether someone holds the ``flock`` of ``path``; None when it cannot be told (no
    such file, locks unsupported)."""
    import errno
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
    finally:
        os.close(fd)
    return False


#: A writer on another host that holds no lock is taken for alive while it logged within
#: this many seconds (``REPRO_SPOOL_STALE``).
STALE_SECONDS = 3600.0


def writer_alive(pid: int | None, host: str | None, proc_start: str | None) -> bool:
    """Whether the process that wrote a spooled run is still running on this host."""
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    current = _process_start(pid)
    return proc_start is None or current is None or current == proc_start


def append_event(path: Path, event: dict[str, Any]) -> None:
    """Append one event as one line with one ``write`` call (atomic for our sizes)."""
    event.setdefault("time", now_ms())
    line = (json.dumps(event, separators=(",", ":"), default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete events of an events file; a torn or garbled line is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    events = []
    for line in data.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


@dataclass
class SpooledRun:
    """A spooled run rebuilt from its events (see the module docstring)."""

    run_id: str
    directory: Path
    experiment_id: str = "0"
    experiment_name: str | None = None
    user_id: str = "unknown"
    run_name: str | None = None
    start_time: int = 0
    end_time: int | None = None
    status: str = "RUNNING"
    lifecycle_stage: str = "active"
    target: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    #: (key, value, timestamp, step) in logging order.
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    model_outputs: list[tuple[str, int]] = field(default_factory=list)
    writer: dict[str, Any] = field(default_factory=dict)
    last_time: int = 0
    #: A run of the tracking server resumed while it was unreachable: sync adds to it.
    resumes: bool = False

    @property
    def artifact_dir(self) -> Path:
        return self.directory / "artifacts"

    @property
    def synced_file(self) -> Path:
        return self.directory / "synced.json"

    def apply(self, event: dict[str, Any]) -> None:
        """Update this run with one event."""
        op = event.get("op")
        self.last_time = max(self.last_time, int(event.get("time", 0) or 0))
        if op == "create":
            self.experiment_id = str(event.get("experiment_id", "0"))
            self.experiment_name = event.get("experiment_name")
            self.user_id = event.get("user_id") or "unknown"
            self.run_name = event.get("run_name")
            self.start_time = int(event.get("start_time") or event.get("time") or 0)
            self.target = event.get("target", "")
            self.tags.update(event.get("tags") or {})
            self.writer = event.get("writer") or {}
            self.resumes = bool(event.get("resumes"))
        elif op == "log":
            self.metrics.extend(
                (str(k), float(v), int(ts), int(step))
                for k, v, ts, step in event.get("metrics", [])
            )
            self.params.update({str(k): str(v) for k, v in event.get("params", [])})
            self.tags.update({str(k): str(v) for k, v in event.get("tags", [])})
        elif op == "delete_tag":
            self.tags.pop(event.get("key", ""), None)
        elif op == "update":
            if event.get("status"):
                self.status = event["status"]
            if event.get("end_time") is not None:
                self.end_time = int(event["end_time"])
            if event.get("run_name"):
                self.run_name = event["run_name"]
                self.tags["mlflow.runName"] = event["run_name"]
        elif op == "lifecycle":
            self.lifecycle_stage = event.get("stage", self.lifecycle_stage)
        elif op == "inputs":
            self.datasets.extend(event.get("datasets", []))
        elif op == "outputs":
            self.model_outputs.extend((str(m), int(s)) for m, s in event.get("models", []))

    def latest_metrics(self) -> dict[str, tuple[float, int, int]]:
        """{key: (value, timestamp, step)} with MLflow's rule: highest step, then time."""
        latest: dict[str, tuple[float, int, int]] = {}
        for key, value, ts, step in self.metrics:
            cur = latest.get(key)
            if cur is None or (step, ts) >= (cur[2], cur[1]):
                latest[key] = (value, ts, step)
        return latest

    def writer_alive(self) -> bool:
        """Whether the writer may still be logging to this run: it holds the run's writer
        lock (also seen from another host on a shared home), or, without a lock to ask,
        its process runs on this host, or, on another host, it logged recently."""
        w = self.writer
        held = lock_held(self.directory / "writer.lock") if w.get("lock") else None
        if held is not None:
            return held
        if w.get("host") and w.get("host") != socket.gethostname():
            try:
                stale = float(os.environ.get("REPRO_SPOOL_STALE", STALE_SECONDS))
            except ValueError:
                stale = STALE_SECONDS
            return now_ms() - self.last_time < stale * 1000
        return writer_alive(w.get("pid"), w.get("host"), w.get("proc_start"))


def runs_dir(root: Path) -> Path:
    return root / "runs"


def load_run(directory: Path) -> SpooledRun | None:
    """Rebuild a spooled run from its folder, or None if it has no create event."""
    events = read_events(directory / "events.jsonl")
    if not events or events[0].get("op") != "create":
        return None
    run = SpooledRun(run_id=directory.name, directory=directory)
    for event in events:
        run.apply(event)
    return run


def list_runs(root: Path) -> list[SpooledRun]:
    """Every spooled run under ``root``, oldest first (parents before their children)."""
    base = runs_dir(root)
    try:
        dirs = [d for d in base.iterdir() if d.is_dir()]
    except FileNotFoundError:
        return []
    runs = [r for r in (load_run(d) for d in dirs) if r is not None]
    runs.sort(key=lambda r: (r.start_time, r.run_id))
    return runs


def find_run(run_id: str, root: Path | None = None) -> SpooledRun | None:
    """The spooled run with this id, if this machine's spool has it."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        return None
    directory = runs_dir(root or spool_root()) / run_id
    return load_run(directory) if directory.is_dir() else None


def read_synced(run: SpooledRun) -> dict[str, Any] | None:
    """The ``synced.json`` record of a spooled run, if it has been uploaded."""
    try:
        return json.loads(run.synced_file.read_text())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def experiments_file(root: Path) -> Path:
    return root / "experiments.jsonl"
