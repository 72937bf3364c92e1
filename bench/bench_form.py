"""The cluster's spawn form with live capacity, against the same form without it.

One test control plane (tests/k8s: kube-apiserver, scheduler, kwok on 127.0.0.1) with
100 more kwok GPU nodes (8 GPUs each) and 500 pods bound to them, and three hubs side
by side on it, each a real JupyterHub with Atelier's KubeSpawner and the test profiles:
- ``capacity``: the capacity lines as shipped (one read of the nodes and pods serves
  every view for ``capacity_max_age``, 10 s);
- ``every view reads``: ``capacity_max_age = 0``, so each view lists the 104 nodes and
  500 pods (the worst case; it happens once per 10 s in practice);
- ``plain``: ``show_capacity = False``, the form without the lines (the baseline).
The hubs' GPU profiles wait in Kueue's queue (the test hub's settings), and Kueue runs on
the control plane with their queues, as in the tests: a read lists Kueue's ClusterQueues
too, and each GPU card counts the queue and reckons its ETA over the 500 pods.
One logged-in user GETs their spawn form from each, alternating, ROUNDS times. Prints the
median of each and the ratios to the plain form.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "k8s"))
sys.path.insert(0, str(REPO / "hub"))

NODES, PODS = 100, 500
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def crowd(kube) -> None:
    """100 GPU nodes of the test's GPU pool and 500 pods on them (kwok runs them)."""
    for i in range(NODES):
        allocatable = {"cpu": "96", "memory": "1152Gi", "pods": "110", "nvidia.com/gpu": "8"}
        kube.create("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"bench-gpu-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"atelier.dev/pool": "gpu", "type": "kwok"}},
            "spec": {"taints": [GPU_TAINT]}, "status": {"capacity": allocatable, "allocatable": allocatable}})
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
    for i in range(PODS):
        kube.create("/api/v1/namespaces/bench/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"train-{i}"},
            "spec": {"nodeName": f"bench-gpu-{i % NODES}", "tolerations": [{"key": "nvidia.com/gpu",
                                                                            "operator": "Exists"}],
                     "containers": [{"name": "train", "image": "registry.invalid/train:1",
                                     "resources": {"requests": {"cpu": "4", "memory": "16Gi"},
                                                   "limits": {"nvidia.com/gpu": "1"}}}]}})
    kube.wait(f"{NODES} Ready nodes", lambda: sum(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        for n in kube.get("/api/v1/nodes", params={"labelSelector": "atelier.dev/pool=gpu"})["items"]) > NODES,
        timeout=180)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="form views per hub (default 30)")
    args = ap.parse_args()
    from control_plane import control_plane_paths, missing_binaries

    if missing_binaries():
        print(f"not run: the test cluster's tools are not built ({', '.join(missing_binaries())}); "
              "`make install-test` builds them (about 15-20 min cold)")
        return
    from conftest import LOGS, Hub, capacity_rbac, kueue
    from k8s_cluster import GPU_GROUP, ControlPlane

    hubs: dict[str, Hub] = {}
    with tempfile.TemporaryDirectory(prefix="atelier-bench-form-") as tmp:
        cp = ControlPlane(control_plane_paths(), Path(tmp) / "k8s", LOGS)
        try:
            cp.start()
            capacity_rbac(cp.admin)
            t0 = time.monotonic()
            crowd(cp.admin)
            print(f"  {NODES} nodes and {PODS} pods made in {time.monotonic() - t0:.0f} s", flush=True)
            for name, extra in (("capacity", ""), ("every view reads", "c.AtelierKubeSpawner.capacity_max_age = 0"),
                                ("plain", "c.AtelierKubeSpawner.show_capacity = False")):
                (Path(tmp) / name).mkdir()
                hub = Hub(Path(tmp) / name, cp.server, cp.pki)
                if not hubs:  # Kueue and the queues of the hubs' settings (the same for all three)
                    kueue(cp, hub.dir)
                with open(hub.dir / "jupyterhub_config.py", "a") as f:
                    f.write(f"\n{extra}\n")
                hubs[name] = hub.start()
                hub.add_user("ada", groups=(GPU_GROUP,))
            sessions = {name: hub.login("ada") for name, hub in hubs.items()}
            for name, hub in hubs.items():  # each one's first view (a first read, templates loaded)
                page = sessions[name].get(f"{hub.url}/hub/spawn/ada/bench", timeout=60).content.decode()
                assert ("atelier-capacity" in page) == (name != "plain"), (name, page[:2000])
                assert name == "plain" or "of 4 GPUs free in the queue" in page, page[:3000]
            times: dict[str, list[float]] = {name: [] for name in hubs}
            for i in range(args.n):
                order = list(hubs) if i % 2 == 0 else list(reversed(hubs))
                for name in order:
                    t = time.perf_counter()
                    r = sessions[name].get(f"{hubs[name].url}/hub/spawn/ada/bench", timeout=60)
                    times[name].append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text[:500]
        finally:
            for hub in hubs.values():
                hub.stop()
            cp.stop()
    med = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print(f"\nThe spawn form with {NODES + 4} nodes and {PODS} pods (median of {args.n} views each, same machine):")
    for name, ms in med.items():
        print(f"  {name:<17}: {ms:7.1f} ms")
    for name in ("capacity", "every view reads"):
        print(f"  ratio {name} / plain: {med[name] / med['plain']:6.2f}x")


if __name__ == "__main__":
    main()
