"""Bounding MLflow's retries for repro's own calls must not change them for the rest of
the process (MLflow's real setting objects, real threads)."""

from __future__ import annotations

import os
import threading

from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)

from repro import _tracking


def test_bounds_apply_to_the_calling_thread_only(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "90")
    default = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    inside = threading.Event()
    seen: dict[str, object] = {}
    leave = threading.Event()

    def repro_call() -> None:
        with _tracking.bounded_requests(retries=0, timeout=3):
            seen["bounded"] = (MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(),
                               MLFLOW_HTTP_REQUEST_TIMEOUT.get())
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=repro_call)
    t.start()
    assert inside.wait(10)
    # Meanwhile, in another thread logging to the server:
    seen["other"] = (MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_TIMEOUT.get())
    seen["environ"] = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    leave.set()
    t.join()
    assert seen["bounded"] == (0, 3)
    assert seen["other"] == (default, 90)
    assert seen["environ"] is None
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 90
