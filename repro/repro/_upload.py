"""Storing a run's ``repro/`` artifacts and its argument parameters.

The rule this module keeps: storing costs the user's script as little time as possible
and never the run. A local artifact store gets the files at once; a remote one gets them
uploaded in parallel by a thread that ``start_run`` returns at once from and that
leaving the ``with`` block waits for (not a daemon: after a plain ``mlflow.end_run()``
the interpreter waits for it at exit). A failure is a warning, not an error.
"""

from __future__ import annotations

import os

from ._errors import warn

TYPE_CHECKING = False  # typing itself costs more to import than all of this module
if TYPE_CHECKING:
    import threading

    from mlflow import ActiveRun


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
        warn("repro: could not log the arguments of run %s as parameters (%s)", run_id,
              _tracking.describe(exc))


def store_artifacts(run: ActiveRun, uri: str, files: dict[str, bytes],
                     params: dict[str, str] | None = None) -> threading.Thread | None:
    """Store the ``repro/`` artifacts and log the argument parameters. A local store
    gets them at once; a remote one gets them uploaded (in parallel) by a thread that
    returns at once and that leaving ``with`` waits for (returned; None where nothing is
    left running). A failure is a warning, not an error.

    >>> store_artifacts(None, "http://h:5000", {}) is None  # nothing to store
    True
    """
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
            warn("repro: could not write the repro/ artifacts of run %s (%s)", run_id, exc)
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
        warn("repro: could not upload the repro/ artifacts of run %s (%s); its tags are "
              "recorded", run_id, _tracking.describe(exc))
