"""The culling window: one stack, one timeline, for every test that waits for the culler.

tests/integration/test_idle_culling.py and tests/browser/test_cull_warning.py each wait
for real idle timeouts (minutes of sleeping). Run back to back they took ~8 min; here
their servers start together on one stack, so their waits overlap. The two files are one
xdist group (tests/conftest.py's CULL_GROUP: one worker, one stack), and the browser
file's test runs first: while it drives JupyterLab in the foreground, the idle-culling
scenarios run in background threads, each recording what it saw (monotonic times,
server models, the audit at the moment that matters). The idle-culling tests then assert
on those records, each as strictly as when it waited on its own.

Every server is started through the hub's REST API (or `atelier vscode`) and observed
from outside; the culler, the sessions' activity reports and the hub are the real ones.

Profiles (a test profiles folder): `quick` (a CPU profile, 30 s), `gpu-like` (a CPU
profile with a GPU profile's shorter timeout, 15 s: this machine may have no GPU),
`remote` (quick's, for the SSH scenario's server), `lab` (75 s, warned 50 s before,
for the browser's warning), and for the home page's test (tests/browser/test_home_page.py)
`home-priced` (10 min, with a price) and `home-plain` (15 min, none). The sessions sample their
activity every 5 s and the culler checks every 5 s (both follow the shortest timeout), as
they would every minute for real ones.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

from atelier_hub.connect import ssh_alias
from stack import VENV_BIN, Stack, browser_session
from websockets.sync.client import connect

QUICK, GPU_LIKE = 30, 15
LAB_TIMEOUT, LAB_WARN = 75, 50
PROFILES = {
    "quick": f"""name: quick
display_name: Quick CPU
default: true
cpu: {{limit: 1}}
memory: {{limit: 1G}}
culling: {{idle_timeout: {QUICK}, warn_before: 10}}
""",
    "gpu-like": f"""# A CPU profile with a GPU profile's shorter timeout (no GPU needed on this machine).
name: gpu-like
display_name: GPU-like
cpu: {{limit: 2}}
memory: {{limit: 2G}}
culling: {{idle_timeout: {GPU_LIKE}, warn_before: 5}}
""",
    # quick's timeout, for the SSH user's server: a profile of its own, so that `atelier
    # usage`'s quick and gpu-like totals, checked while it runs, are the idle test's alone.
    "remote": f"""name: remote
display_name: Quick CPU over SSH
cpu: {{limit: 1}}
memory: {{limit: 1G}}
culling: {{idle_timeout: {QUICK}, warn_before: 10}}
""",
    "lab": f"""name: lab
display_name: Lab (short timeout)
cpu: {{limit: 1}}
memory: {{limit: 2G}}
culling: {{idle_timeout: {LAB_TIMEOUT}, warn_before: {LAB_WARN}}}
""",
    # The home page's two servers (tests/browser/test_home_page.py): long timeouts, so that
    # the culler's plan for them stays "keep" while the page is read; 60 an hour in all
    # for home-priced (1 CPU at 30, 1 GB at 30): a minute costs 1.00.
    "home-priced": """name: home-priced
display_name: Home priced
cpu: {limit: 1}
memory: {limit: 1G}
culling: {idle_timeout: 600}
price: {cpu_hour: 30, memory_gb_hour: 30}
""",
    "home-plain": """name: home-plain
display_name: Home plain
cpu: {limit: 2}
memory: {limit: 2G}
culling: {idle_timeout: 900}
""",
}
# The one user of the single-user mode; container mode takes it too. Its named servers
# in this window: busy, gpu, idle, w (the browser's) and after: the hub's limit is 5.
USER = "admin"
SSH_USER = "sshu"
# How long the open SSH session is held before it is checked (two timeouts and a half).
SSH_HOLD = 2 * QUICK + 30


def server_model(stack: Stack, server: str, user: str = USER) -> dict | None:
    return stack.api("GET", f"/users/{user}").json()["servers"].get(server)


def wait_stopped(stack: Stack, server: str, *, within: float, user: str = USER) -> float:
    """Seconds (monotonic clock) at which ``server`` was seen stopped; fails after ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        model = server_model(stack, server, user)
        if model is None or (not model["ready"] and not model["pending"]):
            return time.monotonic()
        time.sleep(1)
    raise AssertionError(f"{server} still running after {within:.0f} s:\n{stack.hub_log(80)}")


def contents(stack: Stack, model: dict, path: str, method: str = "GET", **kw):
    r = stack.http.request(method, f"{model['url']}api/contents/{path}",
                           headers={"Authorization": f"token {stack.admin_token}"}, timeout=60, **kw)
    r.raise_for_status()
    return r.json()


def audit(stack: Stack) -> list[dict]:
    path = stack.state / "logs" / "culler-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start_busy_loop(stack: Stack, model: dict) -> None:
    """A kernel running a silent loop (no output, so Jupyter's own activity does not move),
    and then no client at all: the websocket is closed."""
    headers = {"Authorization": f"token {stack.admin_token}"}
    api = f"{model['url']}api"
    kernel = stack.http.post(f"{api}/kernels", json={"name": "python3"}, headers=headers, timeout=60).json()
    ws_url = f"{api}/kernels/{kernel['id']}/channels".replace("http://", "ws://", 1)
    msg_id = uuid.uuid4().hex
    with connect(ws_url, additional_headers=headers, open_timeout=60) as ws:
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": "import time\nwhile True:\n    time.sleep(0.5)", "silent": False,
                        "store_history": False, "user_expressions": {}, "allow_stdin": False},
        }))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the kernel says it is busy with it
            msg = json.loads(ws.recv(timeout=60))
            if (msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "busy"):
                return
    raise AssertionError("the kernel never went busy")


# -- the scenarios, each in a thread of its own, each with its own HTTP session ----------------


def _busy(s: Stack) -> dict:
    """Started first, checked last: the busy server lives through the other culls."""
    model = s.spawn(USER, "quick", server="busy")
    start_busy_loop(s, model)
    return {"model": model, "t0": time.monotonic()}


def _idle(s: Stack) -> dict:
    """Two idle servers, the shorter timeout first; the idle one's file is written as soon
    as it is ready (its last activity); then both are watched until they stop."""
    runs = {}
    for server, profile in (("gpu", "gpu-like"), ("idle", "quick")):
        t = time.monotonic()
        runs[server] = {"profile": profile, "requested": t, "model": s.spawn(USER, profile, server=server)}
        runs[server]["ready"] = time.monotonic()
        # The session's own view (Jupyter Server's /api/status, which is no activity itself):
        # its last activity, from which the culler counts, not from the hub's ready sighting.
        r = s.http.get(f"{runs[server]['model']['url']}api/status", timeout=60,
                       headers={"Authorization": f"token {s.admin_token}"})
        r.raise_for_status()
        runs[server]["status"] = r.json()
    marker = f"written before the cull {uuid.uuid4().hex}"
    contents(s, runs["idle"]["model"], "before-cull.txt", "PUT",
             json={"type": "file", "format": "text", "content": marker})
    written = time.monotonic()
    runs["gpu"]["stopped"] = wait_stopped(s, "gpu", within=GPU_LIKE + 90)
    runs["idle"]["stopped"] = wait_stopped(s, "idle", within=QUICK + 90)
    return {"runs": runs, "marker": marker, "written": written}


def _ssh(s: Stack, home: Path) -> dict:
    """VS Code's Remote-SSH way (the real OpenSSH client through `atelier ssh-proxy` and the
    hub): a shell left open with nothing running, held for two timeouts and a half; what
    was seen then; then it is closed and the server watched until it stops."""
    s.add_user(SSH_USER)
    home.mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "ATELIER_HUB_URL": s.url, "ATELIER_TOKEN": s.user_token(SSH_USER),
           "XDG_CONFIG_HOME": str(home / ".config")}
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    config = home / "ssh_config"
    r = subprocess.run([str(VENV_BIN / "atelier"), "vscode", "--profile", "remote", "--ssh-config", str(config),
                        "--no-open"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{s.hub_log()}"
    conn = subprocess.Popen(["ssh", "-F", str(config), "-o", "BatchMode=yes", ssh_alias(user=SSH_USER), "sleep 900"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    opened = time.monotonic()
    try:
        time.sleep(SSH_HOLD)
        seen = {"held": time.monotonic() - opened, "ssh_ended": conn.poll() is not None,
                "model": server_model(s, "", SSH_USER), "audit": audit(s)}
        if seen["ssh_ended"]:
            seen["ssh_stderr"] = conn.stderr.read()
    finally:
        conn.terminate()
        conn.wait(30)
    seen["closed"] = time.monotonic()
    seen["stopped"] = wait_stopped(s, "", within=QUICK + 120, user=SSH_USER)
    return seen


class Window:
    """The shared stack and the scenarios running on it."""

    def __init__(self, root: Path):
        profiles = root / "profiles"
        profiles.mkdir(parents=True)
        for name, text in PROFILES.items():
            (profiles / f"{name}.yaml").write_text(text)
        self.root = root
        self.stack = Stack(root / "state", name="culling", args=("--without", "trino", "--profiles", str(profiles)))
        self._threads: dict[str, threading.Thread] = {}
        self._results: dict[str, tuple[bool, object]] = {}
        self.closed = False

    def start(self) -> Window:
        s = self.stack.start()
        # The hub learns of the admin (created in users.json) as it does at a first login.
        assert s.api("POST", f"/users/{USER}").status_code in (201, 409)
        self._run("busy", _busy)
        self._run("idle", _idle)
        if s.mode == "container":  # the session's sshd needs container sessions; the test says so
            self._run("ssh", _ssh, self.root / "laptop")
        return self

    def _client(self) -> Stack:
        """The stack, with an HTTP session of its own (one thread's)."""
        c = copy.copy(self.stack)
        c.http = browser_session()
        return c

    def _run(self, name: str, scenario, *args) -> None:
        client = self._client()

        def body():
            try:
                self._results[name] = (True, scenario(client, *args))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test that asks
                self._results[name] = (False, exc)

        thread = threading.Thread(target=body, name=f"culling-{name}", daemon=True)
        self._threads[name] = thread
        thread.start()

    def result(self, name: str, timeout: float = 900) -> dict:
        """What scenario ``name`` recorded, once it has finished; its failure, raised here."""
        thread = self._threads[name]
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"the {name} scenario is still running after {timeout:.0f} s more")
        ok, value = self._results[name]
        if not ok:
            raise value
        return value

    def wait_all(self, timeout: float = 900) -> None:
        """Until every scenario has finished (whatever each found)."""
        for thread in self._threads.values():
            thread.join(timeout)

    def close(self) -> None:
        """Waits for the scenarios still running, stops the busy server, stops the stack."""
        if self.closed:
            return
        self.closed = True
        self.wait_all()
        busy_started = self._results.get("busy", (False, None))[0]
        try:
            if busy_started and self.stack.proc and server_model(self.stack, "busy"):
                self.stack.stop_server(USER, "busy")
        finally:
            self.stack.stop()
