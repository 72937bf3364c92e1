"""Jobs: a command run once in a session-sized container, with its output and exit code kept.

Rule this module keeps: a job is a named server of its user, ``job-NAME``, started
through the hub like any other server, so it gets what a session gets from the same
builders (the profile's limits, the image, the home, the services' settings, the
user's own hub token and S3 keys, the GPU pool, usage records, re-adoption after a hub
restart); only its container's command differs (:data:`RUNNER`, in place of
jupyterhub-singleuser). What outlives the server is written twice, by two parties:
the runner inside writes the output and the exit code on the user's home
(:data:`JOB_DIR`), and the jobs service writes the submission (profile, command, when,
cancelled) in the deployment's jobs folder. This module holds what both sides share,
pure but for :func:`read_home_file` and the record files.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .input_limits import USER_OPTIONS_MAX, stored_size

__all__ = ["JOB_DIR", "JOB_PREFIX", "JobError", "JobRecord", "RUNNER", "TEE_ENV", "check_submission", "is_job",
           "job_runs", "job_server", "kept_output", "read_home_file"]

#: a job's server name is this plus the job's name
JOB_PREFIX = "job-"
#: where a job's runner writes, relative to the home: NAME/output.log, NAME/exit-code, and
#: NAME/runs.jsonl, where repro.start_run() lists the job's MLflow runs (REPRO_RUNS_FILE)
JOB_DIR = ".atelier/jobs"
#: set in a job's container where its home is not the hub's to read (a pod on a cluster):
#: the runner copies the output to its stdout too, the pod's log (:data:`RUNNER`)
TEE_ENV = "ATELIER_JOB_TEE"
#: the MLflow runs of one job that its page links, at most (the first ones)
RUNS_SHOWN = 20
#: the runner's source, run by the image's Python (stdlib only: the image has no atelier_hub)
RUNNER = Path(__file__).with_name("_job_runner.py")

#: the longest --timeout a job may ask for (a profile's max_age still ends it sooner)
TIMEOUT_MAX = 30 * 86400

# A DNS label less the prefix: it is also part of the container's and the server's name.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
# MLflow's run and experiment ids (hex, or digits for experiments); anything else is not linked.
_MLFLOW_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class JobError(ValueError):
    """A submission the user can fix: ``field`` names what is wrong; the message says how."""

    def __init__(self, field: str, message: str, *, status: int = 400):
        super().__init__(message)
        self.field = field
        self.status = status


def job_server(name: str) -> str:
    """The server name of job ``name``.

    >>> job_server("train")
    'job-train'
    """
    return JOB_PREFIX + name


def is_job(server_name: str | None, user_options: dict | None = None) -> bool:
    """Whether a server is a job (its options carry ``job``; or, options unknown, its name).

    >>> is_job("job-train", {"profile": "cpu-small", "job": {"command": ["true"]}}), is_job("lab", {})
    (True, False)
    """
    if user_options:
        return isinstance(user_options.get("job"), dict)
    return bool(server_name) and server_name.startswith(JOB_PREFIX)


def default_name(command: list[str], *, now: float | None = None) -> str:
    """A name from the command's program and the time (UTC), e.g. ``python-0612-143001``.

    >>> default_name(["/usr/bin/python3", "x.py"], now=0)
    'python3-0101-000000'
    """
    prog = re.sub(r"[^a-z0-9-]+", "-", Path(command[0]).name.lower()).strip("-")[:20] or "job"
    return f"{prog}-{time.strftime('%m%d-%H%M%S', time.gmtime(now))}"


def check_submission(body, *, profile_names: list[str], taken: set[str]) -> dict:
    """The job a POST asks for, as ``{"name", "profile", "command", "cwd"}`` (and
    ``"timeout"``, seconds, where one is asked for): each field
    checked, with a :class:`JobError` naming the field and the fix. The profile is
    checked against the user's groups by the spawner (this knows only the names).

    >>> check_submission({"profile": "cpu-small", "command": ["python", "t.py"]}, profile_names=["cpu-small"],
    ...                  taken=set())["profile"]
    'cpu-small'
    >>> check_submission({"command": []}, profile_names=["cpu-small"], taken=set())
    Traceback (most recent call last):
    atelier_hub.jobs.JobError: give the command to run after --, e.g. atelier run -- python train.py
    """
    if not isinstance(body, dict):
        raise JobError("body", 'send a JSON object, e.g. {"profile": "cpu-small", "command": ["python", "t.py"]}')
    notebook, parameters = body.get("notebook"), body.get("parameters") or {}
    if notebook is not None:
        if not isinstance(notebook, str) or not notebook.endswith(".ipynb") or notebook.startswith("/") \
                or ".." in Path(notebook).parts or "\0" in notebook:
            raise JobError("notebook", f"{str(notebook)[:80]!r} is not a notebook of your home: give its path "
                           "relative to --cwd, ending in .ipynb (atelier run analysis.ipynb)")
        if not isinstance(parameters, dict) or not all(
                isinstance(k, str) and k.isidentifier() and isinstance(v, (str, int, float, bool)) or v is None
                for k, v in parameters.items()):
            raise JobError("parameters", "parameters are NAME=VALUE with NAME a Python identifier "
                           "(atelier run nb.ipynb -p lr=0.1 -p note=text)")
        body = {**body, "command": ["notebook", notebook,
                                    *(f"-p{k}={json.dumps(v)}" for k, v in parameters.items())]}
    elif parameters:
        raise JobError("parameters", "-p goes with a notebook: atelier run analysis.ipynb -p lr=0.1")
    command = body.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command) \
            or not command[0]:
        raise JobError("command", "give the command to run after --, e.g. atelier run -- python train.py")
    if any("\0" in a for a in command):
        raise JobError("command", "an argument holds a NUL byte; pass text arguments")
    profile = body.get("profile")
    if profile not in (None, "") and profile not in profile_names:
        raise JobError("profile", f"unknown profile {str(profile)[:63]!r}; choose one of: {', '.join(profile_names)} "
                       "(atelier run --profile NAME)")
    name = body.get("name") or default_name([Path(notebook).stem] if notebook else command)
    if not isinstance(name, str) or not _NAME.match(name):
        raise JobError("name", f"{str(name)[:60]!r} is not a job name: use 1 to 40 lowercase letters, digits and "
                       "dashes, starting and ending with a letter or digit (atelier run --name train-1)")
    if name in taken:
        raise JobError("name", f"you already have a job named {name!r}: choose another --name "
                       f"(or see it with `atelier logs {name}`)", status=409)
    cwd = body.get("cwd") or ""
    if not isinstance(cwd, str) or cwd.startswith("/") or ".." in Path(cwd).parts or "\0" in cwd:
        raise JobError("cwd", f"{str(cwd)[:80]!r} is not a folder of your home: give a relative path such as "
                       "--cwd projects/train")
    timeout = body.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or not 0 < timeout <= TIMEOUT_MAX):
        raise JobError("timeout", f"{str(timeout)[:40]!r} is not a timeout: give whole seconds from 1 to "
                       f"{TIMEOUT_MAX} (atelier run --timeout 2h)")
    job = {"name": name, "profile": profile or None, "command": command, "cwd": cwd}
    if timeout is not None:
        job["timeout"] = timeout
    if notebook is not None:
        job.update(notebook=notebook, parameters=parameters)
    size = stored_size({"profile": profile, "job": job})
    if size > USER_OPTIONS_MAX:
        raise JobError("command", f"the command takes {size} bytes; jobs take up to {USER_OPTIONS_MAX} bytes of "
                       "command line: put the long part in a script or a file on your home", status=413)
    return job


@dataclass
class JobRecord:
    """What the jobs service keeps of a submission (``JOBS/USER/NAME.json``)."""

    name: str
    user: str
    profile: str
    command: list[str]
    cwd: str = ""
    submitted: float = field(default_factory=time.time)
    #: set once the job is over: its exit code (None: none was written) and when
    ended: float | None = None
    exit_code: int | None = None
    cancelled: bool = False
    #: why it failed without an exit code of its command
    error: str = ""

    @staticmethod
    def path(folder: str | Path, user: str, name: str) -> Path:
        return Path(folder) / user / f"{name}.json"

    @classmethod
    def load(cls, file: Path) -> JobRecord:
        data = json.loads(file.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def all(cls, folder: str | Path, user: str | None = None) -> list[JobRecord]:
        root = Path(folder)
        users = [root / user] if user else sorted(p for p in root.glob("*") if p.is_dir())
        found = []
        for d in users:
            for f in sorted(d.glob("*.json")):
                try:
                    found.append(cls.load(f))
                except (OSError, ValueError, TypeError):
                    continue
        return sorted(found, key=lambda r: r.submitted)

    def save(self, folder: str | Path) -> None:
        path = self.path(folder, self.user, self.name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @property
    def over(self) -> bool:
        return self.ended is not None

    @staticmethod
    def newest_first(recs: list[JobRecord]) -> list[JobRecord]:
        """Running jobs first, then those that ended; each newest first (the pages' order)."""
        return sorted(recs, key=lambda r: (r.over, -r.submitted))

    def state(self, *, server: dict | None) -> str:
        """``cancelled``, ``succeeded``, ``failed``; else from the hub's ``server`` model:
        ``starting``, or ``running`` (also once its server is gone, until the jobs service
        has recorded how it ended: :meth:`over` then says so)."""
        if self.cancelled:
            return "cancelled"
        if self.over:
            return "succeeded" if self.exit_code == 0 else "failed"
        if server and server.get("pending") and not server.get("ready"):
            return "starting"
        return "running"


def kept_output(folder: str | Path, user: str, name: str) -> tuple[Path, Path, Path]:
    """Where the hub keeps a cluster job's output, exit code and the MLflow runs it listed
    once its pod is gone (beside the jobs service's record, on the hub's volume):
    ``JOBS/USER/NAME.log``, ``NAME.exit-code`` and ``NAME.runs.jsonl``.

    >>> [p.name for p in kept_output("/srv/jobs", "ada", "train")]
    ['train.log', 'train.exit-code', 'train.runs.jsonl']
    """
    folder = Path(folder) / user
    return folder / f"{name}.log", folder / f"{name}.exit-code", folder / f"{name}.runs.jsonl"


def read_home_file(home: str | Path, rel: str, *, offset: int = 0, limit: int = 1 << 20) -> bytes | None:
    """Bytes ``offset:offset+limit`` of the file ``home/rel``, or None when there is none.

    The home is the user's to write: no component of ``rel`` may be a symbolic link
    (each is opened with O_NOFOLLOW below the home's own descriptor), so a job's log
    cannot point the hub at a file of someone else's.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds = []
    try:
        fd = os.open(home, flags | os.O_DIRECTORY)
        fds.append(fd)
        parts = Path(rel).parts
        for part in parts[:-1]:
            fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            fds.append(fd)
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        fds.append(fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.lseek(fd, offset, os.SEEK_SET)
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        for fd in reversed(fds):
            os.close(fd)


def job_runs(raw: bytes | None) -> list[dict]:
    """The MLflow runs a job's ``runs.jsonl`` lists (``repro.start_run()`` appends a line per
    run): ``run_id``, ``experiment_id`` and ``spooled``, each once, at most
    :data:`RUNS_SHOWN`. The file is the user's to write: a line that is not such a record
    is skipped, and only ids of MLflow's alphabet are kept, so a link built from them
    cannot leave MLflow's UI.

    >>> job_runs(b'{"run_id": "ab12", "experiment_id": "3", "spooled": false}\\nnot json\\n'
    ...          b'{"run_id": "../x", "experiment_id": "3"}\\n{"run_id": "ab12", "experiment_id": "3"}\\n')
    [{'run_id': 'ab12', 'experiment_id': '3', 'spooled': False}]
    >>> job_runs(None)
    []
    """
    runs, seen = [], set()
    for line in (raw or b"").decode(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        run, exp = rec.get("run_id"), rec.get("experiment_id")
        if not (isinstance(run, str) and isinstance(exp, str) and _MLFLOW_ID.match(run) and _MLFLOW_ID.match(exp)):
            continue
        if run in seen:
            continue
        seen.add(run)
        runs.append({"run_id": run, "experiment_id": exp, "spooled": rec.get("spooled") is True})
        if len(runs) == RUNS_SHOWN:
            break
    return runs
