"""Fault tests: real processes killed hard, a busy machine, a full disk.

Every test records its figures with :func:`figure`; they are printed at the end of the
run (by tests/conftest.py, from each process's ``test-output/faults-*.json``, merged
into ``test-output/faults.json``), so ``make test`` shows, for each
fault, the time back to healthy and the counts that must be 0 (orphans, crash loops,
lost records).
"""

from __future__ import annotations

import json
import os

import pytest
from stack import OUTPUT

FIGURES: dict[str, dict] = {}


def _own_file():
    # One file per pytest process: `make test`'s two workers may both run fault tests.
    return OUTPUT / f"faults-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.json"


def figure(name: str, **values) -> None:
    FIGURES.setdefault(name, {}).update(values)
    OUTPUT.mkdir(exist_ok=True)
    _own_file().write_text(json.dumps(FIGURES, indent=2))


@pytest.fixture
def figures():
    return figure
