"""Jobs from a notebook or a script in a session: ``atelier_lab.run(...)``.

Rule this module keeps: it asks the hub's jobs service (``ATELIER_JOBS_URL``, with the
session's own hub token) through the same REST API as ``atelier run``, so a job started
here is the same job (same profile check, same records, seen by ``atelier jobs`` and on
the home page); it runs nothing itself. Standard library only; a refusal is the
service's own message, which names the field and the fix.

    from atelier_lab import run
    job = run(["python", "train.py", "--lr", "0.1"], profile="cpu-large")
    job.wait()            # the exit code, once it ended
    print(job.log())      # its output, whole
    run(notebook="analysis.ipynb", parameters={"lr": 0.1}, profile="cpu-small")
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Job", "JobUnavailable", "run"]

#: states after which a job changes no more
ENDED = ("succeeded", "failed", "cancelled")


class JobUnavailable(RuntimeError):
    """The jobs service refused or could not be reached; the message says why and what to do."""


def _request(method: str, path: str, *, env: Mapping[str, str], body: dict | None = None,
             timeout: float = 60) -> tuple[bytes, dict[str, str]]:
    from ._service import base_url, call

    base, token = base_url(env, "ATELIER_JOBS_URL")
    if not base or not token:
        raise JobUnavailable("this session has no jobs service (ATELIER_JOBS_URL is not set): jobs need an "
                             "embedded hub with container sessions; from a laptop, `atelier run` after `atelier login`")
    return call(method, f"{base}/api/jobs{path}", token=token, error=JobUnavailable, what="jobs service", body=body,
                timeout=timeout)


class Job:
    """One job of this user, as the jobs service reports it."""

    def __init__(self, model: dict, *, env: Mapping[str, str] = os.environ):
        self._model, self._env = model, env

    @property
    def name(self) -> str:
        return self._model["name"]

    @property
    def profile(self) -> str:
        return self._model["profile"]

    def status(self) -> dict:
        """The job as the service sees it now: state, started, ended, duration, exit code."""
        from urllib.parse import quote

        body, _ = _request("GET", f"/{quote(self.name, safe='')}", env=self._env)
        self._model = json.loads(body)
        return dict(self._model)

    @property
    def state(self) -> str:
        return self.status()["state"]

    def _output(self, offset: int) -> tuple[bytes, int, dict[str, str]]:
        """Its output from byte ``offset``: the bytes, the next offset, the answer's headers."""
        from urllib.parse import quote

        data, headers = _request("GET", f"/{quote(self.name, safe='')}/log?offset={offset}", env=self._env)
        return data, int(headers.get("x-atelier-job-offset", offset + len(data))), headers

    def log(self) -> str:
        """Its output so far (or whole, once it ended), as ``atelier logs NAME`` prints it."""
        chunks, offset = [], 0
        while True:
            data, offset, _ = self._output(offset)
            if not data:
                return b"".join(chunks).decode(errors="replace")
            chunks.append(data)

    def wait(self, timeout: float | None = None, *, every: float = 2) -> int | None:
        """Block until the job ends; its exit code (None if it never wrote one: cancelled,
        or its container died). Raises TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (model := self.status())["state"] not in ENDED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.name} still {model['state']} after {timeout:.0f} s; "
                                   "it goes on: job.wait() again, or job.cancel()")
            time.sleep(every)
        return model["exit_code"]

    def follow(self, out=None, *, every: float = 1) -> int | None:
        """Write the job's output to ``out`` (a binary stream; default: this process's
        stdout) as it comes, from its start until it ends, as ``atelier logs NAME -f``
        does; then its exit code (None if it never wrote one)."""
        import sys

        out = out or sys.stdout.buffer
        offset = 0
        while True:
            data, offset, headers = self._output(offset)
            out.write(data)
            out.flush()
            if not data:
                if headers.get("x-atelier-job-state") in ENDED:
                    code = headers.get("x-atelier-job-exit-code", "")
                    return int(code) if code else None
                time.sleep(every)

    def cancel(self) -> dict:
        from urllib.parse import quote

        body, _ = _request("DELETE", f"/{quote(self.name, safe='')}", env=self._env)
        self._model = json.loads(body)
        return dict(self._model)

    def __repr__(self) -> str:
        m = self._model
        return f"Job({m['name']!r}, profile={m['profile']!r}, state={m['state']!r}, exit_code={m.get('exit_code')})"


def run(command: Sequence[str] | str | None = None, *, notebook: str | None = None,
        parameters: Mapping[str, object] | None = None, profile: str | None = None, name: str | None = None,
        cwd: str | None = None, timeout: int | None = None, env: Mapping[str, str] = os.environ) -> Job:
    """Run ``command`` (a list of arguments, or one string split as a shell would) or a
    ``notebook`` of the home (executed with ``parameters``; saved beside it as
    ``NAME.out.ipynb``) as a job on ``profile`` (default: this session's), in ``cwd``
    (a folder of the home; default: this process's working folder where it is in the
    home). Returns at once with the :class:`Job`; ``job.wait()`` blocks until it ends."""
    import shlex

    if (command is None) == (notebook is None):
        raise JobUnavailable("give a command (run(['python', 'train.py'])) or a notebook "
                             "(run(notebook='analysis.ipynb')), not both")
    body: dict = {"profile": profile or env.get("ATELIER_PROFILE") or None, "name": name, "timeout": timeout}
    if notebook is not None:
        body.update(notebook=notebook, parameters=dict(parameters or {}))
    else:
        body["command"] = shlex.split(command) if isinstance(command, str) else list(command)
    if cwd is None:
        here, home = Path.cwd(), Path(env.get("HOME") or Path.home())
        cwd = here.relative_to(home).as_posix() if here.is_relative_to(home) and here != home else ""
    body["cwd"] = cwd
    data, _ = _request("POST", "", env=env, body={k: v for k, v in body.items() if v is not None})
    return Job(json.loads(data), env=env)
