"""Cluster mode on a real node: the ``base`` image runs in a real pod.

The real KubeSpawner (Atelier's, with the profile mixin) spawns onto the kubelet +
containerd node of k8s_node.py: a hostNetwork pod on 127.0.0.1 with its own port,
from the same ``base`` image container sessions use (built by ``python -m
atelier_hub.install.docker base``, imported into containerd, never pulled). JupyterLab
answers from inside it through the hub's proxy; a kernel there writes to the real S3
server and logs a run to the real MLflow (both run by the hub as managed services, as
in ``atelier dev``); the container's cgroup carries the profile's memory limit. The
host's kernel settings and iptables are the same before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from atelier_hub.embedded.stack import EmbeddedStack
from atelier_hub.services import SERVICES
from atelier_hub.services.s3 import SERVICE as S3
from conftest import LOGS, Hub, host_state
from k8s_cluster import NAMESPACE, STORAGE_CLASS, assert_loopback, free_port
from k8s_node import KUBELET_SYSCTLS, NODE_NAME, POOL, TOLERATION, listening
from kernel import run_code

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

USER = "dee"
# profiles/cpu-small.yaml, written out: memory limit 4G (bytes), CPU limit 2.
MEM_LIMIT, CPU_LIMIT = 4_000_000_000, 2
PAGE = os.sysconf("SC_PAGE_SIZE")  # the kernel keeps a memory limit in whole pages


class NodeHub(Hub):
    """The cluster hub of conftest.Hub, spawning onto the real node, with real S3 and
    MLflow run as hub-managed services (the embedded stack's descriptors)."""

    def __init__(self, workdir: Path, cp, image: str):
        super().__init__(workdir, cp.server, cp.pki)
        self.session_port = free_port()
        without = tuple(s.name for s in SERVICES if s.name not in ("s3", "mlflow"))
        self.stack, _ = EmbeddedStack.prepare(workdir / "state", port=self.port, profiles_dir=self.profiles,
                                         without=without)
        # No IRSA ServiceAccount here: the session's S3 keys come from the Secret, as a
        # platform's deployment settings would give them (the embedded stack's own file
        # holds none: there each user's keys come from the embedded spawners).
        deployment = json.loads(self.stack.path("deployment.json").read_text())
        deployment["services"]["s3"].update(S3.root_keys(self.stack))
        self.deployment_file = workdir / "cluster-deployment.json"
        self.deployment_file.write_text(json.dumps(deployment))
        self.deployment_file.chmod(0o600)
        (workdir / "cluster.yaml").write_text(yaml.safe_dump({
            "namespace": NAMESPACE, "storage": {"storage_class": STORAGE_CLASS, "capacity": "10Gi"},
            "jobs": {"enabled": False},  # test_chart.py runs jobs in the chart's hub pod
        }))
        self.log = LOGS / "jupyterhub-node.log"
        with open(workdir / "jupyterhub_config.py", "a") as f:
            f.write(f"""
# -- the real node: the base image, hostNetwork on 127.0.0.1, real S3 and MLflow --------
from atelier_hub.config import update_services
from atelier_hub.embedded.stack import EmbeddedStack

_stack = EmbeddedStack.load({str(self.stack.root)!r})
update_services(c, _stack)
c.JupyterHub.services = [*c.JupyterHub.services, {{"name": "tests", "api_token": os.environ["TEST_ADMIN_TOKEN"]}}]
c.JupyterHub.load_roles = [*c.JupyterHub.load_roles, {{
    "name": "tests", "services": ["tests"],
    "scopes": ["admin:users", "admin:servers", "tokens", "read:hub", "access:servers", "access:services"],
}}]
s = c.AtelierKubeSpawner
s.deployment_file = {str(self.deployment_file)!r}
s.server_token_scopes = ["users:activity!user", "access:servers!server", *_stack.session_scopes]
s.image = {image!r}
s.image_pull_policy = "Never"
# The node's only network is loopback: the pod shares the host's, on its own port.
s.extra_pod_config = {{"hostNetwork": True, "dnsPolicy": "Default", "terminationGracePeriodSeconds": 5}}
s.ip = "127.0.0.1"
s.port = {self.session_port}
s.node_selector = {{"atelier.dev/pool": {POOL!r}}}
s.tolerations = [{TOLERATION!r}]
s.start_timeout = 300
s.http_timeout = 180
""")


@pytest.fixture(scope="module")
def node_hub(real_node, control_plane, tmp_path_factory):
    h = NodeHub(tmp_path_factory.mktemp("nodehub"), control_plane, real_node.image)
    try:
        h.start(timeout=240)
        h.add_user(USER)
        yield h
    finally:
        h.stop()


KERNEL = """
import json, os, pathlib, socket, uuid
import boto3, mlflow
limit = int(pathlib.Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").read_text())
cpu = pathlib.Path("/sys/fs/cgroup/cpu")
cpus = int((cpu / "cpu.cfs_quota_us").read_text()) / int((cpu / "cpu.cfs_period_us").read_text())
key = f"from-pod/{uuid.uuid4().hex}.txt"
s3 = boto3.client("s3")
s3.put_object(Bucket=os.environ["ATELIER_SHARED_BUCKET"], Key=key, Body=b"written in a real pod")
back = s3.get_object(Bucket=os.environ["ATELIER_SHARED_BUCKET"], Key=key)["Body"].read().decode()
pathlib.Path("note.txt").write_text("kept in the home")
with mlflow.start_run() as run:
    mlflow.log_param("where", "real-pod")
    mlflow.log_metric("limit", limit)
    mlflow.log_artifact("note.txt")
# The session's config files (docs/admin-guide.md: /etc/atelier/session, from the pod's Secret):
# fsspec finds the S3 server through its conf.json alone.
import fsspec
fs = fsspec.filesystem("s3")
fs.pipe(f"{os.environ['ATELIER_SHARED_BUCKET']}/{key}.fsspec", b"through fsspec's own config")
print(json.dumps({"limit": limit, "cpus": cpus, "key": key, "back": back, "run": run.info.run_id,
                  "uid": os.getuid(), "home": str(pathlib.Path.home()), "profile": os.environ["ATELIER_PROFILE"],
                  "tracking": os.environ["MLFLOW_TRACKING_URI"], "fsspec_dir": os.environ["FSSPEC_CONFIG_DIR"],
                  "fsspec_conf": pathlib.Path("/etc/atelier/session/fsspec/conf.json").is_file()}))
"""


def test_base_image_runs_in_a_real_pod(node_hub, real_node, kube):
    hub = node_hub
    hub.spawn(USER, "cpu-small", timeout=420)
    pods = kube.get(kube.ns("pods"), params={"labelSelector": f"hub.jupyter.org/username={USER}"})["items"]
    assert len(pods) == 1, pods
    pod = pods[0]
    # On the real node, from the base image (never pulled), hostNetwork on 127.0.0.1.
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["spec"]["hostNetwork"] is True
    assert assert_loopback(pod["status"]["podIP"]) == "127.0.0.1"
    container = pod["spec"]["containers"][0]
    assert container["image"] == real_node.image and container["imagePullPolicy"] == "Never"
    # The S3 key reaches the pod only through its Secret.
    assert S3.root_keys(hub.stack)["secret_access_key"] not in json.dumps(pod)
    status = pod["status"]["containerStatuses"][0]
    assert status["containerID"].startswith("containerd://") and "running" in status["state"], status

    # The API server reaches the kubelet (its client certificate, the node's 127.0.0.1):
    # the container's log is the single-user server's.
    log = kube.request("GET", kube.ns("pods", pod["metadata"]["name"]) + "/log")
    assert log.status_code == 200 and "Jupyter Server" in log.text, log.text[-1000:]

    # JupyterLab answers from inside the pod, through the hub's proxy.
    token = hub.api("POST", f"/users/{USER}/tokens", json={"note": "real-pod test"}).json()["token"]
    lab = hub.http.get(f"{hub.url}/user/{USER}/lab", headers={"Authorization": f"token {token}"}, timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in lab.text, lab.text[:500]
    # The node and the session listen on loopback only (the pod shares the host's network).
    node_sockets = listening(pids=real_node.pids())
    assert node_sockets and all(a.startswith("127.") for a in node_sockets), node_sockets
    assert listening(port=hub.session_port) == {f"127.0.0.1:{hub.session_port}"}
    # ... and the server is the pod's own: it listens on the session's port.
    status = hub.http.get(f"http://127.0.0.1:{hub.session_port}/user/{USER}/api/status",
                          headers={"Authorization": f"token {token}"}, timeout=30)
    assert status.status_code == 200, status.text

    out = json.loads(run_code(hub.url, f"/user/{USER}/", token, KERNEL, timeout=300).strip().splitlines()[-1])
    assert out["profile"] == "cpu-small" and out["uid"] == 1000 and out["home"] == "/home/jovyan"
    # The profile's memory limit is the container's cgroup limit, seen from inside ...
    assert out["limit"] == MEM_LIMIT // PAGE * PAGE, out
    assert out["cpus"] == CPU_LIMIT, out  # the CFS quota: the profile's CPU limit
    # ... and on the host, in the cgroup kubelet made for the pod's container.
    limits = {int((d / "memory.limit_in_bytes").read_text()) for d in real_node.pod_cgroup(pod["metadata"]["uid"])}
    assert MEM_LIMIT // PAGE * PAGE in limits, limits

    # S3: the object is in the real S3 server's data folder.
    stack = hub.stack
    bucket = stack.deployment().services.s3.bucket
    assert out["back"] == "written in a real pod"
    assert (stack.path("s3") / bucket / out["key"]).read_text() == "written in a real pod"
    # The session's config folder is where docs/admin-guide.md says, and fsspec used it.
    assert out["fsspec_dir"] == "/etc/atelier/session/fsspec" and out["fsspec_conf"], out
    assert (stack.path("s3") / bucket / f"{out['key']}.fsspec").read_text() == "through fsspec's own config"
    # MLflow: the run is recorded, read back through the hub with another identity, and
    # its artifact went to the S3 server's MLflow bucket.
    # The deployment settings' MLflow URL (the embedded stack's, at localhost on this hub's port).
    assert out["tracking"] == f"http://localhost:{hub.port}/services/mlflow"
    r = hub.http.get(f"{hub.url}/services/mlflow/api/2.0/mlflow/runs/get", params={"run_id": out["run"]},
                     headers={"Authorization": f"token {hub.admin_token}"}, timeout=60)
    assert r.status_code == 200, r.text[:500]
    run = r.json()["run"]
    assert {"key": "where", "value": "real-pod"} in run["data"]["params"]
    artifacts = [p for p in stack.path("s3").rglob("note.txt") if out["run"] in str(p)]
    assert artifacts and artifacts[0].read_text() == "kept in the home", list(stack.path("s3").rglob("*"))[:20]

    # The host's kernel settings and iptables: untouched while a pod runs; kubelet's
    # settings went into the node's own files instead.
    assert host_state() == real_node.host_before
    assert real_node.caught_sysctls() == KUBELET_SYSCTLS

    hub.stop_server(USER)
    kube.wait("the real pod to go", lambda: not kube.get(
        kube.ns("pods"), params={"labelSelector": f"hub.jupyter.org/username={USER}"})["items"], timeout=120)
    assert not real_node.pod_cgroup(pod["metadata"]["uid"]), "the pod's cgroups outlived it"

