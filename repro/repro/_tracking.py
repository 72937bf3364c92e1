"""Talking to the tracking server without hanging: probe, bounded retries, error triage.

The rule this module keeps: find out in seconds, not minutes, whether the server can
take a run. MLflow retries a failing request for minutes by default, which is right for
logging a metric in the middle of training and wrong for deciding, at start, whether to
spool; so the bounds here apply only around repro's own calls, in the thread making
them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

#: Seconds to wait for a TCP connection to the server (``REPRO_CONNECT_TIMEOUT``).
CONNECT_TIMEOUT = 2.0
#: Seconds one HTTP request may take while repro starts a run (``REPRO_REQUEST_TIMEOUT``).
REQUEST_TIMEOUT = 10

# MLflow error codes that mean "your request is wrong", not "the server is unavailable":
# these propagate to the caller as MLflow would raise them.
_CALLER_ERRORS = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
     "BAD_REQUEST", "INVALID_STATE"}
)
_env_lock = threading.Lock()


def _float_env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def probe(uri: str) -> str | None:
    """None if a TCP connection to an http(s) tracking URI opens within the connect
    timeout, else a short reason. Other URI schemes (sqlite, file, databricks) are not
    probed.

    >>> probe("sqlite:///mlflow.db") is None
    True
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return None
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    timeout = _float_env("REPRO_CONNECT_TIMEOUT", CONNECT_TIMEOUT)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"cannot resolve host {host!r}"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        return exc.strerror or str(exc)


_BOUNDS: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "repro_request_bounds", default=None)
_installed: list[bool] = []


def _install_bounds() -> None:
    """Make MLflow's two request settings answer this context's bounds, if any.

    MLflow reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT``
    through one object each, on every request (ref: mlflow/utils/rest_utils.py,
    ``http_request``). Their ``get`` is wrapped once to return the bound set by
    :func:`bounded_requests` in the *calling* context (a ContextVar: a new thread starts
    without it), and the user's own setting otherwise. ``os.environ`` is never written,
    so other threads keep MLflow's retries while repro bounds its own calls.
    """
    with _env_lock:
        if _installed:
            return
        from mlflow import environment_variables as ev

        for var in (ev.MLFLOW_HTTP_REQUEST_MAX_RETRIES, ev.MLFLOW_HTTP_REQUEST_TIMEOUT):
            original = var.get

            def get(original=original, name=var.name):  # bind per variable
                bounds = _BOUNDS.get()
                if bounds is not None and name in bounds:
                    return bounds[name]
                return original()

            var.get = get
        _installed.append(True)


@contextlib.contextmanager
def bounded_requests(retries: int | None = 0, timeout: float | None = None) -> Iterator[None]:
    """Bound MLflow's HTTP retries and timeout for the calls this thread makes inside
    (``retries=None``: leave MLflow's settings alone). Other threads are not affected."""
    if retries is None:
        yield
        return
    if timeout is None:
        timeout = _float_env("REPRO_REQUEST_TIMEOUT", REQUEST_TIMEOUT)
    _install_bounds()
    token = _BOUNDS.set({
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": int(retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": max(1, int(timeout)),
    })
    try:
        yield
    finally:
        _BOUNDS.reset(token)


def is_unavailable(exc: BaseException) -> bool:
    """Whether an exception from a tracking call means "server unavailable or failing"
    (spool the run) rather than "the call was wrong" (raise it)."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return False
    if isinstance(exc, MlflowException):
        return exc.error_code not in _CALLER_ERRORS
    if isinstance(exc, OSError):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, requests.exceptions.RequestException)


def describe(exc: BaseException) -> str:
    """One short line for an exception from a tracking call."""
    text = " ".join(str(exc).split())
    if "Max retries exceeded" in text or "Failed to establish a new connection" in text:
        return "connection failed"
    code = getattr(exc, "error_code", None)
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return f"{code.lower().replace('_', ' ')} (check MLFLOW_TRACKING_TOKEN or credentials)"
    return text[:160] + ("…" if len(text) > 160 else "")
