"""`kill -9` of every managed service, of its supervisor, and of the hub itself; a start
with both cores busy; a state disk that fills up while a run logs artifacts.

Each fault is measured on a real embedded stack (`atelier dev`): the time until the
service answers again, the orphans left (processes of the killed groups still alive),
crash loops (more restarts than kills) and lost records (an MLflow run, an S3 object and
a home file made before the fault, read back after). The last three must be 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from atelier_hub.embedded.stack import EmbeddedStack
from atelier_hub.embedded.state_folder import HUB_RECORD
from atelier_hub.services import SERVICES
from atelier_hub.services._process import group_alive, pid_matches, port_free, start_time
from kernel import run_code
from stack import OUTPUT, Stack, free_port, tail

pytestmark = pytest.mark.integration

# A supervised process each: S3, MLflow, Trino, culler, jobs, Ray clusters, usage, and
# credentials (which runs where the deployment names a git host: the faults stack names one).
MANAGED = [s for s in SERVICES if s.has_port]
# The eight docs/admin-guide.md promises heal themselves: a service dropped from the list (or one
# that lost its port) would otherwise just go untested here.
assert sorted(s.name for s in MANAGED) == ["credentials", "culler", "jobs", "mlflow", "ray_clusters", "s3", "trino",
                                           "usage"], MANAGED
HEAL_LIMIT = 60  # seconds: the promise in docs/admin-guide.md


def _wait(check, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} not within {timeout:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - t0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _supervisor_of(stack: EmbeddedStack, name: str) -> int:
    """The hub's child that runs ``name`` (the supervisor: parent of the recorded group)."""
    leader = pid_matches(stack.path(f"run/{name}.pgid"))
    assert leader, f"no live process recorded for {name}"
    stat = Path(f"/proc/{leader}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[1])  # ppid


def _restarts(stack: Stack, name: str, since: int) -> int:
    """Restarts of ``name``'s child (the supervisor's line) or of the supervisor itself
    (the hub's line) logged after byte offset ``since`` of the hub log."""
    text = stack.log.read_bytes()[since:].decode(errors="replace")
    own = {"mlflow": "mlflow server:"}.get(name, f"{name}:")
    return (sum(1 for line in text.splitlines() if line.startswith(own) and "exited with code" in line)
            + text.count(f"Service {name} exited with status"))


def _first_ready(out: Path) -> dict[str, float]:
    """Seconds to each service's banner line (``  MLflow:  ...  [42 s]``) of the first start."""
    titles = {s.title: s.name for s in SERVICES}
    seconds = {}
    for line in out.read_text().splitlines():
        head, _, rest = line.strip().partition(":")
        if head in titles and rest.rstrip().endswith(" s]"):
            seconds.setdefault(titles[head], float(rest.rsplit("[", 1)[1].split()[0]))
    return seconds


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    state = tmp_path_factory.mktemp("faults") / "state"
    state.mkdir(mode=0o700)  # a deployment that names a git host: its credentials service runs too
    (state / "deployment.json").write_text(json.dumps({"services": {"credentials": {"git_hosts": ["git.example.org"]}}}))
    s = Stack(state, name="faults").start()
    s.first_ready_s = _first_ready(s.out)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def records(faulty):
    """A run, an object and a home file made before any fault."""
    faulty.add_user("fay")
    token = faulty.user_token("fay")
    model = faulty.spawn("fay", "cpu-small")
    key = f"faults/{uuid.uuid4().hex}"
    code = f"""
import boto3, mlflow, os, pathlib
pathlib.Path.home().joinpath("before-faults.txt").write_text("kept")
boto3.client("s3").put_object(Bucket=os.environ["ATELIER_SHARED_BUCKET"], Key={key!r}, Body=b"kept")
with mlflow.start_run(run_name="before-faults") as run:
    mlflow.log_metric("m", 7)
print(run.info.run_id)
"""
    run_id = run_code(faulty.url, model["url"], token, code).strip().splitlines()[-1]
    return {"run_id": run_id, "key": key, "token": token, "model": model}


def _lost(stack: Stack, records: dict) -> int:
    lost = 0
    try:
        lost += stack.mlflow().get_run(records["run_id"]).data.metrics.get("m") != 7
    except Exception:
        lost += 1
    try:
        lost += stack.s3().get_object(Bucket="atelier-shared", Key=records["key"])["Body"].read() != b"kept"
    except Exception:
        lost += 1
    home = stack.state / "homes" / "fay" / "before-faults.txt"
    lost += not home.exists() or home.read_text() != "kept"
    return lost


def test_the_login_page_is_routed_before_the_services_with_a_url_answer(faulty):
    """docs/admin-guide.md: "the login page is usable as soon as the hub is; slower services come up
    behind it". The regression this catches: the hub waiting for MLflow's front, the
    culler and the usage page to answer before it adds the proxy's route to itself (8 s
    of a quiet start, the login page a 404 meanwhile). Read from the first start's hub
    log: the hub's route is added before either the culler or MLflow's front says it
    listens (each a process that first has to import its code)."""
    lines = faulty.log.read_text(errors="replace").splitlines()

    def first(marker: str) -> int:
        found = [i for i, line in enumerate(lines) if marker in line]
        assert found, f"no line with {marker!r} in {faulty.log}"
        return found[0]

    routed = first("Adding route for Hub")
    assert routed < first("culler listening at"), tail(faulty.log)
    assert routed < first("MLflow front listening at"), tail(faulty.log)


@pytest.mark.parametrize("target", ["child", "supervisor"])
def test_kill_9_of_every_service_heals_within_a_minute(faulty, records, figures, target):
    stack = EmbeddedStack.load(faulty.state)
    since = faulty.log.stat().st_size
    killed = {}
    for svc in MANAGED:
        leader = pid_matches(stack.path(f"run/{svc.name}.pgid"))
        victim = leader if target == "child" else _supervisor_of(stack, svc.name)
        killed[svc.name] = (leader, victim)
        os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    call: dict = {}
    if target == "child":
        # A session's MLflow call made while MLflow restarts waits for it (bounded) and succeeds.
        def mlflow_call():
            try:
                call["out"] = run_code(faulty.url, records["model"]["url"], records["token"],
                                       "import mlflow\nprint(len(mlflow.search_experiments()) > 0)", timeout=240)
            except Exception as exc:  # noqa: BLE001 (reported below)
                call["out"] = repr(exc)
            call["s"] = round(time.monotonic() - t0, 1)

        caller = threading.Thread(target=mlflow_call)
        caller.start()
    healed = {}
    pending = {svc.name: svc for svc in MANAGED}
    while pending and time.monotonic() - t0 < 240:
        for name, svc in list(pending.items()):
            new = pid_matches(stack.path(f"run/{name}.pgid"))
            if new and new != killed[name][0] and svc.ready(stack):
                healed[name] = round(time.monotonic() - t0, 1)
                pending.pop(name)
        time.sleep(0.25)
    if target == "child":
        caller.join(300)
        figures("MLflow call during its restart", answered_after_s=call.get("s"))
        assert call.get("out", "").strip() == "True", call
    for svc in MANAGED:
        leader = killed[svc.name][0]
        orphans = int(group_alive(leader))
        loops = max(0, _restarts(faulty, svc.name, since) - 1)
        figures(f"kill -9 {svc.name} {target}", back_healthy_s=healed.get(svc.name, "never"),
                orphans=orphans, crash_loops=loops)
    assert not pending, f"not back: {sorted(pending)}\n{tail(faulty.log, 60)}"
    # Within a minute, or (on a machine so busy that the service's own first start took
    # longer) within one and a half of that first start: healing is a restart, not a hang.
    limits = {name: max(HEAL_LIMIT, 1.5 * faulty.first_ready_s.get(name, 0)) for name in healed}
    figures(f"kill -9 {target}s", heal_limits_s=limits)
    assert all(healed[name] <= limits[name] for name in healed), (healed, limits)
    assert all(not group_alive(leader) for leader, _ in killed.values()), "a killed group left an orphan"
    assert all(_restarts(faulty, name, since) <= 1 for name in killed), tail(faulty.log, 60)
    lost = _lost(faulty, records)
    figures(f"kill -9 {target}s", lost_records=lost)
    assert lost == 0
    # The session started before the faults still works against the healed services.
    out = run_code(faulty.url, records["model"]["url"], records["token"],
                   f"import mlflow; print(mlflow.get_run({records['run_id']!r}).data.metrics['m'])")
    assert out.strip() == "7.0"


DOWN = """
import json, os, time, boto3
t = time.monotonic()
try:
    boto3.client("s3").list_buckets(); s3_error = ""
except Exception as exc:
    s3_error = str(exc)
s3_s = time.monotonic() - t
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
t = time.monotonic()
try:
    spark.read.parquet(f"s3a://{os.environ['ATELIER_SHARED_BUCKET']}/while-down").count(); s3a_error = ""
except Exception as exc:
    s3a_error = str(exc)[:3000]  # the message first; Java's stack trace follows
s3a_s = time.monotonic() - t
spark.stop()
print(json.dumps({"s3_s": s3_s, "s3_error": s3_error, "s3a_s": s3a_s, "s3a_error": s3a_error,
                  "endpoint": os.environ["AWS_ENDPOINT_URL"]}))
"""


def test_a_service_that_is_down_fails_in_seconds_naming_its_endpoint(faulty, records, figures):
    """docs/user-guide.md: a service that is down fails in seconds with its endpoint in the
    message (boto3 and s3a retry a bounded number of times). The real S3 server is taken
    down (its supervisor paused so that it does not heal, the server killed), and the
    session's own clients, configured as always, meet it."""
    stack = EmbeddedStack.load(faulty.state)
    leader = pid_matches(stack.path("run/s3.pgid"))
    supervisor = _supervisor_of(stack, "s3")
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.killpg(leader, signal.SIGKILL)
        port = stack.ports["s3"]
        _wait(lambda: port_free(port), 30, "the S3 port to close")
        out = json.loads(run_code(faulty.url, records["model"]["url"], records["token"], DOWN,
                                  timeout=300).strip().splitlines()[-1])
    finally:
        os.kill(supervisor, signal.SIGCONT)
    figures("a service that is down", boto3_s=round(out["s3_s"], 1), s3a_s=round(out["s3a_s"], 1))
    assert out["endpoint"] == f"http://127.0.0.1:{port}"
    # Seconds, not minutes: boto3 and Hadoop's defaults retry for minutes (s3a: 7 tries
    # with back-off, each behind a connection timeout), the session's settings 3 times.
    assert out["s3_error"] and f"127.0.0.1:{port}" in out["s3_error"] and out["s3_s"] < 10, out
    # Hadoop's message names the path it read (on the shared bucket), not the endpoint.
    assert "s3a://atelier-shared/while-down" in out["s3a_error"] and out["s3a_s"] < 30, out
    # ... and it heals once its supervisor runs again.
    _wait(lambda: _s3_answers(faulty), HEAL_LIMIT, "S3 back after its supervisor resumed")
    assert _lost(faulty, records) == 0


def _s3_answers(stack: Stack) -> bool:
    try:
        stack.s3().list_buckets()
        return True
    except Exception:
        return False


def test_kill_9_of_the_hub_then_make_dev_again_cleans_up_and_readopts(faulty, records, figures):
    stack = EmbeddedStack.load(faulty.state)
    hub = pid_matches(stack.path(HUB_RECORD))
    groups = {svc.name: pid_matches(stack.path(f"run/{svc.name}.pgid")) for svc in MANAGED}
    seen = faulty.out.stat().st_size
    os.kill(hub, signal.SIGKILL)
    # atelier dev sees its hub die, ends what it left and exits with an error.
    assert faulty.proc.wait(120) == 2
    faulty.proc = None
    assert "the hub stopped unexpectedly" in faulty.out.read_bytes()[seen:].decode(errors="replace")
    orphans = sum(group_alive(pgid) for pgid in groups.values() if pgid)
    public_free = port_free(faulty.port)
    figures("kill -9 hub", orphans_after=orphans, public_port_freed=public_free)
    assert orphans == 0 and public_free

    # make dev again on the same state and port: no "port in use", the session is re-adopted.
    t0 = time.monotonic()
    faulty.start()
    figures("kill -9 hub", restart_to_ready_s=round(time.monotonic() - t0, 1))
    model = faulty.api("GET", "/users/fay").json()["servers"][""]
    assert model["ready"], model
    out = run_code(faulty.url, model["url"], records["token"], "import os; print(os.getpid() > 0)")
    assert out.strip() == "True"
    lost = _lost(faulty, records)
    figures("kill -9 hub", lost_records=lost, session_readopted=True)
    assert lost == 0


def _session_pids(user: str) -> list[int]:
    """Processes of ``user``'s sessions (the server and its kernels, a local process or
    in a container alike): they carry the hub's JUPYTERHUB_USER in their environment."""
    marker = f"JUPYTERHUB_USER={user}\0".encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_after_a_hub_killed_hard_a_session_whose_services_moved_is_stopped(faulty, records, figures):
    """The S3 port is taken while the hub is down, so the next start moves S3: the session
    still running points at a dead endpoint, and is stopped instead of re-adopted."""
    import socket

    stack = EmbeddedStack.load(faulty.state)
    assert _session_pids("fay"), "fay's session is not running before the test"
    os.kill(pid_matches(stack.path(HUB_RECORD)), signal.SIGKILL)
    assert faulty.proc.wait(120) == 2
    faulty.proc = None
    with socket.socket() as squatter:
        # SO_REUSEADDR: the old S3 server's connections may still be in TIME_WAIT.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", stack.ports["s3"]))
        squatter.listen()
        faulty.start()
        moved = EmbeddedStack.load(faulty.state).ports["s3"] != stack.ports["s3"]
        _wait(lambda: not _session_pids("fay"), 120, "the stale session's processes ending")
    servers = faulty.api("GET", "/users/fay").json()["servers"]
    figures("kill -9 hub, services moved", s3_moved=moved, stale_session_stopped="" not in servers)
    assert moved and "" not in servers, servers
    # fay starts again and gets the new endpoints; her records are intact.
    model = faulty.spawn("fay", "cpu-small")
    records["model"] = model
    assert _lost(faulty, records) == 0


@pytest.mark.alone  # its busy loops would slow the other worker's timing-sensitive tests
def test_a_start_with_both_cores_busy_comes_up(tmp_path, figures):
    """Two busy loops (bounded to 10 minutes) for the whole start."""
    hog = [subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<600: pass"])
           for _ in range(os.cpu_count() or 2)]
    try:
        s = Stack(tmp_path / "state", name="busy")
        t0 = time.monotonic()
        s.start(timeout=600)
        ready = time.monotonic() - t0
        login = _first_line_seconds(s.out, "login page ready in")
        figures("start, both cores busy", login_page_s=login, every_service_s=round(ready, 1))
        assert s.login("admin", (s.state / "initial-admin-password").read_text().strip())
        s.stop()
    finally:
        for p in hog:
            p.kill()


def _first_line_seconds(path: Path, marker: str) -> float | None:
    for line in path.read_text().splitlines():
        if marker in line:
            return float(line.split(marker, 1)[1].split()[0])
    return None


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """A 96 MB tmpfs for the state folder (root only: mount)."""
    mnt = tmp_path_factory.mktemp("small")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the full-disk test (needs root): {r.stderr.strip()}")
    yield mnt
    # The stacks' logs (the hub's, each service's) outlive the disk, for a failure's reading.
    import shutil

    for logs in mnt.glob("*/logs"):
        shutil.copytree(logs, OUTPUT / "small-disk-logs" / logs.parent.name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.sock"))
    # What holds the disk at the end (the largest folders and files), beside them.
    du = subprocess.run(["du", "-a", "-x", "--max-depth=6", str(mnt)], capture_output=True, text=True).stdout
    biggest = sorted((line.split("\t", 1) for line in du.splitlines() if "\t" in line), key=lambda x: -int(x[0]))[:40]
    (OUTPUT / "small-disk-logs").mkdir(parents=True, exist_ok=True)
    (OUTPUT / "small-disk-logs" / "du.txt").write_text("".join(f"{k}\t{v}\n" for k, v in biggest))
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="module")
def timed_out(small_disk):
    """A first `atelier dev` given 3 s (too short for anything but the hub's first lines),
    in a new state folder on the small disk: its outcome, and what it left behind."""
    state, port = small_disk / "state", free_port()
    r = subprocess.run([str(Path(sys.executable).with_name("atelier")), "dev", "--port", str(port),
                        "--state", str(state), "--timeout", "3"], capture_output=True, text=True, timeout=300)
    left = [p for p in Path("/proc").glob("[0-9]*") if _mentions(p, str(state))]
    return {"state": state, "port": port, "result": r, "left": left, "port_free": port_free(port)}


@pytest.fixture(scope="module")
def after_timeout(timed_out):
    """The next start in the same state folder, on the same port: the stack of both tests
    below (one start for the two). Trino is not what they check: it stays out, a JVM less."""
    s = Stack(timed_out["state"], port=timed_out["port"], name="after-timeout", args=("--without", "trino"))
    try:
        yield s.start()
    finally:
        s.stop()


def test_a_state_disk_that_fills_up_while_a_run_logs_artifacts_costs_no_earlier_data(after_timeout, figures):
    s = after_timeout
    s.add_user("dee")
    token = s.user_token("dee")
    model = s.spawn("dee", "cpu-small")
    code = r"""
import mlflow, os, pathlib, json, tempfile
with mlflow.start_run(run_name="before") as run:
    mlflow.log_metric("m", 1)
    pathlib.Path("small.txt").write_text("small")
    mlflow.log_artifact("small.txt")
first = run.info.run_id
error = ""
with mlflow.start_run(run_name="too-big") as big:
    mlflow.log_metric("m", 2)
    big_file = os.path.join(tempfile.mkdtemp(), "big.bin")   # off the state disk
    with open(big_file, "wb") as f:          # more than the state disk holds
        f.write(os.urandom(150 * 2**20))
    try:
        mlflow.log_artifact(big_file)
    except Exception as exc:
        error = type(exc).__name__ + ": " + str(exc)[:200]
os.remove(big_file)
print(json.dumps({"first": first, "big": big.info.run_id, "error": error}))
"""
    out = json.loads(run_code(s.url, model["url"], token, code, timeout=600).strip().splitlines()[-1])
    client = s.mlflow()
    before = client.get_run(out["first"])
    kept_artifacts = [a.path for a in client.list_artifacts(out["first"])]
    lost = int(before.data.metrics.get("m") != 1) + int(kept_artifacts != ["small.txt"])
    figures("state disk full", artifact_error=bool(out["error"]), lost_records=lost,
            hub_healthy=s.api("GET", "/").status_code == 200)
    assert out["error"], "a 150 MB artifact fitted on a 96 MB disk?"
    assert lost == 0
    assert client.get_run(out["big"]).data.metrics["m"] == 2  # the run itself was recorded
    # With the space back, the same session logs again.
    again = run_code(s.url, model["url"], token,
                     "import mlflow\nwith mlflow.start_run() as r:\n    mlflow.log_metric('m', 3)\nprint(r.info.run_id)")
    assert client.get_run(again.strip().splitlines()[-1]).data.metrics["m"] == 3
    # The room comes back whole: MLflow's server may still be sending the artifact's last
    # try to S3 after the client gave up (each try aborted), so wait for it, and say how
    # long it took (the next test starts a job on this disk).
    waited, t0 = 0.0, time.monotonic()
    while (free := os.statvfs(s.state).f_bavail * os.statvfs(s.state).f_frsize) < 64 * 2**20:
        waited = time.monotonic() - t0
        assert waited < 120, f"the state disk still has only {free / 2**20:.0f} MB free after {waited:.0f} s"
        time.sleep(1)
    figures("state disk full", space_back_s=round(time.monotonic() - t0, 1))


def test_a_job_that_fills_the_home_fails_saying_so_and_costs_the_hub_nothing(after_timeout):
    """A job on the same 96 MB state disk (the homes are on it too) fills it: `atelier run`
    exits 1 with the job's output and a last line saying the home is full, `atelier jobs`
    records it failed, and the hub goes on serving; deleting the file gives the room back."""
    s = after_timeout
    s.add_user("eve")
    token = s.user_token("eve")
    big = s.state / "homes" / "eve" / "big"
    try:
        r = s.atelier(token, "run", "--profile", "cpu-small", "--name", "fill", "--",
                      "sh", "-c", "echo start; cat /dev/zero > big; echo done", timeout=600)
        assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
        assert r.stdout.startswith("start\n"), r.stdout[:500]
        # Its last lines (a line on the job's MLflow runs may follow: their listing is tried after it).
        assert any(line.startswith("atelier: your home is full (") for line in r.stdout.splitlines()[-3:]), \
            r.stdout[-1000:]
        assert "so the job failed (exit code 1)" in r.stdout
        listing = s.atelier(token, "jobs")
        row = next(line.split() for line in listing.stdout.splitlines() if line.startswith("fill"))
        assert row[2] == "failed" and row[-1] == "1", listing.stdout
        assert s.api("GET", "/").status_code == 200
    finally:
        big.unlink(missing_ok=True)


def test_a_start_that_times_out_leaves_nothing_running_and_keeps_the_password(timed_out, after_timeout, figures):
    r, state = timed_out["result"], timed_out["state"]
    assert r.returncode == 2, r.stdout + r.stderr
    assert "nothing is left running" in r.stderr
    password_file = state / "initial-admin-password"
    assert password_file.exists() and str(password_file) in r.stderr
    figures("start timed out", processes_left=len(timed_out["left"]), port_free=timed_out["port_free"])
    assert timed_out["left"] == [] and timed_out["port_free"]
    # The next start (after_timeout) works, with the same first password.
    assert after_timeout.login("admin", password_file.read_text().strip())


def _mentions(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes() and start_time(int(proc.name)) is not None
    except OSError:
        return False
