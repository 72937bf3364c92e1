"""Entry point detection: script, notebook (as a Jupyter kernel sees it), interactive."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from repro import _capture, _entry, _git_record


def test_a_script_is_relative_to_the_repository(tmp_path: Path) -> None:
    entry = _entry.EntryPoint("script", str(tmp_path / "src" / "train.py"), ["python", "x"])
    assert entry.describe(str(tmp_path)) == "src/train.py"
    assert entry.describe(None) == str(tmp_path / "src" / "train.py")
    assert _entry.EntryPoint("module", "pkg.train").describe(None) == "python -m pkg.train"


def _fake_kernel(monkeypatch: pytest.MonkeyPatch, user_ns: dict[str, str]) -> None:
    shell = types.SimpleNamespace(user_ns=user_ns)
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))


def test_notebook_path_from_jupyter_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = tmp_path / "analysis" / "train.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
    _fake_kernel(monkeypatch, {})
    entry = _entry.detect()
    assert (entry.kind, entry.target) == ("notebook", str(notebook))
    assert entry.command == ["jupyter", "execute", str(notebook)]
    capture = _capture.build(entry=entry, cwd=str(tmp_path), git=_git_record.GitInfo(
        state="repository", root=str(tmp_path), commit="a" * 40, branch="main", dirty=False),
        packages=[], gpu={})
    assert capture.tags["repro.entry_point"] == "analysis/train.ipynb"
    assert capture.tags["mlflow.source.type"] == "NOTEBOOK"


def test_notebook_path_from_ipython_session(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    _fake_kernel(monkeypatch, {"__session__": str(tmp_path / "n.ipynb")})
    assert _entry.detect().target == str(tmp_path / "n.ipynb")


def test_jpy_session_name_alone_is_not_a_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    # A script started from a notebook (`!python train.py`) inherits the variable.
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/n.ipynb")
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert _entry.detect().kind != "notebook"
