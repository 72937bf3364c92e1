"""The cluster spawn form's capacity lines (atelier_hub.cluster.capacity), from nodes and
pods written out here as the API server returns them; the expected numbers are counted
by hand from those objects."""

from __future__ import annotations

import asyncio
import doctest

from atelier_hub.cluster.capacity import ClusterView, capacity_text, profile_capacity
from atelier_hub.profiles import Profile

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TOLERATE_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def node(name, pool, allocatable, *, taints=(), ready=True, cordoned=False):
    return {"metadata": {"name": name, "labels": {"atelier.dev/pool": pool}},
            "spec": {"taints": list(taints), **({"unschedulable": True} if cordoned else {})},
            "status": {"allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(on, *, requests=None, limits=None, phase="Running", init=None):
    spec = {"nodeName": on, "containers": [{"resources": {k: v for k, v in
                                                          (("requests", requests), ("limits", limits)) if v}}]}
    if init:
        spec["initContainers"] = [{"resources": {"requests": init}}]
    return {"spec": spec, "status": {"phase": phase}}


def gpu_profile(count=1, **gpu):
    return Profile(name="g", display_name="G", cpu={"guarantee": 4, "limit": 8}, memory={"guarantee": "24G",
                   "limit": "32G"}, gpu={"count": count, **gpu}, node_selector={"atelier.dev/pool": "gpu"},
                   tolerations=TOLERATE_GPU)


NODES = [
    node("gpu-0", "gpu", {"cpu": "96", "memory": "1152Gi", "pods": "110", "nvidia.com/gpu": "8"}, taints=[GPU_TAINT]),
    node("gpu-1", "gpu", {"cpu": "8", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "4"}, taints=[GPU_TAINT]),
    node("cpu-0", "cpu", {"cpu": "16", "memory": "64Gi", "pods": "110"}),
]


def test_gpus_free_are_the_matching_nodes_allocatable_less_the_running_pods_requests():
    pods = [
        pod("gpu-0", limits={"nvidia.com/gpu": "3", "cpu": "8"}, requests={"cpu": "4"}),  # limits stand for requests
        pod("gpu-0", requests={"nvidia.com/gpu": "2"}, limits={"nvidia.com/gpu": "2"}),
        pod("gpu-0", limits={"nvidia.com/gpu": "2"}, phase="Succeeded"),  # ended: holds nothing
        pod("gpu-1", limits={"nvidia.com/gpu": "4"}),
        pod("cpu-0", requests={"cpu": "15"}),
    ]
    pool = profile_capacity(gpu_profile(), NODES, pods)
    # gpu-0: 8 - 3 - 2 = 3 free; gpu-1: 4 - 4 = 0; cpu-0 is not in the pool.
    assert (pool.nodes, pool.gpus_free, pool.gpus_total, pool.fits) == (2, 3, 12, True)
    assert capacity_text(gpu_profile(), pool) == "3 of 12 GPUs free · fits now"
    # 4 GPUs on one node: gpu-0 has 3, gpu-1 none; 3 + 0 free in all is not room on one node.
    big = profile_capacity(gpu_profile(4), NODES, pods)
    assert (big.gpus_free, big.fits) == (3, False)
    assert capacity_text(gpu_profile(4), big).startswith("3 of 12 GPUs free · full: ")


def test_a_cpu_request_that_no_node_of_the_pool_has_room_for_is_full_though_gpus_are_free():
    pods = [pod("gpu-0", requests={"cpu": "93"}), pod("gpu-1", requests={"cpu": "5"})]  # 3 cores left on each
    pool = profile_capacity(gpu_profile(), NODES, pods)
    assert (pool.gpus_free, pool.fits) == (12, False)  # the profile asks 4 cores (its guarantee)
    # An init container's request counts where it is the largest.
    assert not profile_capacity(gpu_profile(), NODES[:1], [pod("gpu-0", requests={"cpu": "1"},
                                                               init={"cpu": "93"})]).fits


def test_taints_selectors_cordons_and_readiness_decide_the_pool():
    cpu = Profile(name="c", display_name="C", cpu={"limit": 2}, memory={"limit": "4G"})
    # The CPU profile tolerates no GPU taint: only cpu-0 is its pool.
    assert profile_capacity(cpu, NODES, []).nodes == 1
    untolerated = Profile(name="u", display_name="U", cpu={"limit": 2}, memory={"limit": "4G"},
                          gpu={"count": 1}, node_selector={"atelier.dev/pool": "gpu"})
    assert capacity_text(untolerated, profile_capacity(untolerated, NODES, [])) == (
        "no node of this cluster offers it now (its node selector, tolerations or GPUs)")
    down = [node("gpu-0", "gpu", {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}, taints=[GPU_TAINT],
                 ready=False),
            node("gpu-1", "gpu", {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}, taints=[GPU_TAINT],
                 cordoned=True)]
    assert profile_capacity(gpu_profile(), down, []).nodes == 0


def test_slices_are_counted_in_their_own_resource():
    slices = [node("s-0", "gpu", {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/mig-1g.10gb": "2",
                                  "nvidia.com/gpu.shared": "4"}, taints=[GPU_TAINT])]
    held = [pod("s-0", limits={"nvidia.com/mig-1g.10gb": "1"}), pod("s-0", limits={"nvidia.com/gpu.shared": "3"})]
    mig, shared = gpu_profile(resource="nvidia.com/mig-1g.10gb"), gpu_profile(shared=True)
    assert capacity_text(mig, profile_capacity(mig, slices, held)) == "1 of 2 slices free · fits now"
    assert capacity_text(shared, profile_capacity(shared, slices, held)) == "1 of 4 shares free · fits now"
    # Whole GPUs are not there at all.
    assert profile_capacity(gpu_profile(), slices, held).gpus_total == 0


def test_one_read_serves_every_view_until_it_is_old_or_a_server_started():
    reads = []

    async def read():
        reads.append(1)
        return NODES, []

    async def scenario():
        view = ClusterView(read, max_age=60)
        notes = await asyncio.gather(*(view.notes([gpu_profile()]) for _ in range(20)))
        assert notes[0] == {"g": "12 of 12 GPUs free · fits now"} and len(reads) == 1
        view.stale()
        await view.notes([gpu_profile()])
        assert len(reads) == 2

    asyncio.run(scenario())


def test_a_cluster_that_cannot_be_read_leaves_the_cards_without_a_line_and_is_logged_once():
    logged = []

    class Log:
        def warning(self, msg, *args):
            logged.append(msg % args)

    async def read():
        raise PermissionError("nodes is forbidden: User \"atelier-hub\" cannot list resource \"nodes\"")

    async def scenario():
        view = ClusterView(read, max_age=0, log=Log())
        assert await view.notes([gpu_profile()]) == {}
        assert await view.notes([gpu_profile()]) == {}

    asyncio.run(scenario())
    assert len(logged) == 1 and "cannot list resource" in logged[0] and "list on nodes" in logged[0]


def test_doctests():
    from atelier_hub.cluster import capacity

    assert doctest.testmod(capacity).failed == 0


def test_a_node_with_no_pod_slot_left_has_no_room():
    full = [node("cpu-0", "cpu", {"cpu": "16", "memory": "64Gi", "pods": "2"})]
    cpu = Profile(name="c", display_name="C", cpu={"limit": 2}, memory={"limit": "4G"})
    assert profile_capacity(cpu, full, [pod("cpu-0", requests={"cpu": "1"})]).fits
    assert not profile_capacity(cpu, full, [pod("cpu-0", requests={"cpu": "1"})] * 2).fits
