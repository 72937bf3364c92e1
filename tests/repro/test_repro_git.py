"""Git capture: pure helpers by table, then real repositories made here (no server)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from repro._redact import REDACTED, strip_url_credentials
from repro_testlib import child_env, git, make_repo

from repro import _capture, _git_dotgit, _git_record, _git_scan


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # https with user and password/token: the whole userinfo goes
        ("https://user:tok@github.com/o/r.git", "https://github.com/o/r.git"),
        # https with a lone token as the user name (GitHub's x-access-token style)
        ("https://tok@github.com/o/r.git", "https://github.com/o/r.git"),
        # a port survives
        ("https://u:p@git.example.com:8443/r.git", "https://git.example.com:8443/r.git"),
        # no credentials: unchanged
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        # scp-like ssh: "git@" is a login name, not a credential
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        # ssh:// keeps the user name, drops a password
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("ssh://git:pw@host/r.git", "ssh://host/r.git"),
        # local paths and file URLs: unchanged
        ("/srv/git/r.git", "/srv/git/r.git"),
        ("file:///srv/git/r.git", "file:///srv/git/r.git"),
        # a token in the query string of an http remote
        ("https://h/r.git?access_token=tok", f"https://h/r.git?access_token={REDACTED}"),
    ],
)
def test_strip_url_credentials(url: str, expected: str) -> None:
    assert strip_url_credentials(url) == expected


def _file_diff(name: str, size: int) -> bytes:
    body = b"".join(b"+" + b"x" * 99 + b"\n" for _ in range(size // 100))
    return (
        f"diff --git a/{name} b/{name}\nindex 1..2 100644\n--- a/{name}\n+++ b/{name}\n"
        f"@@ -0,0 +1,{size // 100} @@\n"
    ).encode() + body


def test_cap_diff_keeps_small_diffs() -> None:
    diff = _file_diff("a.py", 1000)
    assert _git_record.cap_diff(diff, 10_000) == (diff, "")


def test_cap_diff_cuts_at_a_file_boundary_with_a_note() -> None:
    diff = _file_diff("a.py", 3000) + _file_diff("b.py", 3000) + _file_diff("c.py", 3000)
    capped, note = _git_record.cap_diff(diff, 8000)  # room for two files and the note
    assert capped.startswith(b"# repro: diff truncated")
    body = capped.split(b"\n", 2)[2]
    assert body == _file_diff("a.py", 3000) + _file_diff("b.py", 3000)
    assert "c.py" in note and str(len(diff)) in note


def test_cap_diff_of_a_stream_cut_while_reading() -> None:
    diff = _file_diff("a.py", 3000) + _file_diff("b.py", 3000)[:500]
    capped, note = _git_record.cap_diff(diff, 2900, total=None)
    assert b"b.py" not in capped.split(b"\n", 2)[2]
    assert "b.py" in note and "any files after it" in note


def test_cap_diff_what_is_kept_applies(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    for name in ("a.txt", "b.txt"):
        (repo / name).write_text("base\n")
    git(repo, "add", "a.txt", "b.txt")
    git(repo, "commit", "-q", "-m", "files")
    (repo / "a.txt").write_text("base\nsmall change\n")
    (repo / "b.txt").write_text("base\n" + "big change\n" * 2000)
    diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--binary"],
                          capture_output=True, check=True).stdout
    capped, note = _git_record.cap_diff(diff, 5000)
    assert "b.txt" in note
    git(repo, "checkout", "-q", "--", "a.txt", "b.txt")
    subprocess.run(["git", "-C", str(repo), "apply", "-"], input=capped, check=True)
    assert (repo / "a.txt").read_text() == "base\nsmall change\n"
    assert (repo / "b.txt").read_text() == "base\n"


def test_parse_remotes_picks_urls_per_remote() -> None:
    text = """
[core]
\tbare = false
[remote "upstream"]
\turl = https://example.com/up.git
\tfetch = +refs/heads/*:refs/remotes/upstream/*
[remote "origin"]
\turl = "git@example.com:me/fork.git"
; a comment
[branch "main"]
\tremote = origin
"""
    assert _git_dotgit.parse_remotes(text) == {
        "upstream": "https://example.com/up.git",
        "origin": "git@example.com:me/fork.git",
    }


def _scan(path: Path) -> _git_record.GitInfo:
    return _git_scan.scan(str(path), _git_dotgit.quick(str(path))).result()


def test_clean_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", remote="https://user:pw@example.com/r.git")
    quick = _git_dotgit.quick(str(repo))
    assert (quick.state, quick.branch, quick.remote) == (
        "repository", "main", "https://example.com/r.git",
    )
    assert quick.commit == git(repo, "rev-parse", "HEAD")
    info = _scan(repo)
    assert info.dirty is False and info.diff == b"" and info.untracked == []


def test_dirty_repository_diff_and_untracked(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    (repo / "model.py").write_text("def value():\n    return 42\n")
    (repo / "notes.txt").write_text("x")
    (repo / "data").mkdir()
    (repo / "data" / "a.csv").write_text("1")
    info = _scan(repo)
    assert info.dirty is True
    assert b"+    return 42" in info.diff
    assert sorted(info.untracked) == ["data/", "notes.txt"]


def test_detached_head_and_packed_refs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    git(repo, "pack-refs", "--all")
    assert _git_dotgit.quick(str(repo)).commit == git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    quick = _git_dotgit.quick(str(repo))
    assert quick.branch is None and quick.commit == git(repo, "rev-parse", "HEAD")
    assert _capture.git_tags(quick)["repro.git.branch"] == "(detached)"


def test_worktree_is_found_through_its_git_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", remote="https://example.com/r.git")
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "wt"))
    quick = _git_dotgit.quick(str(tmp_path / "wt"))
    assert quick.root == str(tmp_path / "wt")
    assert quick.commit == git(repo, "rev-parse", "HEAD")
    assert quick.remote == "https://example.com/r.git"


def test_no_repository(tmp_path: Path) -> None:
    info = _scan(tmp_path)
    assert info.state == "no repository"
    assert _capture.git_tags(info) == {"repro.git": "no repository"}


def test_repository_without_commits(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", commit=False)
    info = _scan(repo)
    assert (info.state, info.branch, info.commit) == ("no commits", "main", None)
    assert sorted(info.untracked) == ["model.py", "train.py"]


def test_huge_untracked_tree_is_capped_and_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A generous git timeout, so a busy machine is not cut off mid-scan; the cap keeps it quick.
    monkeypatch.setenv("REPRO_GIT_TIMEOUT", "60")
    repo = make_repo(tmp_path / "r")
    for i in range(1500):
        (repo / f"u{i:04d}.txt").write_text("x")
    nested = repo / "outputs"
    for i in range(50):
        (nested / f"d{i}").mkdir(parents=True)
        for j in range(40):
            (nested / f"d{i}" / f"f{j}").write_text("y")
    began = time.monotonic()
    info = _scan(repo)
    assert time.monotonic() - began < 30
    # repro's README: untracked.txt holds at most 1,000 entries, and the tag says there were more.
    assert len(info.untracked) == 1000 and info.untracked_truncated
    tags = _capture.git_tags(info)
    assert tags["repro.git.untracked"] == "1000+"


def test_a_hanging_git_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("REPRO_GIT_TIMEOUT", "0.5")
    began = time.monotonic()
    info = _scan(repo)
    # Cut off at 0.5 s: far below the fake's 30 s, with room for a busy machine.
    assert time.monotonic() - began < 15
    assert info.state.startswith("unavailable:") and "REPRO_GIT_TIMEOUT" in info.state
    assert info.commit  # what .git said is kept


def test_missing_git_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    info = _scan(repo)
    assert info.state == "unavailable: git is not installed (no `git` on PATH)"


def test_submodule_commits_are_recorded(tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib")
    repo = make_repo(tmp_path / "r")
    subprocess.run(
        ["git", "-C", str(repo), "-c", "protocol.file.allow=always", "submodule", "add", "-q",
         str(lib), "libs/lib"],
        check=True, capture_output=True, env=child_env(),
    )
    git(repo, "commit", "-q", "-m", "submodule")
    info = _scan(repo)
    assert info.submodules == [("libs/lib", git(lib, "rev-parse", "HEAD"), " ")]
    assert _capture.git_tags(info)["repro.git.submodules"].startswith("libs/lib@")


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="inotify cache is Linux only")
def test_a_rescan_is_skipped_only_while_nothing_changed(tmp_path: Path) -> None:
    from repro import _watch

    repo = make_repo(tmp_path / "r")
    root = str(repo)

    def scan() -> _git_scan.Scan:
        s = _git_scan.scan(root, _git_dotgit.quick(root))
        s.result()
        return s

    assert scan().cached is None  # first scan: starts the watch
    deadline = time.monotonic() + 10
    while root not in _watch._watches and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scan().cached is None  # first scan under the watch: stored
    assert scan().cached is not None  # nothing changed: reused
    (repo / "model.py").write_text("def value():\n    return 7\n")
    s = scan()
    assert s.cached is None
    assert s.result().dirty is True and b"return 7" in s.result().diff


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="inotify cache is Linux only")
def test_after_an_edit_only_the_changed_files_are_rescanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the watch, a scan after changes asks git about the changed files only and
    merges the answer into the kept scan; the result is what a full scan says, step by
    step, and anything file names cannot tell (a new directory) means a full scan."""
    from repro import _watch

    repo = make_repo(tmp_path / "r")
    (repo / "pkg").mkdir()
    for i in range(4):
        (repo / "pkg" / f"m{i}.py").write_text(f"V = {i}\n")
    (repo / ".gitignore").write_text("*.log\n")
    # Committed with mtimes a minute old, as on any machine where time passes between a
    # commit and an edit: restoring a file's content then leaves its stat unlike the
    # index's, where `git diff` would rewrite the index (and end the reuse) unless told not
    # to. git compares whole seconds, so without this the test sees it only when slow.
    old = time.time() - 60
    for path in repo.rglob("*"):
        if ".git" not in path.parts:
            os.utime(path, (old, old))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pkg")
    root = str(repo)

    def scan() -> _git_scan.Scan:
        s = _git_scan.scan(root, _git_dotgit.quick(root))
        s.result()
        return s

    def full() -> _git_record.GitInfo:
        with monkeypatch.context() as m:
            m.setenv("REPRO_GIT_CACHE", "0")
            return _git_scan.scan(root, _git_dotgit.quick(root)).result()

    scan()
    deadline = time.monotonic() + 10
    while root not in _watch._watches and time.monotonic() < deadline:
        time.sleep(0.05)
    scan()  # the first scan under the watch: kept
    steps = {
        "edit a tracked file": lambda: (repo / "pkg" / "m1.py").write_text("V = 10\n"),
        "add an untracked file": lambda: (repo / "new.py").write_text("N = 1\n"),
        "delete a tracked file": lambda: (repo / "pkg" / "m2.py").unlink(),
        "add an ignored file": lambda: (repo / "run.log").write_text("x\n"),
        "edit both kinds": lambda: ((repo / "new.py").write_text("N = 2\n"),
                                    (repo / "model.py").write_text("X = 1\n")),
        "remove the untracked file": lambda: (repo / "new.py").unlink(),
        "undo the first edit": lambda: (repo / "pkg" / "m1.py").write_text("V = 1\n"),
    }
    index = repo / ".git" / "index"
    before = (index.stat().st_ino, index.stat().st_mtime_ns)
    not_kept = []
    for name, step in steps.items():
        step()
        s = scan()
        got, want = s.result(), full()
        assert s.previous is not None and s.changed, f"{name}: not scanned by file"
        assert (got.dirty, got.diff, got.untracked) == (want.dirty, want.diff, want.untracked), name
        if scan().cached is None:
            not_kept.append(name)
    # The README: "while nothing changed the scan is reused; after an edit git is asked
    # about the files the events name only". Every merged scan is kept for the next one; a
    # scan that rewrote the index (undoing an edit did, before diff.autoRefreshIndex=false)
    # would make the next one full.
    assert not_kept == [], f"the merged scan was not kept after: {not_kept}"
    # The README: "The scan never writes the index".
    assert (index.stat().st_ino, index.stat().st_mtime_ns) == before
    (repo / "newdir").mkdir()
    (repo / "newdir" / "f.py").write_text("F = 1\n")
    s = scan()
    assert s.previous is None and s.cached is None  # a new directory: a full scan
    assert s.result().untracked == full().untracked == ["newdir/"]


def test_scan_reuse_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRO_GIT_CACHE", "0")
    repo = make_repo(tmp_path / "r")
    for _ in range(3):
        scan = _git_scan.scan(str(repo), _git_dotgit.quick(str(repo)))
        assert scan.cached is None and scan.key is None
        assert scan.result().dirty is False
