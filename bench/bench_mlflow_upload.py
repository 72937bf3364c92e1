"""A 2 GiB artifact through the MLflow front: its peak memory and the upload's time.

Run: ``python bench/bench_mlflow_upload.py [--gib 2]``.

One real ``atelier dev`` (without Trino), one hub user with a run of their own. The
artifact goes by MLflow's artifact proxy (``PUT .../mlflow-artifacts/artifacts/...``,
what ``mlflow.log_artifact`` sends) three ways, generated on the fly so no source file
is needed:
- baseline: straight to MLflow's private server, as the front's own account (the
  credentials file of the state folder), i.e. without the front;
- through the front with the user's hub token (the hub's proxy, then the front);
- downloaded back through the front (and checked by size).
Figures: each transfer's time and the ratio of the front's upload to the baseline; the
peak RSS (VmHWM) of the front and of MLflow's worker after each step. Target: the front
stays under 300 MB. PASS/FAIL is printed beside it; the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from stack import Stack  # noqa: E402

CHUNK = 1024**2
TARGET_MB = 300


class Zeros:
    """A body of ``size`` bytes, read in pieces (requests sends it with its length)."""

    def __init__(self, size: int):
        self.left = size
        self.size = size
        self.block = bytes(CHUNK)

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        n = min(n, CHUNK)
        self.left -= n
        return self.block[:n]


def _pids(needle: str, state: Path) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if needle in argv and (str(state) in argv or needle == "uvicorn"):
            found.append(int(cmdline.parent.name))
    return found


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0)
    size = int(ap.parse_args().gib * 1024**3)

    tmp = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    stack = Stack(tmp / "state", name="bench-mlflow", args=("--without", "trino"))
    try:
        stack.start()
        stack.add_user("bench")
        token = stack.user_token("bench")
        http = requests.Session()
        http.trust_env = False
        front = f"{stack.url}/services/mlflow"
        hub = {"Authorization": f"Bearer {token}"}
        api = f"{front}/api/2.0/mlflow"
        exp = http.post(f"{api}/experiments/create", json={"name": "bench-upload"}, headers=hub,
                        timeout=120).json()["experiment_id"]
        run = http.post(f"{api}/runs/create", json={"experiment_id": exp}, headers=hub,
                        timeout=120).json()["run"]["info"]["run_id"]
        path = f"api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts"

        front_pid = _pids("atelier_hub.services.mlflow_front", stack.state)[0]
        pgid = int((stack.state / "run" / "mlflow.pgid").read_text().split()[0])
        argv = Path(f"/proc/{pgid}/cmdline").read_bytes().split(b"\0")
        backend = f"http://127.0.0.1:{int(argv[argv.index(b'--port') + 1])}"
        creds = json.loads((stack.state / "mlflow" / "auth" / "credentials.json").read_text())
        direct = {"Authorization": "Basic " + base64.b64encode(
            f"service/mlflow:{creds['service/mlflow']}".encode()).decode()}

        rows = [("before", 0.0, _hwm_mb(front_pid), _hwm_mb(pgid))]

        t0 = time.monotonic()
        r = http.put(f"{backend}/{path}/direct.bin", data=Zeros(size), headers=direct, timeout=3600)
        assert r.status_code == 200, r.text[:300]
        rows.append(("upload, straight to MLflow (baseline)", time.monotonic() - t0, _hwm_mb(front_pid),
                     _hwm_mb(pgid)))

        t0 = time.monotonic()
        r = http.put(f"{front}/{path}/front.bin", data=Zeros(size), headers=hub, timeout=3600)
        assert r.status_code == 200, r.text[:300]
        rows.append(("upload through the front", time.monotonic() - t0, _hwm_mb(front_pid), _hwm_mb(pgid)))

        t0 = time.monotonic()
        got = 0
        with http.get(f"{front}/{path}/front.bin", headers=hub, stream=True, timeout=3600) as r:
            assert r.status_code == 200, r.text[:300]
            for piece in r.iter_content(CHUNK):
                got += len(piece)
        assert got == size, (got, size)
        rows.append(("download through the front", time.monotonic() - t0, _hwm_mb(front_pid), _hwm_mb(pgid)))
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the artifacts: 4 GiB and more

    gib = size / 1024**3
    print(f"\n{gib:g} GiB artifact via MLflow's artifact proxy (peak RSS = VmHWM after each step)")
    print(f"{'step':40} {'time s':>8} {'MB/s':>7} {'front MB':>9} {'MLflow MB':>10}")
    for name, secs, front_mb, mlflow_mb in rows:
        rate = f"{size / 1024**2 / secs:7.0f}" if secs else f"{'':7}"
        print(f"{name:40} {secs:8.1f} {rate} {front_mb:9.0f} {mlflow_mb:10.0f}")
    base, through = rows[1][1], rows[2][1]
    peak = max(r[2] for r in rows)
    print(f"upload through the front / baseline: {through / base:.2f}x")
    print(f"front peak RSS {peak:.0f} MB, target < {TARGET_MB} MB: {'PASS' if peak < TARGET_MB else 'FAIL'}")


if __name__ == "__main__":
    main()
