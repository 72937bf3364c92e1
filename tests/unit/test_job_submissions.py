"""Jobs, the pure parts: the culler leaves a running job alone, a submission's every
field is checked with its fix, and a job's log cannot lead the hub out of the home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from atelier_hub.jobs import RUNNER, JobError, check_submission, read_home_file
from atelier_hub.profiles import load_profiles
from atelier_hub.services.culler_server import Culler

REPO = Path(__file__).resolve().parents[2]


def _server(name: str, options: dict, started: datetime) -> dict:
    return {"name": name, "url": f"/user/ada/{name}/", "started": started.isoformat(),
            "last_activity": started.isoformat(), "user_options": options, "state": {}}


def test_the_culler_keeps_a_job_that_has_been_quiet_for_hours_and_culls_a_session(tmp_path):
    culler = Culler(profiles=load_profiles(REPO / "profiles"), audit=tmp_path / "audit.jsonl", stale_after=180)
    started = datetime.now(timezone.utc) - timedelta(hours=5)  # cpu-small: idle_timeout 3600 (its file)
    job = _server("job-train", {"profile": "cpu-small", "job": {"name": "train", "command": ["python", "t.py"]}},
                  started)
    lab = _server("lab", {"profile": "cpu-small"}, started)
    assert culler.arbiter(inactive=None, inactive_limit=0, server=job) is False
    assert culler.arbiter(inactive=None, inactive_limit=0, server=lab) is True


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"profile": "cpu-small"}, "command", ["after --"]),
    ({"command": "python t.py"}, "command", ["after --"]),
    ({"command": ["python"], "profile": "nope"}, "profile", ["'nope'", "cpu-small", "--profile"]),
    ({"command": ["python"], "name": "Has Space"}, "name", ["--name", "lowercase"]),
    ({"command": ["python"], "name": "train"}, "name", ["already", "another --name"]),
    ({"command": ["python"], "cwd": "/etc"}, "cwd", ["relative", "--cwd"]),
    ({"command": ["python"], "cwd": "a/../../x"}, "cwd", ["relative", "--cwd"]),
    ({"command": ["python", "x" * 20000]}, "command", ["script"]),
    ({"notebook": "../nb.ipynb"}, "notebook", [".ipynb", "relative"]),
    ({"notebook": "nb.py"}, "notebook", [".ipynb"]),
    ({"notebook": "nb.ipynb", "parameters": {"not a name": 1}}, "parameters", ["-p lr=0.1"]),
    ({"command": ["python"], "parameters": {"lr": 1}}, "parameters", ["notebook"]),
    ({"command": ["python"], "timeout": 0}, "timeout", ["'0'", "--timeout 2h"]),
    ({"command": ["python"], "timeout": "1h"}, "timeout", ["'1h'", "whole seconds"]),
    ({"command": ["python"], "timeout": True}, "timeout", ["--timeout 2h"]),
    ({"command": ["python"], "timeout": 31 * 86400}, "timeout", ["2592000"]),
])
def test_each_bad_field_is_named_with_its_fix(body, field, words):
    with pytest.raises(JobError) as err:
        check_submission(body, profile_names=["cpu-small", "gpu-1"], taken={"train"})
    assert err.value.field == field
    for word in words:
        assert word in str(err.value), str(err.value)


def test_a_log_that_is_a_symlink_is_not_followed(tmp_path):
    home, other = tmp_path / "homes" / "ada", tmp_path / "secret"
    (home / ".atelier" / "jobs" / "a").mkdir(parents=True)
    other.write_text("root's secret")
    (home / ".atelier" / "jobs" / "a" / "output.log").write_text("line 1\nline 2\n")
    assert read_home_file(home, ".atelier/jobs/a/output.log", offset=7) == b"line 2\n"
    os.symlink(other, home / ".atelier" / "jobs" / "a" / "exit-code")
    assert read_home_file(home, ".atelier/jobs/a/exit-code") is None
    # ... nor a folder on the way that is a link elsewhere.
    (home / ".atelier" / "jobs" / "b").symlink_to(tmp_path)
    assert read_home_file(home, ".atelier/jobs/b/secret") is None


def test_a_spawner_that_runs_no_job_refuses_one_rather_than_start_a_server():
    from atelier_hub.embedded.container_spawner import AtelierDockerSpawner
    from atelier_hub.embedded.process_spawner import AtelierLocalSpawner
    from tornado import web

    assert AtelierDockerSpawner.runs_jobs is True
    spawner = AtelierLocalSpawner(profiles_dir=str(REPO / "profiles"))
    with pytest.raises(web.HTTPError) as err:
        spawner.check_request({"profile": "cpu-small", "job": {"name": "a", "command": ["true"]}})
    assert err.value.status_code == 400 and "container sessions" in err.value.log_message
    assert spawner.check_request({"profile": "cpu-small"}).name == "cpu-small"


def test_a_timeout_is_kept_in_seconds():
    job = check_submission({"command": ["python"], "timeout": 7200}, profile_names=["cpu-small"], taken=set())
    assert job["timeout"] == 7200
    assert "timeout" not in check_submission({"command": ["python"]}, profile_names=["cpu-small"], taken=set())


def test_the_runner_ends_a_command_past_its_timeout_and_says_so_in_the_log(tmp_path):
    """The real runner, as a process here (stdlib only, as in the image): the command and
    what it started are ended, the log says why, the exit code is 124."""
    marker = f"atelier-timeout-{os.getpid()}"
    spec = {"name": "slow", "cwd": "", "timeout": 1,
            "command": ["sh", "-c", f"echo started; {sys.executable} -c 'import time; time.sleep(300)' {marker}"]}
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(RUNNER), json.dumps(spec)], env=env, timeout=60)
    assert done.returncode == 124
    folder = tmp_path / ".atelier" / "jobs" / "slow"
    assert (folder / "output.log").read_text() == (
        "started\n\natelier: the job ran past its --timeout of 1 s and was ended (exit code 124)\n")
    assert (folder / "exit-code").read_text() == "124\n"
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.stdout == "", f"the command outlived its timeout: {left.stdout}"


def test_the_runner_on_a_cluster_copies_the_output_to_its_own_stdout_in_order(tmp_path):
    """ATELIER_JOB_TEE=1 (a pod, whose log is the hub's only view of it): the real runner's
    stdout holds the same bytes as the log on the home, stdout and stderr interleaved as
    written, with its own lines too (a timeout's)."""
    spec = {"name": "tee", "cwd": "", "timeout": 2,
            "command": ["sh", "-c", "echo one; echo two >&2; printf 'three'; exec sleep 30"]}
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ATELIER_JOB_TEE": "1"}
    done = subprocess.run([sys.executable, str(RUNNER), json.dumps(spec)], env=env, capture_output=True, timeout=60)
    assert done.returncode == 124
    log = (tmp_path / ".atelier" / "jobs" / "tee" / "output.log").read_bytes()
    assert log == b"one\ntwo\nthree\natelier: the job ran past its --timeout of 2 s and was ended (exit code 124)\n"
    assert done.stdout == log


def test_a_gpu_job_waiting_for_the_pool_is_queued_with_its_place_in_the_api_the_pages_and_atelier_jobs(tmp_path):
    """The embedded hub's real GPU pool, with two device ids no GPU backs (as the queue's
    integration tests use), saves its queue as the hub does; the jobs service, its page and
    `atelier jobs` read ada's waiting GPU job's place from it: 1st of 1, with the ETA the
    pool reckons (bo's server holding both is expected to end 10 min after it got them)."""
    import asyncio
    import time

    from atelier_hub.capacity import Request
    from atelier_hub.embedded.gpus import GPUPool
    from atelier_hub.home import job_row
    from atelier_hub.jobs import JobRecord, job_server
    from atelier_hub.jobs_cli import jobs_table
    from atelier_hub.services.jobs_server import Jobs, render_jobs_page

    snapshot = tmp_path / "run" / "capacity.json"
    now = time.time()

    async def fill() -> None:
        pool = GPUPool([(0, "test id"), (1, "test id")], snapshot_file=snapshot)
        assert pool.request(Request("bo/gpu", "bo", "everyone", 2, now - 60, runs_for=600)) == [0, 1]
        waiting = pool.request(Request("ada/job-train", "ada", "everyone", 1, now, kind="job", runs_for=300))
        assert isinstance(waiting, asyncio.Future)
        waiting.cancel()

    asyncio.run(fill())
    rec = JobRecord(name="train", user="ada", profile="gpu-1", command=["python", "t.py"], submitted=now)
    rec.save(tmp_path / "jobs")
    starting = {job_server("train"): {"pending": "spawn", "ready": False}}
    jobs = Jobs(folder=tmp_path / "jobs", homes=tmp_path / "homes", profiles_dir="profiles", hub=None,
                queue=(snapshot, None, None))
    model = jobs.model(rec, starting)
    assert model["state"] == "queued" and model["queue"]["position"] == 1 and model["queue"]["waiting"] == 1
    eta = datetime.fromisoformat(model["queue"]["eta"].replace("Z", "+00:00")).timestamp()
    assert abs(eta - (now + 600)) < 5, model["queue"]  # bo's 600 s from when it got the GPUs
    assert model["queue"]["text"] == "1st of 1 waiting, about 10 min"
    # Once it runs (the hub's server ready), it is no longer in line.
    assert jobs.model(rec, {job_server("train"): {"pending": None, "ready": True}})["state"] == "running"
    # The jobs page says the same (its rows are the home page's, job_row).
    page = render_jobs_page([{**job_row(rec, server=starting[job_server("train")], now=datetime.now(timezone.utc),
                                        place=jobs.place(rec, starting[job_server("train")])), "user": "ada"}],
                            viewer="ada")
    assert 'data-state="queued"' in page and '>1st of 1 waiting, about 10 min</div>' in page
    # `atelier jobs` prints it in the state column.
    (head, row), = [jobs_table([model], everyone=False)]
    assert row[head.index("STATE")] == "queued (1st of 1 waiting, about 10 min)"


def test_a_job_that_fills_its_home_ends_with_a_line_saying_so_and_its_exit_code(tmp_path):
    """The real runner with its home on a 2 MB tmpfs (root only: mount): the command fills
    it and says 0 all the same; the job fails, with a last line saying why (in the room the
    runner kept from its start) and the exit code the jobs service reads."""
    home = tmp_path / "home"
    home.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(home)], capture_output=True, text=True)
    if r.returncode:
        pytest.fail(f"cannot mount a small tmpfs for the full-home test (needs root): {r.stderr.strip()}")
    try:
        spec = {"name": "fill", "cwd": "", "command": ["sh", "-c", "echo start; cat /dev/zero > big; echo done"]}
        env = {"PATH": os.environ["PATH"], "HOME": str(home)}
        done = subprocess.run([sys.executable, str(RUNNER), json.dumps(spec)], env=env, capture_output=True,
                              timeout=60)
        folder = home / ".atelier" / "jobs" / "fill"
        log = (folder / "output.log").read_text()
        assert done.returncode == int((folder / "exit-code").read_text()) == 1, (done.returncode, log)
        assert log.startswith("start\n") and "No space left on device" in log, log
        assert log.rstrip().splitlines()[-1].startswith("atelier: your home is full ("), log
        assert "so the job failed (exit code 1)" in log and not (folder / "reserve").exists()
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
