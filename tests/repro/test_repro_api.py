"""The public surface of repro: names, signatures, docstrings, import cost."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from repro._cli import main
from repro_testlib import child_env

import repro


def test_all_matches_public_names() -> None:
    public = {name for name in dir(repro) if not name.startswith("_")}
    # Submodules imported by the package are private (_run, ...); nothing else is public.
    assert set(repro.__all__) - {"__version__"} == public


def test_every_public_name_has_a_docstring_with_an_example() -> None:
    for name in repro.__all__:
        obj = getattr(repro, name)
        if name == "__version__":
            assert isinstance(obj, str)
            continue
        doc = inspect.getdoc(obj) or ""
        assert ">>>" in doc, f"repro.{name} needs a >>> example in its docstring"


def test_options_are_keyword_only_and_annotated() -> None:
    for func in (repro.start_run, repro.sync):
        sig = inspect.signature(func)
        for param in sig.parameters.values():
            if param.name == "experiment":
                continue  # the one positional argument: repro.start_run("mnist")
            assert param.kind in (param.KEYWORD_ONLY, param.VAR_KEYWORD), param
            assert param.annotation is not param.empty, param
        assert sig.return_annotation is not sig.empty


def test_import_is_light() -> None:
    heavy = ("mlflow", "typing", "subprocess")
    code = f"import sys, repro; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True
    ).stdout
    assert out.strip() == "[]"


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert repro.__version__ in capsys.readouterr().out


def test_package_is_typed() -> None:
    from importlib import resources

    assert resources.files("repro").joinpath("py.typed").is_file()
