"""Running git: commands started at once, collected later, each bounded.

The rule this module keeps: git is asked, never trusted to answer quickly. Each command
starts at once and runs beside the others; :func:`drain` reads every command's stdout
and stderr together (a flood of warnings cannot block one), up to a deadline and a size
cap, and each command's outcome is its own. No command takes a lock on the index
(``GIT_OPTIONAL_LOCKS=0``, ``diff.autoRefreshIndex=false``), prompts, or reads settings
that would change the bytes of its output. A failure is turned into a recorded state by
:func:`explain_failure`, never an exception.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time

#: Seconds any one git command may take (``REPRO_GIT_TIMEOUT`` overrides).
DEFAULT_TIMEOUT = 5.0

# Settings that would change the bytes of the diff, or make git slower or interactive.
_GIT_CONFIG = (
    "-c", "core.quotePath=false",
    "-c", "color.ui=false",
    "-c", "diff.noprefix=false",
    "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.relative=false",
    "-c", "core.fsmonitor=false",
    "-c", "status.relativePaths=false",
    # `git diff` rewrites the index (taking index.lock) when a file's stat changed but its
    # content did not, and GIT_OPTIONAL_LOCKS=0 does not stop it (git 2.39): that would
    # break this module's rule and, by changing the index, end the scan reuse.
    "-c", "diff.autoRefreshIndex=false",
)
#: The scan's diff: bytes ``git apply`` takes back. --no-renames: one file per chunk, so
#: the chunks of changed files can be replaced (``_scan_reuse``).
DIFF_ARGS = ("--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/",
             "--dst-prefix=b/", "--submodule=short", "--no-renames")
#: The scan's untracked listing (untracked trees folded into one ``dir/`` entry).
UNTRACKED_ARGS = ("--others", "--exclude-standard", "--directory", "--no-empty-directory",
                  "-z")


def git_timeout() -> float:
    """The per-command timeout, from ``REPRO_GIT_TIMEOUT`` (seconds) or the default."""
    try:
        return float(os.environ.get("REPRO_GIT_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


def git_env() -> dict[str, str]:
    """This process's environment with the settings every git command runs under."""
    env = dict(os.environ)
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_LITERAL_PATHSPECS"] = "1"
    env["LC_ALL"] = "C"
    return env


class GitCommand:
    """One started git command whose output is collected later by :func:`drain`."""

    def __init__(self, cwd: str, args: tuple[str, ...], env: dict[str, str],
                 limit: int | None = None) -> None:
        self.args = args
        #: Most stdout bytes wanted; past it git is stopped and ``cut`` is set.
        self.limit = limit
        self.out: list[bytes] = []
        self.size = 0
        self.err: list[bytes] = []
        self.cut = False
        self.timed_out = False
        self.proc = subprocess.Popen(
            ("git", *_GIT_CONFIG, *args),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    @property
    def stdout(self) -> bytes:
        return b"".join(self.out)

    @property
    def stderr(self) -> str:
        return b"".join(self.err).decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """Finished in time with exit status 0 (or stopped on purpose past ``limit``)."""
        return not self.timed_out and (self.cut or self.proc.returncode == 0)

    def kill(self) -> None:
        """Stop git (if still running) without waiting on its pipes, which a grandchild
        (a hook, a wrapper script) may hold open."""
        try:
            self.proc.kill()
        except OSError:
            pass
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


#: Most stderr bytes kept per command (the rest is read and dropped: a full stderr pipe
#: would block git, e.g. one CRLF warning per file under ``core.autocrlf``).
_STDERR_KEEP = 16_384


def drain(procs: list[GitCommand], deadline: float) -> None:
    """Read every command's stdout *and* stderr at once until each ends, is cut at its
    limit, or the deadline passes (then it is killed and marked ``timed_out``). Each
    command's outcome is its own: one slow command costs only its own answer."""
    with selectors.DefaultSelector() as sel:
        for g in procs:
            for pipe in (g.proc.stdout, g.proc.stderr):
                if pipe is not None:
                    sel.register(pipe, selectors.EVENT_READ, g)
        while sel.get_map():
            # Past the deadline, what is already written (a command that has ended) is
            # still read: only a command still silent is too slow.
            events = sel.select(max(0.0, deadline - time.monotonic()))
            if not events:
                for key in list(sel.get_map().values()):
                    g = key.data
                    sel.unregister(key.fileobj)
                    if not g.cut and g.proc.poll() is None:
                        g.timed_out = True
                    g.kill()
                break
            for key, _ in events:
                g = key.data
                try:
                    chunk = os.read(key.fileobj.fileno(), 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                if key.fileobj is g.proc.stderr:
                    if sum(map(len, g.err)) < _STDERR_KEEP:
                        g.err.append(chunk)
                    continue
                g.out.append(chunk)
                g.size += len(chunk)
                if g.limit is not None and g.size > g.limit:
                    # The rest is not needed: stop git.
                    g.cut = True
                    for pipe in (g.proc.stdout, g.proc.stderr):
                        if pipe is not None and pipe in sel.get_map():
                            sel.unregister(pipe)
                    g.kill()
    for g in procs:
        if g.proc.returncode is None:
            try:
                g.proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                g.timed_out = True
                g.kill()


def explain_failure(stderr: str) -> str:
    """Turn git's complaint about a directory into a recorded state.

    >>> explain_failure("fatal: not a git repository (or any of the parent directories)")
    'no repository'
    """
    low = stderr.lower()
    if "not a git repository" in low:
        return "no repository"
    if "dubious ownership" in low:
        return (
            "unavailable: git refuses this repository (dubious ownership); "
            "mark it safe with `git config --global --add safe.directory <path>`"
        )
    first = stderr.strip().splitlines()[0] if stderr.strip() else "unknown error"
    return f"unavailable: {first[:200]}"


def too_slow(command: GitCommand, waited: float) -> str:
    """What a recorded state or scan note says about a command that timed out."""
    args = " ".join(a for a in command.args[:2] if not a.startswith("-"))
    return (f"`git {args}` took over {waited:.1f} s "
            "(raise REPRO_GIT_TIMEOUT to wait longer)")
