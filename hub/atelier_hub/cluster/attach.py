"""Kubernetes attach (cluster mode): a kubeconfig that reaches only the user's own pods.

Rule this module keeps: each user gets their own ServiceAccount, and its Role names
that user's pods one by one (``resourceNames``): get and watch them, exec into them,
port-forward to them, read their logs, and nothing else: no list of the namespace (other
users' pods), no Secrets, no creating anything. The token is asked of the API server
(TokenRequest) with a bounded lifetime and bound to the server's Secret, so it dies
when the server stops, even before it expires; it is never stored by the hub.

The hub makes these objects with its own credentials. Kubernetes lets a Role grant
only what its maker holds, so the hub's Role needs :func:`hub_attach_rules` besides the
chart's own (see docs/user-guide.md, "VS Code").

The endpoint is ``POST /hub/api/atelier/users/NAME[/servers/SERVER]/kubeconfig``; it
needs the scope a user has on their own servers (``access:servers``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from ..connect import ssh_alias

__all__ = ["add_render_attach", "attach_objects", "attach_rules", "hub_attach_manifests", "hub_attach_rules",
           "kubeconfig", "token_seconds", "update_attach"]

# TokenRequest refuses lifetimes under 10 minutes.
MIN_TOKEN_SECONDS = 600
RBAC = "rbac.authorization.k8s.io"


def attach_rules(pod_names: list[str]) -> list[dict[str, Any]]:
    """What a user may do on their own pods, and only those (pure).
    ref: RECIPES.md "Kubernetes attach RBAC" (exec over WebSocket needs get on pods/exec).

    >>> [r["resources"][0] for r in attach_rules(["jupyter-ada"])]
    ['pods', 'pods/exec', 'pods/portforward', 'pods/log']
    """
    names = sorted(set(pod_names))
    return [
        {"apiGroups": [""], "resources": ["pods"], "resourceNames": names, "verbs": ["get", "watch"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "resourceNames": names, "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["pods/portforward"], "resourceNames": names, "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["pods/log"], "resourceNames": names, "verbs": ["get"]},
    ]


def hub_attach_rules() -> list[dict[str, Any]]:
    """What the hub's Role needs on top of the chart's to hand out attach kubeconfigs (pure):
    the per-user objects, tokens, and the rights it grants (RBAC's no-escalation rule)."""
    return [
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create", "update"]},
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        {"apiGroups": [RBAC], "resources": ["roles", "rolebindings"], "verbs": ["get", "create", "update"]},
        {"apiGroups": [""], "resources": ["pods/exec", "pods/portforward"], "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]


def hub_attach_manifests(*, namespace: str, subject: dict[str, str]) -> list[dict[str, Any]]:
    """The Role and RoleBinding that give the hub (``subject``) :func:`hub_attach_rules` (pure):
    what `atelier render attach-rbac` prints for ``kubectl apply``.

    >>> role, binding = hub_attach_manifests(namespace="atelier", subject={"kind": "ServiceAccount",
    ...                                      "name": "hub", "namespace": "atelier"})
    >>> role["metadata"]["name"], binding["roleRef"]["name"], binding["subjects"][0]["name"]
    ('atelier-hub-attach', 'atelier-hub-attach', 'hub')
    """
    meta = {"name": "atelier-hub-attach", "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "atelier", "app.kubernetes.io/component": "attach"}}
    return [
        {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": meta, "rules": hub_attach_rules()},
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": meta, "subjects": [subject],
         "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": meta["name"]}},
    ]


def add_render_attach(rsub) -> None:
    """``atelier render attach-rbac``: the hub's extra Role, as YAML for ``kubectl apply -f -``."""
    p = rsub.add_parser("attach-rbac", help="the hub's Role for `atelier kubeconfig` (kubectl apply -f -)")
    p.add_argument("--namespace", required=True, help="the Helm release's namespace")
    p.add_argument("--hub-service-account", default="hub", help="the hub's ServiceAccount (the chart's: hub)")

    def run(args) -> None:
        import yaml

        subject = {"kind": "ServiceAccount", "name": args.hub_service_account, "namespace": args.namespace}
        print(yaml.safe_dump_all(hub_attach_manifests(namespace=args.namespace, subject=subject),
                                 sort_keys=False), end="")

    p.set_defaults(func=run)


def attach_objects(*, name: str, namespace: str, user: str, pod_names: list[str]) -> list[dict[str, Any]]:
    """The ServiceAccount, Role and RoleBinding of one user (pure). ``name`` is already a
    valid object name (KubeSpawner's escaping of the user name).

    >>> sa, role, binding = attach_objects(name="atelier-attach-ada", namespace="ns", user="ada",
    ...                                    pod_names=["jupyter-ada"])
    >>> sa["kind"], role["rules"][1]["resourceNames"], binding["subjects"][0]["name"]
    ('ServiceAccount', ['jupyter-ada'], 'atelier-attach-ada')
    """
    meta = {"name": name, "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "atelier", "app.kubernetes.io/component": "attach"},
            "annotations": {"atelier.dev/user": user}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
         # The laptop's identity: never mounted into any pod.
         "automountServiceAccountToken": False},
        {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": meta, "rules": attach_rules(pod_names)},
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": meta,
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
         "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name}},
    ]


def token_seconds(requested: Any, *, most: int) -> int:
    """The lifetime to ask for: what was requested, within [10 min, ``most``] (pure).

    >>> token_seconds(None, most=3600), token_seconds(60, most=3600), token_seconds(10**6, most=3600)
    (3600, 600, 3600)
    """
    if requested is None:
        return most
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise ValueError("duration: expected a whole number of seconds, such as 3600")
    return max(MIN_TOKEN_SECONDS, min(int(requested), most))


def kubeconfig(*, name: str, server: str, namespace: str, token: str, ca_data: bytes | None) -> dict[str, Any]:
    """A kubeconfig with one cluster, user and context, the namespace set (pure): tools then
    never need to list namespaces.

    >>> kubeconfig(name="atelier-ada", server="https://k", namespace="ns", token="t",
    ...            ca_data=None)["contexts"][0]["context"]["namespace"]
    'ns'
    """
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
    }


async def _apply(create, replace, read, namespace: str, obj: dict) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    name = obj["metadata"]["name"]
    try:
        await create(namespace, obj)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = await read(name, namespace)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": current.metadata.resource_version}}
        await replace(name, namespace, obj)


async def issue(spawner, *, pod_names: list[str], seconds: int, api_server_url: str | None) -> dict[str, Any]:
    """Make (or update) the user's objects, then a token bound to the server's pod."""
    from kubernetes_asyncio.client import Configuration
    from kubespawner.clients import shared_client

    core, rbac = spawner.api, shared_client("RbacAuthorizationV1Api")
    ns = spawner.namespace
    name = spawner._expand_user_properties("atelier-attach-{username}")
    sa, role, binding = attach_objects(name=name, namespace=ns, user=spawner.user.name, pod_names=pod_names)
    await _apply(core.create_namespaced_service_account, core.replace_namespaced_service_account,
                 core.read_namespaced_service_account, ns, sa)
    await _apply(rbac.create_namespaced_role, rbac.replace_namespaced_role, rbac.read_namespaced_role, ns, role)
    await _apply(rbac.create_namespaced_role_binding, rbac.replace_namespaced_role_binding,
                 rbac.read_namespaced_role_binding, ns, binding)
    pod = await core.read_namespaced_pod(spawner.pod_name, ns)
    # A token binds only to a pod that runs as its own ServiceAccount; the server's
    # Secret (AtelierKubeSpawner.env_secret_name) lives exactly as long as the server:
    # made before its pod, deleted when it stops.
    secret = await core.read_namespaced_secret(spawner.env_secret_name, ns)
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
        "expirationSeconds": seconds,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret.metadata.name,
                           "uid": secret.metadata.uid}}}
    answer = await core.create_namespaced_service_account_token(name, ns, request)
    conf = Configuration.get_default_copy()
    ca = Path(conf.ssl_ca_cert).read_bytes() if conf.ssl_ca_cert else None
    container = pod.spec.containers[0]
    return {
        # The context is named like the server's SSH alias: one name per server everywhere.
        "kubeconfig": kubeconfig(name=ssh_alias(user=spawner.user.name, server=spawner.name or ""),
                                 server=api_server_url or conf.host, namespace=ns, token=answer.status.token,
                                 ca_data=ca),
        "namespace": ns, "pod": pod.metadata.name, "container": container.name, "image": container.image,
        "expires": answer.status.expiration_timestamp.isoformat(),
    }


def _handler_class():
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.scopes import needs_scope
    from tornado import web

    class KubeconfigHandler(APIHandler):
        def initialize(self, api_server_url: str | None = None, max_seconds: int = 8 * 3600):
            self.api_server_url, self.max_seconds = api_server_url, max_seconds

        @needs_scope("access:servers")
        async def post(self, user_name: str, server_name: str = ""):
            user = self.find_user(user_name)
            if user is None:
                raise web.HTTPError(404, f"no user {user_name!r}")
            what = f"server {server_name!r}" if server_name else "the default server"
            if server_name not in user.orm_user.orm_spawners or not user.spawners[server_name].ready:
                raise web.HTTPError(409, f"{what} of {user_name} is not running: start it first "
                                    f"(atelier vscode {server_name} --profile NAME, or the hub's home page)")
            try:
                seconds = token_seconds((self.get_json_body() or {}).get("duration"), most=self.max_seconds)
            except ValueError as exc:
                raise web.HTTPError(400, str(exc)) from None
            spawner = user.spawners[server_name]
            pods = [user.spawners[n].pod_name for n in user.orm_user.orm_spawners]
            result = await issue(spawner, pod_names=pods, seconds=seconds, api_server_url=self.api_server_url)
            self.log.info("Attach kubeconfig for %s (pod %s, %d s)", user_name, result["pod"], seconds)
            self.write(json.dumps(result))

    return KubeconfigHandler


def update_attach(c, *, api_server_url: str | None, max_seconds: int) -> None:
    """The hub's kubeconfig endpoint (only sets, never appends).

    It runs inside the hub, where KubeSpawner's client and each server's pod name are:
    JupyterHub 3.1+ logs that extra_handlers are deprecated in favour of services, but a
    service would need its own copy of both. ref: jupyterhub/app.py extra_handlers
    """
    handler = _handler_class()
    kwargs = {"api_server_url": api_server_url, "max_seconds": max_seconds}
    c.JupyterHub.extra_handlers = [
        (r"/api/atelier/users/([^/]+)/kubeconfig", handler, kwargs),
        (r"/api/atelier/users/([^/]+)/servers/([^/]+)/kubeconfig", handler, kwargs),
    ]
