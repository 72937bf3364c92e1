"""Memory and CPU caps for local sessions, through Linux cgroups where the OS allows.

Rule this module keeps: a cap is best effort and never blocks a spawn. Where the
cgroup filesystem is not writable (no root, a read-only container), the session
starts uncapped and the hub logs that once; the session's own ATELIER_MEM_LIMIT and
thread variables still tell libraries its size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["SessionCgroup"]

_ROOT = Path("/sys/fs/cgroup")
_PERIOD_US = 100_000
_warned = False


def _v2() -> bool:
    return (_ROOT / "cgroup.controllers").exists()


class SessionCgroup:
    """One cgroup (v2) or one memory + one cpu cgroup (v1) named after a server."""

    def __init__(self, name: str, *, mem_limit: int, cpu_limit: float, log: logging.Logger):
        self.name = name
        self.mem_limit = mem_limit
        self.cpu_limit = cpu_limit
        self.log = log
        self.dirs: list[Path] = []

    def create(self) -> bool:
        """Create the cgroup(s) and set the caps; False (logged once) where not allowed."""
        global _warned
        quota = max(1000, int(self.cpu_limit * _PERIOD_US))
        try:
            if _v2():
                d = _ROOT / "atelier" / self.name
                d.mkdir(parents=True, exist_ok=True)
                (d / "memory.max").write_text(str(self.mem_limit))
                (d / "cpu.max").write_text(f"{quota} {_PERIOD_US}")
                self.dirs = [d]
            else:
                mem = _ROOT / "memory" / "atelier" / self.name
                cpu = _ROOT / "cpu" / "atelier" / self.name
                mem.mkdir(parents=True, exist_ok=True)
                (mem / "memory.limit_in_bytes").write_text(str(self.mem_limit))
                cpu.mkdir(parents=True, exist_ok=True)
                (cpu / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
                (cpu / "cpu.cfs_quota_us").write_text(str(quota))
                self.dirs = [mem, cpu]
        except OSError as exc:
            if not _warned:
                self.log.warning("Sessions run without memory/CPU caps: cgroups not writable here (%s)", exc)
                _warned = True
            self.dirs = []
            return False
        return True

    def preexec(self) -> None:
        """Move the calling (child) process into the cgroup(s); runs between fork and exec."""
        for d in self.dirs:
            try:
                (d / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass

    def remove(self) -> None:
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError:
                pass  # still has processes (a kernel that outlived its server); harmless
        self.dirs = []
