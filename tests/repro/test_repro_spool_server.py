"""A run spooled while other runs of the same process live on the server: the parent of a
nested run, another thread's run, a resumed run. The real MLflow server, made unreachable
and reachable again through a TCP forwarder; real threads, a real subprocess."""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from repro_testlib import Forwarder, run_id_of, run_py

import repro
from repro import _spool

pytestmark = pytest.mark.integration


@pytest.fixture
def via(forwarder: Forwarder, spool: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process talks to the server through the forwarder; MLflow restored after."""
    forwarder.up()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", forwarder.uri)
    monkeypatch.setenv("REPRO_SPOOL_DIR", str(spool))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    mlflow.set_tracking_uri(forwarder.uri)
    yield forwarder.uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_a_nested_run_spooled_under_a_parent_on_the_server(
    via: str, forwarder: Forwarder, client, spool: Path, experiment: str
) -> None:
    with repro.start_run(experiment) as parent:
        mlflow.log_metric("p", 1.0)
        forwarder.down()
        with repro.start_run(nested=True) as child:
            mlflow.log_metric("c", 1.0)
        forwarder.up()
        mlflow.log_metric("p", 2.0)  # the parent is still on the server
        mlflow.log_param("where", "server")
    remote = client.get_run(parent.info.run_id)
    assert remote.info.status == "FINISHED"
    assert remote.data.metrics["p"] == 2.0 and remote.data.params["where"] == "server"
    spooled = _spool.find_run(child.info.run_id, spool)
    assert spooled is not None, (child.info, list(spool.rglob("*")))
    assert spooled.status == "FINISHED"
    assert spooled.tags["mlflow.parentRunId"] == parent.info.run_id
    result = repro.sync(spool_dir=spool)
    assert result.ok, result
    uploaded = client.get_run(result.uploaded[child.info.run_id])
    assert uploaded.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert uploaded.data.metrics["c"] == 1.0


def test_another_threads_run_on_the_server_keeps_working(
    via: str, forwarder: Forwarder, client, experiment: str
) -> None:
    exp_id = client.create_experiment(experiment)
    started, spooled, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []
    ids: list[str] = []

    def other() -> None:
        try:
            with mlflow.start_run(experiment_id=exp_id) as run:
                ids.append(run.info.run_id)
                started.set()
                spooled.wait(60)
                mlflow.log_metric("other", 5.0)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=other)
    t.start()
    assert started.wait(60)
    forwarder.down()
    with repro.start_run(experiment) as run:
        mlflow.log_metric("mine", 1.0)
    assert mlflow.get_tracking_uri().startswith("repro-spool:")
    forwarder.up()
    spooled.set()
    t.join(60)
    assert not errors, errors
    assert client.get_run(ids[0]).data.metrics["other"] == 5.0
    assert client.get_run(ids[0]).info.status == "FINISHED"
    assert run.info.run_id != ids[0]


def test_resuming_a_server_run_while_the_server_is_down(
    via: str, forwarder: Forwarder, client, spool: Path, experiment: str
) -> None:
    exp_id = client.create_experiment(experiment)
    run_id = client.create_run(exp_id).info.run_id
    client.log_metric(run_id, "loss", 1.0, step=0)
    forwarder.down()
    with repro.start_run(run_id=run_id) as run:
        assert run.info.run_id == run_id
        mlflow.log_metric("loss", 0.5, step=1)
    forwarder.up()
    result = repro.sync(spool_dir=spool)
    assert result.ok and result.uploaded == {run_id: run_id}, result
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5)]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert repro.sync(spool_dir=spool).already == {run_id: run_id}


DELETED_CWD = textwrap.dedent(
    """
    import os, tempfile
    import mlflow, repro

    gone = tempfile.mkdtemp()
    os.chdir(gone)
    os.rmdir(gone)  # capturing the cwd now fails
    with repro.start_run(os.environ["TEST_EXPERIMENT"]) as run:
        print("RUN_ID", run.info.run_id, flush=True)
    """
)


def test_after_a_capture_error_the_run_keeps_its_experiment(
    tmp_path: Path, env: dict[str, str], client, experiment: str
) -> None:
    script = tmp_path / "gone.py"
    script.write_text(DELETED_CWD)
    proc = run_py([str(script)], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert "could not capture" in proc.stderr
    run = client.get_run(run_id_of(proc))
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None and run.info.experiment_id == exp.experiment_id
    assert os.path.exists(tmp_path)
