"""The chart on the real node against the embedded mode, on the same machine.

Two figures of the cluster path (tests/k8s/test_chart.py measures them as a user meets
them, through the chart's proxy) beside the same two of the embedded mode:
- start to the login page: `helm install` of the Zero to JupyterHub chart to the hub's
  login page through the chart's proxy, against `atelier dev` to its login page;
- a spawn of `cpu-small` to a ready server: a real pod on the real node, against a
  container session of `atelier dev`.
Runs alternate between the two, so load drifts hit both alike; each chart run is the
chart test's first three tests (the control plane, the node and the images are started
and imported per run, but not timed). Prints the medians and the ratio chart/embedded.

And a job on the cluster against a bare Kubernetes Job: the chart test's job test times
`atelier run` (through the proxy, the jobs service in the hub pod, the hub, a pod of
KubeSpawner's on the real node, its output read back from the pod's log) to the job's
first line of output, then a batch/v1 Job of the same image on the same node to the first
line of its pod's log, one after the other in the same run; the ratio of their medians.

And a personal Ray cluster on the chart: `ray_cluster(workers=1)` in a session's kernel
(the Ray clusters service in the hub pod, KubeRay's operator, the head on the real node)
to the moment it returns (the head answers Ray's client), against a bare RayCluster of
the same image and head made by the admin, to its head pod Ready (the chart test times
it when ATELIER_BENCH_BASELINES is set).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hub"))
from bench_spawn import spawn_seconds  # noqa: E402
from bench_start import start_atelier  # noqa: E402
from stack import VENV_BIN, Stack  # noqa: E402

FIGURES = REPO / "test-output" / "k8s" / "chart-figures.json"
CHART_TESTS = ("pods_from_our_images or profiles_of_ones_groups or cpu_small_runs or job_runs_once "
               "or personal_ray_cluster")


def chart_run() -> dict[str, float]:
    """One install, login and spawn of the chart test; its printed figures."""
    FIGURES.unlink(missing_ok=True)
    r = subprocess.run([str(VENV_BIN / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
                        "tests/k8s/test_chart.py", "-k", CHART_TESTS], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "ATELIER_BENCH_BASELINES": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"the chart test failed:\n{r.stdout[-3000:]}")
    figures = json.loads(FIGURES.read_text())
    return {"start": figures["helm install to hub ready"], "spawn": figures["spawn request to JupyterLab ready"],
            "job": figures["job submission to its first line of output"],
            "bare job": figures["bare Kubernetes Job to its first line of output"],
            "ray": figures["ray cluster request to head ready"], "bare ray": figures["bare RayCluster to head ready"]}


def embedded_run(tmp: Path, i: int) -> dict[str, float]:
    (tmp / f"start-{i}").mkdir()
    login, _ = start_atelier(tmp / f"start-{i}")
    stack = Stack(tmp / f"spawn-{i}", name=f"bench-chart-{i}", args=("--no-trino",)).start()
    try:
        stack.add_user("bench")
        return {"start": login, "spawn": spawn_seconds(stack, "bench", {"profile": "cpu-small"})}
    finally:
        stack.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="runs of each (default 3)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests" / "k8s"))
    from control_plane import control_plane_paths

    missing = [name for name, path in control_plane_paths().items() if not path.exists()]
    if missing:
        print(f"not run: the test cluster's tools are not built ({', '.join(missing)}); "
              "`make install-test` builds them (about 15-20 min cold)")
        return
    runs: dict[str, list[dict[str, float]]] = {"chart": [], "embedded": []}
    with tempfile.TemporaryDirectory(prefix="atelier-bench-chart-") as tmp:
        for i in range(args.n):
            runs["chart"].append(chart_run())
            runs["embedded"].append(embedded_run(Path(tmp), i))
            print(f"  run {i + 1}: chart {runs['chart'][-1]}  embedded {runs['embedded'][-1]}", flush=True)
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in ("start", "spawn")} for mode, rs in runs.items()}
    print(f"\nThe chart on the real node against the embedded mode (median of {args.n}, same machine):")
    for key, what in (("start", "start to login page"), ("spawn", "spawn to ready server")):
        c, e = med["chart"][key], med["embedded"][key]
        print(f"  {what:22}: chart {c:6.2f} s   embedded {e:6.2f} s   ratio {c / e:5.2f}x")
    job, bare = (statistics.median(r[k] for r in runs["chart"]) for k in ("job", "bare job"))
    print(f"A job to its first line of output, on the chart's real node (median of {args.n}):\n"
          f"  atelier run {job:6.2f} s   bare Kubernetes Job {bare:6.2f} s   ratio {job / bare:5.2f}x")
    ray, bare_ray = (statistics.median(r[k] for r in runs["chart"]) for k in ("ray", "bare ray"))
    print(f"A personal Ray cluster, request to head ready, head on the chart's real node (median of {args.n}):\n"
          f"  ray_cluster() {ray:6.2f} s   bare KubeRay RayCluster {bare_ray:6.2f} s   ratio {ray / bare_ray:5.2f}x")


if __name__ == "__main__":
    main()
