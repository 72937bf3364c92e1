"""The Zero to JupyterHub chart, installed with Helm on the test cluster's real node.

What a platform team does, for real: ``atelier render values`` renders the chart's
values from the profiles, the deployment settings and the cluster settings; ``helm
install`` puts the vendored chart (../shared/vendor/z2jh/chart, used as it is) on the
test cluster with those values plus the test overlay (chart-overlay.yaml: host
networking, ports on 127.0.0.1, the tests' authenticator; each change says why) and
one post-renderer (helm-plugins/atelier-test-node: the proxy's listen flags). The hub
pod runs images/hub with the chart's own jupyterhub_config.py, whose hub.extraConfig
calls Atelier's configuration; the proxy pod runs images/proxy; sessions run
images/base. All three are imported into the real node's containerd (cached by image
ID). Every request goes through the chart's proxy on 127.0.0.1.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import re
import secrets
import string
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import requests
import yaml
from atelier_hub.connect import ssh_alias
from atelier_hub.install.paths import image_ref
from atelier_hub.usage import read_events as read_usage
from conftest import LOGS, REPO, VENV_BIN, _test_profiles, capacity_rbac
from control_plane import helm_path, kuberay_paths
from k8s_cluster import GPU_GROUP, SLICE_PROFILES, STORAGE_CLASS, assert_loopback, free_port, held_on, tail
from k8s_node import NODE_NAME, POOL, listening
from kernel import run_code, server_address
from stack import HubClient

GIT_HOST = "git.example.org"  # the deployment's git host (PlatformServices.deployment)

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

HERE = Path(__file__).resolve().parent
CHART = Path(os.environ.get("ATELIER_Z2JH_CHART") or REPO.parent / "shared" / "vendor" / "z2jh" / "chart")
RELEASE = "atelier"
CHART_NS = "atelier-chart"  # the release's own namespace: uninstall is checked against it alone
HUB_DB_CLASS = "atelier-test-hub-db"  # chart-overlay.yaml's hub.db.pvc.storageClassName
USERS = ("fay", "gil")  # chart-overlay.yaml's allowed_users; gil is in the GPU group
S3_USERS = ("alice", "bob")  # the S3 identity test's target and attacker (allowed_users too)
S3_ADMIN_SECRET = "platform-s3-root"  # the platform's Secret of the store's root keys (cluster.yaml)
MLFLOW_USERS = S3_USERS  # ... and the MLflow test's target and attacker
QUICK, QUICK_TIMEOUT = "quick", 60  # the chart test's own profile (_inputs)
MARKER = "written in fay's cpu-small pod"
RAY_HEAD_IP = "127.0.61.1"  # the personal Ray clusters' heads on the node (cluster settings' head_ip)
PAGE = os.sysconf("SC_PAGE_SIZE")  # the kernel keeps a memory limit in whole pages


def figure(name: str, seconds: float) -> None:
    """A figure of the chart's path, printed and kept beside the other k8s figures."""
    print(f"\n[figure] {name}: {seconds:.1f} s", flush=True)
    path = LOGS / "chart-figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = round(seconds, 1)
    path.write_text(json.dumps(figures, indent=1))


class ChartHub(HubClient):
    """The chart's hub, reached as users reach it: through the chart's proxy."""

    def __init__(self, kube, url: str, token: str, password: str):
        super().__init__()
        self.kube = kube
        self.url = url
        self.admin_token = token
        self.password = password
        self.log = LOGS / "chart-hub.log"

    def login(self, name: str, password: str | None = None) -> requests.Session:
        """Logged in through the chart's proxy, with the overlay's password for the test users."""
        return super().login(name, self.password if password is None else password)

    def pick_profile(self, user: str, profile: str) -> float:
        """``user`` logs in and picks ``profile`` on the spawn form, as in a browser; the
        moment the form was posted (monotonic), which the hub answered with a redirect."""
        s = self.login(user)
        form = s.get(f"{self.url}/hub/spawn/{user}", timeout=60)
        xsrf = re.search(r'xsrf_token: "([^"]+)"', form.text).group(1)  # as the page's script sends it
        posted = time.monotonic()
        r = s.post(f"{self.url}/hub/spawn/{user}", data={"profile": profile, "_xsrf": xsrf}, timeout=120,
                   allow_redirects=False)
        assert r.status_code == 302, (r.status_code, r.text[:500])
        return posted

    def hub_log(self, n: int = 60) -> str:
        self.save_logs()
        return tail(self.log, n)

    def save_logs(self) -> None:
        """The hub's and the proxy's container logs, through the API server and kubelet."""
        for component in ("hub", "proxy"):
            for pod in self.kube.get(self.kube.ns("pods", namespace=CHART_NS),
                                     params={"labelSelector": f"component={component}"})["items"]:
                r = self.kube.request("GET", self.kube.ns("pods", pod["metadata"]["name"], namespace=CHART_NS) + "/log")
                if r.ok:
                    (LOGS / f"chart-{component}.log").write_text(r.text)


class Helm:
    def __init__(self, workdir: Path, kubeconfig: Path):
        self.bin = helm_path()
        # Helm's own folders are this run's (nothing in ~/.config or ~/.cache); its plugins
        # folder holds the post-renderer only.
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HELM_PLUGINS": str(HERE / "helm-plugins"),
                    "HELM_CONFIG_HOME": str(workdir / "config"), "HELM_CACHE_HOME": str(workdir / "cache"),
                    "HELM_DATA_HOME": str(workdir / "data"),
                    # The post-renderer's Python (PyYAML) is the test venv's.
                    "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def __call__(self, *args: str, timeout: float = 180) -> str:
        r = subprocess.run([str(self.bin), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"helm {' '.join(args[:2])} failed ({r.returncode}):\n{r.stderr[-3000:]}")
        return r.stdout


class PlatformServices:
    """The S3 store and the MLflow server a platform team would run beside the chart
    (its own object store, its own tracking server), here as processes on 127.0.0.1:
    versitygw with its internal IAM (the hub makes one account per user with the root
    keys, which the platform gives it in a Secret: :meth:`s3_admin_secret`) and a shared
    bucket, and `mlflow server` with MLflow's auth app (admin `service/mlflow`, its
    password in the chart's Secret, as the cluster settings' `mlflow` block asks:
    :meth:`mlflow_server_args`). Sessions reach S3 with the deployment settings `atelier
    render values` puts in the chart's values, and MLflow through the hub's front only."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.bucket = "shared"
        self.keys = {"access_key_id": "chart" + secrets.token_hex(6), "secret_access_key": secrets.token_urlsafe(24)}
        self.s3_port, self.mlflow_port = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.tracking_uri = f"http://127.0.0.1:{self.mlflow_port}"
        self.procs: list[subprocess.Popen] = []
        self.mlflow_admin_password = secrets.token_urlsafe(24)
        self.trino_port = free_port()
        self.trino_key_b64 = base64.b64encode(os.urandom(32)).decode()

    def start(self) -> PlatformServices:
        from atelier_hub.install.paths import tool_path

        (self.dir / "s3").mkdir(parents=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ROOT_ACCESS_KEY_ID": self.keys["access_key_id"],
               "ROOT_SECRET_ACCESS_KEY": self.keys["secret_access_key"]}
        self._spawn("s3", [str(tool_path("versitygw")), "--port", f"127.0.0.1:{self.s3_port}", "--quiet",
                           *self.s3_iam_args(), "posix", str(self.dir / "s3")], env)
        self._wait(self.s3_port)
        self.s3().create_bucket(Bucket=self.bucket)
        # Artifacts go from the session to S3 itself (MLFLOW_S3_ENDPOINT_URL, the session's keys).
        auth_args, auth_env = self.mlflow_server_args()
        self._spawn("mlflow", [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                               str(self.mlflow_port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
                               "--default-artifact-root", f"s3://{self.bucket}/mlflow", "--no-serve-artifacts",
                               *auth_args],
                    {**os.environ, "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
                     "AWS_ACCESS_KEY_ID": self.keys["access_key_id"],
                     "AWS_SECRET_ACCESS_KEY": self.keys["secret_access_key"], **auth_env})
        self._wait(self.mlflow_port, timeout=180)
        return self

    def _spawn(self, name: str, cmd: list[str], env: dict) -> None:
        log = open(LOGS / f"chart-platform-{name}.log", "wb")  # noqa: SIM115 (kept open for the process)
        self.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def _wait(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not listening(port=port):
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                raise RuntimeError(f"the platform's service on port {port} did not start; see "
                                   f"{LOGS}/chart-platform-*.log")
            time.sleep(0.5)

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.keys["access_key_id"],
                            aws_secret_access_key=self.keys["secret_access_key"])

    # -- per-user S3 accounts (identity.s3_admin_secret) ------------------------------

    def s3_iam_args(self) -> list[str]:
        """versitygw's internal IAM, read at each request (a deleted account stops at once),
        as the embedded store runs it (atelier_hub.services.s3_server)."""
        (self.dir / "s3-iam").mkdir(exist_ok=True)
        return ["--iam-dir", str(self.dir / "s3-iam"), "--iam-cache-disable"]

    def s3_admin_secret(self, kube, namespace: str) -> None:
        """The platform's Secret of the store's root keys, in the hub's namespace before
        the chart is installed (cluster settings' identity.s3_admin_secret names it)."""
        if kube.request("GET", f"/api/v1/namespaces/{namespace}").status_code == 404:
            kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": namespace}})
        kube.request("DELETE", kube.ns("secrets", S3_ADMIN_SECRET, namespace=namespace))
        kube.create(kube.ns("secrets", namespace=namespace), {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": S3_ADMIN_SECRET}, "type": "Opaque",
            "stringData": dict(self.keys)})

    def s3_as(self, keys: dict[str, str]):
        """A client of the store with ``keys`` (a user's), failing at once."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"],
                            config=Config(retries={"max_attempts": 1}))

    def deployment(self) -> dict:
        # MLflow is not a deployment service here: the cluster settings' `mlflow` block
        # (mlflow_cluster_settings) puts the hub's front before it.
        # No S3 keys either: each user's sessions get their own account's (identity.s3_admin_secret).
        # Users keep a token for one git host in the hub (its credentials service in the hub pod).
        return {"services": {"s3": {"endpoint_url": self.endpoint, "bucket": self.bucket},
                             "credentials": {"git_hosts": [GIT_HOST]},
                             "trino": self.trino_deployment()}}

    # -- MLflow with its auth app, behind the hub's front ----------------------------------

    MLFLOW_ADMIN = "service/mlflow"  # the admin the cluster settings' mlflow.server_url names
    MLFLOW_PREFIX = "/services/mlflow"  # ... and its --static-prefix
    MLFLOW_SECRET = "atelier-mlflow-admin"  # mlflow.admin_secret (the default, written out)

    def mlflow_server_args(self) -> tuple[list[str], dict]:
        """`mlflow server --app-name basic-auth` as a platform runs it for the front: its
        own account database, every account reading everything (MLflow's READ default),
        the admin account and its password (in the environment, never on a command line)."""
        ini = self.dir / "basic_auth.ini"
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = sqlite:///{self.dir / 'basic_auth.db'}\n"
                       f"admin_username = {self.MLFLOW_ADMIN}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        return (["--app-name", "basic-auth", "--static-prefix", self.MLFLOW_PREFIX],
                {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": self.mlflow_admin_password,
                 "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})

    def mlflow_cluster_settings(self, front_port: int) -> dict:
        return {"mlflow": {"server_url": self.tracking_uri, "port": front_port, "admin_secret": self.MLFLOW_SECRET}}

    def mlflow_admin_secret(self, kube) -> None:
        """The Secret the hub pod mounts (what terraform/modules/atelier makes from Secrets
        Manager), in the release's namespace, made before `helm install`."""
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CHART_NS}})
        kube.create(kube.ns("secrets", namespace=CHART_NS), {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": self.MLFLOW_SECRET},
            "stringData": {"admin-password": self.mlflow_admin_password}})

    def mlflow_api(self, path: str) -> str:
        """The server's own REST API (direct, around the front)."""
        return f"{self.tracking_uri}{self.MLFLOW_PREFIX}/api/2.0/mlflow/{path}"

    def mlflow_admin(self) -> tuple[str, str]:
        return (self.MLFLOW_ADMIN, self.mlflow_admin_password)

    # -- Trino: the platform's coordinator, behind the hub's front -------------------------

    TRINO_SECRET = "atelier-trino-jwt"  # trino.jwt_secret (the default, written out)
    SHARED_SCHEMA = "team"  # the deployment's shared schema: everyone changes its tables

    def trino_deployment(self) -> dict:
        return {"url": f"http://127.0.0.1:{self.trino_port}", "catalog": "hive", "default_schema": "default",
                "shared_schemas": [self.SHARED_SCHEMA]}

    def trino_cluster_settings(self, front_port: int, rules_port: int) -> dict:
        return {"trino": {"port": front_port, "rules_port": rules_port, "schemas_in": "hive"}}

    def trino_jwt_secret(self, kube) -> None:
        """The Secret of the front's HMAC key, made by the platform before `helm install`
        (the hub pod mounts it; the coordinator reads the same key from a file)."""
        kube.create(kube.ns("secrets", namespace=CHART_NS), {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": self.TRINO_SECRET},
            "stringData": {"jwt-hmac": self.trino_key_b64}})

    def start_trino(self, rules_url: str) -> None:
        """The coordinator, started now and waited for by :meth:`wait_trino`: one node on
        127.0.0.1 with the hive catalog on the shared bucket (the store's root keys: Trino
        reads S3 as itself), set as docs/admin-guide.md "Trino on a cluster" tells a platform, line for
        line: JWTs checked with the front's key, no login over plain HTTP, the rules read
        from the hub pod's front every second."""
        from atelier_hub.install.paths import trino_paths
        from atelier_hub.services.trino_etc import render_etc, server_command
        from atelier_hub.services.trino_server import default_java_home

        # Trino reads its rules once at boot and exits where it cannot (a platform's
        # Deployment would start it again): the hub pod starts its services one after the
        # other once its login page answers, so the front's rules come a little later.
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(rules_url, timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"the hub pod's Trino front did not serve {rules_url} in 120 s"
            time.sleep(0.5)
        home, java = trino_paths().home, default_java_home()
        root = self.dir / "trino"
        etc, data = root / "etc", root / "data"
        (root / "jwt").mkdir(parents=True)
        key_file = root / "jwt" / "jwt-hmac"
        key_file.write_text(self.trino_key_b64)
        key_file.chmod(0o600)
        # The node, its JVM and catalogs as the embedded mode's; no authentication yet.
        files = render_etc(port=self.trino_port, node_id="platform-coordinator", data_dir=str(data),
                           etc_dir=str(etc), trino_home=str(home), s3_endpoint=self.endpoint, bucket=self.bucket)
        files.pop("rules.json")
        files["config.properties"] += (
            "http-server.authentication.type=JWT\n"
            f"http-server.authentication.jwt.key-file={key_file}\n"
            "http-server.authentication.allow-insecure-over-http=false\n"
            "http-server.process-forwarded=true\n"
            "internal-communication.shared-secret=${ENV:TRINO_INTERNAL_SECRET}\n")
        files["access-control.properties"] = (
            "access-control.name=file\n"
            f"security.config-file={rules_url}\n"
            "security.refresh-period=1s\n")
        for rel, text in files.items():
            (etc / rel).parent.mkdir(parents=True, exist_ok=True)
            (etc / rel).write_text(text)
        data.mkdir()
        launcher = dict(line.split("=", 1) for line in (home / "bin" / "launcher.properties").read_text().splitlines()
                        if "=" in line)
        cmd = server_command(java=f"{java}/bin/java", trino_home=str(home), etc_dir=str(etc), files=files,
                             log_file=str(LOGS / "chart-platform-trino-server.log"), main_class=launcher["main-class"])
        self._spawn("trino", cmd, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "JAVA_HOME": java,
                                   "TRINO_INTERNAL_SECRET": secrets.token_urlsafe(24),
                                   "AWS_ACCESS_KEY_ID": self.keys["access_key_id"],
                                   "AWS_SECRET_ACCESS_KEY": self.keys["secret_access_key"]})
        self.trino_started = time.monotonic()

    def wait_trino(self, timeout: float = 420) -> None:
        """The coordinator answers a query (as the front's service user, with a JWT of the
        front's key) once it has read the rules from the hub pod."""
        from atelier_hub.services.trino_front import SERVICE_USER, sign_jwt
        from atelier_hub.services.trino_server import READY_SQL, TrinoError, query

        token = sign_jwt(base64.b64decode(self.trino_key_b64), subject=SERVICE_USER)
        last = ""
        while time.monotonic() - self.trino_started < timeout:
            try:
                if query(f"http://127.0.0.1:{self.trino_port}", READY_SQL, user=SERVICE_USER, token=token,
                         timeout=10) == [[25]]:
                    figure("platform Trino ready", time.monotonic() - self.trino_started)
                    return
            except (OSError, TrinoError) as exc:
                last = str(exc)
            assert all(p.poll() is None for p in self.procs), \
                f"a platform service exited; {tail(LOGS / 'chart-platform-trino.log', 20)}"
            time.sleep(1)
        raise AssertionError(f"the platform's Trino answered no query in {timeout:.0f} s ({last}):\n"
                             f"{tail(LOGS / 'chart-platform-trino-server.log', 30)}")

    def stop(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, 15)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait(30)


def _inputs(workdir: Path, *, public_url: str, culler_port: int, usage_port: int,
            deployment: dict, cluster_extra: dict | None = None) -> list[str]:
    """What a platform team writes (profiles, deployment and cluster settings), as
    `atelier render values` arguments."""
    profiles = _test_profiles(workdir / "profiles")  # GPU profiles for the GPU group only
    # A second profile that fits the real node (2 CPUs; cpu-large asks 4) and is culled in
    # a minute, so the home's move between profiles and the hub pod's culler are seen in
    # one test run. The culler checks a quarter of the shortest timeout apart (15 s).
    (profiles / f"{QUICK}.yaml").write_text(yaml.safe_dump({
        "name": QUICK, "display_name": "Quick", "description": "Culled after a minute idle (the chart test).",
        "cpu": {"guarantee": 0.1, "limit": 1}, "memory": {"guarantee": "256M", "limit": "1G"},
        "culling": {"idle_timeout": QUICK_TIMEOUT, "warn_before": 10}}, sort_keys=False))
    (workdir / "deployment.json").write_text(json.dumps(deployment))
    (workdir / "deployment.json").chmod(0o600)
    (workdir / "cluster.yaml").write_text(yaml.safe_dump({
        "public_url": public_url,
        # The images of this checkout, as the node's containerd holds them.
        "hub_image": {"name": "atelier-hub", "tag": "latest"},
        "singleuser_image": {"name": "atelier-base", "tag": "latest"},
        "storage": {"storage_class": STORAGE_CLASS, "capacity": "10Gi"},
        "culling": {"enabled": True, "port": culler_port},
        "usage": {"enabled": True, "port": usage_port},
        # The core pool (the chart's own pods) is the test cluster's real node.
        "node_pools": {"core": {"atelier.dev/pool": POOL}},
        # One S3 account per user on the platform's versitygw (PlatformServices).
        "identity": {"s3_admin_secret": S3_ADMIN_SECRET},
        **(cluster_extra or {}),
    }))
    return ["--profiles", str(profiles), "--deployment", str(workdir / "deployment.json"),
            "--cluster", str(workdir / "cluster.yaml")]


def _hub_db_volume(kube, path: Path) -> None:
    """A static PV for the hub's database PVC (no provisioner here), owned by the hub's uid."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 1000, 1000)
    kube.create("/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "chart-hub-db", "labels": {"atelier.dev/test": "hub-db"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": HUB_DB_CLASS,
                 "hostPath": {"path": str(path), "type": "Directory"}},
    })


def _pods(kube, selector: str = "") -> list[dict]:
    return kube.get(kube.ns("pods", namespace=CHART_NS), params={"labelSelector": selector})["items"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    services = PlatformServices(tmp_path_factory.mktemp("platform"))
    try:
        yield services.start()
    finally:
        services.stop()


@pytest.fixture(scope="module")
def chart(real_node, control_plane, platform, tmp_path_factory):
    """`helm install` of the chart; the hub's login page answering through its proxy."""
    if not (CHART / "Chart.yaml").is_file():
        pytest.fail(f"the Zero to JupyterHub chart is not at {CHART}: it is vendored beside the repository "
                    "(../shared/vendor/z2jh/chart), or set ATELIER_Z2JH_CHART", pytrace=False)
    from atelier_hub.install.docker import ensure_image

    kube = control_plane.admin
    workdir = tmp_path_factory.mktemp("chart")
    # The images of this checkout (rebuilt only when their inputs changed), imported into
    # the node's containerd unless it holds the same image ID already.
    for name in ("hub", "proxy"):
        ensure_image(name)
    imports = {name: real_node.import_image(image_ref(name)) for name in ("hub", "proxy")}
    helm = Helm(workdir / "helm", control_plane.admin_kubeconfig)
    ports = {k: free_port() for k in ("PROXY_PORT", "PROXY_API_PORT", "HUB_PORT", "SESSION_PORT", "CULLER_PORT",
                                       "USAGE_PORT", "MLFLOW_PORT", "TRINO_FRONT_PORT", "TRINO_RULES_PORT",
                                       "CREDENTIALS_PORT", "JOBS_PORT", "RAY_CLUSTERS_PORT", "RAY_GCS_PORT",
                                       "RAY_CLIENT_PORT", "RAY_DASHBOARD_PORT")}
    public_url = f"http://localhost:{ports['PROXY_PORT']}"
    password, token = secrets.token_urlsafe(16), secrets.token_hex(32)

    rendered = workdir / "values.yaml"
    r = subprocess.run([str(VENV_BIN / "atelier"), "render", "values", *_inputs(
        workdir, public_url=public_url, culler_port=ports["CULLER_PORT"], usage_port=ports["USAGE_PORT"],
        deployment=platform.deployment(), cluster_extra={
            **platform.mlflow_cluster_settings(ports["MLFLOW_PORT"]),
            **platform.trino_cluster_settings(ports["TRINO_FRONT_PORT"], ports["TRINO_RULES_PORT"]),
            # A port of this run's (the node's network is the machine's), as for the others.
            "credentials": {"port": ports["CREDENTIALS_PORT"]}, "jobs": {"port": ports["JOBS_PORT"]},
            # Personal Ray clusters: KubeRay's operator runs beside the control plane. The
            # heads share the node's network, so they announce a loopback address of
            # their own (Ray rewrites 127.0.0.1 into the machine's interface address).
            "ray_clusters": {"enabled": True, "port": ports["RAY_CLUSTERS_PORT"], "workers_per_user": 2,
                             "gcs_port": ports["RAY_GCS_PORT"], "client_port": ports["RAY_CLIENT_PORT"],
                             "dashboard_port": ports["RAY_DASHBOARD_PORT"], "head_ip": RAY_HEAD_IP}}),
        "--out", str(rendered)],
        capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    overlay = workdir / "overlay.yaml"
    overlay.write_text(string.Template((HERE / "chart-overlay.yaml").read_text()).substitute(
        {k: str(v) for k, v in ports.items()}, API_PORT=str(control_plane.port), PASSWORD=password,
        TEST_TOKEN=token))
    overlay.chmod(0o600)
    _hub_db_volume(kube, workdir / "hub-db")
    platform.s3_admin_secret(kube, CHART_NS)  # makes the namespace
    # What the Terraform module makes beside the chart: the hub's read-only ClusterRole for
    # the spawn form's numbers and its Role to read job pods' logs, bound to the chart's hub.
    capacity_rbac(kube, CHART_NS, as_test_hub=False)
    # KubeRay's operator and its CRD, early: the garbage collector finds new kinds by
    # rediscovery (every 30 s), and the Ray cluster test relies on it to follow owners.
    control_plane.start_kuberay(kuberay_paths())
    platform.mlflow_admin_secret(kube)
    platform.trino_jwt_secret(kube)

    t0 = time.monotonic()
    helm("install", RELEASE, str(CHART), "--namespace", CHART_NS, "--create-namespace",
         "-f", str(rendered), "-f", str(overlay),
         "--post-renderer", "atelier-test-node",
         "--post-renderer-args", f"--proxy-port={ports['PROXY_PORT']}",
         "--post-renderer-args", f"--proxy-api-port={ports['PROXY_API_PORT']}")
    hub = ChartHub(kube, public_url, token, password)
    hub.ports = ports
    hub.helm = helm
    hub.imports = imports
    hub.volume = workdir / "hub-db"  # the hub pod's /srv/jupyterhub (a hostPath PV)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                page = hub.http.get(f"{public_url}/hub/login", timeout=10)
                if page.status_code == 200 and "username_input" in page.text:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pods = {p["metadata"]["name"]: p["status"] for p in _pods(kube)}
                raise RuntimeError(f"the chart's hub not ready through its proxy in 300 s; pods: "
                                   f"{json.dumps(pods)[:3000]}\n{hub.hub_log()}")
            time.sleep(1)
        hub.ready_s = time.monotonic() - t0
        figure("helm install to hub ready", hub.ready_s)
        # The platform's Trino reads its rules from the hub pod's front: started now, in
        # the background, and waited for by the Trino test.
        platform.start_trino(f"http://127.0.0.1:{ports['TRINO_RULES_PORT']}/rules.json")
        yield hub
    finally:
        hub.save_logs()
        for user in (*USERS, *S3_USERS):  # servers first (KubeSpawner's pods are not the chart's)
            try:
                hub.api("DELETE", f"/users/{user}/server")
            except requests.RequestException:
                pass
        try:
            helm("uninstall", RELEASE, "--namespace", CHART_NS, "--wait", timeout=240)
        except RuntimeError:
            pass  # uninstalled by the test already
        real_node.delete_pods()
        kube.request("DELETE", "/api/v1/persistentvolumes/chart-hub-db")
        for secret in (platform.MLFLOW_SECRET, platform.TRINO_SECRET):
            kube.request("DELETE", kube.ns("secrets", secret, namespace=CHART_NS))


def test_the_chart_runs_the_hub_and_proxy_pods_from_our_images(chart, control_plane, real_node):
    kube = control_plane.admin
    for component, image in (("hub", image_ref("hub")), ("proxy", image_ref("proxy"))):
        pods = _pods(kube, f"component={component}")
        assert len(pods) == 1, pods
        pod = pods[0]
        assert pod["status"]["phase"] == "Running", pod["status"]
        assert pod["spec"]["nodeName"] == NODE_NAME and pod["spec"]["hostNetwork"] is True
        assert assert_loopback(pod["status"]["podIP"]) == "127.0.0.1"
        container = pod["spec"]["containers"][0]
        assert container["image"] == image and container["imagePullPolicy"] == "Never", container
    # The hub runs the chart's own configuration file (the chart's Secret mounts it; the
    # hub image names no other).
    hub_pod = _pods(kube, "component=hub")[0]
    assert hub_pod["spec"]["containers"][0]["args"][:3] == [
        "jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"]
    log = chart.hub_log(400)
    # ... whose hub.extraConfig ran the rendered Atelier block and the overlay's, in that order.
    assert re.search(r"Loading extra config: atelier\.py.*Loading extra config: zz-test-node\.py", log, re.S), log
    # Hub, proxy and culler listen on 127.0.0.1 only, each on this run's port. The hub
    # routes its login page before its managed services answer: the culler may still be
    # starting.
    kube.wait("the culler in the hub pod to listen", lambda: listening(port=chart.ports["CULLER_PORT"]),
              timeout=120)
    kube.wait("the usage page in the hub pod to listen", lambda: listening(port=chart.ports["USAGE_PORT"]),
              timeout=120)
    kube.wait("the MLflow front in the hub pod to listen", lambda: listening(port=chart.ports["MLFLOW_PORT"]),
              timeout=120)
    for key in ("PROXY_PORT", "PROXY_API_PORT", "HUB_PORT", "CULLER_PORT", "USAGE_PORT", "MLFLOW_PORT"):
        port = chart.ports[key]
        assert listening(port=port) == {f"127.0.0.1:{port}"}, (key, listening(port=port))
    # The hub's API answers through the chart's proxy with the overlay's service token.
    assert chart.api("GET", "/").status_code == 200


def test_login_and_the_spawn_form_shows_the_profiles_of_ones_groups(chart, control_plane):
    kube = control_plane.admin
    for user in USERS:
        r = chart.api("POST", f"/users/{user}")
        assert r.status_code in (201, 409), r.text
    assert chart.api("POST", f"/groups/{GPU_GROUP}").status_code in (201, 409)
    assert chart.api("POST", f"/groups/{GPU_GROUP}/users", json={"users": ["gil"]}).status_code == 200
    # A wrong password is refused by the overlay's authenticator.
    _, refused = chart.try_login("fay", "not-" + chart.password)
    assert refused.status_code != 302
    # profiles/*.yaml: cpu-small, cpu-large and highmem for everyone; gpu-1 and gpu-4,
    # and the test's GPU slices, only for the GPU group (the test profiles restrict them so).
    everyone = {"cpu-small", "cpu-large", "highmem", QUICK}
    gpu = {"gpu-1", "gpu-4", *SLICE_PROFILES}
    for user, expected in (("fay", everyone), ("gil", everyone | gpu)):
        s = chart.login(user)
        form = s.get(f"{chart.url}/hub/spawn/{user}", timeout=60)
        assert form.status_code == 200 and 'id="spawn_form"' in form.text, form.text[:500]
        shown = set(re.findall(r'value="((?:cpu|gpu|highmem|quick)[\w-]*)"', form.text))
        assert shown == expected, (user, shown)
        # Each card says what its pool has free (the hub pod reads the nodes and pods with
        # the ClusterRole above): the GPU pool's 8 GPUs less what pods hold there now.
        page = form.content.decode()
        lines = dict(re.findall(r'class="atelier-capacity" data-profile="([\w-]+)">([^<]+)<', page))
        assert set(lines) == expected, (user, lines)
        if user == "gil":
            free = 8 - held_on(kube, "gpu-0", "nvidia.com/gpu")
            assert lines["gpu-1"] == f"{free} of 8 GPUs free · fits now", lines


def test_cpu_small_runs_in_a_real_pod_and_jupyterlab_answers_through_the_chart_proxy(chart, control_plane,
                                                                                       real_node):
    kube = control_plane.admin
    user = "fay"
    token = chart.api("POST", f"/users/{user}/tokens", json={"note": "chart test", "expires_in": 900}).json()["token"]
    t0 = chart.pick_profile(user, "cpu-small")
    lab_url = f"http://{user}.localhost:{chart.ports['PROXY_PORT']}/user/{user}/lab"
    deadline = time.monotonic() + 420
    while True:
        model = chart.api("GET", f"/users/{user}").json()["servers"].get("")
        if model and model["ready"]:
            lab = chart.http.get(lab_url, headers={"Authorization": f"token {token}"}, timeout=60)
            if lab.status_code == 200 and "JupyterLab" in lab.text:
                break
        elif not model or not model["pending"]:
            raise AssertionError(f"the spawn failed: {model}\n{chart.hub_log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"JupyterLab not ready in 420 s: {model}\n{chart.hub_log()}")
        time.sleep(0.5)
    figure("spawn request to JupyterLab ready", time.monotonic() - t0)
    # The chart's proxy pod routes by host: fay's server answers at fay.localhost only;
    # the same path on the hub's host is the hub's (a redirect into /hub/), never hers.
    assert model["url"] == f"http://{user}.localhost:{chart.ports['PROXY_PORT']}/user/{user}/", model["url"]
    r = chart.http.get(f"{chart.url}/user/{user}/api/status", headers={"Authorization": f"token {token}"},
                       timeout=60, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].startswith(f"{chart.url}/hub/"), (
        r.status_code, r.headers.get("Location"), r.text[:300])
    r = chart.http.get(f"http://{user}.localhost:{chart.ports['PROXY_PORT']}/user/{user}/api/status",
                       headers={"Authorization": f"token {token}"}, timeout=60, allow_redirects=False)
    assert r.status_code == 200 and "started" in r.json(), (r.status_code, r.text[:300])

    # Her home page on the chart's hub (Atelier's templates and look): her server, its
    # profile and sizes, running, with JupyterLab on her own origin.
    home = chart.login(user).get(f"{chart.url}/hub/home", timeout=60)
    page = home.content.decode()  # UTF-8, as its <meta charset> says (the header names none)
    row = re.search(r'<tr class="atelier-server"\s+data-server=""\s+data-state="running"\s+'
                    r'data-profile="cpu-small">(.*?)</tr>', page, re.S)
    assert home.status_code == 200 and 'class="atelier-brand"' in page and row, \
        (home.status_code, page[page.find('id="atelier-home"'):][:2000], chart.hub_log())
    assert "2 CPU · 4G" in row.group(1) and f'href="{model["url"]}lab"' in row.group(1), row.group(1)

    pods = _pods(kube, f"hub.jupyter.org/username={user}")
    assert len(pods) == 1, pods
    pod = pods[0]
    assert pod["spec"]["nodeName"] == NODE_NAME and pod["status"]["phase"] == "Running"
    container = pod["spec"]["containers"][0]
    # images/base, never pulled; the profile's limits (profiles/cpu-small.yaml: 2 CPUs, 4G).
    assert container["image"] == image_ref("base") and container["imagePullPolicy"] == "Never"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4G"}, container["resources"]
    # The home is the user's PVC on the test storage class.
    claim = kube.get(kube.ns("persistentvolumeclaims", f"claim-{user}", namespace=CHART_NS))
    assert claim["spec"]["storageClassName"] == STORAGE_CLASS and claim["status"]["phase"] == "Bound"
    # The session listens on 127.0.0.1, on the overlay's session port.
    port = chart.ports["SESSION_PORT"]
    assert listening(port=port) == {f"127.0.0.1:{port}"}
    # A kernel in the pod: its cgroup (v1 on this machine, as the node runs it) holds the
    # profile's limits (4G, rounded down to whole pages by the kernel; 2 CPUs = a CFS quota
    # of 200 ms per 100 ms period), it runs as the image's user,
    # and it writes to its home, the PVC.
    out = run_code(chart.url, model["url"], token, (
        "import os, pathlib\n"
        "print(open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read().strip())\n"
        "print(open('/sys/fs/cgroup/cpu/cpu.cfs_quota_us').read().strip(),"
        " open('/sys/fs/cgroup/cpu/cpu.cfs_period_us').read().strip())\n"
        "print(os.getuid(), pathlib.Path.home())\n"
        f"pathlib.Path.home().joinpath('from-cpu-small.txt').write_text({MARKER!r})\n"))
    memory_max, cpu_max, who = out.strip().splitlines()
    assert int(memory_max) == 4_000_000_000 // PAGE * PAGE, out
    assert cpu_max == "200000 100000", out
    # ... and on the host, in the cgroup kubelet made for the pod's container.
    limits = {int((d / "memory.limit_in_bytes").read_text()) for d in real_node.pod_cgroup(pod["metadata"]["uid"])}
    assert 4_000_000_000 // PAGE * PAGE in limits, limits
    assert who == "1000 /home/jovyan", out
    chart.fay_pod_uid = pod["metadata"]["uid"]
    chart.fay_token = token


def test_a_kernel_in_the_chart_pod_writes_to_s3_and_logs_an_mlflow_run(chart, platform):
    """The platform's S3 and MLflow (PlatformServices), configured through the rendered
    values only: boto3 and MLflow in fay's pod find them by their own settings."""
    model = chart.api("GET", "/users/fay").json()["servers"][""]
    key = f"from-chart-pod/{secrets.token_hex(4)}.txt"
    out = run_code(chart.url, model["url"], chart.fay_token, (
        "import os, boto3, mlflow, pathlib\n"
        f"boto3.client('s3').put_object(Bucket=os.environ['ATELIER_SHARED_BUCKET'], Key={key!r}, Body=b'from a chart pod')\n"
        "pathlib.Path('note.txt').write_text('an artifact')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_param('where', 'chart-pod')\n"
        "    mlflow.log_artifact('note.txt')\n"
        "print(run.info.run_id)\n"), timeout=300)
    run_id = out.strip().splitlines()[-1]
    # The object is in the store, written with fay's own account ...
    assert platform.s3().get_object(Bucket=platform.bucket, Key=key)["Body"].read() == b"from a chart pod"
    # ... and the run is on the tracking server (read as its admin: it answers no one
    # else), made through the hub's front as fay, in her own experiment; its artifact in the bucket.
    run = requests.get(platform.mlflow_api("runs/get"), params={"run_id": run_id}, auth=platform.mlflow_admin(),
                       timeout=60).json()["run"]
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"where": "chart-pod"}
    assert run["info"]["user_id"] == "fay", run["info"]
    experiment = requests.get(platform.mlflow_api("experiments/get"), params={
        "experiment_id": run["info"]["experiment_id"]}, auth=platform.mlflow_admin(), timeout=60).json()
    assert experiment["experiment"]["name"] == "users/fay", experiment
    artifact = run["info"]["artifact_uri"].removeprefix(f"s3://{platform.bucket}/") + "/note.txt"
    assert platform.s3().get_object(Bucket=platform.bucket, Key=artifact)["Body"].read() == b"an artifact"


def test_git_in_the_chart_pod_gets_the_token_its_user_keeps_in_the_hub(chart, tmp_path):
    """fay keeps a token for the deployment's git host with the real CLI through the
    chart's proxy; git in her pod gets it from the credentials service in the hub pod."""
    env = {**os.environ, "ATELIER_HUB_URL": chart.url, "ATELIER_TOKEN": chart.fay_token,
           "XDG_CONFIG_HOME": str(tmp_path)}
    r = subprocess.run([str(VENV_BIN / "atelier"), "credentials", "set-git", GIT_HOST, "--username", "fay-git"],
                       input="fay-git-token-123\n", capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    model = chart.api("GET", "/users/fay").json()["servers"][""]
    out = run_code(chart.url, model["url"], chart.fay_token, (
        "import subprocess\n"
        f"r = subprocess.run(['git', 'credential', 'fill'], input='protocol=https\\nhost={GIT_HOST}\\n\\n',"
        " capture_output=True, text=True, env={**__import__('os').environ, 'GIT_TERMINAL_PROMPT': '0'})\n"
        "print(r.returncode, r.stdout, r.stderr)\n"), timeout=120)
    assert "username=fay-git\npassword=fay-git-token-123\n" in out, out
    assert "fay-git-token-123" not in chart.hub_log(2000)


def test_remote_ssh_reaches_the_real_pod_through_the_chart_proxy(chart, tmp_path):
    """VS Code's Remote-SSH way on the chart: `atelier vscode` (from a laptop, with fay's
    token) writes the Host block; the real OpenSSH client goes through `atelier ssh-proxy`,
    the chart's proxy and the hub to the sshd in fay's pod, as fay, with the host key
    pinned; another user's token gets no shell."""
    env = {**os.environ, "HOME": str(tmp_path), "ATELIER_HUB_URL": chart.url, "ATELIER_TOKEN": chart.fay_token,
           "XDG_CONFIG_HOME": str(tmp_path / ".config")}
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    config = tmp_path / "ssh_config"
    r = subprocess.run([str(VENV_BIN / "atelier"), "vscode", "--ssh-config", str(config), "--no-open"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{chart.hub_log()}"
    alias = ssh_alias(user="fay")
    ssh = ["ssh", "-F", str(config), "-o", "BatchMode=yes", alias]
    r = subprocess.run([*ssh, "id -u; cat from-cpu-small.txt; echo; grep -c kubepods /proc/1/cgroup"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    uid, text, in_pod = r.stdout.split("\n")[:3]
    # The pod's user, the home written by the kernel, and a process of a kubelet pod.
    assert (uid, text) == ("1000", MARKER) and int(in_pod) >= 1, r.stdout
    # gil's token (a real second user) through the same config: no shell in fay's pod.
    gil = chart.api("POST", "/users/gil/tokens", json={"note": "chart ssh", "expires_in": 600}).json()["token"]
    r = subprocess.run([*ssh, "id -u"], env={**env, "ATELIER_TOKEN": gil}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "1000" not in r.stdout, (r.stdout, r.stderr)


def test_a_deleted_hub_pod_comes_back_and_readopts_the_running_session(chart, control_plane):
    """Kubernetes starts a new hub pod (the chart's Deployment); it finds fay's running pod
    in its database (the hub's PVC) and keeps it: same pod, JupyterLab still answers, no
    second pod."""
    kube = control_plane.admin
    took = delete_hub_pod(chart, kube, what=" with fay's server ready", until=lambda: (
        chart.api("GET", "/users/fay").json()["servers"].get("") or {}).get("ready"))
    figure("hub pod deleted to hub ready again", took)
    sessions = _pods(kube, "component=singleuser-server")
    assert [p["metadata"]["uid"] for p in sessions] == [chart.fay_pod_uid], sessions
    model = chart.api("GET", "/users/fay").json()["servers"][""]
    out = run_code(chart.url, model["url"], chart.fay_token, "print(open('from-cpu-small.txt').read())")
    assert out.strip() == MARKER


def test_the_home_moves_to_another_profile_and_the_hub_pods_culler_stops_it_idle(chart, control_plane):
    """fay stops cpu-small and starts the quick profile: a new pod, the same PVC, the file
    still there. Left idle, the culler in the hub pod stops it after the profile's
    timeout; the claim stays."""
    kube = control_plane.admin
    user = "fay"
    r = chart.api("DELETE", f"/users/{user}/server")
    assert r.status_code in (202, 204), r.text
    kube.wait("fay's cpu-small pod to go", lambda: not _pods(kube, f"hub.jupyter.org/username={user}"),
              timeout=120)
    chart.pick_profile(user, QUICK)
    kube.wait("fay's quick server to be ready",
              lambda: (chart.api("GET", f"/users/{user}").json()["servers"].get("") or {}).get("ready"), timeout=300)
    model = chart.api("GET", f"/users/{user}").json()["servers"][""]
    pod = _pods(kube, f"hub.jupyter.org/username={user}")[0]
    assert pod["metadata"]["uid"] != chart.fay_pod_uid
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "1G"}
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [f"claim-{user}"], pod["spec"]["volumes"]
    out = run_code(chart.url, model["url"], chart.fay_token, (
        "import pathlib\nprint(pathlib.Path.home().joinpath('from-cpu-small.txt').read_text())\n"))
    assert out.strip() == MARKER
    # Idle from here: no request, no kernel (run_code shut its kernel down).
    idle_from = time.monotonic()
    kube.wait("the culler in the hub pod to stop fay's idle quick server",
              lambda: not chart.api("GET", f"/users/{user}").json()["servers"], timeout=QUICK_TIMEOUT + 180)
    stopped_after = time.monotonic() - idle_from
    assert stopped_after >= QUICK_TIMEOUT - 15, stopped_after  # not before the profile's timeout (reports are 10 s apart)
    assert re.search(rf"Stopping {user} \(profile {QUICK}\): ", chart.hub_log(400)), chart.hub_log(80)
    kube.wait("the culled pod to go", lambda: not _pods(kube, f"hub.jupyter.org/username={user}"), timeout=120)
    claim = kube.get(kube.ns("persistentvolumeclaims", f"claim-{user}", namespace=CHART_NS))
    assert claim["status"]["phase"] == "Bound"


def test_the_usage_page_in_the_hub_pod_shows_admins_everyone_and_users_their_own(chart):
    """The usage page runs in the hub pod over the usage record on the hub's volume: fay's
    cpu-small server, stopped after the hub pod was replaced, and her quick one are there.
    ada (the overlay's admin) reads it through the chart's proxy; fay sees her own lines,
    gil (a real second user) nothing of fay's."""
    assert chart.api("POST", "/users/ada").status_code in (201, 409)
    admin = chart.login("ada")
    page = admin.get(f"{chart.url}/services/usage/", timeout=60)
    assert page.status_code == 200 and 'data-user="fay"' in page.text and "CPU-hours per user" in page.text, \
        (page.status_code, page.text[:500])
    usage = admin.get(f"{chart.url}/services/usage/api/usage", timeout=60).json()
    # Both of fay's servers, each under its profile (the record outlived the first hub pod).
    assert {"cpu-small", QUICK} <= set(usage["by_profile"]), usage
    assert usage["by_profile"][QUICK]["servers"] == 1 and usage["by_profile"]["cpu-small"]["servers"] == 1, usage
    page = chart.login("fay").get(f"{chart.url}/services/usage/", timeout=60)
    assert page.status_code == 200 and 'data-user="fay"' in page.text, (page.status_code, page.text[:300])
    page = chart.login("gil").get(f"{chart.url}/services/usage/", timeout=60)
    assert page.status_code == 200 and "fay" not in page.text, (page.status_code, page.text[:300])
    theirs = chart.login("gil").get(f"{chart.url}/services/usage/api/usage", timeout=60).json()
    assert "fay" not in theirs["by_user"] and not theirs["by_profile"], theirs


# -- S3: one account per user, each pod with its own user's keys only -----------------------

# What bob's kernel tries with the pod's own environment (boto3 finds the keys and the
# endpoint there): each operation's outcome, "ok" or the store's error code.
S3_PROBE = """
import json, os, boto3, botocore
c, b = boto3.client('s3'), os.environ['ATELIER_SHARED_BUCKET']
def outcome(call):
    try:
        call()
        return 'ok'
    except botocore.exceptions.ClientError as e:
        return e.response['Error']['Code']
print(json.dumps({
    'get alice': outcome(lambda: c.get_object(Bucket=b, Key='users/alice/private.txt')['Body'].read()),
    'put alice': outcome(lambda: c.put_object(Bucket=b, Key='users/alice/from-bob.txt', Body=b'bob was here')),
    'list alice': outcome(lambda: c.list_objects_v2(Bucket=b, Prefix='users/alice/')),
    'put own': outcome(lambda: c.put_object(Bucket=b, Key='users/bob/own.txt', Body=b'bob only')),
    'get own': outcome(lambda: c.get_object(Bucket=b, Key='users/bob/own.txt')['Body'].read()),
    'put shared': outcome(lambda: c.put_object(Bucket=b, Key='shared-by-bob.txt', Body=b'for everyone')),
    'get shared': outcome(lambda: c.get_object(Bucket=b, Key='shared-by-alice.txt')['Body'].read()),
    'key id': os.environ['AWS_ACCESS_KEY_ID'],
}))
"""


def _start_server(chart, kube, user: str, profile: str = "cpu-small") -> tuple[dict, str]:
    """``user``'s server started from the spawn form and ready; its model and a token of ``user``'s."""
    token = chart.api("POST", f"/users/{user}/tokens", json={"note": "chart s3", "expires_in": 900}).json()["token"]
    chart.pick_profile(user, profile)
    kube.wait(f"{user}'s server to be ready",
              lambda: (chart.api("GET", f"/users/{user}").json()["servers"].get("") or {}).get("ready"), timeout=300)
    return chart.api("GET", f"/users/{user}").json()["servers"][""], token


def _s3_secret(kube, user: str) -> dict[str, str] | None:
    """The user's own S3 Secret (atelier-s3-NAME), decoded; None where there is none."""
    secret = kube.maybe(kube.ns("secrets", f"atelier-s3-{user}", namespace=CHART_NS))
    if secret is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_bobs_pod_cannot_read_or_write_users_alice_and_holds_only_bobs_keys(chart, control_plane, platform):
    """One S3 account per user on the platform's versitygw, as in embedded mode: alice's
    pod writes under users/alice/; from bob's real pod, boto3 with the pod's own
    environment is refused there (AccessDenied) and may use users/bob/ and the shared
    area. bob's pod spec and Secret hold bob's keys only, by reference; the hub log neither."""
    kube = control_plane.admin
    for user in S3_USERS:
        assert chart.api("POST", f"/users/{user}").status_code in (201, 409)
    # One session at a time on the real node (each listens on the overlay's session port).
    kube.wait("no session on the node", lambda: not _pods(kube, "component=singleuser-server"), timeout=180)
    model, token = _start_server(chart, kube, "alice")
    out = run_code(chart.url, model["url"], token, (
        "import os, boto3\n"
        "c, b = boto3.client('s3'), os.environ['ATELIER_SHARED_BUCKET']\n"
        "c.put_object(Bucket=b, Key='users/alice/private.txt', Body=b'alice only')\n"
        "c.put_object(Bucket=b, Key='shared-by-alice.txt', Body=b'for everyone')\n"
        "print(os.environ['AWS_ACCESS_KEY_ID'])\n"))
    assert out.strip() == "user-alice", out
    assert chart.api("DELETE", "/users/alice/server").status_code in (202, 204)
    kube.wait("alice's pod to go", lambda: not _pods(kube, "hub.jupyter.org/username=alice"), timeout=120)

    model, token = _start_server(chart, kube, "bob")
    outcome = json.loads(run_code(chart.url, model["url"], token, S3_PROBE).strip().splitlines()[-1])
    assert outcome == {"get alice": "AccessDenied", "put alice": "AccessDenied", "list alice": "AccessDenied",
                       "put own": "ok", "get own": "ok", "put shared": "ok", "get shared": "ok",
                       "key id": "user-bob"}, outcome
    # Nothing of bob's reached alice's prefix; her object is intact.
    root = platform.s3()
    assert [o["Key"] for o in root.list_objects_v2(Bucket=platform.bucket, Prefix="users/alice/")["Contents"]] \
        == ["users/alice/private.txt"]
    assert root.get_object(Bucket=platform.bucket, Key="users/bob/own.txt")["Body"].read() == b"bob only"

    # Each user's Secret holds their own account's keys; they work as that user on the store.
    alice, bob = _s3_secret(kube, "alice"), _s3_secret(kube, "bob")
    assert set(bob) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} and bob["AWS_ACCESS_KEY_ID"] == "user-bob"
    assert alice["AWS_ACCESS_KEY_ID"] == "user-alice" and alice["AWS_SECRET_ACCESS_KEY"] != bob["AWS_SECRET_ACCESS_KEY"]
    as_alice = platform.s3_as({"access_key_id": "user-alice", "secret_access_key": alice["AWS_SECRET_ACCESS_KEY"]})
    assert as_alice.get_object(Bucket=platform.bucket, Key="users/alice/private.txt")["Body"].read() == b"alice only"
    # bob's pod spec names bob's Secret for both keys and holds no key itself.
    pod = _pods(kube, "hub.jupyter.org/username=bob")[0]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "atelier-s3-bob", "key": key}}}, \
            env[key]
    spec = json.dumps(pod)
    # bob's other Secret (his server's token and files) holds no S3 key either.
    server_env = json.dumps(kube.get(kube.ns("secrets", f"{pod['metadata']['name']}-env", namespace=CHART_NS)))
    log = chart.hub_log(2000)
    for secret in (alice["AWS_SECRET_ACCESS_KEY"], bob["AWS_SECRET_ACCESS_KEY"], platform.keys["secret_access_key"]):
        assert secret not in spec and secret not in log
        assert base64_of(secret) not in server_env
    chart.bob_keys = {"access_key_id": "user-bob", "secret_access_key": bob["AWS_SECRET_ACCESS_KEY"]}
    chart.alice_secret = alice["AWS_SECRET_ACCESS_KEY"]


def base64_of(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


TRINO_PROBE = r"""
import json, os, urllib.error, urllib.request
import atelier_lab
cur = atelier_lab.connect_trino(user="alice").cursor()  # claims to be alice

def run(sql):
    try:
        cur.execute(sql)
        return cur.fetchall()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:400]

def direct(headers):
    req = urllib.request.Request(COORDINATOR + "/v1/statement", data=b"SELECT current_user", method="POST",
                                 headers={"X-Trino-User": "alice", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code

token = os.environ["JUPYTERHUB_API_TOKEN"]
print(json.dumps({
    "url": os.environ["ATELIER_TRINO_URL"],
    "current_user": run("SELECT current_user"),
    "read alice": run(f"SELECT x FROM hive.users_alice.{ALICE_TABLE}"),
    "drop alice": run(f"DROP TABLE hive.users_alice.{ALICE_TABLE}"),
    "insert alice": run(f"INSERT INTO hive.users_alice.{ALICE_TABLE} VALUES 5"),
    "read default": run(f"SELECT x FROM hive.default.{DEFAULT_TABLE}"),
    "drop default": run(f"DROP TABLE hive.default.{DEFAULT_TABLE}"),
    "own": run(f"CREATE TABLE hive.users_bob.{ALICE_TABLE} AS SELECT 3 AS x"),
    "own read": run(f"SELECT x FROM hive.users_bob.{ALICE_TABLE}"),
    "shared": run(f"CREATE TABLE hive.team.{ALICE_TABLE} AS SELECT 4 AS x"),
    "direct, as alice": direct({}),
    "direct, hub token": direct({"X-Forwarded-Proto": "https", "Authorization": "Bearer " + token}),
}))
"""


def test_bobs_trino_queries_run_as_bob_and_change_neither_alices_table_nor_a_shared_one(
        chart, control_plane, platform):
    """Trino on the cluster: the platform's coordinator (PlatformServices.start_trino, set
    as docs/admin-guide.md "Trino on a cluster" says) reads its table rules from the front in the hub
    pod, and accepts only the front's JWTs. alice makes a table in her own schema
    (`users_alice`, made for her: `trino.schemas_in`), the admin ada one in `hive.default`.
    From bob's real pod, with his session's own settings while claiming to be alice, his
    queries run as bob: he reads both tables but cannot drop or insert into either
    ("Access Denied"), and changes tables in his own schema and the deployment's shared
    one. Straight to the coordinator, without the front, he is refused (403 over plain
    HTTP, 401 with his hub token as a JWT)."""
    from atelier_hub.services.trino_server import query

    kube = control_plane.admin
    platform.wait_trino()
    front = f"http://127.0.0.1:{chart.ports['TRINO_FRONT_PORT']}"  # the hub pod's front (host network)
    tokens = {user: chart.api("POST", f"/users/{user}/tokens", json={"note": "chart trino", "expires_in": 900}
                              ).json()["token"] for user in ("alice", "ada", "bob")}
    tag = secrets.token_hex(3)
    alice_table, default_table = f"alices_{tag}", f"everyones_{tag}"
    assert query(front, "SELECT current_user", user="ada", token=tokens["alice"], timeout=120) == [["alice"]]
    query(front, f"CREATE TABLE hive.users_alice.{alice_table} AS SELECT 1 AS x", token=tokens["alice"], timeout=180)
    query(front, "CREATE SCHEMA IF NOT EXISTS hive.default", token=tokens["ada"], timeout=120)
    query(front, f"CREATE TABLE hive.default.{default_table} AS SELECT 2 AS x", token=tokens["ada"], timeout=180)

    # bob's server (started by the S3 test) runs on the real node.
    server = chart.api("GET", "/users/bob").json()["servers"].get("")
    if not (server or {}).get("ready"):
        kube.wait("no session on the node", lambda: not _pods(kube, "component=singleuser-server"), timeout=180)
        server, _ = _start_server(chart, kube, "bob")
    probe = (f"COORDINATOR = 'http://127.0.0.1:{platform.trino_port}'\nALICE_TABLE = {alice_table!r}\n"
             f"DEFAULT_TABLE = {default_table!r}\n" + TRINO_PROBE)
    seen = json.loads(run_code(chart.url, server["url"], tokens["bob"], probe, timeout=300).strip().splitlines()[-1])
    denied = {k: v for k, v in seen.items() if k in ("drop alice", "insert alice", "drop default")}
    assert all("Access Denied" in str(v) for v in denied.values()), (denied, chart.hub_log())
    assert {k: v for k, v in seen.items() if k not in denied} == {
        "url": f"http://hub:{chart.ports['TRINO_FRONT_PORT']}", "current_user": [["bob"]],
        "read alice": [[1]], "read default": [[2]], "own": [[1]], "own read": [[3]], "shared": [[1]],
        "direct, as alice": 403, "direct, hub token": 401}, seen
    # alice's table and the admin's are as they were.
    assert query(front, f"SELECT x FROM hive.users_alice.{alice_table}", token=tokens["alice"]) == [[1]]
    assert query(front, f"SELECT x FROM hive.default.{default_table}", token=tokens["alice"]) == [[2]]
    chart.bob_trino_token = tokens["bob"]


def test_removing_bob_through_the_hub_api_deletes_his_s3_account_and_secret_and_keeps_his_home(
        chart, control_plane, platform):
    """`DELETE /hub/api/users/bob` on the chart's hub (his server running): his keys fail
    on the store and his hub token at Trino's front within 10 s, his Secret is gone, his PVC and his objects stay; alice's
    account is untouched."""
    kube = control_plane.admin
    as_bob = platform.s3_as(chart.bob_keys)
    assert as_bob.get_object(Bucket=platform.bucket, Key="users/bob/own.txt")["Body"].read() == b"bob only"
    r = chart.api("DELETE", "/users/bob")
    assert r.status_code == 204, r.text
    deleted = time.monotonic()

    def refused() -> str | None:
        try:
            as_bob.list_objects_v2(Bucket=platform.bucket, Prefix="users/bob/")
        except as_bob.exceptions.ClientError as exc:
            return exc.response["Error"]["Code"]
        return None

    code = kube.wait("bob's keys to be refused by the store", refused, timeout=10)
    assert code == "InvalidAccessKeyId" and time.monotonic() - deleted <= 10, code

    def trino_refuses() -> bool:
        from atelier_hub.services.trino_server import TrinoError, query

        try:
            query(f"http://127.0.0.1:{chart.ports['TRINO_FRONT_PORT']}", "SELECT 1", token=chart.bob_trino_token,
                  timeout=30)
        except TrinoError as exc:
            return "HTTP 403" in str(exc) or "HTTP 401" in str(exc)
        return False

    kube.wait("bob's token to be refused at the Trino front", trino_refuses,
              timeout=max(1.0, 10 - (time.monotonic() - deleted)))
    assert _s3_secret(kube, "bob") is None
    claim = kube.get(kube.ns("persistentvolumeclaims", "claim-bob", namespace=CHART_NS))
    assert claim["status"]["phase"] == "Bound"
    assert platform.s3().get_object(Bucket=platform.bucket, Key="users/bob/own.txt")["Body"].read() == b"bob only"
    as_alice = platform.s3_as({"access_key_id": "user-alice", "secret_access_key": chart.alice_secret})
    assert as_alice.get_object(Bucket=platform.bucket, Key="users/alice/private.txt")["Body"].read() == b"alice only"
    assert _s3_secret(kube, "alice")["AWS_ACCESS_KEY_ID"] == "user-alice"


def test_bob_cannot_change_alices_mlflow_work_through_the_front_nor_around_it(chart, platform, control_plane):
    """MLflow on the cluster: the deployment's server (PlatformServices, MLflow's auth app)
    behind the hub's front in the hub pod (the cluster settings' `mlflow` block). alice
    makes an experiment, a run and a registered model through the front with her hub
    token; from his own session pod, bob (a real second hub user) changes none of them.
    Through the front (his session's MLFLOW_TRACKING_URI and hub token) he reads them
    (200) and every change is refused by MLflow's permissions (403), as in embedded mode.
    Around it, straight to MLflow's port from his pod, with no credentials, with his hub
    token, or with his name and his hub token as a password, MLflow's auth answers 401.
    The test cluster enforces no network policy (no CNI but loopback: every pod shares
    the node's network), so here it is MLflow's auth that refuses the direct connection;
    the rendered policy (the sessions' egress has no rule to the server, only the hub's
    has: test_cluster_values) holds where a CNI enforces it."""
    kube = control_plane.admin
    for user in MLFLOW_USERS:
        assert chart.api("POST", f"/users/{user}").status_code in (201, 409)
    alice = chart.api("POST", "/users/alice/tokens", json={"note": "mlflow test", "expires_in": 900}).json()["token"]

    def as_alice(method: str, path: str, body: dict) -> dict:
        r = chart.http.request(method, f"{chart.url}/services/mlflow/api/2.0/mlflow/{path}", timeout=120,
                               headers={"Authorization": f"Bearer {alice}"},
                               **({"params": body} if method == "GET" else {"json": body}))
        assert r.status_code == 200, (path, r.status_code, r.text[:500], chart.hub_log())
        return r.json()

    tag = secrets.token_hex(3)
    exp = as_alice("POST", "experiments/create", {"name": f"alice-exp-{tag}"})["experiment_id"]
    run = as_alice("POST", "runs/create", {"experiment_id": exp, "run_name": "alices-run"})["run"]["info"]["run_id"]
    model = f"alice-model-{tag}"
    as_alice("POST", "registered-models/create", {"name": model})

    bob = chart.api("POST", "/users/bob/tokens", json={"note": "mlflow test", "expires_in": 900}).json()["token"]
    chart.pick_profile("bob", "cpu-small")
    kube.wait("bob's cpu-small server to be ready",
              lambda: (chart.api("GET", "/users/bob").json()["servers"].get("") or {}).get("ready"), timeout=420)
    server = chart.api("GET", "/users/bob").json()["servers"][""]
    read = ("GET", "runs/get", {"run_id": run})
    attacks = [
        ("POST", "runs/delete", {"run_id": run}),
        ("POST", "runs/update", {"run_id": run, "run_name": "bobs-now"}),
        ("POST", "runs/log-parameter", {"run_id": run, "key": "by", "value": "bob"}),
        ("POST", "runs/create", {"experiment_id": exp}),
        ("POST", "experiments/update", {"experiment_id": exp, "new_name": f"bobs-exp-{tag}"}),
        ("POST", "experiments/delete", {"experiment_id": exp}),
        ("POST", "registered-models/rename", {"name": model, "new_name": f"bobs-model-{tag}"}),
        ("DELETE", "registered-models/delete", {"name": model}),
        ("POST", "model-versions/create", {"name": model, "source": f"s3://{platform.bucket}/mlflow/bob"}),
    ]
    # In bob's pod, with what his session has (and the server's address, which an
    # attacker may know): each call through the front, then straight to MLflow.
    out = run_code(chart.url, server["url"], bob, (
        "import base64, json, os, requests\n"
        "token = os.environ['MLFLOW_TRACKING_TOKEN']\n"
        "front = os.environ['MLFLOW_TRACKING_URI'].rstrip('/') + '/api/2.0/mlflow/'\n"
        f"direct = {platform.mlflow_api('')!r}\n"
        "basic = 'Basic ' + base64.b64encode(('bob:' + token).encode()).decode()\n"
        "ways = {'front': (front, {'Authorization': 'Bearer ' + token}), 'direct, none': (direct, {}),\n"
        "        'direct, hub token': (direct, {'Authorization': 'Bearer ' + token}),\n"
        "        'direct, as bob': (direct, {'Authorization': basic})}\n"
        f"calls = {[read, *attacks]!r}\n"
        "got = {}\n"
        "for way, (base, headers) in ways.items():\n"
        "    for method, path, body in calls:\n"
        "        kw = {'params': body} if method == 'GET' else {'json': body}\n"
        "        r = requests.request(method, base + path, headers=headers, timeout=60, **kw)\n"
        "        got[f'{way}: {method} {path}'] = r.status_code\n"
        "print(json.dumps({'uri': os.environ['MLFLOW_TRACKING_URI'], 'got': got}))\n"), timeout=300)
    seen = json.loads(out.strip().splitlines()[-1])
    # The session's MLflow is the front in the hub pod (cluster settings: http://hub:PORT/services/mlflow).
    assert seen["uri"] == f"http://hub:{chart.ports['MLFLOW_PORT']}/services/mlflow", seen["uri"]
    expected = {"front: GET runs/get": 200}
    expected |= {f"front: {m} {p}": 403 for m, p, _ in attacks}
    for way in ("direct, none", "direct, hub token", "direct, as bob"):
        expected |= {f"{way}: {m} {p}": 401 for m, p, _ in [read, *attacks]}
    assert seen["got"] == expected, {k: v for k, v in seen["got"].items() if expected.get(k) != v}
    # alice's work is as she left it (read as the server's admin).
    admin = platform.mlflow_admin()
    got = requests.get(platform.mlflow_api("runs/get"), params={"run_id": run}, auth=admin, timeout=60).json()["run"]
    assert got["info"]["lifecycle_stage"] == "active" and got["info"]["run_name"] == "alices-run", got["info"]
    assert got["info"]["user_id"] == "alice" and not got["data"].get("params"), got
    runs = requests.post(platform.mlflow_api("runs/search"), json={"experiment_ids": [exp]}, auth=admin,
                         timeout=60).json()["runs"]
    assert [r["info"]["run_id"] for r in runs] == [run], runs
    experiment = requests.get(platform.mlflow_api("experiments/get"), params={"experiment_id": exp}, auth=admin,
                              timeout=60).json()["experiment"]
    assert (experiment["name"], experiment["lifecycle_stage"]) == (f"alice-exp-{tag}", "active"), experiment
    registered = requests.get(platform.mlflow_api("registered-models/get"), params={"name": model}, auth=admin,
                              timeout=60).json()["registered_model"]
    assert registered["name"] == model and not registered.get("latest_versions"), registered
    r = chart.api("DELETE", "/users/bob/server")
    assert r.status_code in (202, 204), r.text
    kube.wait("bob's pod to go", lambda: not _pods(kube, "hub.jupyter.org/username=bob"), timeout=120)
    # bob removed through the hub API: his token gets nothing more from MLflow within
    # 10 s (the front asks the hub again about a token after a few seconds), and his
    # MLflow password was never his to know (derived by the front). His home stays.
    search = f"{chart.url}/services/mlflow/api/2.0/mlflow/experiments/search"
    assert chart.http.get(search, params={"max_results": 1}, headers={"Authorization": f"Bearer {bob}"},
                          timeout=60).status_code == 200
    account = platform.mlflow_api("users/get")

    def mlflow_account(user: str) -> int:
        return requests.get(account, params={"username": user}, auth=admin, timeout=30).status_code

    assert (mlflow_account("bob"), mlflow_account("alice")) == (200, 200)
    assert chart.api("DELETE", "/users/bob").status_code == 204
    removed = time.monotonic()
    kube.wait("bob's token to be refused at the MLflow front", lambda: chart.http.get(
        search, params={"max_results": 1}, headers={"Authorization": f"Bearer {bob}"}, timeout=30).status_code == 403,
        timeout=10)
    # ... and his MLflow account is deleted (the front follows the hub's users), alice's stays.
    kube.wait("bob's MLflow account to be deleted", lambda: mlflow_account("bob") == 404,
              timeout=max(1.0, 10 - (time.monotonic() - removed)))
    assert mlflow_account("alice") == 200
    claim = kube.get(kube.ns("persistentvolumeclaims", "claim-bob", namespace=CHART_NS))
    assert claim["status"]["phase"] == "Bound"


JOB_SCRIPT = (
    "import os, pathlib, time\n"
    "print('job', os.environ['ATELIER_JOB'], 'on', os.environ['ATELIER_PROFILE'], flush=True)\n"
    "print('memory', open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read().strip(), flush=True)\n"
    "pathlib.Path.home().joinpath('from-the-job.txt').write_text('written by the job')\n"
    "for i in range(4):\n"
    "    print('line', i, flush=True)\n"
    "    time.sleep(3)\n"
    # A plain MLflow run (no repro), through the front in the hub pod as gil: the jobs page links it.
    "import mlflow\n"
    "with mlflow.start_run(run_name='from-the-job') as run:\n"
    "    mlflow.log_param('where', 'job')\n"
    "print('mlflow', run.info.run_id, flush=True)\n"
    "raise SystemExit(3)\n")


def laptop(chart, home: Path, token: str, *args: str, **kw) -> subprocess.Popen:
    """The CLI on a laptop: no state folder, the hub and the user's token in the environment."""
    home.mkdir(exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}, "HOME": str(home),
           "ATELIER_HUB_URL": chart.url, "ATELIER_TOKEN": token}
    return subprocess.Popen([str(VENV_BIN / "atelier"), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def done(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def delete_hub_pod(chart, kube, *, until=lambda: True, what: str = "") -> float:
    """Delete the hub pod; wait for the chart's Deployment's new one to answer through the
    proxy (and ``until``). Returns the seconds it took."""
    old = _pods(kube, "component=hub")
    assert len(old) == 1, old
    t0 = time.monotonic()
    kube.request("DELETE", kube.ns("pods", old[0]["metadata"]["name"], namespace=CHART_NS)).raise_for_status()

    def back():
        pods = [p for p in _pods(kube, "component=hub") if p["metadata"]["uid"] != old[0]["metadata"]["uid"]]
        if not pods or pods[0]["status"].get("phase") != "Running":
            return False
        try:
            return chart.api("GET", "/").status_code == 200 and until()
        except requests.RequestException:
            return False

    kube.wait(f"a new hub pod, answering through the proxy{what}", back, timeout=300)
    return time.monotonic() - t0


def test_a_job_runs_once_in_a_real_pod_its_output_outlives_the_pod_and_fay_cannot_touch_it(
        chart, control_plane, real_node, tmp_path):
    """`atelier run` from a laptop, through the chart's proxy to the jobs service in the hub
    pod: gil's job runs as his server job-count, a pod KubeSpawner builds from cpu-small
    on the real node (run once: restartPolicy Never; the profile's limits, in the pod's
    real cgroup; his home). Its output streams while it runs, and `atelier run` exits
    with the job's code, 3, naming the MLflow run it logged. Once the pod is gone, `atelier
    logs` still prints the whole output (the hub kept the pod's log on its volume),
    `atelier jobs` says how it ended, and the jobs page links the run. fay, a real second
    user, lists none of it and is refused its log, its cancel, and the hub's output API
    for it."""
    kube = control_plane.admin
    # The node's sessions share one port (host networking): none other runs meanwhile.
    for user in (*USERS, *S3_USERS):
        assert chart.api("DELETE", f"/users/{user}/server").status_code in (202, 204, 404)
    kube.wait("the sessions to go", lambda: not _pods(kube, "component=singleuser-server"), timeout=120)
    tokens = {}
    for user in ("gil", "fay"):
        assert chart.api("POST", f"/users/{user}").status_code in (201, 409)
        tokens[user] = chart.api("POST", f"/users/{user}/tokens",
                                 json={"note": "jobs test", "expires_in": 900}).json()["token"]

    def atelier(user: str, *args: str, **kw):
        return laptop(chart, tmp_path / user, tokens[user], *args, **kw)

    # The hub adds the service's route to the proxy once the service answers.
    kube.wait("the jobs service's route", lambda: chart.http.get(
        f"{chart.url}/services/jobs/health", timeout=30).status_code == 200, timeout=120)
    submitted = time.monotonic()
    run = atelier("gil", "run", "--profile", "cpu-small", "--name", "count", "--", "python", "-c", JOB_SCRIPT)
    lines: list[tuple[float, str]] = []  # what `atelier run` printed, with when

    def read() -> None:
        for line in run.stdout:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def running_pod() -> dict | None:
        if run.poll() is not None:
            raise AssertionError(f"atelier run ended first: {run.returncode} {run.communicate()}\n{chart.hub_log()}")
        return next((p for p in _pods(kube, "atelier.dev/job=count") if p["status"].get("phase") == "Running"), None)

    try:
        pod = kube.wait("gil's job pod to run", running_pod, timeout=300)
        # A pod of gil's, from the profile, run once, on the real node.
        assert pod["metadata"]["labels"]["hub.jupyter.org/username"] == "gil"
        assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["nodeName"] == NODE_NAME
        container = pod["spec"]["containers"][0]
        assert container["image"] == image_ref("base")
        assert container["resources"]["limits"] == {"cpu": "2", "memory": "4G"}, container["resources"]
        assert container["args"][1] == "-c" and "count" in container["args"][-1], container["args"][:2]
        limits = {int((d / "memory.limit_in_bytes").read_text())
                  for d in real_node.pod_cgroup(pod["metadata"]["uid"])}
        assert 4_000_000_000 // PAGE * PAGE in limits, limits

        # fay, while it runs: none of it is hers.
        code, out, err = done(atelier("fay", "jobs"))
        assert code == 0 and "count" not in out, (code, out, err)
        for args in (("logs", "count"), ("cancel", "count")):
            code, out, err = done(atelier("fay", *args))
            assert code != 0 and "no job named 'count'" in err and "line" not in out, (args, code, out, err)
        # The hub's own answer where a token may not see a user's servers: as for no job at all.
        r = chart.http.get(f"{chart.url}/hub/api/atelier/users/gil/jobs/count/output",
                           headers={"Authorization": f"token {tokens['fay']}"}, timeout=60)
        assert r.status_code == 404 and b"line" not in r.content, (r.status_code, r.text[:300])
        r = chart.http.get(f"{chart.url}/services/jobs/api/jobs/count/log",
                           headers={"Authorization": f"token {tokens['fay']}"}, timeout=60)
        assert r.status_code == 404 and b"line" not in r.content, (r.status_code, r.text[:300])

        run.wait(timeout=300)
        reader.join(30)
        code, out, err = run.returncode, "".join(line for _, line in lines), run.stderr.read()
    finally:
        if run.poll() is None:
            run.kill()
    if lines:
        figure("job submission to its first line of output", lines[0][0] - submitted)
    # `atelier run` streamed the job's output and exited with its code.
    expected = ["job count on cpu-small", f"memory {4_000_000_000 // PAGE * PAGE}",
                *(f"line {i}" for i in range(4))]
    assert code == 3, (code, out, err, chart.hub_log())
    assert [line for line in out.splitlines() if line.split(" ")[0] in ("job", "memory", "line")] == expected, out
    (run_id,) = [line.split()[1] for line in out.splitlines() if line.startswith("mlflow ")]
    # ... and said where its MLflow run is (the runner listed it in the pod's termination
    # message; the hub kept it beside the job's record).
    assert f"MLflow run {run_id}: {chart.url}/services/mlflow/#/experiments/" in err, err
    # The pod is gone (its server stopped and removed); its output is not.
    kube.wait("the job's pod to go", lambda: not _pods(kube, "atelier.dev/job=count"), timeout=120)
    assert "job-count" not in chart.api("GET", "/users/gil").json()["servers"]
    code, logs, err = done(atelier("gil", "logs", "count"))
    assert code == 0 and [line for line in logs.splitlines() if line.split(" ")[0] in ("job", "memory", "line")] \
        == expected, (code, logs, err)
    code, listing, err = done(atelier("gil", "jobs"))
    row = next(line for line in listing.splitlines() if line.startswith("count"))
    assert code == 0 and "cpu-small" in row and "failed" in row and row.split()[-1] == "3", listing
    job = chart.http.get(f"{chart.url}/services/jobs/api/jobs/count", timeout=60,
                         headers={"Authorization": f"token {tokens['gil']}"}).json()
    assert [(r["run_id"], r["url"].split("/runs/")[1]) for r in job["runs"]] == [(run_id, run_id)], job["runs"]
    page = chart.login("gil").get(f"{chart.url}/services/jobs/", timeout=60).text
    assert f'data-run="{run_id}"' in page and 'data-job="count" data-state="failed"' in page, page[-3000:]
    # make bench's baseline (bench/bench_chart.py): a bare Kubernetes Job of the same image
    # on the same node, created by the API's admin, to its first line in the pod's log.
    figure("bare Kubernetes Job to its first line of output", _bare_job_first_line(kube))


TICKS = "import time\nfor i in range(12):\n    print('tick', i, flush=True)\n    time.sleep(2)\n"
STOPS = ("import signal, sys, time\n"
         "def bye(*_):\n"
         "    print('stopping cleanly', flush=True)\n"
         "    time.sleep(2)\n"
         "    print('stopped', flush=True)\n"
         "    sys.exit(0)\n"
         "signal.signal(signal.SIGTERM, bye)\n"
         "print('ready', flush=True)\n"
         "while True:\n"
         "    time.sleep(1)\n")


def test_jobs_outlive_a_hub_pod_restart_run_notebooks_and_keep_what_they_write_when_cancelled(
        chart, control_plane, tmp_path):
    """gil's detached job (`atelier run --detach`, 12 ticks 2 s apart) runs on the real
    node while the hub pod is deleted: the chart's Deployment starts a new hub pod, which
    re-adopts the job's pod (the same pod, never restarted); the jobs service in it finds
    the job's record on the hub's volume; the job ends on its own, `atelier jobs` says it
    succeeded and `atelier logs` prints every tick, those written while no hub ran among
    them. Then a notebook job with a parameter saves the executed notebook beside it, and
    a job cancelled while it runs keeps the lines its command writes as it stops."""
    kube = control_plane.admin
    token = chart.api("POST", "/users/gil/tokens", json={"note": "restart test", "expires_in": 900}).json()["token"]

    def atelier(*args: str) -> tuple[int, str, str]:
        return done(laptop(chart, tmp_path / "gil", token, *args))

    code, out, err = atelier("run", "--profile", "cpu-small", "--name", "survive", "--detach", "--",
                             "python", "-c", TICKS)
    assert code == 0, (code, out, err)
    pod = kube.wait("the job's pod to run", lambda: next(
        (p for p in _pods(kube, "atelier.dev/job=survive") if p["status"].get("phase") == "Running"), None),
        timeout=300)
    kube.wait("its first tick", lambda: "tick 0" in atelier("logs", "survive")[1], timeout=120)
    took = delete_hub_pod(chart, kube, what=" and its jobs service", until=lambda: chart.http.get(
        f"{chart.url}/services/jobs/health", timeout=30).status_code == 200)
    (now,) = _pods(kube, "atelier.dev/job=survive")
    print(f"hub pod replaced in {took:.1f} s while the job ran (its pod {now['status'].get('phase')} then)")
    assert now["metadata"]["uid"] == pod["metadata"]["uid"], "the job's pod was replaced"
    assert all(not c.get("restartCount") for c in now["status"].get("containerStatuses", [])), now["status"]

    def ended() -> str | None:
        code, listing, _ = atelier("jobs")
        row = next((line for line in listing.splitlines() if line.startswith("survive ")), "")
        return row if code == 0 and ("succeeded" in row or "failed" in row) else None

    row = kube.wait("the job to end and be listed so", ended, timeout=180)
    assert "succeeded" in row and row.split()[-1] == "0", row
    code, logs, err = atelier("logs", "survive")
    assert code == 0, (code, logs, err)
    assert [line for line in logs.splitlines() if line.startswith("tick ")] == [f"tick {i}" for i in range(12)], logs

    # A notebook job with a parameter: executed with the image's kernel, saved beside it
    # in gil's home (his PVC: a hostPath volume here) with its outputs.
    import nbformat

    kube.wait("the first job's pod to go", lambda: not _pods(kube, "atelier.dev/job=survive"), timeout=120)
    claim = kube.get(kube.ns("persistentvolumeclaims", "claim-gil", namespace=CHART_NS))
    home = Path(kube.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")["spec"]["hostPath"]["path"])
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell('print("n is", n)\nn * 2')]
    nbformat.write(nb, home / "sweep.ipynb")
    os.chown(home / "sweep.ipynb", 1000, 100)
    code, out, err = atelier("run", "--profile", "cpu-small", "--name", "nb", "sweep.ipynb", "-p", "n=21")
    assert code == 0, (code, out, err)
    outputs = nbformat.read(home / "nb.out.ipynb", as_version=4).cells[2].outputs
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["n is 21\n"], outputs
    assert [o.data["text/plain"] for o in outputs if o.output_type == "execute_result"] == ["42"], outputs
    kube.wait("the notebook job's pod to go", lambda: not _pods(kube, "atelier.dev/job=nb"), timeout=120)

    # Cancelled while it runs: its command gets SIGTERM (from the runner, within the pod's
    # grace period) and what it writes as it ends is kept with the rest.
    code, out, err = atelier("run", "--profile", "cpu-small", "--name", "stops", "--detach", "--",
                             "python", "-c", STOPS)
    assert code == 0, (code, out, err)
    kube.wait("its first line", lambda: "ready" in atelier("logs", "stops")[1], timeout=300)
    code, out, err = atelier("cancel", "stops")
    assert code == 0, (code, out, err)
    kube.wait("the cancelled job's pod to go", lambda: not _pods(kube, "atelier.dev/job=stops"), timeout=120)
    code, logs, err = atelier("logs", "stops")
    assert code == 0 and logs.splitlines()[-3:] == ["ready", "stopping cleanly", "stopped"], (code, logs, err)


RAY_IN_SESSION = """
import json, os, time
import ray
from atelier_lab import ray_cluster
t0 = time.monotonic()
cluster = ray_cluster(workers=1, profile='cpu-small')
ready = time.monotonic() - t0
# Once more where Ray's per-client server died as it started (a segfault in grpcio's
# event-engine thread, in the kernel's log: Ray's own, see the admin guide); never for
# anything else.
retried = None
for attempt in (1, 2):
    try:
        ray.init(cluster.address)
        break
    except ConnectionAbortedError as exc:
        if attempt == 2 or 'Starting Ray client server failed' not in str(exc):
            raise
        retried = str(exc).strip().splitlines()[-1][:200]
        ray.shutdown()

@ray.remote
def where():
    import os
    return {'user': os.environ.get('JUPYTERHUB_USER'), 'mlflow': os.environ.get('MLFLOW_TRACKING_URI'),
            's3_key': os.environ.get('AWS_ACCESS_KEY_ID'), 'auth': os.environ.get('RAY_AUTH_MODE'),
            'token_file': os.path.exists('/run/atelier/ray-token'), 'uid': os.getuid(),
            'hub_oauth': 'JUPYTERHUB_OAUTH_CALLBACK_URL' in os.environ}

@ray.remote
def slow():
    import time
    time.sleep(120)

result = ray.get(where.remote())
alive = [n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]
# While a task runs the session is busy (what the culler hears), and once it is done not.
from atelier_lab._activity import ray_cluster_busy
ref = slow.remote()
busy, waited = None, time.monotonic()
while busy is None and time.monotonic() - waited < 30:  # the head starts a worker process for it first
    busy = await ray_cluster_busy(None)
ray.cancel(ref, force=True)
# Still connected through Ray's client, nothing running: idle (the session may be culled).
idle, waited = 'x', time.monotonic()
while idle is not None and time.monotonic() - waited < 30:  # the raylet reports the freed CPU
    idle = await ray_cluster_busy(None)
ray.shutdown()
print(json.dumps({'address': cluster.address, 'ready_s': ready, 'result': result, 'alive': alive,
                  'retried': retried,
                  'busy': busy, 'idle': idle,
                  'session': {'mlflow': os.environ.get('MLFLOW_TRACKING_URI'),
                              's3_key': os.environ.get('AWS_ACCESS_KEY_ID')}}))
"""

RAY_CLIENT = """
import sys, ray
try:
    try:
        ray.init(sys.argv[1])
    except ConnectionAbortedError as exc:  # once more, as RAY_IN_SESSION, for that crash only
        if 'Starting Ray client server failed' not in str(exc):
            raise
        ray.shutdown()
        ray.init(sys.argv[1])
    print('CONNECTED', ray.get(ray.remote(lambda: 6 * 7).remote()))
except Exception as exc:
    print('REFUSED', type(exc).__name__, str(exc)[:200])
"""


def test_a_personal_ray_cluster_is_kuberays_owned_by_the_session_and_refuses_other_tokens(
        chart, control_plane, real_node, tmp_path):
    """`ray_cluster(workers=1, profile="cpu-small")` in gil's kernel, through the Ray
    clusters service in the hub pod: KubeRay's operator (built here) reconciles the
    RayCluster the service makes, owned by gil's session pod. Its head runs for real on
    the real node, from the session's image, with the session's services' settings and
    Ray's token authentication; the worker is a kwok pod (the node has room for one Ray
    node; the worker is sized by cpu-small, as its spec shows). A Ray task runs on the
    real head through Ray's own client and returns. A client without the cluster's token
    is refused, one with it (read by the admin from its Secret) is not. Ray's dashboard
    opens through the hub for gil alone (his session's server proxies it). A request over
    the per-user limit is refused with the limit named. Stopping gil's server deletes
    the RayCluster, its pods and its token."""
    kube = control_plane.admin
    # The node's sessions share one port (host networking): none other runs meanwhile.
    for user in (*USERS, *S3_USERS):
        assert chart.api("DELETE", f"/users/{user}/server").status_code in (202, 204, 404)
    kube.wait("the sessions to go", lambda: not _pods(kube, "component=singleuser-server"), timeout=120)
    model, token = _start_server(chart, kube, "gil")
    pod = _pods(kube, "hub.jupyter.org/username=gil,component=singleuser-server")[0]
    api = f"{chart.url}/services/ray_clusters/api/clusters"
    auth = {"Authorization": f"token {token}"}
    kube.wait("the Ray clusters service's route", lambda: chart.http.get(
        f"{chart.url}/services/ray_clusters/health", timeout=30).status_code == 200, timeout=120)

    # Over the limit (2 workers per user here): refused at once, the limit named.
    r = chart.http.post(api, headers=auth, json={"workers": 3, "profile": "cpu-small"}, timeout=60)
    assert r.status_code == 409 and "allows 2 per user (ray_clusters.workers_per_user in the cluster settings)" \
        in r.text, (r.status_code, r.text)
    assert not kube.get(f"/apis/ray.io/v1/namespaces/{CHART_NS}/rayclusters")["items"]

    try:
        out = json.loads(run_code(chart.url, model["url"], token, RAY_IN_SESSION, timeout=480).strip().splitlines()[-1])
    except Exception as exc:
        raise AssertionError(f"{exc}\nthe heads' Ray logs:\n{_ray_logs(real_node)}\n{chart.hub_log()}") from None
    figure("ray cluster request to head ready", out["ready_s"])
    if out["retried"]:
        print(f"ray: the first Ray client connection was tried again: {out['retried']}")
    assert out["address"] == f"ray://{RAY_HEAD_IP}:{chart.ports['RAY_CLIENT_PORT']}", out
    # The task ran on the real head, as gil, with his session's settings (MLflow through
    # the hub's front, his own S3 key), Ray's token authentication on; nothing of his
    # server's own OAuth client.
    assert out["result"] == {"user": "gil", "mlflow": out["session"]["mlflow"], "s3_key": out["session"]["s3_key"],
                             "auth": "token", "token_file": True, "uid": 1000, "hub_oauth": False}, out
    assert out["session"]["s3_key"] and out["alive"] == [RAY_HEAD_IP], out
    assert (out["busy"], out["idle"]) == ("Ray cluster: 1 node(s) running tasks", None), out

    rc_name = f"ray-{pod['metadata']['name']}"
    rc = kube.get(f"/apis/ray.io/v1/namespaces/{CHART_NS}/rayclusters/{rc_name}")
    assert rc["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}], rc
    # Only gil's sessions and the cluster's own pods may reach its pods (this test cluster
    # enforces no policy: the object is checked), owned by his pod like the cluster.
    policy = kube.get(f"/apis/networking.k8s.io/v1/namespaces/{CHART_NS}/networkpolicies/{rc_name}")
    assert policy["metadata"]["ownerReferences"] == rc["metadata"]["ownerReferences"]
    assert policy["spec"]["ingress"] == [{"from": [
        {"podSelector": {"matchLabels": {"hub.jupyter.org/username": "gil", "component": "singleuser-server"}}},
        {"podSelector": {"matchLabels": {"ray.io/cluster": rc_name}}}]}], policy["spec"]
    ray_pods = _pods(kube, f"ray.io/cluster={rc_name}")
    head = next(p for p in ray_pods if p["metadata"]["labels"]["ray.io/node-type"] == "head")
    worker = next(p for p in ray_pods if p["metadata"]["labels"]["ray.io/node-type"] == "worker")
    # KubeRay made them: the head on the real node from the session's image, the worker
    # sized by cpu-small (its requests and limits) on a simulated node.
    assert head["metadata"]["ownerReferences"][0]["kind"] == "RayCluster"
    assert head["spec"]["nodeName"] == NODE_NAME and head["status"]["phase"] == "Running", head["status"]
    assert head["spec"]["containers"][0]["image"] == pod["spec"]["containers"][0]["image"] == image_ref("base")
    assert worker["spec"]["nodeName"] != NODE_NAME, worker["spec"].get("nodeName")
    assert worker["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "2", "memory": "4G"}, "requests": {"cpu": "500m", "memory": "1G"}}, worker["spec"]
    # No token in the spec: a Secret of the cluster's own, mounted as a file.
    spec_text = json.dumps([head["spec"], rc["spec"]])
    secret = kube.get(kube.ns("secrets", f"{rc_name}-token", namespace=CHART_NS))
    cluster_token = base64.b64decode(secret["data"]["token"]).decode()
    assert cluster_token and cluster_token not in spec_text and token not in spec_text

    # Usage: each node, kind ray, from the cluster's start; the head at its own size.
    def ray_usage(event: str) -> dict[str, dict]:
        return {e["server"]: e for e in read_usage(chart.volume / "usage.jsonl")
                if e.get("user") == "gil" and e["server"].startswith("/ray-") and e["event"] == event}

    started = ray_usage("start")
    assert set(started) == {"/ray-head", "/ray-worker-0"} and {e["kind"] for e in started.values()} == {"ray"}
    assert (started["/ray-head"]["cpu"], started["/ray-worker-0"]["cpu"]) == (1, 2), started

    # Another user: fay sees none of gil's clusters, cannot stop it, and a Ray client
    # without its token is refused by the cluster's Ray API; with it, it connects.
    fay = chart.api("POST", "/users/fay/tokens", json={"note": "ray test", "expires_in": 900}).json()["token"]
    r = chart.http.get(api, headers={"Authorization": f"token {fay}"}, timeout=60)
    assert r.status_code == 200 and r.json() == {"clusters": []}, r.text
    r = chart.http.delete(api, params={"server": ""}, headers={"Authorization": f"token {fay}"}, timeout=60)
    assert r.status_code == 404, r.text

    def client(ray_token: str | None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(HOME=str(tmp_path), RAY_USAGE_STATS_ENABLED="0")
        if ray_token is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=ray_token)
        return subprocess.Popen([str(VENV_BIN / "python"), "-c", RAY_CLIENT, out["address"]], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def said(proc: subprocess.Popen) -> str:
        stdout, stderr = proc.communicate(timeout=180)
        return stdout.strip().splitlines()[-1] if stdout.strip() else stderr[-500:]

    # Side by side: a refusal takes Ray's client about 30 s of retries.
    wrong, none, right = client(secrets.token_urlsafe(32)), client(None), client(cluster_token)

    # Meanwhile, Ray's dashboard: served by the real head, proxied by gil's own session
    # server with the cluster's token. Through the chart's proxy, gil's hub login opens it
    # and it shows his cluster; fay's is refused by his server; and on the head's own
    # address, the dashboard refuses a request without the cluster's token or with another.
    model_now = chart.http.get(api, headers=auth, timeout=60).json()["clusters"][0]
    assert model_now["dashboard_url"] == "/user/gil/atelier/ray/dashboard/", model_now
    # At his server's own origin (where the hub sends a browser from its own).
    board = urljoin(server_address(chart.url, model["url"]), "atelier/ray/dashboard/")
    assert urlparse(board).path == model_now["dashboard_url"]
    page = chart.http.get(board, headers=auth, timeout=60)
    assert page.status_code == 200 and "<title>Ray Dashboard</title>" in page.text, page.text[:300]
    version = chart.http.get(board + "api/version", headers=auth, timeout=60)
    assert version.status_code == 200 and version.json()["ray_version"] == importlib.metadata.version("ray"), version.text
    summary = chart.http.get(board + "nodes?view=summary", headers=auth, timeout=60).json()
    assert [n["ip"] for n in summary["data"]["summary"]] == [RAY_HEAD_IP], summary  # the real head
    assert cluster_token not in page.text + version.text
    other = chart.http.get(board + "api/version", headers={"Authorization": f"token {fay}"}, allow_redirects=False,
                           timeout=60)
    assert other.status_code == 403, (other.status_code, other.text[:200])
    direct = f"http://{RAY_HEAD_IP}:{chart.ports['RAY_DASHBOARD_PORT']}/api/version"
    assert requests.get(direct, timeout=30).status_code == 401
    assert requests.get(direct, headers={"Authorization": f"Bearer {secrets.token_urlsafe(32)}"},
                        timeout=30).status_code == 403
    assert requests.get(direct, headers={"Authorization": f"Bearer {cluster_token}"}, timeout=30).status_code == 200

    assert said(right) == "CONNECTED 42"
    assert said(wrong).startswith("REFUSED") and said(none).startswith("REFUSED")

    # Stopping the server: the garbage collector follows the owners.
    assert chart.api("DELETE", "/users/gil/server").status_code in (202, 204)
    kube.wait("the RayCluster, its pods, its token and its NetworkPolicy to go", lambda: not kube.maybe(
        f"/apis/ray.io/v1/namespaces/{CHART_NS}/rayclusters/{rc_name}") and not _pods(
        kube, f"ray.io/cluster={rc_name}") and not kube.maybe(
        kube.ns("secrets", f"{rc_name}-token", namespace=CHART_NS)) and not kube.maybe(
        f"/apis/networking.k8s.io/v1/namespaces/{CHART_NS}/networkpolicies/{rc_name}"), timeout=180)
    # ... and each node's run stops in the usage record (the service's sweep, every 5 s).
    kube.wait("the nodes' usage runs to stop", lambda: set(ray_usage("stop")) == set(started), timeout=60)
    if os.environ.get("ATELIER_BENCH_BASELINES"):  # bench/bench_chart.py: the same head, bare
        figure("bare RayCluster to head ready", _bare_ray_cluster_ready(kube, chart, pod))


def _ray_logs(real_node) -> str:
    """The last lines of the Ray error logs of the node's Ray pods (their /tmp/ray is an
    emptyDir: a folder of kubelet's, this run's own)."""
    lines = []
    for f in sorted((real_node.dir / "overlay" / "var_lib_kubelet" / "pods").glob(
            "*/volumes/kubernetes.io~empty-dir/ray-tmp/session_2*/logs/*.err")):
        text = f.read_text(errors="replace").strip()
        if text:
            lines.append(f"--- {f.name}\n" + "\n".join(text.splitlines()[-15:]))
    return "\n".join(lines)[-8000:] or "(none)"


def _bare_ray_cluster_ready(kube, chart, session_pod: dict) -> float:
    """KubeRay alone, the baseline of `ray_cluster()` on the chart: a RayCluster of the
    same image with the same head (size, ports, probe, node) and no worker, made by the
    admin; seconds from its creation to its head pod Ready. Removed after."""
    head = {"name": "ray", "image": image_ref("base"), "imagePullPolicy": "Never",
            "resources": {"limits": {"cpu": "1", "memory": "2G"}, "requests": {"cpu": "1", "memory": "2G"}},
            "env": [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}],
            "readinessProbe": {"tcpSocket": {"port": chart.ports["RAY_CLIENT_PORT"]}, "periodSeconds": 2,
                               "failureThreshold": 300}}
    params = {"port": str(chart.ports["RAY_GCS_PORT"]), "ray-client-server-port": str(chart.ports["RAY_CLIENT_PORT"]),
              "include-dashboard": "true", "dashboard-host": RAY_HEAD_IP,
              "dashboard-port": str(chart.ports["RAY_DASHBOARD_PORT"]), "node-ip-address": RAY_HEAD_IP,
              "metrics-export-port": "0",
              "dashboard-agent-listen-port": "0", "dashboard-agent-grpc-port": "0", "num-cpus": "1"}
    spec = {k: session_pod["spec"][k] for k in ("hostNetwork", "dnsPolicy", "nodeSelector", "tolerations")}
    rc = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "bare-ray", "namespace": CHART_NS},
          "spec": {"headGroupSpec": {"rayStartParams": params, "template": {"spec": {**spec, "containers": [head]}}},
                   "workerGroupSpecs": []}}
    path = f"/apis/ray.io/v1/namespaces/{CHART_NS}/rayclusters"
    t0 = time.monotonic()
    kube.create(path, rc)
    try:
        kube.wait("the bare RayCluster's head to be ready", lambda: any(
            c["type"] == "Ready" and c["status"] == "True" for p in _pods(kube, "ray.io/cluster=bare-ray")
            for c in p["status"].get("conditions") or []), timeout=300, every=0.2)
        return time.monotonic() - t0
    finally:
        kube.request("DELETE", f"{path}/bare-ray")
        kube.wait("the bare RayCluster's pods to go", lambda: not _pods(kube, "ray.io/cluster=bare-ray"), timeout=120)


def _bare_job_first_line(kube) -> float:
    """Seconds from creating a batch/v1 Job (the base image, `echo first`, on the real node
    as the sessions' pods are placed there) to that line in its pod's log."""
    name = f"bare-{secrets.token_hex(3)}"
    jobs = f"/apis/batch/v1/namespaces/{CHART_NS}/jobs"
    t0 = time.monotonic()
    kube.create(jobs, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "backoffLimit": 0, "template": {"metadata": {"labels": {"atelier.dev/bench": name}}, "spec": {
            "restartPolicy": "Never", "hostNetwork": True, "dnsPolicy": "Default",
            "terminationGracePeriodSeconds": 5, "nodeSelector": {"atelier.dev/pool": POOL},
            "tolerations": [{"key": "atelier.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": image_ref("base"), "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "echo first; sleep 1"]}]}}}})

    def first_line() -> bool:
        for pod in _pods(kube, f"atelier.dev/bench={name}"):
            r = kube.request("GET", kube.ns("pods", pod["metadata"]["name"], namespace=CHART_NS) + "/log")
            if r.ok and r.text.startswith("first"):
                return True
        return False

    try:
        kube.wait("the bare Job's first line", first_line, timeout=120)
        return time.monotonic() - t0
    finally:
        kube.request("DELETE", f"{jobs}/{name}", params={"propagationPolicy": "Background"})
        kube.wait("the bare Job's pod to go", lambda: not _pods(kube, f"atelier.dev/bench={name}"), timeout=120)


def test_helm_uninstall_leaves_only_the_homes(chart, control_plane):
    kube = control_plane.admin
    for user in (*USERS, *S3_USERS):
        r = chart.api("DELETE", f"/users/{user}/server")
        assert r.status_code in (202, 204, 404), r.text
    kube.wait("the sessions to go", lambda: not _pods(kube, "component=singleuser-server"), timeout=120)
    chart.helm("uninstall", RELEASE, "--namespace", CHART_NS, "--wait", timeout=240)
    kube.wait("the chart's pods to go", lambda: not _pods(kube), timeout=120)
    left = {}
    for kind, path in (("roles", "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
                       ("rolebindings", "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
                       ("services", "/api/v1/namespaces/{ns}/services"),
                       ("secrets", "/api/v1/namespaces/{ns}/secrets"),
                       ("deployments", "/apis/apps/v1/namespaces/{ns}/deployments"),
                       ("persistentvolumeclaims", "/api/v1/namespaces/{ns}/persistentvolumeclaims")):
        names = sorted(i["metadata"]["name"] for i in kube.get(path.format(ns=CHART_NS))["items"])
        if names:
            left[kind] = names
    # The homes stay (claim-NAME, Atelier's pvc_name_template, bob's after his removal too),
    # and so do the S3 keys of the users still on the hub (their accounts stay on the
    # store, as homes do) beside the platform's own Secrets (the store's root keys,
    # MLflow's admin password, Trino's JWT key) and the Role the Terraform module makes
    # beside the chart (the hub reads job pods' logs); nothing else of the release.
    assert left == {"persistentvolumeclaims": ["claim-alice", "claim-bob", "claim-fay", "claim-gil"],
                    "roles": ["atelier-hub-jobs-ray"], "rolebindings": ["atelier-hub-jobs-ray"],
                    "secrets": ["atelier-mlflow-admin", "atelier-s3-alice", "atelier-s3-fay", "atelier-s3-gil",
                                "atelier-trino-jwt",
                                S3_ADMIN_SECRET]}, left
