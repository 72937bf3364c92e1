"""Jobs end to end: ``atelier run`` from a "laptop" (ATELIER_HUB_URL + ATELIER_TOKEN) runs a
command in a real container sized by its profile, through the real hub and the jobs
service, and the job's output and exit code stay after it ends, across a hub restart.

The user is alice; jobrival is a second real user who must neither see, read nor
cancel her jobs. Expected values come from the profile file (profiles/cpu-small.yaml:
4G of memory) and from what the test's own commands print, never from the code under
test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import docker
import pytest
from atelier_hub.embedded.engine import engine
from atelier_hub.embedded.stack import EmbeddedStack
from atelier_hub.embedded.state_folder import HUB_RECORD
from atelier_hub.profiles import load_profiles
from atelier_hub.services._process import pid_matches
from kernel import run_code
from stack import REPO, VENV_BIN

pytestmark = pytest.mark.integration

SMALL_MEMORY = next(p for p in load_profiles(REPO / "profiles") if p.name == "cpu-small").memory.limit


@pytest.fixture(scope="module")
def rival(containers):
    password = containers.add_user("jobrival")
    return {"name": "jobrival", "password": password, "token": containers.user_token("jobrival")}


def atelier(stack, token: str, *args: str, timeout: float = 300, home=None) -> subprocess.CompletedProcess:
    """The real `atelier` command, as on a laptop after `atelier login` (no saved login)."""
    return stack.atelier(token, *args, timeout=timeout, home=home)


def jobs_table(stack, token: str, *extra: str) -> dict[str, list[str]]:
    r = atelier(stack, token, "jobs", *extra)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PROFILE", "STATE", "STARTED", "(UTC)", "DURATION", "EXIT"], r.stdout
    return {cols[0]: cols for cols in (line.split() for line in lines[1:])}


def wait_state(stack, token: str, name: str, state: str, timeout: float = 240) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        row = jobs_table(stack, token).get(name)
        if row and row[2] == state:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"job {name} is {row} after {timeout} s, not {state}:\n{stack.hub_log()}")
        time.sleep(1)


PROBE = """
import os, pathlib, sys
print("hello from", os.environ["ATELIER_PROFILE"], "as uid", os.getuid())
v1 = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
print("memory", open(v1 if os.path.exists(v1) else "/sys/fs/cgroup/memory.max").read().strip())
print("s3", os.environ.get("AWS_ENDPOINT_URL", "none"))
print("mlflow", os.environ.get("MLFLOW_TRACKING_URI", "none"))
pathlib.Path("written-by-the-job.txt").write_text("from the job")
sys.stderr.write("to stderr\\n")
sys.exit(3)
"""


@pytest.fixture(scope="module")
def first(containers, alice):
    """Alice's first job, followed to its end: `atelier run` and what it printed."""
    (containers.state / "homes" / "alice" / "work").mkdir(parents=True, exist_ok=True)
    os.chown(containers.state / "homes" / "alice" / "work", 1000, 100)
    r = atelier(containers, alice["token"], "run", "--profile", "cpu-small", "--name", "first", "--cwd", "work",
                "--", "python", "-c", PROBE)
    return r


def test_run_streams_the_output_and_exits_with_the_job_s_code(containers, first):
    assert first.returncode == 3, (first.stdout, first.stderr, containers.hub_log())
    lines = first.stdout.splitlines()
    assert lines[0] == "hello from cpu-small as uid 1000", first.stdout
    # The profile's memory is the container's cgroup limit (rounded down to whole pages).
    assert lines[1] == f"memory {SMALL_MEMORY // 4096 * 4096}"
    # The session contract reached it: S3 and MLflow settings, as in a session.
    assert lines[2].startswith("s3 http://127.0.0.1:") and lines[3].startswith("mlflow http")
    assert "to stderr" in lines
    assert "job first submitted (profile cpu-small)" in first.stderr
    assert "Job first failed (exit code 3)" in first.stderr
    # It ran in the user's home, in the folder asked for.
    assert (containers.state / "homes" / "alice" / "work" / "written-by-the-job.txt").read_text() == "from the job"


def test_usage_counts_a_job_s_hours_as_kind_job(containers, first):
    out = subprocess.run([str(VENV_BIN / "atelier"), "usage", "--state", str(containers.state), "--format", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    jobs = json.loads(out)["by_kind"]["job"]
    small = {p.name: p for p in load_profiles(REPO / "profiles")}["cpu-small"]
    # Every job of this file runs on cpu-small: its CPU-hours are its hours times the profile's limit.
    assert jobs["servers"] >= 1 and jobs["hours"] > 0, jobs
    # (Both rounded to 4 decimals by the summary.)
    assert jobs["cpu_hours"] == pytest.approx(jobs["hours"] * small.cpu.limit, abs=1e-4 * (small.cpu.limit + 1)), jobs
    starts = [json.loads(line) for line in (containers.state / "usage.jsonl").read_text().splitlines()]
    first_start = [e for e in starts if e["event"] == "start" and e["server"] == "job-first"]
    assert [(e["user"], e["kind"], e["profile"]) for e in first_start] == [("alice", "job", "cpu-small")], first_start


def test_jobs_lists_it_and_logs_replays_its_output(containers, alice, first):
    row = jobs_table(containers, alice["token"])["first"]
    assert row[1:3] == ["cpu-small", "failed"] and row[-1] == "3", row
    r = atelier(containers, alice["token"], "logs", "first")
    assert r.returncode == 0, r.stderr
    assert r.stdout == first.stdout
    # Its server is gone from the hub once it ended: no container is left running.
    deadline = time.monotonic() + 60
    client = docker.APIClient(base_url=engine().host)
    while client.containers(filters={"label": "dev.atelier.job=first"}):
        assert time.monotonic() < deadline, "the job's container is still there a minute after it ended"
        time.sleep(1)


@pytest.mark.parametrize(("args", "says"), [
    (("--profile", "gpu-huge", "--", "true"), ["profile", "'gpu-huge'", "cpu-small"]),
    (("--profile", "cpu-small"), ["no command", "--", "python train.py"]),
    (("--profile", "cpu-small", "--"), ["no command", "--"]),
    (("--name", "first", "--", "true"), ["name", "already", "'first'", "--name"]),
    (("--name", "Bad Name!", "--", "true"), ["name", "--name", "lowercase"]),
    (("--cwd", "../bob", "--", "true"), ["cwd", "--cwd", "relative"]),
    (("--timeout", "soon", "--", "true"), ["--timeout", "'soon'", "2h"]),
])
def test_bad_input_names_the_field_and_the_fix(containers, alice, first, args, says):
    r = atelier(containers, alice["token"], "run", *args, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    for word in says:
        assert word in r.stderr, r.stderr


TRACKED = """
import os, sys
import boto3, mlflow, repro
boto3.client("s3").put_object(Bucket=os.environ["ATELIER_SHARED_BUCKET"], Key="from-job/tracked.txt",
                              Body=b"written by a job")
with repro.start_run(run_name="from-a-job") as run:
    repro_run_id = run.info.run_id
print("run", repro_run_id)
# A plain MLflow run, as most scripts start theirs: the job links it too.
with mlflow.start_run(run_name="plain-in-a-job") as plain:
    mlflow.log_metric("loss", 0.5)
print("plain", plain.info.run_id)
sys.exit(3)
"""


def _git(repo, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=Alice", "-c", "user.email=alice@example.org", *args],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def tracked(containers, alice):
    """A job that writes to S3, logs a repro run from a git clone of alice's home and exits
    3: `atelier run`, and the run's id that the script printed."""
    repo = containers.state / "homes" / "alice" / "proj"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "tracked_job.py").write_text(TRACKED)
    _git(repo, "init", "-q")
    _git(repo, "add", "tracked_job.py")
    _git(repo, "commit", "-q", "-m", "a tracked job")
    # Written here as root: owned by the session's user, as a clone the user made would be.
    subprocess.run(["chown", "-R", "1000:100", str(repo)], check=True)
    r = atelier(containers, alice["token"], "run", "--profile", "cpu-small", "--name", "tracked", "--cwd", "proj",
                "--", "python", "tracked_job.py")
    run_ids = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("run ")]
    return r, run_ids[0] if run_ids else None


def _plain_run_id(r) -> str:
    ids = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("plain ")]
    assert ids, (r.stdout, r.stderr)
    return ids[0]


def test_a_script_job_writes_to_s3_logs_a_repro_run_with_the_job_s_tags_and_exits_3(containers, alice, tracked):
    r, run_id = tracked
    assert r.returncode == 3 and run_id, (r.stdout, r.stderr)
    obj = containers.s3().get_object(Bucket="atelier-shared", Key="from-job/tracked.txt")
    assert obj["Body"].read() == b"written by a job"
    run = containers.mlflow().get_run(run_id)
    assert run.info.user_id == "alice"
    assert run.data.tags["repro.env.ATELIER_JOB"] == "tracked"
    assert run.data.tags["repro.env.ATELIER_PROFILE"] == "cpu-small"
    assert "tracked_job.py" in run.data.tags["repro.command"]


def test_the_jobs_run_is_linked_from_atelier_run_the_api_and_the_jobs_page(containers, alice, tracked):
    r, run_id = tracked
    run = containers.mlflow().get_run(run_id)
    link = f"/services/mlflow/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    # The plain mlflow.start_run() run carries the job's tags (MLflow's MLFLOW_RUN_CONTEXT), as
    # the repro run does, and is linked after it.
    plain = containers.mlflow().get_run(_plain_run_id(r))
    for tags in (plain.data.tags, run.data.tags):
        assert (tags["atelier.job"], tags["atelier.profile"]) == ("tracked", "cpu-small"), tags
        assert tags["atelier.job.started"].isdigit(), tags
    assert plain.info.user_id == "alice" and plain.data.metrics == {"loss": 0.5}
    plain_link = f"/services/mlflow/#/experiments/{plain.info.experiment_id}/runs/{plain.info.run_id}"
    # `atelier run` says where the runs are, once the job ended.
    assert f"atelier: MLflow run {run_id}: {containers.url}{link}" in r.stderr.splitlines(), r.stderr
    assert f"atelier: MLflow run {plain.info.run_id}: {containers.url}{plain_link}" in r.stderr.splitlines(), \
        r.stderr
    job = containers.http.get(f"{containers.url}/services/jobs/api/jobs/tracked", timeout=60,
                              headers={"Authorization": f"token {alice['token']}"}).json()
    assert job["runs"] == [{"run_id": run_id, "experiment_id": run.info.experiment_id, "spooled": False,
                            "url": link},
                           {"run_id": plain.info.run_id, "experiment_id": plain.info.experiment_id,
                            "spooled": False, "url": plain_link}], job
    page = containers.login("alice", alice["password"]).get(f"{containers.url}/services/jobs/", timeout=60).text
    row = re.search(r'<tr class="atelier-job" data-job="tracked" data-state="failed">(.*?)</tr>', page, re.S)
    assert row and f'<a class="atelier-run" data-run="{run_id}" href="{link}">{run_id[:8]}</a>' in row.group(1), \
        page[:3000]


def test_a_job_past_its_timeout_is_ended_and_its_log_says_so(containers, alice):
    r = atelier(containers, alice["token"], "run", "--profile", "cpu-small", "--name", "slow", "--timeout", "5s",
                "--", "sh", "-c", "echo started; sleep 600; echo never")
    assert r.returncode == 124, (r.stdout, r.stderr)
    assert r.stdout == "started\n\natelier: the job ran past its --timeout of 5 s and was ended (exit code 124)\n"
    row = jobs_table(containers, alice["token"])["slow"]
    assert row[2] == "failed" and row[-1] == "124", row
    assert atelier(containers, alice["token"], "logs", "slow").stdout == r.stdout


def _interrupted(stack, token: str, *args: str) -> subprocess.CompletedProcess:
    """`atelier run ARGS` interrupted by Ctrl-C (SIGINT) once the job's first line is out."""
    env = {**os.environ, "ATELIER_HUB_URL": stack.url, "ATELIER_TOKEN": token,
           "XDG_CONFIG_HOME": str(stack.state.parent / "laptop-config")}
    proc = subprocess.Popen([str(VENV_BIN / "atelier"), "run", "--profile", "cpu-small", *args, "--",
                             "sh", "-c", "echo up; sleep 600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO,
                            # As in a terminal: a test run in the background inherits SIGINT
                            # ignored, and Python then raises no KeyboardInterrupt.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline() == "up\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "up\n" + out, err)


def test_ctrl_c_detaches_and_with_cancel_on_interrupt_cancels(containers, alice):
    kept = _interrupted(containers, alice["token"], "--name", "ctrlc-kept")
    assert kept.returncode == 130, (kept.stdout, kept.stderr)
    assert kept.stderr.splitlines()[-1] == ("atelier: detached; job ctrlc-kept keeps running. Follow it: "
                                            "atelier logs ctrlc-kept -f; cancel it: atelier cancel ctrlc-kept")
    assert jobs_table(containers, alice["token"])["ctrlc-kept"][2] == "running"
    assert atelier(containers, alice["token"], "cancel", "ctrlc-kept", timeout=180).returncode == 0

    gone = _interrupted(containers, alice["token"], "--name", "ctrlc-gone", "--cancel-on-interrupt")
    assert gone.returncode == 130, (gone.stdout, gone.stderr)
    assert gone.stderr.splitlines()[-1] == "atelier: cancelled job ctrlc-gone (--cancel-on-interrupt)"
    assert jobs_table(containers, alice["token"])["ctrlc-gone"][2] == "cancelled"


def test_a_second_user_cannot_see_read_or_cancel_a_job_and_its_owner_can(containers, alice, rival):
    r = atelier(containers, alice["token"], "run", "--detach", "--profile", "cpu-small", "--name", "long", "--",
                "sh", "-c", "echo started; sleep 600")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "long"
    wait_state(containers, alice["token"], "long", "running")

    assert "long" not in jobs_table(containers, rival["token"])
    for cmd in (("logs", "long"), ("cancel", "long")):
        r = atelier(containers, rival["token"], *cmd, timeout=120)
        assert r.returncode == 2 and "no job named 'long'" in r.stderr, (cmd, r.stdout, r.stderr)
    # Nor by asking the service for alice's jobs by name.
    h = {"Authorization": f"token {rival['token']}"}
    for path in ("/services/jobs/api/jobs?user=alice&all=1", "/services/jobs/api/jobs/long/log?user=alice"):
        resp = containers.http.get(f"{containers.url}{path}", headers=h, timeout=60)
        assert "started" not in resp.text and '"long"' not in resp.text, (path, resp.status_code, resp.text)
    assert wait_state(containers, alice["token"], "long", "running")
    # Her home page lists it, running, with the line that follows it; not as a server. His lists none of hers.
    r = containers.login("alice", alice["password"]).get(f"{containers.url}/hub/home", timeout=60)
    page = r.text
    job = re.search(r'<tr class="atelier-job" data-job="long" data-state="running">(.*?)</tr>', page, re.S)
    assert r.status_code == 200 and job and "cpu-small" in job.group(1) and "atelier logs long -f" in job.group(1), \
        (r.status_code, page[page.find('id="atelier-home"'):][:3000], containers.hub_log(120))
    assert 'data-server="job-long"' not in page
    theirs = containers.login("jobrival", rival["password"]).get(f"{containers.url}/hub/home", timeout=60).text
    assert 'id="atelier-jobs"' in theirs and 'data-job="long"' not in theirs and 'data-job="first"' not in theirs
    # The jobs page (the hub's login, Atelier's look): hers lists it, running, with the lines
    # that follow and cancel it; his lists none of hers, asking for everyone's included.
    r = containers.login("alice", alice["password"]).get(f"{containers.url}/services/jobs/", timeout=60)
    job = re.search(r'<tr class="atelier-job" data-job="long" data-state="running">(.*?)</tr>', r.text, re.S)
    assert r.status_code == 200 and "Your jobs (alice)" in r.text and 'class="atelier-brand' in r.text, r.text[:2000]
    assert job and "cpu-small" in job.group(1) and "atelier cancel long" in job.group(1), r.text[:3000]
    rival_session = containers.login("jobrival", rival["password"])
    for path in ("/services/jobs/", "/services/jobs/?all=1", "/services/jobs/?user=alice"):
        r = rival_session.get(f"{containers.url}{path}", timeout=60)
        assert r.status_code == 200 and "Your jobs (jobrival)" in r.text, (path, r.status_code, r.text[:500])
        assert 'data-job="long"' not in r.text and "alice" not in r.text, (path, r.text[:3000])
    # The API takes tokens only: the page's login cookie does not act there.
    r = rival_session.get(f"{containers.url}/services/jobs/api/jobs", timeout=60)
    assert r.status_code == 403, (r.status_code, r.text[:300])

    r = atelier(containers, alice["token"], "logs", "long")
    assert r.stdout == "started\n"
    r = atelier(containers, alice["token"], "cancel", "long", timeout=180)
    assert r.returncode == 0 and "Cancelled job long" in r.stdout, r.stderr
    assert jobs_table(containers, alice["token"])["long"][2] == "cancelled"
    client = docker.APIClient(base_url=engine().host)
    deadline = time.monotonic() + 60
    while client.containers(filters={"label": "dev.atelier.job=long"}):
        assert time.monotonic() < deadline, "the cancelled job's container is still running"
        time.sleep(1)


def test_a_running_job_survives_its_hub_killed_hard_and_its_output_is_whole(containers, alice):
    go_on = containers.state / "homes" / "alice" / "go-on"
    r = atelier(containers, alice["token"], "run", "--detach", "--profile", "cpu-small", "--name", "survivor", "--",
                "sh", "-c", 'echo before; while [ ! -f "$HOME/go-on" ]; do sleep 1; done; echo after; exit 5')
    assert r.returncode == 0, r.stderr
    wait_state(containers, alice["token"], "survivor", "running")
    client = docker.APIClient(base_url=engine().host)
    before = [c["Id"] for c in client.containers(filters={"label": "dev.atelier.job=survivor"})]
    assert len(before) == 1, before

    # alice follows it from her laptop while the hub dies and comes back.
    follower = subprocess.Popen(
        [str(VENV_BIN / "atelier"), "logs", "survivor", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "ATELIER_HUB_URL": containers.url, "ATELIER_TOKEN": alice["token"],
                        "XDG_CONFIG_HOME": str(containers.state.parent / "laptop-config")})
    try:
        hub = pid_matches(EmbeddedStack.load(containers.state).path(HUB_RECORD))
        assert hub, "no hub recorded"
        os.kill(hub, signal.SIGKILL)
        assert containers.proc.wait(120) == 2  # `atelier dev` saw its hub die and ended what it left
        containers.proc = None
        containers.start()

        # The same container, never restarted, still running the job for the new hub.
        assert [c["Id"] for c in client.containers(filters={"label": "dev.atelier.job=survivor"})] == before
        wait_state(containers, alice["token"], "survivor", "running")
        go_on.write_text("")
        r = atelier(containers, alice["token"], "logs", "survivor", "-f", timeout=240)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "before\nafter\n"
        # The follower waited out the restart and printed the rest, each line once.
        out, err = follower.communicate(timeout=120)
        assert follower.returncode == 0 and out == "before\nafter\n", (follower.returncode, out, err)
        assert "runs on: trying again" in err and "answers again; following on" in err, err
    finally:
        if follower.poll() is None:
            follower.kill()
    row = jobs_table(containers, alice["token"])["survivor"]
    assert row[2] == "failed" and row[-1] == "5", row


def test_the_output_and_exit_code_survive_a_hub_restart(containers, alice, first):
    containers.stop()
    containers.start()
    row = jobs_table(containers, alice["token"])["first"]
    assert row[1:3] == ["cpu-small", "failed"] and row[-1] == "3", row
    r = atelier(containers, alice["token"], "logs", "first")
    assert r.stdout == first.stdout


def test_a_notebook_job_with_a_parameter_saves_the_executed_notebook_with_its_outputs(containers, alice):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("lr = 1.0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell('print("lr is", lr)\nlr * 2')]
    folder = containers.state / "homes" / "alice" / "nbs"
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, 1000, 100)
    nbformat.write(nb, folder / "analysis.ipynb")
    os.chown(folder / "analysis.ipynb", 1000, 100)
    r = atelier(containers, alice["token"], "run", "--profile", "cpu-small", "--name", "nbjob", "--cwd", "nbs",
                "analysis.ipynb", "-p", "lr=0.25")
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = nbformat.read(folder / "nbjob.out.ipynb", as_version=4)
    assert [c.source for c in out.cells][0] == "lr = 1.0"
    assert "lr = 0.25" in out.cells[1].source  # the parameter, after the cell tagged "parameters"
    outputs = out.cells[2].outputs
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["lr is 0.25\n"]
    assert [o.data["text/plain"] for o in outputs if o.output_type == "execute_result"] == ["0.5"]
    assert jobs_table(containers, alice["token"])["nbjob"][2] == "succeeded"


KERNEL_RUN = r"""
import json
import atelier_lab
job = atelier_lab.run(["python", "-c", "import os; print('in the job on', os.environ['ATELIER_PROFILE']); "
                       "raise SystemExit(4)"], name="from-a-kernel")
code = job.wait(timeout=240)
try:
    atelier_lab.run(["true"], profile="no-such-profile")
    refused = None
except atelier_lab.JobUnavailable as exc:
    refused = str(exc)
print(json.dumps({"code": code, "log": job.log(), "state": job.state, "profile": job.profile,
                  "refused": refused, "url": __import__("os").environ.get("ATELIER_JOBS_URL")}))
"""


@pytest.fixture(scope="module")
def session(containers, alice):
    """Alice's session on cpu-small (its server model), for the tests that work from a kernel."""
    model = containers.spawn("alice", "cpu-small", server="runner")
    yield model
    containers.stop_server("alice", "runner")


def test_a_notebook_runs_a_job_with_atelier_lab_run_on_its_sessions_profile(containers, alice, session):
    """From a kernel of alice's session, with its own settings and token:
    ``atelier_lab.run(...)`` submits to the jobs service, on the session's profile by
    default; ``job.wait()`` gives the job's exit code and ``job.log()`` its output; a bad
    profile is refused naming the field. It is the same job `atelier jobs` lists."""
    out = run_code(containers.url, session["url"], alice["token"], KERNEL_RUN, timeout=360)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["url"].endswith("/services/jobs"), seen  # the session's ATELIER_JOBS_URL
    assert (seen["code"], seen["state"], seen["profile"]) == (4, "failed", "cpu-small"), seen
    assert "in the job on cpu-small" in seen["log"], seen["log"]
    assert "profile: unknown profile 'no-such-profile'" in seen["refused"], seen["refused"]
    row = jobs_table(containers, alice["token"])["from-a-kernel"]
    assert (row[1], row[2], row[-1]) == ("cpu-small", "failed", "4"), row



KERNEL_RERUN = r"""
import json, os, subprocess
show = subprocess.run(["python", "-m", "repro", "show", RUN], capture_output=True, text=True, timeout=120)
again = subprocess.run(["python", "-m", "repro", "rerun", RUN, "--as-job"], capture_output=True, text=True,
                       cwd=os.path.expanduser("~/proj"), timeout=400)
print(json.dumps({"show": show.stdout + show.stderr, "code": again.returncode, "out": again.stdout,
                  "err": again.stderr}))
"""


def test_repro_shows_the_job_of_a_run_and_reruns_it_as_a_job(containers, alice, tracked, session):
    """In alice's session: `repro show` names the job and profile a run came from, and
    `repro rerun RUN --as-job` runs it again as a new job on that profile, from her clone,
    following its output; the new run is a rerun of the first, recorded by the new job."""
    _, run_id = tracked
    out = run_code(containers.url, session["url"], alice["token"], f"RUN = {run_id!r}\n" + KERNEL_RERUN,
                   timeout=480)
    seen = json.loads(out.strip().splitlines()[-1])
    job_line = [line for line in seen["show"].splitlines() if line.startswith("job ")]
    assert job_line and job_line[0].split(None, 1)[1].startswith("atelier job tracked on profile cpu-small"), \
        seen["show"]
    assert seen["code"] == 3, seen
    said = re.search(rf"re-running {run_id} as job (\S+) on profile cpu-small", seen["err"])
    assert said, seen["err"]
    job = said.group(1)
    # The script's own "run ID" line (repro rerun's header line "run  ID (server)" names the old one).
    new_ids = [line.split()[1] for line in seen["out"].splitlines() if line.startswith("run ")
               and len(line.split()) == 2]
    assert len(new_ids) == 1 and new_ids[0] != run_id, seen["out"]
    again = containers.mlflow().get_run(new_ids[0])
    assert again.data.tags["repro.rerun_of"] == run_id
    assert again.data.tags["repro.env.ATELIER_JOB"] == job
    assert again.data.tags["repro.env.ATELIER_PROFILE"] == "cpu-small"
    assert again.info.user_id == "alice"
    row = jobs_table(containers, alice["token"])[job]
    assert (row[1], row[2], row[-1]) == ("cpu-small", "failed", "3"), row
