"""``repro sync``: upload spooled runs to the tracking server they were meant for.

The rule this module keeps: each spooled run ends up on the server exactly once and
complete. The remote run carries the tag ``repro.spool.id`` (the local id) from its
creation and ``repro.spool.synced`` once everything is uploaded; ``synced.json`` in the
spool folder records the remote id. A sync that was interrupted half-way finds its
remote run by the tag and uploads only the metric points that are not there yet; a run
whose writer still runs (it holds the run's writer lock, seen from any host sharing the
spool) is left for later; a run whose writer died without ending it is uploaded as
KILLED with everything it logged. One sync at a time uploads a given run (a lock per
run), so two syncs sharing a spool never upload it twice.
"""

from __future__ import annotations

import os

from ._errors import ReproError

TYPE_CHECKING = False  # keep `import repro` from importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from mlflow.tracking import MlflowClient

    from . import _spool

_SPOOL_ID_TAG = "repro.spool.id"
_SYNCED_TAG = "repro.spool.synced"
_MAX_METRICS = 1000
_MAX_PARAMS_TAGS = 100


class SyncResult:
    """What one :func:`sync` call did, by local run id.

    ``uploaded`` and ``already`` map local ids to remote ids (uploaded by this call or
    earlier); ``skipped`` says why a run was left for later (still running, parent not
    uploaded); ``failed`` says what went wrong and what to do.
    """

    def __init__(self) -> None:
        self.uploaded: dict[str, str] = {}
        self.already: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.failed: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"SyncResult(uploaded={self.uploaded}, already={self.already}, "
            f"skipped={self.skipped}, failed={self.failed})"
        )

    @property
    def ok(self) -> bool:
        return not self.failed


def sync(
    *,
    spool_dir: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> SyncResult:
    """Upload every spooled run that is not on its tracking server yet.

    Safe to repeat and to interrupt: a second call uploads nothing new and never creates
    a second copy of a run.

    Args:
        spool_dir: Spool folder (default ``$REPRO_SPOOL_DIR`` or ``~/.cache/repro/spool``).
        tracking_uri: Upload there instead of the server each run was meant for.
        echo: Called with one line per run (the CLI prints them).

    >>> import repro
    >>> result = repro.sync()  # doctest: +SKIP
    >>> result.uploaded  # doctest: +SKIP
    {'5f0c…': '9a1b…'}
    """
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from . import _spool, _tracking

    root = Path(spool_dir).expanduser().absolute() if spool_dir else _spool.spool_root()
    say = echo or (lambda line: None)
    result = SyncResult()
    runs = _spool.list_runs(root)
    id_map: dict[str, str] = {}
    for run in runs:
        done = _spool.read_synced(run)
        if done and done.get("run_id"):
            id_map[run.run_id] = done["run_id"]
    clients: dict[str, Any] = {}
    for run in runs:
        if run.run_id in id_map:
            result.already[run.run_id] = id_map[run.run_id]
            continue
        lock = _spool.try_lock(run.directory / "sync.lock")
        if lock is None:
            result.skipped[run.run_id] = "being uploaded by another `repro sync` right now"
            say(f"later    {run.run_id}: {result.skipped[run.run_id]}")
            continue
        try:
            done = _spool.read_synced(run)  # another sync may have finished it meanwhile
            if done and done.get("run_id"):
                id_map[run.run_id] = result.already[run.run_id] = done["run_id"]
                continue
            remote_id = _sync_one(run, id_map, tracking_uri, clients, result)
        except ReproError as exc:
            result.failed[run.run_id] = str(exc)
            say(f"failed   {run.run_id}: {exc}")
            continue
        except Exception as exc:
            if _tracking.is_unavailable(exc):
                message = (
                    f"{_tracking.describe(exc)}; nothing is lost, run `repro sync` again "
                    "when the server answers"
                )
            elif isinstance(exc, MlflowException):
                message = (
                    f"the server refused it ({_tracking.describe(exc)}); it stays in "
                    f"{run.directory}"
                )
            else:
                raise
            result.failed[run.run_id] = message
            say(f"failed   {run.run_id}: {message}")
            continue
        finally:
            os.close(lock)
        if remote_id is None:
            say(f"later    {run.run_id}: {result.skipped[run.run_id]}")
            continue
        id_map[run.run_id] = remote_id
        result.uploaded[run.run_id] = remote_id
        say(f"uploaded {run.run_id} -> run {remote_id} on {_target(run, tracking_uri)}")
    if not runs:
        say(f"nothing to sync: no spooled runs in {root}")
    elif not result.uploaded and not result.failed and not result.skipped:
        say(f"nothing to sync: all {len(result.already)} spooled run(s) already uploaded")
    return result


def _target(run: _spool.SpooledRun, override: str | None) -> str:
    return override or run.target


def _client(uri: str, clients: dict[str, Any]) -> MlflowClient:
    from . import _tracking

    if uri not in clients:
        reason = _tracking.probe(uri)
        if reason is not None:
            raise ReproError(
                f"tracking server {uri} is unreachable ({reason}); start it or pass "
                "--tracking-uri, then run `repro sync` again (nothing is lost)"
            )
        from mlflow.tracking import MlflowClient

        clients[uri] = MlflowClient(uri)
    return clients[uri]


def _sync_one(
    run: _spool.SpooledRun,
    id_map: dict[str, str],
    override: str | None,
    clients: dict[str, Any],
    result: SyncResult,
) -> str | None:
    from . import _spool, _tracking

    if run.status == "RUNNING" and run.writer_alive():
        result.skipped[run.run_id] = (
            f"still running (pid {run.writer.get('pid')}); sync again after it ends"
        )
        return None
    parent = run.tags.get("mlflow.parentRunId")
    if parent and parent not in id_map and _spool.find_run(parent, run.directory.parent.parent):
        result.skipped[run.run_id] = f"its parent run {parent} is not uploaded yet"
        return None
    uri = _target(run, override)
    if not uri or _spool.is_spool_uri(uri):
        raise ReproError(
            "no tracking server recorded for this run; pass --tracking-uri URI "
            "(or set MLFLOW_TRACKING_URI for `repro sync`)"
        )
    client = _client(uri, clients)
    with _tracking.bounded_requests(retries=2, timeout=60):
        remote_id = _upload(client, run, id_map)
    _spool.write_json_atomic(
        run.synced_file,
        {"run_id": remote_id, "tracking_uri": uri, "synced_at": _spool.now_ms()},
    )
    return remote_id


def _remote_experiment(client: MlflowClient, run: _spool.SpooledRun) -> str:
    from mlflow.exceptions import MlflowException

    if run.experiment_id.startswith("spool-"):
        name = run.experiment_name
        if not name:
            raise ReproError(
                f"spooled run {run.run_id} lost its experiment name; pass --tracking-uri "
                "and move it by hand, or delete its folder"
            )
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            assert exp is not None
            return exp.experiment_id
    try:
        client.get_experiment(run.experiment_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ReproError(
            f"experiment {run.experiment_id} of spooled run {run.run_id} does not exist on "
            f"{client.tracking_uri}; pass --tracking-uri for the server it belongs to"
        ) from None
    return run.experiment_id


def _find_remote(client: MlflowClient, experiment_id: str, local_id: str) -> Any:
    from mlflow.entities import ViewType

    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{_SPOOL_ID_TAG}` = '{local_id}'",
        run_view_type=ViewType.ALL,
        max_results=5,
    )
    return found[0] if found else None


def _final_tags(run: _spool.SpooledRun, id_map: dict[str, str]) -> dict[str, str]:
    tags = dict(run.tags)
    parent = tags.get("mlflow.parentRunId")
    if parent in id_map:
        tags["mlflow.parentRunId"] = id_map[parent]
    tags[_SPOOL_ID_TAG] = run.run_id
    tags["repro.spooled"] = "true"
    return tags


def _upload_models(client: MlflowClient, run: _spool.SpooledRun, exp_id: str,
                   remote_run_id: str) -> None:
    """Recreate the run's logged models on the server (each once: its remote id is kept
    in ``synced.json`` next to it as soon as it exists)."""
    from mlflow.entities import LoggedModelOutput

    from . import _spool
    from ._spool_store import load_model

    steps = dict(run.model_outputs)
    base = run.directory.parent.parent / "models"
    for model_id in sorted(set(steps) | _models_of(base, run.run_id)):
        directory = base / model_id
        model = load_model(directory)
        if model is None:
            continue
        record = directory / "synced.json"
        try:
            import json

            remote_model = json.loads(record.read_text())["model_id"]
        except (OSError, ValueError, KeyError):
            created = client.create_logged_model(
                exp_id, name=model["name"], source_run_id=remote_run_id, tags=model["tags"],
                params=model["params"], model_type=model.get("model_type"),
            )
            remote_model = created.model_id
            _spool.write_json_atomic(record, {"model_id": remote_model})
        artifacts = directory / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            client.log_model_artifacts(remote_model, str(artifacts))
        status = model.get("status", "READY")
        client.finalize_logged_model(remote_model, "FAILED" if status == "FAILED" else "READY")
        if model_id in steps:
            client.log_outputs(remote_run_id, [LoggedModelOutput(remote_model, steps[model_id])])


def _models_of(base: Path, run_id: str) -> set[str]:
    from ._spool_store import load_model

    found = set()
    for directory in base.glob("m-*") if base.is_dir() else []:
        model = load_model(directory)
        if model is not None and model.get("source_run_id") == run_id:
            found.add(directory.name)
    return found


def _upload(client: MlflowClient, run: _spool.SpooledRun, id_map: dict[str, str]) -> str:
    import time
    from collections import Counter

    from mlflow.entities import Metric, Param, RunTag

    if run.resumes:
        # A server run resumed while the server was unreachable: add to it.
        remote = client.get_run(run.run_id)
        exp_id = remote.info.experiment_id
    else:
        exp_id = _remote_experiment(client, run)
        remote = _find_remote(client, exp_id, run.run_id)
    tags = _final_tags(run, id_map)
    if (remote is not None and remote.data.tags.get(_SYNCED_TAG) == "true"
            and not run.resumes):
        return remote.info.run_id
    if remote is not None and remote.info.lifecycle_stage == "deleted":
        # An earlier sync stopped after deleting it: a deleted run takes no more data.
        client.restore_run(remote.info.run_id)
    metrics = list(run.metrics)
    if remote is None:
        created = client.create_run(
            exp_id, start_time=run.start_time, tags=tags, run_name=run.run_name
        )
        remote_id = created.info.run_id
        params = dict(run.params)
    else:
        # An earlier sync stopped half-way: upload only what is missing.
        remote_id = remote.info.run_id
        params = {k: v for k, v in run.params.items() if k not in remote.data.params}
        have: Counter[tuple[str, str, int, int]] = Counter()
        for key in {m[0] for m in metrics}:
            for m in client.get_metric_history(remote_id, key):
                have[(m.key, repr(float(m.value)), m.timestamp, m.step)] += 1
        missing = []
        for m in metrics:
            k = (m[0], repr(m[1]), m[2], m[3])
            if have[k]:
                have[k] -= 1
            else:
                missing.append(m)
        metrics = missing

    param_list = [Param(k, v) for k, v in params.items()]
    # mlflow.user says who made the run: it went with create_run, and a tracking server
    # may refuse to have it set again (Atelier's front does).
    tag_list = [RunTag(k, v) for k, v in tags.items() if k != "mlflow.user"]
    metric_list = [Metric(k, v, ts, step) for k, v, ts, step in metrics]
    while param_list or tag_list or metric_list:
        p, param_list = param_list[:_MAX_PARAMS_TAGS], param_list[_MAX_PARAMS_TAGS:]
        t, tag_list = tag_list[:_MAX_PARAMS_TAGS], tag_list[_MAX_PARAMS_TAGS:]
        room = _MAX_METRICS - len(p) - len(t)
        m, metric_list = metric_list[:room], metric_list[room:]
        client.log_batch(remote_id, metrics=m, params=p, tags=t)

    if run.datasets:
        from ._spool_store import _dataset_input

        client.log_inputs(remote_id, datasets=[_dataset_input(d) for d in run.datasets])
    if run.artifact_dir.is_dir() and any(run.artifact_dir.iterdir()):
        client.log_artifacts(remote_id, str(run.artifact_dir))
    _upload_models(client, run, exp_id, remote_id)

    status = run.status
    end_time = run.end_time
    if status == "RUNNING":
        # The writer died without ending the run: keep what it logged, say so.
        status = "KILLED"
        end_time = run.last_time or int(time.time() * 1000)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints "View run" links here
        client.set_terminated(remote_id, status, end_time=end_time)
    # Marked complete before a deletion: the server refuses tags on a deleted run.
    client.set_tag(remote_id, _SYNCED_TAG, "true")
    if run.lifecycle_stage == "deleted":
        client.delete_run(remote_id)
    return remote_id
