"""Idle culling through the real hub: per-profile timeouts, a busy kernel outlives them,
homes survive, and `atelier usage` adds up what ran.

A test profiles folder gives short timeouts: `quick` (a CPU profile, 30 s) and
`gpu-like` (a CPU profile with a GPU profile's shorter timeout, 15 s: this machine may
have no GPU). The sessions then sample their activity every 5 s and the culler checks
every 5 s (both follow the shortest timeout), as they would every minute for real ones. Every server is started
through the hub's REST API and observed from outside; the culler, the sessions' activity reports and the hub are the real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest
from atelier_hub.connect import ssh_alias
from stack import VENV_BIN, Stack
from websockets.sync.client import connect

pytestmark = pytest.mark.integration

QUICK, GPU_LIKE = 30, 15
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
}
USER = "admin"  # the one user of the single-user mode; container mode takes it too


@pytest.fixture(scope="module")
def cull_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("culling")
    profiles = root / "profiles"
    profiles.mkdir()
    for name, text in PROFILES.items():
        (profiles / f"{name}.yaml").write_text(text)
    s = Stack(root / "state", name="culling", args=("--without", "trino", "--profiles", str(profiles))).start()
    # The hub learns of the admin (created in users.json) as it does at a first login.
    assert s.api("POST", f"/users/{USER}").status_code in (201, 409)
    yield s
    s.stop()


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


def usage_json(stack: Stack) -> dict:
    """`atelier usage --format json`, the real command."""
    out = subprocess.run([str(VENV_BIN / "atelier"), "usage", "--state", str(stack.state), "--format", "json"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out)


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


@pytest.fixture(scope="module")
def busy(cull_stack):
    """Started first, checked last: the busy server lives through the other tests' culls."""
    model = cull_stack.spawn(USER, "quick", server="busy")
    start_busy_loop(cull_stack, model)
    t0 = time.monotonic()
    yield model, t0
    if server_model(cull_stack, "busy"):
        cull_stack.stop_server(USER, "busy")


def test_idle_servers_stop_after_their_profiles_timeouts_and_homes_survive(cull_stack, busy):
    s = cull_stack
    runs = {}
    # The shorter timeout first: the idle server's file is written as soon as it is ready.
    for server, profile in (("gpu", "gpu-like"), ("idle", "quick")):
        t = time.monotonic()
        runs[server] = {"profile": profile, "requested": t, "model": s.spawn(USER, profile, server=server)}
        runs[server]["ready"] = time.monotonic()
    marker = f"written before the cull {uuid.uuid4().hex}"
    contents(s, runs["idle"]["model"], "before-cull.txt", "PUT",
             json={"type": "file", "format": "text", "content": marker})
    written = time.monotonic()

    runs["gpu"]["stopped"] = wait_stopped(s, "gpu", within=GPU_LIKE + 90)
    runs["idle"]["stopped"] = wait_stopped(s, "idle", within=QUICK + 90)
    gpu_after = runs["gpu"]["stopped"] - runs["gpu"]["ready"]
    idle_after = runs["idle"]["stopped"] - written
    print(f"gpu-like stopped {gpu_after:.0f} s after ready (timeout {GPU_LIKE}); "
          f"quick stopped {idle_after:.0f} s after its last activity (timeout {QUICK})")
    assert GPU_LIKE <= gpu_after, "stopped before its timeout"
    assert QUICK - 5 <= idle_after, "stopped before its timeout"  # the write's hub round trip
    assert runs["gpu"]["stopped"] < runs["idle"]["stopped"]

    lines = audit(s)
    culls = {line["server"]: line for line in lines if line["action"] == "cull"}
    assert {"idle", "gpu"} <= {name.split("/")[-1] for name in culls}, lines
    gpu_line = next(v for k, v in culls.items() if k.endswith("gpu"))
    assert gpu_line["profile"] == "gpu-like" and f"idle_timeout of {GPU_LIKE} s" in gpu_line["reason"]
    # Each cull was decided soon after the server fell due (the audit has both moments):
    # the culler checks every 5 s when a timeout is this short. One checking every minute,
    # as the stock culler does, would be up to 60 s late; 15 s leaves a loaded machine room.
    for name in ("idle", "gpu"):
        line = next(v for k, v in culls.items() if k.endswith(name))
        late = (datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
                - datetime.fromisoformat(line["cull_at"].replace("Z", "+00:00"))).total_seconds()
        assert 0 <= late <= 15, (name, late, line)
    assert "Stopping admin/idle (profile quick): idle for" in s.hub_log(400)

    # The home outlives the cull: the next start, on the other profile, reads the file.
    again = s.spawn(USER, "gpu-like", server="after")
    assert contents(s, again, "before-cull.txt")["content"] == marker
    s.stop_server(USER, "after")
    runs["after"] = {"profile": "gpu-like", "requested": 0, "ready": 0, "stopped": 0}

    # `atelier usage` adds up the runs: each between the test's own ready and stop sightings
    # (the hub records them inside those moments), within the test's polling tolerance.
    usage = usage_json(s)
    assert usage["by_profile"]["gpu-like"]["servers"] == 2 and usage["by_user"][USER]["servers"] >= 3
    quick_hours = usage["by_profile"]["quick"]["hours"]
    # quick: the idle server (done) and the busy one (still running, counted until now)
    idle_run = (runs["idle"]["stopped"] - runs["idle"]["requested"]) / 3600
    busy_run = (time.monotonic() - busy[1]) / 3600
    assert quick_hours <= idle_run + busy_run + 60 / 3600 + 0.01
    assert quick_hours >= (runs["idle"]["stopped"] - runs["idle"]["ready"] - 10) / 3600
    # The admins' page (a hub service, behind hub auth) shows the same totals, read a moment
    # later (the busy server still runs, so its hours grow a little).
    page = s.http.get(f"{s.url}/services/usage/api/usage", headers={"Authorization": f"token {s.admin_token}"},
                      timeout=60)
    assert page.status_code == 200, page.text
    shown = page.json()
    assert shown["by_profile"]["gpu-like"] == usage["by_profile"]["gpu-like"]
    assert shown["by_profile"]["quick"]["hours"] == pytest.approx(quick_hours, abs=120 / 3600)
    html = s.http.get(f"{s.url}/services/usage/", headers={"Authorization": f"token {s.admin_token}"},
                      timeout=60).text
    assert f'data-user="{USER}"' in html and "CPU-hours per user" in html
    # A user who is not an admin is refused (a real second hub user, with their own token).
    assert s.api("POST", "/users/mallory").status_code in (201, 409)
    theirs = s.api("POST", "/users/mallory/tokens", json={"expires_in": 600}).json()["token"]
    refused = s.http.get(f"{s.url}/services/usage/api/usage", headers={"Authorization": f"token {theirs}"},
                         timeout=60)
    assert refused.status_code == 403, refused.text

    # gpu-like: 2 CPUs, 2 GB (each figure is rounded to 4 decimals on its own)
    assert usage["by_profile"]["gpu-like"]["cpu_hours"] == pytest.approx(
        2 * usage["by_profile"]["gpu-like"]["hours"], abs=1e-3)
    assert usage["by_profile"]["gpu-like"]["memory_gb_hours"] == pytest.approx(
        2 * usage["by_profile"]["gpu-like"]["hours"], abs=1e-3)


def test_a_busy_kernel_with_no_browser_outlives_three_timeouts(cull_stack, busy):
    s = cull_stack
    model, t0 = busy
    remaining = 3 * QUICK + 30 - (time.monotonic() - t0)
    if remaining > 0:
        time.sleep(remaining)
    alive = server_model(s, "busy")
    assert alive and alive["ready"], f"the busy server was stopped:\n{s.hub_log(80)}"
    kept = [line for line in audit(s) if line["server"].endswith("busy") and line["signal"] == "kernel-busy"]
    assert kept, audit(s)
    assert "kept alive by kernel-busy: 1 kernel(s) busy" in kept[-1]["reason"]
    assert "Keeping admin/busy (profile quick): kept alive by kernel-busy" in s.hub_log(2000)
    # The hub's own idea of its activity is older than the timeout: only the signal kept it.
    last = datetime.fromisoformat(alive["last_activity"].replace("Z", "+00:00"))
    print(f"busy server alive {time.monotonic() - t0:.0f} s; hub last activity "
          f"{(datetime.now(timezone.utc) - last).total_seconds():.0f} s ago")


def test_an_open_ssh_session_keeps_a_server_alive_until_it_closes(cull_stack, tmp_path):
    """VS Code's Remote-SSH way (the real OpenSSH client through `atelier ssh-proxy` and the
    hub, as tests/integration/test_vscode_ssh.py sets it up): a shell left open with nothing
    running keeps the server past two timeouts; once it closes, the server stops."""
    s = cull_stack
    if s.mode != "container":
        pytest.fail(f"the stack runs {s.mode} sessions: the session's sshd needs container sessions "
                    "(`make install` builds the images)")
    user = "sshu"
    s.add_user(user)
    home = tmp_path / "laptop"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "ATELIER_HUB_URL": s.url, "ATELIER_TOKEN": s.user_token(user),
           "XDG_CONFIG_HOME": str(home / ".config")}
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    config = home / "ssh_config"
    r = subprocess.run([str(VENV_BIN / "atelier"), "vscode", "--profile", "quick", "--ssh-config", str(config),
                        "--no-open"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{s.hub_log()}"
    conn = subprocess.Popen(["ssh", "-F", str(config), "-o", "BatchMode=yes", ssh_alias(user=user), "sleep 900"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2 * QUICK + 30)
        assert conn.poll() is None, f"the ssh session ended: {conn.stderr.read()}"
        alive = server_model(s, "", user)
        assert alive and alive["ready"], f"stopped with an SSH session open:\n{s.hub_log(80)}"
        kept = [line for line in audit(s) if line["server"] == user and line["signal"] == "ssh"]
        assert kept and "kept alive by ssh: 1 SSH connection(s)" in kept[-1]["reason"], audit(s)
    finally:
        conn.terminate()
        conn.wait(30)
    wait_stopped(s, "", within=QUICK + 120, user=user)


def test_usage_survives_a_restart_of_the_hub(cull_stack):
    s = cull_stack
    before = usage_json(s)
    s.stop()
    s.start()
    after = usage_json(s)
    assert after["by_profile"].keys() == before["by_profile"].keys()
    for name, row in before["by_profile"].items():
        assert after["by_profile"][name]["servers"] == row["servers"], name
        # the busy server ran until the hub stopped it: at least as many hours as before
        assert after["by_profile"][name]["hours"] >= row["hours"] - 1e-3, name
