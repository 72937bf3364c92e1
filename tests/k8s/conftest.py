"""Cluster-mode fixtures: a real control plane on 127.0.0.1 and a real JupyterHub
whose spawner is ``atelier_hub``'s KubeSpawner, both started once per test session.

The hub runs as a separate process with its own kubeconfig, whose identity has only
the rights the Zero to JupyterHub chart gives its hub (a namespaced Role). Keys,
tokens, certificates and kubeconfigs are made at run time under pytest's tmp folder;
component logs go to test-output/k8s/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from atelier_hub.install.paths import image_ref, tool_path
from control_plane import control_plane_paths, kueue_paths, missing_binaries, missing_node_packages
from k8s_cluster import (
    GPU_GROUP,
    GPU_IMAGE,
    NAMESPACE,
    QUEUE_GPUS,
    SESSION_ROLE_ARN,
    SLICE_PROFILES,
    STORAGE_CLASS,
    TEAMS,
    ControlPlane,
    Kube,
    PodPorts,
    free_port,
    tail,
    write_kubeconfig,
)
from k8s_node import RealNode
from stack import HubClient

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
LOGS = REPO / "test-output" / "k8s"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, with a
    CPU pool, a high-memory pool, a tainted GPU pool and static PVs for homes."""
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"the control plane is not built ({', '.join(missing)} missing under "
            f"{control_plane_paths()['kube-apiserver'].parent.parent.parent}); run `make install-test` or "
            "`python3 tests/k8s/control_plane.py` (about 15-20 min once per machine)",
            pytrace=False,
        )
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test cluster's certificates: apt-get install openssl",
                    pytrace=False)
    cp = ControlPlane(control_plane_paths(), tmp_path_factory.mktemp("k8s"), LOGS)
    try:
        cp.start()
    except Exception:
        cp.stop()
        raise
    yield cp
    cp.stop()


#: the test hub's GPU profile culled soon, and after how long idle
CULLED_PROFILE, CULLED_AFTER_S = "gpu-culled", 60


def _test_profiles(target: Path) -> Path:
    """The repository's profiles, with the GPU ones restricted to a group and given
    their own image (what a platform team typically does)."""
    target.mkdir()
    for src in sorted((REPO / "profiles").glob("*.yaml")):
        data = yaml.safe_load(src.read_text())
        if data.get("gpu"):
            data["groups"] = [GPU_GROUP]
            data["image"] = GPU_IMAGE
        (target / src.name).write_text(yaml.safe_dump(data, sort_keys=False))
    for name, extra in SLICE_PROFILES.items():
        data = {"name": name, "display_name": name, "description": "A GPU slice.", "cpu": {"limit": 4},
                "memory": {"limit": "16G"}, "node_selector": {"atelier.dev/pool": "gpu-slice"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "groups": [GPU_GROUP], **extra}
        (target / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return target


class Hub(HubClient):
    """A real JupyterHub (+ configurable-http-proxy) spawning with AtelierKubeSpawner."""

    def __init__(self, workdir: Path, kube_server: str, pki: Path):
        super().__init__()
        self.dir = workdir
        self.port, self.hub_port, self.proxy_api_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = self.admin_token = secrets.token_hex(32)
        self.password = secrets.token_urlsafe(16)
        self.s3_secret = secrets.token_urlsafe(24)
        self.profiles = _test_profiles(workdir / "profiles")
        # A GPU profile the culler stops after a minute idle: the queue's ETA is checked
        # against a real cull (test_k8s_spawn). The culler looks every 15 s (a quarter of it).
        culled = {**yaml.safe_load((self.profiles / "gpu-1.yaml").read_text()), "name": CULLED_PROFILE,
                  "display_name": "1 GPU, stopped after a minute idle",
                  "culling": {"idle_timeout": CULLED_AFTER_S, "warn_before": 5}}
        (self.profiles / f"{CULLED_PROFILE}.yaml").write_text(yaml.safe_dump(culled, sort_keys=False))
        (workdir / "deployment.json").write_text(json.dumps({"services": {
            "s3": {"endpoint_url": "http://127.0.0.1:9", "bucket": "atelier-shared",
                   "access_key_id": "atelier-test-" + secrets.token_hex(4), "secret_access_key": self.s3_secret},
            "mlflow": {"tracking_uri": f"{self.url}/services/mlflow", "auth": "hub"},
            "trino": {"url": "http://127.0.0.1:9"},
            "spark": {},
        }}))
        (workdir / "cluster.yaml").write_text(yaml.safe_dump({
            "namespace": NAMESPACE,
            "storage": {"storage_class": STORAGE_CLASS, "capacity": "10Gi"},
            "identity": {"service_account": "atelier-session", "role_arn": SESSION_ROLE_ARN},
            "gpu_servers_per_user": 1,
            "gpus_per_user": 4,  # a gpu-4 server beside a gpu-1 one is past it
            # The usage page's URL names the hub's Service (`hub`), which only the chart
            # makes; this hub runs outside the chart. test_chart.py runs it. The jobs
            # service runs here, on 127.0.0.1 (the overlay below): a GPU job waits in the
            # queue as a server does.
            "usage": {"enabled": False},
            # GPU servers wait in Kueue's queue (the control plane's Kueue, started by the
            # hub fixture): 4 whole GPUs in all (of gpu-0's 8: the queue, not the node,
            # is what runs out first), the 2 MIG slices and 4 shares of gpu-slice-0; two
            # teams of equal weight besides everyone else.
            "queue": {"kueue": True, "gpus": QUEUE_GPUS, "groups": {team: {"weight": 1} for team in TEAMS}},
        }))
        self.kubeconfig = write_kubeconfig(workdir / "hub.kubeconfig", server=kube_server, pki=pki, who="hub",
                                           namespace=NAMESPACE)
        jobs_port = free_port()
        (workdir / "jupyterhub_config.py").write_text(f"""
import os

from atelier_hub.cluster.kubespawner import configure_kubespawner

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.JupyterHub.db_url = "sqlite:///{workdir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = "{workdir / 'cookie_secret'}"
# Users log in with one password made per test run (the test users only).
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["TEST_LOGIN_PASSWORD"]
c.Authenticator.allowed_users = {{"ada", "bo", "cy"}}
c.ConfigurableHTTPProxy.command = ["{tool_path('configurable-http-proxy')}"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = os.environ["TEST_PROXY_TOKEN"]
c.JupyterHub.services = [{{"name": "tests", "api_token": os.environ["TEST_ADMIN_TOKEN"]}}]
c.JupyterHub.load_roles = [{{
    "name": "tests", "services": ["tests"],
    "scopes": ["admin:users", "admin:servers", "admin:groups", "tokens", "read:hub", "access:servers"],
}}]

configure_kubespawner(
    c,
    profiles_dir="{self.profiles}",
    deployment_file="{workdir / 'deployment.json'}",
    cluster_file="{workdir / 'cluster.yaml'}",
)
c.AtelierKubeSpawner.http_timeout = 60
# kwok's pods run at once; the wait test (test_k8s_spawn) outlasts this, so keep it short.
c.AtelierKubeSpawner.start_timeout = 60
# Test overlay: in a hub pod the culler listens on 0.0.0.0 (the Service reaches it); on
# this test machine everything stays on 127.0.0.1, on a port of its own.
for _svc in c.JupyterHub.services:
    if _svc.get("name") == "culler":
        _svc["command"][_svc["command"].index("--listen") + 1] = "127.0.0.1:{free_port()}"
    if _svc.get("name") == "jobs":
        _svc["command"][_svc["command"].index("--listen") + 1] = "127.0.0.1:{jobs_port}"
        _svc["url"] = "http://127.0.0.1:{jobs_port}"
""")
        self.proc: subprocess.Popen | None = None
        self.log = LOGS / "jupyterhub.log"
        self.volume = workdir / "volume"

    def start(self, timeout: float = 120) -> Hub:
        LOGS.mkdir(parents=True, exist_ok=True)
        # What the chart's hub keeps on its volume (/srv/jupyterhub: the culler's plan, the
        # usage record) stays in this hub's folder, off the host's /srv.
        self.volume.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "TEST_ADMIN_TOKEN": self.token,
               "ATELIER_HUB_VOLUME": str(self.volume),
               "TEST_LOGIN_PASSWORD": self.password,
               "TEST_PROXY_TOKEN": secrets.token_hex(32)}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(self.dir / "jupyterhub_config.py")],
                                         cwd=self.dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited {self.proc.returncode}:\n{tail(self.log)}")
            try:
                if self.api("GET", "/").status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyterhub not ready in {timeout} s:\n{tail(self.log)}")
            time.sleep(0.5)

    def stop(self) -> None:
        # SIGTERM: the hub stops every server (KubeSpawner deletes the pods) and its proxy.
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- the hub's REST API (HubClient) ------------------------------------------------------

    def login(self, name: str, password: str | None = None) -> requests.Session:
        """Logged in through the hub's own form with the test run's password."""
        return super().login(name, password or self.password)

    def add_user(self, name: str, *, groups: tuple[str, ...] = ()) -> None:
        r = self.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text
        for group in groups:
            r = self.api("POST", f"/groups/{group}")
            assert r.status_code in (201, 409), r.text
            r = self.api("POST", f"/groups/{group}/users", json={"users": [name]})
            assert r.status_code == 200, r.text


def kueue(control_plane, hub_dir: Path) -> None:
    """Kueue on the control plane, with the queues of the test hub's cluster settings as
    `atelier render kueue` prints them (what the platform team applies)."""
    control_plane.start_kueue(kueue_paths())
    out = subprocess.run([str(VENV_BIN / "atelier"), "render", "kueue", "--cluster", str(hub_dir / "cluster.yaml"),
                          "--profiles", str(hub_dir / "profiles")], capture_output=True, text=True, check=True).stdout
    admin = control_plane.admin
    for obj in yaml.safe_load_all(out):
        kind = obj["kind"].lower() + "s"
        ns = obj["metadata"].get("namespace")
        admin.create(f"/apis/kueue.x-k8s.io/v1beta2/{f'namespaces/{ns}/' if ns else ''}{kind}", obj)
    # Kueue takes a queue into account once it is active.
    control_plane.processes.wait("Kueue's queues active", lambda: all(
        any(c["type"] == "Active" and c["status"] == "True" for c in (q.get("status") or {}).get("conditions", []))
        for q in admin.get("/apis/kueue.x-k8s.io/v1beta2/clusterqueues")["items"]), timeout=60)


@pytest.fixture(scope="session")
def kube(control_plane) -> Kube:
    """The API server as a cluster admin (to inspect what the hub made)."""
    return control_plane.admin


@pytest.fixture(scope="session")
def hub(control_plane, tmp_path_factory):
    # What the platform's infrastructure code makes: the sessions' ServiceAccount,
    # annotated for IRSA.
    control_plane.admin.create(control_plane.admin.ns("serviceaccounts"), {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "atelier-session", "annotations": {"eks.amazonaws.com/role-arn": SESSION_ROLE_ARN}},
    })
    capacity_rbac(control_plane.admin)
    ports = PodPorts(control_plane.admin).start()
    h = Hub(tmp_path_factory.mktemp("hub"), control_plane.server, control_plane.pki)
    try:
        kueue(control_plane, h.dir)
        h.start()
        h.add_user("ada", groups=(GPU_GROUP,))
        h.add_user("bo")
        h.add_user("cy")
        yield h
    finally:
        h.stop()
        ports.stop()


def capacity_rbac(admin: Kube, namespace: str = NAMESPACE, *, as_test_hub: bool = True) -> None:
    """What the Terraform module makes (the same objects `atelier render hub-rbac` prints):
    the hub's read-only ClusterRole for the spawn form's numbers and its Role to read job
    pods' logs in ``namespace``, bound to the chart's hub ServiceAccount there, or
    (``as_test_hub``) to the user atelier-hub, as which the tests' hub authenticates,
    under bindings of their own."""
    out = subprocess.run([str(VENV_BIN / "atelier"), "render", "hub-rbac", "--namespace", namespace],
                         capture_output=True, text=True, check=True).stdout
    role, binding, logs, logs_binding = yaml.safe_load_all(out)
    for b in (binding, logs_binding):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": namespace}]
        if as_test_hub:
            b["subjects"] = [{"kind": "User", "name": "atelier-hub", "apiGroup": "rbac.authorization.k8s.io"}]
            b["metadata"]["name"] += "-tests-hub"  # the chart test binds the chart's hub too
    admin.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    admin.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    rbac_ns = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    admin.create(f"{rbac_ns}/roles", logs)
    admin.create(f"{rbac_ns}/rolebindings", logs_binding)


HOST_SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops")


def host_state() -> dict:
    """What kubelet would change on the shared host if it were let."""
    sysctl = subprocess.run(["sysctl", *HOST_SYSCTLS], capture_output=True, text=True, check=True).stdout
    iptables = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    return {"sysctl": sysctl, "iptables": iptables}


@pytest.fixture(scope="session")
def real_node(control_plane, tmp_path_factory):
    """The real node (kubelet + containerd) with the base image imported; one per test run,
    shared by the real-pod and chart modules (the host's kernel settings and iptables are
    checked unchanged when it stops)."""
    if missing_node_packages():
        pytest.fail(f"the real node needs the Debian packages {' '.join(missing_node_packages())}: run "
                    "`make install-test` or `python3 tests/k8s/control_plane.py`", pytrace=False)
    before = host_state()
    image = image_ref("base")
    node = RealNode(control_plane, control_plane_paths(), tmp_path_factory.mktemp("node"), LOGS / "node")
    try:
        node.start()
        # The homes' hostPath volumes are really mounted here: the image's user owns them.
        for pv in control_plane.admin.get("/api/v1/persistentvolumes")["items"]:
            path = Path(pv["spec"]["hostPath"]["path"])
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, 1000, 100)
        try:
            node.import_s = node.import_image(image)
        except RuntimeError as exc:
            pytest.fail(f"{exc}\nbuild the image first: python -m atelier_hub.install.docker base", pytrace=False)
        node.image = image
        node.host_before = before
        (LOGS / "real-node.json").write_text(json.dumps(
            {"node_ready_s": round(node.ready_s, 1), "image_import_s": round(node.import_s, 1)}))
        yield node
    finally:
        node.stop()
    after = host_state()
    assert after == before, f"the host changed while the node ran:\nbefore {before}\nafter {after}"
