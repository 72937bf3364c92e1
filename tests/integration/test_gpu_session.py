"""A GPU profile's session sees exactly its GPUs (runs only where nvidia-smi finds one)."""

from __future__ import annotations

import json

import pytest
from atelier_hub.gpus import detect_gpus
from kernel import run_code

pytestmark = [
    pytest.mark.integration,
    pytest.mark.gpu,
    pytest.mark.skipif(not detect_gpus(), reason="no NVIDIA GPU on this machine (nvidia-smi found none)"),
]


def test_gpu_profile_session_gets_one_gpu_and_a_second_is_refused_when_all_are_taken(stack, alice):
    gpus = detect_gpus()
    model = stack.spawn("alice", "gpu-1", server="gpu")
    code = ("import json, os, subprocess; print(json.dumps({'cuda': os.environ['CUDA_VISIBLE_DEVICES'], "
            "'seen': subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True).stdout}))")
    out = json.loads(run_code(stack.url, model["url"], alice["token"], code))
    assert out["cuda"] == str(gpus[0][0])
    if len(gpus) == 1:
        r = stack.api("POST", "/users/alice/servers/gpu2", json={"profile": "gpu-1"})
        assert r.status_code == 409 and "0 free" in r.json()["message"]
    stack.stop_server("alice", "gpu")
