"""Machine facts: GPUs through nvidia-smi (faked here on PATH), CUDA from an already
imported torch (faked), recorded environment variables."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from atelier_hub.embedded.gpus import detect_gpus

from repro import _env


def _fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tool(tmp_path, monkeypatch, 'printf "NVIDIA H100 80GB HBM3, 550.54.15\\n%.0s" 1 2')
    assert _env.GpuProbe().result() == {"gpus": "NVIDIA H100 80GB HBM3 x2", "driver": "550.54.15"}


def test_a_hanging_nvidia_smi_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tool(tmp_path, monkeypatch, "exec sleep 30")
    began = time.monotonic()
    result = _env.GpuProbe().result()
    # Cut off at the probe's 3 s: far below the 30 s hang, with room for a busy machine.
    assert time.monotonic() - began < 15
    assert result["gpus"].startswith("unknown (nvidia-smi took over")


def test_no_nvidia_smi_no_gpu_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _env.GpuProbe().result() == {}


def test_cuda_only_from_an_imported_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert _env.torch_cuda() is None
    assert "torch" not in sys.modules  # never imported by repro
    fake = types.ModuleType("torch")
    fake.version = types.SimpleNamespace(cuda="12.4")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert _env.torch_cuda() == "12.4"


def test_selected_environment() -> None:
    env = {
        "ATELIER_PROFILE": "gpu-1",
        "ATELIER_CPU_LIMIT": "8",
        "ATELIER_S3_SECRET": "VALUE",  # secret by name
        "JUPYTERHUB_USER": "alice",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HOME": "/home/alice",  # not recorded
        "AWS_SECRET_ACCESS_KEY": "VALUE",  # not recorded at all
    }
    assert _env.selected_environment(env) == {
        "ATELIER_CPU_LIMIT": "8",
        "ATELIER_PROFILE": "gpu-1",
        "ATELIER_S3_SECRET": "[REDACTED]",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "JUPYTERHUB_USER": "alice",
    }


@pytest.mark.gpu
@pytest.mark.skipif(not detect_gpus(), reason="no NVIDIA GPU on this machine (nvidia-smi found none)")
def test_the_real_gpus_are_recorded() -> None:
    """On a machine with NVIDIA GPUs: what repro records matches nvidia-smi itself."""
    names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True, check=True, timeout=30).stdout.split("\n")[0].strip()
    result = _env.GpuProbe().result()
    assert names and names in result["gpus"] and result["driver"]
