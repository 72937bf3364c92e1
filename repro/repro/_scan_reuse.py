"""Reusing a kept scan: when it is still valid, and bringing it up to date file by file.

The rule this module keeps: a kept scan is reused only as far as it can give exactly
what a full scan would. ``_watch`` says which files changed since the kept scan
(inotify); :func:`state_key` is what inotify cannot see and must not have changed (HEAD,
the index, the exclude file). After an edit, :func:`start_by_file` asks git about the
changed files only and :func:`merge_by_file` puts the answers into the kept scan; where
that could differ from a full scan (a folded untracked directory, a quoted path, a cut
diff, submodules) they decline and the scan is a full one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace

from ._git_dotgit import discover
from ._git_process import DIFF_ARGS, UNTRACKED_ARGS, GitCommand, explain_failure
from ._git_record import (
    DIFF_LIMIT,
    GitInfo,
    cap_diff,
    diff_file,
    parse_untracked,
    split_diff_files,
)

#: Paths git would quote in a diff header (then the header does not name them plainly).
_QUOTED = re.compile(r'[\x00-\x1f\x7f"\\]')


def state_key(base: GitInfo) -> tuple | None:
    """What must not change for a cached scan to stay valid (besides the files, which
    the inotify watch covers): HEAD, the index, the exclude file.

    >>> state_key(GitInfo(state="no repository")) is None
    True
    """
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


def start_by_file(root: str | None, previous: GitInfo, changed: set[str],
                  tracked: frozenset[str], env: dict[str, str]
                  ) -> dict[str, GitCommand] | None:
    """Start asking git about the ``changed`` files only (``diff``, and ``untracked`` for
    the files git does not track), to be merged into ``previous`` (the kept scan) by
    :func:`merge_by_file`; None where that cannot give what a full scan would."""
    folded = tuple(p for p in previous.untracked if p.endswith("/"))
    if (root is None or previous.state != "repository" or previous.diff_note
            or previous.untracked_truncated or previous.scan_notes or previous.submodules
            or previous.root != root
            or any(p.startswith(folded) or _QUOTED.search(p) for p in changed)):
        return None
    paths = sorted(changed)
    procs: dict[str, GitCommand] = {}
    try:
        procs["diff"] = GitCommand(
            root, ("diff", *DIFF_ARGS, "--ignore-submodules=dirty", "HEAD", "--", *paths),
            env, limit=DIFF_LIMIT,
        )
        others = [p for p in paths if p not in tracked]
        if others:
            procs["untracked"] = GitCommand(
                root, ("ls-files", *UNTRACKED_ARGS, "--", *others), env, limit=256_000,
            )
    except OSError:
        for proc in procs.values():
            proc.kill()
        return None
    return procs


def merge_by_file(base: GitInfo, previous: GitInfo, changed: list[str],
                  procs: dict[str, GitCommand], too_slow: Callable[[str], str]) -> GitInfo:
    """The kept scan ``previous`` with git's answers about the ``changed`` files put in
    (``procs`` as :func:`start_by_file` started them, drained); ``base`` is what ``.git``
    said, ``too_slow(name)`` the note for a command that timed out."""
    changed_set = set(changed)
    diff = procs["diff"]
    if diff.timed_out:
        return replace(previous, state="unavailable: " + too_slow("diff"),
                       untracked=[], diff=b"", dirty=None)
    if not diff.ok or diff.cut:
        return replace(base, state=explain_failure(diff.stderr) if not diff.ok
                       else "unavailable: the diff grew past the size limit mid-scan")
    chunks = {diff_file(c): c for c in split_diff_files(previous.diff)}
    chunks = {f: c for f, c in chunks.items() if f not in changed_set}
    chunks.update({diff_file(c): c for c in split_diff_files(diff.stdout)})
    # git lists files in the index's order: by the bytes of their paths.
    merged = b"".join(chunks[f] for f in sorted(chunks, key=os.fsencode))
    info = replace(previous, scan_notes=[], submodule_diffs={})
    info.diff, info.diff_note = cap_diff(merged, DIFF_LIMIT)
    info.dirty = bool(merged)
    untracked = [p for p in previous.untracked if p not in changed_set]
    listing = procs.get("untracked")
    if listing is not None:
        if listing.timed_out:
            info.scan_notes.append("untracked files not listed: " + too_slow("untracked"))
        elif not listing.ok:
            return replace(base, state=explain_failure(listing.stderr))
        else:
            untracked += parse_untracked(listing.stdout, cut=listing.cut)[0]
    info.untracked, info.untracked_truncated = parse_untracked(
        b"".join(os.fsencode(p) + b"\0" for p in sorted(set(untracked), key=os.fsencode)))
    return info
