"""The GPU queue on a cluster: Kueue's, set up from the cluster settings' ``queue``.

Rule this module keeps: Atelier keeps no queue of its own on a cluster. It describes
Kueue's objects (:func:`kueue_manifests`, what ``atelier render kueue`` prints), names
the team's ``LocalQueue`` on the pods of GPU profiles (:func:`queue_label`), and reads a
waiting pod's place from Kueue's visibility API (:func:`place_in_line`). Kueue gates the
pod, admits it in fair share between teams, and ungates it; the scheduler places it.
Everything here is pure: the spawner does the I/O.

The ETA beside the place (:func:`queue_eta`) is the embedded queue's reckoning
(:func:`atelier_hub.capacity.etas`) over the hub's own pods that name a queue: the
admitted ones hold GPUs until their known end (a server's idle-cull deadline or
``max_age``, from the culler's plan; a job's ``--timeout`` or ``max_age`` from its start:
the pod's :data:`HOLDS_FOR`), the gated ones wait in the order of
:func:`atelier_hub.capacity.queue_order` (the rule Kueue's fair sharing follows: the
team furthest below its share first, then first come first served). Kueue decides; this
only estimates when, and says "time unknown" where a holder has no known end.

The objects, for a cohort ``atelier``:

- one ``ResourceFlavor``, ``atelier-gpus``, with no node labels: the queue counts GPUs;
  the profile's own node selector and tolerations place the pod;
- ``atelier-pool``, a ``ClusterQueue`` holding the GPUs nobody is guaranteed (``gpus``
  less the groups' ``guaranteed_gpus``); no ``LocalQueue`` names it, so it only lends;
- per group (and the default group), a ``ClusterQueue`` ``atelier-GROUP`` in the same
  cohort with the group's guarantee as its own quota and its weight as its fair-sharing
  weight, and a ``LocalQueue`` ``GROUP`` in the sessions' namespace. Kueue lends the
  pool's GPUs to the group furthest below its share first; within a group, first come
  first served. CPU and memory are covered with a quota no pod reaches (Kueue refuses a
  pod asking for a resource its queue does not cover): the scheduler places those.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..capacity import CapacitySettings, GroupShare, Holder, Request, etas, group_of, ordinal, queue_order, wait_text
from ..profiles import WHOLE_GPU, Profile

if TYPE_CHECKING:
    from .settings import ClusterSettings, GpuQueue

__all__ = ["GATE", "HOLDS_FOR", "KUEUE", "LABEL", "add_render_kueue", "kueue_manifests", "pending_path",
           "place_in_line", "place_text", "queue_eta", "queue_label", "queue_parts", "queue_room", "queued"]

KUEUE = "kueue.x-k8s.io/v1beta2"
VISIBILITY = "visibility.kueue.x-k8s.io/v1beta2"
#: the pod label naming its LocalQueue (Kueue's pod integration manages such pods)
LABEL = "kueue.x-k8s.io/queue-name"
#: the scheduling gate Kueue's webhook puts on a pod until its workload is admitted
GATE = "kueue.x-k8s.io/admission"
FLAVOR = "atelier-gpus"
#: the annotation on a queued pod: seconds it is expected to hold its GPUs once started
#: (a server: its profile's ``max_age``, else its ``idle_timeout``; a job: its
#: ``--timeout`` or ``max_age``, the sooner); absent where nothing bounds it
HOLDS_FOR = "atelier.dev/holds-gpus-for"
#: the quota of CPU and memory of every team's queue: more than any pod asks for
_UNCOUNTED = {"cpu": "1000000", "memory": "1Ei"}


def queued(profile: Profile | None, queue: GpuQueue) -> bool:
    """Whether a profile's pods wait in Kueue's queue: a GPU profile (whole GPUs or a
    slice) where the queue is on."""
    return bool(queue.kueue and profile is not None and profile.gpu_count)


def queue_label(user_groups, queue: GpuQueue) -> str:
    """The LocalQueue a user's pods name: their group's (the first of ``groups`` they are in).

    >>> from atelier_hub.cluster.settings import GpuQueue
    >>> q = GpuQueue(kueue=True, groups={"team-b": {}, "team-a": {}})
    >>> queue_label({"team-a", "x"}, q), queue_label(set(), q)
    ('team-a', 'everyone')
    """
    return group_of(user_groups, queue)


def _resource(profile: Profile) -> str:
    return profile.gpu.kubernetes_resource if profile.gpu else WHOLE_GPU


def check_queue(queue: GpuQueue, profiles: list[Profile]) -> None:
    """Raise ValueError naming the setting and the fix where the queue cannot hold a GPU
    profile, or guarantees more GPUs than it has."""
    for profile in profiles:
        if profile.gpu_count and _resource(profile) not in queue.gpus:
            raise ValueError(f"queue.gpus lists no {_resource(profile)}, which profile {profile.name!r} asks for: "
                             f"add `{_resource(profile)}: N` (how many the pool has) to queue.gpus")
    guaranteed = sum(g.guaranteed_gpus for g in queue.groups.values())
    if guaranteed > queue.gpus.get(WHOLE_GPU, 0):
        raise ValueError(f"queue.groups guarantee {guaranteed} GPUs in all, more than queue.gpus' {WHOLE_GPU}: "
                         f"{queue.gpus.get(WHOLE_GPU, 0)}: lower the guaranteed_gpus or raise the count")


def _cluster_queue(name: str, cohort: str, namespace: str, quota: dict[str, str | int],
                   weight: float | None = None) -> dict:
    resources = list(quota)
    spec = {"cohortName": cohort,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "queueingStrategy": "BestEffortFIFO",
            "resourceGroups": [{"coveredResources": resources, "flavors": [{
                "name": FLAVOR, "resources": [{"name": r, "nominalQuota": str(quota[r])} for r in resources]}]}]}
    if weight is not None:
        spec["fairSharing"] = {"weight": f"{weight:g}"}
    return {"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": name, "labels": _LABELS},
            "spec": spec}


_LABELS = {"app.kubernetes.io/managed-by": "atelier", "app.kubernetes.io/component": "queue"}


def kueue_manifests(settings: ClusterSettings, profiles: list[Profile], *, namespace: str) -> list[dict]:
    """Kueue's objects for the cluster settings' ``queue`` (pure; see the module's doc).

    >>> from atelier_hub.cluster.settings import ClusterSettings
    >>> s = ClusterSettings(queue={"kueue": True, "gpus": {"nvidia.com/gpu": 4},
    ...                            "groups": {"team-a": {"weight": 2, "guaranteed_gpus": 1}}})
    >>> objs = kueue_manifests(s, [], namespace="atelier")
    >>> [(o["kind"], o["metadata"]["name"]) for o in objs]  # doctest: +NORMALIZE_WHITESPACE
    [('ResourceFlavor', 'atelier-gpus'), ('ClusterQueue', 'atelier-pool'), ('ClusterQueue', 'atelier-team-a'),
     ('LocalQueue', 'team-a'), ('ClusterQueue', 'atelier-everyone'), ('LocalQueue', 'everyone')]
    >>> [r["nominalQuota"] for r in objs[1]["spec"]["resourceGroups"][0]["flavors"][0]["resources"]]
    ['0', '0', '3']
    >>> objs[2]["spec"]["fairSharing"], objs[3]["spec"]
    ({'weight': '2'}, {'clusterQueue': 'atelier-team-a'})
    """
    queue = settings.queue
    check_queue(queue, profiles)
    gpus = dict(sorted(queue.gpus.items()))
    guaranteed = sum(g.guaranteed_gpus for g in queue.groups.values())
    pool = {"cpu": 0, "memory": 0, **gpus}
    if WHOLE_GPU in pool:
        pool[WHOLE_GPU] = gpus[WHOLE_GPU] - guaranteed
    objs: list[dict] = [
        {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR, "labels": _LABELS}},
        _cluster_queue(f"{queue.cohort}-pool", queue.cohort, namespace, pool),
    ]
    groups = dict(queue.groups)
    if queue.default_group not in groups:
        groups[queue.default_group] = GroupShare()
    for name, share in groups.items():
        own = {**_UNCOUNTED, **{r: 0 for r in gpus}}
        if WHOLE_GPU in own:
            own[WHOLE_GPU] = share.guaranteed_gpus
        objs.append(_cluster_queue(f"{queue.cohort}-{name}", queue.cohort, namespace, own, share.weight))
        objs.append({"apiVersion": KUEUE, "kind": "LocalQueue",
                     "metadata": {"name": name, "namespace": namespace, "labels": _LABELS},
                     "spec": {"clusterQueue": f"{queue.cohort}-{name}"}})
    return objs


def pending_path(namespace: str, local_queue: str) -> str:
    """The visibility API's list of a LocalQueue's pending workloads, in order."""
    return f"/apis/{VISIBILITY}/namespaces/{namespace}/localqueues/{local_queue}/pendingworkloads"


def place_in_line(pending: dict, pod_uid: str) -> tuple[int, int] | None:
    """The pod's place in its team's queue (1 first) and how many wait there, from the
    visibility API's answer; None where it is not waiting (admitted, or not yet seen).

    >>> items = [{"metadata": {"ownerReferences": [{"kind": "Pod", "uid": u}]}, "positionInClusterQueue": i}
    ...          for i, u in enumerate("ab")]
    >>> place_in_line({"items": items}, "b"), place_in_line({"items": items}, "c")
    ((2, 2), None)
    """
    items = pending.get("items") or []
    for item in items:
        owners = (item.get("metadata") or {}).get("ownerReferences") or []
        if any(o.get("uid") == pod_uid for o in owners):
            return int(item.get("positionInClusterQueue", 0)) + 1, len(items)
    return None


def queue_room(profile: Profile, queue: GpuQueue, cluster_queues: list[dict], team: str) -> tuple[int, int, int]:
    """For the spawn form: how many of the profile's GPUs (or slices) the queue has free
    (``queue.gpus`` less what Kueue has reserved in the cohort's ClusterQueues), how many
    in all, and how many servers and jobs wait in ``team``'s queue.

    >>> from atelier_hub.cluster.settings import GpuQueue
    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="g", display_name="G", cpu={"limit": 8}, memory={"limit": "32G"}, gpu={"count": 1})
    >>> cq = lambda name, gpus, pending: {"metadata": {"name": name}, "spec": {"cohortName": "atelier"},
    ...     "status": {"pendingWorkloads": pending, "flavorsReservation": [{"name": "atelier-gpus",
    ...                "resources": [{"name": "nvidia.com/gpu", "total": str(gpus)}]}]}}
    >>> queue_room(p, GpuQueue(kueue=True, gpus={"nvidia.com/gpu": 4}),
    ...            [cq("atelier-a", 3, 0), cq("atelier-everyone", 1, 2)], "everyone")
    (0, 4, 2)
    """
    from .capacity import quantity

    resource = _resource(profile)
    total = queue.gpus.get(resource, 0)
    used = waiting = 0
    for cq in cluster_queues:
        if (cq.get("spec") or {}).get("cohortName") != queue.cohort:
            continue
        status = cq.get("status") or {}
        for flavor in status.get("flavorsReservation") or []:
            used += sum(quantity(r.get("total", 0)) for r in flavor.get("resources") or [] if r.get("name") == resource)
        if (cq.get("metadata") or {}).get("name") == f"{queue.cohort}-{team}":
            waiting = int(status.get("pendingWorkloads") or 0)
    return max(0, total - int(used)), total, waiting


def _time(text: str | None) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() if text else None
    except ValueError:
        return None


def queue_parts(pods: list[dict], resource: str, plan: dict) -> tuple[list[Request], list[Holder]]:
    """The servers and jobs waiting in Kueue's queue for ``resource`` (their pods gated)
    and those holding it (admitted, not ended), from the hub's pods; each holder's end
    from the culler's ``plan`` (a server's ``cull_at``), else its start plus its
    :data:`HOLDS_FOR` (pure).

    >>> pod = lambda user, gated, **ann: {"metadata": {"labels": {LABEL: "everyone"}, "annotations": {
    ...     "hub.jupyter.org/username": user, **ann}, "creationTimestamp": "2026-12-07T10:00:00Z"},
    ...     "spec": {"schedulingGates": [{"name": GATE}] if gated else [],
    ...              "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
    ...     "status": {"phase": "Pending" if gated else "Running", "startTime": "2026-12-07T10:00:00Z"}}
    >>> waiting, holders = queue_parts([pod("a", False), pod("b", False, **{HOLDS_FOR: "600"}), pod("c", True)],
    ...                                "nvidia.com/gpu", {"a": {"cull_at": "2026-12-07T10:05:00+00:00"}})
    >>> [(h.key, h.ends_at - holders[0].ends_at if h.ends_at else None) for h in holders], [r.key for r in waiting]
    ([('a/', 0.0), ('b/', 300.0)], ['c/'])
    """
    from .capacity import _ENDED, _requests

    waiting: list[Request] = []
    holders: list[Holder] = []
    for pod in pods:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        group = (meta.get("labels") or {}).get(LABEL)
        if not group or meta.get("deletionTimestamp") or status.get("phase") in _ENDED:
            continue
        try:
            gpus = int(_requests(pod).get(resource, 0))
        except ValueError:
            continue
        if gpus <= 0:
            continue
        notes = meta.get("annotations") or {}
        user, server = notes.get("hub.jupyter.org/username", ""), notes.get("hub.jupyter.org/servername", "")
        key, kind = f"{user}/{server}", "job" if (meta.get("labels") or {}).get("atelier.dev/job") else "server"
        try:
            holds_for = float(notes[HOLDS_FOR]) if notes.get(HOLDS_FOR) else None
        except ValueError:
            holds_for = None
        if any(g.get("name") == GATE for g in spec.get("schedulingGates") or []):
            waiting.append(Request(key=key, user=user, group=group, gpus=gpus, kind=kind, runs_for=holds_for,
                                   since=_time(meta.get("creationTimestamp")) or 0.0))
            continue
        ends_at = None
        if kind == "server":
            ends_at = _time((plan.get(f"{user}/{server}" if server else user) or {}).get("cull_at"))
        started = _time(status.get("startTime")) or _time(meta.get("creationTimestamp"))
        if ends_at is None and holds_for is not None and started is not None:
            ends_at = started + holds_for
        holders.append(Holder(key=key, user=user, group=group, gpus=gpus, kind=kind, ends_at=ends_at))
    return waiting, holders


def queue_eta(key: str, pods: list[dict], *, queue: GpuQueue, resource: str, plan: dict, now: float,
              extra: Request | None = None) -> float | None:
    """When the waiting ``key`` (``user/server``; or ``extra``, a request not made yet, for
    the form) is expected to start: :func:`atelier_hub.capacity.etas` over
    :func:`queue_parts`, the pool being ``queue.gpus[resource]`` (pure; None: unknown)."""
    waiting, holders = queue_parts(pods, resource, plan)
    if extra is not None:
        waiting.append(extra)
    order = queue_order(waiting, holders, CapacitySettings(groups=queue.groups, default_group=queue.default_group))
    free = max(0, queue.gpus.get(resource, 0) - sum(h.gpus for h in holders))
    return etas(order, holders, free=free, now=now).get(key)


def place_text(place: tuple[int, int], *, group: str, profile: Profile, eta: float | None = None,
               now: float = 0.0) -> str:
    """What the spawn page says while Kueue holds the pod.

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="gpu-1", display_name="1 GPU", cpu={"limit": 8}, memory={"limit": "32G"}, gpu={"count": 1})
    >>> place_text((2, 3), group="team-a", profile=p, eta=1500, now=0)  # doctest: +NORMALIZE_WHITESPACE
    "In line for 1 GPU: 2nd of 3 waiting in team-a's queue, about 25 min (from the running servers'
     idle-stop deadlines and the jobs' time limits). It starts as soon as GPUs free up and the queue's
     fair share between teams reaches it; stopping the server leaves the line."
    """
    position, waiting = place
    when = ("start time unknown (a server or job holding GPUs has no known end)" if eta is None else
            f"{wait_text(eta, now)} (from the running servers' idle-stop deadlines and the jobs' time limits)")
    return (f"In line for {profile.display_name}: {ordinal(position)} of {waiting} waiting in {group}'s queue, {when}. "
            "It starts as soon as GPUs free up and the queue's fair share between teams reaches it; "
            "stopping the server leaves the line.")


def add_render_kueue(rsub, *, profiles_default: str = "profiles") -> None:
    """``atelier render kueue``: the Kueue queues of the cluster settings' ``queue``."""
    p = rsub.add_parser("kueue", help="Kueue's queues for the GPU queue of the cluster settings "
                        "(kubectl apply -f -; Kueue must run on the cluster)")
    p.add_argument("--cluster", required=True, help="cluster settings (YAML) with queue.kueue: true")
    p.add_argument("--profiles", default=profiles_default, help=f"profiles folder (default {profiles_default})")
    p.add_argument("--namespace", help="the sessions' namespace (default: the settings' namespace)")

    def run(args) -> None:
        import yaml

        from ..profiles import ProfileError, load_profiles
        from .settings import ClusterSettingsError, load_cluster_settings

        try:
            settings = load_cluster_settings(args.cluster)
            profiles = load_profiles(args.profiles)
        except (ClusterSettingsError, ProfileError) as exc:
            sys.exit(f"atelier: {exc}")
        namespace = args.namespace or settings.namespace
        if not settings.queue.kueue:
            sys.exit(f"atelier: {args.cluster}: queue.kueue is false: set `queue: {{kueue: true, gpus: "
                     "{nvidia.com/gpu: N}}` to queue GPU servers in Kueue")
        if not namespace:
            sys.exit("atelier: give --namespace (the Helm release's), or `namespace` in the cluster settings")
        try:
            objs = kueue_manifests(settings, profiles, namespace=namespace)
        except ValueError as exc:
            sys.exit(f"atelier: {args.cluster}: {exc}")
        print(yaml.safe_dump_all(objs, sort_keys=False), end="")

    p.set_defaults(func=run)
