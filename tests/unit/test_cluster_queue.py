"""The GPU queue on a cluster, the pure parts (atelier_hub.cluster.queue): Kueue's queues
from the cluster settings, the checks that name the setting to fix, and a pod's place
from the visibility API's answer. Kueue itself runs in tests/k8s/test_k8s_spawn.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from atelier_hub.cluster.queue import check_queue, kueue_manifests, place_in_line, queued
from atelier_hub.cluster.settings import ClusterSettings, ClusterSettingsError, GpuQueue, load_cluster_settings
from atelier_hub.profiles import Profile, load_profiles

REPO = Path(__file__).resolve().parents[2]


def profile(name: str, **gpu) -> Profile:
    return Profile(name=name, display_name=name, cpu={"limit": 4}, memory={"limit": "16G"},
                   gpu=gpu or None)


def quotas(obj: dict) -> dict[str, str]:
    flavor = obj["spec"]["resourceGroups"][0]["flavors"][0]
    return {r["name"]: r["nominalQuota"] for r in flavor["resources"]}


def test_the_pool_lends_what_nobody_is_guaranteed_and_each_team_has_its_weight_and_guarantee():
    settings = ClusterSettings(namespace="ml", queue={
        "kueue": True, "gpus": {"nvidia.com/gpu": 8, "nvidia.com/mig-1g.10gb": 14},
        "groups": {"team-a": {"weight": 3, "guaranteed_gpus": 2}, "team-b": {"guaranteed_gpus": 1}}})
    objs = {(o["kind"], o["metadata"]["name"]): o for o in kueue_manifests(settings, [], namespace="ml")}
    pool = objs["ClusterQueue", "atelier-pool"]
    assert quotas(pool) == {"cpu": "0", "memory": "0", "nvidia.com/gpu": "5", "nvidia.com/mig-1g.10gb": "14"}
    assert "fairSharing" not in pool["spec"]
    a, b, everyone = (objs["ClusterQueue", f"atelier-{g}"] for g in ("team-a", "team-b", "everyone"))
    assert quotas(a)["nvidia.com/gpu"] == "2" and quotas(b)["nvidia.com/gpu"] == "1"
    assert quotas(everyone)["nvidia.com/gpu"] == "0" and quotas(a)["nvidia.com/mig-1g.10gb"] == "0"
    assert [q["spec"]["fairSharing"]["weight"] for q in (a, b, everyone)] == ["3", "1", "1"]
    # One cohort; only the sessions' namespace may use the queues.
    for q in (pool, a, b, everyone):
        assert q["spec"]["cohortName"] == "atelier"
        assert q["spec"]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ml"}}
        covered = q["spec"]["resourceGroups"][0]["coveredResources"]
        assert {"cpu", "memory", "nvidia.com/gpu"} <= set(covered)
    # CPU and memory never run out in a team's queue: the scheduler places those.
    assert float(quotas(a)["cpu"]) >= 100000
    assert objs["LocalQueue", "team-b"]["metadata"]["namespace"] == "ml"
    assert objs["LocalQueue", "everyone"]["spec"] == {"clusterQueue": "atelier-everyone"}


def test_every_gpu_profile_of_the_repository_is_queued_and_cpu_profiles_are_not():
    profiles = load_profiles(REPO / "profiles")
    q = GpuQueue(kueue=True, gpus={"nvidia.com/gpu": 4})
    check_queue(q, profiles)
    assert {p.name for p in profiles if queued(p, q)} == {p.name for p in profiles if p.gpu_count}
    assert not any(queued(p, GpuQueue(gpus={"nvidia.com/gpu": 4})) for p in profiles)  # kueue: false


def test_a_gpu_resource_the_queue_lacks_names_the_profile_and_the_fix():
    q = GpuQueue(kueue=True, gpus={"nvidia.com/gpu": 4})
    with pytest.raises(ValueError) as err:
        check_queue(q, [profile("gpu-mig", count=1, resource="nvidia.com/mig-1g.10gb")])
    assert "queue.gpus lists no nvidia.com/mig-1g.10gb" in str(err.value) and "'gpu-mig'" in str(err.value)
    assert "add `nvidia.com/mig-1g.10gb: N`" in str(err.value)
    with pytest.raises(ValueError, match="queue.gpus lists no nvidia.com/gpu.shared"):
        check_queue(q, [profile("gpu-shared", count=1, shared=True)])


def test_guarantees_over_the_pool_are_refused():
    q = GpuQueue(kueue=True, gpus={"nvidia.com/gpu": 2}, groups={"a": {"guaranteed_gpus": 2}, "b": {"guaranteed_gpus": 1}})
    with pytest.raises(ValueError, match="guarantee 3 GPUs in all, more than queue.gpus' nvidia.com/gpu: 2"):
        check_queue(q, [])


@pytest.mark.parametrize(("queue", "expected"), [
    ({"groups": {"Team A": {}}}, "group 'Team A': a queue's name is lower-case letters"),
    ({"gpus": {"gpu": 4}}, "must be an extended resource and a count"),
    ({"gpus": {"nvidia.com/gpu": -1}}, "must be an extended resource and a count"),
    ({"default_group": "All"}, "queue.default_group"),
    ({"kueue": "maybe"}, "queue.kueue"),
])
def test_bad_queue_settings_name_the_field(tmp_path, queue, expected):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"queue": queue}))
    with pytest.raises(ClusterSettingsError) as err:
        load_cluster_settings(path)
    assert expected in str(err.value), str(err.value)


def test_a_pods_place_is_its_workloads_position_in_its_teams_queue():
    items = [{"metadata": {"name": f"pod-{u}", "ownerReferences": [{"kind": "Pod", "uid": u}]},
              "positionInClusterQueue": i, "positionInLocalQueue": i} for i, u in enumerate(["u1", "u2", "u3"])]
    assert place_in_line({"items": items}, "u3") == (3, 3)
    assert place_in_line({"items": items}, "u1") == (1, 3)
    assert place_in_line({"items": []}, "u1") is None
    assert place_in_line({}, "u1") is None
    assert place_in_line({"items": [{"metadata": {}}]}, "u1") is None


def atelier(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atelier_hub.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_render_kueue_prints_the_queues_and_refuses_a_queue_that_is_off(tmp_path):
    on = tmp_path / "on.yaml"
    on.write_text(yaml.safe_dump({"namespace": "ml", "queue": {"kueue": True, "gpus": {"nvidia.com/gpu": 4},
                                                               "groups": {"team-a": {}}}}))
    done = atelier("render", "kueue", "--cluster", str(on))
    assert done.returncode == 0, done.stderr
    kinds = [(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(done.stdout)]
    assert kinds == [("ResourceFlavor", "atelier-gpus"), ("ClusterQueue", "atelier-pool"),
                     ("ClusterQueue", "atelier-team-a"), ("LocalQueue", "team-a"),
                     ("ClusterQueue", "atelier-everyone"), ("LocalQueue", "everyone")]
    off = tmp_path / "off.yaml"
    off.write_text("namespace: ml\n")
    done = atelier("render", "kueue", "--cluster", str(off))
    assert done.returncode != 0 and "queue.kueue is false" in done.stderr, done.stderr
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({"namespace": "ml", "queue": {"kueue": True, "gpus": {}}}))
    done = atelier("render", "kueue", "--cluster", str(short))
    assert done.returncode != 0 and "queue.gpus lists no nvidia.com/gpu" in done.stderr, done.stderr


def queue_pod(user: str, team: str, *, at: float, gated: bool, gpus: int = 1, holds_for: int | None = None,
              job: bool = False, resource: str = "nvidia.com/gpu") -> dict:
    """A hub pod naming a Kueue queue, as the API server answers it (times to the second)."""
    from datetime import datetime, timezone

    from atelier_hub.cluster.queue import GATE, HOLDS_FOR, LABEL

    stamp = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": f"jupyter-{user}", "creationTimestamp": stamp,
                         "labels": {LABEL: team, **({"atelier.dev/job": "t"} if job else {})},
                         "annotations": {"hub.jupyter.org/username": user, "hub.jupyter.org/servername": "q",
                                         **({HOLDS_FOR: str(holds_for)} if holds_for else {})}},
            "spec": {"schedulingGates": [{"name": GATE}] if gated else [],
                     "containers": [{"resources": {"limits": {resource: str(gpus), "cpu": "4"}}}]},
            "status": {"phase": "Pending" if gated else "Running", **({} if gated else {"startTime": stamp})}}


def test_the_eta_of_a_queued_server_counts_the_holders_deadlines_and_the_teams_shares():
    """Two GPUs, two teams of weight 1 holding one each: a1's server is culled at T+600
    (the culler's plan); b1's job started at T-100 with a 300 s limit (ends T+200). a2
    (asked at T-50) and b2 (T-10) wait: the teams stand level, so a2 (earlier) goes first,
    at b1's end, T+200; then b2, at a1's end, T+600. A server asked now by team-b follows,
    when a2 (20 min of idle_timeout) gives its GPU back: T+200+1200."""
    from atelier_hub.capacity import Request
    from atelier_hub.cluster.queue import queue_eta

    T = 1_800_000_000
    queue = GpuQueue(kueue=True, gpus={"nvidia.com/gpu": 2}, groups={"team-a": {}, "team-b": {}})
    pods = [queue_pod("a1", "team-a", at=T - 1000, gated=False, holds_for=1200),
            queue_pod("b1", "team-b", at=T - 100, gated=False, holds_for=300, job=True),
            queue_pod("a2", "team-a", at=T - 50, gated=True, holds_for=1200),
            queue_pod("b2", "team-b", at=T - 10, gated=True),
            # a MIG slice's pod counts in its own pool only
            queue_pod("c1", "team-b", at=T - 5, gated=False, resource="nvidia.com/mig-1g.10gb")]
    plan = {"a1/q": {"cull_at": "2027-01-15T08:10:00+00:00"}}  # T+600 (T is 08:00:00 UTC)
    eta = {user: queue_eta(f"{user}/q", pods, queue=queue, resource="nvidia.com/gpu", plan=plan, now=T)
           for user in ("a2", "b2", "a1")}
    assert eta == {"a2": T + 200, "b2": T + 600, "a1": None}
    asked = Request(key="new/", user="new", group="team-b", gpus=1, since=T)
    assert queue_eta("new/", pods, queue=queue, resource="nvidia.com/gpu", plan=plan, now=T,
                     extra=asked) == T + 200 + 1200
    # Before the culler's first look, a1's end is its start plus what it holds for
    # (T-1000+1200): both GPUs come back at T+200.
    assert queue_eta("b2/q", pods, queue=queue, resource="nvidia.com/gpu", plan={}, now=T) == T + 200
    # a1 with no known end: b2 waits for a2's GPU (T+200+1200), and one asked after b2
    # (who holds for no known time either) has no ETA.
    pods[0]["metadata"]["annotations"].pop("atelier.dev/holds-gpus-for")
    assert queue_eta("b2/q", pods, queue=queue, resource="nvidia.com/gpu", plan={}, now=T) == T + 1400
    assert queue_eta("new/", pods, queue=queue, resource="nvidia.com/gpu", plan={}, now=T, extra=asked) is None
