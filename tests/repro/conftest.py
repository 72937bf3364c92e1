"""Fixtures for the repro tests: a real MLflow tracking server, real git repositories,
scripts run as real subprocesses.

Conventions:
- ``@pytest.mark.integration`` marks tests that need the session's MLflow server
  (registered here, so ``pytest tests/repro`` works on its own);
- every test gets its own spool folder (``REPRO_SPOOL_DIR``) and experiment name;
- secrets are generated at run time (``secrets.token_hex``), never written in here;
- child Python processes keep their bytecode in a cache folder outside the repository
  (``PYTHONPYCACHEPREFIX``), so they start fast even where ``PYTHONDONTWRITEBYTECODE``
  is set, and leave no ``__pycache__`` in the checkout;
- helpers that are not fixtures live in ``repro_testlib.py``.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Importable as `repro_testlib` whatever pytest's import mode (this folder has no
# __init__.py on purpose: as a package it would be called "repro" and shadow the library).
sys.path.insert(0, str(Path(__file__).parent))

from repro_testlib import Forwarder, child_env, start_mlflow_server, stop_process_group  # noqa: E402

#: Seconds any one repro test may take (pytest-timeout), unless it says otherwise.
TEST_TIMEOUT = 120


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs a real MLflow tracking server (started per session)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real ``mlflow server`` (sqlite backend, proxied artifacts), whose whole
    process group is killed at the end (its uvicorn child would otherwise keep the port)."""
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield uri
    finally:
        stop_process_group(proc)


@pytest.fixture
def client(mlflow_server: str):  # -> MlflowClient
    from mlflow.tracking import MlflowClient

    return MlflowClient(mlflow_server)


@pytest.fixture
def experiment() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def env(mlflow_server: str, spool: Path, experiment: str) -> dict[str, str]:
    """Child environment pointing at the test server, with a private spool."""
    return child_env(
        MLFLOW_TRACKING_URI=mlflow_server, REPRO_SPOOL_DIR=str(spool), TEST_EXPERIMENT=experiment
    )


@pytest.fixture
def forwarder(mlflow_server: str) -> Iterator[Forwarder]:
    fwd = Forwarder(int(mlflow_server.rsplit(":", 1)[1]))
    yield fwd
    fwd.down()
