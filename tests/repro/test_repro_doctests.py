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


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
