"""Profiles: parsing, validation messages and both renderers (pure functions)."""

from __future__ import annotations

import pytest
from atelier_hub.profiles import (
    Profile,
    ProfileError,
    format_memory,
    load_profiles,
    parse_memory,
    resolve_profile,
    session_cpus,
    to_embedded,
    to_kubespawner,
    visible_profiles,
)
from stack import REPO


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4G", 4 * 10**9),        # decimal units, as Kubernetes reads them
        ("4Gi", 4 * 2**30),       # binary units
        ("512Mi", 512 * 2**20),
        ("1.5G", 1_500_000_000),  # fractions
        ("4gb", 4 * 10**9),       # case and a trailing B are tolerated
        (1024, 1024),             # a plain number of bytes
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text, words", [("-4G", "negative"), ("lots", "such as 4G"), (True, "boolean")])
def test_parse_memory_rejects(text, words):
    with pytest.raises(ValueError, match=words):
        parse_memory(text)


@pytest.mark.parametrize("n, text", [(4 * 10**9, "4G"), (2**30, "1Gi"), (64 * 10**9, "64G"), (1000, "1K")])
def test_format_memory(n, text):
    assert format_memory(n) == text


def test_shipped_profiles_load_in_picker_order():
    profiles = load_profiles(REPO / "profiles")
    names = [p.name for p in profiles]
    assert names[0] == "cpu-small" and profiles[0].default
    assert set(names) == {"cpu-small", "cpu-large", "highmem", "gpu-1", "gpu-4"}
    assert [p.gpu_count for p in profiles if p.name.startswith("gpu")] == [1, 4]


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ProfileError, match="no \\*.yaml profile files"):
        load_profiles(tmp_path)
    with pytest.raises(ProfileError, match="not found"):
        load_profiles(tmp_path / "nope")


def _p(**kw) -> Profile:
    base = {"name": "p", "display_name": "P", "cpu": {"limit": 2}, "memory": {"limit": "4G"}}
    return Profile(**{**base, **kw})


def test_to_kubespawner_full_entry():
    p = _p(name="gpu-1", display_name="1 GPU", description="d", cpu={"guarantee": 4, "limit": 8},
           memory={"guarantee": "24G", "limit": "32G"}, gpu={"count": 1, "type": "a100"},
           node_selector={"atelier.dev/pool": "gpu"}, image="ghcr.io/x/y:1",
           tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    assert to_kubespawner(p) == {
        "display_name": "1 GPU",
        "slug": "gpu-1",
        "description": "d",
        "default": False,
        "kubespawner_override": {
            "cpu_limit": 8.0,
            "cpu_guarantee": 4.0,
            "mem_limit": 32 * 10**9,
            "mem_guarantee": 24 * 10**9,
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "node_selector": {"atelier.dev/pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "image": "ghcr.io/x/y:1",
        },
    }


def test_to_embedded_caps_threads_at_host_cores():
    assert to_embedded(_p(cpu={"limit": 8}), host_cpus=2).threads == 2
    assert to_embedded(_p(cpu={"limit": 0.5}), host_cpus=16).threads == 1
    assert to_embedded(_p(cpu={"limit": 4}), host_cpus=16).threads == 4


# The CPU limit each file of profiles/ writes (cpu.limit), and the one count a session
# gets from it on a 2-core machine, a 16-core one, and as a pod.
PROFILE_CPUS = {
    #            limit  2 cores  16 cores  pod
    "cpu-small": (2,    2,       2,        2),
    "highmem":   (4,    2,       4,        4),
    "cpu-large": (8,    2,       8,        8),
    "gpu-1":     (8,    2,       8,        8),
    "gpu-4":     (32,   2,       16,       32),
}


@pytest.mark.parametrize("name", sorted(PROFILE_CPUS))
def test_thread_pools_spark_and_ray_get_one_cpu_count_from_the_profile(name):
    import json

    from atelier_hub.services import Services
    from atelier_hub.services.ray import RayService
    from atelier_hub.services.spark import SparkService
    from atelier_hub.session import session_env, session_files

    profile = next(p for p in load_profiles(REPO / "profiles") if p.name == name)
    limit, *expected = PROFILE_CPUS[name]
    assert profile.cpu.limit == limit
    services = Services(spark=SparkService(), ray=RayService())
    for usable, want in zip((2, 16, None), expected, strict=True):
        cpus = session_cpus(profile, usable=usable)
        env = session_env(profile, username="ada", services=services, cpus=cpus)
        spark = session_files(profile, username="ada", services=services, cpus=cpus)["spark/spark-defaults.conf"]
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(want), (name, usable)
        assert f"spark.master local[{want}]\n" in spark, (name, usable)
        assert json.loads(env["RAY_OVERRIDE_RESOURCES"])["CPU"] == want, (name, usable)
        if usable is not None:  # the embedded renderer says the same
            assert to_embedded(profile, host_cpus=usable).threads == want


def test_groups_restrict_what_a_user_sees_and_may_request():
    everyone, staff = _p(name="open", default=True), _p(name="gpu", groups=["ml"])
    assert visible_profiles([everyone, staff], set()) == [everyone]
    assert visible_profiles([everyone, staff], {"ml"}) == [everyone, staff]
    assert resolve_profile([everyone, staff], None) is everyone
    assert resolve_profile([everyone, staff], "gpu", groups={"ml"}) is staff
    with pytest.raises(ProfileError, match="'gpu' is not available to you; choose one of: open"):
        resolve_profile([everyone, staff], "gpu")
    with pytest.raises(ProfileError, match="unknown profile 'x'"):
        resolve_profile([everyone, staff], "x")


@pytest.mark.parametrize("bad, words", [
    ({"name": "Has Spaces"}, "lower-case"),
    ({"memory": {"limit": "0"}}, "more than 0"),
    ({"gpu": {"count": 0}}, "at least 1"),
    ({"gpu": {"count": 1, "shared": True, "resource": "nvidia.com/mig-1g.10gb"}}, "not both"),
    ({"gpu": {"count": 1, "resource": "mig-1g.10gb"}}, "DOMAIN/NAME"),
    ({"gpu": {"count": 1, "resource": "kubernetes.io/gpu"}}, "not an extended resource name"),
])
def test_invalid_values(bad, words):
    with pytest.raises(ValueError, match=words):
        _p(**bad)


def test_gpu_slices_ask_for_their_extended_resource_and_say_what_they_are():
    """A MIG slice and a time-sliced share (the NVIDIA device plugin's resource names):
    the pod's limit is the slice's resource; the cluster's form and the card say what the
    slice isolates; the embedded mode, which has no device plugin, says it has none."""
    from atelier_hub.embedded.spawner_base import capacity_note, render_profile_form

    mig = _p(name="mig", gpu={"count": 2, "resource": "nvidia.com/mig-1g.10gb"})
    shared = _p(name="shared", gpu={"count": 1, "shared": True})
    assert to_kubespawner(mig)["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/mig-1g.10gb": "2"}
    assert to_kubespawner(shared)["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu.shared": "1"}
    assert "isolated from other sessions" in to_kubespawner(mig)["description"]
    assert "not isolated" in to_kubespawner(shared)["description"]
    form = render_profile_form([mig, shared])
    assert '<p class="atelier-gpu-slice">A MIG slice (mig-1g.10gb): its own memory and compute' in form
    assert '<p class="atelier-gpu-slice">A time-sliced share of a GPU: its memory is not isolated' in form
    assert capacity_note(mig, free=4, total=4) == "GPU slices come from a cluster's device plugin: not on this machine"
