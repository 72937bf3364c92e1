"""Cluster settings: what a Kubernetes deployment adds to the profiles and the services.

Rule this module keeps: every cluster-only choice (images, home storage, culling, GPU
limits, node pools, how sessions get cloud credentials) is a field here with a default
that works, read once from an optional YAML file; :mod:`.values` (the chart's values)
and :mod:`.kubespawner` (the hub's spawner) both read it, so the two never disagree.
Unset is ``None``, distinct from an empty value.

One field has no working default: ``public_url``, the hub's public URL. Each user's
servers answer at a subdomain of its host (:mod:`atelier_hub.origins`), which needs a
wildcard DNS record and certificate only the platform team can make; the model leaves
it ``None`` (a hub outside the chart, as in the tests, runs without it) and
``atelier render values`` refuses to render values without it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from .. import image_paths
from .._version import __version__
from ..capacity import GroupShare
from ..schema import StrictModel
from ..settings import load_settings_file

__all__ = ["ClusterSettings", "ClusterSettingsError", "load_cluster_settings", "public_url_problem"]



class ClusterSettingsError(ValueError):
    """The cluster settings file is invalid; the message names the field and the fix."""


# A DNS label as RFC 1123 allows it; JupyterHub's hook prepends users' labels to the host.
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def public_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as the hub's public URL (``scheme://host[:port]``, a
    DNS name whose subdomains the users' servers get), with the fix; None when usable (pure).

    >>> public_url_problem("https://atelier.example.org/") is None
    True
    >>> public_url_problem("https://atelier.example.org/jupyter").split(":")[0]
    "has a path or query ('/jupyter')"
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number in range)
    except ValueError as exc:
        return f"is not a URL ({exc}): write it as https://atelier.example.org"
    if parts.scheme not in ("http", "https"):
        got = f"not {parts.scheme}://" if parts.scheme else "it has no scheme"
        return (f"must start with https:// (http:// only where browsers reach the hub without TLS, as in a "
                f"local test), {got}: e.g. https://atelier.example.org")
    host = parts.hostname
    if not host:
        return "has no host: write it as https://atelier.example.org"
    if parts.username is not None or parts.password is not None:
        return "carries a user name or password: remove them (give the scheme and host only)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        extra = url.split(parts.netloc, 1)[1]
        return (f"has a path or query ({extra!r}): give the scheme and host only, e.g. "
                "https://atelier.example.org; users' servers answer at subdomains of that host, not under a path")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (f"names an IP address ({host}): users' servers answer at subdomains of the hub's host, "
                "so give a DNS name with a wildcard record (*.NAME) pointing at the proxy")
    if not all(_DNS_LABEL.fullmatch(label) for label in host.rstrip(".").split(".")):
        return (f"host {host!r} is not a DNS name (letters, digits and '-' per label; an international "
                "name in its xn-- form)")
    return None


class Image(StrictModel):
    """A container image by name and tag."""

    name: str = Field(description="Repository, e.g. `registry.example.com/atelier/base`.")
    tag: str = Field(description="Tag; pin a dated or digest-derived tag in production.")


class Storage(StrictModel):
    """One dynamic PVC per user, mounted as the home of every server of that user."""

    capacity: str = Field("20Gi", description="Size of each user's home volume.")
    storage_class: str | None = Field(None, description="StorageClass of the home volumes; null: the cluster's "
                                      "default (gp3 on EKS with the EBS CSI driver).")
    home_mount_path: str = Field(image_paths.HOME, description="Where the home is mounted in every session.")
    pvc_name_template: str = Field("claim-{username}", description="Name of a user's home PVC; no "
                                   "`{servername}`, so all of a user's servers and profiles share one home.")


class Culling(StrictModel):
    """Idle servers are stopped by Atelier's culler, a hub service in the hub pod, after
    each profile's own `culling` timeouts (profiles/); never deleted: the home PVC stays."""

    enabled: bool = Field(True, description="Whether idle servers are stopped (timeouts: each profile's "
                          "`culling`).")
    port: int = Field(8082, gt=1024, lt=65536, description="Port of the culler in the hub pod; sessions "
                      "report their activity to it at `http://hub:PORT/services/culler`.")


class UsagePage(StrictModel):
    """The usage page (`/services/usage/`), a hub service in the hub pod beside the culler:
    admins see each user's and profile's server hours. It reads the usage record on the
    hub's volume, which outlives the hub pod."""

    enabled: bool = Field(True, description="Whether the usage page runs.")
    port: int = Field(8083, gt=1024, lt=65536, description="Port of the usage page in the hub pod; the chart's "
                      "proxy reaches it through the hub's Service (`http://hub:PORT`).")


class MLflowFront(StrictModel):
    """MLflow behind the hub's login, as in embedded mode: the MLflow front (the same
    code) runs in the hub pod as a hub service before the deployment's own tracking
    server, which runs MLflow's auth app. The front makes one MLflow account per hub
    user (passwords derived from the admin password: nothing stored); sessions get
    `http://hub:PORT/services/mlflow` and their hub token; only the hub pod may reach
    the server (the network policy)."""

    server_url: str | None = Field(None, description="The deployment's MLflow tracking server, e.g. "
                                   "`http://mlflow.atelier.svc.cluster.local:5000`, run as `mlflow server "
                                   "--app-name basic-auth --static-prefix /services/mlflow` with admin user "
                                   "`service/mlflow`; null: no front (the deployment settings' `mlflow`, if any, "
                                   "is used as it is).")
    port: int = Field(8084, gt=1024, lt=65536, description="Port of the MLflow front in the hub pod; sessions "
                      "reach it at `http://hub:PORT/services/mlflow`, browsers through the proxy.")
    admin_secret: str = Field("atelier-mlflow-admin", description="Kubernetes Secret in the hub's namespace "
                              "whose key `admin-password` holds the server's admin password; mounted in the hub "
                              "pod only (terraform/modules/atelier makes it from Secrets Manager).")

    @field_validator("server_url")
    @classmethod
    def _server_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"{url!r} is not the server's base URL: write it as "
                             "http://mlflow.NAMESPACE.svc.cluster.local:5000 (scheme, host, port; the front adds "
                             "/services/mlflow, the server's --static-prefix)")
        return url.rstrip("/")


class TrinoFront(StrictModel):
    """Trino's front, a hub service in the hub pod, where the deployment names a Trino
    (``services.trino.url``: the platform's coordinator). Sessions get the front's
    address (`http://hub:PORT`) and their hub token; the front runs each query as the
    token's user with a JWT signed with the key in ``jwt_secret``, which the coordinator
    alone checks, and serves the coordinator its table rules (docs/admin-guide.md, "Trino on a cluster")."""

    port: int = Field(8085, gt=1024, lt=65536, description="Port of the front in the hub pod; sessions reach it "
                      "at `http://hub:PORT`.")
    rules_port: int = Field(8086, gt=1024, lt=65536, description="Port where the front serves the coordinator its "
                            "rules (`http://hub.NAMESPACE.svc:PORT/rules.json`, the coordinator's "
                            "`security.config-file`).")
    jwt_secret: str = Field("atelier-trino-jwt", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                            description="Kubernetes Secret in the hub's namespace holding `jwt-hmac`: the base64 "
                            "HMAC key the front signs with and the coordinator checks (its "
                            "`http-server.authentication.jwt.key-file`); made by the platform, never rendered.")
    rules_from: list[dict] = Field(default_factory=lambda: [{"namespaceSelector": {}}],
                                   description="NetworkPolicy peers allowed to read the rules (the coordinator's "
                                   "pods), e.g. `[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "
                                   "trino}}}]`; default: any pod of the cluster (the rules hold user names only).")
    schemas_in: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$",
                                   description="Catalog where the front makes each user's schema `users_NAME` "
                                   "(e.g. `hive`); null: users make their own (`CREATE SCHEMA CATALOG.users_NAME`, "
                                   "which the rules let them).")


class CredentialsFront(StrictModel):
    """The credentials service, a hub service in the hub pod, where the deployment names
    git hosts (``services.credentials.git_hosts``): each user's tokens for them, kept on
    the hub's volume (`/srv/jupyterhub/credentials`, 0600) and handed to git in that
    user's sessions only (docs/user-guide.md, "Your own packages, and git")."""

    port: int = Field(8087, gt=1024, lt=65536, description="Port of the service in the hub pod; sessions reach it "
                      "at `http://hub:PORT/services/credentials`.")


class JobsFront(StrictModel):
    """The jobs service (`atelier run`), a hub service in the hub pod: each job runs as its
    user's server `job-NAME`, a pod KubeSpawner builds as it builds a session's (the
    runner in place of the server, `restartPolicy: Never`). Its records, and each ended
    job's output and exit code, are kept on the hub's volume (`/srv/jupyterhub/jobs`);
    the hub reads a running job's output from its pod's log (the Role of `atelier render
    hub-rbac`)."""

    enabled: bool = Field(True, description="Whether users may run jobs.")
    port: int = Field(8088, gt=1024, lt=65536, description="Port of the service in the hub pod; the chart's proxy "
                      "routes `/services/jobs/` to it, and sessions reach it at `http://hub:PORT/services/jobs`.")


class RayClustersFront(StrictModel):
    """Personal Ray clusters (`ray_cluster()` in a session, `atelier ray up`): the Ray clusters
    service in the hub pod makes one KubeRay `RayCluster` per session that asks, owned by
    the session's pod (gone with it), from the session's image and environment, its
    workers sized by a profile, with Ray's token authentication on. Needs KubeRay's
    operator (its CRDs and controller) on the cluster, and the hub's Role of
    `atelier render hub-rbac`."""

    enabled: bool = Field(False, description="Whether users may start personal Ray clusters (KubeRay's operator "
                          "must run on the cluster).")
    port: int = Field(8089, gt=1024, lt=65536, description="Port of the service in the hub pod; the chart's proxy "
                      "routes `/services/ray_clusters/` to it, and sessions reach it at "
                      "`http://hub:PORT/services/ray_clusters`.")
    workers_per_user: int = Field(4, ge=0, description="Ray workers one user may have in all their clusters; a "
                                  "request over it is refused with the limit named.")
    gpus_per_user: int = Field(4, ge=0, description="GPUs one user's Ray workers may hold in all their clusters "
                               "(a worker of a GPU profile holds the profile's); a request over it is refused with "
                               "the limit named.")
    head_cpu: float = Field(1, gt=0, description="CPUs of a cluster's head (requests and limits); it takes tasks too.")
    head_memory: str = Field("2G", pattern=r"^[0-9]+(\.[0-9]+)?([KMGT]i?)?$",
                             description="Memory of a cluster's head, a Kubernetes quantity (e.g. `2G`, `4Gi`).")
    gcs_port: int = Field(6379, gt=1024, lt=65536, description="The head's GCS port (Ray's default).")
    client_port: int = Field(10001, gt=1024, lt=65536, description="The head's Ray client port (Ray's default): "
                             "sessions call `ray.init(\"ray://HEAD:PORT\")`.")
    dashboard_port: int = Field(8265, gt=1024, lt=65536, description="The head's dashboard port (Ray's default): "
                                "the session's own server proxies it at `/user/NAME/atelier/ray/dashboard/`, for "
                                "its owner alone, with the cluster's token.")
    head_ip: str | None = Field(None, description="The address Ray's head announces and sessions reach; null: the "
                                "head pod's IP (any cluster with a pod network). Set it only where pods share their "
                                "node's network (`hostNetwork`), e.g. a loopback address of that node.")


class GpuQueue(StrictModel):
    """The GPU queue on a cluster: Kueue's. With `kueue: true`, the pod of every GPU
    profile (whole GPUs and slices) names its team's Kueue `LocalQueue`; Kueue holds it
    (a scheduling gate) until the team's queue admits it, in fair share between teams,
    and the spawn page shows its place in line from Kueue's visibility API. `atelier
    render kueue` prints the queues these settings describe (`kubectl apply -f -`).
    Needs Kueue (its controller, its pod webhooks and its visibility API) on the cluster,
    with pods among its integrations and fair sharing on, and the hub's Role of `atelier
    render hub-rbac`."""

    kueue: bool = Field(False, description="Whether GPU servers and jobs wait in Kueue's queue (Kueue must run "
                        "on the cluster); false: a GPU pod waits for room as a Pending pod, with no place in line.")
    gpus: dict[str, int] = Field(
        default_factory=dict, description="How many of each GPU resource the hub's servers and jobs may hold at "
        "once, all teams together: the pool's size, e.g. `{nvidia.com/gpu: 8, nvidia.com/mig-1g.10gb: 14}`. "
        "Every GPU profile's resource must be listed.")
    groups: dict[str, GroupShare] = Field(
        default_factory=dict, description="Fair share per hub group, each a Kueue `ClusterQueue` in one cohort: "
        "`{team-a: {weight: 1, guaranteed_gpus: 2}}`. Above their guarantees, groups get GPUs in proportion to "
        "their weights; a user in several counts in the first listed here. Names are those of the hub's "
        "groups and of the Kueue queues: lower-case letters, digits and '-'.")
    default_group: str = Field("everyone", pattern=r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$",
                               description="The queue of users in none of `groups` (weight 1, nothing guaranteed "
                               "unless listed in `groups`).")
    cohort: str = Field("atelier", pattern=r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$",
                        description="The Kueue cohort of the teams' ClusterQueues; its queues are named "
                        "`COHORT-TEAM`, and `COHORT-pool` holds the GPUs nobody is guaranteed.")

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value: dict[str, GroupShare]) -> dict[str, GroupShare]:
        for name in value:
            if not re.match(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$", name):
                raise ValueError(f"group {name[:60]!r}: a queue's name is lower-case letters, digits and '-' (at "
                                 "most 42), e.g. team-a; name the hub group so")
        return value

    @field_validator("gpus")
    @classmethod
    def _gpu_counts(cls, value: dict[str, int]) -> dict[str, int]:
        for resource, count in value.items():
            if "/" not in resource or count < 0:
                raise ValueError(f"gpus: {resource[:80]!r}: {count!r} must be an extended resource and a count, "
                                 "e.g. nvidia.com/gpu: 8")
        return value


class SessionIdentity(StrictModel):
    """How sessions reach cloud services without keys in the pod spec.

    On EKS: a ServiceAccount annotated with an IAM role (IRSA); the pod gets a projected
    web-identity token and boto3 picks it up with no configuration.
    """

    service_account: str | None = Field(None, description="ServiceAccount of session pods; null: none made.")
    role_arn: str | None = Field(None, description="IAM role for IRSA, e.g. arn:aws:iam::123456789012:role/atelier-session")
    per_user_role_arn: str | None = Field(
        None, description="AWS S3 with one identity per user (EKS Pod Identity): the IAM role every user's "
        "ServiceAccount is associated with, e.g. arn:aws:iam::123456789012:role/atelier-session (terraform's "
        "identity module). Each user's pods run as a ServiceAccount named after the user (the hub makes it and "
        "its Pod Identity association at the first spawn); the role's policy reads the ServiceAccount's name "
        "from the session tag `kubernetes-service-account`, so `users/NAME/` is NAME's alone. Needs "
        "`eks_cluster_name`. Null: every session shares `service_account` (or none).")
    eks_cluster_name: str | None = Field(None, description="The EKS cluster's name, for `per_user_role_arn`'s "
                                         "Pod Identity associations.")
    s3_admin_secret: str | None = Field(
        None, description="One S3 account per hub user on an S3-compatible store with versitygw's admin API "
        "(the deployment's `s3.endpoint_url`, without static keys): the name of a Secret in the hub's "
        "namespace holding the store's root keys as `access_key_id` and `secret_access_key`. The hub makes "
        "each user's account at their first spawn (`users/NAME/` in the shared bucket is theirs alone, as "
        "in embedded mode) and gives their pods its keys only, through a Secret of their own "
        "(`atelier-s3-NAME`); removing the user deletes both. Null: no per-user accounts.")


class NodePools(StrictModel):
    """Where the chart's own pods go; profiles place the sessions."""

    core: dict[str, str] = Field(default_factory=lambda: {"atelier.dev/pool": "core"},
                                 description="Node selector of the hub, the proxy and the chart's other pods.")


class Attach(StrictModel):
    """`atelier kubeconfig`: per-user kubeconfigs for VS Code's Kubernetes attach."""

    api_server_url: str | None = Field(None, description="The Kubernetes API URL users reach from their own "
                                       "machines (EKS: the cluster's endpoint); null: the one the hub uses, "
                                       "right only where that is reachable from outside.")
    max_token_seconds: int = Field(8 * 3600, ge=600, le=7 * 24 * 3600,
                                   description="Longest lifetime of a kubeconfig's token; it also ends with the pod.")


class ClusterSettings(StrictModel):
    """Everything a cluster deployment adds to ``profiles/`` and the services."""

    public_url: str | None = Field(
        None,
        description="The hub's public URL, scheme and host only, e.g. `https://atelier.example.org`; "
        "required by `atelier render values`. Each user's servers answer at `NAME.atelier.example.org` "
        "(JupyterHub's `subdomain_host`), a web origin of their own, so a page one user's server serves "
        "cannot act with another user's (or an admin's) hub login; the hub and Atelier's services stay at "
        "`atelier.example.org`. The platform team provides a DNS record for `atelier.example.org` and a "
        "wildcard record `*.atelier.example.org`, both pointing at the proxy (the `proxy-public` "
        "Service's load balancer, or your ingress), and a TLS certificate covering both names: on the "
        "chart's ingress (`ingress.hosts` and `ingress.tls` list both names) or on the load balancer "
        "(`proxy.https`); the chart's Let's Encrypt option cannot issue a wildcard certificate.")
    namespace: str | None = Field(None, description="Namespace of the sessions; null: the hub's own (the Helm release's).")
    hub_image: Image = Field(Image(name="ghcr.io/atelier-dev/atelier-hub", tag=__version__),
                             description="The hub image: `images/hub` (JupyterHub, KubeSpawner, atelier-hub), "
                             "pushed to your registry (images/README.md); name it after your registry.")
    singleuser_image: Image = Field(Image(name="ghcr.io/atelier-dev/atelier-base", tag=__version__),
                                    description="The session image unless a profile names its own: `images/base`, "
                                    "the same image as the embedded mode's container sessions (a GPU profile "
                                    "names `images/gpu`'s).")
    storage: Storage = Field(Storage(), description="Home volumes.")
    culling: Culling = Field(Culling(), description="Stopping idle servers.")
    usage: UsagePage = Field(UsagePage(), description="The usage page of the hub's admins.")
    mlflow: MLflowFront = Field(MLflowFront(), description="MLflow behind the hub's login (the MLflow front in "
                                "the hub pod).")
    trino: TrinoFront = Field(TrinoFront(), description="Trino's front in the hub pod, where the deployment "
                              "names a Trino.")
    credentials: CredentialsFront = Field(CredentialsFront(), description="Users' tokens for git hosts, where the "
                                          "deployment names some (`services.credentials.git_hosts`).")
    jobs: JobsFront = Field(JobsFront(), description="Jobs: scripts and notebooks run once on a profile.")
    ray_clusters: RayClustersFront = Field(RayClustersFront(), description="Personal Ray clusters (KubeRay).")
    queue: GpuQueue = Field(GpuQueue(), description="The GPU queue (Kueue) and fair share between teams.")
    gpu_servers_per_user: int = Field(1, ge=0, description="Concurrent GPU servers per user; 0: none.")
    gpus_per_user: int | None = Field(None, ge=1, description="GPUs (or slices) one user may hold and wait for at "
                                      "once, servers and jobs together; a request past it is refused at once "
                                      "(409), naming the user's own servers and jobs that hold them; null: no "
                                      "such count (`gpu_servers_per_user` still applies).")
    named_servers_per_user: int = Field(5, ge=0, description="Named servers a user may have besides the default.")
    node_pools: NodePools = Field(NodePools(), description="Where the chart's own pods run.")
    identity: SessionIdentity = Field(SessionIdentity(), description="Cloud credentials of sessions (IRSA).")
    attach: Attach = Field(Attach(), description="Kubeconfigs for attaching VS Code to one's own pods.")
    private_cidrs: list[str] = Field(default_factory=lambda: ["10.0.0.0/8"],
                                     description="Where service hostnames outside the cluster resolve (the VPC): "
                                     "the chart blocks private IPs by default, so each service gets an egress "
                                     "rule to these CIDRs on its own port only.")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        problem = public_url_problem(url)
        if problem:
            raise ValueError(problem)
        # One spelling (lower-case host, no trailing slash): JupyterHub's subdomain_host form.
        parts = urlsplit(url)
        host = parts.hostname.rstrip(".")
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port is not None else "")


def load_cluster_settings(path: str | Path | None) -> ClusterSettings:
    """Read a cluster settings file (YAML); ``None`` gives the defaults.

    >>> load_cluster_settings(None).storage.home_mount_path
    '/home/jovyan'
    """
    if path is None:
        return ClusterSettings()
    return load_settings_file(path, ClusterSettings, what="cluster settings", error=ClusterSettingsError)
