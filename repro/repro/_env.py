"""The machine and session a run executes in: Python, platform, GPUs, selected variables.

The rule this module keeps: observe, never load. GPU names come from ``nvidia-smi`` only
where it is installed (bounded by a timeout, started in parallel with the rest of the
capture); the CUDA version from ``torch.version.cuda`` only when the program has already
imported torch. Every recorded environment variable goes through redaction.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping

from ._redact import redact_env

#: Variables recorded besides every ``ATELIER_*`` one: they change what a run computes.
RECORDED_VARIABLES = (
    "JUPYTERHUB_USER",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONHASHSEED",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
)
_NVIDIA_SMI_TIMEOUT = 3.0


def selected_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every ``ATELIER_*`` variable and the ones in :data:`RECORDED_VARIABLES`, redacted.

    >>> selected_environment({"ATELIER_PROFILE": "cpu", "HOME": "/root", "ATELIER_X_TOKEN": "t"})
    {'ATELIER_PROFILE': 'cpu', 'ATELIER_X_TOKEN': '[REDACTED]'}
    """
    environ = os.environ if environ is None else environ
    picked = {
        k: v for k, v in environ.items() if k.startswith("ATELIER_") or k in RECORDED_VARIABLES
    }
    return redact_env(dict(sorted(picked.items())))


def python_description() -> str:
    """E.g. ``3.11.7 (CPython)``."""
    return f"{platform.python_version()} ({platform.python_implementation()})"


class GpuProbe:
    """``nvidia-smi`` started in the background where it exists; ``.result()`` collects."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.began = time.monotonic()
        exe = shutil.which("nvidia-smi")
        if exe:
            try:
                self.proc = subprocess.Popen(
                    (exe, "--query-gpu=name,driver_version", "--format=csv,noheader"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            except OSError:
                self.proc = None

    def result(self) -> dict[str, str]:
        """``{"gpus": "NVIDIA H100 80GB HBM3 x2", "driver": "550.54"}``, or {} when none."""
        if self.proc is None:
            return {}
        try:
            out, _ = self.proc.communicate(
                timeout=max(0.05, self.began + _NVIDIA_SMI_TIMEOUT - time.monotonic())
            )
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {"gpus": f"unknown (nvidia-smi took over {_NVIDIA_SMI_TIMEOUT:g} s)"}
        if self.proc.returncode != 0:
            return {}
        return parse_nvidia_smi(out.decode("utf-8", "replace"))


def parse_nvidia_smi(output: str) -> dict[str, str]:
    """Summarise ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader``.

    >>> parse_nvidia_smi("NVIDIA H100, 550.54\\nNVIDIA H100, 550.54\\n")
    {'gpus': 'NVIDIA H100 x2', 'driver': '550.54'}
    """
    names: dict[str, int] = {}
    drivers: list[str] = []
    for line in output.splitlines():
        name, _, driver = line.rpartition(",")
        name, driver = name.strip(), driver.strip()
        if not name:
            continue
        names[name] = names.get(name, 0) + 1
        if driver not in drivers:
            drivers.append(driver)
    if not names:
        return {}
    gpus = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in names.items())
    return {"gpus": gpus, "driver": ", ".join(drivers)}


def torch_cuda() -> str | None:
    """``torch.version.cuda`` if the program already imported torch (never imports it)."""
    torch = sys.modules.get("torch")
    version = getattr(getattr(torch, "version", None), "cuda", None)
    return str(version) if version else None


_machine: dict[str, str] = {}


def machine() -> dict[str, str]:
    """Python, platform and host (computed once per process: they do not change)."""
    if not _machine:
        _machine.update(
            python=python_description(),
            python_executable=sys.executable,
            platform=platform.platform(),
            host=socket.gethostname(),
        )
    return dict(_machine)
