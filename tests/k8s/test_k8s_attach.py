"""Kubernetes attach, against the real API server: `atelier kubeconfig` writes a kubeconfig
whose identity reaches the user's own pod and nothing else.

ada and bo each run a server (real KubeSpawner pods, Running under kwok). With the file
ada's `atelier kubeconfig` wrote, the API server itself decides: ada may get, watch,
exec into, port-forward to and read the logs of her pod; exec into bo's pod, listing
pods or Secrets, reading Secrets and creating pods are refused. kwok pods cannot really
exec, so exec is checked two ways: a SelfSubjectAccessReview, and the exec request
itself, which for ada gets past authorization (an error about the upgrade, not 403)
and for bo is answered 403. The token is short-lived and dies when the server stops.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import pytest
import requests
import yaml
from k8s_cluster import NAMESPACE
from stack import VENV_BIN
from test_k8s_spawn import server_pod

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

SERVER = "att"
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/" + NAMESPACE


@pytest.fixture(scope="module")
def attach_role(kube):
    """What the platform adds to the chart's hub Role (`atelier render attach-rbac`, the
    step in docs/user-guide.md): the hub may make the per-user objects and grant what they hold."""
    out = subprocess.run([str(VENV_BIN / "atelier"), "render", "attach-rbac", "--namespace", NAMESPACE],
                         capture_output=True, text=True, check=True).stdout
    role, binding = yaml.safe_load_all(out)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # The chart's hub runs as the ServiceAccount `hub`; the tests' hub authenticates with a
    # client certificate as the user atelier-hub, so the binding names that subject.
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": NAMESPACE}]
    binding["subjects"] = [{"kind": "User", "name": "atelier-hub", "apiGroup": "rbac.authorization.k8s.io"}]
    kube.create(f"{RBAC}/roles", role)
    kube.create(f"{RBAC}/rolebindings", binding)


@pytest.fixture(scope="module")
def servers(hub, attach_role):
    hub.spawn("ada", "cpu-small", SERVER)
    hub.spawn("bo", "cpu-small", SERVER)
    yield
    for user in ("ada", "bo"):
        model = hub.api("GET", f"/users/{user}").json()["servers"].get(SERVER)
        if model and (model["ready"] or model["pending"]):
            hub.stop_server(user, SERVER)


def token_of(hub, user: str) -> str:
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "attach tests", "expires_in": 3600})
    r.raise_for_status()
    return r.json()["token"]


def atelier_kubeconfig(hub, tmp_path, user: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path), "ATELIER_HUB_URL": hub.url, "ATELIER_TOKEN": token_of(hub, user)}
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(var, None)
    return subprocess.run([str(VENV_BIN / "atelier"), "kubeconfig", *args], env=env, capture_output=True,
                          text=True, timeout=180)


class AsUser:
    """Requests to the API server with nothing but what a kubeconfig file holds."""

    def __init__(self, path, tmp_path):
        config = yaml.safe_load(path.read_text())
        ctx = config["contexts"][0]["context"]
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        assert set(user) == {"token"}, "the kubeconfig must hold a token and nothing else"
        ca = tmp_path / "ca.crt"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        self.server, self.namespace, self.token = cluster["server"], ctx["namespace"], user["token"]
        self.s = requests.Session()
        self.s.trust_env = False
        self.s.verify = str(ca)
        self.s.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, **kw) -> requests.Response:
        return self.s.request(method, self.server + path, timeout=30, **kw)

    def pods(self, name: str = "", sub: str = "") -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    def can(self, verb: str, resource: str, name: str = "", subresource: str = "") -> bool:
        attrs = {"namespace": self.namespace, "verb": verb, "resource": resource}
        if name:
            attrs["name"] = name
        if subresource:
            attrs["subresource"] = subresource
        r = self.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}})
        assert r.status_code == 201, r.text
        return r.json()["status"]["allowed"]


@pytest.fixture(scope="module")
def ada(hub, servers, tmp_path_factory):
    home = tmp_path_factory.mktemp("ada-laptop")
    r = atelier_kubeconfig(hub, home, "ada", SERVER, "--duration", "3600")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{hub.hub_log()}"
    path = home / ".kube" / f"atelier-ada-{SERVER}.yaml"
    assert (path.stat().st_mode & 0o777) == 0o600
    return {"out": r.stdout, "path": path, "api": AsUser(path, home)}


def test_kubeconfig_reaches_only_the_users_own_pod(kube, ada):
    api = ada["api"]
    mine, theirs = server_pod(kube, "ada", SERVER)["metadata"]["name"], server_pod(kube, "bo", SERVER)["metadata"]["name"]

    # Asked of the API server's authorizer, with the kubeconfig's identity.
    assert api.can("get", "pods", mine) and api.can("watch", "pods", mine)
    assert api.can("create", "pods", mine, "exec") and api.can("get", "pods", mine, "exec")
    assert api.can("create", "pods", mine, "portforward")
    assert api.can("get", "pods", mine, "log")
    assert not api.can("create", "pods", theirs, "exec")
    assert not api.can("get", "pods", theirs)
    assert not api.can("list", "pods")
    assert not api.can("list", "secrets") and not api.can("get", "secrets", f"{mine}-env")
    assert not api.can("create", "pods")
    assert not api.can("delete", "pods", mine)

    # The requests themselves.
    assert api.request("GET", api.pods(mine)).status_code == 200
    assert api.request("GET", api.pods(theirs)).status_code == 403
    assert api.request("GET", api.pods()).status_code == 403
    assert api.request("GET", f"/api/v1/namespaces/{api.namespace}/secrets").status_code == 403
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder"},
           "spec": {"containers": [{"name": "x", "image": "busybox"}]}}
    assert api.request("POST", api.pods(), json=pod).status_code == 403
    # exec and port-forward (docs/user-guide.md: allowed on her pods, and no other's): refused by
    # authorization for bo's pod. For ada's, authorization lets the request through to the
    # streaming handler, which answers what it answers any caller who may stream but did
    # not upgrade the connection (kubectl does): 400 "Upgrade request required".
    # A kubeconfig refused exec would get 403 here; one without a valid token, 401.
    params = {"command": "true", "container": "notebook", "stdout": "true"}
    assert api.request("POST", api.pods(theirs, "exec"), params=params).status_code == 403
    assert api.request("POST", api.pods(theirs, "portforward"), params={"ports": "8888"}).status_code == 403
    for sub, query in (("exec", params), ("portforward", {"ports": "8888"})):
        own = api.request("POST", api.pods(mine, sub), params=query)
        assert (own.status_code, own.json()["message"]) == (400, "Upgrade request required"), (sub, own.text)
    # logs (docs/user-guide.md: allowed): refused for bo's pod; for ada's, the API server goes on to
    # fetch them from the pod's node's kubelet. Her pod runs on a kwok node, which has no
    # kubelet at the address and port its Node object gives, so that fetch fails: a 500
    # that names that very kubelet URL for her pod's container, never a 401 or 403.
    assert api.request("GET", api.pods(theirs, "log")).status_code == 403
    pod = server_pod(kube, "ada", SERVER)
    node = kube.get(f"/api/v1/nodes/{pod['spec']['nodeName']}")
    address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    # A Node that gives no port (kwok's: 0) is reached on the kubelet's default one, 10250.
    port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] or 10250
    log = api.request("GET", api.pods(mine, "log"))
    assert log.status_code == 500, log.text
    assert f'"https://{address}:{port}/containerLogs/{NAMESPACE}/{mine}/notebook"' in log.json()["message"], log.text


def test_kubeconfig_prints_the_attach_steps_and_the_code_command(kube, ada):
    pod = server_pod(kube, "ada", SERVER)["metadata"]["name"]
    assert f"kubectl exec -it {pod} -- bash -l" in ada["out"]
    assert "Attach Visual Studio Code" in ada["out"]
    assert (f"code --folder-uri vscode-remote://k8s-container+context=atelier-ada-{SERVER}+podname={pod}"
            f"+namespace={NAMESPACE}+name=notebook/home/jovyan") in ada["out"]


def test_token_is_short_lived_and_bound_to_the_server(kube, ada):
    claims = json.loads(base64.urlsafe_b64decode(ada["api"].token.split(".")[1] + "=="))
    assert claims["exp"] - claims["iat"] <= 3600
    pod = server_pod(kube, "ada", SERVER)["metadata"]["name"]
    assert claims["kubernetes.io"]["secret"]["name"] == f"{pod}-env"


def test_no_kubeconfig_for_someone_elses_or_a_stopped_server(hub, servers, tmp_path):
    token = token_of(hub, "bo")
    r = requests.post(f"{hub.url}/hub/api/atelier/users/ada/servers/{SERVER}/kubeconfig", json={},
                      headers={"Authorization": f"token {token}"}, timeout=60)
    assert r.status_code in (403, 404), r.text
    r = atelier_kubeconfig(hub, tmp_path, "cy")
    assert r.returncode == 2 and "is not running: start it first" in r.stderr, r.stderr


def test_the_token_dies_when_the_server_stops(hub, kube, ada):
    api = ada["api"]
    mine = server_pod(kube, "ada", SERVER)["metadata"]["name"]
    assert api.request("GET", api.pods(mine)).status_code == 200
    hub.stop_server("ada", SERVER)
    kube.wait("the pod deleted", lambda: server_pod(kube, "ada", SERVER) is None, timeout=120)
    deadline = time.monotonic() + 60
    while (status := api.request("GET", api.pods(mine)).status_code) != 401 and time.monotonic() < deadline:
        time.sleep(1)
    assert status == 401
