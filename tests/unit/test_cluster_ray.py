"""Personal Ray clusters on a cluster, the pure parts: the RayCluster and token Secret a
session pod gets (atelier_hub.cluster.ray), and the model the service answers with."""

from __future__ import annotations

import copy
import json

from atelier_hub.cluster.ray import cluster_model, cluster_name, ray_cluster_manifest, token_secret_manifest
from atelier_hub.profiles import Profile

# A session pod as KubeSpawner makes it (the fields that matter here), as the API returns it.
POD = {
    "metadata": {"name": "jupyter-gil", "namespace": "atelier", "uid": "0f1e",
                 "annotations": {"hub.jupyter.org/username": "gil", "hub.jupyter.org/servername": ""},
                 "labels": {"component": "singleuser-server", "hub.jupyter.org/username": "gil"}},
    "spec": {
        "serviceAccountName": "gil", "automountServiceAccountToken": True,
        "securityContext": {"fsGroup": 100}, "nodeSelector": {"atelier.dev/pool": "core"},
        "tolerations": [{"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
                         "effect": "NoSchedule"}],
        "containers": [{
            "name": "notebook", "image": "registry.example.org/atelier-base:1.2", "imagePullPolicy": "IfNotPresent",
            "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": False},
            "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://hub:8086/services/mlflow"},
                    {"name": "JUPYTERHUB_API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "jupyter-gil", "key": "t"}}},
                    {"name": "JUPYTERHUB_OAUTH_CLIENT_ID", "value": "jupyterhub-user-gil"},
                    {"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/user/gil/"},
                    {"name": "RAY_OVERRIDE_RESOURCES", "value": "{\"CPU\": 2}"},
                    {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "atelier-s3-gil",
                                                                                  "key": "AWS_ACCESS_KEY_ID"}}}],
            "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"},
                             {"name": "atelier-session", "mountPath": "/etc/atelier/session", "readOnly": True},
                             {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        }],
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-gil"}},
                    {"name": "atelier-session", "secret": {"secretName": "jupyter-gil"}},
                    {"name": "kube-api-access-x", "projected": {"sources": []}}],
    },
}
GPU = Profile(name="gpu-1", display_name="1 GPU", cpu={"guarantee": 4, "limit": 8},
              memory={"guarantee": "16G", "limit": "32G"}, gpu={"count": 1},
              node_selector={"atelier.dev/pool": "gpu"},
              tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])


def manifest(**kw):
    args = {"profile": GPU, "workers": 2, "head": {"cpu": "1", "memory": "2G"}, "gcs_port": 6379,
            "client_port": 10001, "head_ip": None, "token_secret": "ray-jupyter-gil-token", **kw}
    return ray_cluster_manifest(copy.deepcopy(POD), **args)


def test_the_cluster_and_its_token_belong_to_the_session_pod():
    rc, secret = manifest(), token_secret_manifest(POD, "s3cr3t")
    owner = [{"apiVersion": "v1", "kind": "Pod", "name": "jupyter-gil", "uid": "0f1e"}]
    assert rc["metadata"]["ownerReferences"] == owner == secret["metadata"]["ownerReferences"]
    assert rc["metadata"]["namespace"] == secret["metadata"]["namespace"] == "atelier"
    assert rc["metadata"]["annotations"] == {"atelier.dev/user": "gil", "atelier.dev/server": "",
                                             "atelier.dev/profile": "gpu-1"}
    assert rc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "atelier"
    # The token is in its Secret only, never in the RayCluster's spec.
    assert secret["stringData"] == {"token": "s3cr3t"} and "s3cr3t" not in json.dumps(rc)


def test_workers_are_sized_and_placed_by_the_profile_the_head_goes_where_the_session_is():
    rc = manifest()
    (group,) = rc["spec"]["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 2, 2)
    worker = group["template"]["spec"]
    assert worker["nodeSelector"] == {"atelier.dev/pool": "gpu"}
    assert worker["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert worker["containers"][0]["resources"] == {
        "limits": {"cpu": "8", "memory": "32000000000", "nvidia.com/gpu": "1"},
        "requests": {"cpu": "4", "memory": "16000000000", "nvidia.com/gpu": "1"}}
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["nodeSelector"] == POD["spec"]["nodeSelector"] and head["tolerations"] == POD["spec"]["tolerations"]
    assert head["containers"][0]["resources"] == {"limits": {"cpu": "1", "memory": "2G"},
                                                  "requests": {"cpu": "1", "memory": "2G"}}


def test_nodes_run_the_sessions_image_identity_and_settings_less_the_servers_own():
    rc = manifest()
    for spec in (rc["spec"]["headGroupSpec"]["template"]["spec"], rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]):
        (c,) = spec["containers"]
        assert c["image"] == "registry.example.org/atelier-base:1.2" and c["imagePullPolicy"] == "IfNotPresent"
        assert c["securityContext"] == POD["spec"]["containers"][0]["securityContext"]
        assert spec["serviceAccountName"] == "gil" and spec["securityContext"] == {"fsGroup": 100}
        env = {e["name"]: e for e in c["env"]}
        # The services' settings and the user's own credentials (by reference, as in the
        # session); not the server's OAuth client nor single-machine Ray's switches.
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://hub:8086/services/mlflow"
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "atelier-s3-gil"
        assert "JUPYTERHUB_API_TOKEN" in env
        assert not {"JUPYTERHUB_OAUTH_CLIENT_ID", "JUPYTERHUB_SERVICE_URL", "RAY_OVERRIDE_RESOURCES"} & set(env)
        assert env["RAY_AUTH_MODE"]["value"] == "token" and env["RAY_AUTH_TOKEN_PATH"]["value"] == "/run/atelier/ray-token"
        # The session's config files and the cluster's token; not the home (ReadWriteOnce:
        # it follows one node), nor the session's API token volume.
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert set(volumes) == {"atelier-session", "atelier-ray-token", "ray-tmp"}
        assert volumes["atelier-ray-token"]["secret"]["secretName"] == "ray-jupyter-gil-token"
        assert {m["mountPath"] for m in c["volumeMounts"]} == {"/etc/atelier/session", "/run/atelier/ray-token",
                                                               "/tmp/ray"}


def test_the_head_announces_head_ip_where_pods_share_their_nodes_network():
    plain = manifest()["spec"]
    assert "node-ip-address" not in plain["headGroupSpec"]["rayStartParams"]
    assert "address" not in plain["workerGroupSpecs"][0]["rayStartParams"]  # KubeRay's: the head's Service
    shared = manifest(head_ip="127.0.61.1")["spec"]
    assert shared["headGroupSpec"]["rayStartParams"]["node-ip-address"] == "127.0.61.1"
    assert shared["workerGroupSpecs"][0]["rayStartParams"]["address"] == "127.0.61.1:6379"
    params = shared["headGroupSpec"]["rayStartParams"]
    assert (params["port"], params["ray-client-server-port"], params["include-dashboard"]) == ("6379", "10001", "true")
    # The dashboard answers on the head's own address there, on the pod's network elsewhere.
    assert (params["dashboard-host"], params["dashboard-port"]) == ("127.0.61.1", "8265")
    assert plain["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    # Ready once Ray's client port answers (KubeRay's default probes ask the dashboard).
    head = shared["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["readinessProbe"]["tcpSocket"] == {"port": 10001}


def test_cluster_names_stay_short_enough_for_kuberays_services():
    assert cluster_name("jupyter-gil") == "ray-jupyter-gil"
    long_a, long_b = cluster_name("jupyter-" + "a" * 60 + "-x"), cluster_name("jupyter-" + "a" * 60 + "-y")
    assert len(long_a) <= 50 and long_a != long_b


def test_the_model_gives_an_address_once_the_head_has_one():
    rc = manifest()
    head = {"metadata": {"name": "ray-jupyter-gil-head-x", "labels": {"ray.io/node-type": "head"}},
            "status": {"phase": "Pending"}}
    worker = {"metadata": {"name": "ray-jupyter-gil-gpu-1-worker-a", "labels": {"ray.io/node-type": "worker"}},
              "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}
    model = cluster_model(rc, [worker, head], token="t", client_port=10001, head_ip=None)
    assert model["address"] == model["dashboard"] == "" and [n["role"] for n in model["nodes"]] == ["head", "worker"]
    assert [n["state"] for n in model["nodes"]] == ["pending", "starting"]
    head["status"] = {"phase": "Running", "podIP": "10.2.0.7", "conditions": [{"type": "Ready", "status": "True"}]}
    model = cluster_model(rc, [worker, head], token="t", client_port=10001, head_ip=None)
    assert (model["address"], model["gcs_address"], model["workers"], model["profile"], model["server"]) == (
        "ray://10.2.0.7:10001", "10.2.0.7:6379", 2, "gpu-1", "")
    assert [n["state"] for n in model["nodes"]] == ["running", "starting"]
    # The dashboard: the head's, for the session's proxy; the owner's server's path under the hub.
    assert (model["dashboard"], model["dashboard_url"]) == ("http://10.2.0.7:8265", "/user/gil/atelier/ray/dashboard/")


def test_the_hub_pods_services_import_without_the_embedded_modes_docker_packages():
    """The hub image has KubeSpawner, not DockerSpawner nor docker-py: a service the hub pod
    runs must not import them (a managed service that fails to start stops the hub)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    code = ("import sys\nsys.modules['dockerspawner'] = sys.modules['docker'] = None\n"
            "import atelier_hub.services.ray_clusters_kube, atelier_hub.services.jobs_server\n"
            "import atelier_hub.cluster.kubespawner\nprint('imported')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": str(repo / "hub"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.stdout.strip() == "imported", r.stderr[-2000:]


def test_gpu_workers_past_the_per_user_gpu_limit_are_refused_naming_it():
    import pytest
    from atelier_hub.cluster.ray import check_gpus
    from atelier_hub.ray_clusters import RayClusterError

    check_gpus(workers=4, profile=GPU, in_use=0, limit=4)  # exactly the limit: fine
    check_gpus(workers=50, profile=Profile(name="cpu", display_name="C", cpu={"limit": 2}, memory={"limit": "4G"}),
               in_use=4, limit=4)  # CPU workers hold no GPU
    with pytest.raises(RayClusterError) as refused:
        check_gpus(workers=2, profile=GPU, in_use=3, limit=4)
    assert refused.value.status == 409 and refused.value.field == "workers"
    assert "allows 4 per user in Ray clusters (ray_clusters.gpus_per_user in the cluster settings)" in str(refused.value)
    assert "ask for at most 1 such worker(s)" in str(refused.value)
