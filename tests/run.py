"""``make test``: install what is missing, run the whole suite, say where the time went.

Rule this script keeps: it only sequences and times the phases; what each one does lives
where it did (the Makefile's ``install-test``, pytest's options in ``pytest.ini``, the
scheduler in ``tests/conftest.py``). Standard library only: it starts before the
virtualenv exists.

Phases, each timed, and the times printed together at the end:
1. ``make install-test``: the project's own install steps (nothing is assumed installed);
2. the suite on ``TEST_WORKERS`` pytest-xdist workers (default 2; 0 runs one process), each
   taking a file group whole, slowest first, without the tests marked ``alone``;
   (a third worker was measured and does not help on this 2-core machine: ten of the
   slowest files, the culling and Trino groups among them, took 6.9 min on 2 workers and
   6.8 min on 3, every group ~40% slower beside the third);
3. the tests marked ``alone``, by themselves: they load every core on purpose, which
   would skew the timing-sensitive tests running on the other worker.

``PYTEST_ARGS`` (e.g. ``make test PYTEST_ARGS="tests/unit -x"``) goes to both pytest phases.

The last line adds up both pytest phases, in pytest's words (``tests: N passed, N failed,
N skipped``). The exit code is the first failing phase's. pytest's 5 ("no test collected") fails the
run only if no phase ran a test.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_TESTS = 5


def _phase(name: str, cmd: list[str], times: list[tuple[str, float, int]], *, counts: Path | None = None) -> int:
    print(f"\n=== make test: {name} ===", flush=True)
    t0 = time.monotonic()
    env = {**os.environ, "ATELIER_TEST_COUNTS": str(counts)} if counts else None
    code = subprocess.call(cmd, cwd=REPO, env=env)
    times.append((name, time.monotonic() - t0, code))
    return code


def _totals(files: list[Path]) -> dict[str, int]:
    """The pytest phases' counts added up (tests/conftest.py writes each phase's)."""
    total = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for path in files:
        if path.exists():
            for kind, n in json.loads(path.read_text()).items():
                total[kind] = total.get(kind, 0) + n
    return total


def _install_steps(limit: int = 15) -> list[str]:
    """tests/install.py's record of the install steps that ran, slowest first."""
    path = REPO / "test-output" / "install-times.jsonl"
    if not path.exists():
        return []
    steps = sorted((json.loads(line) for line in path.read_text().splitlines() if line.strip()),
                   key=lambda s: -s["seconds"])
    return [f"{s['seconds'] / 60:6.1f} min  [{s.get('lane') or 'install'}] {s['step']}" for s in steps[:limit]]


def main() -> int:
    workers = os.environ.get("TEST_WORKERS", "2")
    extra = shlex.split(os.environ.get("PYTEST_ARGS", ""))  # e.g. PYTEST_ARGS="tests/unit -x"
    python = str(REPO / ".venv" / "bin" / "python")
    times: list[tuple[str, float, int]] = []
    code = _phase("install (make install-test)", [os.environ.get("MAKE", "make"), "install-test"], times)
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    counts = [out / "counts-suite.json", out / "counts-alone.json"]
    for path in counts:
        path.unlink(missing_ok=True)
    if code == 0:
        pytest = [python, "-m", "pytest", "-n", workers, "--dist", "loadfile"]
        first = _phase(f"the suite on {workers} workers", [*pytest, "-m", "not alone", *extra], times,
                       counts=counts[0])
        second = _phase("the tests that load every core, alone", [python, "-m", "pytest", "-m", "alone", *extra],
                        times, counts=counts[1])
        ran = [c for c in (first, second) if c != NO_TESTS]
        code = next((c for c in ran if c != 0), 0) if ran else NO_TESTS
    print("\n=== make test: time ===")
    for name, secs, status in times:
        note = "" if not status else f"  (exit {status}: no test)" if status == NO_TESTS else f"  (exit {status})"
        print(f"{secs / 60:6.1f} min  {name}{note}")
        if name.startswith("install"):
            # The install steps that ran (a cold run's breakdown), from their own timings.
            for line in _install_steps():
                print(f"    {line}")
    print(f"{sum(secs for _, secs, _ in times) / 60:6.1f} min  in all")
    total = _totals(counts)
    # One closing line for both phases, pytest's words (errors count as failures).
    print(f"tests: {total['passed']} passed, {total['failed'] + total['error']} failed, {total['skipped']} skipped",
          flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
