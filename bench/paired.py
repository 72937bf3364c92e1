"""Two ways of doing one thing, timed in alternation: the Atelier way and its baseline.

Rule this module keeps: the runs alternate (ours first on even rounds, the baseline first
on odd ones), so drifts in the machine's load hit both alike; the report is the median of
each and their ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable


def alternate(n: int, ours: tuple[str, Callable[[int], float]], base: tuple[str, Callable[[int], float]],
              *, unit: str = "run") -> dict[str, list[float]]:
    """``n`` rounds of both (each a function of the round's index returning seconds),
    each printed as it ends; the seconds of each, by name."""
    times: dict[str, list[float]] = {ours[0]: [], base[0]: []}
    for i in range(n):
        for name, run in (ours, base) if i % 2 == 0 else (base, ours):
            times[name].append(run(i))
            print(f"  {unit} {i + 1}/{n} {name:<15} {times[name][-1]:.2f} s", flush=True)
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    """The median of each, and the first's ratio to the second (ours / baseline)."""
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{title}")
    for name, m in med.items():
        print(f"  {name:<16}: {m:6.2f} s")
    ours, base = med
    print(f"  ratio {ours} / {base}: {med[ours] / med[base]:6.2f}x")
