"""Fault tests: real processes killed hard, a busy machine, a full disk.

Every test records its figures with :func:`figure`; they are printed at the end of the
run (and written to ``test-output/faults.json``), so ``make test`` shows, for each
fault, the time back to healthy and the counts that must be 0 (orphans, crash loops,
lost records).
"""

from __future__ import annotations

import json

import pytest
from stack import OUTPUT

FIGURES: dict[str, dict] = {}


def figure(name: str, **values) -> None:
    FIGURES.setdefault(name, {}).update(values)
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "faults.json").write_text(json.dumps(FIGURES, indent=2))


@pytest.fixture
def figures():
    return figure


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.section("fault figures")
    for name, values in FIGURES.items():
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        terminalreporter.write_line(f"{name}: {shown}")
