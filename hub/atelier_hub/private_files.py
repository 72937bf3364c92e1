"""Files only this OS account may read: secrets, keys, tokens, the users file, usage.

Rule this module keeps: an owner-only file is mode 0600 from before its first byte, in a
folder made 0700 when it is missing, and a whole file is replaced atomically (a unique
temporary file beside it, then a rename), so a reader never sees half of it and a crash
never leaves a truncated secret. Every writer of such a file (the state folder, the
users file, usage, the MLflow front's credentials, Trino's key, the CLI's login and SSH
files) goes through here. Standard library only, no mode: any floor may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_private", "append_private", "open_private"]

OWNER_ONLY = 0o600


def _folder(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path.parent


def write_private(path: str | Path, text: str, *, durable: bool = False) -> None:
    """Replace ``path`` with ``text``, readable by this OS account only, atomically.

    ``durable``: the bytes and the rename reach the disk before this returns (a power
    cut leaves the old file or the new one).

    >>> import stat, tempfile
    >>> p = Path(tempfile.mkdtemp()) / "secrets" / "key"
    >>> write_private(p, "s3cret"); write_private(p, "new")
    >>> p.read_text(), oct(stat.S_IMODE(p.stat().st_mode)), oct(stat.S_IMODE(p.parent.stat().st_mode))
    ('new', '0o600', '0o700')
    >>> sorted(x.name for x in p.parent.iterdir())
    ['key']
    """
    path = Path(path)
    folder = _folder(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)  # the rename itself survives a power cut
        finally:
            os.close(dfd)


def open_private(path: str | Path, flags: int = os.O_RDWR) -> int:
    """A file descriptor of ``path``, created 0600 (its folder 0700) if missing: a lock
    file, or a log appended to by :func:`append_private`."""
    path = Path(path)
    _folder(path)
    return os.open(path, flags | os.O_CREAT, OWNER_ONLY)


def append_private(path: str | Path, text: str) -> None:
    """Append ``text`` to ``path`` (created 0600) with one ``O_APPEND`` write: lines of
    concurrent writers never mix.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "usage.jsonl"
    >>> append_private(p, "a\\n"); append_private(p, "b\\n")
    >>> p.read_text()
    'a\\nb\\n'
    """
    fd = open_private(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
