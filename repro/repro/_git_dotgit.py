"""What reading ``.git`` tells about a repository, without starting git.

The rule this module keeps: never ask git what a few file reads can tell. The
repository, commit, branch, remote and shallowness come from the files under ``.git``
(microseconds, no process); where the files do not say for sure (``GIT_DIR`` set, a
reftable, a ref that is neither loose nor packed) the answer is left to the scan
(``_git_scan``), which asks git. Only files are read here, and nothing raises.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ._git_record import GitInfo
from ._redact import strip_url_credentials

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass
class Layout:
    """Where a repository's files are: work tree root, git dir, common dir (worktrees)."""

    root: str
    gitdir: str
    commondir: str


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
