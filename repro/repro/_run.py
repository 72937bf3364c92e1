"""``repro.start_run``: MLflow's ``start_run`` plus the context that makes a run repeatable.

The rule this module keeps: recording must never cost the user their run, and should
cost them as little time as possible.

- Every tag is known when the run is created: the git scan runs (in child processes)
  while MLflow is imported and the server probed, and a process that starts run after
  run reuses its last scan while inotify vouches nothing changed (``_watch``). The
  ``repro/`` artifacts are written at once to a local artifact store; for a remote one
  they are uploaded by a thread while the user's code runs (``_upload``), and leaving
  the ``with`` block ends the run, then waits for it.
- Only rank 0 of a distributed job records a run; other ranks get a stand-in
  (``_distributed``).
- When the tracking server is unreachable or failing, the run goes to the local spool
  (one warning line) and the script goes on; MLflow in this process then keeps using the
  spool (so ``mlflow.end_run()`` and later MLflow calls do not wait minutes on a dead
  server) until a later ``start_run`` finds the server again. When a capture step fails,
  the run keeps what was captured and a warning says what is missing.
- Errors that MLflow itself raises for a wrong call (an already active run, a bad
  experiment id) are raised unchanged.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Mapping

from ._distributed import NoOpRun, distributed_rank, distributed_tags
from ._errors import ReproError, warn

TYPE_CHECKING = False  # typing itself costs more to import than all of this module
if TYPE_CHECKING:
    import threading
    from typing import Any

    from mlflow import ActiveRun
    from mlflow.tracking import MlflowClient

    from . import _capture

# Only the standard library's lightest modules at import time: `import repro` must stay
# cheap, so MLflow and the capture machinery load when a run starts.
_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("repro_inside", default=False)


def inside_start_run() -> bool:
    """True while :func:`start_run` is creating a run in this thread (the run context
    provider then stays out of the way: start_run records more than it would)."""
    return _INSIDE.get()


class _inside:
    """Context manager marking this thread as inside :func:`start_run`."""

    def __enter__(self) -> None:
        self.token = _INSIDE.set(True)

    def __exit__(self, *exc: object) -> None:
        _INSIDE.reset(self.token)


_RUN_CLASS: list[type] = []


def _run_class() -> type:
    """MLflow's ActiveRun, extended to wait for the artifact upload (defined on first use so
    that importing repro does not import MLflow)."""
    if _RUN_CLASS:
        return _RUN_CLASS[0]
    from mlflow import ActiveRun

    class ReproActiveRun(ActiveRun):
        """MLflow's ActiveRun. Leaving ``with`` ends the run as MLflow does, then waits
        until the ``repro/`` artifacts are stored."""

        def __init__(self, run: Any, uploader: threading.Thread | None) -> None:
            super().__init__(run)
            self._repro_uploader = uploader

        def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
            try:
                return super().__exit__(exc_type, exc_val, exc_tb)
            finally:
                if self._repro_uploader is not None:
                    self._repro_uploader.join()

    _RUN_CLASS.append(ReproActiveRun)
    return ReproActiveRun


def _experiment_id(client: MlflowClient, name: str) -> str:
    """Id of the experiment called ``name``, created if missing (like mlflow.set_experiment)."""
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)  # created meanwhile by another process
            if exp is None:
                raise
    if exp.lifecycle_stage == LifecycleStage.DELETED:
        raise ReproError(
            f"experiment {name!r} is deleted on {client.tracking_uri}; restore it with "
            f"`mlflow experiments restore --experiment-id {exp.experiment_id}` or use "
            "another name"
        )
    return exp.experiment_id


def start_run(
    experiment: str | None = None,
    *,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    **mlflow_kwargs: Any,
) -> ActiveRun | NoOpRun:
    """Start an MLflow run that records the git state, packages, entry point, arguments
    (secrets redacted), machine and Atelier session it runs in.

    Returns MLflow's own run object, so ``mlflow.log_metric`` and friends work inside;
    use it in ``with`` or end it with ``mlflow.end_run()``. Nested runs
    (``nested=True``), ``run_id=`` and every other ``mlflow.start_run`` keyword are
    passed through and behave as in MLflow.

    Args:
        experiment: Experiment name, created if missing (default: MLflow's current
            experiment). Pass ``experiment_id=`` instead to choose one by id.
        run_name: Name of the run.
        tags: Extra tags; they win over the ones repro records.
        **mlflow_kwargs: Passed to ``mlflow.start_run``.

    The ``repro/`` artifacts of a run on a remote server are uploaded in the background;
    leaving the ``with`` block waits for them. When the tracking server is unreachable
    or failing, the run is written to the local spool (``$REPRO_SPOOL_DIR``, default
    ``~/.cache/repro/spool``) instead, one warning line says so, and ``repro sync``
    uploads it later. On a distributed rank other than 0 nothing is recorded and a
    :class:`NoOpRun` is returned.

    >>> import mlflow, repro
    >>> with repro.start_run("mnist", run_name="baseline") as run:  # doctest: +SKIP
    ...     mlflow.log_param("lr", 0.1)
    ...     mlflow.log_metric("loss", 0.25, step=1)
    """
    rank = distributed_rank()
    if rank:
        return NoOpRun(rank)
    job = distributed_tags()
    if job:
        tags = {**job, **(tags or {})}
    from . import _capture

    try:
        from . import _params

        params, sources, options = _params.find(sys._getframe(1))
    except Exception:  # never cost the run
        params, sources, options = {}, [], {}
    if params:
        tags = {"repro.params": ",".join(sources) + f" ({len(params)})", **(tags or {})}

    try:
        pending = _capture.begin()
    except Exception as exc:  # a capture bug must not cost the user their run
        import mlflow

        warn("repro: could not capture this run's context (%s); starting a plain MLflow run",
              exc)
        if experiment is not None and "experiment_id" not in mlflow_kwargs:
            # The run still goes to the experiment asked for, not to "Default".
            from mlflow.tracking import MlflowClient

            mlflow_kwargs["experiment_id"] = _experiment_id(MlflowClient(), experiment)
        return mlflow.start_run(run_name=run_name, tags=dict(tags or {}), **mlflow_kwargs)
    if options:
        # The parser says how the program spells its secret parameters (`-k` for
        # --api-key): their values leave the recorded command too.
        from ._redact import REDACTED, is_secret_name, redact_options

        secret = [o for name, sp in options.items()
                  if is_secret_name(name.rsplit(".", 1)[-1]) or params.get(name) == REDACTED
                  for o in sp.get("opts", [])]
        if secret:
            pending.entry.command = redact_options(pending.entry.command, secret)
    try:
        return _start(pending, experiment, run_name, tags, mlflow_kwargs, params,
                      {"sources": sources, "options": options})
    except BaseException:
        pending.abort()
        raise


def _start(
    pending: _capture.Pending,
    experiment: str | None,
    run_name: str | None,
    tags: Mapping[str, Any] | None,
    kwargs: dict[str, Any],
    params: dict[str, str] | None = None,
    arguments: dict[str, Any] | None = None,
) -> ActiveRun:
    import mlflow
    from mlflow.tracking import MlflowClient

    from . import _capture, _spool, _tracking, _upload

    if mlflow.active_run() is not None and not kwargs.get("nested") and not kwargs.get("run_id"):
        pending.abort()
        # MLflow raises its own "Run ... is already active" error here.
        return mlflow.start_run(run_name=run_name, tags=dict(tags or {}), **kwargs)
    experiment_id = kwargs.pop("experiment_id", None)
    if experiment is not None and experiment_id is not None:
        raise ReproError(
            "pass either experiment (a name) or experiment_id, not both: "
            f"got {experiment!r} and {experiment_id!r}"
        )
    user_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    current = mlflow.get_tracking_uri()
    target = _spool.parse_uri(current)[1] if _spool.is_spool_uri(current) else current
    if _spool.is_spool_uri(current) and mlflow.active_run() is not None:
        # Inside a spooled run: its children are spooled with it, whatever the server does.
        reason = "the parent run is spooled"
    else:
        reason = _tracking.probe(target)  # while git scans
    try:
        capture = pending.finish()
    except Exception as exc:  # a capture bug must not cost the user their run
        pending.abort()
        warn("repro: could not capture all of this run's context (%s); recording the rest",
              exc)
        capture = pending.partial()
    if params:
        _capture.add_arguments(capture, params, arguments or {})
    all_tags = {**capture.tags, **user_tags}

    run = None
    if reason is None:
        try:
            with _tracking.bounded_requests(), _inside():
                if target != current:
                    mlflow.set_tracking_uri(target)  # the server is back
                exp_id = experiment_id
                if experiment is not None:
                    exp_id = _experiment_id(MlflowClient(), experiment)
                run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=all_tags,
                                       **kwargs)
        except Exception as exc:
            if not _tracking.is_unavailable(exc):
                raise
            reason = _tracking.describe(exc)
    if run is None:
        run = _start_spooled(target, reason or "unavailable", experiment, experiment_id,
                             run_name, all_tags, kwargs)
    _list_run(run, spooled=_spool.is_spool_uri(mlflow.get_tracking_uri()))
    uploader = _upload.store_artifacts(run, mlflow.get_tracking_uri(), capture.artifacts,
                                       params or {})
    return _run_class()(run, uploader)


def _list_run(run: ActiveRun, *, spooled: bool) -> None:
    """Append the run to ``$REPRO_RUNS_FILE``, where that is set: one JSON line, its run
    and experiment ids and whether it is spooled, so that whoever started this process
    (an Atelier job, say) can link its runs. A file that cannot be written costs a warning,
    never the run."""
    import json
    import os

    path = os.environ.get("REPRO_RUNS_FILE")
    if not path:
        return
    line = json.dumps({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                       "spooled": spooled})
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as exc:
        warn("repro: could not list run %s in REPRO_RUNS_FILE %s (%s)", run.info.run_id, path, exc)


def _start_spooled(
    target: str,
    reason: str,
    experiment: str | None,
    experiment_id: str | None,
    run_name: str | None,
    tags: dict[str, str],
    kwargs: dict[str, Any],
) -> ActiveRun:
    """Create the run in the local spool. MLflow's tracking URI then stays on the spool
    (as ``mlflow.end_run()`` and any later MLflow call in this process need it to) until a
    later :func:`start_run` finds the server again."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from . import _spool
    from ._spool_store import SpoolStore

    current = mlflow.get_tracking_uri()
    if _spool.is_spool_uri(current):
        root, uri = _spool.parse_uri(current)[0], current
    else:
        root = _spool.spool_root()
        uri = _spool.make_uri(root, target)
        mlflow.set_tracking_uri(uri)
    with _inside():
        exp_id = experiment_id
        if kwargs.get("run_id"):
            # Resuming a run of the server: the spool holds what is logged to it now.
            SpoolStore(uri).adopt_run(str(kwargs["run_id"]), {})
        elif experiment is not None:
            exp_id = _experiment_id(MlflowClient(uri), experiment)
        tags = {**tags, "repro.spooled": "true", "repro.spool.reason": reason[:500]}
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags, **kwargs)
    if reason == "the parent run is spooled":
        return run
    warn(
        "repro: MLflow tracking server %s is unreachable (%s); run %s is recorded in the "
        "local spool %s instead: upload it later with `repro sync`",
        target, reason, run.info.run_id, root,
    )
    return run
