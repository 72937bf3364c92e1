"""``repro.start_run``: MLflow's ``start_run`` plus the context that makes a run repeatable.

The rule this module keeps: recording must never cost the user their run, and should
cost them as little time as possible.

- Every tag is known when the run is created: the git scan runs (in child processes)
  while MLflow is imported and the server probed, and a process that starts run after
  run reuses its last scan while inotify vouches nothing changed (``_watch``). The
  ``repro/`` artifacts are written at once to a local artifact store; for a remote one
  they are uploaded by a thread while the user's code runs, and leaving the ``with``
  block ends the run, then waits for it (after a plain ``mlflow.end_run()`` the
  interpreter waits for it at exit: it is not a daemon thread).
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
import os
import sys
from collections.abc import Mapping
from types import SimpleNamespace

from ._errors import ReproError

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

# Where the program was started, as far as importing repro can tell: a framework may
# change directory before the run starts (Hydra's `chdir=True`), and `repro rerun` must
# start the command where the user did. MLflow imports repro's run context provider when
# it is imported itself, so this is usually taken at the top of the script.
try:
    LAUNCH_CWD: str | None = os.getcwd()
except OSError:  # started in a deleted directory
    LAUNCH_CWD = None

#: Variables naming this process's rank in one distributed job, first found wins: torchrun,
#: Accelerate, DeepSpeed and Lightning set RANK; OpenMPI's mpirun sets
#: OMPI_COMM_WORLD_RANK; PMI/PMIx launchers set PMI_RANK/PMIX_RANK.
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
#: Set when processes meet to form one job (torch's rendezvous): with these, Slurm's task
#: number is a rank; without them, ``srun -n N`` tasks are N independent runs.
_JOB_VARIABLES = ("MASTER_ADDR", "WORLD_SIZE")


def _warn(message: str, *args: object) -> None:
    """One warning line on the "repro" logger (stderr when logging is not configured)."""
    import logging

    logging.getLogger("repro").warning(message, *args)


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


def distributed_rank(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's global rank in a distributed job, or None when not distributed.

    ``RANK`` (torchrun, Accelerate, DeepSpeed), then the MPI variables, then Slurm's
    ``SLURM_PROCID`` and ``LOCAL_RANK`` *only* when the processes form one job
    (``MASTER_ADDR`` or ``WORLD_SIZE`` set, or ``torch.distributed`` initialised): the
    tasks of a plain ``srun -n 4 python train.py`` are independent runs and each records
    its own. Under Slurm, PMI variables (which srun's MPI plugin sets for any task) count
    only once the program imported ``mpi4py``. Then Ray Train's context when the program
    already imported ``ray.train`` (never imports it).

    >>> distributed_rank({"SLURM_PROCID": "3"}), distributed_rank({"SLURM_PROCID": "3",
    ...     "MASTER_ADDR": "node1"}), distributed_rank({"RANK": "2"})
    (None, 3, 2)
    """
    env = os.environ if environ is None else environ
    value = _launcher_value(env, RANK_VARIABLES, signed=True)
    if value is not None:
        return int(value)
    one_job = any(env.get(v) for v in _JOB_VARIABLES) or _torch_distributed()
    if one_job:
        value = _launcher_value(env, ("SLURM_PROCID", "LOCAL_RANK"))
        if value is not None:
            return int(value)
    return _ray_train("get_world_rank")


def _launcher_value(env: Mapping[str, str], names: tuple[str, ...], *,
                    signed: bool = False) -> str | None:
    """The first of ``names`` that holds a whole number. Under Slurm, PMI variables (which
    srun's MPI plugin sets for any task) count only once the program imported ``mpi4py``.

    >>> _launcher_value({"SLURM_PROCID": "1", "PMI_RANK": "1"}, ("PMI_RANK",))
    >>> _launcher_value({"PMI_RANK": "1"}, ("PMI_RANK",))
    '1'
    """
    slurm = "SLURM_PROCID" in env
    for name in names:
        if slurm and name.startswith("PMI") and "mpi4py" not in sys.modules:
            continue
        value = env.get(name, "").strip()
        if (value.lstrip("-") if signed else value).isdigit():
            return value
    return None


def _ray_train(method: str) -> int | None:
    """Ray Train's ``get_context().METHOD()`` when the program already imported
    ``ray.train`` (never imports it) and runs in a Ray Train worker, else None."""
    if "ray.train" not in sys.modules:
        return None
    try:
        value = getattr(sys.modules["ray.train"].get_context(), method)()
    except Exception:  # not inside a Ray Train worker
        return None
    return int(value) if value is not None else None


def _torch_distributed() -> bool:
    """Whether the program already initialised ``torch.distributed`` (never imports it)."""
    dist = sys.modules.get("torch.distributed")
    try:
        return bool(dist is not None and dist.is_available() and dist.is_initialized())
    except Exception:
        return False


def distributed_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What rank 0 (or an independent Slurm task) records about the job it belongs to.

    >>> distributed_tags({"SLURM_JOB_ID": "77", "SLURM_PROCID": "2", "SLURM_NTASKS": "4"})
    {'repro.slurm.job': '77', 'repro.slurm.task': '2 of 4'}
    """
    env = os.environ if environ is None else environ
    tags = {}
    size = _world_size(env)
    if size:
        tags["repro.distributed.world_size"] = size
    if env.get("SLURM_JOB_ID"):
        tags["repro.slurm.job"] = env["SLURM_JOB_ID"]
        if env.get("SLURM_PROCID"):
            total = env.get("SLURM_NTASKS")
            tags["repro.slurm.task"] = env["SLURM_PROCID"] + (f" of {total}" if total else "")
    return tags


def _world_size(env: Mapping[str, str]) -> str | None:
    """How many processes the job has, as its launcher says (the rank's counterpart).

    >>> _world_size({"OMPI_COMM_WORLD_SIZE": "4"}), _world_size({"SLURM_PROCID": "0",
    ...     "PMI_SIZE": "2"})
    ('4', None)
    """
    value = _launcher_value(env, ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))
    if value is not None:
        return value
    size = _ray_train("get_world_size")
    return str(size) if size is not None else None


class NoOpRun:
    """What :func:`start_run` returns on a distributed rank other than 0.

    Only rank 0 records a run. The stand-in works as a context manager (``with`` gives
    the stand-in itself back and ends nothing), is falsy, and has ``info.run_id`` None
    and empty ``data``, so code can test ``if run:`` before logging. It starts no MLflow
    run: an ``mlflow.log_metric`` call on such a rank starts a run of MLflow's own, as
    it would without repro, so guard logging with the rank.

    >>> with NoOpRun(rank=1) as run:
    ...     print(run.info.run_id, bool(run), run.rank)
    None False 1
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.info = SimpleNamespace(run_id=None, run_name=None, experiment_id=None,
                                    status="SKIPPED", artifact_uri=None)
        self.data = SimpleNamespace(metrics={}, params={}, tags={})

    def __enter__(self) -> NoOpRun:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NoOpRun(rank={self.rank})"


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

        _warn("repro: could not capture this run's context (%s); starting a plain MLflow run",
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

    from . import _capture, _spool, _tracking

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
        _warn("repro: could not capture all of this run's context (%s); recording the rest",
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
    uploader = _store_artifacts(run, mlflow.get_tracking_uri(), capture.artifacts,
                                params or {})
    return _run_class()(run, uploader)


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
            _spool.build_store(uri).adopt_run(str(kwargs["run_id"]), {})
        elif experiment is not None:
            exp_id = _experiment_id(MlflowClient(uri), experiment)
        tags = {**tags, "repro.spooled": "true", "repro.spool.reason": reason[:500]}
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags, **kwargs)
    if reason == "the parent run is spooled":
        return run
    _warn(
        "repro: MLflow tracking server %s is unreachable (%s); run %s is recorded in the "
        "local spool %s instead: upload it later with `repro sync`",
        target, reason, run.info.run_id, root,
    )
    return run


def _log_params(run_id: str, uri: str, params: dict[str, str]) -> None:
    """Log the program's parsed arguments (``args.*``, ``config.*``) as parameters."""
    if not params:
        return
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from . import _tracking

    client = MlflowClient(uri)
    items = [Param(k, v) for k, v in params.items()]
    try:
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i:i + 100])
    except Exception as exc:  # the run itself exists; do not fail the user's script
        _warn("repro: could not log the arguments of run %s as parameters (%s)", run_id,
              _tracking.describe(exc))


def _store_artifacts(run: ActiveRun, uri: str, files: dict[str, bytes],
                     params: dict[str, str] | None = None) -> threading.Thread | None:
    """Store the ``repro/`` artifacts and log the argument parameters. A local store
    gets them at once; a remote one gets them uploaded (in parallel) by a thread that
    returns at once and that leaving ``with`` waits for. A failure is a warning, not an
    error."""
    params = params or {}
    if not files and not params:
        return None
    from urllib.parse import unquote, urlsplit

    from . import _record

    files = _record.pack(files)  # two uploads at most: each one is a server request

    run_id, artifact_uri = run.info.run_id, run.info.artifact_uri
    parts = urlsplit(artifact_uri)
    if parts.scheme in ("", "file"):
        try:
            folder = os.path.join(unquote(parts.path), _record.ARTIFACT_DIR)
            os.makedirs(folder, exist_ok=True)
            for name, content in files.items():
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(content)
        except OSError as exc:
            _warn("repro: could not write the repro/ artifacts of run %s (%s)", run_id, exc)
        if params:
            _log_params(run_id, uri, params)
        return None
    import threading

    thread = threading.Thread(target=_upload, args=(run_id, artifact_uri, uri, files, params),
                              name=f"repro-upload-{run_id[:8]}", daemon=False)
    thread.start()
    return thread


def _upload(run_id: str, artifact_uri: str, uri: str, files: dict[str, bytes],
            params: dict[str, str] | None = None) -> None:
    _log_params(run_id, uri, params or {})
    if not files:
        return
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from . import _record, _tracking

    try:
        repo = get_artifact_repository(artifact_uri, tracking_uri=uri)
        with tempfile.TemporaryDirectory(prefix="repro-") as tmp:
            paths = []
            for name, content in files.items():
                path = os.path.join(tmp, name)
                with open(path, "wb") as f:
                    f.write(content)
                paths.append(path)
            with ThreadPoolExecutor(max_workers=len(paths)) as pool:
                for future in [pool.submit(repo.log_artifact, p, _record.ARTIFACT_DIR)
                               for p in paths]:
                    future.result()
    except Exception as exc:  # the run itself exists; do not fail the user's script
        _warn("repro: could not upload the repro/ artifacts of run %s (%s); its tags are "
              "recorded", run_id, _tracking.describe(exc))
