"""``atelier render values``: the Zero to JupyterHub chart's values, from ``profiles/``.

Rule this module keeps: the values are a pure function of (profiles, deployment
settings, cluster settings); the hub in the chart reads those same three inputs (they
travel as ``hub.extraFiles``) and ``hub.extraConfig`` calls :func:`atelier_hub.configure`,
the one entry of both modes, whose cluster mode
(:func:`atelier_hub.cluster.kubespawner.configure_kubespawner`) turns them into
KubeSpawner's traits, so the values never restate a profile. The output validates
against the chart's own ``values.schema.yaml`` (a test checks it).

Blocks, each opened by a comment in the output: the hub image carrying ``atelier-hub``
and its configuration (each user's servers at a subdomain of ``public_url``, a web
origin of their own: without ``public_url`` nothing is rendered), the per-user home (a
dynamic PVC), the network policy's egress to the configured services (the chart blocks
private IPs by default), culling, and node placement (profiles place sessions; the
chart's own pods go to the core pool).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..profiles import Profile, ProfileError, format_memory, load_profiles
from ..services import Deployment, SettingsError, load_deployment
from ..services.culler import PREFIX as CULLER_PREFIX
from ..services.culler import CullerService
from . import CHART_DIR, CLUSTER_FILE, DEPLOYMENT_FILE, PROFILES_DIR, TRINO_JWT_DIR
from .settings import ClusterSettings, ClusterSettingsError, load_cluster_settings

__all__ = [
    "render_values",
    "require_public_url",
    "dump_values",
    "merge_values",
    "schema_problems",
    "egress_rules",
    "cmd_render_values",
    "main_render",
    "add_render_parser",
    "s3_accounts_hub_values",
    "S3_ROOT_ENV",
]

# Where the hub pod finds Atelier's inputs (mounted from hub.extraFiles, a Secret).
ETC = CHART_DIR
_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432, "ray": 10001, "trino": 8080}


def _profile_file(profile: Profile) -> str:
    """The profile as a profile file again (sizes written as people write them)."""
    data = profile.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    data.update(
        name=profile.name,
        display_name=profile.display_name,
        cpu={k: v for k, v in (("guarantee", profile.cpu.guarantee), ("limit", profile.cpu.limit)) if v is not None},
        memory={k: format_memory(v) for k, v in (("guarantee", profile.memory.guarantee),
                                                 ("limit", profile.memory.limit)) if v is not None},
    )
    return yaml.safe_dump(data, sort_keys=False)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (files, Python) as literal blocks, readable in a review."""


_Dumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def _endpoints(deployment: Deployment) -> list[tuple[str, str]]:
    """(service, URL) for every URL-valued setting of every configured service."""
    found = []
    for service, fields in deployment.services.model_dump().items():
        for value in (fields or {}).values():
            if isinstance(value, str) and "://" in value and urlsplit(value).hostname:
                found.append((service, value))
    return found


def egress_rules(deployment: Deployment, settings: ClusterSettings) -> list[dict[str, Any]]:
    """NetworkPolicy egress rules opening each service endpoint, on its own port only.

    An IP address gets a /32 (private ones would otherwise be blocked); a short name
    (``mlflow``) is a Service in the hub's namespace; ``name.ns[.svc[.cluster.local]]``
    one in namespace ``ns``; any other hostname may resolve inside the VPC, so it is
    opened to ``private_cidrs`` (public addresses are open already).

    >>> from atelier_hub.services import Deployment
    >>> d = Deployment.model_validate({"services": {"mlflow": {"tracking_uri": "http://10.1.2.3:5000"}}})
    >>> egress_rules(d, ClusterSettings())[0]["to"]
    [{'ipBlock': {'cidr': '10.1.2.3/32'}}]
    """
    rules: list[dict[str, Any]] = []
    for _service, url in _endpoints(deployment):
        for rule in _egress_to(url, settings):
            if rule not in rules:
                rules.append(rule)
    return rules


def _egress_to(url: str, settings: ClusterSettings) -> list[dict[str, Any]]:
    """The egress rule opening ``url``'s host on its port only (see :func:`egress_rules`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
    try:
        ip = ipaddress.ip_address(host)
        to = [{"ipBlock": {"cidr": f"{ip}/{ip.max_prefixlen}"}}]
    except ValueError:
        labels = host.split(".")
        if len(labels) == 1:
            to = [{"podSelector": {}}]
        elif len(labels) == 2 or labels[2:] in (["svc"], ["svc", "cluster", "local"]):
            to = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": labels[1]}}}]
        else:
            to = [{"ipBlock": {"cidr": cidr}} for cidr in settings.private_cidrs]
    return [{"to": to, "ports": [{"port": port, "protocol": "TCP"}]}]


def _as_sessions_see_it(deployment: Deployment, settings: ClusterSettings) -> Deployment:
    """The deployment with Trino at its front in the hub pod (``http://hub:PORT``), as
    sessions get it: their egress goes there, never to the coordinator itself."""
    trino = deployment.services.trino
    if trino is None:
        return deployment
    services = deployment.services.model_copy(update={"trino": trino.model_copy(
        update={"url": f"http://hub:{settings.trino.port}"})})
    return deployment.model_copy(update={"services": services})


def _service_ports_hub_values(settings: ClusterSettings, deployment: Deployment | None = None) -> dict[str, Any]:
    """The hub's Service and network policy open the ports of the hub pod's own services:
    the culler's to sessions (activity reports), the usage page's to the proxy, the
    MLflow front's and the jobs service's to both, and, where the deployment names a Trino, Trino's front to
    sessions and its rules port to the coordinator (``trino.rules_from``). All but the
    last are pods the chart labels as allowed to reach the hub. The hub pod mounts the
    Trino front's JWT key."""
    ports = {name: port for name, port, on in (("culler", settings.culling.port, settings.culling.enabled),
                                               ("usage", settings.usage.port, settings.usage.enabled),
                                               ("mlflow", settings.mlflow.port, bool(settings.mlflow.server_url)),
                                               ("jobs", settings.jobs.port, settings.jobs.enabled),
                                               ("ray-clusters", settings.ray_clusters.port,
                                                settings.ray_clusters.enabled))
             if on}
    trino = deployment is not None and deployment.services.trino is not None
    if trino:
        ports["trino"] = settings.trino.port
    if deployment is not None and deployment.services.credentials is not None:
        ports["credentials"] = settings.credentials.port
    if not ports:
        return {}
    values: dict[str, Any] = {
        "service": {"extraPorts": [{"name": name, "port": port, "targetPort": port} for name, port in ports.items()]},
        "networkPolicy": {"ingress": [{
            "from": [{"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}],
            "ports": [{"port": port, "protocol": "TCP"} for port in ports.values()]}]},
    }
    if trino:
        front = settings.trino
        values["service"]["extraPorts"].append(
            {"name": "trino-rules", "port": front.rules_port, "targetPort": front.rules_port})
        values["networkPolicy"]["ingress"].append(
            {"from": list(front.rules_from), "ports": [{"port": front.rules_port, "protocol": "TCP"}]})
        values["extraVolumes"] = [{"name": "atelier-trino-jwt", "secret": {
            "secretName": front.jwt_secret, "defaultMode": 0o400, "items": [{"key": "jwt-hmac", "path": "jwt-hmac"}]}}]
        values["extraVolumeMounts"] = [{"name": "atelier-trino-jwt", "mountPath": TRINO_JWT_DIR, "readOnly": True}]
    return values


def _hub_pod_values(settings: ClusterSettings, deployment: Deployment) -> dict[str, Any]:
    """What the hub pod's own services add to ``hub``: ports and policies, the MLflow
    front's Secret and egress, the Trino front's key, the S3 root keys' environment.
    Maps merge as Helm merges them; the volume lists are joined (Helm would replace one
    list with the other)."""
    parts = [_service_ports_hub_values(settings, deployment), mlflow_front_values(settings),
             s3_accounts_hub_values(deployment, settings)]
    merged: dict[str, Any] = {}
    for part in parts:
        lists = {k: merged.get(k, []) + part[k] for k in ("extraVolumes", "extraVolumeMounts") if k in part}
        merged = {**merge_values(merged, part), **lists}
    return merged


#: the hub's environment variables holding the store's root keys (from the platform's Secret)
S3_ROOT_ENV = {"access_key_id": "ATELIER_S3_ROOT_ACCESS_KEY_ID", "secret_access_key": "ATELIER_S3_ROOT_SECRET_ACCESS_KEY"}


def s3_accounts_hub_values(deployment: Deployment, settings: ClusterSettings) -> dict[str, Any]:
    """Per-user S3 accounts (``identity.s3_admin_secret``): the hub reads the store's root
    keys from the platform's Secret (``hub.extraEnv`` with ``secretKeyRef``: the keys are
    never in the values). The chart's hub Role already creates, reads and deletes Secrets,
    which is all the hub does with each user's ``atelier-s3-NAME``.

    Raises :class:`ClusterSettingsError` where the deployment's S3 cannot have accounts.

    >>> from atelier_hub.services import Deployment
    >>> d = Deployment.model_validate({"services": {"s3": {"endpoint_url": "http://s3:7070", "bucket": "b"}}})
    >>> st = ClusterSettings.model_validate({"identity": {"s3_admin_secret": "s3-root"}})
    >>> s3_accounts_hub_values(d, st)["extraEnv"]["ATELIER_S3_ROOT_ACCESS_KEY_ID"]
    {'valueFrom': {'secretKeyRef': {'name': 's3-root', 'key': 'access_key_id'}}}
    """
    secret = settings.identity.s3_admin_secret
    if not secret:
        return {}
    s3 = deployment.services.s3
    if s3 is None or not s3.endpoint_url:
        raise ClusterSettingsError(
            "identity.s3_admin_secret: per-user S3 accounts need an S3-compatible store with versitygw's admin "
            "API; set services.s3.endpoint_url (and bucket) in the deployment settings, or remove "
            "identity.s3_admin_secret (on AWS S3 itself, use identity.per_user_role_arn)")
    if s3.access_key_id or s3.secret_access_key:
        raise ClusterSettingsError(
            "services.s3.access_key_id: static keys would reach every session, but identity.s3_admin_secret "
            "gives each user their own account; remove access_key_id and secret_access_key from the "
            "deployment settings (the root keys belong in the Secret identity.s3_admin_secret names)")
    return {"extraEnv": {env: {"valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                         for key, env in S3_ROOT_ENV.items()}}


# Where the hub pod mounts the MLflow admin Secret (cluster settings' mlflow.admin_secret).
MLFLOW_SECRET_DIR = "/usr/local/etc/atelier-mlflow"


def mlflow_front_values(settings: ClusterSettings) -> dict[str, Any]:
    """The hub pod's part of the MLflow front (:class:`.settings.MLflowFront`): the admin
    Secret mounted read-only in the hub pod alone, and the hub's egress to the server on
    its own port. Sessions get no rule to the server: their egress (``privateIPs:
    false``) reaches the front only, in the hub pod."""
    front = settings.mlflow
    if not front.server_url:
        return {}
    return {
        "extraVolumes": [{"name": "atelier-mlflow-admin",
                          "secret": {"secretName": front.admin_secret, "defaultMode": 0o440,
                                     "items": [{"key": "admin-password", "path": "admin-password"}]}}],
        "extraVolumeMounts": [{"name": "atelier-mlflow-admin", "mountPath": MLFLOW_SECRET_DIR, "readOnly": True}],
        "networkPolicy": {"egress": _egress_to(front.server_url, settings)},
    }


def mlflow_front_deployment(deployment: Deployment, settings: ClusterSettings) -> Deployment:
    """The deployment settings the hub and the sessions get when the MLflow front runs:
    MLflow is the front's URL in the hub pod, behind the hub's login (``auth: hub``, the
    session's hub token), exactly as in embedded mode; the server's own URL is the
    front's only (cluster settings)."""
    from ..services.mlflow import PREFIX, MLflowService

    if not settings.mlflow.server_url:
        return deployment
    if deployment.services.mlflow is not None:
        raise ClusterSettingsError(
            "mlflow.server_url (cluster settings) and services.mlflow (deployment settings) are both set: "
            "with the MLflow front, sessions reach MLflow through the hub; remove services.mlflow from the "
            "deployment settings")
    services = deployment.services.model_copy(update={"mlflow": MLflowService(
        tracking_uri=f"http://hub:{settings.mlflow.port}{PREFIX}", auth="hub")})
    return deployment.model_copy(update={"services": services})


def credentials_deployment(deployment: Deployment, settings: ClusterSettings) -> Deployment:
    """Where the deployment names git hosts, sessions reach the credentials service in the
    hub pod (``http://hub:PORT/services/credentials``, cluster settings ``credentials.port``).

    >>> from atelier_hub.services import Deployment
    >>> d = Deployment.model_validate({"services": {"credentials": {"git_hosts": ["github.com"]}}})
    >>> credentials_deployment(d, ClusterSettings()).services.credentials.url
    'http://hub:8087/services/credentials'
    """
    from ..services.credentials import PREFIX

    creds = deployment.services.credentials
    if creds is None:
        return deployment
    url = f"http://hub:{settings.credentials.port}{PREFIX}"
    services = deployment.services.model_copy(update={"credentials": creds.model_copy(update={"url": url})})
    return deployment.model_copy(update={"services": services})


def jobs_deployment(deployment: Deployment, settings: ClusterSettings) -> Deployment:
    """Sessions reach the jobs service in the hub pod (``atelier run`` in a terminal,
    ``atelier_lab.run()``) at ``http://hub:PORT/services/jobs`` (cluster settings ``jobs``).

    >>> from atelier_hub.services import Deployment
    >>> jobs_deployment(Deployment(), ClusterSettings()).services.jobs.url
    'http://hub:8088/services/jobs'
    >>> jobs_deployment(Deployment(), ClusterSettings(jobs={"enabled": False})).services.jobs is None
    True
    """
    from ..services.jobs import SERVICE

    return _hub_pod_service(deployment, SERVICE, settings.jobs)


def _hub_pod_service(deployment: Deployment, service, front) -> Deployment:
    """The deployment with ``service`` at ``http://hub:PORT/PREFIX`` (its settings in the
    hub pod: ``front.enabled``, ``front.port``), as sessions reach it."""
    if not front.enabled:
        return deployment
    services = deployment.services.model_copy(update={service.name: service.settings(
        url=f"http://hub:{front.port}{service.prefix}")})
    return deployment.model_copy(update={"services": services})


def ray_clusters_deployment(deployment: Deployment, settings: ClusterSettings) -> Deployment:
    """Sessions ask the Ray clusters service in the hub pod (``ray_cluster()``, ``atelier
    ray up``) at ``http://hub:PORT/services/ray_clusters`` (cluster settings ``ray_clusters``).

    >>> ray_clusters_deployment(Deployment(), ClusterSettings(ray_clusters={"enabled": True})).services.ray_clusters.url
    'http://hub:8089/services/ray_clusters'
    >>> ray_clusters_deployment(Deployment(), ClusterSettings()).services.ray_clusters is None
    True
    """
    from ..services.ray_clusters import SERVICE

    return _hub_pod_service(deployment, SERVICE, settings.ray_clusters)


def ray_egress(settings: ClusterSettings) -> list[dict[str, Any]]:
    """Sessions reach the heads of personal Ray clusters (the pods KubeRay makes for
    Atelier) on Ray's client port (``ray.init("ray://...")``), its GCS port (the
    session's activity probe asks it whether tasks run) and its dashboard's (the
    session's server proxies it for its owner) only.

    >>> [p["port"] for p in ray_egress(ClusterSettings(ray_clusters={"enabled": True}))[0]["ports"]]
    [10001, 6379, 8265]
    """
    if not settings.ray_clusters.enabled:
        return []
    rc = settings.ray_clusters
    return [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "atelier",
                                                     "ray.io/node-type": "head"}}}],
             "ports": [{"port": port, "protocol": "TCP"} for port in (rc.client_port, rc.gcs_port, rc.dashboard_port)]}]


def storage_values(settings: ClusterSettings) -> dict[str, Any]:
    st = settings.storage
    return {
        "type": "dynamic",
        "capacity": st.capacity,
        "homeMountPath": st.home_mount_path,
        "dynamic": {
            "storageClass": st.storage_class,
            "pvcNameTemplate": st.pvc_name_template,
            "volumeNameTemplate": "home",
            "storageAccessModes": ["ReadWriteOnce"],
        },
    }


def require_public_url(settings: ClusterSettings) -> str:
    """The hub's public URL; :class:`ClusterSettingsError` naming the field and the fix when unset.

    Without it JupyterHub serves every user's servers on the hub's own origin, where a
    page one user's server serves (a file in their home) acts with the visitor's hub
    login, an admin's too: one link would take over an account. So there is no default.
    """
    if settings.public_url is None:
        raise ClusterSettingsError(
            "public_url: not set; the hub's public URL is required, e.g. `public_url: https://atelier.example.org` "
            "in the cluster settings (--cluster FILE), with DNS records for atelier.example.org and "
            "*.atelier.example.org pointing at the proxy and a TLS certificate covering both names: each user's "
            "servers answer at NAME.atelier.example.org, a web origin of their own")
    return settings.public_url


def render_values(profiles: list[Profile], deployment: Deployment, settings: ClusterSettings) -> dict[str, Any]:
    """The chart's values (a dict of blocks, in the order they are written).

    Raises :class:`ClusterSettingsError` when ``settings.public_url`` is unset
    (:func:`require_public_url`).
    """
    public_url = require_public_url(settings)
    files: dict[str, Any] = {
        f"atelier-profile-{p.name}": {"mountPath": f"{ETC}/{PROFILES_DIR}/{p.name}.yaml", "stringData": _profile_file(p)}
        for p in profiles
    }
    culling = settings.culling
    if culling.enabled and deployment.services.culler is None:
        # Sessions report their activity to the culler in the hub pod, through the hub's Service
        # (an endpoint like any other: egress_rules opens its port).
        services = deployment.services.model_copy(update={"culler": CullerService(
            url=f"http://hub:{culling.port}{CULLER_PREFIX}")})
        deployment = deployment.model_copy(update={"services": services})
    deployment = ray_clusters_deployment(jobs_deployment(
        credentials_deployment(mlflow_front_deployment(deployment, settings), settings), settings), settings)
    files["atelier-deployment"] = {
        "mountPath": f"{ETC}/{DEPLOYMENT_FILE}",
        "stringData": json.dumps(deployment.model_dump(mode="json", exclude_none=True), indent=2) + "\n",
    }
    files["atelier-cluster"] = {
        "mountPath": f"{ETC}/{CLUSTER_FILE}",
        "stringData": yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False),
    }
    core = dict(settings.node_pools.core)
    singleuser: dict[str, Any] = {
        "image": {"name": settings.singleuser_image.name, "tag": settings.singleuser_image.tag},
        "defaultUrl": "/lab",
        "storage": storage_values(settings),
        "networkPolicy": {
            "enabled": True,
            "egressAllowRules": {
                "privateIPs": False,
                "nonPrivateIPs": True,
                "dnsPortsPrivateIPs": True,
                "cloudMetadataServer": False,
            },
            "egress": egress_rules(_as_sessions_see_it(deployment, settings), settings) + ray_egress(settings),
        },
        # Profiles come from hub.extraConfig (a callable that filters by group).
        "profileList": [],
    }
    if settings.identity.per_user_role_arn:
        if not settings.identity.eks_cluster_name:
            raise ClusterSettingsError(
                "identity.eks_cluster_name: not set; identity.per_user_role_arn needs the EKS cluster's name "
                "for each user's Pod Identity association, e.g. `eks_cluster_name: atelier` (terraform's "
                "cluster module output `cluster_name`)")
        # Each user's pods name their own ServiceAccount (the hub's spawner): none shared.
    elif settings.identity.service_account:
        singleuser["serviceAccountName"] = settings.identity.service_account
    return {
        "hub": {
            "image": {"name": settings.hub_image.name, "tag": settings.hub_image.tag},
            "nodeSelector": core,
            # The chart's own setting, not only the hub's trait: the chart's proxy routes by
            # host (--host-routing) only when it is set. The hook (services on the hub's host)
            # comes from atelier_hub.configure, which reads public_url from the same file.
            "config": {"JupyterHub": {"subdomain_host": public_url}},
            "allowNamedServers": True,
            "namedServerLimitPerUser": settings.named_servers_per_user,
            "extraFiles": files,
            **_hub_pod_values(settings, deployment),
            "extraConfig": {
                "atelier.py": (
                    "# Atelier: the same entry as every hub (hub/jupyterhub_config.py). It finds the\n"
                    f"# cluster settings in {ETC} (hub.extraFiles) and configures KubeSpawner from\n"
                    "# profiles/, each user's servers at a subdomain of public_url (cluster.yaml), an\n"
                    "# origin of their own; singleuser.storage below sets the home.\n"
                    "import atelier_hub\n\n"
                    "atelier_hub.configure(c)\n"
                ),
            },
        },
        "proxy": {"chp": {"nodeSelector": core}},
        "singleuser": singleuser,
        "scheduling": {
            "userScheduler": {"nodeSelector": core},
            # Profiles place sessions (node selectors and tolerations per pool).
            "userPods": {"nodeAffinity": {"matchNodePurpose": "ignore"}},
        },
        # The chart's culler knows one timeout; Atelier's (hub.extraConfig) knows each profile's.
        "cull": {"enabled": False},
    }


_COMMENTS = {
    "hub": "The hub: an image carrying atelier-hub, which reads profiles/, the deployment's\n"
           "services and the cluster settings (below, as files) and configures KubeSpawner.\n"
           "Each user's servers answer at NAME.<host of subdomain_host>, a web origin of their own:\n"
           "that needs a wildcard DNS record (*.<host>) pointing at the proxy and a TLS certificate\n"
           "for both names (ingress.hosts and ingress.tls in your own values, or the load balancer).",
    "proxy": "The proxy stays on the core node pool.",
    "singleuser": "Sessions: one home PVC per user (every profile and server mounts it), and\n"
                  "network egress opened to the configured services only (private IPs stay blocked).",
    "scheduling": "Node placement: the chart's own pods on the core pool; profiles place sessions.",
    "cull": "The chart's own culler is off: Atelier's culler (a hub service started by hub.extraConfig)\n"
            "stops idle servers after each profile's culling timeouts; homes are kept.",
}


def dump_values(values: dict[str, Any]) -> str:
    """YAML text with a prose comment before each block."""
    out = ["# Zero to JupyterHub values rendered by `atelier render values` from profiles/,",
           "# the deployment settings and the cluster settings. Regenerate rather than edit;",
           "# put your own settings (authentication, ingress) in a second values file.", ""]
    for key, block in values.items():
        out += [f"# {line}" for line in _COMMENTS.get(key, "").splitlines()]
        out.append(yaml.dump({key: block}, Dumper=_Dumper, sort_keys=False, width=100).rstrip())
        out.append("")
    return "\n".join(out)


def add_render_parser(sub, *, profiles_default: str = "profiles") -> None:
    """Add ``render values`` to the ``atelier`` command's subparsers."""
    render = sub.add_parser("render", help="render deployment files (cluster mode)")
    rsub = render.add_subparsers(dest="what", required=True)
    vals = rsub.add_parser("values", help="the Zero to JupyterHub chart's values from profiles/")
    vals.add_argument("--out", help="write to FILE instead of standard output")
    vals.add_argument("--profiles", default=profiles_default, help=f"profiles folder (default {profiles_default})")
    vals.add_argument("--deployment", help="deployment settings (services), JSON or YAML")
    vals.add_argument("--cluster", help="cluster settings (images, storage, culling, GPU limit), YAML")
    vals.add_argument("--schema", help="also validate against the chart's values.schema.yaml")
    vals.set_defaults(func=cmd_render_values)
    from .attach import add_render_attach  # the hub's extra Role for `atelier kubeconfig`
    from .capacity import add_render_capacity  # its read-only ClusterRole for the form's numbers
    from .queue import add_render_kueue  # Kueue's queues for the GPU queue

    add_render_attach(rsub)
    add_render_capacity(rsub)
    add_render_kueue(rsub, profiles_default=profiles_default)


def _fail(msg: str) -> None:
    print(f"atelier: {msg}", file=sys.stderr)
    raise SystemExit(2)


def cmd_render_values(args: argparse.Namespace) -> None:
    try:
        profiles = load_profiles(args.profiles)
        deployment = load_deployment(args.deployment) if args.deployment else Deployment()
        settings = load_cluster_settings(args.cluster)
    except (ProfileError, SettingsError, ClusterSettingsError) as exc:
        _fail(str(exc))
    try:
        values = render_values(profiles, deployment, settings)
    except ClusterSettingsError as exc:  # a setting the file lacks: name the file, as above
        _fail(f"{args.cluster}: {exc}" if args.cluster else str(exc))
    if args.schema:
        problems = schema_problems(values, args.schema)
        if problems:
            _fail("the values do not match the chart's schema:\n" + "\n".join(problems))
    s3 = deployment.services.s3
    if s3 is not None and s3.secret_access_key:
        print("atelier: note: the values hold the deployment's static S3 keys (the chart keeps "
              "them in a Secret); keep the file out of git, or use IRSA (identity.role_arn).",
              file=sys.stderr)
    text = dump_values(values)
    if args.out:
        Path(args.out).write_text(text)
        print(f"Wrote {args.out} ({len(profiles)} profiles: {', '.join(p.name for p in profiles)})",
              file=sys.stderr)
    else:
        sys.stdout.write(text)


def merge_values(defaults: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over the chart's ``defaults`` as Helm merges them: maps merge key by
    key, anything else replaces, and a null removes the default.

    >>> merge_values({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": None}, "d": [2]})
    {'a': {'b': 1}, 'd': [2]}
    """
    merged = dict(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def schema_problems(values: dict[str, Any], schema_path: str | Path) -> list[str]:
    """Every place ``values``, merged over the chart's defaults (``values.yaml`` beside
    the schema), breaks the chart's JSON schema (draft 7); [] when valid."""
    import jsonschema  # only here: the CLI's other commands do not need it

    schema_path = Path(schema_path)
    schema = yaml.safe_load(schema_path.read_text())
    defaults_path = schema_path.with_name("values.yaml")
    defaults = yaml.safe_load(defaults_path.read_text()) if defaults_path.exists() else {}
    merged = merge_values(defaults, values)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.absolute_path)))]


def main_render(argv: list[str] | None = None) -> None:
    """``python -m atelier_hub.cluster.values values [...]``: the same as ``atelier render``."""
    ap = argparse.ArgumentParser(prog="atelier")
    add_render_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(["render", *(argv if argv is not None else sys.argv[1:])])
    args.func(args)


if __name__ == "__main__":
    main_render()
