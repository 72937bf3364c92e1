"""Personal Ray clusters on a cluster: one KubeRay ``RayCluster`` per session that asks.

Rule this module keeps: it is pure. It turns a running session pod (as the API server
returns it), the profile that sizes the workers and the cluster settings into the
``RayCluster`` and its token's ``Secret``, and KubeRay's objects back into the model the
Ray clusters service answers with (the embedded mode's shape, :mod:`atelier_hub.ray_clusters`).
The I/O is :mod:`atelier_hub.services.ray_clusters_kube`'s.

How a cluster is built, and why:

- **Owned by the session's pod** (an ownerReference, not a controller one): Kubernetes'
  garbage collector deletes the ``RayCluster``, and KubeRay's pods with it, when the
  pod goes (stopped, culled, its user removed). So is the token's Secret.
- **The session's image, environment and identity**: the head and workers run the
  session container's image (the same Ray and Python by construction), its environment
  (the services' settings) less what belongs to the server (its hub token's OAuth
  client, single-machine Ray's switches: :data:`atelier_hub.ray_clusters._DROP`), its
  ``envFrom`` (the user's own Secret: S3 keys, MLflow's token), its ServiceAccount,
  security context and network settings. The home volume is not mounted: a
  ReadWriteOnce volume follows one node, and workers go where their profile sends them.
- **Sized by the profile**: the workers get the named profile's requests, limits, GPUs,
  node selector and tolerations (the same fields KubeSpawner gets from
  :func:`atelier_hub.profiles.to_kubespawner`). The head goes where the session is (its
  pod's node selector and tolerations), with the cluster settings' small size, and
  takes tasks too.
- **Token authentication**: Ray's own (``RAY_AUTH_MODE=token``), with a token made for
  this cluster, in a Secret mounted read-only into each node; only its owner's session
  gets it (the service's answer to that user's hub token). Without it a Ray API answers
  anyone who reaches its port.
- **Addresses**: the session reaches the head with Ray's client,
  ``ray://HEAD:CLIENT_PORT``, HEAD being the head pod's IP, or the settings' ``head_ip``
  where pods share their node's network (the head then announces that address).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..profiles import Profile
from ..ray_clusters import _DROP, DASHBOARD_PORT, TOKEN_PATH, RayClusterError, dashboard_url

__all__ = ["RAY_API", "USER_LABEL", "check_gpus", "cluster_model", "cluster_name", "cluster_workers", "head_profile",
           "label_value", "network_policy_manifest", "ray_cluster_manifest", "token_secret_manifest",
           "worker_resources"]

#: KubeRay's API group and version (its RayCluster CRD)
RAY_API = "ray.io/v1"
#: who a RayCluster belongs to (the label holds a slug; the annotations hold the names)
USER_LABEL = "atelier.dev/ray-user"
SERVER_LABEL = "atelier.dev/ray-server"
USER_ANNOTATION = "atelier.dev/user"
SERVER_ANNOTATION = "atelier.dev/server"
PROFILE_ANNOTATION = "atelier.dev/profile"
#: KubeRay's labels on the pods it makes
KUBERAY_CLUSTER_LABEL = "ray.io/cluster"
KUBERAY_NODE_TYPE_LABEL = "ray.io/node-type"
_TOKEN_VOLUME = "atelier-ray-token"
_TEMP_VOLUME = "ray-tmp"


def cluster_name(pod_name: str) -> str:
    """The RayCluster of session pod ``pod_name`` (KubeRay names its Services after it,
    which must stay DNS labels: at most 63 characters with ``-head-svc``).

    >>> cluster_name("jupyter-gil")
    'ray-jupyter-gil'
    >>> len(cluster_name("jupyter-" + "a" * 80)) <= 50
    True
    """
    name = f"ray-{pod_name}"
    if len(name) > 50:
        import hashlib

        name = f"{name[:41]}-{hashlib.sha256(pod_name.encode()).hexdigest()[:8]}"
    return name


def label_value(value: str) -> str:
    """A label value for any name (the names themselves are in annotations).

    >>> label_value("ada"), label_value(""), label_value("a.b@example.org")
    ('ada', '', 'a.b-example.org')
    """
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")


def worker_resources(profile: Profile) -> dict[str, dict[str, str]]:
    """A worker's requests and limits: the profile's, as KubeSpawner gives a session's.

    >>> worker_resources(Profile(name="p", display_name="P", cpu={"guarantee": 0.5, "limit": 2},
    ...                          memory={"guarantee": "1G", "limit": "4G"}))
    {'limits': {'cpu': '2', 'memory': '4000000000'}, 'requests': {'cpu': '0.5', 'memory': '1000000000'}}
    """
    def cpu(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else str(value)

    limits = {"cpu": cpu(profile.cpu.limit), "memory": str(profile.memory.limit)}
    requests = {"cpu": cpu(profile.cpu.guarantee if profile.cpu.guarantee is not None else profile.cpu.limit),
                "memory": str(profile.memory.guarantee or profile.memory.limit)}
    if profile.gpu_count:
        limits[profile.gpu.kubernetes_resource] = str(profile.gpu_count)
        requests[profile.gpu.kubernetes_resource] = str(profile.gpu_count)
    return {"limits": limits, "requests": requests}


def head_profile(profile: Profile, *, cpu: float, memory: str) -> Profile:
    """The sizes a cluster's head is counted at in usage: the settings' head size, no GPU
    (the workers are counted at ``profile``'s).

    >>> p = Profile(name="gpu-1", display_name="G", cpu={"limit": 8}, memory={"limit": "32G"}, gpu={"count": 1})
    >>> h = head_profile(p, cpu=1, memory="2G")
    >>> h.name, h.cpu.limit, h.memory.limit, h.gpu_count
    ('gpu-1', 1.0, 2000000000, 0)
    """
    from ..profiles import CPU, Memory

    return profile.model_copy(update={"cpu": CPU(limit=cpu), "memory": Memory(limit=memory), "gpu": None})


def _env(container: Mapping[str, Any]) -> list[dict]:
    """The session container's variables a node takes (see :data:`atelier_hub.ray_clusters._DROP`)."""
    return [e for e in container.get("env") or [] if not _DROP.match(e.get("name", ""))]


def _config_volumes(pod_spec: Mapping[str, Any], session: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """The session's Secret and ConfigMap volumes (its services' config files, which its
    environment points the libraries at) and their mounts; not the home, nor the
    API token's projected volume (admission gives a pod its own)."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or [] if "secret" in v or "configMap" in v}
    mounts = [m for m in session.get("volumeMounts") or [] if m.get("name") in volumes]
    return [volumes[m["name"]] for m in mounts], mounts


def _node_container(session: Mapping[str, Any], *, resources: dict, probe_port: int,
                    mounts: list[dict] = ()) -> dict:
    """One Ray container: the session's image, environment and security, Ray's token."""
    container = {
        "name": "ray",
        "image": session["image"],
        "env": [*_env(session), {"name": "RAY_AUTH_MODE", "value": "token"},
                {"name": "RAY_AUTH_TOKEN_PATH", "value": TOKEN_PATH},
                {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}],
        "resources": resources,
        "volumeMounts": [*mounts, {"name": _TOKEN_VOLUME, "mountPath": TOKEN_PATH, "subPath": "token",
                                   "readOnly": True}, {"name": _TEMP_VOLUME, "mountPath": "/tmp/ray"}],
        # Ready once Ray's client port answers; KubeRay's own probes ask the dashboard agent's
        # port, which is Ray's choice here (see node_params).
        "readinessProbe": {"tcpSocket": {"port": probe_port}, "periodSeconds": 2, "failureThreshold": 300},
        "livenessProbe": {"tcpSocket": {"port": probe_port}, "initialDelaySeconds": 60, "periodSeconds": 10,
                          "failureThreshold": 6},
    }
    for key in ("imagePullPolicy", "envFrom", "securityContext", "workingDir"):
        if session.get(key):
            container[key] = session[key]
    return container


def _pod_spec(pod_spec: Mapping[str, Any], container: dict, *, token_secret: str, volumes: list[dict],
              placement: Mapping[str, Any]) -> dict:
    """A node's pod: the session pod's identity and network, the node's own placement."""
    spec: dict[str, Any] = {
        "containers": [container],
        # The token is the cluster's alone, in its own pods only: readable by the image's user.
        "volumes": [*volumes, {"name": _TOKEN_VOLUME, "secret": {"secretName": token_secret, "defaultMode": 0o444}},
                    # Ray's sockets and logs (`/tmp/ray`) on the node's disk, beside the pod, not
                    # in the container's writable layer.
                    {"name": _TEMP_VOLUME, "emptyDir": {}}],
        "restartPolicy": "Always",
        **{k: v for k, v in placement.items() if v},
    }
    for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext", "hostNetwork",
                "dnsPolicy", "dnsConfig", "hostAliases", "imagePullSecrets", "priorityClassName",
                "terminationGracePeriodSeconds"):
        if key in pod_spec:
            spec[key] = pod_spec[key]
    return spec


def check_gpus(*, workers: int, profile: Profile, in_use: int, limit: int) -> None:
    """Refuse a request whose workers' GPUs, with those of the user's other clusters
    (``in_use``), pass the per-user limit; the error names it and the fix.

    >>> gpu = Profile(name="gpu-1", display_name="G", cpu={"limit": 8}, memory={"limit": "32G"}, gpu={"count": 1})
    >>> check_gpus(workers=2, profile=gpu, in_use=2, limit=4)
    >>> check_gpus(workers=3, profile=gpu, in_use=2, limit=4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    atelier_hub.ray_clusters.RayClusterError: 3 gpu-1 worker(s) hold 3 GPU(s); with the 2 ...
    """
    need = workers * profile.gpu_count
    if need and need + in_use > limit:
        left = max(0, limit - in_use)
        raise RayClusterError("workers", f"{workers} {profile.name} worker(s) hold {need} GPU(s); with the {in_use} "
                              f"your other Ray clusters hold that makes {need + in_use}, and this deployment allows "
                              f"{limit} per user in Ray clusters (ray_clusters.gpus_per_user in the cluster "
                              f"settings): ask for at most {left // profile.gpu_count} such worker(s), a CPU profile, "
                              "or stop another cluster (atelier ray down SERVER)", status=409)


def network_policy_manifest(pod: Mapping[str, Any]) -> dict:
    """Only the owner's sessions and the cluster's own nodes reach its pods (Ray's token
    guards them too); owned by the session's pod, like the cluster.

    >>> np = network_policy_manifest({"metadata": {"name": "jupyter-gil", "namespace": "hub", "uid": "u1",
    ...                                            "labels": {"hub.jupyter.org/username": "gil"}}})
    >>> [f["podSelector"]["matchLabels"] for f in np["spec"]["ingress"][0]["from"]]
    [{'hub.jupyter.org/username': 'gil', 'component': 'singleuser-server'}, {'ray.io/cluster': 'ray-jupyter-gil'}]
    """
    meta = pod["metadata"]
    name = cluster_name(meta["name"])
    owner = {"hub.jupyter.org/username": (meta.get("labels") or {}).get("hub.jupyter.org/username", ""),
             "component": "singleuser-server"}
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": {"app.kubernetes.io/managed-by": "atelier"},
                     "ownerReferences": [_owner(pod)]},
        "spec": {"podSelector": {"matchLabels": {KUBERAY_CLUSTER_LABEL: name}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": owner}},
                                       {"podSelector": {"matchLabels": {KUBERAY_CLUSTER_LABEL: name}}}]}]},
    }


def token_secret_manifest(pod: Mapping[str, Any], token: str) -> dict:
    """The cluster's token, owned by the session's pod (gone with it)."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": f"{cluster_name(pod['metadata']['name'])}-token", "namespace": pod["metadata"]["namespace"],
                     "labels": dict(_labels(pod)), "ownerReferences": [_owner(pod)]},
        "stringData": {"token": token},
    }


def _owner(pod: Mapping[str, Any]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}


def _labels(pod: Mapping[str, Any]) -> dict[str, str]:
    ann = pod["metadata"].get("annotations") or {}
    return {USER_LABEL: label_value(ann.get("hub.jupyter.org/username", "")),
            SERVER_LABEL: label_value(ann.get("hub.jupyter.org/servername", "")),
            "app.kubernetes.io/managed-by": "atelier"}


def ray_cluster_manifest(pod: Mapping[str, Any], *, profile: Profile, workers: int, head: Mapping[str, str],
                         gcs_port: int, client_port: int, head_ip: str | None, token_secret: str,
                         dashboard_port: int = DASHBOARD_PORT) -> dict:
    """The ``RayCluster`` of session ``pod``: a head where the session is and ``workers``
    workers sized by ``profile``.

    >>> pod = {"metadata": {"name": "jupyter-gil", "namespace": "hub", "uid": "u1",
    ...                     "annotations": {"hub.jupyter.org/username": "gil"}},
    ...        "spec": {"nodeSelector": {"pool": "core"}, "hostNetwork": True,
    ...                 "containers": [{"name": "notebook", "image": "base:1", "env": [
    ...                     {"name": "MLFLOW_TRACKING_URI", "value": "http://hub:1"},
    ...                     {"name": "JUPYTERHUB_OAUTH_CALLBACK_URL", "value": "x"}]}]}}
    >>> p = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"},
    ...             node_selector={"pool": "cpu"})
    >>> rc = ray_cluster_manifest(pod, profile=p, workers=2, head={"cpu": "1", "memory": "2G"}, gcs_port=6379,
    ...                           client_port=10001, head_ip=None, token_secret="t")
    >>> rc["metadata"]["ownerReferences"][0]["uid"], rc["spec"]["workerGroupSpecs"][0]["replicas"]
    ('u1', 2)
    >>> rc["spec"]["headGroupSpec"]["template"]["spec"]["nodeSelector"]
    {'pool': 'core'}
    >>> worker = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    >>> worker["nodeSelector"], [e["name"] for e in worker["containers"][0]["env"]][:2]
    ({'pool': 'cpu'}, ['MLFLOW_TRACKING_URI', 'RAY_AUTH_MODE'])
    """
    meta, spec = pod["metadata"], pod["spec"]
    session = next((c for c in spec["containers"] if c.get("name") == "notebook"), spec["containers"][0])
    ann = meta.get("annotations") or {}
    # Every node: ports of Ray's choosing where KubeRay would fix them (8080, 52365), no usage stats.
    node_params = {"metrics-export-port": "0", "dashboard-agent-listen-port": "0", "dashboard-agent-grpc-port": "0",
                   "disable-usage-stats": "true"}
    # The dashboard answers on the pod's network (the owner's session proxies it, with the
    # cluster's token; the NetworkPolicy keeps other pods out), or on `head_ip` alone.
    head_params = {**node_params, "port": str(gcs_port), "ray-client-server-port": str(client_port),
                   "include-dashboard": "true", "dashboard-host": head_ip or "0.0.0.0",
                   "dashboard-port": str(dashboard_port), "num-cpus": str(max(1, int(float(head["cpu"]))))}
    worker_params = dict(node_params)
    if head_ip:
        head_params["node-ip-address"] = head_ip
        worker_params["address"] = f"{head_ip}:{gcs_port}"
    head_resources = {"limits": dict(head), "requests": dict(head)}
    volumes, mounts = _config_volumes(spec, session)
    head_pod = _pod_spec(spec, _node_container(session, resources=head_resources, probe_port=client_port,
                                               mounts=mounts),
                         token_secret=token_secret, volumes=volumes,
                         placement={"nodeSelector": spec.get("nodeSelector"), "tolerations": spec.get("tolerations")})
    worker_container = _node_container(session, resources=worker_resources(profile), probe_port=0, mounts=mounts)
    # A worker's raylet port is Ray's choice: its liveness is `ray start --block`'s own (the
    # container ends with it); KubeRay's default probes would ask the dashboard agent.
    worker_container["readinessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 5}
    worker_container["livenessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 30}
    worker_pod = _pod_spec(spec, worker_container, token_secret=token_secret, volumes=volumes, placement={
        "nodeSelector": dict(profile.node_selector) or None,
        "tolerations": [t.model_dump(exclude_none=True) for t in profile.tolerations] or None})
    labels = _labels(pod)
    return {
        "apiVersion": RAY_API, "kind": "RayCluster",
        "metadata": {"name": cluster_name(meta["name"]), "namespace": meta["namespace"], "labels": labels,
                     "annotations": {USER_ANNOTATION: ann.get("hub.jupyter.org/username", ""),
                                     SERVER_ANNOTATION: ann.get("hub.jupyter.org/servername", ""),
                                     PROFILE_ANNOTATION: profile.name},
                     "ownerReferences": [_owner(pod)]},
        "spec": {
            "headGroupSpec": {"rayStartParams": head_params,
                              "template": {"metadata": {"labels": dict(labels)}, "spec": head_pod}},
            "workerGroupSpecs": [{
                "groupName": label_value(profile.name) or "workers", "replicas": workers, "minReplicas": workers,
                "maxReplicas": workers, "rayStartParams": worker_params,
                "template": {"metadata": {"labels": dict(labels)}, "spec": worker_pod}}],
        },
    }


def cluster_workers(rc: Mapping[str, Any]) -> int:
    """The workers a RayCluster asks for, over its worker groups.

    >>> cluster_workers({"spec": {"workerGroupSpecs": [{"replicas": 2}, {"replicas": 1}]}})
    3
    """
    return sum(g.get("replicas", 0) for g in rc["spec"].get("workerGroupSpecs") or [])


def cluster_model(rc: Mapping[str, Any], pods: list[dict], *, token: str, client_port: int, gcs_port: int = 6379,
                  head_ip: str | None, dashboard_port: int = DASHBOARD_PORT, hub_base: str = "/") -> dict:
    """What the service answers for a RayCluster and its pods (the embedded mode's shape):
    ``server``, ``profile``, ``workers``, ``address`` (Ray's client URL; empty until the
    head has an IP), ``gcs_address`` (the head's GCS, which the session's activity probe
    asks whether tasks run), ``token``, ``dashboard`` (Ray's dashboard, which the session
    proxies) and ``dashboard_url`` (that proxy's path under the hub's URL), and each
    node's role, name and state.

    >>> rc = {"metadata": {"name": "ray-jupyter-gil", "annotations": {"atelier.dev/server": "",
    ...       "atelier.dev/profile": "cpu-small"}}, "spec": {"workerGroupSpecs": [{"replicas": 1}]}}
    >>> pods = [{"metadata": {"name": "h", "labels": {"ray.io/node-type": "head"}},
    ...          "status": {"phase": "Running", "podIP": "10.1.2.3", "conditions": [
    ...              {"type": "Ready", "status": "True"}]}}]
    >>> m = cluster_model(rc, pods, token="t", client_port=10001, head_ip=None)
    >>> m["address"], m["nodes"]
    ('ray://10.1.2.3:10001', [{'role': 'head', 'name': 'h', 'state': 'running'}])
    """
    ann = rc["metadata"].get("annotations") or {}

    def state(p: dict) -> str:
        status = p.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if status.get("phase") == "Running":
            return "running" if ready else "starting"
        return (status.get("phase") or "pending").lower()

    head = next((p for p in pods if (p["metadata"].get("labels") or {}).get(KUBERAY_NODE_TYPE_LABEL) == "head"), None)
    # the head's address once it has a pod (and, off head_ip, an IP of its own)
    ip = (head_ip or (head.get("status") or {}).get("podIP")) if head is not None else None
    nodes = sorted(pods, key=lambda p: ((p["metadata"].get("labels") or {}).get(KUBERAY_NODE_TYPE_LABEL) != "head",
                                        p["metadata"]["name"]))
    return {"server": ann.get(SERVER_ANNOTATION, ""), "profile": ann.get(PROFILE_ANNOTATION, ""),
            "workers": cluster_workers(rc),
            "address": f"ray://{ip}:{client_port}" if ip else "", "token": token,
            "gcs_address": f"{ip}:{gcs_port}" if ip else "",
            "dashboard": f"http://{ip}:{dashboard_port}" if ip else "",
            "dashboard_url": dashboard_url(hub_base, ann.get(USER_ANNOTATION, ""), ann.get(SERVER_ANNOTATION, "")),
            "cluster": rc["metadata"]["name"],
            "nodes": [{"role": (p["metadata"].get("labels") or {}).get(KUBERAY_NODE_TYPE_LABEL, ""),
                       "name": p["metadata"]["name"], "state": state(p)} for p in nodes]}
