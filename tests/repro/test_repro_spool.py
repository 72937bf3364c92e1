"""The spool: MLflow's fluent API on a spooled run, in this process (no server), and
what survives a torn write."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from repro_testlib import free_port

import repro
from repro import _record, _spool


@pytest.fixture
def down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tracking URI nobody listens on, a private spool; MLflow's state restored after."""
    spool = tmp_path / "spool"
    monkeypatch.setenv("REPRO_SPOOL_DIR", str(spool))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    yield spool
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_fluent_api_works_on_a_spooled_run(
    down: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = mlflow.get_tracking_uri()
    artifact = tmp_path / "notes.txt"
    artifact.write_text("hello")
    with caplog.at_level(logging.WARNING, logger="repro"):
        with repro.start_run("spooled-exp", run_name="offline", tags={"team": "a"}) as run:
            assert mlflow.get_tracking_uri().startswith("repro-spool:")
            mlflow.log_param("lr", 0.1)
            mlflow.log_params({"epochs": 3, "opt": "adam"})
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_metrics({"acc": 0.9})
            mlflow.set_tag("stage", "dev")
            mlflow.log_artifact(str(artifact))
            mlflow.log_dict({"a": 1}, "cfg/config.json")
            with pytest.raises(mlflow.exceptions.MlflowException):
                mlflow.log_param("lr", 0.2)  # params are immutable, as on the server
            fetched = mlflow.get_run(run.info.run_id)
            assert fetched.data.params["epochs"] == "3"
            assert fetched.data.metrics["loss"] == pytest.approx(1 / 3)
            history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
            assert [m.step for m in history] == [0, 1, 2]
    # MLflow stays on the spool: later calls in this process do not wait on a dead server.
    assert mlflow.get_tracking_uri().startswith("repro-spool:")
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"
    warnings = [r.getMessage() for r in caplog.records if r.name == "repro"]
    assert len(warnings) == 1 and "unreachable" in warnings[0] and "repro sync" in warnings[0]
    assert "\n" not in warnings[0]

    spooled = _spool.find_run(run.info.run_id, down)
    assert spooled is not None
    assert spooled.status == "FINISHED" and spooled.run_name == "offline"
    assert spooled.experiment_name == "spooled-exp" and spooled.target == target
    assert spooled.params == {"lr": "0.1", "epochs": "3", "opt": "adam"}
    assert [m[1] for m in spooled.metrics if m[0] == "loss"] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert spooled.tags["team"] == "a" and spooled.tags["stage"] == "dev"
    assert spooled.tags["repro.spooled"] == "true" and "repro.git" in spooled.tags
    files = {p.relative_to(spooled.artifact_dir).as_posix()
             for p in spooled.artifact_dir.rglob("*") if p.is_file()}
    assert {"notes.txt", "cfg/config.json", "repro/record.json"} <= files
    bundled = _record.unpack((spooled.artifact_dir / "repro" / "record.json").read_bytes())
    assert {"packages.txt", "environment.json"} <= set(bundled)


def test_nested_runs_spool_with_their_parent(down: Path) -> None:
    with repro.start_run() as parent:
        with repro.start_run(nested=True) as child:
            mlflow.log_metric("x", 1)
    spooled = _spool.find_run(child.info.run_id, down)
    assert spooled is not None
    assert spooled.tags["mlflow.parentRunId"] == parent.info.run_id


def test_an_active_run_raises_as_in_mlflow(down: Path) -> None:
    with repro.start_run():
        with pytest.raises(Exception, match="already active"):
            repro.start_run()


def test_plain_end_run_ends_a_spooled_run(down: Path) -> None:
    run = repro.start_run()
    mlflow.log_metric("m", 2.0)
    mlflow.end_run()
    spooled = _spool.find_run(run.info.run_id, down)
    assert spooled is not None and spooled.status == "FINISHED"


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "abc"
    run_dir.mkdir(parents=True)
    events = run_dir / "events.jsonl"
    _spool.append_event(events, {"op": "create", "run_id": "abc", "start_time": 5})
    _spool.append_event(events, {"op": "log", "metrics": [["m", 1.0, 6, 0]]})
    with open(events, "ab") as f:
        f.write(b'{"op":"log","metrics":[["m",2.0')  # killed mid-write
    run = _spool.load_run(run_dir)
    assert run is not None and run.metrics == [("m", 1.0, 6, 0)]
    assert run.status == "RUNNING" and not run.writer_alive()


def test_spool_uri_roundtrip(tmp_path: Path) -> None:
    uri = _spool.make_uri(tmp_path / "my spool", "https://user@h:5000/p?q=1")
    assert _spool.parse_uri(uri) == (tmp_path / "my spool", "https://user@h:5000/p?q=1")
    assert json.loads(json.dumps(uri)) == uri


class _Failing(BaseHTTPRequestHandler):
    """A "tracking server" that accepts connections and answers every request with 503."""

    def _fail(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _fail

    def log_message(self, *args: object) -> None:
        pass


def test_a_failing_server_spools_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("REPRO_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        began = time.monotonic()
        with repro.start_run("failing") as run:
            mlflow.log_metric("m", 1.0)
        assert time.monotonic() - began < 20  # MLflow alone would retry for minutes
        spooled = _spool.find_run(run.info.run_id, tmp_path / "spool")
        assert spooled is not None and spooled.status == "FINISHED"
        assert spooled.tags["repro.spooled"] == "true"
    finally:
        server.shutdown()
        mlflow.set_tracking_uri(None)


def test_sync_leaves_a_run_that_is_still_being_written(down: Path) -> None:
    run = repro.start_run()
    try:
        result = repro.sync(spool_dir=down)
        assert list(result.skipped) == [run.info.run_id]
        assert "still running" in result.skipped[run.info.run_id]
        assert result.ok and not result.uploaded
    finally:
        mlflow.end_run()


def test_a_capture_failure_costs_the_details_not_the_run(
    down: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from repro import _packages

    def broken(*args: object) -> list[tuple[str, str]]:
        raise RuntimeError("unreadable site-packages")

    monkeypatch.setattr(_packages, "installed_packages", broken)
    with caplog.at_level(logging.WARNING, logger="repro"):
        with repro.start_run() as run:
            mlflow.log_metric("m", 1.0)
    spooled = _spool.find_run(run.info.run_id, down)
    assert spooled is not None and spooled.metrics and "repro.entry_point" in spooled.tags
    assert any("unreadable site-packages" in r.getMessage() for r in caplog.records)


def test_runs_recorded_one_artifact_per_file_read_the_same(tmp_path) -> None:
    """Runs recorded before repro/record.json (one artifact per file) and runs with it
    answer the same questions through the reader the CLI uses."""
    from repro._runs import RecordedRun

    files = {"packages.txt": b"numpy==2.1.0\n", "environment.json": b'{"args": ["--lr", "1"]}',
             "diff.patch": b"+x\n"}

    def reader(stored: dict[str, bytes]) -> RecordedRun:
        return RecordedRun(run_id="r", where="w", name=None, status="FINISHED",
                           start_time=None, end_time=None, experiment="e", tags={},
                           params={}, metrics={}, source="server",
                           _fetch=lambda path: stored.get(path),
                           _listing=lambda: list(stored))

    old = reader({f"repro/{n}": c for n, c in files.items()})
    new = reader({f"repro/{n}": c for n, c in _record.pack(files).items()})
    assert sorted(new.artifact_list()) == ["repro/diff.patch", "repro/record.json"]
    for run in (old, new):
        assert run.artifact("repro/packages.txt") == b"numpy==2.1.0\n"
        assert run.artifact("repro/diff.patch") == b"+x\n"
        assert run.environment() == {"args": ["--lr", "1"]}
        assert run.artifact("repro/conda.txt") is None
        assert run.recorded_files() == ["diff.patch", "environment.json", "packages.txt"]


def test_each_run_is_listed_in_repro_runs_file_and_a_bad_file_costs_no_run(
    down: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``REPRO_RUNS_FILE`` (an Atelier job sets it): one JSON line per run started, spooled
    ones marked; a path that cannot be written warns and the run goes on."""
    listed = tmp_path / "runs.jsonl"
    monkeypatch.setenv("REPRO_RUNS_FILE", str(listed))
    with repro.start_run("listed-exp", run_name="one") as first:
        pass
    with repro.start_run("listed-exp", run_name="two") as second:
        pass
    lines = [json.loads(line) for line in listed.read_text().splitlines()]
    assert [(x["run_id"], x["experiment_id"], x["spooled"]) for x in lines] == [
        (r.info.run_id, r.info.experiment_id, True) for r in (first, second)]

    monkeypatch.setenv("REPRO_RUNS_FILE", str(tmp_path))  # a folder: cannot be appended to
    with caplog.at_level(logging.WARNING, logger="repro"):
        with repro.start_run("listed-exp", run_name="three") as third:
            mlflow.log_param("still", "logged")
    assert f"could not list run {third.info.run_id} in REPRO_RUNS_FILE" in caplog.text
    assert mlflow.get_run(third.info.run_id).data.params == {"still": "logged"}


@pytest.mark.integration
def test_a_run_on_the_server_is_listed_unspooled(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = tmp_path / "runs.jsonl"
    monkeypatch.setenv("REPRO_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("REPRO_RUNS_FILE", str(listed))
    try:
        with repro.start_run("listed-on-server") as run:
            pass
    finally:
        mlflow.set_tracking_uri(None)
    assert json.loads(listed.read_text()) == {"run_id": run.info.run_id,
                                              "experiment_id": run.info.experiment_id, "spooled": False}
