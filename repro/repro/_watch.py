"""Knowing what in a working tree changed since the last scan, without rescanning it.

The rule this module keeps: a cached scan is used only as far as the kernel vouches for
it. Scanning a working tree means one ``lstat`` per tracked file and a walk of every
directory, which a process starting run after run (a notebook, a sweep, the
edit-and-run loop) would pay every time. After a first scan, this module asks Linux
``inotify`` to watch every directory that holds tracked files (and the untracked ones
git listed). A later scan's result is kept only if it started after the watches
existed; then :func:`lookup` drains the events that arrived since and says which files
they name, so the next scan asks git about those files only (``_scan_reuse`` merges the
answer into the kept result), or about none when no event arrived. Anything the file names do
not capture loses the trust: an event about a directory (a new one is not watched), an
overflowing queue, a removed watch, ``.gitignore``/``.gitattributes``/``.gitmodules``,
too many files, a fork, another HEAD, index or exclude file. Then the watch is dropped,
the next scan is a full one, and the watch is rebuilt in the background. Events are
drained under a lock and each drain bumps a generation, so a scan that started before
another thread's drain cannot store a result older than what that drain accounted for.
No dependency: ``ctypes`` reaches libc. ``REPRO_GIT_CACHE=0`` turns the reuse off (every
run scans).
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
import threading

# inotify(7) event bits: content, metadata, creation, deletion and renames.
_MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
_MAX_DIRS = 4096
#: Most changed files one scan asks git about; past it, a full scan is cheaper.
MAX_CHANGED = 200
# Events that say more than "this file changed": directory events, an overflowing queue,
# a removed watch (IN_ISDIR, IN_Q_OVERFLOW, IN_IGNORED, IN_DELETE_SELF, IN_MOVE_SELF,
# IN_UNMOUNT); ref: inotify(7).
_DISTRUST = 0x40000000 | 0x4000 | 0x8000 | 0x400 | 0x800 | 0x2000
#: Files whose change alters what git reports about other files.
_GLOBAL_NAMES = frozenset({".gitignore", ".gitattributes", ".gitmodules"})
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then name)
_lock = threading.Lock()
_watches: dict[str, _TreeWatch] = {}
_results: dict[str, tuple[tuple, object]] = {}
_starting: set[str] = set()
_LIBC: list[ctypes.CDLL | None] = []


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        libc = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.inotify_init1  # noqa: B018 - presence check
            except (OSError, AttributeError):
                libc = None
        _LIBC.append(libc)
    return _LIBC[0]


class _TreeWatch:
    """One inotify descriptor watching the directories of one working tree, valid for one
    state of HEAD and the index (``key``): the set of tracked files is fixed."""

    def __init__(self, libc: ctypes.CDLL, root: str, directories: list[str], key: tuple,
                 tracked: frozenset[str]) -> None:
        self.pid = os.getpid()
        self.key = key
        #: The tracked files (relative to the root), as ``git ls-files`` listed them.
        self.tracked = tracked
        #: Bumped by every drain of events (see :func:`begin_scan`).
        self.generation = 0
        self.dirs: dict[int, str] = {}
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for directory in directories:
            wd = libc.inotify_add_watch(self.fd, os.fsencode(directory), _MASK)
            if wd < 0:
                os.close(self.fd)
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")
            rel = os.path.relpath(directory, root)
            self.dirs[wd] = "" if rel == "." else rel

    def drain(self) -> set[str] | None:
        """The files (relative to the root) named by the events since the last drain,
        or None where the events say more than that (see the module docstring)."""
        self.generation += 1
        changed: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return changed
            except OSError:
                return None
            if not data:
                return changed
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, pos)
                name = os.fsdecode(data[pos + _EVENT.size: pos + _EVENT.size + length]
                                   .split(b"\0", 1)[0])
                pos += _EVENT.size + length
                folder = self.dirs.get(wd)
                if mask & _DISTRUST or folder is None or not name or name in _GLOBAL_NAMES:
                    return None
                changed.add(f"{folder}/{name}" if folder else name)
                if len(changed) > MAX_CHANGED:
                    return None

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _drop(root: str) -> None:
    watch = _watches.pop(root, None)
    _results.pop(root, None)
    if watch is not None and watch.pid == os.getpid():
        # Closing the descriptor makes the kernel remove every watch (milliseconds for
        # a hundred directories): off the caller's path.
        threading.Thread(target=watch.close, daemon=True, name="repro-unwatch").start()


def _current(root: str, key: tuple) -> _TreeWatch | None:
    """The watch of ``root`` if it is still valid for ``key``; else drop it.

    Another HEAD or index ends a watch (the tracked files may differ); so does a fork (a
    child shares the descriptor with its parent, and either may consume the other's
    events).
    """
    watch = _watches.get(root)
    if watch is None:
        return None
    if watch.pid == os.getpid() and watch.key == key:
        return watch
    _drop(root)
    return None


def lookup(root: str, key: tuple) -> tuple[object, set[str], frozenset[str]] | None:
    """(the kept scan of ``root``, the files changed since it, the tracked files), or
    None when there is no kept scan to build on. Changed files are reported once: the
    kept scan is given up here and the caller's :func:`store` puts the new one back."""
    with _lock:
        watch = _current(root, key)
        if watch is None:
            return None
        changed = watch.drain()
        if changed is None:
            _drop(root)
            return None
        entry = _results.get(root)
        if entry is None or entry[0] != key:
            return None
        if changed:
            _results.pop(root, None)
        return entry[1], changed, watch.tracked


def begin_scan(root: str, key: tuple) -> tuple[_TreeWatch, int] | None:
    """Call before a scan starts (after :func:`lookup`); pass what it returns to
    :func:`store` afterwards."""
    with _lock:
        watch = _current(root, key)
        return (watch, watch.generation) if watch is not None else None


def store(root: str, key: tuple, result: object, token: tuple[_TreeWatch, int] | None) -> None:
    """Keep a scan's result if the watch that existed when it began is still there and
    no drain happened since (the events a drain reported would be missing from it)."""
    if token is None:
        return
    watch, generation = token
    with _lock:
        if _current(root, key) is watch and watch.generation == generation:
            _results[root] = (key, result)


def ensure(root: str, key: tuple, extra_dirs: list[str]) -> None:
    """Start watching ``root`` (in a background thread) unless already watched."""
    with _lock:
        if _current(root, key) is not None or root in _starting or _libc() is None:
            return
        if os.path.exists(os.path.join(root, ".gitmodules")):
            return  # changes inside submodules are not seen from here: always rescan
        _starting.add(root)
    threading.Thread(target=_start, args=(root, key, extra_dirs), daemon=True,
                     name="repro-watch").start()


def _tracked(root: str) -> tuple[list[str], frozenset[str]] | None:
    """(directories holding tracked files, the tracked files) of ``root``."""
    try:
        proc = subprocess.run(
            ("git", "-c", "core.quotePath=false", "ls-files", "-z"), cwd=root,
            capture_output=True, timeout=10, env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    dirs = {""}
    files = []
    for raw in proc.stdout.split(b"\0"):
        if not raw:
            continue
        path = os.fsdecode(raw)
        files.append(path)
        parent = os.path.dirname(path)
        while parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)
        if len(dirs) > _MAX_DIRS:
            return None
    return [os.path.join(root, d) if d else root for d in sorted(dirs)], frozenset(files)


def _start(root: str, key: tuple, extra_dirs: list[str]) -> None:
    try:
        libc = _libc()
        found = _tracked(root) if libc is not None else None
        if libc is None or found is None:
            return
        dirs, files = found
        extra = [os.path.join(root, d) for d in extra_dirs if os.path.isdir(os.path.join(root, d))]
        if len(dirs) + len(extra) > _MAX_DIRS:
            return
        try:
            watch = _TreeWatch(libc, root, dirs + extra, key, files)
        except OSError:
            return  # e.g. the inotify watch limit: scan every time instead
        with _lock:
            old = _watches.pop(root, None)
            if old is not None and old.pid == os.getpid():
                old.close()
            _watches[root] = watch
    finally:
        with _lock:
            _starting.discard(root)
