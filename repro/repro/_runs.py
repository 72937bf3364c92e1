"""Reading a recorded run back, from the tracking server or from the local spool.

The rule this module keeps: the CLI sees one kind of object, :class:`RecordedRun`,
whatever holds the run, and every way of not finding it (unknown id, unreachable
server, no server configured, a missing database file) is a :class:`ReproError` whose
message names the thing and the fix.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _record, _spool, _tracking
from ._errors import ReproError
from ._record import ARTIFACT_DIR

_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")


@dataclass
class RecordedRun:
    """A run as the CLI shows, compares and re-runs it."""

    run_id: str
    where: str
    name: str | None
    status: str
    start_time: int | None
    end_time: int | None
    experiment: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    #: "server" or "spool"
    source: str
    spool_note: str = ""
    _artifacts: dict[str, bytes | None] = field(default_factory=dict, repr=False)
    _fetch: Any = field(default=None, repr=False)
    _listing: Any = field(default=None, repr=False)
    #: ``repro/record.json``'s files, unpacked once (None: not fetched yet; False: none)
    _bundled: Any = field(default=None, repr=False)

    def artifact(self, path: str) -> bytes | None:
        """Content of a recorded file (e.g. ``repro/packages.txt``), None if the run has
        none: read from ``repro/record.json`` where the run has one, else from the
        artifact of that name (runs recorded before the bundle, files of the user's)."""
        folder, _, name = path.rpartition("/")
        if folder == ARTIFACT_DIR and name not in _record.SEPARATE:
            bundled = self._bundle()
            if bundled is not None:
                return bundled.get(name)
        if path not in self._artifacts:
            self._artifacts[path] = self._fetch(path) if self._fetch else None
        return self._artifacts[path]

    def _bundle(self) -> dict[str, bytes] | None:
        if self._bundled is None:
            raw = self._fetch(f"{ARTIFACT_DIR}/{_record.BUNDLE}") if self._fetch else None
            self._bundled = _record.unpack(raw) if raw is not None else False
        return None if self._bundled is False else self._bundled

    def recorded_files(self) -> list[str]:
        """Names of the files repro recorded for this run (``packages.txt``, ...)."""
        names = set(self._bundle() or {})
        prefix = f"{ARTIFACT_DIR}/"
        names.update(p[len(prefix):] for p in self.artifact_list()
                     if p.startswith(prefix) and p != prefix + _record.BUNDLE)
        return sorted(names)

    def artifact_list(self) -> list[str]:
        return sorted(self._listing()) if self._listing else []

    def environment(self) -> dict[str, Any]:
        """The ``repro/environment.json`` document ({} for runs without one)."""
        raw = self.artifact("repro/environment.json")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


def tracking_uri(explicit: str | None) -> str:
    """The tracking URI for the CLI: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ReproError(
            "no tracking server configured: set MLFLOW_TRACKING_URI or pass --tracking-uri URI"
        )
    return uri


def _check_reachable(uri: str) -> None:
    reason = _tracking.probe(uri)
    if reason is not None:
        raise ReproError(
            f"tracking server {uri} is unreachable ({reason}); start it, or point "
            "MLFLOW_TRACKING_URI / --tracking-uri at a running one"
        )
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if not os.path.exists(path):
            raise ReproError(
                f"no MLflow database at {path} (from {uri}); check MLFLOW_TRACKING_URI / "
                "--tracking-uri"
            )


def load(run_id: str, *, uri: str | None = None) -> RecordedRun:
    """Find a run: first in this machine's spool (unless uploaded), then on the server."""
    if not _RUN_ID.match(run_id):
        raise ReproError(f"{run_id!r} is not a run id (32 hex characters, e.g. from `repro show`)")
    spooled = _spool.find_run(run_id)
    if spooled is not None:
        synced = _spool.read_synced(spooled)
        if synced is None:
            return _from_spool(spooled)
        target = uri or synced.get("tracking_uri")
        try:
            return _from_server(synced["run_id"], tracking_uri(target))
        except ReproError:
            recorded = _from_spool(spooled)
            recorded.spool_note = (
                f"uploaded as run {synced['run_id']} to {synced.get('tracking_uri')}, which is "
                "not reachable now; showing the local copy"
            )
            return recorded
    return _from_server(run_id, tracking_uri(uri))


def _from_spool(run: _spool.SpooledRun) -> RecordedRun:
    latest = run.latest_metrics()

    def fetch(path: str) -> bytes | None:
        target = (run.artifact_dir / path).resolve()
        if run.artifact_dir.resolve() not in target.parents:
            return None
        try:
            return target.read_bytes()
        except OSError:
            return None

    def listing() -> list[str]:
        base = run.artifact_dir
        return [str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()]

    status = run.status
    if status == "RUNNING" and not run.writer_alive():
        status = "RUNNING (writer gone: uploads as KILLED)"
    return RecordedRun(
        run_id=run.run_id,
        where=f"local spool {run.directory}",
        name=run.run_name,
        status=status,
        start_time=run.start_time,
        end_time=run.end_time,
        experiment=run.experiment_name or run.experiment_id,
        tags=dict(run.tags),
        params=dict(run.params),
        metrics={k: v for k, (v, _, _) in latest.items()},
        source="spool",
        spool_note="not uploaded yet: run `repro sync` when the server answers",
        _fetch=fetch,
        _listing=listing,
    )


def _from_server(run_id: str, uri: str) -> RecordedRun:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _check_reachable(uri)
    client = MlflowClient(uri)
    try:
        with _tracking.bounded_requests(retries=1, timeout=30):
            run = client.get_run(run_id)
            try:
                experiment = client.get_experiment(run.info.experiment_id).name
            except MlflowException:
                experiment = run.info.experiment_id
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            raise ReproError(
                f"run {run_id} not found on {uri}; check the id (the end of the run's URL) "
                "or pass --tracking-uri for the server that has it"
            ) from None
        reason = _tracking.describe(exc)
        raise ReproError(f"{uri} could not return run {run_id}: {reason}") from None
    except Exception as exc:
        if _tracking.is_unavailable(exc):
            raise ReproError(
                f"tracking server {uri} failed ({_tracking.describe(exc)}); try again or check "
                "the server"
            ) from None
        raise

    def fetch(path: str) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="repro-") as tmp:
            try:
                with _tracking.bounded_requests(retries=1, timeout=60):
                    local = client.download_artifacts(run_id, path, tmp)
                return Path(local).read_bytes()
            except (MlflowException, OSError):
                return None
            except Exception as exc:
                if _tracking.is_unavailable(exc):
                    return None
                raise

    def listing() -> list[str]:
        out: list[str] = []

        def walk(path: str | None) -> None:
            for info in client.list_artifacts(run_id, path):
                if info.is_dir:
                    walk(info.path)
                else:
                    out.append(info.path)

        try:
            with _tracking.bounded_requests(retries=1, timeout=30):
                walk(None)
        except Exception:  # a listing is a nicety; show the run anyway
            return out
        return out

    return RecordedRun(
        run_id=run.info.run_id,
        where=uri,
        name=run.info.run_name,
        status=run.info.status,
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        experiment=f"{experiment} (id {run.info.experiment_id})",
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        source="server",
        _fetch=fetch,
        _listing=listing,
    )

