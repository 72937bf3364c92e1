"""What is recorded about git, and the formats it is recorded in.

The rule this module keeps: everything here is pure. ``GitInfo`` is the record (its
``state`` says how much of it exists); the ``parse_*`` functions turn git's output into
it, ``cap_diff`` bounds the recorded diff so that what is kept still applies, and the
``submodules.patch`` format is written and read back here. ``_git_dotgit`` fills the
record from ``.git``, ``_git_scan`` from git's answers about the working tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Size above which the recorded diff is cut (at a file boundary, with a note).
DIFF_LIMIT = 500_000
#: Most untracked entries listed; git's ``--directory`` already folds untracked trees.
UNTRACKED_LIMIT = 1000
#: Starts the line before each submodule's diff in ``submodules.patch`` (no diff line
#: starts with "#").
SUBMODULE_MARK = "### repro-submodule"


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
    mark = SUBMODULE_MARK.encode() + b" "
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
        parts.append(f"{SUBMODULE_MARK} {path} {commit}\n".encode() + diffs.get(path, b""))
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


def diff_file(chunk: bytes) -> str:
    """The file one chunk of a diff is about (the ``b/`` side of its header).

    >>> diff_file(b"diff --git a/pkg/m.py b/pkg/m.py\\nindex 1..2\\n")
    'pkg/m.py'
    """
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
        omitted.append(diff_file(chunks.pop()))
    kept: list[bytes] = []
    size = 0
    for i, chunk in enumerate(chunks):
        if size + len(chunk) > limit - 1024:  # leave room for the note
            omitted = [diff_file(c) for c in chunks[i:]] + omitted
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
