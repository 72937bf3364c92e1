"""Start of the stack: ``atelier dev`` against a plain JupyterHub started the same way.

Two figures, each the median of N starts, alternating between the two so that load
drifts hit both alike:
- start to login page usable: from launching the command to ``GET /hub/login`` = 200
  through the public URL (the proxy's route to the hub exists);
- start to every service ready: for Atelier, until ``atelier dev`` says every service
  (S3, MLflow, Trino) answers; a plain JupyterHub has no services, so its figure is
  the login page's.
Each start uses a fresh state folder (first-start costs included, as a new user sees
them) on free ports; the ratio is Atelier / plain.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hub"))
sys.path.insert(0, str(REPO / "bench"))
from atelier_hub.install.paths import tool_path  # noqa: E402
from atelier_hub.services._process import http_status  # noqa: E402
from bench_spawn import PLAIN_CONFIG, SIMPLE  # noqa: E402
from stack import VENV_BIN, free_port  # noqa: E402

TIMEOUT = 600  # a start that takes longer is a failure, not a figure


def _until(check, t0: float, proc: subprocess.Popen, what: str) -> float:
    while not check():
        if proc.poll() is not None:
            raise SystemExit(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() - t0 > TIMEOUT:
            raise SystemExit(f"{what}: not ready in {TIMEOUT} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def start_plain(directory: Path) -> tuple[float, float]:
    directory.mkdir(parents=True)
    port = free_port()
    cfg = directory / "jupyterhub_config.py"
    spawner = SIMPLE.format(singleuser=VENV_BIN / "jupyterhub-singleuser", dir=directory)
    cfg.write_text(PLAIN_CONFIG.format(
        port=port, hub_port=free_port(), api_port=free_port(), dir=directory,
        chp=tool_path("configurable-http-proxy"), token=secrets.token_hex(32), spawner=spawner))
    t0 = time.monotonic()
    with open(directory / "hub.log", "ab") as out:
        proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(cfg)], cwd=directory,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        login = _until(lambda: http_status(f"http://127.0.0.1:{port}/hub/login") == 200, t0, proc, "plain hub")
    finally:
        proc.terminate()
        proc.wait(120)
    return login, login


def start_atelier(directory: Path) -> tuple[float, float]:
    port = free_port()
    ready = directory / "ready.json"
    t0 = time.monotonic()
    with open(directory.with_suffix(".log"), "ab") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "atelier"), "dev", "--port", str(port), "--state", str(directory / "state"),
             "--ready-file", str(ready), "--timeout", str(TIMEOUT)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        login = _until(lambda: http_status(f"http://127.0.0.1:{port}/hub/login") == 200, t0, proc, "atelier dev")
        every = _until(ready.exists, t0, proc, "atelier dev's services")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(180)
    return login, every


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="starts of each (default 3)")
    args = ap.parse_args()
    times: dict[str, list[tuple[float, float]]] = {"atelier": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="atelier-bench-start-") as tmp:
        for i in range(args.n):
            order = [("atelier", start_atelier), ("plain", start_plain)]
            for name, start in order if i % 2 == 0 else order[::-1]:
                times[name].append(start(Path(tmp) / f"{name}-{i}"))
                login, every = times[name][-1]
                print(f"  start {i + 1}/{args.n} {name:<8} login page {login:6.2f} s, every service {every:6.2f} s",
                      flush=True)
    med = {name: [statistics.median(t[k] for t in runs) for k in (0, 1)] for name, runs in times.items()}
    (al, ae), (pl, pe) = med["atelier"], med["plain"]
    print(f"""
Start -> usable (median of {args.n}, fresh state each, same machine, same JupyterHub and proxy)
  login page    plain JupyterHub : {pl:6.2f} s   atelier dev : {al:6.2f} s   ratio {al / pl:5.2f}x  (target <= 1.5x)
  every service plain JupyterHub : {pe:6.2f} s   atelier dev : {ae:6.2f} s   ratio {ae / pe:5.2f}x""")


if __name__ == "__main__":
    main()
