"""Test harness: a real Kubernetes control plane on 127.0.0.1, with simulated nodes.

Nothing here is a fake API: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler are the real programs (built from the Go module proxy by
``tests/k8s/control_plane.py``); kwok plays the kubelets (node status, pod lifecycle).

Network rule: every address anything might dial is in 127.0.0.0/8 — the API server's
bind and advertise address, etcd, node addresses (127.66.0.N), pod IPs (each node's
``podCIDR`` in 127.65.N.0/24, kwok's ``--cidr`` 127.64.0.0/16) and the service range
(127.200.0.0/16). :func:`assert_loopback` guards every address a test is handed.
Processes are stopped by their own PID, never by name.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import shlex
import signal
import subprocess
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from atelier_hub.services._process import port_free
from stack import free_port, tail  # noqa: F401 (tail: re-exported for conftest)

NAMESPACE = "atelier"
SERVICE_RANGE = "127.200.0.0/16"
KWOK_CIDR = "127.64.0.0/16"

# (name, pool, allocatable, taints, node IP, pod CIDR): a CPU pool, a high-memory pool
# and a GPU pool whose taint keeps CPU sessions off it.
NODES = [
    ("cpu-0", "cpu", {"cpu": "16", "memory": "64Gi", "pods": "110"}, [], "127.66.0.1", "127.65.1.0/24"),
    ("highmem-0", "highmem", {"cpu": "16", "memory": "512Gi", "pods": "110"},
     [{"key": "atelier.dev/highmem", "value": "true", "effect": "NoSchedule"}], "127.66.0.2", "127.65.2.0/24"),
    ("gpu-0", "gpu", {"cpu": "96", "memory": "1152Gi", "pods": "110", "nvidia.com/gpu": "8"},
     [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}], "127.66.0.3", "127.65.3.0/24"),
    # GPU slices, as the NVIDIA device plugin advertises them: two MIG slices (mixed
    # strategy) and four time-sliced shares (renameByDefault).
    ("gpu-slice-0", "gpu-slice", {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/mig-1g.10gb": "2",
                                  "nvidia.com/gpu.shared": "4"},
     [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}], "127.66.0.4", "127.65.4.0/24"),
]
#: the test hub's GPU slice profiles (in no file of profiles/: the embedded mode has no
#: device plugin to hand slices out), written as a platform team would
SLICE_PROFILES = {
    "gpu-mig": {"gpu": {"count": 1, "resource": "nvidia.com/mig-1g.10gb"}},
    "gpu-shared": {"gpu": {"count": 1, "shared": True}},
}
#: the test hub's GPU queue (Kueue's): how many of each GPU resource its servers may hold,
#: and its teams (hub groups, weight 1 each)
QUEUE_GPUS = {"nvidia.com/gpu": 4, "nvidia.com/mig-1g.10gb": 2, "nvidia.com/gpu.shared": 4}
TEAMS = ("team-a", "team-b")
STORAGE_CLASS = "atelier-home"
HOME_PVS = 32  # every test user's home on both hubs (a bound PV is kept: Retain; the queue tests have 12 users), with room
# The hub's test settings: GPU profiles restricted to a group and given their own image;
# the sessions' ServiceAccount annotated for IRSA.
GPU_GROUP = "gpu-users"
GPU_IMAGE = "quay.io/jupyter/pytorch-notebook:cuda12-latest"
SESSION_ROLE_ARN = "arn:aws:iam::000000000000:role/atelier-session-test"


def assert_loopback(address: str) -> str:
    """``address`` if it is in 127.0.0.0/8; a test never dials anything else."""
    if not ipaddress.ip_address(address).is_loopback:
        raise AssertionError(f"{address} is not a loopback address: tests dial only 127.0.0.0/8")
    return address


_QUANTITY = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str) -> float:
    """A Kubernetes quantity as a number: ``500m`` -> 0.5, ``4G`` -> 4e9, ``1Gi`` -> 2**30."""
    number = text.rstrip("mkMGTi")
    return float(number) * _QUANTITY[text[len(number):]]


# -- certificates (openssl CLI) -------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """A CA, the API server's serving certificate, client certificates for each
    component and the service-account signing key; EC keys (fast to make)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=atelier-test-ca", cwd=d)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", "sa.key", cwd=d)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    server_ext = ("subjectAltName=IP:127.0.0.1,IP:127.200.0.1,DNS:localhost,DNS:kubernetes,"
                  "DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n")
    certs = {
        "apiserver": ("/CN=kube-apiserver", server_ext),
        "admin": ("/O=system:masters/CN=atelier-test-admin", "extendedKeyUsage=clientAuth\n"),
        "controller-manager": ("/CN=system:kube-controller-manager", "extendedKeyUsage=clientAuth\n"),
        "scheduler": ("/CN=system:kube-scheduler", "extendedKeyUsage=clientAuth\n"),
        # The hub's own identity: only the rights the chart's hub Role gives (see RBAC below).
        "hub": ("/CN=atelier-hub", "extendedKeyUsage=clientAuth\n"),
        # The API server's own identity towards kubelets (exec, logs on the real node).
        "apiserver-kubelet-client": ("/CN=kube-apiserver-kubelet-client", "extendedKeyUsage=clientAuth\n"),
        # The aggregation layer's identity towards extension API servers (Kueue's visibility API).
        "front-proxy-client": ("/CN=front-proxy-client", "extendedKeyUsage=clientAuth\n"),
        # Kueue's webhooks (called at 127.0.0.1) and visibility API (called by its Service's name).
        "kueue": ("/CN=kueue", "subjectAltName=IP:127.0.0.1,DNS:visibility-server.kueue-system.svc\n"
                  "extendedKeyUsage=serverAuth\n"),
    }
    for name, (subject, ext) in certs.items():
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def write_kubeconfig(path: Path, *, server: str, pki: Path, who: str, namespace: str = "default") -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": who, "user": {"client-certificate": str(pki / f"{who}.crt"),
                                         "client-key": str(pki / f"{who}.key")}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": who, "namespace": namespace}}],
    }))
    return path


# -- kwok's stages: what a kubelet would report ---------------------------------------------
# Written for this harness: nodes become Ready keeping the addresses and capacity they
# were created with; pods on them go Running with an IP from the node's podCIDR; a pod
# being deleted is removed.

KWOK_STAGES = textwrap.dedent("""\
    apiVersion: kwok.x-k8s.io/v1alpha1
    kind: Stage
    metadata:
      name: atelier-node-ready
    spec:
      resourceRef: {apiGroup: v1, kind: Node}
      selector:
        matchExpressions:
        - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
          operator: NotIn
          values: ['True']
      next:
        statusTemplate: |
          {{ $now := Now }}
          conditions:
          {{ range $type := list "MemoryPressure" "DiskPressure" "PIDPressure" "NetworkUnavailable" }}
          - {type: {{ $type }}, status: "False", reason: Simulated, message: kwok,
             lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
          {{ end }}
          - {type: Ready, status: "True", reason: KubeletReady, message: kwok,
             lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
          addresses:
          {{ YAML .status.addresses 1 }}
          allocatable:
          {{ YAML .status.allocatable 1 }}
          capacity:
          {{ YAML .status.capacity 1 }}
          nodeInfo:
            architecture: amd64
            operatingSystem: linux
            kubeletVersion: kwok
            containerRuntimeVersion: kwok
            kernelVersion: kwok
            kubeProxyVersion: kwok
            osImage: kwok
            machineID: ""
            systemUUID: ""
            bootID: ""
          phase: Running
    ---
    apiVersion: kwok.x-k8s.io/v1alpha1
    kind: Stage
    metadata:
      name: atelier-node-heartbeat
    spec:
      resourceRef: {apiGroup: v1, kind: Node}
      selector:
        matchExpressions:
        - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
          operator: In
          values: ['True']
      delay: {durationMilliseconds: 20000, jitterDurationMilliseconds: 25000}
      next:
        statusTemplate: |
          {{ $now := Now }}
          conditions:
          {{ range .status.conditions }}
          - {type: {{ .type }}, status: {{ .status | Quote }}, reason: {{ .reason | Quote }},
             message: {{ .message | Quote }}, lastHeartbeatTime: {{ $now | Quote }},
             lastTransitionTime: {{ .lastTransitionTime | Quote }}}
          {{ end }}
    ---
    apiVersion: kwok.x-k8s.io/v1alpha1
    kind: Stage
    metadata:
      name: atelier-pod-running
    spec:
      resourceRef: {apiGroup: v1, kind: Pod}
      selector:
        matchExpressions:
        - key: '.metadata.deletionTimestamp'
          operator: DoesNotExist
        - key: '.status.phase'
          operator: In
          values: [Pending]
      next:
        statusTemplate: |
          {{ $now := Now }}
          conditions:
          {{ range $type := list "PodScheduled" "Initialized" "ContainersReady" "Ready" }}
          - {type: {{ $type }}, status: "True", lastTransitionTime: {{ $now | Quote }}}
          {{ end }}
          containerStatuses:
          {{ range .spec.containers }}
          - name: {{ .name | Quote }}
            image: {{ .image | Quote }}
            imageID: ""
            ready: true
            started: true
            restartCount: 0
            state: {running: {startedAt: {{ $now | Quote }}}}
          {{ end }}
          {{ with NodeIPWith .spec.nodeName }}
          hostIP: {{ . | Quote }}
          hostIPs: [{ip: {{ . | Quote }}}]
          {{ end }}
          {{ $uid := or .metadata.uid "" }}{{ $name := or .metadata.name "" }}
          {{ $namespace := or .metadata.namespace "" }}
          {{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) $uid $name $namespace }}
          podIP: {{ . | Quote }}
          podIPs: [{ip: {{ . | Quote }}}]
          {{ end }}
          phase: Running
          startTime: {{ $now | Quote }}
    ---
    apiVersion: kwok.x-k8s.io/v1alpha1
    kind: Stage
    metadata:
      name: atelier-pod-gone
    spec:
      resourceRef: {apiGroup: v1, kind: Pod}
      selector:
        matchExpressions:
        - key: '.metadata.deletionTimestamp'
          operator: Exists
      next:
        finalizers: {empty: true}
        delete: true
    """)


# -- a small REST client: the API server itself, no kubectl needed ---------------------------


class Kube:
    """Requests to the API server with one identity's client certificate."""

    def __init__(self, server: str, pki: Path, who: str = "admin"):
        self.server = server
        self.s = requests.Session()
        # Not the environment's CA bundle or proxies (REQUESTS_CA_BUNDLE would win over
        # verify=): this cluster's own CA, and straight to 127.0.0.1.
        self.s.trust_env = False
        self.s.verify = str(pki / "ca.crt")
        self.s.cert = (str(pki / f"{who}.crt"), str(pki / f"{who}.key"))

    def request(self, method: str, path: str, **kw) -> requests.Response:
        return self.s.request(method, self.server + path, timeout=30, **kw)

    def get(self, path: str, **kw) -> dict:
        r = self.request("GET", path, **kw)
        r.raise_for_status()
        return r.json()

    def create(self, path: str, obj: dict) -> dict:
        r = self.request("POST", path, json=obj)
        if r.status_code == 409:
            return self.get(f"{path}/{obj['metadata']['name']}")
        if r.status_code >= 400:
            raise RuntimeError(f"POST {path} {obj['metadata']['name']}: {r.status_code} {r.text}")
        return r.json()

    def maybe(self, path: str) -> dict | None:
        r = self.request("GET", path)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def ns(self, kind: str, name: str = "", namespace: str = NAMESPACE) -> str:
        return f"/api/v1/namespaces/{namespace}/{kind}" + (f"/{name}" if name else "")

    def wait(self, what: str, check, timeout: float = 60, every: float = 0.25):
        """``check()``'s first truthy value, polling; fails naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(every)


# -- the control plane ------------------------------------------------------------------------


class Processes:
    """Long-running processes of one test fixture, each in its own session with its log in
    ``logdir``: started in order, waited for while all still run, stopped newest first."""

    def __init__(self, logdir: Path, cwd: Path):
        self.logdir = logdir
        self.cwd = cwd
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def launch(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with open(self.logdir / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.cwd, env=env, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def running(self, name: str | None = None) -> list[subprocess.Popen]:
        return [p for n, p in self.procs if p.poll() is None and name in (None, n)]

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{tail(self.logdir / f'{name}.log')}")

    def wait(self, what: str, check, timeout: float = 90, every: float = 0.25):
        """``check()``'s first true value; fails if a process exits or after ``timeout``.
        A refused request or missing file while a server starts counts as not yet."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                value = check()
            except (requests.RequestException, OSError):
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready in {timeout:.0f} s; logs in {self.logdir}")
            time.sleep(every)

    def stop(self, grace: float = 15) -> None:
        """Each process by its PID, newest first: SIGTERM, then SIGKILL after ``grace`` s."""
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1."""

    def __init__(self, binaries: dict[str, Path], workdir: Path, logdir: Path):
        self.bin = binaries
        self.dir = workdir
        self.pki = workdir / "pki"
        self.logdir = logdir
        self.processes = Processes(logdir, workdir)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.admin: Kube | None = None

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        return self.processes.launch(name, [str(self.bin.get(name, name)), *args])

    def _wait(self, what: str, check, timeout: float = 90):
        return self.processes.wait(what, check, timeout)

    def start(self) -> ControlPlane:
        t0 = time.monotonic()
        make_pki(self.pki)
        p = self.pki
        etcd_client, etcd_peer = free_port(), free_port()
        self._start("etcd", [
            "--name", "atelier-test", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"atelier-test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._wait("etcd", lambda: requests.get(f"http://127.0.0.1:{etcd_client}/health", timeout=2).ok)
        self._start("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            "--endpoint-reconciler-type=none", f"--service-cluster-ip-range={SERVICE_RANGE}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
            "--authorization-mode=RBAC", "--allow-privileged=true", "--profiling=false",
            # How it reaches the real node's kubelet (k8s_node.py), by its 127.0.0.1 address.
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={p / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            # The aggregation layer (Kueue's visibility API): it proxies as front-proxy-client.
            f"--requestheader-client-ca-file={p / 'ca.crt'}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
        ])
        self.admin = Kube(self.server, p, "admin")
        self._wait("kube-apiserver", lambda: self.admin.request("GET", "/readyz").status_code == 200)
        kubeconfigs = {
            who: write_kubeconfig(self.dir / f"{who}.kubeconfig", server=self.server, pki=p, who=who)
            for who in ("admin", "controller-manager", "scheduler")
        }
        self.admin_kubeconfig = kubeconfigs["admin"]
        self._start("kube-controller-manager", [
            f"--kubeconfig={kubeconfigs['controller-manager']}", "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}", "--leader-elect=false",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            "--use-service-account-credentials=true",  # each controller its own identity and role
        ])
        self._start("kube-scheduler", [
            f"--kubeconfig={kubeconfigs['scheduler']}", "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}", "--leader-elect=false",
        ])
        (self.dir / "kwok.yaml").write_text(KWOK_STAGES)
        self._start("kwok", [
            f"--kubeconfig={kubeconfigs['admin']}", f"--config={self.dir / 'kwok.yaml'}",
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1", f"--cidr={KWOK_CIDR}", f"--server-address=127.0.0.1:{free_port()}",
            "--node-lease-duration-seconds=40",
        ])
        self.populate()
        self.ready_s = time.monotonic() - t0
        return self

    def populate(self) -> None:
        """Nodes of four pools, home storage, the namespace and the hub's RBAC."""
        k = self.admin
        for name, pool, allocatable, taints, ip, pod_cidr in NODES:
            assert_loopback(ip)
            assert ipaddress.ip_network(pod_cidr).subnet_of(ipaddress.ip_network("127.0.0.0/8"))
            status = {"capacity": allocatable, "allocatable": allocatable,
                      "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}
            # Status at creation, as a kubelet registers: kwok's first update keeps it.
            node = k.create("/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {"atelier.dev/pool": pool, "kubernetes.io/hostname": name,
                               "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"},
                },
                "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": taints},
                "status": status,
            })
            if node.get("status", {}).get("allocatable") != allocatable:
                node["status"] = {**node.get("status", {}), **status}
                r = k.request("PUT", f"/api/v1/nodes/{name}/status", json=node)
                assert r.ok, r.text
        k.create("/apis/storage.k8s.io/v1/storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        })
        # Static PVs stand in for a provisioner (EBS on EKS); nothing is ever mounted.
        for i in range(HOME_PVS):
            k.create("/api/v1/persistentvolumes", {
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"home-pv-{i}", "labels": {"atelier.dev/test": "home"}},
                "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                         "hostPath": {"path": str(self.dir / "pv" / str(i)), "type": "DirectoryOrCreate"}},
            })
        k.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        # The chart's hub Role, verb for verb (z2jh templates/hub/rbac.yaml): the hub here
        # runs with exactly the rights it has in the chart.
        k.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "hub"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
                 "verbs": ["get", "watch", "list", "create", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
            ],
        })
        k.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "hub"},
            "subjects": [{"kind": "User", "name": "atelier-hub", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "Role", "name": "hub", "apiGroup": "rbac.authorization.k8s.io"},
        })
        # Pods are refused until the controller-manager has made the namespace's
        # default ServiceAccount; nodes must be Ready before anything schedules.
        self._wait("the default ServiceAccount", lambda: k.maybe(k.ns("serviceaccounts", "default")))
        self._wait("Ready nodes", lambda: all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            for n in k.get("/api/v1/nodes")["items"]) and len(k.get("/api/v1/nodes")["items"]) == len(NODES))

    def _create_crds(self, paths: dict[str, Path]) -> None:
        """Each ``.yaml`` of ``paths`` (an operator's CRDs), created and waited for."""
        import yaml

        k = self.admin
        for name, path in paths.items():
            if not name.endswith(".yaml"):
                continue
            crd = yaml.safe_load(path.read_text())
            # Created, not applied: a CRD this size has no room for apply's annotation.
            k.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            self._wait(f"the CRD {crd['metadata']['name']} established", lambda crd=crd: any(
                c["type"] == "Established" and c["status"] == "True" for c in (k.get(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}")
                    .get("status", {}).get("conditions") or [])))

    def start_kuberay(self, paths: dict[str, Path]) -> None:
        """KubeRay's operator (built from the Go module proxy, control_plane.py) as a process
        beside the controller-manager, with the admin's identity, and its CRDs.
        Once: a second call returns at once. Its metrics are off and its health port on
        127.0.0.1 (its defaults listen on every address)."""
        if getattr(self, "kuberay_started", False):
            return
        self._create_crds(paths)
        self.processes.launch("ray-operator", [
            str(paths["ray-operator"]), f"--kubeconfig={self.admin_kubeconfig}", "--metrics-addr=0",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}", "--enable-leader-election=false"])
        self.kuberay_started = True

    def start_kueue(self, paths: dict[str, Path]) -> None:
        """Kueue's manager (built from the Go module proxy, control_plane.py) as a process
        beside the controller-manager, with the admin's identity and its CRDs, set up as
        its release sets it up, every address on 127.0.0.1:

        - its pod webhooks (Kueue's own defaulting gates a pod that names a queue until it
          is admitted), called by the API server at their URL with the test CA;
        - its visibility API (pending workloads and their positions) through the API
          server's aggregation layer: an APIService whose Service is an ExternalName of
          127.0.0.1;
        - its certificates (webhooks, visibility API, metrics) this run's, made by the test
          CA: Kueue reads the last two from fixed folders (``/visibility``,
          ``/etc/kueue/metrics/certs``), so the process runs in a private mount namespace
          where this run's are bind-mounted there (empty mount points on the host);
        - pods its only integration; fair sharing on (the cohort's order by share).

        Once: a second call returns at once."""
        if getattr(self, "kueue_started", False):
            return
        k, p = self.admin, self.pki
        self._create_crds(paths)
        certs = self.dir / "kueue-certs"
        certs.mkdir(exist_ok=True)
        for have, want in (("kueue.crt", "tls.crt"), ("kueue.key", "tls.key")):
            (certs / want).write_bytes((p / have).read_bytes())
        webhook_port, visibility_port = free_port(), free_port()
        config = self.dir / "kueue.yaml"
        config.write_text(json.dumps({
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
            "namespace": "kueue-system",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{free_port()}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": "/visibility"},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "visibilityServer": {"bindAddress": "127.0.0.1", "bindPort": visibility_port},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["pod"]},
            "fairSharing": {"preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]},
        }))
        k.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kueue-system"}})
        ca = base64.b64encode((p / "ca.crt").read_bytes()).decode()
        # Only pods that name a queue pass Kueue's webhooks: the shared test cluster's other
        # pods never wait on them.
        pods = {"objectSelector": {"matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]},
                "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail"}

        def hook(name: str, path: str, operations: list[str]) -> dict:
            return {"name": name, **pods, "clientConfig": {"url": f"https://127.0.0.1:{webhook_port}{path}",
                                                           "caBundle": ca},
                    "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": operations,
                               "resources": ["pods"]}]}

        adm = "/apis/admissionregistration.k8s.io/v1"
        self.processes.launch("kueue", self._in_mount_namespace(
            [(certs, "/visibility"), (certs, "/etc/kueue/metrics/certs")],
            [str(paths["kueue"]), f"--config={config}", f"--kubeconfig={self.admin_kubeconfig}",
             f"--visibility-server-port={visibility_port}",
             "--zap-log-level=2"]))  # its scheduler's decisions, in test-output/k8s/kueue.log
        self._wait("Kueue's webhook server", lambda: not port_free(webhook_port), timeout=120)
        k.create(f"{adm}/mutatingwebhookconfigurations", {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "kueue-mutating-webhook-configuration"},
            "webhooks": [hook("mpod.kb.io", "/mutate--v1-pod", ["CREATE"])]})
        k.create(f"{adm}/validatingwebhookconfigurations", {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "kueue-validating-webhook-configuration"},
            "webhooks": [hook("vpod.kb.io", "/validate--v1-pod", ["CREATE", "UPDATE"])]})
        k.create("/api/v1/namespaces/kueue-system/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "visibility-server"},
            "spec": {"type": "ExternalName", "externalName": assert_loopback("127.0.0.1")}})
        k.create("/apis/apiregistration.k8s.io/v1/apiservices", {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta2.visibility.kueue.x-k8s.io"},
            "spec": {"group": "visibility.kueue.x-k8s.io", "version": "v1beta2", "groupPriorityMinimum": 100,
                     "versionPriority": 100, "caBundle": ca,
                     "service": {"name": "visibility-server", "namespace": "kueue-system",
                                 "port": visibility_port}}})
        self._wait("Kueue's visibility API", lambda: k.request(
            "GET", "/apis/visibility.kueue.x-k8s.io/v1beta2").status_code == 200, timeout=120)
        self.kueue_started = True

    def _in_mount_namespace(self, binds: list[tuple[Path, str]], argv: list[str]) -> list[str]:
        """``argv`` run in a private mount namespace with each folder of ``binds`` mounted at
        its path (made on the host as an empty mount point if missing); exec keeps the PID."""
        mounts = []
        for src, target in binds:
            Path(target).mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(target)}")
        script = " && ".join([*mounts, 'exec "$@"'])
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]

    def stop(self) -> None:
        """Stop each process by its PID, newest first (SIGTERM, then SIGKILL after 15 s)."""
        self.processes.stop(15)


# -- what kwok does not simulate: the container's listening port ------------------------------


class PodPorts:
    """Answers HTTP on each Running pod's IP and port, as the container would.

    kwok runs no container, so nothing would listen on a pod's address and the hub's
    readiness check would time out. This thread watches the namespace's pods and, for
    each Running one with a (loopback) IP, serves a 200 on ``podIP:port`` until the pod
    is gone. It never binds an address outside 127.0.0.0/8.
    """

    def __init__(self, kube: Kube, port: int = 8888):
        self.kube = kube
        self.port = port
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-ports", daemon=True)

    def start(self) -> PodPorts:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.kube.get(self.kube.ns("pods"))["items"]
            except requests.RequestException:
                pods = []
            live = {}
            for pod in pods:
                ip = pod.get("status", {}).get("podIP")
                if pod["spec"].get("hostNetwork"):
                    continue  # on the real node (k8s_node.py): its own container listens
                if pod["status"].get("phase") == "Running" and ip and "deletionTimestamp" not in pod["metadata"]:
                    live[ip] = pod
            for ip in list(self.servers):
                if ip not in live:
                    self._close(ip)
            for ip in live:
                if ip not in self.servers:
                    self._serve(assert_loopback(ip))
            self._stop.wait(0.2)

    def _serve(self, ip: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        try:
            server = ThreadingHTTPServer((ip, self.port), Handler)
        except OSError:
            return
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[ip] = server

    def _close(self, ip: str) -> None:
        server = self.servers.pop(ip)
        server.shutdown()
        server.server_close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for ip in list(self.servers):
            self._close(ip)


def held_on(kube, node: str, resource: str) -> int:
    """What the pods of every namespace bound to ``node`` hold of ``resource``, counted
    here from the API's own objects (extended resources: the limits, which a pod must set)."""
    pods = kube.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={node}"})["items"]
    return sum(int(c.get("resources", {}).get("limits", {}).get(resource, 0))
               for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
               for c in p["spec"]["containers"])


def secret_env(kube: Kube, pod: dict) -> dict[str, str]:
    """The values of the pod's secret-backed env vars, read the way a kubelet would."""
    values = {}
    for var in pod["spec"]["containers"][0].get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = kube.get(kube.ns("secrets", ref["name"]))
            values[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return values

