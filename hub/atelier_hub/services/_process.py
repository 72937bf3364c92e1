"""Processes of the managed services: their own group, death with their parent, and an
end that never hits a stranger.

Rule this module keeps: every process a service starts leads its own process group,
recorded as ``PGID STARTTIME`` in a file of the state folder; a recorded group is
ended only while its leader is still the very process that was recorded (same start
time in ``/proc``), so a pid reused by an unrelated program is left alone. A
supervisor restarts its child when it dies (with back-off, so a failing child never
becomes a tight crash loop), and ends it and itself when its own parent goes away,
even by SIGKILL: nothing it started outlives it holding a port. The port and health
probes every service and test uses live here too. Standard library only.
ref: ../shared/RECIPES.md (MLflow orphans its uvicorn child on SIGKILL; the hub
restarts a managed service that exits, checking about every 30 s)

As a program, for services that are one plain command (the S3 server)::

    python -m atelier_hub.services._process --name s3 --record DIR/s3.pgid -- CMD ARGS...
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "start_time", "group_alive", "end_group", "record", "end_recorded", "pid_matches",
    "port_free", "free_port", "http_status", "wait_for", "tail", "Supervisor", "main",
    "PARENT_PID_VAR", "die_with_parent", "ReadyWatch", "supervise_until_ready",
]

# The hub names its own pid in every service's environment: a service process checks
# it first thing (:func:`die_with_parent`), because by then it may already be an orphan.
PARENT_PID_VAR = "ATELIER_PARENT_PID"

# A child that dies sooner than this after its start counts as a failed start: the
# next one waits twice as long (up to BACKOFF_MAX), so a broken service cannot spin.
HEALTHY_AFTER = 30.0
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0


# -- /proc ---------------------------------------------------------------------------------


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat),
    None when there is no such process.

    >>> start_time(os.getpid()) == start_time(os.getpid()) is not None
    True
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in group ``pgid``. A zombie still counts
    for ``killpg(pgid, 0)`` until its parent reaps it, which may be never where PID 1
    does not reap, so /proc is read instead."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and fields[2] == str(pgid):  # state, ppid, pgrp
            return True
    return False


def end_group(pgid: int, *, grace: float = 10, leader: subprocess.Popen | None = None,
              hard: bool = False) -> None:
    """SIGTERM the group, then SIGKILL what is left after ``grace`` seconds; with
    ``hard``, SIGKILL at once (a process whose own SIGTERM handling must not run).

    ``leader``: our own child leading the group, reaped here as soon as it exits."""
    steps = ((signal.SIGKILL, 5),) if hard else ((signal.SIGTERM, grace), (signal.SIGKILL, 5))
    for sig, wait in steps:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if leader is not None:
                leader.poll()
            if not group_alive(pgid):
                return
            time.sleep(0.1)


def record(path: Path, pid: int) -> None:
    """Write ``PID STARTTIME`` for a group leader we started (atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{pid} {start_time(pid)}\n")
    tmp.replace(path)


def pid_matches(path: Path) -> int | None:
    """The pid recorded in ``path`` if that process still runs with the recorded start
    time (so it is the process we started, not a reuse of its pid), else None."""
    try:
        pid_text, started = path.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if start_time(pid) == started else None


def end_recorded(path: Path, *, grace: float = 10, what: str = "", hard: bool = False) -> bool:
    """End the group recorded in ``path`` (a predecessor's) if its leader is still the
    recorded process; remove the record. True if something was ended. ``hard``: see
    :func:`end_group`."""
    pid = pid_matches(path)
    ended = False
    if pid is not None:
        print(f"ending a previous {what or path.stem} (process group {pid})", flush=True)
        end_group(pid, grace=grace, hard=hard)
        ended = True
    path.unlink(missing_ok=True)
    return ended


def die_with_parent() -> None:
    """The first step of every process the hub starts as a service: SIGTERM when the hub
    dies (PR_SET_PDEATHSIG), and exit at once when it is already gone.

    PDEATHSIG only covers a parent that dies after it is set. A hub stopped while a
    service was still importing (a start cut short by ``atelier dev --timeout``) left it
    reparented to init, and its Supervisor then took init for its parent and ran on
    for good. So the hub's pid comes from the environment (``ATELIER_PARENT_PID``, set by
    :func:`atelier_hub.config.update_services`) and is compared after PDEATHSIG is set:
    no window is left. The variable is removed, so this process's own children do not
    take the hub for their parent. Without it (run by hand) the parent now counts."""
    parent = int(os.environ.pop(PARENT_PID_VAR, "0") or 0) or os.getppid()
    _die_with_parent()
    if os.getppid() != parent:
        print(f"the process that started this one (pid {parent}) is gone: not starting", flush=True)
        sys.exit(0)


def _die_with_parent() -> None:
    """preexec: the child gets SIGTERM when the supervisor dies, even by SIGKILL (Linux).
    Safe here: supervisors start children from their main thread only."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# -- ports and health ------------------------------------------------------------------------


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host``; a port in TIME_WAIT after a restart
    counts as free (the servers themselves set SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int | None = None, *, avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """``preferred`` if it is free on 127.0.0.1 (and not in ``avoid``), else any free port.

    >>> port = free_port()
    >>> port_free(port) and free_port(port) == port
    True
    """
    if preferred and preferred not in avoid and port_free(preferred):
        return preferred
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port
    raise OSError("no free port on 127.0.0.1")


def http_status(url: str, *, timeout: float = 3, headers: dict[str, str] | None = None) -> int:
    """The HTTP status ``url`` answers with, 0 when nothing answers. Never through a
    proxy from the environment: every service here is on loopback."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


def wait_for(check: Callable[[], bool], *, timeout: float, interval: float = 0.3,
              what: str = "the condition") -> float:
    """Poll ``check`` until it is true; return the seconds it took. TimeoutError names ``what``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not true after {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - t0


def tail(path: Path, n: int = 30) -> str:
    """The last ``n`` lines of a log, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no {path})"


# -- the supervisor ------------------------------------------------------------------------


class Supervisor:
    """Runs one child command in its own process group and keeps it running.

    - the child's group is recorded in ``record_file``; a predecessor's group found
      there at start (a supervisor killed hard) is ended first;
    - the child gets SIGTERM if the supervisor dies (PR_SET_PDEATHSIG), and the
      supervisor ends the child's whole group when its own parent goes away;
    - a child that exits is started again after a back-off that doubles while it
      keeps failing within HEALTHY_AFTER seconds;
    - :meth:`stop` (SIGTERM/SIGINT by default) ends the group and returns.
    """

    def __init__(self, cmd: list[str], *, name: str, record_file: Path, env: dict | None = None,
                 cwd: str | Path | None = None, log_file: Path | None = None, grace: float = 10,
                 before_start: Callable[[], None] | None = None):
        self.cmd, self.name, self.record_file = cmd, name, Path(record_file)
        self.env, self.cwd, self.log_file, self.grace = env, cwd, log_file, grace
        self.before_start = before_start
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.started_at = 0.0
        self._backoff = BACKOFF_MIN
        self._next_start = 0.0
        self._stopping = False
        self._parent = os.getppid()

    def say(self, msg: str) -> None:
        print(f"{self.name}: {msg}", flush=True)

    def start(self) -> subprocess.Popen:
        end_recorded(self.record_file, grace=self.grace, what=f"{self.name} process")
        if self.before_start:
            self.before_start()
        out = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115 (kept by the child)
        try:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT if out else None,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:
            if out:
                out.close()
        record(self.record_file, self.proc.pid)
        self.starts += 1
        self.started_at = time.monotonic()
        return self.proc

    def parent_gone(self) -> bool:
        return os.getppid() != self._parent

    @property
    def stopping(self) -> bool:
        """Whether it was told to stop (a signal, :meth:`stop`, or its parent gone)."""
        return self._stopping

    def check(self) -> bool:
        """One supervision step: restart a dead child when its back-off has passed.
        False once the supervisor should exit (stopping, or its parent is gone)."""
        if self._stopping:
            return False
        if self.parent_gone():
            self.say("parent process gone: stopping")
            self.stop()
            return False
        if self.proc is None:
            if time.monotonic() >= self._next_start:
                self.start()
            return True
        code = self.proc.poll()
        if code is None:
            if time.monotonic() - self.started_at > HEALTHY_AFTER:
                self._backoff = BACKOFF_MIN
            return True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # what it left in its group goes too
        lived = time.monotonic() - self.started_at
        if lived < HEALTHY_AFTER:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX) if self.starts > 1 else self._backoff
        self.say(f"exited with code {code} after {lived:.0f} s; starting it again in {self._backoff:.0f} s")
        self.record_file.unlink(missing_ok=True)
        self.proc = None
        self._next_start = time.monotonic() + self._backoff
        return True

    def stop(self, *_args) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            end_group(self.proc.pid, grace=self.grace, leader=self.proc)
        elif self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.record_file.unlink(missing_ok=True)

    def handle_signals(self) -> None:
        """SIGTERM/SIGINT only mark the stop; :meth:`run` (or the caller's loop) ends the group."""
        def mark(*_):
            self._stopping = True

        signal.signal(signal.SIGTERM, mark)
        signal.signal(signal.SIGINT, mark)

    def run(self, *, interval: float = 0.5) -> int:
        """Supervise until stopped; returns the exit code for this process."""
        self.handle_signals()
        self.start()
        while self.check():
            time.sleep(interval)
        self.stop()
        return 0



class ReadyWatch:
    """"Supervise until ready", written once: a :class:`Supervisor` stepped by its
    caller's loop (a plain one, :func:`supervise_until_ready`, or an event loop), which
    tells it when the running child still has to be probed and hears when it answered.

    After each :meth:`step`, :attr:`probing` is the child to probe (running, not ready
    yet) or None. :meth:`ready` marks it ready (``on_ready(pid)``); a ready child that
    dies or is replaced by a restart is lost (``on_lost()``), and the next one is probed
    again. :meth:`close` ends the child and reports a ready one lost.
    """

    def __init__(self, sup: Supervisor, *, on_ready: Callable[[int], None] = lambda pid: None,
                 on_lost: Callable[[], None] = lambda: None):
        self.sup, self.on_ready, self.on_lost = sup, on_ready, on_lost
        self.ready_pid: int | None = None
        self.probing: subprocess.Popen | None = None

    def step(self) -> bool:
        """One supervision step; False once the supervisor should exit."""
        self.probing = None
        if not self.sup.check():
            return False
        proc = self.sup.proc
        alive = proc is not None and proc.poll() is None
        if self.ready_pid is not None and (not alive or proc.pid != self.ready_pid):
            self.ready_pid = None
            self.on_lost()
        if alive and proc.pid != self.ready_pid:
            self.probing = proc
        return True

    def ready(self) -> None:
        if self.probing is not None:
            self.ready_pid = self.probing.pid
            self.probing = None
            self.on_ready(self.ready_pid)

    def close(self) -> None:
        if self.ready_pid is not None:
            self.ready_pid = None
            self.on_lost()
        self.sup.stop()


def supervise_until_ready(sup: Supervisor, *, probe: Callable[[subprocess.Popen], bool],
                          on_ready: Callable[[int], None] = lambda pid: None,
                          on_lost: Callable[[], None] = lambda: None, interval: float = 0.3) -> None:
    """Start ``sup``'s child and keep it running until the supervisor stops (a signal,
    :meth:`Supervisor.handle_signals`, or its parent gone); each child that runs is
    probed (``probe(proc)``) until it answers, see :class:`ReadyWatch`."""
    watch = ReadyWatch(sup, on_ready=on_ready, on_lost=on_lost)
    sup.handle_signals()
    sup.start()
    while watch.step():
        if watch.probing is not None and probe(watch.probing):
            watch.ready()
        time.sleep(interval)
    watch.close()

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m atelier_hub.services._process",
                                 description="Run one command supervised (own group, restarted, ends with us).")
    ap.add_argument("--name", required=True, help="the service's name, for messages")
    ap.add_argument("--record", required=True, type=Path, help="file that records the child's process group")
    ap.add_argument("--hub-env", action="store_true",
                    help="pass the hub's JUPYTERHUB_* variables on (a child that calls the hub's API)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    die_with_parent()
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given: add -- CMD ARGS...")
    args.record.parent.mkdir(parents=True, exist_ok=True)
    # The hub's token reaches only a child that needs it (a store such as versitygw does not).
    env = {k: v for k, v in os.environ.items() if args.hub_env or not k.startswith("JUPYTERHUB_")}
    sys.exit(Supervisor(cmd, name=args.name, record_file=args.record, env=env).run())


if __name__ == "__main__":
    main()
