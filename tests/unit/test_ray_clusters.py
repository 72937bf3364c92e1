"""Personal Ray clusters, the pure parts: a request's checks, the nodes' commands,
environment and Docker settings (from the session's own builder), the service's
settings, and the session-side client's handling of Ray's token variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from atelier_hub.capacity import CapacitySettings
from atelier_hub.embedded.container_spawner import host_config
from atelier_hub.profiles import load_profiles
from atelier_hub.ray_clusters import (
    RayClusterError,
    check_request,
    cluster_env,
    head_command,
    node_host_config,
    worker_command,
)
from atelier_hub.services import Services, by_name
from atelier_hub.services.ray_clusters import RayClustersService
from atelier_hub.settings import SessionContext
from atelier_lab._ray import RayCluster

REPO = Path(__file__).resolve().parents[2]
NAMES = ["cpu-small", "cpu-large", "highmem"]


def ask(body, *, in_use=0, limit=4):
    return check_request(body, profile_names=NAMES, default_profile="cpu-small", workers_max=limit,
                         workers_in_use=in_use)


def test_a_plain_request_gets_the_default_profile_and_server():
    assert ask({"workers": 2}) == {"server": "", "workers": 2, "profile": "cpu-small"}
    assert ask({"workers": 1, "profile": "highmem", "server": "big"}) == {
        "server": "big", "workers": 1, "profile": "highmem"}


@pytest.mark.parametrize("body,field,words", [
    ({"workers": 0}, "workers", "at least 1"),
    ({"workers": -3}, "workers", "at least 1"),
    ({"workers": "2"}, "workers", "whole number"),
    ({"workers": True}, "workers", "whole number"),
    ({"workers": 1, "profile": "gpu-9"}, "profile", "choose one of: cpu-small, cpu-large, highmem"),
    ({"workers": 1, "server": "a/b"}, "server", "running servers"),
    ([1, 2], "body", "JSON object"),
])
def test_bad_input_names_the_field_and_the_fix(body, field, words):
    with pytest.raises(RayClusterError) as exc:
        ask(body)
    assert exc.value.field == field and exc.value.status == 400
    assert words in str(exc.value)


def test_over_the_per_user_limit_is_refused_with_the_limit_and_the_setting_named():
    with pytest.raises(RayClusterError) as exc:
        ask({"workers": 3}, in_use=2, limit=4)
    msg = str(exc.value)
    assert exc.value.field == "workers" and exc.value.status == 409  # not 403: the CLI reads 403 as a bad token
    assert "allows 4 per user" in msg and "ray_workers_per_user in the capacity settings" in msg and "at most 2" in msg
    with pytest.raises(RayClusterError, match="none is left to you"):
        ask({"workers": 1}, in_use=4, limit=4)
    assert ask({"workers": 2}, in_use=2, limit=4)["workers"] == 2


def test_the_nodes_commands():
    assert head_command(24000, object_store=800_000_000) == [
        "ray", "start", "--head", "--block", "--node-ip-address=127.0.50.1", "--port=24000", "--num-cpus=0",
        "--object-store-memory=800000000", "--include-dashboard=true", "--dashboard-host=127.0.50.1",
        "--dashboard-port=8265", "--dashboard-agent-listen-port=0", "--temp-dir=/home/jovyan/.atelier/ray",
        "--disable-usage-stats"]
    assert worker_command(24000, 0, cpus=2, object_store=800_000_000) == [
        "ray", "start", "--block", "--address=127.0.50.1:24000", "--node-ip-address=127.0.50.10", "--num-cpus=2",
        "--num-gpus=0", "--object-store-memory=800000000", "--dashboard-agent-listen-port=0", "--temp-dir=/tmp/ray"]


def test_a_node_gets_the_sessions_settings_and_credentials_but_not_its_server_or_local_ray():
    session = ["AWS_ACCESS_KEY_ID=alice-key", "AWS_SECRET_ACCESS_KEY=alice-secret",
               "MLFLOW_TRACKING_URI=http://127.0.0.1:8000/services/mlflow", "MLFLOW_TRACKING_TOKEN=alice-hub-token",
               "JUPYTERHUB_API_TOKEN=alice-hub-token", "JUPYTERHUB_USER=alice",
               "JUPYTERHUB_SERVICE_URL=http://127.0.0.1:40000/user/alice/", "JUPYTERHUB_OAUTH_CLIENT_ID=x",
               'RAY_OVERRIDE_RESOURCES={"CPU": 2, "GPU": 0}', "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0",
               "RAY_USAGE_STATS_ENABLED=0", "ATELIER_SESSION_FILES={}", "EMPTY="]
    assert cluster_env(session) == {
        "AWS_ACCESS_KEY_ID": "alice-key", "AWS_SECRET_ACCESS_KEY": "alice-secret",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:8000/services/mlflow", "MLFLOW_TRACKING_TOKEN": "alice-hub-token",
        "JUPYTERHUB_API_TOKEN": "alice-hub-token", "JUPYTERHUB_USER": "alice", "RAY_USAGE_STATS_ENABLED": "0",
        "ATELIER_SESSION_FILES": "{}", "EMPTY": "",
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/run/atelier/ray-token", "TINI_SUBREAPER": "1"}


def test_a_node_is_sized_by_its_profile_inside_the_sessions_namespaces():
    small = next(p for p in load_profiles(REPO / "profiles") if p.name == "cpu-small")
    base = host_config(small, pids_limit=8192, network=False)
    c = node_host_config(base, session_id="abc", home="/state/homes/alice", token_file="/state/ray_clusters/abc/token",
                         memory=small.memory.limit, cpus=float(small.cpu.limit))
    # profiles/cpu-small.yaml: cpu limit 2, memory limit 4G
    assert c["nano_cpus"] == 2_000_000_000 and c["mem_limit"] == c["memswap_limit"] == small.memory.limit
    assert (c["network_mode"], c["pid_mode"]) == ("container:abc", "container:abc")
    assert c["cap_drop"] == ["ALL"] and c["security_opt"] == ["no-new-privileges"] and c["auto_remove"] is True
    assert c["binds"] == {"/state/homes/alice": {"bind": "/home/jovyan", "mode": "rw"},
                          "/state/ray_clusters/abc/token": {"bind": "/run/atelier/ray-token", "mode": "ro"}}
    assert "extra_hosts" not in c  # Docker refuses host entries in another container's network


def test_the_service_settings_and_what_a_session_gets():
    svc = by_name("ray_clusters")
    assert svc.optional and svc.prefix == "/services/ray_clusters"
    assert "access:services!service=ray_clusters" in svc.session_scopes
    part = RayClustersService(url="http://127.0.0.1:8000/services/ray_clusters")
    assert CapacitySettings().ray_workers_per_user == 4  # the default per-user limit
    small = next(p for p in load_profiles(REPO / "profiles") if p.name == "cpu-small")
    ctx = SessionContext(profile=small, username="alice", services=Services(ray_clusters=part))
    assert part.session_env(ctx) == {"ATELIER_RAY_CLUSTERS_URL": "http://127.0.0.1:8000/services/ray_clusters"}


def test_the_client_sets_rays_token_variables_and_puts_them_back():
    env = {"RAY_AUTH_MODE": "disabled"}
    model = {"address": "127.0.50.1:24000", "workers": 2, "profile": "cpu-small", "server": "", "token": "t0k"}
    with RayCluster(model, created=False, env=env) as cluster:
        assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t0k"}
        assert "t0k" not in repr(cluster) and cluster.address == "127.0.50.1:24000"
    assert env == {"RAY_AUTH_MODE": "disabled"}


def test_rays_auth_mode_is_read_again_where_ray_was_imported_first():
    """`import ray` before ray_cluster(): Ray read RAY_AUTH_MODE at import; the client has it read again."""
    import os

    import ray  # noqa: F401 (imported first, as in a notebook)
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    saved = {k: os.environ.pop(k, None) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    try:
        assert not is_token_auth_enabled()
        model = {"address": "127.0.50.1:24000", "workers": 1, "profile": "cpu-small", "token": "t" * 32}
        with RayCluster(model, created=False):
            assert is_token_auth_enabled()
        assert not is_token_auth_enabled()
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
