"""An MLflow tracking store that writes runs into the local spool (see ``_spool``).

The rule this module keeps: behave like a real MLflow store for what a training script
does with a run (create, log metrics/params/tags/inputs, artifacts, log a model, read it
back, end it), validate like the server so a run that spools also syncs, and refuse the
rest (traces, evaluation datasets, registry) with a message that says what to do.

Logged models (MLflow 3's ``log_model``) live in ``<spool>/models/<model_id>/``: an
``events.jsonl`` like a run's and an ``artifacts/`` folder; ``repro sync`` recreates them
on the server under the uploaded run.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from mlflow.entities import (
    Dataset,
    DatasetInput,
    Experiment,
    ExperimentTag,
    InputTag,
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunData,
    RunInfo,
    RunInputs,
    RunOutputs,
    RunTag,
    ViewType,
)
from mlflow.entities.logged_model import LoggedModel
from mlflow.entities.logged_model_output import LoggedModelOutput
from mlflow.entities.logged_model_status import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.utils.validation import _validate_batch_log_data, _validate_batch_log_limits

from . import _spool

_DEFAULT_EXPERIMENT = "0"
#: Run folder -> descriptor holding its writer lock while the run is active (one table per
#: process: MLflow may build more than one store for the same spool).
_WRITER_LOCKS: dict[str, int] = {}


def _unsupported(what: str) -> MlflowException:
    return MlflowException(
        f"{what} is not recorded while repro spools this run (the tracking server was "
        "unreachable when it started). Run again once `repro sync` succeeds, or log it "
        "as a plain artifact meanwhile.",
        error_code=INVALID_PARAMETER_VALUE,
    )


def _or_remote(method: Any) -> Any:
    """Run ``method`` on a spooled run; a run the spool does not hold is sent on to the
    tracking server, unchanged. Switching MLflow to the spool is process-wide (MLflow has
    one tracking URI), so without this a parent run or another thread's run that lives
    on the server would fail with "not found" as soon as one run is spooled."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: SpoolStore, *args: Any, **kwargs: Any) -> Any:
        run_id = kwargs["run_id"] if "run_id" in kwargs else (args[0] if args else None)
        if run_id is not None and self._spooled(str(run_id)) is None:
            remote = self._remote()
            if remote is not None:
                return getattr(remote, name)(*args, **kwargs)
        return method(self, *args, **kwargs)

    return wrapper


def spool_experiment_id(name: str) -> str:
    """Stable spool-side id for an experiment created while spooling (mapped by name on
    sync)."""
    return "spool-" + hashlib.sha1(name.encode()).hexdigest()[:16]


class SpoolStore(AbstractStore):
    """Tracking store for ``repro-spool:///<folder>?target=<tracking uri>``."""

    def __init__(self, store_uri: str, artifact_uri: str | None = None) -> None:
        super().__init__()
        self.root, self.target = _spool.parse_uri(store_uri)
        _spool.runs_dir(self.root).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._runs: dict[str, _spool.SpooledRun] = {}
        self._lock = threading.RLock()
        self._remote_store: AbstractStore | None = None


    # -- experiments -------------------------------------------------------------------
    def _experiments(self) -> dict[str, Experiment]:
        exps = {_DEFAULT_EXPERIMENT: self._experiment(_DEFAULT_EXPERIMENT, "Default", {})}
        for event in _spool.read_events(_spool.experiments_file(self.root)):
            exp_id = str(event.get("id"))
            exps[exp_id] = self._experiment(exp_id, event.get("name", exp_id), event.get("tags"))
        return exps

    def _experiment(self, exp_id: str, name: str, tags: dict[str, str] | None) -> Experiment:
        return Experiment(
            experiment_id=exp_id,
            name=name,
            artifact_location=(self.root / "experiments" / exp_id).as_uri(),
            lifecycle_stage=LifecycleStage.ACTIVE,
            tags=[ExperimentTag(k, v) for k, v in (tags or {}).items()],
        )

    def search_experiments(self, view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                           filter_string=None, order_by=None, page_token=None):
        from mlflow.utils.search_utils import SearchExperimentsUtils

        exps = list(self._experiments().values())
        exps = SearchExperimentsUtils.filter(exps, filter_string)
        exps = SearchExperimentsUtils.sort(exps, order_by or ["creation_time DESC"])
        return PagedList(exps[:max_results], None)

    def create_experiment(self, name, artifact_location=None, tags=None):
        with self._lock:
            if self.get_experiment_by_name(name) is not None:
                raise MlflowException(
                    f"Experiment '{name}' already exists.", error_code=RESOURCE_ALREADY_EXISTS
                )
            exp_id = spool_experiment_id(name)
            _spool.append_event(
                _spool.experiments_file(self.root),
                {"id": exp_id, "name": name, "tags": {t.key: t.value for t in tags or []}},
            )
            return exp_id

    def get_experiment(self, experiment_id):
        exp_id = str(experiment_id)
        exps = self._experiments()
        if exp_id in exps:
            return exps[exp_id]
        # An experiment of the tracking server (chosen with mlflow.set_experiment before it
        # became unreachable): runs are recorded under its id and synced there.
        return self._experiment(exp_id, f"experiment {exp_id}", {})

    def get_experiment_by_name(self, experiment_name):
        for exp in self._experiments().values():
            if exp.name == experiment_name:
                return exp
        return None

    def delete_experiment(self, experiment_id):
        raise _unsupported("Deleting an experiment")

    def restore_experiment(self, experiment_id):
        raise _unsupported("Restoring an experiment")

    def rename_experiment(self, experiment_id, new_name):
        raise _unsupported("Renaming an experiment")

    def set_experiment_tag(self, experiment_id, tag):
        raise _unsupported("Setting an experiment tag")

    # -- runs --------------------------------------------------------------------------
    def _events(self, run_id: str) -> Path:
        return _spool.runs_dir(self.root) / run_id / "events.jsonl"

    def _spooled(self, run_id: str) -> _spool.SpooledRun | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                run = _spool.find_run(run_id, self.root)
                if run is not None:
                    self._runs[run_id] = run
            return run

    def _state(self, run_id: str) -> _spool.SpooledRun:
        run = self._spooled(run_id)
        if run is None:
            raise MlflowException(
                f"Run '{run_id}' not found in the repro spool {self.root}.",
                error_code=RESOURCE_DOES_NOT_EXIST,
            )
        return run

    def _remote(self) -> AbstractStore | None:
        """The store of the tracking server this spool stands in for (built on first use;
        building it sends no request)."""
        if self._remote_store is None and self.target and not _spool.is_spool_uri(self.target):
            # ref: mlflow/tracking/_tracking_service/utils.py, the store registry that
            # MlflowClient itself uses.
            from mlflow.tracking._tracking_service.utils import _get_store

            self._remote_store = _get_store(self.target)
        return self._remote_store

    def _writer(self, directory: Path) -> dict[str, Any]:
        """This process's identity, holding the run's writer lock (released when the run
        ends, or by the kernel when the process dies)."""
        identity = _spool.process_identity()
        fd = _spool.try_lock(directory / "writer.lock")
        if fd is not None:
            _WRITER_LOCKS[str(directory)] = fd
            identity["lock"] = True
        return identity

    def adopt_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Hold a run of the tracking server that is resumed (``start_run(run_id=...)``)
        while the server cannot be reached: what is logged to it here is added to that
        run by ``repro sync``."""
        with self._lock:
            if self._spooled(run_id) is not None:
                return
            directory = _spool.runs_dir(self.root) / run_id
            (directory / "artifacts").mkdir(parents=True, exist_ok=True, mode=0o700)
            run = _spool.SpooledRun(run_id=run_id, directory=directory)
            self._runs[run_id] = run
            self._write(run, {
                "op": "create", "run_id": run_id, "experiment_id": _DEFAULT_EXPERIMENT,
                "user_id": None, "start_time": _spool.now_ms(), "run_name": None,
                "tags": dict(tags), "target": self.target, "resumes": True,
                "writer": self._writer(directory),
            })

    def _write(self, run: _spool.SpooledRun, event: dict[str, Any]) -> None:
        with self._lock:
            _spool.append_event(self._events(run.run_id), event)
            run.apply(event)

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        run_id = uuid.uuid4().hex
        directory = _spool.runs_dir(self.root) / run_id
        (directory / "artifacts").mkdir(parents=True, mode=0o700)
        tag_dict = {t.key: t.value for t in tags or []}
        _validate_batch_log_data([], [], [RunTag(k, v) for k, v in tag_dict.items()])
        if run_name:
            tag_dict["mlflow.runName"] = run_name
        else:
            run_name = tag_dict.get("mlflow.runName") or run_id[:8]
            tag_dict["mlflow.runName"] = run_name
        exp = self.get_experiment(experiment_id)
        run = _spool.SpooledRun(run_id=run_id, directory=directory)
        with self._lock:
            self._runs[run_id] = run
            self._write(
                run,
                {
                    "op": "create",
                    "run_id": run_id,
                    "experiment_id": str(experiment_id),
                    "experiment_name": exp.name if str(experiment_id) in self._experiments()
                    else None,
                    "user_id": user_id,
                    "start_time": start_time,
                    "run_name": run_name,
                    "tags": tag_dict,
                    "target": self.target,
                    "writer": self._writer(directory),
                },
            )
        return self._to_run(run)

    def _to_run(self, run: _spool.SpooledRun) -> Run:
        info = RunInfo(
            run_id=run.run_id,
            experiment_id=run.experiment_id,
            user_id=run.user_id,
            status=run.status,
            start_time=run.start_time,
            end_time=run.end_time,
            lifecycle_stage=run.lifecycle_stage,
            artifact_uri=run.artifact_dir.as_uri(),
            run_name=run.run_name,
        )
        metrics = [
            Metric(k, v, ts, step) for k, (v, ts, step) in run.latest_metrics().items()
        ]
        data = RunData(
            metrics=metrics,
            params=[Param(k, v) for k, v in run.params.items()],
            tags=[RunTag(k, v) for k, v in run.tags.items()],
        )
        inputs = RunInputs(dataset_inputs=[_dataset_input(d) for d in run.datasets])
        outputs = RunOutputs([LoggedModelOutput(m, s) for m, s in run.model_outputs])
        return Run(info, data, inputs, outputs)

    @_or_remote
    def get_run(self, run_id):
        return self._to_run(self._state(run_id))

    @_or_remote
    def update_run_info(self, run_id, run_status, end_time, run_name):
        from mlflow.entities import RunStatus

        run = self._state(run_id)
        status = run_status if isinstance(run_status, str) else RunStatus.to_string(run_status)
        self._write(
            run, {"op": "update", "status": status, "end_time": end_time, "run_name": run_name}
        )
        if status in ("FINISHED", "FAILED", "KILLED"):
            fd = _WRITER_LOCKS.pop(str(run.directory), None)
            if fd is not None:
                os.close(fd)
        return self._to_run(run).info

    @_or_remote
    def delete_run(self, run_id):
        self._write(self._state(run_id), {"op": "lifecycle", "stage": LifecycleStage.DELETED})

    @_or_remote
    def restore_run(self, run_id):
        self._write(self._state(run_id), {"op": "lifecycle", "stage": LifecycleStage.ACTIVE})

    @_or_remote
    def log_batch(self, run_id, metrics, params, tags):
        _validate_batch_log_data(metrics, params, tags)
        _validate_batch_log_limits(metrics, params, tags)
        run = self._state(run_id)
        with self._lock:
            for p in params:
                old = run.params.get(p.key)
                if old is not None and old != str(p.value):
                    # The server refuses this too; refusing now keeps the run syncable.
                    raise MlflowException(
                        f"Changing param values is not allowed. Param with key='{p.key}' was "
                        f"already logged with value='{old}' for run ID='{run_id}'. Attempted "
                        f"logging new value '{p.value}'.",
                        error_code=INVALID_PARAMETER_VALUE,
                    )
            self._write(
                run,
                {
                    "op": "log",
                    "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                    "params": [[p.key, str(p.value)] for p in params],
                    "tags": [[t.key, str(t.value)] for t in tags],
                },
            )

    @_or_remote
    def delete_tag(self, run_id, key):
        run = self._state(run_id)
        if key not in run.tags:
            raise MlflowException(
                f"No tag with name: {key} in run with id {run_id}",
                error_code=RESOURCE_DOES_NOT_EXIST,
            )
        self._write(run, {"op": "delete_tag", "key": key})

    @_or_remote
    def get_metric_history(self, run_id, metric_key, max_results=None, page_token=None):
        run = self._state(run_id)
        history = [
            Metric(k, v, ts, step, run_id=run_id)
            for k, v, ts, step in run.metrics
            if k == metric_key
        ]
        return PagedList(history[:max_results] if max_results else history, None)

    def _search_runs(self, experiment_ids, filter_string, run_view_type, max_results,
                     order_by, page_token):
        from mlflow.utils.search_utils import SearchUtils

        wanted = {str(e) for e in experiment_ids}
        runs = []
        for spooled in _spool.list_runs(self.root):
            if spooled.experiment_id not in wanted:
                continue
            if not LifecycleStage.matches_view_type(run_view_type, spooled.lifecycle_stage):
                continue
            runs.append(self._to_run(spooled))
        runs = SearchUtils.filter(runs, filter_string)
        runs = SearchUtils.sort(runs, order_by)
        return SearchUtils.paginate(runs, page_token, max_results)

    @_or_remote
    def log_inputs(self, run_id, datasets=None, models=None):
        run = self._state(run_id)
        if models:
            raise _unsupported("Logging a model input")
        if datasets:
            self._write(run, {"op": "inputs", "datasets": [_dataset_dict(d) for d in datasets]})

    @_or_remote
    def log_outputs(self, run_id, models):
        run = self._state(run_id)
        self._write(run, {"op": "outputs", "models": [[m.model_id, m.step] for m in models]})

    @_or_remote
    def record_logged_model(self, run_id, mlflow_model):
        # What FileStore does: the model's metadata appended to a JSON list in a tag.
        import json

        run = self._state(run_id)
        key = "mlflow.log-model.history"
        history = json.loads(run.tags.get(key, "[]")) + [mlflow_model.get_tags_dict()]
        value = json.dumps(history)
        if len(value) <= 8000:
            self._write(run, {"op": "log", "tags": [[key, value]]})

    # -- logged models ---------------------------------------------------------------
    def _model_dir(self, model_id: str) -> Path:
        if not model_id or "/" in model_id or model_id.startswith("."):
            raise MlflowException(f"Invalid model id {model_id!r}",
                                  error_code=INVALID_PARAMETER_VALUE)
        return self.root / "models" / model_id

    def create_logged_model(self, experiment_id, name=None, source_run_id=None, tags=None,
                            params=None, model_type=None):
        model_id = f"m-{uuid.uuid4().hex}"
        directory = self._model_dir(model_id)
        (directory / "artifacts").mkdir(parents=True, mode=0o700)
        now = _spool.now_ms()
        _spool.append_event(
            directory / "events.jsonl",
            {
                "op": "create",
                "experiment_id": str(experiment_id),
                "name": name or model_id,
                "source_run_id": source_run_id,
                "tags": {t.key: t.value for t in tags or []},
                "params": {p.key: p.value for p in params or []},
                "model_type": model_type,
                "creation": now,
                "status": str(LoggedModelStatus.PENDING),
            },
        )
        return self.get_logged_model(model_id)

    def get_logged_model(self, model_id, allow_deleted=False):
        directory = self._model_dir(model_id)
        model = load_model(directory)
        if model is None:
            raise MlflowException(f"Logged model {model_id} not found in the repro spool.",
                                  error_code=RESOURCE_DOES_NOT_EXIST)
        return LoggedModel(
            experiment_id=model["experiment_id"],
            model_id=model_id,
            name=model["name"],
            artifact_location=(directory / "artifacts").as_uri(),
            creation_timestamp=model["creation"],
            last_updated_timestamp=model["updated"],
            model_type=model.get("model_type"),
            source_run_id=model.get("source_run_id"),
            status=LoggedModelStatus(model["status"]),
            tags=model["tags"],
            params=model["params"],
        )

    def _model_event(self, model_id: str, event: dict[str, Any]) -> None:
        self.get_logged_model(model_id)  # exists?
        _spool.append_event(self._model_dir(model_id) / "events.jsonl", event)

    def finalize_logged_model(self, model_id, status):
        self._model_event(model_id, {"op": "status", "status": str(status)})
        return self.get_logged_model(model_id)

    def set_logged_model_tags(self, model_id, tags):
        self._model_event(model_id, {"op": "tags", "tags": {t.key: t.value for t in tags}})

    def delete_logged_model_tag(self, model_id, key):
        self._model_event(model_id, {"op": "delete_tag", "key": key})

    def search_logged_models(self, experiment_ids, filter_string=None, datasets=None,
                             max_results=None, order_by=None, page_token=None):
        wanted = {str(e) for e in experiment_ids}
        models = []
        for directory in sorted((self.root / "models").glob("m-*")):
            model = load_model(directory)
            if model is not None and model["experiment_id"] in wanted:
                models.append(self.get_logged_model(directory.name))
        return PagedList(models[:max_results] if max_results else models, None)

    def start_trace(self, trace_info):
        raise _unsupported("A trace")


def load_model(directory: Path) -> dict[str, Any] | None:
    """A spooled logged model rebuilt from its events, or None."""
    events = _spool.read_events(directory / "events.jsonl")
    if not events or events[0].get("op") != "create":
        return None
    model = dict(events[0])
    model["tags"] = dict(model.get("tags") or {})
    model["updated"] = model["creation"]
    for event in events[1:]:
        model["updated"] = event.get("time", model["updated"])
        if event.get("op") == "status":
            model["status"] = event["status"]
        elif event.get("op") == "tags":
            model["tags"].update(event.get("tags") or {})
        elif event.get("op") == "delete_tag":
            model["tags"].pop(event.get("key"), None)
    return model


def _dataset_dict(d: DatasetInput) -> dict[str, Any]:
    ds = d.dataset
    return {
        "name": ds.name,
        "digest": ds.digest,
        "source_type": ds.source_type,
        "source": ds.source,
        "schema": ds.schema,
        "profile": ds.profile,
        "tags": {t.key: t.value for t in d.tags},
    }


def _dataset_input(d: dict[str, Any]) -> DatasetInput:
    ds = Dataset(
        name=d["name"],
        digest=d["digest"],
        source_type=d["source_type"],
        source=d["source"],
        schema=d.get("schema"),
        profile=d.get("profile"),
    )
    return DatasetInput(ds, [InputTag(k, v) for k, v in (d.get("tags") or {}).items()])
