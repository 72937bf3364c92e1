"""Live capacity on a cluster's spawn form: what each profile's pool has free now.

Rule this module keeps: a profile's numbers come from the nodes its pod could be
scheduled to (every label of its node selector on the node; each NoSchedule and
NoExecute taint of the node tolerated; neither cordoned nor not Ready), each node's
allocatable less the requests of the pods bound to it that have not ended (a
container's limits stand for its requests where it has none, as the API server
defaults them). "Fits now" means one such node has room for the profile's own
requests: its guarantees (or limits, where a profile has no guarantee) and its GPUs or
slices. The pure part (:func:`free_on`, :func:`profile_capacity`, :func:`capacity_text`)
does no I/O; :class:`ClusterView` reads the nodes and pods at most once per
``max_age`` seconds for every user and page view together (two list calls), never once
per page view, and again at once after a server of this hub started or stopped.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ..capacity import ordinal
from ..profiles import WHOLE_GPU, Profile

__all__ = ["ClusterView", "PoolCapacity", "add_render_capacity", "capacity_manifests", "capacity_text", "free_on",
           "profile_capacity", "quantity"]

RBAC = "rbac.authorization.k8s.io"

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {None: 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6,
           "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
           "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
# A pod in one of these phases holds nothing on its node any more.
_ENDED = ("Succeeded", "Failed")


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity as a number: cores for CPU, bytes for memory, a count otherwise.

    >>> quantity("500m"), quantity("64Gi") == 64 * 2**30, quantity("1.5G"), quantity(8)
    (0.5, True, 1500000000.0, 8.0)
    """
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {str(text)[:40]!r}")
    try:
        return float(Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2)]))
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {str(text)[:40]!r}") from None


def _requests(pod: dict) -> dict[str, float]:
    """What a pod holds on its node: the sum of its containers' requests (limits where a
    container has no request), or an init container's where that is larger."""
    spec = pod.get("spec") or {}

    def of(container: dict) -> dict[str, float]:
        res = container.get("resources") or {}
        asked = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return {name: quantity(v) for name, v in asked.items()}

    total: dict[str, float] = {}
    for container in spec.get("containers") or []:
        for name, v in of(container).items():
            total[name] = total.get(name, 0.0) + v
    for container in spec.get("initContainers") or []:
        for name, v in of(container).items():
            total[name] = max(total.get(name, 0.0), v)
    return total


def free_on(node: dict, pods: list[dict]) -> dict[str, float]:
    """``node``'s allocatable less what the pods bound to it and not ended hold (each
    pod takes one of its ``pods`` too).

    >>> n = {"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "pods": "2"}}}
    >>> free_on(n, [{"spec": {"nodeName": "n", "containers": [{"resources": {"requests": {"cpu": "500m"}}}]}}])
    {'cpu': 3.5, 'pods': 1.0}
    """
    free = {name: quantity(v) for name, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
    name = node["metadata"]["name"]
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName") != name or (pod.get("status") or {}).get("phase") in _ENDED:
            continue
        for resource, v in {**_requests(pod), "pods": 1}.items():
            free[resource] = free.get(resource, 0.0) - v
    return free


def _tolerated(taint: dict, profile: Profile) -> bool:
    for t in profile.tolerations:
        if t.effect not in (None, taint.get("effect")) or t.key != taint.get("key"):
            continue
        if t.operator == "Exists" or (t.value or "") == (taint.get("value") or ""):
            return True
    return False


def _schedulable(node: dict, profile: Profile) -> bool:
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (profile.node_selector or {}).items()):
        return False
    spec, status = node.get("spec") or {}, node.get("status") or {}
    if spec.get("unschedulable"):
        return False
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
        return False
    return all(_tolerated(t, profile) for t in spec.get("taints") or []
               if t.get("effect") in ("NoSchedule", "NoExecute"))


@dataclass(frozen=True)
class PoolCapacity:
    """A profile's pool as it stands: nodes it may use, its GPUs (or slices) free and in
    all, and whether one node has room for it now."""

    nodes: int
    gpus_free: int
    gpus_total: int
    fits: bool


def profile_capacity(profile: Profile, nodes: list[dict], pods: list[dict]) -> PoolCapacity:
    """What ``profile``'s pool has free among ``nodes`` with ``pods`` bound to them."""
    needs = {"cpu": profile.cpu.guarantee if profile.cpu.guarantee is not None else profile.cpu.limit,
             "memory": profile.memory.guarantee if profile.memory.guarantee is not None else profile.memory.limit,
             "pods": 1}
    resource = profile.gpu.kubernetes_resource if profile.gpu_count else None
    if resource:
        needs[resource] = profile.gpu_count
    by_node: dict[str, list[dict]] = {}
    for pod in pods:
        by_node.setdefault((pod.get("spec") or {}).get("nodeName") or "", []).append(pod)
    matching = [n for n in nodes if _schedulable(n, profile)]
    free_total = total = 0
    fits = False
    for node in matching:
        free = free_on(node, by_node.get(node["metadata"]["name"], []))
        if resource:
            total += int(quantity(((node.get("status") or {}).get("allocatable") or {}).get(resource, 0)))
            free_total += max(0, int(free.get(resource, 0)))
        fits = fits or all(free.get(name, 0.0) >= v for name, v in needs.items())
    return PoolCapacity(nodes=len(matching), gpus_free=free_total, gpus_total=total, fits=fits)


def capacity_text(profile: Profile, pool: PoolCapacity, room: tuple | None = None) -> str:
    """A card's capacity line, in the words of the embedded mode's cards. ``room``: for a
    profile that waits in Kueue's queue, the queue's GPUs (or slices) free, in all, and
    how many wait in the user's team's queue (:func:`atelier_hub.cluster.queue.queue_room`),
    and optionally how long a server asked now would wait (``about 25 min``).

    >>> from atelier_hub.profiles import Profile
    >>> g = Profile(name="g", display_name="G", cpu={"limit": 8}, memory={"limit": "32G"}, gpu={"count": 1})
    >>> capacity_text(g, PoolCapacity(nodes=1, gpus_free=3, gpus_total=8, fits=True))
    '3 of 8 GPUs free · fits now'
    >>> m = Profile(name="m", display_name="M", cpu={"limit": 4}, memory={"limit": "16G"},
    ...             gpu={"count": 1, "resource": "nvidia.com/mig-1g.10gb"})
    >>> capacity_text(m, PoolCapacity(nodes=1, gpus_free=0, gpus_total=2, fits=False))
    '0 of 2 slices free · full: no node of its pool has room now; a server started now waits for one'
    >>> capacity_text(m, PoolCapacity(nodes=0, gpus_free=0, gpus_total=0, fits=False))
    'no node of this cluster offers it now (its node selector, tolerations or GPUs)'
    >>> capacity_text(g, PoolCapacity(nodes=1, gpus_free=3, gpus_total=8, fits=True), room=(0, 4, 1))
    '0 of 4 GPUs free in the queue · full: you would be 2nd in line'
    >>> capacity_text(g, PoolCapacity(nodes=1, gpus_free=3, gpus_total=8, fits=True), room=(0, 4, 0, "about 5 min"))
    '0 of 4 GPUs free in the queue · full: you would be 1st in line, about 5 min'
    >>> capacity_text(g, PoolCapacity(nodes=1, gpus_free=3, gpus_total=8, fits=True), room=(1, 4, 0))
    '1 of 4 GPUs free in the queue · fits now'
    """
    if not pool.nodes or (profile.gpu_count and not pool.gpus_total):
        return "no node of this cluster offers it now (its node selector, tolerations or GPUs)"
    gpus = ""
    if profile.gpu_count:
        kind = "GPUs" if profile.gpu.kubernetes_resource == WHOLE_GPU else (
            "shares" if profile.gpu.shared or profile.gpu.kubernetes_resource.endswith(".shared") else "slices")
        gpus = f"{pool.gpus_free} of {pool.gpus_total} {kind} free · "
        if room is not None:
            free, total, waiting, *wait = room
            gpus = f"{free} of {total} {kind} free in the queue · "
            if free < profile.gpu_count:
                return f"{gpus}full: you would be {ordinal(waiting + 1)} in line" + "".join(f", {w}" for w in wait)
    if pool.fits:
        return f"{gpus}fits now"
    return f"{gpus}full: no node of its pool has room now; a server started now waits for one"


class ClusterView:
    """The cluster's nodes and pods, read at most once per ``max_age`` seconds by
    ``read`` (an async callable returning ``(nodes, pods)`` as the API's JSON), shared
    by every page view; :meth:`stale` makes the next view read again (a server of this
    hub started or stopped). A read that fails is logged once and leaves the cards
    without a capacity line (the form itself never fails for it)."""

    def __init__(self, read, *, max_age: float = 10.0, log=None, room=None):
        self._read, self.max_age, self._log = read, max_age, log
        # Where GPU profiles wait in Kueue's queue: ``room(profile, cluster_queues, team,
        # pods)``, the queue's room for a card (:func:`atelier_hub.cluster.queue.queue_room`)
        # and the wait of a server asked now, or None.
        self._room = room
        self._at = -float("inf")
        self._data: tuple | None = None
        self._lock = asyncio.Lock()
        self._failed_before = False
        self.reads = 0  # how many times the API was read (the bench and tests count them)
        # Each profile's line for the data read last (a view counts nothing again).
        self._notes: dict[str, str] = {}

    def stale(self) -> None:
        self._at = -float("inf")

    async def notes(self, profiles: list[Profile], *, team: str | None = None) -> dict[str, str]:
        """Each profile's capacity line; empty where the cluster could not be read. With
        ``team`` (the user's queue) and Kueue's ClusterQueues read, a profile that waits in
        the queue says the queue's room and the user's place in line; without, the nodes'."""
        async with self._lock:
            if time.monotonic() - self._at >= self.max_age:
                try:
                    self._data = await self._read()
                    self.reads += 1
                    self._failed_before = False
                except Exception as exc:  # noqa: BLE001 - the form shows no numbers rather than failing
                    if not self._failed_before and self._log is not None:
                        self._log.warning("Capacity: the cluster's nodes and pods could not be read (%s); the "
                                          "spawn form shows no free counts until they can. The hub needs "
                                          "list on nodes and on pods in all namespaces (docs/admin-guide.md).",
                                          str(exc)[:300])
                    self._failed_before, self._data = True, None
                self._at, self._notes = time.monotonic(), {}
            data = self._data
        if data is None:
            return {}
        nodes, pods, *more = data  # ``read`` may answer Kueue's ClusterQueues third
        queues = more[0] if more else None
        notes = {}
        for p in profiles:
            key = (p.model_dump_json(), team)  # a profile changed in its file is counted afresh
            if key not in self._notes:
                room = None
                if team is not None and queues is not None and self._room is not None:
                    room = self._room(p, queues, team, pods)
                self._notes[key] = capacity_text(p, profile_capacity(p, nodes, pods), room)
            notes[p.name] = self._notes[key]
        return notes


def capacity_manifests(*, subject: dict[str, str]) -> list[dict]:
    """What the hub needs beyond the chart's Role (pure), read only; what `atelier render
    hub-rbac` prints and the Terraform module makes:

    - a ClusterRole and its binding to read what the spawn form counts: nodes, and pods
      in every namespace (other workloads hold room on the same nodes), and Kueue's
      ClusterQueues (the GPU queue's room, where it is on);
    - a Role and its binding in the hub's namespace (``subject``'s) to read the pods' logs
      (a running job's output, :mod:`atelier_hub.cluster.kubespawner`) and to make and
      remove KubeRay's ``RayCluster`` objects and their NetworkPolicies (personal Ray
      clusters, :mod:`atelier_hub.services.ray_clusters_kube`), and to read a waiting
      server's place in Kueue's queue (its visibility API, :mod:`.queue`).

    >>> objs = capacity_manifests(subject={"kind": "ServiceAccount", "name": "hub", "namespace": "a"})
    >>> [(o["kind"], o["metadata"]["name"]) for o in objs][::2]
    [('ClusterRole', 'atelier-hub-capacity'), ('Role', 'atelier-hub-jobs-ray')]
    >>> [r["resources"][0] for r in objs[0]["rules"] + objs[2]["rules"]], objs[3]["metadata"]["namespace"]
    ... # doctest: +NORMALIZE_WHITESPACE
    (['nodes', 'pods', 'clusterqueues', 'pods/log', 'rayclusters', 'networkpolicies',
      'localqueues/pendingworkloads'], 'a')
    """
    meta = {"name": "atelier-hub-capacity",
            "labels": {"app.kubernetes.io/managed-by": "atelier", "app.kubernetes.io/component": "capacity"}}
    rules = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
             {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
             {"apiGroups": ["kueue.x-k8s.io"], "resources": ["clusterqueues"], "verbs": ["list"]}]
    logs = {"name": "atelier-hub-jobs-ray", "namespace": subject["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "atelier", "app.kubernetes.io/component": "jobs"}}
    return [
        {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules},
        {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": meta, "subjects": [subject],
         "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": meta["name"]}},
        {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": logs,
         "rules": [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                   {"apiGroups": ["ray.io"], "resources": ["rayclusters"],
                    "verbs": ["get", "list", "watch", "create", "delete"]},
                   {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                    "verbs": ["create", "delete"]},
                   {"apiGroups": ["visibility.kueue.x-k8s.io"], "resources": ["localqueues/pendingworkloads"],
                    "verbs": ["get"]}]},
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": logs, "subjects": [subject],
         "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": logs["name"]}},
    ]


def add_render_capacity(rsub) -> None:
    """``atelier render hub-rbac``: what the hub may read beyond the chart's Role."""
    p = rsub.add_parser("hub-rbac", aliases=["capacity-rbac"],
                        help="what the hub needs beyond the chart's Role: nodes and pods for the spawn form's "
                        "live capacity, job pods' logs, personal Ray clusters, places in Kueue's queue "
                        "(kubectl apply -f -; the Terraform module makes them too)")
    p.add_argument("--namespace", required=True, help="the Helm release's namespace")
    p.add_argument("--hub-service-account", default="hub", help="the hub's ServiceAccount (the chart's: hub)")

    def run(args) -> None:
        import yaml

        subject = {"kind": "ServiceAccount", "name": args.hub_service_account, "namespace": args.namespace}
        print(yaml.safe_dump_all(capacity_manifests(subject=subject), sort_keys=False), end="")

    p.set_defaults(func=run)
