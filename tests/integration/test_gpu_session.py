"""A GPU profile's session sees exactly its GPUs: torch in the session's kernel counts as
many devices as the profile asks for, no GPU goes to two sessions, and a request beyond
the free GPUs waits in the queue (its stop takes it out) instead of starting with fewer. Runs only where the suite's GPU detection
(:func:`atelier_hub.embedded.gpus.detect_gpus`) finds one; skipped with the reason elsewhere.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from atelier_hub.embedded.gpus import detect_gpus
from kernel import run_code

pytestmark = [
    pytest.mark.integration,
    pytest.mark.gpu,
    pytest.mark.skipif(not detect_gpus(), reason="no NVIDIA GPU on this machine (nvidia-smi found none)"),
]

# What the session reports: its CUDA_VISIBLE_DEVICES and what torch sees through it.
CODE = """
import importlib.util, json, os
out = {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "torch": importlib.util.find_spec("torch") is not None}
if out["torch"]:
    import torch
    out["count"] = torch.cuda.device_count()
print(json.dumps(out))
"""


def machine_gpu_indexes() -> list[str]:
    """The machine's GPU indexes, asked of nvidia-smi here rather than through the code under test."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_each_gpu_session_sees_exactly_its_gpus_and_a_request_beyond_the_free_ones_waits(stack, alice):
    machine = machine_gpu_indexes()
    # gpu-1 first, then gpu-4 sessions while four are free: the GPUs left are then
    # fewer than gpu-4 needs, on any machine (one GPU or eight).
    plan, free = [("gpu-1", 1)], len(machine) - 1
    while free >= 4:
        plan.append(("gpu-4", 4))
        free -= 4
    held: list[str] = []
    started: list[str] = []
    try:
        for i, (profile, count) in enumerate(plan):
            server = f"gpu{i}"
            model = stack.spawn("alice", profile, server=server)
            started.append(server)
            out = json.loads(run_code(stack.url, model["url"], alice["token"], CODE).strip().splitlines()[-1])
            if not out["torch"]:
                pytest.fail("this machine has a GPU but torch is not installed in the sessions' environment "
                            f"(.venv), so what a session sees cannot be checked: install torch there "
                            f"(CUDA_VISIBLE_DEVICES was {out['cuda']!r})", pytrace=False)
            ids = out["cuda"].split(",")
            assert out["count"] == count, f"{profile}: torch sees {out['count']} GPU(s), CUDA_VISIBLE_DEVICES={ids}"
            assert len(ids) == count and set(ids) <= set(machine), (ids, machine)
            held += ids
        assert len(set(held)) == len(held), f"a GPU went to two sessions: {held}"

        r = stack.api("POST", "/users/alice/servers/gpu-waits", json={"profile": "gpu-4"})
        if len(machine) < 4:  # gpu-4 can never start here: refused at once, with the reason
            assert r.status_code == 409, r.text
            assert f"needs 4 GPU(s) and this machine has {len(machine)}" in r.json()["message"], r.json()
        else:  # it waits for the GPUs the sessions above hold, and its stop leaves the queue
            assert r.status_code == 202, r.text
            assert stack.api("GET", "/users/alice").json()["servers"]["gpu-waits"]["pending"] == "spawn"
            stack.stop_server("alice", "gpu-waits")
    finally:
        for server in started:
            stack.stop_server("alice", server)
