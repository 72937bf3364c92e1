"""GPUs of this machine, for the embedded spawner.

Rule this module keeps: a GPU is handed to one session at a time; a request that
cannot be met is refused with a message saying how many exist and how many are free,
never queued or silently given fewer.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

__all__ = ["detect_gpus", "GPUPool", "GPUUnavailable"]


class GPUUnavailable(RuntimeError):
    """A GPU profile cannot get its GPUs on this machine right now."""


def detect_gpus(timeout: float = 10.0) -> list[tuple[int, str]]:
    """(index, name) of each NVIDIA GPU that ``nvidia-smi`` reports; [] without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=timeout, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            gpus.append((int(index), name.strip()))
    return gpus


@dataclass
class GPUPool:
    """Which of the machine's GPUs each server holds (server key -> GPU indexes)."""

    gpus: list[tuple[int, str]]
    held: dict[str, list[int]] = field(default_factory=dict)

    def free(self) -> list[int]:
        taken = {i for ids in self.held.values() for i in ids}
        return [i for i, _ in self.gpus if i not in taken]

    def acquire(self, key: str, count: int, *, profile: str) -> list[int]:
        if count == 0:
            return []
        if key in self.held:
            return self.held[key]
        if not self.gpus:
            raise GPUUnavailable(
                f"Profile {profile!r} needs {count} GPU(s), but this machine has no NVIDIA GPU "
                "(nvidia-smi found none). Choose a CPU profile."
            )
        free = self.free()
        if len(free) < count:
            raise GPUUnavailable(
                f"Profile {profile!r} needs {count} GPU(s); this machine has {len(self.gpus)} "
                f"and {len(free)} free. Stop another GPU server or choose a smaller profile."
            )
        self.held[key] = free[:count]
        return self.held[key]

    def restore(self, key: str, ids: list[int]) -> None:
        """Record GPUs a server already held before a hub restart."""
        if ids:
            self.held[key] = list(ids)

    def release(self, key: str) -> None:
        self.held.pop(key, None)
