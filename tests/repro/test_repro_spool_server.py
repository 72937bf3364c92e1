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


def _spool_offline(forwarder: Forwarder, experiment: str, n: int = 1, points: int = 3
                   ) -> list[str]:
    forwarder.down()
    ids = []
    for _ in range(n):
        with repro.start_run(experiment) as run:
            client = mlflow.MlflowClient()
            from mlflow.entities import Metric

            metrics = [Metric("loss", 1.0 / (i + 1), 1000 + i, i) for i in range(points)]
            for i in range(0, points, 1000):
                client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
        ids.append(run.info.run_id)
    forwarder.up()
    return ids


def test_a_spooled_run_deleted_by_the_user_syncs_once(
    via: str, forwarder: Forwarder, client, spool: Path, experiment: str
) -> None:
    (local,) = _spool_offline(forwarder, experiment)
    mlflow.delete_run(local)  # on the spool
    first = repro.sync(spool_dir=spool)
    assert first.ok, first
    remote = client.get_run(first.uploaded[local])
    assert remote.info.lifecycle_stage == "deleted" and remote.data.metrics["loss"]
    second = repro.sync(spool_dir=spool)
    assert second.ok and second.already == first.uploaded, second


def test_two_syncs_at_once_upload_each_run_once(
    via: str, forwarder: Forwarder, client, spool: Path, experiment: str
) -> None:
    ids = _spool_offline(forwarder, experiment, n=3, points=3000)
    results: list[repro._sync.SyncResult] = []
    gate = threading.Barrier(2)

    def one() -> None:
        gate.wait()
        results.append(repro.sync(spool_dir=spool))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r.ok for r in results), results
    exp = client.get_experiment_by_name(experiment)
    for local in ids:
        found = client.search_runs([exp.experiment_id],
                                   filter_string=f"tags.`repro.spool.id` = '{local}'")
        assert len(found) == 1, (local, results)
        assert len(client.get_metric_history(found[0].info.run_id, "loss")) == 3000


def test_a_live_writer_on_another_host_is_not_taken_for_dead(
    tmp_path: Path, env: dict[str, str], client, spool: Path, mlflow_server: str
) -> None:
    import json
    import signal
    import subprocess

    from repro_testlib import PYTHON, free_port, make_repo

    repo = make_repo(tmp_path / "repo")
    offline = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "TEST_HANG": "1"}
    proc = subprocess.Popen([PYTHON, "train.py"], cwd=repo, env=offline, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        lines = []
        while not lines or lines[-1] != "LOGGED":
            line = proc.stdout.readline()
            assert line, "writer exited early"
            lines.append(line.strip())
        local = next(x.split()[1] for x in lines if x.startswith("RUN_ID"))
        # What a writer on another host sharing this home (NFS) leaves in the spool.
        events = spool / "runs" / local / "events.jsonl"
        rows = events.read_text().splitlines()
        create = json.loads(rows[0])
        create["writer"]["host"] = "another-host.example"
        events.write_text("\n".join([json.dumps(create), *rows[1:]]) + "\n")
        result = repro.sync(spool_dir=spool, tracking_uri=mlflow_server)
        assert local in result.skipped and "still running" in result.skipped[local], result
        assert not result.uploaded
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)  # reaped: the writer is gone, which is what sync checks
    result = repro.sync(spool_dir=spool, tracking_uri=mlflow_server)
    assert result.ok and local in result.uploaded, result
    assert client.get_run(result.uploaded[local]).info.status == "KILLED"
