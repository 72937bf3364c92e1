"""Stopping and starting the stack loses nothing; bad profile files are refused clearly."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from kernel import run_code
from stack import REPO, VENV_BIN, Stack, free_port

pytestmark = pytest.mark.integration

WRITE = """
import boto3, mlflow, os, pathlib
pathlib.Path.home().joinpath("keep-me.txt").write_text("still here")
boto3.client("s3").put_object(Bucket=os.environ["ATELIER_SHARED_BUCKET"], Key="keep/me.txt", Body=b"object")
with mlflow.start_run(run_name="keep") as run:
    mlflow.log_metric("m", 1)
print(run.info.run_id)
"""


def test_stop_and_start_keeps_users_homes_runs_and_objects(tmp_path):
    state = tmp_path / "state"
    port = free_port()
    # What a restart must keep is users, homes, runs and objects; Trino keeps nothing of
    # its own (its restarts are the fault tests'), so it stays out: a JVM less per start.
    first = Stack(state, port=port, name="restart-1", args=("--without", "trino")).start()
    try:
        password = first.add_user("bob")
        token = first.user_token("bob")
        model = first.spawn("bob", "cpu-small")
        run_id = run_code(first.url, model["url"], token, WRITE).strip().splitlines()[-1]
    finally:
        first.stop()  # Ctrl-C, as a user stops `make dev`
    # The README: Ctrl-C stops everything; no process of this stack is left.
    left = [p for p in Path("/proc").glob("[0-9]*") if _names(p, str(state))]
    assert left == [], [(p / "cmdline").read_bytes()[:200] for p in left]
    if first.mode == "container":
        # Stopped cleanly: no container of this stack outlives the hub.
        assert _containers_of(state) == []

    second = Stack(state, port=port, name="restart-2", args=("--without", "trino")).start()
    try:
        # The same password still logs in (the users file survived) ...
        assert second.login("bob", password).get(f"{second.url}/hub/home").status_code == 200
        # ... the home file, the S3 object and the MLflow run are all still there.
        assert (state / "homes" / "bob" / "keep-me.txt").read_text() == "still here"
        assert second.s3().get_object(Bucket="atelier-shared", Key="keep/me.txt")["Body"].read() == b"object"
        assert second.mlflow().get_run(run_id).data.metrics["m"] == 1
        # ... and bob can start a session again and read his file from it.
        model = second.spawn("bob", "cpu-large")
        out = run_code(second.url, model["url"], second.user_token("bob"), "print(open('keep-me.txt').read())")
        assert out.strip() == "still here"
    finally:
        second.stop()


def _names(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def _containers_of(state: Path) -> list[str]:
    import docker
    from atelier_hub.embedded.container_spawner import stack_id
    from atelier_hub.embedded.engine import engine

    client = docker.APIClient(base_url=engine().host)
    return [c["Names"][0] for c in client.containers(all=True, filters={"label": f"dev.atelier.stack={stack_id(state)}"})]


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


BASE = "name: {name}\ndisplay_name: X\ncpu: {{limit: 2}}\nmemory: {{limit: 4G}}\n"


@pytest.mark.parametrize(
    "files, words",
    [
        ({"a.yaml": BASE.format(name="a") + "colour: red\n"}, ["a.yaml", "colour", "unknown field"]),
        ({"a.yaml": "name: a\ndisplay_name: X\ncpu: {limit: 2}\nmemory: {limit: -4G}\n"},
         ["a.yaml", "memory.limit", "negative"]),
        ({"a.yaml": "name: a\ndisplay_name: X\ncpu: {limit: 2, guarantee: 4}\nmemory: {limit: 4G}\n"},
         ["a.yaml", "cpu", "below cpu.guarantee", "raise the limit"]),
        ({"a.yaml": BASE.format(name="a") + "gpu: {type: a100}\n"}, ["a.yaml", "gpu", "gpu.count is missing"]),
        ({"a.yaml": BASE.format(name="a") + "default: true\n", "b.yaml": BASE.format(name="b") + "default: true\n"},
         ["default", "more than one default", "a, b"]),
        ({"a.yaml": BASE.format(name="same"), "b.yaml": BASE.format(name="same")}, ["b.yaml", "name", "also used by"]),
        ({"a.yaml": "name: [unclosed\n"}, ["a.yaml", "not valid YAML"]),
    ],
)
def test_profiles_check_names_file_field_and_fix(tmp_path, files, words):
    for name, text in files.items():
        _write(tmp_path, name, text)
    r = subprocess.run([str(VENV_BIN / "atelier"), "profiles", "--check", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def test_profiles_check_accepts_the_shipped_profiles():
    r = subprocess.run([str(VENV_BIN / "atelier"), "profiles", "--check", str(REPO / "profiles")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "5 profiles" in r.stdout


def test_dev_refuses_a_malformed_profile_folder_and_touches_no_state(tmp_path):
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "profiles", profiles)
    _write(profiles, "broken.yaml", BASE.format(name="broken") + "memory_limit: 4G\n")
    state = tmp_path / "state"
    t0 = time.monotonic()
    r = subprocess.run([str(VENV_BIN / "atelier"), "dev", "--port", str(free_port()), "--state", str(state),
                        "--profiles", str(profiles)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and time.monotonic() - t0 < 60
    assert "broken.yaml: memory_limit: unknown field" in r.stderr and "Traceback" not in r.stderr
    assert not state.exists()

