"""``make install-test``: everything the suite needs, installed in two lanes at once.

Rule this script keeps: it only sequences and times the install steps; each step lives
where it did (``python3 -m atelier_hub.install``, ``tests/k8s/control_plane.py``,
``tests/terraform/terraform_tools.py``) and skips itself when its result is present.
Standard library only: it starts before the virtualenv exists.

Cold, the installs are about half downloads (wheels, Maven jars, Trino, npm, Debian
packages, Go modules) and half compilation (the Go tools, the base image). So:

- at once, every Go tool group's modules start downloading in the background
  (:func:`atelier_hub.install.gobuild.prefetch`);
- lane ``go`` builds the test suite's Go tools (Kubernetes, etcd, kwok and helm in one
  build, then terraform and tflint), its output prefixed ``[go]``;
- lane ``runtime``, at the same time, runs the project's own install (``.venv``, the
  proxy, the JupyterLab extension, versitygw, Spark's jars, Trino, the Docker engine
  and the images the tests run), whose downloads overlap the Go compilation;
- then checkov's environment (it needs the runtime lane's uv).

A failing lane stops the other and ends the install with its step's name (each step
says how to retry; finished parts are kept). At the end the steps that ran are listed
by time, from their own timings (``ATELIER_INSTALL_TIMES``, which ``make test``
prints again in its final summary).

``ATELIER_TEST_IMAGES`` (default ``base,hub,proxy``) names the images of ``images/`` the tests
run: the hub image is built only where a test runs it (the chart tests add ``hub``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMES = REPO / "test-output" / "install-times.jsonl"
sys.path.insert(0, str(REPO / "tests" / "k8s"))
sys.path.insert(0, str(REPO / "tests" / "terraform"))
sys.path.insert(0, str(REPO / "hub"))

import control_plane  # noqa: E402 (stdlib only)
import terraform_tools  # noqa: E402
from atelier_hub.install import _steps, gobuild, versitygw  # noqa: E402

# The images a test runs: the session image, and the hub and proxy images the chart
# tests (tests/k8s/test_chart.py) install on the real node.
TEST_IMAGES = os.environ.get("ATELIER_TEST_IMAGES", "base,hub,proxy")


class Lane(threading.Thread):
    """Commands run one after another in the background; their output prefixed."""

    def __init__(self, name: str, cmds: list[list[str]]):
        super().__init__(daemon=True)
        self.lane, self.cmds, self.proc, self.failed, self.stopped = name, cmds, None, None, False
        self.seconds = 0.0

    def run(self) -> None:
        t0 = time.monotonic()
        for cmd in self.cmds:
            if self.stopped:
                break
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True,
                                         env={**os.environ, "ATELIER_INSTALL_LANE": self.lane})
            for line in self.proc.stdout:
                print(f"[{self.lane}] {line}", end="", flush=True)
            if self.proc.wait() != 0:
                self.failed = f"{' '.join(cmd[1:])} (exit {self.proc.returncode})"
                break
        self.seconds = time.monotonic() - t0

    def stop(self) -> None:
        self.stopped = True
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own child's process group


def breakdown(path: Path = TIMES) -> list[str]:
    """The install steps that ran, slowest first, from their own timings."""
    if not path.exists():
        return []
    steps = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps.sort(key=lambda s: -s["seconds"])
    return [f"{s['seconds'] / 60:6.1f} min  [{s.get('lane') or 'install'}] {s['step']}" for s in steps]


def main() -> int:
    t0 = time.monotonic()
    TIMES.parent.mkdir(exist_ok=True)
    TIMES.write_text("")
    os.environ["ATELIER_INSTALL_TIMES"] = str(TIMES)
    py = sys.executable
    groups = [versitygw.go_group(), control_plane.go_group(), control_plane.kuberay_group(),
              *terraform_tools.go_groups().values()]
    fetching = gobuild.prefetch(groups)
    go_lane = Lane("go", [[py, "tests/k8s/control_plane.py"], [py, "tests/terraform/terraform_tools.py", "--go-only"]])
    go_lane.start()
    runtime = 1
    try:
        runtime = subprocess.call([py, "-m", "atelier_hub.install", "--test", "--images", TEST_IMAGES], cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO / "hub"),
                                       "ATELIER_INSTALL_LANE": "runtime"})
    finally:
        if runtime != 0:  # a failed step, or Ctrl-C: the go lane (its own session) stops too
            go_lane.stop()
    runtime_s = time.monotonic() - t0
    go_lane.join()
    gobuild.report_prefetch(fetching)
    code = 0
    if runtime != 0:
        _steps.say(f"the runtime install failed (exit {runtime}); see its step above. "
                   "Rerun `make install-test`: finished parts are kept.")
        code = runtime
    elif go_lane.failed:
        _steps.say(f"the Go tools lane failed: {go_lane.failed}; see its [go] lines above. "
                   "Rerun `make install-test`: finished parts are kept.")
        code = 1
    else:
        code = subprocess.call([py, "tests/terraform/terraform_tools.py"], cwd=REPO)
    print("\n=== make install-test: steps that ran (slowest first) ===")
    for line in breakdown() or ["   nothing to install: every part was there"]:
        print(line)
    print(f"{runtime_s / 60:6.1f} min  lane runtime, {go_lane.seconds / 60:.1f} min  lane go, "
          f"{(time.monotonic() - t0) / 60:.1f} min  in all", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
