"""The ``>>>`` examples in repro's docstrings run and say what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import repro

MODULES = sorted(
    ["repro"] + [f"repro.{m.name}" for m in pkgutil.iter_modules(repro.__path__)
                 if m.name not in ("__main__", "_cli")]
)


# Modules with no ``>>>`` example yet; every other module must have at least one.
WITHOUT_EXAMPLES = {"repro._runs", "repro._spool_store", "repro._version", "repro._watch"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name in WITHOUT_EXAMPLES:
        assert result.attempted == 0, f"{name} has examples now: take it out of WITHOUT_EXAMPLES"
    else:
        assert result.attempted > 0, f"{name} has no >>> example: add one, or list it in WITHOUT_EXAMPLES"
