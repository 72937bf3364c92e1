"""KubeSpawner from ``profiles/``: what the hub runs inside the Zero to JupyterHub chart.

Rule this module keeps: the same checks as the embedded spawner, server-side, before
any Kubernetes object is made: the profile a request names must be one the user may
use (their groups), and a GPU profile must stay within the per-user limit on
concurrent GPU servers. Secrets never appear as literal values in a pod spec: the
hub API token (and S3 keys, where a deployment has static ones) go into a per-server
Secret that the pod reads with ``valueFrom.secretKeyRef``; on EKS sessions get S3
through IRSA (a ServiceAccount annotated with an IAM role) and no key at all.

Per-user S3 accounts (cluster settings ``identity.s3_admin_secret``: an S3-compatible
store with versitygw's admin API, as in the test cluster): the hub makes each user's
account with the embedded mode's code (:class:`atelier_hub.services.s3_accounts.S3Accounts`,
the same policies: ``users/NAME/`` is NAME's alone), keeps the keys on its own volume,
and puts them in the user's own Secret ``atelier-s3-NAME``, made before the pod; the
pod's ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` name that Secret
(``secretKeyRef``), never another user's. Deleting the user (``DELETE
/hub/api/users/NAME``, which calls :meth:`AtelierKubeSpawner.delete_forever`) deletes
the account and the Secret; the home PVC stays.

Override order, as in KubeSpawner: spawner config -> profile (``kubespawner_override``
from :func:`atelier_hub.profiles.to_kubespawner`) -> request (only the profile name).

What KubeSpawner 7.1 does by itself, checked in its source: it puts
``JUPYTERHUB_API_TOKEN`` (and ``JPY_API_TOKEN``) into the pod spec as plain ``value``
fields; ``environment`` values may be dicts (a full ``EnvVar``, so ``valueFrom``), which
is what :meth:`AtelierKubeSpawner.get_env` uses to move them into a Secret. It deletes a
user's PVC only from ``delete_forever`` (user deletion, or a named server's deletion
when ``pvc_name_template`` contains ``{servername}``); Atelier sets ``delete_pvc =
False`` so homes outlive even an account's removal until an admin deletes them.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import re
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from jupyterhub.utils import exponential_backoff
from kubernetes_asyncio.client.models import (
    V1KeyToPath,
    V1ObjectMeta,
    V1Secret,
    V1SecretVolumeSource,
    V1Volume,
    V1VolumeMount,
)
from kubespawner import KubeSpawner
from kubespawner.clients import shared_client
from tornado import web
from traitlets import Bool, Dict, Float, Integer, Unicode

from .. import origins
from .._job_runner import GRACE as RUNNER_GRACE
from ..capacity import Holder, Request, over_limit, wait_text
from ..image_paths import PYTHON as IMAGE_PYTHON
from ..image_paths import SESSION_CONFIG_DIR
from ..jobs import TEE_ENV, job_server, kept_output, read_home_file
from ..profile_spawner import ProfileSpawnerMixin
from ..profiles import Profile, load_profiles, to_kubespawner, visible_profiles
from ..services import Deployment
from ..services.s3_accounts import S3Accounts, S3AdminError
from ..session import session_env, session_files
from . import TRINO_JWT_DIR
from .capacity import ClusterView
from .queue import (
    GATE,
    HOLDS_FOR,
    LABEL,
    check_queue,
    pending_path,
    place_in_line,
    place_text,
    queue_eta,
    queue_label,
    queue_room,
    queued,
)
from .settings import ClusterSettings, GpuQueue, load_cluster_settings

__all__ = ["AtelierKubeSpawner", "configure_kubespawner", "profile_list", "SECRET_ENV"]

# The spawn form waits this long at most for the nodes and pods (then shows sizes only).
CAPACITY_READ_TIMEOUT_S = 5.0
# While Kueue holds a server's pod, its spawn page reads the place in line this often.
QUEUE_POLL_S = 2.0

# Variables whose values are credentials: they reach the pod through a Secret only.
SECRET_ENV = (
    "JUPYTERHUB_API_TOKEN",
    "JPY_API_TOKEN",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "DATABASE_URL",  # %sql's Trino URL carries the hub token as its password
)


async def profiles_with_capacity(spawner: AtelierKubeSpawner) -> tuple[list[Profile], dict[str, str]]:
    """The profiles the spawner's user may start, and each one's capacity line (none where
    ``show_capacity`` is off or the cluster cannot be read): the form's and the API's."""
    profiles = visible_profiles(spawner.profiles, spawner.groups())
    if not spawner.show_capacity:
        return profiles, {}
    team = queue_label(spawner.groups(), spawner.gpu_queue) if spawner.gpu_queue.kueue else None
    return profiles, await capacity_view(spawner).notes(profiles, team=team)


async def profile_list(spawner: AtelierKubeSpawner) -> list[dict[str, Any]]:
    """KubeSpawner's ``profile_list`` for one user: only the profiles their groups allow,
    each card with its live capacity line where the cluster can be read (:mod:`.capacity`)."""
    profiles, notes = await profiles_with_capacity(spawner)
    entries = [to_kubespawner(p) for p in profiles]
    for profile, entry in zip(profiles, entries, strict=True):
        if profile.name in notes:
            # KubeSpawner's form puts the description in the page as it is (no escaping);
            # the line is our own text, with nothing of the user's in it.
            entry["description"] = (f'{entry["description"]}<br><span class="atelier-capacity" '
                                    f'data-profile="{profile.name}">{notes[profile.name]}</span>').removeprefix("<br>")
    return entries


def _capacity_handler_class():
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.scopes import needs_scope
    from tornado import web

    class CapacityHandler(APIHandler):
        """``GET /hub/api/atelier/users/NAME/capacity``: the profiles NAME may start, each
        with its card's capacity line (``now``; absent where the cluster cannot be
        read), what ``atelier profiles --free --hub URL`` prints."""

        @needs_scope("read:servers")
        async def get(self, user_name: str):
            user = self.find_user(user_name)
            if user is None:
                raise web.HTTPError(404, f"no user {user_name!r}")
            profiles, notes = await profiles_with_capacity(user.spawner)
            self.write(json.dumps({"profiles": [
                {"name": p.name, "display_name": p.display_name, "default": p.default, "cpu": p.cpu.limit,
                 "memory": p.memory.limit, "gpus": p.gpu_count, **({"now": notes[p.name]} if p.name in notes else {})}
                for p in profiles]}))

    return CapacityHandler


#: bytes of a job's output one request returns at most
JOB_OUTPUT_CHUNK = 1 << 20
#: seconds a running job's pod has to stop: its runner gives the command GRACE, then SIGKILL
JOB_STOP_GRACE_S = RUNNER_GRACE + 5
#: while a running job's pod stops, its output is kept again this often
JOB_LOG_FOLLOW_S = 0.5
_JOB_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


def _job_handler_classes():
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.scopes import needs_scope

    class JobOutputHandler(APIHandler):
        """``GET /hub/api/atelier/users/NAME/jobs/JOB/output?offset=N``: bytes N.. of the
        output of NAME's job JOB, what the jobs service in this pod serves to
        ``atelier logs`` (it cannot read the user's home); ``limit=0``: the exit code
        only. While the job's pod is there it
        is read from the pod's log; once its server stops, from the copy the spawner
        kept (:meth:`AtelierKubeSpawner.keep_job_output`). Headers: ``X-Atelier-Job-Exit-Code``
        (empty while it runs) and ``X-Atelier-Job-Offset`` (the next offset)."""

        def initialize(self, jobs_dir: str):
            self.jobs_dir = jobs_dir

        def kept(self, user: str, job: str, offset: int, limit: int) -> tuple[bytes, int | None] | None:
            log, code, _ = kept_output(self.jobs_dir, user, job)
            if not log.is_file():
                return None
            data = (read_home_file(log.parent, log.name, offset=offset, limit=limit) or b"") if limit else b""
            try:
                return data, int(code.read_text().strip())
            except (OSError, ValueError):
                return data, None

        @needs_scope("read:servers")
        async def get(self, user_name: str, job: str):
            user = self.find_user(user_name)
            if user is None or not _JOB_NAME.match(job):
                raise web.HTTPError(404, f"no job {job!r} of {user_name!r}")
            try:
                offset = max(0, int(self.get_argument("offset", "0")))
                limit = min(max(0, int(self.get_argument("limit", str(JOB_OUTPUT_CHUNK)))), JOB_OUTPUT_CHUNK)
            except ValueError:
                raise web.HTTPError(400, "offset, limit: give byte counts, e.g. ?offset=0&limit=65536") from None
            found = self.kept(user.name, job, offset, limit)
            if found is None and job_server(job) in user.orm_spawners:
                spawner = user.spawners[job_server(job)]
                found = await spawner.job_output(offset, limit)
                # Its pod went between the two reads: its output was kept first.
                found = found or self.kept(user.name, job, offset, limit)
            data, code = found or (b"", None)
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("X-Atelier-Job-Exit-Code", "" if code is None else str(code))
            self.set_header("X-Atelier-Job-Offset", str(offset + len(data)))
            self.finish(data)

    class JobQueueHandler(APIHandler):
        """``GET /hub/api/atelier/users/NAME/jobs/JOB/queue``: where NAME's job JOB waits in
        Kueue's queue, ``{"team", "position", "waiting", "eta"}`` (:meth:`AtelierKubeSpawner.queue_place`),
        or ``{}`` where it does not wait there: what the jobs service in this pod shows on
        ``atelier jobs`` and its page."""

        @needs_scope("read:servers")
        async def get(self, user_name: str, job: str):
            user = self.find_user(user_name)
            if user is None or not _JOB_NAME.match(job):
                raise web.HTTPError(404, f"no job {job!r} of {user_name!r}")
            place = None
            if job_server(job) in user.orm_spawners:
                spawner = user.spawners[job_server(job)]
                if spawner.pending == "spawn" and queued(spawner.profile, spawner.gpu_queue):
                    place = await spawner.queue_place()
            self.finish(place or {})

    return JobOutputHandler, JobQueueHandler


def _minutes(seconds: float) -> str:
    """
    >>> _minutes(120), _minutes(86400 + 300), _minutes(90)
    ('2 min', '24 h 5 min', '1.5 min')
    """
    hours, rest = divmod(int(seconds), 3600)
    if not hours:
        return f"{seconds / 60:g} min"
    return f"{hours} h" + (f" {rest // 60} min" if rest >= 60 else "")


_VIEW: ClusterView | None = None


async def listed(answer, what: str) -> list[dict]:
    """The items of a list call's answer read unparsed (``_preload_content=False``: the
    client then checks no status), or the error that says what could not be read."""
    if isinstance(answer, BaseException):
        raise answer
    body = await answer.read()
    if answer.status != 200:
        raise RuntimeError(f"{what} could not be read: the API server answered {answer.status} "
                           f"{body[:200].decode(errors='replace')}")
    return json.loads(body)["items"]


def capacity_view(spawner: AtelierKubeSpawner) -> ClusterView:
    """The hub's one :class:`ClusterView` (every user and page view shares its reads):
    the nodes and pods, and Kueue's ClusterQueues where GPU profiles wait in its queue
    (a failed read of those leaves the cards with the nodes' numbers)."""
    global _VIEW
    if _VIEW is None:
        queue = spawner.gpu_queue if spawner.gpu_queue.kueue else None
        warned = []

        async def read() -> tuple[list[dict], list[dict], list[dict] | None]:
            api = shared_client("CoreV1Api")
            calls = [api.list_node(_preload_content=False),
                     api.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed",
                                                     _preload_content=False)]
            if queue is not None:
                calls.append(shared_client("CustomObjectsApi").list_cluster_custom_object(
                    "kueue.x-k8s.io", "v1beta2", "clusterqueues", _preload_content=False))
            answers = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), CAPACITY_READ_TIMEOUT_S)
            nodes, pods = await listed(answers[0], "nodes"), await listed(answers[1], "pods")
            queues = None
            if queue is not None:
                try:
                    queues = await listed(answers[2], "Kueue's clusterqueues")
                except Exception as exc:  # noqa: BLE001 (the cards show the nodes' numbers)
                    if not warned:
                        warned.append(True)  # once: the cards say what they can meanwhile
                        spawner.log.warning("Capacity: %s; the cards show the nodes' numbers. Is Kueue installed, "
                                            "and may the hub list clusterqueues (atelier render hub-rbac)?",
                                            str(exc)[:300])
            return nodes, pods, queues

        def room(profile: Profile, cluster_queues: list[dict], team: str, pods: list[dict]) -> tuple | None:
            """The queue's room for the card, and when a server asked now would start
            (:func:`~atelier_hub.cluster.queue.queue_eta`, at the end of ``team``'s line)."""
            if not queued(profile, queue):
                return None
            free, total, waiting = queue_room(profile, queue, cluster_queues, team)
            now = time.time()
            asked = Request(key="\0form/", user="\0form", group=team, gpus=profile.gpu_count, since=now)
            eta = queue_eta(asked.key, pods, queue=queue, resource=profile.gpu.kubernetes_resource,
                            plan=spawner._culler_plan(), now=now, extra=asked)
            return free, total, waiting, wait_text(eta, now)

        _VIEW = ClusterView(read, max_age=spawner.capacity_max_age, log=spawner.log,
                            room=room if queue is not None else None)
    return _VIEW


class AtelierKubeSpawner(ProfileSpawnerMixin, KubeSpawner):
    """KubeSpawner sized by ``profiles/``, with Atelier's server-side checks."""

    deployment_model = Deployment
    # A job is its user's server job-NAME: this pod, the runner in place of the server.
    runs_jobs = True

    gpu_servers_per_user = Integer(
        1,
        config=True,
        help="""
        How many servers with a GPU profile one user may run at the same time
        (running or starting). A request beyond it is refused with 409 and a message
        naming the servers to stop. 0 refuses every GPU profile.

            c.AtelierKubeSpawner.gpu_servers_per_user = 2
        """,
    )

    gpus_per_user = Integer(
        0,
        config=True,
        help="""
        GPUs (or slices) one user may hold and wait for at once, over their servers and
        jobs (the cluster settings' ``gpus_per_user``). A request past it is refused with
        409, naming what holds them (:func:`atelier_hub.capacity.over_limit`, the embedded
        mode's rule); it is never queued. 0: no such count.
        """,
    )

    show_capacity = Bool(
        True,
        config=True,
        help="""
        Show each profile's live capacity on the spawn form ("3 of 8 GPUs free · fits now"),
        from the nodes and pods the hub reads at most once per ``capacity_max_age`` seconds.
        The hub needs list on nodes and on pods in all namespaces (the Terraform module's
        ClusterRole ``atelier-hub-capacity``); without them the cards show sizes only.
        """,
    )

    max_wait = Integer(
        86400,
        config=True,
        help="""
        Seconds a server whose profile's pool is full when it is asked for may wait for
        room on top of ``start_timeout`` (its pod Pending, its spawn page saying what it
        waits for); the wait ends when the scheduler places the pod, or the user stops it.
        0: no longer than ``start_timeout``. Needs ``show_capacity`` (the pool is read to
        know it is full).
        """,
    )

    queue = Dict(
        {},
        config=True,
        help="""The cluster settings' ``queue`` (:func:`update_queue`): with ``kueue`` true, the
        pods of GPU profiles name their team's Kueue LocalQueue and wait for Kueue to admit
        them, their spawn page showing their place in line. Empty: no queue.""",
    )

    capacity_max_age = Float(
        10.0,
        config=True,
        help="Seconds the spawn form's capacity numbers may be old (one read of the nodes and pods serves "
             "every page view in that time; a server of this hub starting or stopping reads again).",
    )

    culler_plan = Unicode(
        "",
        config=True,
        help="""The culler's latest decision per server (its ``--plan`` file, on the hub's
        volume): the idle-stop deadlines of the servers holding GPUs, from which a queued
        server's ETA is reckoned; empty: the culler does not run (ETAs from ``max_age``).""",
    )

    jobs_dir = Unicode(
        "",
        config=True,
        help="""Where the hub keeps each ended job's output and exit code (its pod's log,
        read before the pod is deleted), beside the jobs service's records on the hub's
        volume (:func:`update_jobs`); empty: not kept.""",
    )

    credentials_dir = Unicode(
        "",
        config=True,
        help="""Where the credentials service in the hub pod keeps each user's git tokens
        (:func:`update_credentials`); a deleted user's file is removed with them.""",
    )

    s3_accounts_dir = Unicode(
        "",
        config=True,
        help="""
        Where the hub keeps its users' S3 account keys (on its own volume, 0600) when the
        deployment's store gets one account per user (cluster settings
        ``identity.s3_admin_secret``); empty: no per-user accounts (static keys, IRSA or none).
        The store's root keys come from the hub's environment (``hub.extraEnv``).

            c.AtelierKubeSpawner.s3_accounts_dir = "/srv/jupyterhub/s3-accounts"
        """,
    )

    @property
    def s3_secret_name(self) -> str:
        """The user's own Secret holding their S3 account's keys (every server of theirs reads it)."""
        return self._expand_user_properties("atelier-s3-{username}")

    def s3_accounts(self) -> S3Accounts | None:
        """The store's accounts, where the deployment gives each user one; else None."""
        s3 = self.deployment.services.s3
        if not self.s3_accounts_dir or s3 is None or not s3.endpoint_url:
            return None
        from .values import S3_ROOT_ENV

        missing = [env for env in S3_ROOT_ENV.values() if not os.environ.get(env)]
        if missing:
            msg = (f"S3 accounts: the hub has no {', '.join(missing)}; the Secret that cluster settings' "
                   "identity.s3_admin_secret names must hold access_key_id and secret_access_key")
            raise web.HTTPError(500, msg, reason=msg)
        return S3Accounts(keys_dir=self.s3_accounts_dir, endpoint=s3.endpoint_url, region=s3.region,
                          root={key: os.environ[env] for key, env in S3_ROOT_ENV.items()},
                          shared_bucket=s3.bucket, mlflow_bucket=None, service_accounts=())

    async def ensure_s3_secret(self) -> bool:
        """Make the user's account (first spawn) and their Secret ``atelier-s3-NAME`` holding
        its keys; False where the deployment has no per-user accounts."""
        accounts = self.s3_accounts()
        if accounts is None:
            return False
        try:
            keys = await asyncio.to_thread(accounts.for_user, self.user.name)
        except S3AdminError as exc:
            msg = f"your S3 account could not be made: {exc}"
            raise web.HTTPError(503, msg, reason=msg) from None
        labels = self._build_common_labels(self._expand_all(self.extra_labels))
        labels["app.kubernetes.io/component"] = "atelier-s3-keys"
        manifest = V1Secret(
            api_version="v1", kind="Secret", type="Opaque",
            metadata=V1ObjectMeta(name=self.s3_secret_name, labels=labels),
            data={env: base64.b64encode(keys[key].encode()).decode()
                  for env, key in (("AWS_ACCESS_KEY_ID", "access_key_id"),
                                   ("AWS_SECRET_ACCESS_KEY", "secret_access_key"))},
        )
        await self._replace_secret(manifest)
        return True

    # -- AWS: one ServiceAccount per user, associated with the session role (Pod Identity) ----

    per_user_role_arn = Unicode(
        "",
        config=True,
        help="""
        IAM role of every user's own ServiceAccount (EKS Pod Identity); empty: none.
        Each user's pods run as a ServiceAccount named after the user, made by the hub with
        its association at the first spawn; the role's policy grants ``users/NAME/`` by
        the session tag ``kubernetes-service-account``.

            c.AtelierKubeSpawner.per_user_role_arn = "arn:aws:iam::123456789012:role/atelier-session"
        """,
    )
    eks_cluster_name = Unicode("", config=True, help="The EKS cluster of ``per_user_role_arn``'s associations.")

    def user_service_account(self) -> str:
        """The user's own ServiceAccount: their name, which must be a Kubernetes name
        (the role's policy reads it back as the user's prefix, so no escaping)."""
        name = self.user.name
        if not _SA_NAME.fullmatch(name) or len(name) > 253 or name == "default":
            msg = (f"user name {name!r} cannot name a Kubernetes ServiceAccount (lower-case letters, digits, "
                   "'-' and '.', not 'default'), which this deployment's per-user S3 identity needs: rename the "
                   "user, or set identity.per_user_role_arn to null in the cluster settings")
            raise web.HTTPError(400, msg, reason=msg)
        return name

    async def ensure_user_service_account(self) -> None:
        """The user's ServiceAccount and its Pod Identity association, before the pod. A
        ServiceAccount of that name that the hub did not make (the chart's `hub`) is refused."""
        from kubernetes_asyncio.client.exceptions import ApiException
        from kubernetes_asyncio.client.models import V1ServiceAccount

        name = self.user_service_account()
        try:
            sa = await self.api.read_namespaced_service_account(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            labels = {**_SA_LABELS, **({"hub.jupyter.org/username": name} if len(name) <= 63 else {})}
            await self.api.create_namespaced_service_account(self.namespace, V1ServiceAccount(
                metadata=V1ObjectMeta(name=name, labels=labels), automount_service_account_token=False))
        else:
            if (sa.metadata.labels or {}).get("app.kubernetes.io/managed-by") != _SA_LABELS["app.kubernetes.io/managed-by"]:
                msg = (f"ServiceAccount {name!r} in namespace {self.namespace} is not one the hub made for a user: "
                       "the user cannot run as it; rename the user or set the sessions' namespace "
                       "(cluster settings' namespace) to one of their own")
                raise web.HTTPError(409, msg, reason=msg)
        await asyncio.to_thread(ensure_pod_identity, cluster=self.eks_cluster_name, namespace=self.namespace,
                                service_account=name, role_arn=self.per_user_role_arn)
        self.service_account = name
        # Pod Identity mounts a token of its own; the Kubernetes API needs none of the user's.
        self.automount_service_account_token = False

    async def delete_forever(self):
        """The user is deleted (called on their default server's spawner; a named
        server's deletion keeps the account): their S3 account and Secret go (or their
        ServiceAccount and its association, on AWS), their PVC stays (``delete_pvc`` is False)."""
        await super().delete_forever()
        if not self.name and self.credentials_dir:
            from ..services.credentials import Store

            Store(self.credentials_dir).forget(self.user.name)  # their git tokens go with them
        if not self.name and self.per_user_role_arn:
            name = self.user_service_account()
            await asyncio.to_thread(remove_pod_identity, cluster=self.eks_cluster_name, namespace=self.namespace,
                                    service_account=name)
            await exponential_backoff(
                partial(self._ensure_not_exists, "service_account", name),
                f"Could not delete service account {name}",
                timeout=self.k8s_api_request_retry_timeout,
            )
        accounts = None if self.name else self.s3_accounts()
        if accounts is None:
            return
        try:
            await asyncio.to_thread(accounts.remove_user, self.user.name)
        except S3AdminError as exc:
            # The key file is in removed/: the account goes at this user's next creation.
            self.log.warning("S3: %s's account is deleted once the store answers (%s)", self.user.name, exc)
        await exponential_backoff(
            partial(self._ensure_not_exists, "secret", self.s3_secret_name),
            f"Could not delete secret {self.s3_secret_name}",
            timeout=self.k8s_api_request_retry_timeout,
        )


    trino_front_url = Unicode(
        "",
        config=True,
        help="""Where sessions reach Trino's front in the hub pod (:func:`update_trino`), in
        place of the coordinator the deployment names; empty: the deployment's URL.""",
    )

    @property
    def deployment(self):
        deployment = super().deployment
        trino = deployment.services.trino
        if not self.trino_front_url or trino is None:
            return deployment
        services = deployment.services.model_copy(update={"trino": trino.model_copy(
            update={"url": self.trino_front_url})})
        return deployment.model_copy(update={"services": services})

    @property
    def env_secret_name(self) -> str:
        """The per-server Secret holding this server's credentials."""
        return f"{self.pod_name}-env"

    # -- the checks ----------------------------------------------------------------------

    def _profile_of(self, spawner) -> Profile | None:
        """The profile another server of this user runs (or is starting) with."""
        if isinstance(getattr(spawner, "profile", None), Profile):
            return spawner.profile
        name = (spawner.user_options or {}).get("profile")
        return self.profile_named(name)

    def _other_gpu_servers(self):
        """This user's other servers and jobs of a GPU profile, running or starting: each
        one's name, spawner and profile."""
        for name, sp in self.user.spawners.items():
            p = self._profile_of(sp) if sp is not self and sp.active else None
            if p is not None and p.gpu_count:
                yield name, sp, p

    def _over_gpu_limit(self, profile: Profile) -> str | None:
        """Why this user may not ask for ``profile``'s GPUs more (``gpus_per_user``), naming
        their other servers and jobs that hold GPUs or wait for them; None: they may."""
        from ..jobs import is_job

        user, holders, waiting = self.user.name, [], []
        for name, sp, p in self._other_gpu_servers():
            kind = "job" if is_job(name, sp.user_options) else "server"
            if sp.ready:
                holders.append(Holder(key=f"{user}/{name}", user=user, group="", gpus=p.gpu_count, kind=kind))
            else:
                waiting.append(Request(key=f"{user}/{name}", user=user, group="", gpus=p.gpu_count, since=0,
                                       kind=kind))
        return over_limit(user, profile.gpu_count, key=f"{user}/{self.name}", holders=holders, waiting=waiting,
                          limit=self.gpus_per_user)

    def check_request(self, options: dict | None) -> Profile:
        """The profile ``options`` names, if this user may start it now.

        Raises :class:`tornado.web.HTTPError`: 400/403/413 (see ProfileSpawnerMixin),
        409 past the per-user GPU server limit.
        """
        profile = super().check_request(options)
        if profile.gpu_count and self.gpus_per_user:
            why = self._over_gpu_limit(profile)
            if why:
                raise web.HTTPError(409, why, reason=why)
        if profile.gpu_count:
            others = sorted(name or "(default server)" for name, _, _ in self._other_gpu_servers())
            if len(others) >= self.gpu_servers_per_user:
                limit = self.gpu_servers_per_user
                msg = (
                    f"GPU server limit reached: you may run {limit} GPU server{'s' if limit != 1 else ''} "
                    f"at a time and already have {len(others)} ({', '.join(others)}). Stop one, or "
                    f"choose a CPU profile, to start {profile.name!r}."
                    if limit else f"profile {profile.name!r} needs a GPU and GPU servers are turned off here"
                )
                raise web.HTTPError(409, msg, reason=msg)
        return profile

    def run_options_from_form(self, form_data):
        options = super().run_options_from_form(form_data)
        # Checked here too, so the form page shows the refusal at once.
        self.check_request(options)
        return options

    async def load_user_options(self):
        # KubeSpawner applies the profile's kubespawner_override here; the user's own
        # profile_list only holds what they may use, so this is a second check.
        if self.profile is None:
            self.profile = self.check_request(self.user_options)
        # Name the resolved profile, so KubeSpawner applies exactly the one checked
        # (an empty request means the user's default, which only we resolve by group).
        self.user_options = {**(self.user_options or {}), "profile": self.profile.name}
        await super().load_user_options()

    # -- the environment, with credentials moved into a Secret ----------------------------

    def get_env(self):
        env = super().get_env()
        if self.profile is not None:
            env.update(
                session_env(
                    self.profile,
                    username=self.user.name,
                    services=self.deployment.services,
                    cpus=self.cpus,
                    api_token=self.api_token,
                    # The device plugin shows the container only its own GPUs, as 0..n-1.
                    gpu_ids=list(range(self.profile.gpu_count)),
                    config_dir=SESSION_CONFIG_DIR if self._session_files() else None,
                )
            )
        if self.job:
            env[TEE_ENV] = "1"  # the hub reads its output from the pod's log
        if getattr(self.deployment.services, "jobs", None) is not None:
            # The jobs service runs in the hub pod: the Connect panel shows the `atelier run` line.
            env["ATELIER_JOBS"] = "1"
        self._secret_env = {k: env[k] for k in SECRET_ENV if isinstance(env.get(k), str) and env[k]}
        for key in self._secret_env:
            env[key] = {"valueFrom": {"secretKeyRef": {"name": self.env_secret_name, "key": key}}}
        if getattr(self, "_s3_own_keys", False):
            # The user's own account (ensure_s3_secret): their Secret, no other.
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                env[key] = {"valueFrom": {"secretKeyRef": {"name": self.s3_secret_name, "key": key}}}
        return env

    def _session_files(self) -> dict[str, str]:
        if self.profile is None:
            return {}
        return session_files(self.profile, username=self.user.name, services=self.deployment.services,
                             cpus=self.cpus, git=self.deployment.git)

    def get_env_secret_manifest(self) -> V1Secret:
        labels = self._build_common_labels(self._expand_all(self.extra_labels))
        labels["app.kubernetes.io/component"] = "atelier-session-env"
        return V1Secret(
            api_version="v1",
            kind="Secret",
            type="Opaque",
            metadata=V1ObjectMeta(name=self.env_secret_name, labels=labels),
            data={k: base64.b64encode(v.encode()).decode()
                  for k, v in {**self._secret_env, **self._file_keys()}.items()},
        )

    def _file_keys(self) -> dict[str, str]:
        """Session files as Secret keys (``file-0``...: a key may not hold a '/')."""
        return {f"file-{i}": text for i, (_, text) in enumerate(sorted(self._session_files().items()))}

    async def get_pod_manifest(self):
        # The user's S3 Secret (or ServiceAccount) exists before the pod names it.
        self._s3_own_keys = await self.ensure_s3_secret()
        if self.per_user_role_arn:
            await self.ensure_user_service_account()
        if self.job:
            # The image's entrypoint (its start hook) still runs first: KubeSpawner's
            # command is the container's args.
            self.cmd = self.job_command(IMAGE_PYTHON)
            for path in self._kept_files():
                path.unlink(missing_ok=True)  # an earlier job's of this name
        pod = await super().get_pod_manifest()  # calls get_env, which fills _secret_env
        if queued(self.profile, self.gpu_queue):
            # Kueue's webhook gates the pod until the team's queue admits it.
            pod.metadata.labels[LABEL] = queue_label(self.groups(), self.gpu_queue)
            # How long it holds its GPUs once admitted: the ETAs of those behind it.
            holds_for = self.gpu_holds_for(self.profile, self.user_options,
                                           records=Path(self.jobs_dir) if self.jobs_dir else None)
            if holds_for:
                pod.metadata.annotations[HOLDS_FOR] = str(int(holds_for))
        if self.job:
            # Run once: the runner's exit is the job's end, never a restart.
            pod.spec.restart_policy = "Never"
            pod.metadata.labels["atelier.dev/job"] = self.job["name"]
        files = sorted(self._session_files())
        if files:
            items = [V1KeyToPath(key=f"file-{i}", path=path) for i, path in enumerate(files)]
            volume = V1Volume(name="atelier-session",
                              secret=V1SecretVolumeSource(secret_name=self.env_secret_name, items=items))
            pod.spec.volumes = [*(pod.spec.volumes or []), volume]
            container = pod.spec.containers[0]
            container.volume_mounts = [*(container.volume_mounts or []), V1VolumeMount(
                # Read-only, from the server's Secret (the chart's hub Role may create
                # Secrets, not ConfigMaps); the session's env vars point each library there.
                name="atelier-session", mount_path=SESSION_CONFIG_DIR, read_only=True)]
        # Created before the pod, so the container never starts without it; replaced
        # whole, since a new start has a new API token.
        manifest = self.get_env_secret_manifest()
        await self._replace_secret(manifest)
        return pod

    async def _replace_secret(self, manifest: V1Secret) -> None:
        """Delete the Secret of that name, if any, then create ``manifest``: the chart's hub
        Role may create and delete Secrets, not update them."""
        await exponential_backoff(
            partial(self._ensure_not_exists, "secret", manifest.metadata.name),
            f"Could not delete the old secret {manifest.metadata.name}",
            timeout=self.k8s_api_request_retry_timeout,
        )
        await exponential_backoff(
            partial(self._make_create_resource_request, "secret", manifest),
            f"Could not create secret {manifest.metadata.name}",
            timeout=self.k8s_api_request_retry_timeout,
        )

    def run_pre_spawn_hook(self):
        result = super().run_pre_spawn_hook()  # the request checked (ProfileSpawnerMixin)
        return self._wait_longer_when_full(result)

    async def _wait_longer_when_full(self, hook_result) -> None:
        """A server whose pool is full when it is asked for waits for room up to
        ``start_timeout + max_wait``, for this start only: JupyterHub reads
        ``start_timeout`` after this hook, and the wait is not a slow start."""
        if inspect.isawaitable(hook_result):
            await hook_result
        if self.max_wait and queued(self.profile, self.gpu_queue):
            # Kueue decides when it starts: the wait in line is not a slow start.
            self.extend_start_timeout(self.max_wait)
        elif self.max_wait and self.profile is not None and await self.waiting_message():
            self.extend_start_timeout(self.max_wait)
            self.log.info("%s/%s waits for room in the %s pool (up to %d s more)", self.user.name, self.name,
                          self.profile.name, self.max_wait)

    async def start(self):
        try:
            return await super().start()
        finally:
            capacity_view(self).stale()  # the next form counts this server's pod
            self.restore_start_timeout()

    @property
    def gpu_queue(self) -> GpuQueue:
        """The ``queue`` setting as its model, validated once per spawner (it is read on
        every form view and every poll of a waiting server's place)."""
        if getattr(self, "_gpu_queue", None) is None:
            self._gpu_queue = GpuQueue.model_validate(self.queue)
        return self._gpu_queue

    async def progress(self):
        """KubeSpawner's progress, where the scheduler found no room for the pod
        ("0/6 nodes are available: 4 Insufficient nvidia.com/gpu, ...") said in the
        card's words instead (:meth:`waiting_message`). A refusal for another reason
        (a volume, a selector no node matches) is shown as the scheduler gives it.
        While Kueue holds the pod, its place in line, read every ``QUEUE_POLL_S`` s
        (:meth:`queue_message`), each time it changes."""
        events = super().progress().__aiter__()
        upcoming = asyncio.ensure_future(events.__anext__())
        said = None
        watch = queued(self.profile, self.gpu_queue)
        try:
            while True:
                done, _ = await asyncio.wait({upcoming}, timeout=QUEUE_POLL_S if watch else None)
                if upcoming not in done:
                    text, eta = await self.queue_message()
                    if text and text != said:
                        said = text
                        # ``eta``: the same estimate as the text's, in seconds since the epoch
                        yield {"message": text, **({"eta": eta} if eta is not None else {})}
                    continue
                try:
                    event = upcoming.result()
                except StopAsyncIteration:
                    return
                upcoming = asyncio.ensure_future(events.__anext__())
                raw = event.get("raw_event") or {}
                if raw.get("reason") == "FailedScheduling" and self.profile is not None:
                    waiting = await self.waiting_message()
                    if waiting:
                        event = {**{k: v for k, v in event.items() if k != "raw_event"}, "message": waiting}
                yield event
        finally:
            upcoming.cancel()

    def _culler_plan(self) -> dict:
        try:
            return json.loads(Path(self.culler_plan).read_text()) if self.culler_plan else {}
        except (OSError, ValueError):
            return {}

    def queue_eta(self, pods: list[dict]) -> float | None:
        """When this server is expected to leave the queue, reckoned from the hub's queued
        pods (:func:`~atelier_hub.cluster.queue.queue_eta`)."""
        return queue_eta(f"{self.user.name}/{self.name}", pods, queue=self.gpu_queue,
                         resource=self.profile.gpu.kubernetes_resource, plan=self._culler_plan(), now=time.time())

    async def queue_place(self) -> dict | None:
        """Where this server's pod waits while Kueue holds it (its admission gate):
        ``{"team", "position", "waiting", "eta"}`` (``position`` None where Kueue's
        visibility API could not be read; ``eta``: :meth:`queue_eta`); None once admitted,
        or before Kueue has seen it. The spawn page's and ``atelier jobs``' place."""
        pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}") if self.pod_reflector else None
        if not pod or not any(g.get("name") == GATE for g in (pod.get("spec") or {}).get("schedulingGates") or []):
            return None
        group = pod["metadata"].get("labels", {}).get(LABEL, "")
        try:
            api = shared_client("CoreV1Api")
            r = await api.api_client.call_api(pending_path(self.namespace, group), "GET",
                                              header_params={"Accept": "application/json"},
                                              auth_settings=["BearerToken"], _preload_content=False,
                                              _request_timeout=CAPACITY_READ_TIMEOUT_S)
            place = place_in_line({"items": await listed(r, "Kueue's pending workloads")}, pod["metadata"]["uid"])
        except Exception as exc:  # noqa: BLE001 (the page says it waits; the log says why the place is unknown)
            if not getattr(self, "_queue_read_failed", False):  # logged once, not at every poll
                self._queue_read_failed = True
                self.log.warning("%s/%s: Kueue's visibility API did not answer (%s): is it installed, and may the "
                                 "hub get localqueues/pendingworkloads (atelier render hub-rbac)?", self.user.name,
                                 self.name, str(exc)[:200])
            return {"team": group, "position": None, "waiting": None, "eta": None}
        if not place:
            return None
        eta = self.queue_eta(list(self.pod_reflector.pods.values()))
        return {"team": group, "position": place[0], "waiting": place[1], "eta": eta}

    async def queue_message(self) -> tuple[str | None, float | None]:
        """The spawn page's line for :meth:`queue_place`, and the ETA in it."""
        place = await self.queue_place()
        if place is None:
            return None, None
        if place["position"] is None:
            return (f"In line for {self.profile.display_name} in {place['team']}'s queue (Kueue's); the place in "
                    "line cannot be read now. Stopping the server leaves the line."), None
        return place_text((place["position"], place["waiting"]), group=place["team"], profile=self.profile,
                          eta=place["eta"], now=time.time()), place["eta"]

    async def waiting_message(self) -> str | None:
        """What a pod the scheduler has no room for waits for, read afresh; None where the
        pool is not full (the scheduler's reason is something else) or cannot be read."""
        if not self.show_capacity:
            return None
        view = capacity_view(self)
        view.stale()
        note = (await view.notes([self.profile])).get(self.profile.name, "")
        if "full: " not in note:
            return None
        free = f" ({note.split(' · ')[0]})" if " · " in note else ""
        return (f"Waiting for room: every node of the {self.profile.display_name} pool is full now{free}. "
                f"The server starts as soon as a server or job there ends; it waits up to "
                f"{_minutes(self.start_timeout)}, and stopping it leaves the wait.")

    # -- a job's output: its pod's log, kept on the hub's volume before the pod goes ----------

    def _kept_files(self) -> tuple[Path, Path, Path] | tuple[()]:
        return kept_output(self.jobs_dir, self.user.name, self.job["name"]) if self.jobs_dir and self.job else ()

    def _job_pod(self) -> dict | None:
        return self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}") if self.pod_reflector else None

    def _terminated(self) -> dict | None:
        """The job container's ``terminated`` state (its exit code, its termination message:
        the runs the runner listed) once it ended; None before."""
        pod = self._job_pod()
        for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == "notebook" and "terminated" in (status.get("state") or {}):
                return status["state"]["terminated"]
        return None

    def job_exit_code(self) -> int | None:
        """The runner's exit code (the job's) once its container ended; None before."""
        return (self._terminated() or {}).get("exitCode")

    async def _pod_log(self, limit: int | None = None) -> bytes | None:
        """The job pod's log (its first ``limit`` bytes), or None where there is none to read."""
        from kubernetes_asyncio.client.rest import ApiException

        try:
            r = await self.api.read_namespaced_pod_log(self.pod_name, self.namespace, container="notebook",
                                                       limit_bytes=limit, _preload_content=False)
            # Unread, the answer is not checked by the client: an error's body is no output.
            status, body = r.status, await r.read()
        except ApiException as exc:
            status, body = exc.status, (exc.reason or "").encode()
        if status == 200:
            return body
        # 400 while the container is being created; 404 once the pod is gone.
        if status == 403 and not getattr(type(self), "_log_refusal_noted", False):
            type(self)._log_refusal_noted = True
            self.log.error("Cannot read job pods' logs (403): the hub needs get on pods/log in %s "
                           "(`atelier render hub-rbac`; the Terraform module makes it): %s",
                           self.namespace, body[:300].decode(errors="replace"))
        return None

    async def job_output(self, offset: int, limit: int) -> tuple[bytes, int | None] | None:
        """Bytes ``offset:offset+limit`` of the running job's output, and its exit code
        once it ended; None where its pod has no log (not started yet, or gone)."""
        if self._job_pod() is None:
            return None
        code = self.job_exit_code()
        if not limit:
            return b"", code
        log = await self._pod_log(offset + limit)
        return None if log is None else (log[offset:offset + limit], code)

    async def keep_job_output(self) -> None:
        """The job's whole output and exit code, copied to the hub's volume before its pod
        is deleted (the jobs service serves them from there; a pod's log goes with it)."""
        files = self._kept_files()
        if not files or self._job_pod() is None:
            return
        ended = self._terminated() or {}
        code = ended.get("exitCode")
        log = await self._pod_log()
        if log is None:
            return
        out, exit_file, runs_file = files
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        kept = [(out, log)]
        if code is not None:
            kept.append((exit_file, f"{code}\n".encode()))
        if ended.get("message"):
            kept.append((runs_file, ended["message"].encode()))  # the user's to write: read by job_runs
        for path, data in kept:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

    async def _keep_job_output_until_gone(self) -> None:
        """While a running job's pod stops (a cancel, ``max_age``): its output kept again
        every ``JOB_LOG_FOLLOW_S`` s, so that what its command writes as it ends (the
        runner hands it the SIGTERM) is kept too; the last read before the pod went stays."""
        while True:
            try:
                await self.keep_job_output()
            except Exception:  # noqa: BLE001 (the copy made before stays)
                pass
            await asyncio.sleep(JOB_LOG_FOLLOW_S)

    async def stop(self, now=False):
        follower = None
        if self.job:
            try:
                await self.keep_job_output()
            except Exception:  # the pod is deleted all the same: a stop never fails for this
                self.log.exception("The output of job %s/%s was not kept", self.user.name, self.name)
            if not now and self._job_pod() is not None and self._terminated() is None:
                # Still running: its command gets the runner's grace to end (the pod's
                # grace period covers it), and what it writes meanwhile is kept.
                self.delete_grace_period = max(self.delete_grace_period, JOB_STOP_GRACE_S)
                follower = asyncio.ensure_future(self._keep_job_output_until_gone())
        try:
            await super().stop(now=now)
        finally:
            if follower is not None:
                follower.cancel()
            capacity_view(self).stale()
        # The token in it is revoked by the hub on stop; the object goes too.
        await exponential_backoff(
            partial(self._ensure_not_exists, "secret", self.env_secret_name),
            f"Could not delete secret {self.env_secret_name}",
            timeout=self.k8s_api_request_retry_timeout,
        )


_SA_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_SA_LABELS = {"app.kubernetes.io/managed-by": "atelier-hub", "app.kubernetes.io/component": "atelier-user-identity"}


def _eks():
    import boto3  # the hub's own role (Pod Identity of the hub's ServiceAccount)

    return boto3.client("eks")


def ensure_pod_identity(*, cluster: str, namespace: str, service_account: str, role_arn: str) -> None:
    """The association of ``service_account`` with ``role_arn`` (made if missing; one with
    another role is replaced). ref: https://docs.aws.amazon.com/eks/latest/userguide/pod-id-association.html"""
    eks = _eks()
    for found in eks.list_pod_identity_associations(clusterName=cluster, namespace=namespace,
                                                    serviceAccount=service_account)["associations"]:
        current = eks.describe_pod_identity_association(clusterName=cluster, associationId=found["associationId"])
        if current["association"]["roleArn"] == role_arn:
            return
        eks.delete_pod_identity_association(clusterName=cluster, associationId=found["associationId"])
    eks.create_pod_identity_association(clusterName=cluster, namespace=namespace, serviceAccount=service_account,
                                        roleArn=role_arn)


def remove_pod_identity(*, cluster: str, namespace: str, service_account: str) -> None:
    """Delete ``service_account``'s associations (a removed user's)."""
    eks = _eks()
    for found in eks.list_pod_identity_associations(clusterName=cluster, namespace=namespace,
                                                    serviceAccount=service_account)["associations"]:
        eks.delete_pod_identity_association(clusterName=cluster, associationId=found["associationId"])


# -- configuration: one update_<section> each; only sets, never appends ---------------------


def update_profiles(c, settings: ClusterSettings, *, profiles_dir: str, deployment_file: str | None) -> None:
    s = c.AtelierKubeSpawner
    s.profiles_dir = str(profiles_dir)
    s.deployment_file = str(deployment_file or "")
    # Set on the subclass: it wins over c.KubeSpawner.profile_list, which the chart
    # sets from singleuser.profileList.
    s.profile_list = profile_list
    s.gpu_servers_per_user = settings.gpu_servers_per_user
    s.gpus_per_user = settings.gpus_per_user or 0
    s.image = f"{settings.singleuser_image.name}:{settings.singleuser_image.tag}"
    s.default_url = "/lab"
    s.start_timeout = 300


def update_storage(c, settings: ClusterSettings) -> None:
    """One dynamic PVC per user, the home of every server of theirs (what the chart's
    ``singleuser.storage`` renders; see :func:`atelier_hub.cluster.values.storage_values`)."""
    s, st = c.AtelierKubeSpawner, settings.storage
    s.storage_pvc_ensure = True
    s.pvc_name_template = st.pvc_name_template
    s.storage_capacity = st.capacity
    s.storage_access_modes = ["ReadWriteOnce"]
    if st.storage_class is not None:
        s.storage_class = st.storage_class
    s.volumes = {"home": {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
    s.volume_mounts = {"home": {"name": "home", "mountPath": st.home_mount_path}}


#: The hub's persistent volume in the chart (hub.db.pvc, where its database lives): what
#: the hub and its services keep there survives restarts. ``ATELIER_HUB_VOLUME`` moves it,
#: for a hub run outside the chart (the cluster-mode tests' hub keeps it in its own folder).
HUB_VOLUME = os.environ.get("ATELIER_HUB_VOLUME", "/srv/jupyterhub")

#: where the hub in the chart keeps its users' S3 keys: its own volume, 0600
S3_ACCOUNTS_DIR = f"{HUB_VOLUME}/s3-accounts"


def update_identity(c, settings: ClusterSettings) -> None:
    if settings.identity.per_user_role_arn:
        c.AtelierKubeSpawner.per_user_role_arn = settings.identity.per_user_role_arn
        c.AtelierKubeSpawner.eks_cluster_name = settings.identity.eks_cluster_name or ""
    if settings.identity.s3_admin_secret:
        c.AtelierKubeSpawner.s3_accounts_dir = S3_ACCOUNTS_DIR
    if settings.identity.service_account:
        c.AtelierKubeSpawner.service_account = settings.identity.service_account
        # IRSA's web-identity token is a projected volume that needs the SA token mount.
        c.AtelierKubeSpawner.automount_service_account_token = True


#: the usage record, on the hub's volume: usage survives restarts
USAGE_FILE = f"{HUB_VOLUME}/usage.jsonl"


def update_culling(c, settings: ClusterSettings, *, profiles_dir: str) -> None:
    """Atelier's culler as a hub service (the chart's own is rendered off), with the same
    command as the embedded mode's, listening in the hub pod where sessions reach it."""
    from ..services.culler import HUB_SCOPES, PREFIX, culler_command

    c.ProfileSpawnerMixin.usage_file = USAGE_FILE
    if not settings.culling.enabled:
        return
    c.AtelierKubeSpawner.server_token_scopes = ["users:activity!user", "access:servers!server",
                                                "access:services!service=culler"]
    command = culler_command(profiles_dir=str(profiles_dir), audit=f"{HUB_VOLUME}/culler-audit.jsonl",
                             plan=CULLER_PLAN)
    c.AtelierKubeSpawner.culler_plan = CULLER_PLAN  # queued servers' ETAs
    culler = {"name": "culler", "display": False,
              "command": [*command, "--listen", f"0.0.0.0:{settings.culling.port}", "--prefix", PREFIX]}
    # The chart has already set its services and roles (hub.services, hub.loadRoles) when
    # hub.extraConfig runs: the culler joins them rather than replacing the operator's.
    c.JupyterHub.services = [*(s for s in c.JupyterHub.get("services", []) if s.get("name") != "culler"), culler]
    _service_role(c, "culler", HUB_SCOPES)


#: the culler's latest decision per server, on the hub's volume: the home page's planned stops
CULLER_PLAN = f"{HUB_VOLUME}/culler-plan.json"


def update_home(c, settings: ClusterSettings, *, profiles_dir: str) -> None:
    """The embedded mode's home page and look (its templates and :class:`atelier_hub.home.Home`)
    on the chart's hub: each server's profile, state, uptime, planned idle stop (where the
    culler runs), cost so far (where the usage record is kept) and ways in, the user's jobs
    (where the jobs service runs: its records on the hub's volume) and latest MLflow runs
    (where the MLflow front runs). An operator's own templates
    (``hub.templatePaths``) come first and their ``hub.templateVars`` win."""
    from ..home import Home
    from ..look import TEMPLATES, template_vars

    templates = str(TEMPLATES)
    c.JupyterHub.template_paths = [*(p for p in c.JupyterHub.get("template_paths", []) if p != templates), templates]
    home = Home(profiles_dir=profiles_dir, hub_url=settings.public_url or "",
                usage_file=USAGE_FILE if settings.usage.enabled else None,
                plan_file=CULLER_PLAN if settings.culling.enabled else None, vscode=True,
                mlflow=bool(settings.mlflow.server_url), jobs_dir=JOBS_DIR if settings.jobs.enabled else None)
    c.JupyterHub.template_vars = {**template_vars(), "atelier_home": home, **c.JupyterHub.get("template_vars", {})}
    c.JupyterHub.default_url = "/hub/home"


def update_usage(c, settings: ClusterSettings) -> None:
    """Atelier's usage page as a hub service in the hub pod, with the same command as the
    embedded mode's, over the usage record on the hub's volume. The chart's proxy routes
    `/services/usage/` to it through the hub's Service (the rendered values open its port
    to the proxy). Every user's role may reach it, as in the embedded mode: the page gives
    the hub's admins every user's lines and anyone else their own only."""
    from ..services.usage import SERVICE, usage_command

    if not settings.usage.enabled:
        return
    port = settings.usage.port
    usage = {"name": "usage", "display": True, "oauth_no_confirm": True, "url": f"http://hub:{port}",
             "command": [*usage_command(USAGE_FILE), "--listen", f"0.0.0.0:{port}"]}
    c.JupyterHub.services = [*(s for s in c.JupyterHub.get("services", []) if s.get("name") != "usage"), usage]
    _user_role_scopes(c, SERVICE.session_scopes)


def _service_role(c, service: str, scopes) -> None:
    """The role ``SERVICE-service`` of a hub service in the hub pod (its own token's
    scopes), beside the roles the chart set (hub.loadRoles), replacing one of that name."""
    role = {"name": f"{service}-service", "scopes": list(scopes), "services": [service]}
    c.JupyterHub.load_roles = [*(r for r in c.JupyterHub.get("load_roles", []) if r.get("name") != role["name"]),
                               role]


def _server_token_scopes(c, scopes) -> None:
    """``scopes`` join each server's own token's (update_culling may have set the list;
    else JupyterHub's `server` role: its two scopes)."""
    base = list(c.AtelierKubeSpawner.get("server_token_scopes", None)
                or ["users:activity!user", "access:servers!server"])
    c.AtelierKubeSpawner.server_token_scopes = [*base, *(x for x in scopes if x not in base)]


def _user_role_scopes(c, scopes) -> None:
    """``scopes`` join the `user` role; the chart may have set one (hub.loadRoles)."""
    roles = [dict(r) for r in c.JupyterHub.get("load_roles", [])]
    user = next((r for r in roles if r.get("name") == "user"), None)
    if user is None:
        roles.append(user := {"name": "user", "scopes": ["self"]})
    user["scopes"] = [*user.get("scopes", []), *(s for s in scopes if s not in user.get("scopes", []))]
    c.JupyterHub.load_roles = roles


#: the MLflow front's folder on the hub's volume (the names of the accounts it made)
MLFLOW_STATE = f"{HUB_VOLUME}/mlflow-front"


def update_mlflow(c, settings: ClusterSettings) -> None:
    """The MLflow front (:mod:`atelier_hub.services.mlflow_front`, the embedded mode's
    code) as a hub service in the hub pod, before the deployment's MLflow server
    (``--server-url``), with the admin password from the Secret the chart mounts in this
    pod alone (:func:`atelier_hub.cluster.values.mlflow_front_values`). Sessions get
    ``http://hub:PORT/services/mlflow`` and their hub token (the rendered deployment
    settings, :func:`atelier_hub.cluster.values.mlflow_front_deployment`); their token
    and every user may reach the service, as in embedded mode."""
    import sys

    from ..services.mlflow import HUB_SCOPES, PREFIX, SERVICE
    from .values import MLFLOW_SECRET_DIR

    front = settings.mlflow
    if not front.server_url:
        return
    public = f"{settings.public_url}{PREFIX}" if settings.public_url else PREFIX
    mlflow = {"name": SERVICE.name, "display": True, "oauth_no_confirm": True, "url": f"http://hub:{front.port}",
              "command": [sys.executable, "-m", "atelier_hub.services.mlflow_front",
                          "--server-url", front.server_url,
                          "--admin-password-file", f"{MLFLOW_SECRET_DIR}/admin-password",
                          # The names of the accounts it made, on the hub's volume.
                          "--state", MLFLOW_STATE,
                          "--listen", f"0.0.0.0:{front.port}", "--public-url", public]}
    c.JupyterHub.services = [*(s for s in c.JupyterHub.get("services", []) if s.get("name") != SERVICE.name),
                             mlflow]
    # It reads the hub's users: a removed user's MLflow account goes within seconds.
    _service_role(c, SERVICE.name, HUB_SCOPES)
    _user_role_scopes(c, SERVICE.session_scopes)
    # The session's own token reaches the front too.
    _server_token_scopes(c, SERVICE.session_scopes)


#: the credentials service's folder on the hub's volume: each user's tokens, 0600
CREDENTIALS_DIR = f"{HUB_VOLUME}/credentials"


def update_credentials(c, settings: ClusterSettings, deployment: Deployment) -> None:
    """The credentials service (:mod:`atelier_hub.services.credentials`, the embedded
    mode's code) as a hub service in the hub pod, where the deployment names git hosts:
    users keep their tokens through the proxy (``atelier credentials``), and each
    session's git asks it at ``http://hub:PORT`` with the session's own token."""
    from ..services.credentials import SERVICE, credentials_command

    creds = deployment.services.credentials
    if creds is None:
        return
    port = settings.credentials.port
    service = {"name": SERVICE.name, "display": False, "url": f"http://hub:{port}",
               "command": [*credentials_command(folder=CREDENTIALS_DIR, git_hosts=creds.git_hosts),
                           "--listen", f"0.0.0.0:{port}"]}
    c.JupyterHub.services = [*(s for s in c.JupyterHub.get("services", []) if s.get("name") != SERVICE.name),
                             service]
    c.AtelierKubeSpawner.credentials_dir = CREDENTIALS_DIR
    _user_role_scopes(c, SERVICE.session_scopes)
    _server_token_scopes(c, SERVICE.session_scopes)


#: the front's folder on the hub's volume (its rules file, for the record)
TRINO_STATE = f"{HUB_VOLUME}/trino"


def trino_front_command(settings: ClusterSettings, trino) -> list[str]:
    """The Trino front's command line in the hub pod (``trino``: the deployment's
    ``TrinoService``, whose ``url`` is the coordinator)."""
    front = settings.trino
    cmd = [sys.executable, "-m", "atelier_hub.services.trino_server", "--state", TRINO_STATE,
           "--backend", trino.url, "--jwt-key-file", f"{TRINO_JWT_DIR}/jwt-hmac",
           "--listen-host", "0.0.0.0", "--front-port", str(front.port), "--rules-port", str(front.rules_port)]
    if front.schemas_in:
        cmd += ["--schemas-in", front.schemas_in]
    for schema in trino.shared_schemas or []:
        cmd += ["--shared-schema", schema]
    return cmd


def update_trino(c, settings: ClusterSettings, deployment: Deployment) -> None:
    """Trino's front as a hub service in the hub pod, where the deployment names a
    Trino: the same code as the embedded mode's front, before the platform's coordinator.
    Sessions get its address (``http://hub:PORT``) and a token that may use it; it reads
    the hub's users for the coordinator's rules. The values mount the JWT key's Secret
    and open the two ports (:func:`atelier_hub.cluster.values.render_values`)."""
    from ..services.trino import HUB_SCOPES
    from ..services.trino import SERVICE as TRINO

    trino = deployment.services.trino
    if trino is None:
        return
    front = {"name": "trino", "display": False, "command": trino_front_command(settings, trino)}
    c.JupyterHub.services = [*(s for s in c.JupyterHub.get("services", []) if s.get("name") != "trino"), front]
    _service_role(c, "trino", HUB_SCOPES)
    # Every user's role, and each server's token, may use the front (as in the embedded mode).
    _user_role_scopes(c, TRINO.session_scopes)
    _server_token_scopes(c, TRINO.session_scopes)
    c.AtelierKubeSpawner.trino_front_url = f"http://hub:{settings.trino.port}"


#: the jobs service's folder on the hub's volume: each job's record, and its output once ended
JOBS_DIR = f"{HUB_VOLUME}/jobs"


def update_jobs(c, settings: ClusterSettings, *, profiles_dir: str) -> None:
    """The jobs service (:mod:`atelier_hub.services.jobs_server`, the embedded mode's code)
    as a hub service in the hub pod: ``atelier run`` starts each job as its user's server
    ``job-NAME`` through the hub, so this spawner builds its pod as a session's. The
    service reads a job's output and exit code from the hub (:func:`_job_handler_classes`),
    which reads the pod's log; its token may start, stop and read users' servers."""
    from ..services.jobs import HUB_SCOPES, SERVICE, jobs_command
    from ..services.mlflow import PREFIX as MLFLOW_PREFIX

    if not settings.jobs.enabled:
        return
    port = settings.jobs.port
    # The jobs page links each job's runs to MLflow's UI, where the MLflow front runs.
    mlflow = MLFLOW_PREFIX if settings.mlflow.server_url else None
    jobs = {"name": SERVICE.name, "display": True, "oauth_no_confirm": True, "url": f"http://hub:{port}",
            "command": [*jobs_command(jobs_dir=JOBS_DIR, homes_dir=None, profiles_dir=profiles_dir, mlflow=mlflow),
                        "--listen", f"0.0.0.0:{port}"]}
    c.JupyterHub.services = [*(s for s in c.JupyterHub.get("services", []) if s.get("name") != SERVICE.name), jobs]
    _service_role(c, SERVICE.name, HUB_SCOPES)
    _user_role_scopes(c, SERVICE.session_scopes)
    _server_token_scopes(c, SERVICE.session_scopes)
    c.AtelierKubeSpawner.jobs_dir = JOBS_DIR
    output, queue = _job_handler_classes()
    c.JupyterHub.extra_handlers = [*c.JupyterHub.extra_handlers,
                                   (r"/api/atelier/users/([^/]+)/jobs/([^/]+)/output", output, {"jobs_dir": JOBS_DIR}),
                                   (r"/api/atelier/users/([^/]+)/jobs/([^/]+)/queue", queue, {})]


def update_queue(c, settings: ClusterSettings, *, profiles_dir: str) -> None:
    """GPU servers and jobs in Kueue's queue (the cluster settings' ``queue``,
    :mod:`.queue`): a queue that cannot hold a GPU profile stops the hub at start."""
    if not settings.queue.kueue:
        return
    check_queue(settings.queue, load_profiles(profiles_dir))
    c.AtelierKubeSpawner.queue = settings.queue.model_dump()


def update_ray_clusters(c, settings: ClusterSettings, *, profiles_dir: str) -> None:
    """The Ray clusters service as a hub service in the hub pod: the embedded mode's API
    and checks (:mod:`atelier_hub.services.ray_clusters_server`) with KubeRay's
    ``RayCluster`` in place of containers (:mod:`atelier_hub.services.ray_clusters_kube`).
    It talks to the API server as the hub does (the pod's ServiceAccount); a hub
    service's environment is not the hub's, so the API server's address is handed on."""
    from ..services.ray_clusters import SERVICE, ray_clusters_command

    if not settings.ray_clusters.enabled:
        return
    rc = settings.ray_clusters
    port = rc.port
    kube = {**rc.model_dump(exclude={"enabled", "port"}), "namespace": settings.namespace or _hub_namespace()}
    service = {"name": SERVICE.name, "display": False, "url": f"http://hub:{port}",
               "command": [*ray_clusters_command(state=HUB_VOLUME, profiles_dir=profiles_dir, kubernetes=kube),
                           "--listen", f"0.0.0.0:{port}"],
               "environment": {k: os.environ[k] for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
                               if k in os.environ}}
    c.JupyterHub.services = [*(s for s in c.JupyterHub.get("services", []) if s.get("name") != SERVICE.name), service]
    _user_role_scopes(c, SERVICE.session_scopes)
    _server_token_scopes(c, SERVICE.session_scopes)


def _hub_namespace() -> str:
    """The hub pod's namespace (its ServiceAccount's), where KubeSpawner puts sessions by default."""
    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    except OSError:
        return os.environ.get("POD_NAMESPACE", "default")


def update_origins(c, settings: ClusterSettings) -> None:
    """Each user's servers at a subdomain of ``public_url`` (:mod:`atelier_hub.origins`).
    The chart's values set ``hub.config.JupyterHub.subdomain_host`` to the same URL (the
    chart's proxy routes by host only when that value is set). Without ``public_url``
    every server shares the hub's origin: only a hub outside the chart (the cluster-mode
    tests) runs so; ``atelier render values`` refuses to render values without it."""
    if settings.public_url is not None:
        origins.update_origins(c, settings.public_url)


def configure_kubespawner(
    c,
    *,
    profiles_dir: str | Path,
    deployment_file: str | Path | None = None,
    cluster_file: str | Path | None = None,
    storage: bool = True,
) -> ClusterSettings:
    """Configure JupyterHub to spawn Atelier sessions with KubeSpawner.

    The chart's ``hub.extraConfig`` calls it with ``storage=False`` (the chart's
    ``singleuser.storage``, rendered from the same settings, already sets the home);
    a hub outside the chart (the cluster-mode tests) lets it set the storage too.
    Each user's servers get a web origin of their own where the cluster settings name
    ``public_url`` (:func:`update_origins`).

    >>> from traitlets.config import Config
    >>> c = Config()
    >>> _ = configure_kubespawner(c, profiles_dir="profiles")  # doctest: +SKIP
    >>> c.AtelierKubeSpawner.pvc_name_template  # doctest: +SKIP
    'claim-{username}'
    """
    settings = load_cluster_settings(cluster_file)
    load_profiles(profiles_dir)  # a bad profile folder stops the hub at start, not at a spawn
    # The same body limits as the embedded hub (input_limits); the chart's database is
    # not trimmed here (its URL is the chart's).
    from ..input_limits import bound_hub_requests

    bound_hub_requests()
    c.JupyterHub.spawner_class = "atelier_hub.cluster.kubespawner.AtelierKubeSpawner"
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = settings.named_servers_per_user
    update_origins(c, settings)
    if settings.namespace:
        c.AtelierKubeSpawner.namespace = settings.namespace
    update_profiles(c, settings, profiles_dir=str(profiles_dir),
                    deployment_file=str(deployment_file) if deployment_file else None)
    if storage:
        update_storage(c, settings)
    # Homes outlive even a user's removal (`DELETE /hub/api/users/NAME` calls
    # delete_forever) until an admin deletes them; with the chart too, whose values set
    # the storage but not this (KubeSpawner's default deletes the PVC).
    c.AtelierKubeSpawner.delete_pvc = False
    update_identity(c, settings)
    # `atelier kubeconfig`: a per-user identity reaching only the user's own pods.
    from .attach import update_attach

    update_attach(c, api_server_url=settings.attach.api_server_url, max_seconds=settings.attach.max_token_seconds)
    # `atelier profiles --free --hub URL`: the cards' capacity lines for a laptop.
    c.JupyterHub.extra_handlers = [*c.JupyterHub.extra_handlers,
                                   (r"/api/atelier/users/([^/]+)/capacity", _capacity_handler_class(), {})]
    update_culling(c, settings, profiles_dir=str(profiles_dir))
    update_usage(c, settings)
    update_mlflow(c, settings)
    update_jobs(c, settings, profiles_dir=str(profiles_dir))
    update_ray_clusters(c, settings, profiles_dir=str(profiles_dir))
    update_queue(c, settings, profiles_dir=str(profiles_dir))
    update_home(c, settings, profiles_dir=str(profiles_dir))
    if deployment_file:
        from ..services import load_deployment

        deployment = load_deployment(deployment_file)
        update_trino(c, settings, deployment)
        update_credentials(c, settings, deployment)
    return settings
