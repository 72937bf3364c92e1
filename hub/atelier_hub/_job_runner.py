"""A job's runner, in the job's container in place of jupyterhub-singleuser (stdlib only).

Run by the image's Python after its start hook (so the session files and the user's
package layer are there, as in a session) with one argument, JSON:
``{"name": ..., "command": [...], "cwd": ...}`` (a notebook job: ``"notebook"`` and
``"parameters"`` too; ``"timeout"``, seconds, where the user gave one: the command
is then ended with a line in its log, exit code 124). It runs the command in the home's
``cwd`` with its output (stdout and stderr, in order) in
``~/.atelier/jobs/NAME/output.log``, and writes its exit code to ``exit-code`` there,
so both outlive the container (a job that fills the home gets a last line saying so, in
room the runner kept from its start); ``repro.start_run()`` in the job lists its runs in
``runs.jsonl`` there (``REPRO_RUNS_FILE``). Every MLflow run the job starts, however it
starts it, carries the job's tags (``atelier.job``, ``atelier.job.started``,
``atelier.profile``) through MLflow's own ``MLFLOW_RUN_CONTEXT``; once the command ended,
the runner asks MLflow (as the user, its REST API) for the runs with them and adds those
repro did not list to ``runs.jsonl``, before it writes the exit code. Meanwhile it answers HTTP at the server's address
(``JUPYTERHUB_SERVICE_URL``) with the job's state: the hub waits for a server to answer
before it counts it as started, and a job's container runs no Jupyter server. It ends
with the command's exit code once the hub has seen it answer (or after a minute).
With ``ATELIER_JOB_TEE=1`` (a pod on a cluster, whose home the hub cannot read) the
output also goes to the runner's own stdout, the pod's log, as it comes, and the runs it
lists go to the container's termination message (``/dev/termination-log``, at most
4 KiB: the first runs, whole lines), which the pod's status keeps for the hub.
"""

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

# A notebook job's command: executes the notebook with the image's python3 kernel, the
# parameters in a cell after the one tagged "parameters" (first, where none is), and
# saves it with its outputs, even when a cell fails (its traceback is in the log too).
NOTEBOOK = """
import json, os, sys
import nbformat
from nbclient import NotebookClient
src, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
nb = nbformat.read(src, as_version=4)
if params:
    cell = nbformat.v4.new_code_cell("# Parameters (atelier run -p)\\n" + "".join(
        f"{k} = {v!r}\\n" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    at = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    nb.cells.insert(at, cell)
print(f"executing {src} -> {out}", flush=True)
client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(src) or "."}})
try:
    client.execute()
finally:
    nbformat.write(nb, out)
    print(f"saved {out}", flush=True)
"""


def run_context(env: dict, *, name: str, started: str) -> str:
    """``MLFLOW_RUN_CONTEXT`` for the job: the user's own tags (where theirs is a JSON
    object) and the job's.

    >>> run_context({"MLFLOW_RUN_CONTEXT": '{"team": "nlp"}', "ATELIER_PROFILE": "gpu-1"}, name="t", started="1")
    '{"team": "nlp", "atelier.job": "t", "atelier.job.started": "1", "atelier.profile": "gpu-1"}'
    """
    try:
        tags = json.loads(env.get("MLFLOW_RUN_CONTEXT") or "{}")
    except ValueError:
        tags = {}
    tags = tags if isinstance(tags, dict) else {}
    tags.update({"atelier.job": name, "atelier.job.started": started})
    if env.get("ATELIER_PROFILE"):
        tags["atelier.profile"] = env["ATELIER_PROFILE"]
    return json.dumps(tags)


def _mlflow(env: dict, call: str, body: dict) -> dict:
    uri = env["MLFLOW_TRACKING_URI"].rstrip("/")
    headers = {"Content-Type": "application/json"}
    if env.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
    request = Request(f"{uri}/api/2.0/mlflow/{call}", data=json.dumps(body).encode(), headers=headers)
    context = ssl.create_default_context(cafile=env.get("REQUESTS_CA_BUNDLE") or None) \
        if uri.startswith("https:") else None
    with urlopen(request, timeout=30, context=context) as answer:
        return json.loads(answer.read() or b"{}")


def _all_pages(env: dict, call: str, body: dict, key: str) -> list[dict]:
    """Every item under ``key`` of a paged MLflow search, 1000 at a time."""
    items, token = [], None
    while True:
        page = _mlflow(env, call, {**body, "max_results": 1000, **({"page_token": token} if token else {})})
        items += page.get(key, [])
        if not (token := page.get("next_page_token")):
            return items


def link_runs(env: dict, runs_file: Path, *, name: str, started: str) -> int:
    """Add to ``runs_file`` the job's MLflow runs that it does not list yet (those not
    started by repro), oldest first; how many. Only over HTTP(S) with MLflow configured."""
    if not env.get("MLFLOW_TRACKING_URI", "").startswith(("http:", "https:")):
        return 0
    experiments = [e["experiment_id"] for e in _all_pages(env, "experiments/search", {}, "experiments")]
    where = f"tags.`atelier.job` = '{name}' and tags.`atelier.job.started` = '{started}'"
    found = [r["info"] for i in range(0, len(experiments), 100)
             for r in _all_pages(env, "runs/search", {"experiment_ids": experiments[i:i + 100], "filter": where},
                                 "runs")]
    try:
        listed = {json.loads(line).get("run_id") for line in runs_file.read_text().splitlines() if line.strip()}
    except (OSError, ValueError):
        listed = set()
    new = [r for r in sorted(found, key=lambda r: int(r.get("start_time") or 0)) if r["run_id"] not in listed]
    with open(runs_file, "a") as f:
        for r in new:
            f.write(json.dumps({"run_id": r["run_id"], "experiment_id": r["experiment_id"], "spooled": False}) + "\n")
    return len(new)


#: Kubernetes' default terminationMessagePath; the kubelet keeps at most 4 KiB of it
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MAX = 4096


def termination_message(runs_file: Path, out: Path) -> None:
    """The first whole lines of ``runs_file`` that fit in a termination message, written to
    ``out`` (nothing where there is no such file: not a pod).

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "runs").write_text("".join(f'{{"run_id": "{i:032x}"}}\\n' for i in range(200)))
    >>> (d / "msg").touch(); termination_message(d / "runs", d / "msg")
    >>> text = (d / "msg").read_text(); len(text) <= 4096, text.endswith("\\n"), len(text.splitlines())
    (True, True, 87)
    """
    if not out.exists():
        return
    try:
        lines = runs_file.read_text().splitlines(keepends=True)
    except OSError:
        return
    kept, size = [], 0
    for line in lines:
        if size + len(line.encode()) > TERMINATION_MAX:
            break
        kept.append(line)
        size += len(line.encode())
    try:
        out.write_text("".join(kept))
    except OSError:
        pass  # the runs stay on the home; only the page's links are missing


def command_of(spec: dict) -> list[str]:
    """What the job runs: its command, or the notebook's execution."""
    if spec.get("notebook"):
        nb = spec["notebook"]
        out = str(Path(nb).with_name(f"{spec['name']}.out.ipynb"))
        return [sys.executable, "-c", NOTEBOOK, nb, out, json.dumps(spec.get("parameters") or {})]
    return spec["command"]


#: a job ended by its --timeout exits with this code (as coreutils' timeout does)
TIMED_OUT = 124
#: seconds between SIGTERM and SIGKILL when a job is ended
GRACE = 10


def _end(child: subprocess.Popen, *, grace: float) -> None:
    """SIGTERM to the command's group, SIGKILL after ``grace`` seconds if it is still there."""
    def kill(sig):
        try:
            os.killpg(child.pid, sig)
        except OSError:
            pass
    kill(signal.SIGTERM)
    timer = threading.Timer(grace, lambda: child.poll() is None and kill(signal.SIGKILL))
    timer.daemon = True
    timer.start()


def _watch(child: subprocess.Popen, timeout, log) -> threading.Event:
    """Ends ``child`` after ``timeout`` seconds (none: never), with a line in the log;
    the event says whether it did."""
    fired = threading.Event()
    if timeout:
        def expire():
            if child.poll() is None:
                fired.set()
                log.write(f"\natelier: the job ran past its --timeout of {_human(timeout)} and was ended "
                          f"(exit code {TIMED_OUT})\n".encode())
                _end(child, grace=GRACE)
        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
    return fired


class _Both:
    """The log file, and the runner's stdout beside it (a pod's log)."""

    def __init__(self, log):
        self.log = log
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.log.write(data)
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except OSError:
                pass  # the pod's log is a copy: the file on the home is the record

    def fileno(self) -> int:
        return self.log.fileno()


def _tee(pipe, both: _Both) -> threading.Thread:
    """Copies the command's output to ``both`` as it comes."""

    def copy():
        while True:
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            both.write(chunk)

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def _human(seconds: int) -> str:
    """``90`` -> ``90 s``, ``7200`` -> ``2 h``: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


#: a job's exit code where its home filled up and its command said 0
HOME_FULL = 1
#: room kept on the home from the start, given back if the job fills the home: enough
#: for the line that says so, the exit code, and the hub's own records of the job's end
RESERVE = 256 << 10


def _keep_room(path: Path) -> None:
    try:
        with open(path, "wb") as f:
            f.write(bytes(RESERVE))
    except OSError:
        path.unlink(missing_ok=True)  # a home full already: nothing to keep


def _home_full(folder: Path) -> int | None:
    """The bytes left where the job writes, where that is less than the reserve; else None."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    return free if free < RESERVE else None


def main(spec: dict) -> int:
    home = Path.home()
    folder = home / ".atelier" / "jobs" / spec["name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "exit-code").unlink(missing_ok=True)
    (folder / "runs.jsonl").unlink(missing_ok=True)
    reserve = folder / "reserve"
    _keep_room(reserve)
    seen = threading.Event()
    state = {"job": spec["name"], "running": True, "exit_code": None}

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps(state).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            seen.set()

        def log_message(self, *args):
            pass

    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))
    if url.port:
        server = ThreadingHTTPServer((url.hostname or "127.0.0.1", url.port), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    else:
        seen.set()
    cwd = home / spec.get("cwd", "")
    # repro.start_run() lists each run it starts there: the jobs page links them.
    started = str(int(time.time() * 1000))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ATELIER_JOB": spec["name"],
           "REPRO_RUNS_FILE": str(folder / "runs.jsonl")}
    env["MLFLOW_RUN_CONTEXT"] = run_context(env, name=spec["name"], started=started)
    tee = os.environ.get("ATELIER_JOB_TEE") == "1"
    with open(folder / "output.log", "wb", buffering=0) as log:
        if tee:
            log = _Both(log)
        if not cwd.is_dir():
            log.write(f"atelier: the job's folder {cwd} does not exist on your home (--cwd)\n".encode())
            code = 2
        else:
            try:
                # Its own process group, so that a timeout ends the command and what it
                # started, and not this runner.
                child = subprocess.Popen(command_of(spec), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE if tee else log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            except OSError as exc:
                log.write(f"atelier: cannot run {spec['command'][0]!r}: {exc.strerror}\n".encode())
                code = 127
            else:
                copier = _tee(child.stdout, log) if tee else None
                # A stop (cancel, max_age, the hub's shutdown) sends SIGTERM: hand it to the
                # command's group, wait for it to end, then record its code.
                signal.signal(signal.SIGTERM, lambda *_: _end(child, grace=GRACE))
                timed_out = _watch(child, spec.get("timeout"), log)
                code = child.wait()
                code = TIMED_OUT if timed_out.is_set() else (128 - code if code < 0 else code)
                if copier is not None:
                    # What the command wrote last; a process it left behind may hold the pipe.
                    copier.join(5)
    free = _home_full(folder)
    reserve.unlink(missing_ok=True)
    if free is not None:
        # The home filled up: what the job wrote last may be cut short, so it fails (even
        # where its command said 0). The command's own complaint may not have fitted in its
        # log; with the reserve given back, this line and the exit code do.
        code = code or HOME_FULL
        with open(folder / "output.log", "ab") as log:
            (_Both(log) if tee else log).write(
                f"\natelier: your home is full ({free} bytes free), so the job failed (exit code {code}): what it "
                f"wrote last may be cut short. Free some space (`du -sh ~/* ~/.[!.]*` shows what takes it) and "
                f"run it again\n".encode())
    try:
        link_runs(env, folder / "runs.jsonl", name=spec["name"], started=started)
    except (OSError, ValueError, KeyError) as exc:
        with open(folder / "output.log", "ab") as log:
            (_Both(log) if tee else log).write(
                f"atelier: the job's MLflow runs could not be listed for its page ({exc})\n".encode())
    if tee:
        termination_message(folder / "runs.jsonl", Path(TERMINATION_LOG))
    tmp = folder / "exit-code.tmp"
    tmp.write_text(f"{code}\n")
    tmp.replace(folder / "exit-code")
    state.update(running=False, exit_code=code)
    seen.wait(60)
    time.sleep(0.2)  # the answer's last bytes
    return code


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
