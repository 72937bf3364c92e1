"""What git says about the code a run executes.

The rule this module keeps: git is asked, never trusted to answer quickly, and never
asked what a few file reads can tell. The repository, commit, branch, remote and
shallowness come from reading ``.git`` directly (microseconds, no process); what needs a
scan of the working tree (tracked changes, the diff, untracked files) comes from git
processes that start at once, run side by side and are collected later, each bounded by
a timeout, none taking a lock on the index (``GIT_OPTIONAL_LOCKS=0``), output read with
a cap. Every failure (no git, no repository, no commits, a timeout, a refused
repository) becomes a recorded state instead of an exception. The ``parse_*``,
``cap_diff`` and ``read_*`` helpers are pure or read only files, and are unit-tested.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time
from dataclasses import dataclass, field, replace

from ._redact import strip_url_credentials

#: Size above which the recorded diff is cut (at a file boundary, with a note).
DIFF_LIMIT = 500_000
#: Most untracked entries listed; git's ``--directory`` already folds untracked trees.
UNTRACKED_LIMIT = 1000
#: Seconds any one git command may take (``REPRO_GIT_TIMEOUT`` overrides).
DEFAULT_TIMEOUT = 5.0
#: Above this many changed paths the diff is asked for the whole tree, not per path.
_PATHSPEC_LIMIT = 500

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
    # break the promise above and, by changing the index, end the scan reuse (``_watch``).
    "-c", "diff.autoRefreshIndex=false",
)
# --no-renames: one file per chunk, so the chunks of changed files can be replaced.
_DIFF_ARGS = ("--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/",
              "--dst-prefix=b/", "--submodule=short", "--no-renames")
_UNTRACKED_ARGS = ("--others", "--exclude-standard", "--directory", "--no-empty-directory",
                   "-z")
#: Paths git would quote in a diff header (then the header does not name them plainly).
_QUOTED = re.compile(r'[\x00-\x1f\x7f"\\]')
#: Starts the line before each submodule's diff in ``submodules.patch`` (no diff line
#: starts with "#").
_SUBMODULE_MARK = "### repro-submodule"
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass
class GitInfo:
    """Everything recorded about the repository; ``state`` says how much of it exists."""

    #: "repository", "no repository", "no commits" or "unavailable: <why>".
    state: str
    root: str | None = None
    commit: str | None = None
    #: Branch name, or None when HEAD is detached.
    branch: str | None = None
    remote: str | None = None
    #: None until the working tree has been scanned.
    dirty: bool | None = None
    shallow: bool = False
    diff: bytes = b""
    #: Why the diff is incomplete ("" when it is complete).
    diff_note: str = ""
    untracked: list[str] = field(default_factory=list)
    untracked_truncated: bool = False
    #: (path, commit, state) with state " " (clean), "+" (other commit), "-" (not checked
    #: out), "U" (conflict), as ``git submodule status`` prints it.
    submodules: list[tuple[str, str, str]] = field(default_factory=list)
    #: Submodule path -> its own uncommitted diff (only submodules with changes).
    submodule_diffs: dict[str, bytes] = field(default_factory=dict)
    #: What the scan could not find out in time (the rest of it is kept).
    scan_notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Layout:
    """Where a repository's files are: work tree root, git dir, common dir (worktrees)."""

    root: str
    gitdir: str
    commondir: str


def git_timeout() -> float:
    """The per-command timeout, from ``REPRO_GIT_TIMEOUT`` (seconds) or the default."""
    try:
        return float(os.environ.get("REPRO_GIT_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


# -- reading .git directly -------------------------------------------------------------


def discover(path: str) -> Layout | None:
    """The repository containing ``path``, found by looking for ``.git`` upwards, or None.

    Handles ``.git`` files (worktrees, submodules). Returns None as well when
    ``GIT_DIR`` or ``GIT_WORK_TREE`` is set: then only git itself knows.
    """
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
        return None
    current = os.path.abspath(path)
    while True:
        dotgit = os.path.join(current, ".git")
        if os.path.isdir(dotgit):
            return Layout(current, dotgit, _commondir(dotgit))
        if os.path.isfile(dotgit):
            try:
                with open(dotgit, encoding="utf-8") as f:
                    text = f.read(4096).strip()
            except OSError:
                return None
            if not text.startswith("gitdir:"):
                return None
            gitdir = os.path.normpath(os.path.join(current, text[len("gitdir:") :].strip()))
            return Layout(current, gitdir, _commondir(gitdir))
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _commondir(gitdir: str) -> str:
    try:
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8") as f:
            rel = f.read().strip()
    except OSError:
        return gitdir
    return os.path.normpath(os.path.join(gitdir, rel))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def read_head(layout: Layout) -> tuple[str | None, str | None, bool]:
    """(commit, branch, known) from HEAD and the refs; commit None = no commits yet.

    ``known`` is False where the files do not say for sure (reftable, a ref that is
    neither loose nor packed); git's own answer then comes with the scan.
    """
    head = _read(os.path.join(layout.gitdir, "HEAD"))
    if head is None or os.path.isdir(os.path.join(layout.commondir, "reftable")):
        return None, None, False
    head = head.strip()
    if _SHA.match(head):
        return head, None, True
    if not head.startswith("ref:"):
        return None, None, False
    ref = head[4:].strip()
    branch = ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref
    loose = _read(os.path.join(layout.commondir, ref))
    if loose is not None and _SHA.match(loose.strip()):
        return loose.strip(), branch, True
    packed = _read(os.path.join(layout.commondir, "packed-refs")) or ""
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name.strip() == ref and _SHA.match(sha):
            return sha, branch, True
    # No such ref: an unborn branch (a repository without commits).
    return None, branch, loose is None


def parse_remotes(config_text: str) -> dict[str, str]:
    """``{remote name: url}`` from the text of a git config file.

    >>> parse_remotes('[remote "origin"]\\n\\turl = https://h/r.git\\n[core]\\n\\tbare = false')
    {'origin': 'https://h/r.git'}
    """
    remotes: dict[str, str] = {}
    section = None
    for raw in config_text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            match = re.match(r'^\[\s*remote\s+"((?:[^"\\]|\\.)*)"\s*\]', line)
            section = match.group(1) if match else None
            continue
        if section is None:
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "url":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            remotes.setdefault(section, value)
    return remotes


def read_remote(layout: Layout) -> str | None:
    """URL of ``origin`` (else of the first remote), credentials stripped."""
    remotes = parse_remotes(_read(os.path.join(layout.commondir, "config")) or "")
    if not remotes:
        return None
    url = remotes.get("origin") or next(iter(remotes.values()))
    return strip_url_credentials(url)


def quick(path: str) -> GitInfo:
    """What reading ``.git`` tells without starting git (no dirty flag, no diff)."""
    layout = discover(path)
    if layout is None:
        if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
            return GitInfo(state="unavailable: GIT_DIR/GIT_WORK_TREE set (see the scan)")
        return GitInfo(state="no repository")
    commit, branch, known = read_head(layout)
    info = GitInfo(
        state="repository" if commit else "no commits",
        root=layout.root,
        commit=commit,
        branch=branch,
        remote=read_remote(layout),
        shallow=os.path.exists(os.path.join(layout.commondir, "shallow")),
    )
    if not known:
        info.state = "repository"
    return info


# -- scanning with git -----------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_LITERAL_PATHSPECS"] = "1"
    env["LC_ALL"] = "C"
    return env


class _Git:
    """One started git command whose output is collected later by :func:`_drain`."""

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


def _drain(procs: list[_Git], deadline: float) -> None:
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


def _state_key(base: GitInfo) -> tuple | None:
    """What must not change for a cached scan to stay valid (besides the files, which
    the inotify watch covers): HEAD, the index, the exclude file."""
    layout = discover(base.root) if base.root else None
    if layout is None:
        return None
    stats = []
    for path in (os.path.join(layout.gitdir, "index"),
                 os.path.join(layout.commondir, "info", "exclude")):
        try:
            st = os.stat(path)
            stats.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            stats.append(None)
    return (base.commit, base.branch, *stats)


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
        self.procs: dict[str, _Git] = {}
        self.env = _env()
        reuse = os.environ.get("REPRO_GIT_CACHE", "1") != "0"
        self.key = _state_key(base) if reuse and base.commit and base.root else None
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
            if hit is not None and self._start_changed(hit[0], hit[1], hit[2]):
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
                self.procs["diff"] = _Git(
                    path, ("diff", *_DIFF_ARGS, "--ignore-submodules=dirty", "HEAD", "--"),
                    self.env, limit=DIFF_LIMIT,
                )
            if self.ask:
                self.procs["rev"] = _Git(
                    path, ("rev-parse", "--show-toplevel", "--is-shallow-repository", "HEAD",
                           "--abbrev-ref", "HEAD"), self.env,
                )
            # From the root: run in a subfolder, ls-files would list only that folder,
            # relative to it.
            self.procs["untracked"] = _Git(
                base.root or path, ("ls-files", *_UNTRACKED_ARGS), self.env, limit=256_000,
            )
            if self.ask or os.path.exists(os.path.join(root, ".gitmodules")):
                self.procs["submodules"] = _Git(
                    root, ("submodule", "status", "--recursive"), self.env
                )
                # Each checked-out submodule's own commit and uncommitted diff.
                self.procs["subdiffs"] = _Git(
                    root, ("submodule", "foreach", "--quiet", "--recursive",
                           f'echo "{_SUBMODULE_MARK} $displaypath $(git rev-parse HEAD)"; '
                           f"git diff {' '.join(_DIFF_ARGS)} HEAD --"),
                    self.env, limit=DIFF_LIMIT,
                )
        except FileNotFoundError:
            self.abort()
            self.error = "unavailable: git is not installed (no `git` on PATH)"
        except OSError as exc:
            self.abort()
            self.error = f"unavailable: cannot run git ({exc})"

    def _start_changed(self, previous: GitInfo, changed: set[str],
                       tracked: frozenset[str]) -> bool:
        """Ask git about the ``changed`` files only, to be merged into ``previous``
        (the kept scan); False where that cannot give what a full scan would."""
        root = self.base.root
        folded = tuple(p for p in previous.untracked if p.endswith("/"))
        if (root is None or previous.state != "repository" or previous.diff_note
                or previous.untracked_truncated or previous.scan_notes or previous.submodules
                or previous.root != root
                or any(p.startswith(folded) or _QUOTED.search(p) for p in changed)):
            return False
        self.previous = previous
        self.changed = sorted(changed)
        try:
            self.procs["diff"] = _Git(
                root, ("diff", *_DIFF_ARGS, "--ignore-submodules=dirty", "HEAD", "--",
                       *self.changed), self.env, limit=DIFF_LIMIT,
            )
            others = [p for p in self.changed if p not in tracked]
            if others:
                self.procs["untracked"] = _Git(
                    root, ("ls-files", *_UNTRACKED_ARGS, "--", *others), self.env,
                    limit=256_000,
                )
        except OSError:
            self.abort()
            self.procs, self.previous, self.changed = {}, None, []
            return False
        return True

    def _merge_changed(self) -> GitInfo:
        """The kept scan with the answers about the changed files put in."""
        previous, changed = self.previous, set(self.changed)
        assert previous is not None
        diff = self.procs["diff"]
        if diff.timed_out:
            return replace(previous, state="unavailable: " + self._too_slow("diff"),
                           untracked=[], diff=b"", dirty=None)
        if not diff.ok or diff.cut:
            return replace(self.base, state=_explain_failure(diff.stderr) if not diff.ok
                           else "unavailable: the diff grew past the size limit mid-scan")
        chunks = {_file_of(c): c for c in split_diff_files(previous.diff)}
        chunks = {f: c for f, c in chunks.items() if f not in changed}
        chunks.update({_file_of(c): c for c in split_diff_files(diff.stdout)})
        # git lists files in the index's order: by the bytes of their paths.
        merged = b"".join(chunks[f] for f in sorted(chunks, key=os.fsencode))
        info = replace(previous, scan_notes=[], submodule_diffs={})
        info.diff, info.diff_note = cap_diff(merged, DIFF_LIMIT)
        info.dirty = bool(merged)
        untracked = [p for p in previous.untracked if p not in changed]
        listing = self.procs.get("untracked")
        if listing is not None:
            if listing.timed_out:
                info.scan_notes.append("untracked files not listed: "
                                       + self._too_slow("untracked"))
            elif not listing.ok:
                return replace(self.base, state=_explain_failure(listing.stderr))
            else:
                untracked += parse_untracked(listing.stdout, cut=listing.cut)[0]
        info.untracked, info.untracked_truncated = parse_untracked(
            b"".join(os.fsencode(p) + b"\0" for p in sorted(set(untracked), key=os.fsencode)))
        return info

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
            _drain(list(self.procs.values()), deadline)
            info = self._merge_changed() if self.previous is not None else self._collect()
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
        args = " ".join(a for a in self.procs[name].args[:2] if not a.startswith("-"))
        waited = min(self.timeout, time.monotonic() - self.began)
        return (f"`git {args}` took over {waited:.1f} s "
                "(raise REPRO_GIT_TIMEOUT to wait longer)")

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
                return GitInfo(state=_explain_failure(rev.stderr))
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
            return replace(self.base, state=_explain_failure(untracked.stderr))
        else:
            info.untracked, info.untracked_truncated = parse_untracked(
                untracked.stdout, cut=untracked.cut)
        if "diff" in procs and info.commit:
            diff = procs["diff"]
            if diff.timed_out:
                return replace(info, state="unavailable: " + self._too_slow("diff"),
                               untracked=[])
            if not diff.ok:
                return replace(self.base, state=_explain_failure(diff.stderr))
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


def _explain_failure(stderr: str) -> str:
    """Turn git's complaint about a directory into a recorded state."""
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


#: Untracked files whose content is recorded: each at most this size, at most this many,
#: at most this much in all (the rest are listed by name only).
UNTRACKED_FILE_LIMIT = 64 * 1024
UNTRACKED_FILES_MAX = 100
UNTRACKED_TOTAL_LIMIT = 1024 * 1024


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


def parse_untracked(output: bytes, *, cut: bool = False, limit: int = UNTRACKED_LIMIT
                    ) -> tuple[list[str], bool]:
    """Untracked paths from NUL-separated ``git ls-files -z`` output, capped at ``limit``.

    >>> parse_untracked(b"a.txt\\0data/\\0")
    (['a.txt', 'data/'], False)
    """
    entries = output.split(b"\0")
    if cut or (entries and entries[-1]):
        # The last entry may be partial when the output was cut.
        entries = entries[:-1]
        cut = True
    paths = [e.decode("utf-8", "replace") for e in entries if e]
    if len(paths) > limit:
        return paths[:limit], True
    return paths, cut


def parse_submodule_status(output: str) -> list[tuple[str, str, str]]:
    """(path, commit, state) per line of ``git submodule status --recursive``.

    >>> parse_submodule_status("+1a2b3c libs/x (v1.0)\\n 4d5e6f libs/y\\n")
    [('libs/x', '1a2b3c', '+'), ('libs/y', '4d5e6f', ' ')]
    """
    subs = []
    for line in output.splitlines():
        if len(line) < 3:
            continue
        state, rest = line[0], line[1:]
        commit, _, tail = rest.partition(" ")
        path = tail.split(" (", 1)[0]
        subs.append((path, commit, state))
    return subs


def parse_submodule_diffs(output: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """({path: checked-out commit}, {path: diff}) from the ``submodules.patch`` format:
    a ``### repro-submodule PATH COMMIT`` line, then that submodule's diff (if any).

    >>> parse_submodule_diffs(b"### repro-submodule a 1f\\n### repro-submodule b 2e\\n+x\\n")
    ({'a': '1f', 'b': '2e'}, {'b': b'+x\\n'})
    """
    heads: dict[str, str] = {}
    diffs: dict[str, bytes] = {}
    mark = _SUBMODULE_MARK.encode() + b" "
    current = None
    for line in output.splitlines(keepends=True):
        if line.startswith(mark):
            path, _, commit = line[len(mark):].decode("utf-8", "replace").strip().rpartition(" ")
            current = path
            heads[path] = commit
            continue
        if current is not None:
            diffs[current] = diffs.get(current, b"") + line
    return heads, diffs


def format_submodule_diffs(submodules: list[tuple[str, str, str]],
                           diffs: dict[str, bytes]) -> bytes:
    """The ``submodules.patch`` artifact; :func:`parse_submodule_diffs` reads it back.

    >>> format_submodule_diffs([("a", "1f", "+")], {"a": b"+x\\n"})
    b'### repro-submodule a 1f\\n+x\\n'
    """
    parts = []
    for path, commit, _ in submodules:
        parts.append(f"{_SUBMODULE_MARK} {path} {commit}\n".encode() + diffs.get(path, b""))
    return b"".join(parts)


def split_diff_files(diff: bytes) -> list[bytes]:
    """Split a ``git diff`` into one chunk per file (each starts with ``diff --git``).

    >>> [c[:12] for c in split_diff_files(b"diff --git a/x b/x\\n+1\\ndiff --git a/y b/y\\n")]
    [b'diff --git a', b'diff --git a']
    """
    chunks: list[bytes] = []
    start = 0
    pos = diff.find(b"\ndiff --git ")
    while pos != -1:
        chunks.append(diff[start : pos + 1])
        start = pos + 1
        pos = diff.find(b"\ndiff --git ", start)
    if start < len(diff):
        chunks.append(diff[start:])
    return chunks


def _file_of(chunk: bytes) -> str:
    header = chunk.split(b"\n", 1)[0].decode("utf-8", "replace")
    # "diff --git a/path b/path": take the b/ side.
    _, _, b_side = header.rpartition(" b/")
    return b_side or header


def cap_diff(diff: bytes, limit: int = DIFF_LIMIT, *, total: int | None = -1
             ) -> tuple[bytes, str]:
    """Cut a diff to at most ``limit`` bytes at a file boundary, so what is kept still
    applies with ``git apply``; a note at the top (which ``git apply`` ignores) names the
    files left out. ``total=None`` means the diff was already cut while reading, so its
    full size is unknown.

    Returns (diff, note) where note is "" when nothing was cut.

    >>> cap_diff(b"diff --git a/x b/x\\n+1\\n", 100)
    (b'diff --git a/x b/x\\n+1\\n', '')
    """
    if total == -1:
        total = len(diff)
    if total is not None and total <= limit:
        return diff, ""
    chunks = split_diff_files(diff)
    omitted: list[str] = []
    if total is None and chunks:
        # The last chunk was cut mid-way while reading: never keep it.
        omitted.append(_file_of(chunks.pop()))
    kept: list[bytes] = []
    size = 0
    for i, chunk in enumerate(chunks):
        if size + len(chunk) > limit - 1024:  # leave room for the note
            omitted = [_file_of(c) for c in chunks[i:]] + omitted
            break
        kept.append(chunk)
        size += len(chunk)
    shown = ", ".join(omitted[:20])
    if len(omitted) > 20:
        shown += f" and {len(omitted) - 20} more"
    if total is None:
        shown += " and any files after it"
    full = f"{total} bytes" if total is not None else f"over {limit} bytes"
    note = f"diff truncated: {full} in all, kept {size} bytes; left out: {shown}"
    header = f"# repro: {note}\n# (git apply ignores these lines)\n".encode()
    return header + b"".join(kept), note
