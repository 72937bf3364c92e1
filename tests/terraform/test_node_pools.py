"""The EKS node groups carry exactly the labels and taints that profiles/ select.

The cluster module's node groups are ``for_each`` over the pools of node_pools/,
a provider-free module that this test applies with the real terraform on the real
profiles; the pools it returns are then checked against the hub's own profile loader
with Kubernetes' scheduling rules (node selector, taints and tolerations).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from atelier_hub.profiles import Profile, Toleration, load_profiles
from tf_run import REPO, TERRAFORM, apply_root, hcl

NODE_POOLS = TERRAFORM / "modules" / "cluster" / "node_pools"
CLUSTER = TERRAFORM / "modules" / "cluster"
POOL_LABEL = "atelier.dev/pool"


def pools_for(terraform: Path, root: Path, profiles_dir: Path) -> dict:
    return apply_root(terraform, root, f"""
module "node_pools" {{
  source       = {hcl(NODE_POOLS)}
  profiles_dir = {hcl(profiles_dir)}
}}

output "pools" {{
  value = module.node_pools.pools
}}

output "default_pool_labels" {{
  value = module.node_pools.default_pool_labels
}}
""")


def tolerates(toleration: Toleration, taint: dict) -> bool:
    """Kubernetes' rule: does this toleration tolerate this taint?
    ref: https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/"""
    if toleration.effect not in (None, taint["effect"]):
        return False
    if toleration.operator == "Exists":
        return toleration.key in (None, "", taint["key"])
    return toleration.key == taint["key"] and (toleration.value or "") == (taint["value"] or "")


def schedulable(profile: Profile, pool: dict) -> bool:
    """Could a pod of this profile run on a node of this pool?"""
    selector_ok = all(pool["labels"].get(k) == v for k, v in profile.node_selector.items())
    taints_ok = all(any(tolerates(t, taint) for t in profile.tolerations)
                    for taint in pool["taints"] if taint["effect"] in ("NoSchedule", "NoExecute"))
    return selector_ok and taints_ok


@pytest.fixture(scope="module")
def repo_pools(terraform_bin, tmp_path_factory):
    return pools_for(terraform_bin, tmp_path_factory.mktemp("node_pools"), REPO / "profiles")


def test_pools_of_the_repositorys_profiles(repo_pools):
    def taint(key):
        return {"key": key, "value": "present", "effect": "NoSchedule", "eks_effect": "NO_SCHEDULE"}

    assert repo_pools["pools"] == {
        "cpu": {"profiles": ["cpu-large", "cpu-small"], "labels": {POOL_LABEL: "cpu"}, "taints": [], "gpu": False},
        "gpu": {"profiles": ["gpu-1", "gpu-4"], "labels": {POOL_LABEL: "gpu"},
                "taints": [taint("nvidia.com/gpu")], "gpu": True},
        "highmem": {"profiles": ["highmem"], "labels": {POOL_LABEL: "highmem"},
                    "taints": [taint("atelier.dev/highmem")], "gpu": False},
    }
    assert repo_pools["default_pool_labels"] == {POOL_LABEL: "cpu"}


def test_every_profile_runs_on_its_pool_and_only_there(repo_pools):
    pools = repo_pools["pools"]
    profiles = load_profiles(REPO / "profiles")
    assert {p.name for p in profiles} == {name for pool in pools.values() for name in pool["profiles"]}
    for profile in profiles:
        home = next(name for name, pool in pools.items() if profile.name in pool["profiles"])
        assert schedulable(profile, pools[home]), f"{profile.name} cannot run on its own pool {home}"
        assert pools[home]["gpu"] == any(p.gpu_count for p in profiles if p.name in pools[home]["profiles"])
        if not profile.node_selector:
            # Untainted default pool; tainted pools keep profiles that do not tolerate them off.
            assert home == "cpu" and pools[home]["taints"] == []
            assert [name for name, pool in pools.items() if schedulable(profile, pool)] == ["cpu"]
        if profile.gpu_count:
            assert pools[home]["gpu"] and any(t["key"] == "nvidia.com/gpu" for t in pools[home]["taints"])


def test_a_new_pool_in_profiles_becomes_a_node_group(terraform_bin, tmp_path):
    """The pools follow the profiles: a profile naming a new pool adds it, with its taint."""
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "profiles", profiles)
    data = yaml.safe_load((profiles / "cpu-large.yaml").read_text())
    data.update(name="arm", node_selector={POOL_LABEL: "arm", "atelier.dev/arch": "arm64"},
                tolerations=[{"key": "atelier.dev/arm", "operator": "Equal", "value": "yes", "effect": "NoExecute"}])
    (profiles / "arm.yml").write_text(yaml.safe_dump(data))
    pools = pools_for(terraform_bin, tmp_path / "root", profiles)["pools"]
    assert pools["arm"] == {
        "profiles": ["arm"], "labels": {POOL_LABEL: "arm", "atelier.dev/arch": "arm64"},
        "taints": [{"key": "atelier.dev/arm", "value": "yes", "effect": "NoExecute", "eks_effect": "NO_EXECUTE"}],
        "gpu": False,
    }
    arm = next(p for p in load_profiles(profiles) if p.name == "arm")
    assert schedulable(arm, pools["arm"]) and not schedulable(arm, pools["gpu"])


def test_a_taint_only_some_profiles_tolerate_is_left_off(terraform_bin, tmp_path):
    """gpu-1 without its toleration: the GPU pool loses the taint rather than shutting gpu-1 out."""
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "profiles", profiles)
    data = yaml.safe_load((profiles / "gpu-1.yaml").read_text())
    del data["tolerations"]
    (profiles / "gpu-1.yaml").write_text(yaml.safe_dump(data))
    pools = pools_for(terraform_bin, tmp_path / "root", profiles)["pools"]
    assert pools["gpu"]["taints"] == []
    for profile in load_profiles(profiles):
        if profile.name.startswith("gpu"):
            assert schedulable(profile, pools["gpu"])


def test_the_default_pool_exists_without_cpu_profiles(terraform_bin, tmp_path):
    """The hub and the proxy need the untainted pool even if no profile runs there."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(REPO / "profiles" / "gpu-1.yaml", profiles)
    out = pools_for(terraform_bin, tmp_path / "root", profiles)
    assert out["pools"]["cpu"] == {"profiles": [], "labels": {POOL_LABEL: "cpu"}, "taints": [], "gpu": False}
    assert set(out["pools"]) == {"cpu", "gpu"} and out["default_pool_labels"] == {POOL_LABEL: "cpu"}


def test_the_cluster_module_makes_its_node_groups_from_these_pools():
    """terraform plan of the cluster module needs the AWS provider, which cannot be
    downloaded here: check its wiring in the source instead."""
    main = (CLUSTER / "main.tf").read_text()
    assert re.search(r'module "node_pools" \{\s*source\s*=\s*"\./node_pools"', main)
    assert re.search(r"pools\s*=\s*module\.node_pools\.pools", main)
    group = main[main.index('resource "aws_eks_node_group" "this"'):]
    group = group[:group.index("\n}\n")]
    assert re.search(r"for_each\s*=\s*local\.pools\b", group)
    assert re.search(r"labels\s*=\s*each\.value\.labels\b", group)
    assert re.search(r'dynamic "taint" \{\s*for_each\s*=\s*each\.value\.taints\b', group)
    assert re.search(r"effect\s*=\s*taint\.value\.eks_effect\b", group)
    assert re.search(r'ami_type\s*=\s*each\.value\.gpu \?\s*"AL2023_x86_64_NVIDIA"', group)
    outputs = (CLUSTER / "outputs.tf").read_text()
    assert re.search(r"value\s*=\s*module\.node_pools\.default_pool_labels", outputs)


def test_a_pool_of_gpu_slices_is_labelled_for_the_device_plugin(terraform_bin, tmp_path):
    """A MIG profile's pool and a shared profile's pool carry the NVIDIA device plugin's
    config label (the plugin's documented node label), and still run their profiles; a
    pool that mixes the two is refused, naming the pool."""
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "profiles", profiles)
    base = yaml.safe_load((profiles / "gpu-1.yaml").read_text())
    for name, gpu in (("gpu-mig", {"count": 1, "resource": "nvidia.com/mig-1g.10gb"}),
                      ("gpu-shared", {"count": 1, "shared": True})):
        (profiles / f"{name}.yaml").write_text(yaml.safe_dump(
            {**base, "name": name, "default": False, "gpu": gpu, "node_selector": {POOL_LABEL: name}}))
    pools = pools_for(terraform_bin, tmp_path / "root", profiles)["pools"]
    assert pools["gpu-mig"]["labels"] == {POOL_LABEL: "gpu-mig", "nvidia.com/device-plugin.config": "mig-mixed"}
    assert pools["gpu-shared"]["labels"] == {POOL_LABEL: "gpu-shared",
                                             "nvidia.com/device-plugin.config": "time-sliced"}
    assert pools["gpu-mig"]["gpu"] and pools["gpu-shared"]["gpu"]
    assert pools["gpu"]["labels"] == {POOL_LABEL: "gpu"}  # whole GPUs: no sharing configuration
    for profile in load_profiles(profiles):
        if profile.name in ("gpu-mig", "gpu-shared"):
            assert schedulable(profile, pools[profile.name])

    mixed = yaml.safe_load((profiles / "gpu-shared.yaml").read_text())
    mixed["node_selector"] = {POOL_LABEL: "gpu-mig"}
    (profiles / "gpu-shared.yaml").write_text(yaml.safe_dump(mixed))
    with pytest.raises(Exception, match="gpu-mig") as refused:
        pools_for(terraform_bin, tmp_path / "root2", profiles)
    said = " ".join(str(refused.value).replace("│", " ").split())  # terraform wraps its messages
    assert "mix MIG slices and time-sliced shares" in said, said
