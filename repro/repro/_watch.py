"""Knowing that a working tree has not changed since the last scan, without rescanning.

The rule this module keeps: a cached scan is used only when the kernel vouches for it.
Scanning a working tree means one ``lstat`` per tracked file (about 30 ms for 10,000
files on a small VM), which a process starting run after run (a notebook, a sweep) would
pay every time. After a first scan, this module asks Linux ``inotify`` to watch every
directory that holds tracked files (and the untracked ones git listed); a later scan's
result is kept only if it started after the watches existed and no event arrived until
it finished, and it is reused only while no event arrives and HEAD, the index and the
exclude file are unchanged. Any doubt (any event at all, a fork, another HEAD or index,
too many directories, no inotify) drops the watch and means a fresh scan; the watch is
rebuilt in the background for the next one. No dependency: ``ctypes`` reaches libc.
``REPRO_GIT_CACHE=0`` turns the reuse off (every run scans).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading

# inotify(7) event bits: content, metadata, creation, deletion and renames.
_MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
_MAX_DIRS = 4096
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
    state of HEAD and the index (``key``): the set of tracked directories is fixed."""

    def __init__(self, libc: ctypes.CDLL, directories: list[str], key: tuple) -> None:
        self.pid = os.getpid()
        self.key = key
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for directory in directories:
            if libc.inotify_add_watch(self.fd, os.fsencode(directory), _MASK) < 0:
                os.close(self.fd)
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")

    def quiet(self) -> bool:
        """True if no event arrived since the watch began (events are not consumed)."""
        try:
            data = os.read(self.fd, 1)
        except BlockingIOError:
            return True
        except OSError:
            return False
        # inotify returns EINVAL for a too small buffer when an event is pending.
        return not data

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _current(root: str, key: tuple) -> _TreeWatch | None:
    """The watch of ``root`` if it is still trustworthy for ``key``; else drop it.

    Any event ends a watch (a new directory would not be watched, so it is rebuilt from
    scratch rather than patched); so do another HEAD or index, and a fork (a child shares
    the descriptor with its parent, and either may consume the other's events).
    """
    watch = _watches.get(root)
    if watch is None:
        return None
    if watch.pid == os.getpid() and watch.key == key and watch.quiet():
        return watch
    _watches.pop(root, None)
    _results.pop(root, None)
    if watch.pid == os.getpid():
        watch.close()
    return None


def lookup(root: str, key: tuple) -> object | None:
    """The cached scan of ``root`` if nothing changed since it was taken, else None."""
    with _lock:
        if _current(root, key) is None:
            return None
        entry = _results.get(root)
        return entry[1] if entry is not None and entry[0] == key else None


def begin_scan(root: str, key: tuple) -> _TreeWatch | None:
    """Call before a scan starts; pass what it returns to :func:`store` afterwards."""
    with _lock:
        return _current(root, key)


def store(root: str, key: tuple, result: object, token: _TreeWatch | None) -> None:
    """Keep a scan's result if the same watch saw no event since :func:`begin_scan`."""
    if token is None:
        return
    with _lock:
        if _current(root, key) is token:
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


def _tracked_dirs(root: str) -> list[str] | None:
    try:
        proc = subprocess.run(
            ("git", "ls-files", "-z"), cwd=root, capture_output=True, timeout=10,
            env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    dirs = {""}
    for path in proc.stdout.split(b"\0"):
        parent = os.path.dirname(os.fsdecode(path))
        while parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)
        if len(dirs) > _MAX_DIRS:
            return None
    return [os.path.join(root, d) if d else root for d in sorted(dirs)]


def _start(root: str, key: tuple, extra_dirs: list[str]) -> None:
    try:
        libc = _libc()
        dirs = _tracked_dirs(root) if libc is not None else None
        if libc is None or dirs is None:
            return
        extra = [os.path.join(root, d) for d in extra_dirs if os.path.isdir(os.path.join(root, d))]
        if len(dirs) + len(extra) > _MAX_DIRS:
            return
        try:
            watch = _TreeWatch(libc, dirs + extra, key)
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
