"""The git scan in layouts where reading ``.git`` is not enough, and when git is slow or
noisy: the dirty state must never be lost silently (real git, real repositories)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from repro_testlib import child_env, git, make_repo

from repro import _capture, _git_dotgit, _git_record, _git_scan


def _scan(path: Path) -> _git_record.GitInfo:
    return _git_scan.scan(str(path), _git_dotgit.quick(str(path))).result()


def _dirty(repo: Path) -> None:
    (repo / "model.py").write_text("def value():\n    return 42\n")


def test_git_dir_set_still_finds_commit_and_diff(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r")
    _dirty(repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    monkeypatch.setenv("REPRO_GIT_CACHE", "0")
    info = _git_scan.scan(str(elsewhere), _git_dotgit.quick(str(elsewhere))).result()
    assert info.state == "repository"
    assert info.commit == git(repo, "rev-parse", "HEAD")
    assert info.branch == "main" and info.root == str(repo)
    assert info.dirty is True and b"+    return 42" in info.diff
    assert _capture.git_tags(info)["repro.git.dirty"] == "dirty"


def _reftable_repo(path: Path) -> Path:
    """A reftable repository where git can make one (2.45+); else a files repository with
    a ``reftable`` folder, which makes reading ``.git`` give up exactly the same way."""
    path.mkdir(parents=True)
    proc = subprocess.run(["git", "init", "-q", "--ref-format=reftable", "-b", "main", str(path)],
                          capture_output=True, env=child_env())
    if proc.returncode != 0:
        shutil.rmtree(path)
        repo = make_repo(path)
        (repo / ".git" / "reftable").mkdir()
        return repo
    shutil.rmtree(path)
    path.mkdir()
    subprocess.run(["git", "init", "-q", "--ref-format=reftable", "-b", "main", str(path)],
                   check=True, env=child_env())
    return make_repo(path)


def test_reftable_repository_still_finds_commit_and_diff(tmp_path: Path) -> None:
    repo = _reftable_repo(tmp_path / "r")
    quick = _git_dotgit.quick(str(repo))
    assert quick.commit is None  # .git alone cannot say
    _dirty(repo)
    info = _scan(repo)
    assert info.state == "repository" and info.commit == git(repo, "rev-parse", "HEAD")
    assert info.dirty is True and b"+    return 42" in info.diff


def test_crlf_warnings_do_not_block_the_scan(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    for i in range(1000):
        (repo / f"f{i:04d}.txt").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "many")
    for i in range(1000):
        (repo / f"f{i:04d}.txt").write_text("b\n")
    git(repo, "config", "core.autocrlf", "true")  # one warning per file on stderr
    began = time.monotonic()
    info = _scan(repo)
    assert time.monotonic() - began < 3
    assert info.state == "repository" and info.dirty is True
    assert info.diff.count(b"diff --git") == 1000


def test_a_slow_untracked_listing_keeps_the_diff(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r")
    _dirty(repo)
    real_git = shutil.which("git")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    # A real git, slow only when listing untracked files (a huge NFS tree does this).
    wrapper.write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = ls-files ] && exec sleep 30; done\n'
        f'exec {real_git} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("REPRO_GIT_TIMEOUT", "1.5")
    info = _scan(repo)
    assert info.state == "repository"
    assert info.dirty is True and b"+    return 42" in info.diff
    assert info.scan_notes and "untracked" in info.scan_notes[0]
    assert "untracked files not listed" in _capture.git_tags(info)["repro.git.scan"]


def _with_submodule(tmp_path: Path) -> tuple[Path, Path]:
    lib = make_repo(tmp_path / "lib")
    repo = make_repo(tmp_path / "r")
    subprocess.run(
        ["git", "-C", str(repo), "-c", "protocol.file.allow=always", "submodule", "add", "-q",
         str(lib), "libs/lib"],
        check=True, capture_output=True, env=child_env(),
    )
    git(repo, "commit", "-q", "-m", "submodule")
    return repo, lib


def test_dirty_and_moved_submodules_are_recorded(tmp_path: Path) -> None:
    repo, _ = _with_submodule(tmp_path)
    sub = repo / "libs" / "lib"
    (sub / "model.py").write_text("def value():\n    return 43\n")
    info = _scan(repo)
    assert info.dirty is True
    assert b"return 43" in info.submodule_diffs["libs/lib"]
    assert _capture.git_tags(info)["repro.git.submodules"].endswith("*")
    git(sub, "commit", "-q", "-am", "moved")
    moved = git(sub, "rev-parse", "HEAD")
    info = _scan(repo)
    assert info.dirty is True and info.submodules == [("libs/lib", moved, "+")]
    patch = _git_record.format_submodule_diffs(info.submodules, info.submodule_diffs)
    assert _git_record.parse_submodule_diffs(patch)[0] == {"libs/lib": moved}
