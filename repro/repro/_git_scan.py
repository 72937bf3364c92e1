"""The scan of a working tree: what git says about the changes a run executes.

The rule this module keeps: what needs a scan of the working tree (tracked changes, the
diff, untracked files, submodules) comes from git commands (``_git_process``) that start
at once, run while the caller does other work, and are collected by
:meth:`Scan.result`, which merges them into what ``.git`` said (``_git_dotgit``). A
command that failed or was too slow costs only what it would have told; every failure
becomes a recorded state instead of an exception. A process starting run after run
reuses its kept scan while inotify vouches for it (``_scan_reuse``, ``_watch``). The
contents of small untracked files are read here too (:func:`read_untracked`).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from . import _scan_reuse
from ._git_dotgit import discover, read_remote
from ._git_process import (
    DIFF_ARGS,
    UNTRACKED_ARGS,
    GitCommand,
    drain,
    explain_failure,
    git_env,
    git_timeout,
    too_slow,
)
from ._git_record import (
    DIFF_LIMIT,
    SUBMODULE_MARK,
    GitInfo,
    cap_diff,
    parse_submodule_diffs,
    parse_submodule_status,
    parse_untracked,
)

#: Untracked files whose content is recorded: each at most this size, at most this many,
#: at most this much in all (the rest are listed by name only).
UNTRACKED_FILE_LIMIT = 64 * 1024
UNTRACKED_FILES_MAX = 100
UNTRACKED_TOTAL_LIMIT = 1024 * 1024


class Scan:
    """The working-tree scan of one directory, started by :func:`scan`."""

    def __init__(self, path: str, base: GitInfo) -> None:
        from . import _watch

        self.began = time.monotonic()
        self.timeout = git_timeout()
        self.path = path
        self.base = base
        self.error: str | None = None
        self.cached: GitInfo | None = None
        self._result: GitInfo | None = None
        self.procs: dict[str, GitCommand] = {}
        self.env = git_env()
        reuse = os.environ.get("REPRO_GIT_CACHE", "1") != "0"
        self.key = _scan_reuse.state_key(base) if reuse and base.commit and base.root else None
        self.token = None
        if base.state == "no repository":
            return
        #: The kept scan this one updates, and the files it asks git about.
        self.previous: GitInfo | None = None
        self.changed: list[str] = []
        if self.key is not None:
            hit = _watch.lookup(base.root, self.key)
            if hit is not None and isinstance(hit[0], GitInfo) and not hit[1]:
                self.cached = hit[0]
                return
            self.token = _watch.begin_scan(base.root, self.key)
            procs = None if hit is None else _scan_reuse.start_by_file(
                base.root, hit[0], hit[1], hit[2], self.env)
            if procs is not None:
                self.procs, self.previous, self.changed = procs, hit[0], sorted(hit[1])
                return
        # .git could not say (GIT_DIR set, reftable): ask git, and scan all the same.
        self.ask = not base.root or (base.state == "repository" and not base.commit)
        root = base.root or path
        try:
            if base.commit or self.ask:
                # Non-empty output means tracked changes: one walk of the tree gives both
                # the dirty flag and the diff (and `git status` is not needed at all).
                # Dirty submodules are left out here (their own diffs follow), as `git
                # apply` cannot use the "-dirty" lines; a moved one shows as a commit
                # change, which `git apply` skips without --index.
                self.procs["diff"] = GitCommand(
                    path, ("diff", *DIFF_ARGS, "--ignore-submodules=dirty", "HEAD", "--"),
                    self.env, limit=DIFF_LIMIT,
                )
            if self.ask:
                self.procs["rev"] = GitCommand(
                    path, ("rev-parse", "--show-toplevel", "--is-shallow-repository", "HEAD",
                           "--abbrev-ref", "HEAD"), self.env,
                )
            # From the root: run in a subfolder, ls-files would list only that folder,
            # relative to it.
            self.procs["untracked"] = GitCommand(
                base.root or path, ("ls-files", *UNTRACKED_ARGS), self.env, limit=256_000,
            )
            if self.ask or os.path.exists(os.path.join(root, ".gitmodules")):
                self.procs["submodules"] = GitCommand(
                    root, ("submodule", "status", "--recursive"), self.env
                )
                # Each checked-out submodule's own commit and uncommitted diff.
                self.procs["subdiffs"] = GitCommand(
                    root, ("submodule", "foreach", "--quiet", "--recursive",
                           f'echo "{SUBMODULE_MARK} $displaypath $(git rev-parse HEAD)"; '
                           f"git diff {' '.join(DIFF_ARGS)} HEAD --"),
                    self.env, limit=DIFF_LIMIT,
                )
        except FileNotFoundError:
            self.abort()
            self.error = "unavailable: git is not installed (no `git` on PATH)"
        except OSError as exc:
            self.abort()
            self.error = f"unavailable: cannot run git ({exc})"

    def abort(self) -> None:
        """Stop every git command still running."""
        for proc in self.procs.values():
            proc.kill()

    def result(self, deadline: float | None = None) -> GitInfo:
        """Wait for the scan (bounded by the timeout, or by ``deadline`` if sooner) and
        merge it into what ``.git`` said. Repeated calls return the same answer."""
        if self._result is None:
            self._result = self._result_once(deadline)
        return self._result

    def _result_once(self, until: float | None = None) -> GitInfo:
        from . import _watch

        if self.base.state == "no repository":
            return self.base
        if self.cached is not None:
            info = replace(self.cached, seconds=time.monotonic() - self.began)
            return info
        if self.error:
            return GitInfo(state=self.error)
        deadline = self.began + self.timeout
        if until is not None:
            deadline = min(deadline, until)
        try:
            drain(list(self.procs.values()), deadline)
            if self.previous is not None:
                info = _scan_reuse.merge_by_file(self.base, self.previous, self.changed,
                                                 self.procs, self._too_slow)
            else:
                info = self._collect()
        except OSError as exc:
            self.abort()
            info = GitInfo(state=f"unavailable: cannot run git ({exc})")
        info.seconds = time.monotonic() - self.began
        if (self.key is not None and info.state == "repository" and info.root
                and not info.scan_notes):
            _watch.store(info.root, self.key, replace(info), self.token)
            dirs = [p for p in info.untracked if p.endswith("/")]
            _watch.ensure(info.root, self.key, dirs)
        return info

    def _too_slow(self, name: str) -> str:
        return too_slow(self.procs[name], min(self.timeout, time.monotonic() - self.began))

    def _collect(self) -> GitInfo:
        """Merge each command's answer; a command that failed or was too slow costs only
        what it would have told (noted in ``scan_notes``), except the diff, without which
        the state of the code is unknown."""
        info = replace(self.base, untracked=[], submodules=[], submodule_diffs={},
                       scan_notes=[])
        procs = self.procs
        if "rev" in procs:
            rev = procs["rev"]
            lines = rev.stdout.decode("utf-8", "replace").splitlines()
            if rev.timed_out:
                return replace(self.base, state="unavailable: " + self._too_slow("rev"))
            if rev.proc.returncode != 0 and len(lines) < 2:
                return GitInfo(state=explain_failure(rev.stderr))
            info.root, info.shallow = lines[0], lines[1] == "true"
            if rev.proc.returncode == 0 and len(lines) >= 4:
                info.state, info.commit = "repository", lines[2]
                info.branch = None if lines[3] == "HEAD" else lines[3]
            else:
                info.state, info.commit = "no commits", None
                info.branch = lines[-1] if len(lines) >= 3 and lines[-1] != "HEAD" else None
            if info.remote is None:
                info.remote = self._remote(info.root)
        untracked = procs["untracked"]
        if untracked.timed_out:
            info.scan_notes.append("untracked files not listed: " + self._too_slow("untracked"))
        elif not untracked.ok:
            return replace(self.base, state=explain_failure(untracked.stderr))
        else:
            info.untracked, info.untracked_truncated = parse_untracked(
                untracked.stdout, cut=untracked.cut)
        if "diff" in procs and info.commit:
            diff = procs["diff"]
            if diff.timed_out:
                return replace(info, state="unavailable: " + self._too_slow("diff"),
                               untracked=[])
            if not diff.ok:
                return replace(self.base, state=explain_failure(diff.stderr))
            out = diff.stdout
            info.dirty = bool(out)
            info.diff, info.diff_note = cap_diff(out, DIFF_LIMIT, total=None if diff.cut else -1)
        if "submodules" in procs:
            status = procs["submodules"]
            if status.timed_out:
                info.scan_notes.append("submodules not listed: " + self._too_slow("submodules"))
            elif status.ok:
                info.submodules = parse_submodule_status(status.stdout.decode("utf-8", "replace"))
            sub = procs["subdiffs"]
            if sub.timed_out or sub.cut:
                info.scan_notes.append("submodule diffs not recorded: " + (
                    self._too_slow("subdiffs") if sub.timed_out else "over the size limit"))
            elif sub.ok:
                heads, info.submodule_diffs = parse_submodule_diffs(sub.stdout)
                # `submodule status` shows the checked-out commit only for moved ones.
                info.submodules = [(p, heads.get(p, c), s) for p, c, s in info.submodules]
                if info.submodule_diffs and info.commit:
                    info.dirty = True
        if any(s == "+" for _, _, s in info.submodules) and info.commit:
            info.dirty = True
        return info

    @staticmethod
    def _remote(root: str | None) -> str | None:
        layout = discover(root) if root else None
        return read_remote(layout) if layout is not None else None


def scan(path: str, base: GitInfo) -> Scan:
    """Start the working-tree scan of ``path`` and return at once; ``.result()`` collects.

    Where an earlier scan of the same tree in this process is still vouched for by
    inotify (see ``_watch``), its result is reused and no git process starts.
    """
    return Scan(path, base)


def read_untracked(root: str, paths: list[str]) -> tuple[dict[str, bytes], list[str]]:
    """({path: content}, [paths left out]) of the small untracked text files listed by
    the scan (folded directories, large or binary files, and those past the caps are
    left out by name).

    >>> read_untracked("/nonexistent", ["a.py", "data/"])
    ({}, ['a.py', 'data/'])
    """
    kept: dict[str, bytes] = {}
    left: list[str] = []
    total = 0
    for path in paths:
        full = os.path.join(root, path)
        if path.endswith("/") or len(kept) >= UNTRACKED_FILES_MAX:
            left.append(path)
            continue
        try:
            if os.path.islink(full) or os.path.getsize(full) > UNTRACKED_FILE_LIMIT:
                left.append(path)
                continue
            with open(full, "rb") as f:
                content = f.read(UNTRACKED_FILE_LIMIT + 1)
        except OSError:
            left.append(path)
            continue
        if b"\0" in content[:8192] or total + len(content) > UNTRACKED_TOTAL_LIMIT:
            left.append(path)
            continue
        kept[path] = content
        total += len(content)
    return kept, left
