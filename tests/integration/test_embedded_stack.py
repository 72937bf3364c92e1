"""The embedded stack, end to end: real hub + proxy, real MLflow, real S3 (versitygw).

A user logs in through the hub's own form, spawns each CPU profile through the REST
API, and code in a real kernel writes to S3 and logs an MLflow run that is then read
back from outside the session.
"""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
import requests
from atelier_hub.embedded.gpus import detect_gpus
from kernel import run_code

pytestmark = pytest.mark.integration

# What profiles/ asks for, written out: CPU limit and memory limit in bytes.
CPU_PROFILES = {"cpu-small": (2, 4 * 10**9), "cpu-large": (8, 16 * 10**9), "highmem": (4, 64 * 10**9)}
GPUS = len(detect_gpus())

SESSION_CODE = """
import json, os, pathlib
import boto3, mlflow

profile = os.environ["ATELIER_PROFILE"]
bucket = os.environ["ATELIER_SHARED_BUCKET"]
s3 = boto3.client("s3")  # no argument: the session's own AWS_* settings
s3.put_object(Bucket=bucket, Key=f"from-session/{profile}.txt", Body=f"hello from {profile}".encode())

with mlflow.start_run(run_name=f"session-{profile}") as run:  # no set-up either
    mlflow.log_param("profile", profile)
    mlflow.log_metric("answer", 42)
    mlflow.log_text(f"artifact from {profile}", "notes/hello.txt")

home = pathlib.Path.home()
(home / f"written-by-{profile}.txt").write_text(profile)
print(json.dumps({
    "run_id": run.info.run_id,
    "home": str(home),
    "home_files": sorted(p.name for p in home.glob("written-by-*.txt")),
    "threads": os.environ["OMP_NUM_THREADS"],
    "cpu_limit": os.environ["ATELIER_CPU_LIMIT"],
    "mem_limit": os.environ["ATELIER_MEM_LIMIT"],
    "cuda": os.environ["CUDA_VISIBLE_DEVICES"],
}))
"""


def test_login_form_accepts_the_user_and_refuses_a_wrong_password(stack, alice):
    s = stack.login("alice", alice["password"])
    home = s.get(f"{stack.url}/hub/home", timeout=30)
    assert home.status_code == 200 and "alice" in home.text

    bad = requests.Session()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', bad.get(f"{stack.url}/hub/login").text).group(1)
    r = bad.post(f"{stack.url}/hub/login", data={"username": "alice", "password": "wrong-password", "_xsrf": xsrf},
                 allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "Invalid username or password" in r.text


def test_spawn_form_shows_every_profile_as_a_card(stack, alice):
    s = stack.login("alice", alice["password"])
    form = s.get(f"{stack.url}/hub/spawn", timeout=30).text
    for name in ["cpu-small", "cpu-large", "highmem", "gpu-1", "gpu-4"]:
        assert f'value="{name}"' in form
    assert "Memory" in form and "64G" in form and "GPU" in form


@pytest.mark.parametrize("profile", CPU_PROFILES)
def test_each_cpu_profile_runs_code_that_reaches_s3_and_mlflow(stack, alice, profile):
    model = stack.spawn("alice", profile, server=profile)
    assert model["user_options"] == {"profile": profile}

    # JupyterLab itself answers through the proxy.
    lab = requests.get(f"{model['url']}lab", headers={"Authorization": f"token {alice['token']}"},
                       timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    # No calls home from the session: JupyterLab's news feed and update check are off.
    page_config = json.loads(re.search(r'id="jupyter-config-data" type="application/json">(.*?)</script>',
                                       lab.text, re.S).group(1))
    assert page_config["news"] == {"disabled": True}

    out = json.loads(run_code(stack.url, model["url"], alice["token"], SESSION_CODE).strip().splitlines()[-1])
    # A container sees only its own home, at the image's fixed path; the files are in
    # the user's folder of the state on the host either way.
    assert out["home"] == ("/home/jovyan" if stack.mode == "container" else str(stack.state / "homes" / "alice"))
    assert (stack.state / "homes" / "alice" / f"written-by-{profile}.txt").read_text() == profile
    assert f"written-by-{profile}.txt" in out["home_files"]
    assert out["cuda"] == ""  # CPU sessions see no GPU
    cpu, memory = CPU_PROFILES[profile]
    # Thread pools at the CPU limit, capped by this machine's cores.
    assert out["threads"] == str(min(cpu, os.cpu_count() or 1))
    assert (out["cpu_limit"], out["mem_limit"]) == (str(cpu), str(memory))

    # Read back from outside the session.
    body = stack.s3().get_object(Bucket="atelier-shared", Key=f"from-session/{profile}.txt")["Body"].read()
    assert body == f"hello from {profile}".encode()
    client = stack.mlflow()
    run = client.get_run(out["run_id"])
    assert run.data.params["profile"] == profile and run.data.metrics["answer"] == 42
    # The hub user, not the session's OS account; in the user's own default experiment.
    assert run.info.user_id == "alice" and run.data.tags["mlflow.user"] == "alice"
    assert client.get_experiment(run.info.experiment_id).name == "users/alice"
    local = client.download_artifacts(out["run_id"], "notes/hello.txt")
    assert open(local).read() == f"artifact from {profile}"
    # MLflow's artifacts land in the S3 server, not on the hub's disk.
    keys = [o["Key"] for o in stack.s3().list_objects_v2(Bucket="atelier-mlflow")["Contents"]]
    assert any(out["run_id"] in k and k.endswith("notes/hello.txt") for k in keys)
    stack.stop_server("alice", profile)


def test_profiles_give_different_sizes_and_share_one_home(stack, alice):
    small = stack.spawn("alice", "cpu-small", server="small")
    large = stack.spawn("alice", "cpu-large", server="large")  # side by side: named servers
    code = "import os, json; print(json.dumps({k: os.environ[k] for k in "
    code += "['ATELIER_PROFILE','ATELIER_CPU_LIMIT','ATELIER_MEM_LIMIT','HOME']}))"
    a = json.loads(run_code(stack.url, small["url"], alice["token"], code))
    b = json.loads(run_code(stack.url, large["url"], alice["token"], code))
    assert (a["ATELIER_PROFILE"], b["ATELIER_PROFILE"]) == ("cpu-small", "cpu-large")
    assert (a["ATELIER_CPU_LIMIT"], b["ATELIER_CPU_LIMIT"]) == ("2", "8")
    assert (int(a["ATELIER_MEM_LIMIT"]), int(b["ATELIER_MEM_LIMIT"])) == (4 * 10**9, 16 * 10**9)
    assert a["HOME"] == b["HOME"]
    run_code(stack.url, small["url"], alice["token"], "open('shared.txt', 'w').write('from small')")
    assert run_code(stack.url, large["url"], alice["token"], "print(open('shared.txt').read())").strip() == "from small"
    stack.stop_server("alice", "small")
    stack.stop_server("alice", "large")


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"profile": "no-such-profile"}, 400, ["unknown profile 'no-such-profile'", "cpu-small"]),
        ({"profile": 42}, 400, ["profile must be a profile name"]),
        ({"profile": ["cpu-small"]}, 400, ["profile must be a profile name"]),
    ],
)
def test_bad_spawn_requests_get_clear_errors_and_the_hub_stays_healthy(stack, alice, body, status, words):
    r = stack.api("POST", "/users/alice/servers/bad", json=body)
    assert r.status_code == status, r.text
    for w in words:
        assert w in r.json()["message"]
    assert "bad" not in stack.api("GET", "/users/alice").json()["servers"]
    assert stack.api("GET", "/").status_code == 200


@pytest.mark.skipif(GPUS >= 4, reason=f"this machine has {GPUS} GPUs: gpu-4 fits, nothing to refuse")
def test_gpu_profile_is_refused_where_there_is_no_free_gpu(stack, alice):
    r = stack.api("POST", "/users/alice/servers/gpu", json={"profile": "gpu-4"})
    assert r.status_code == 409, r.text
    message = r.json()["message"]
    assert "gpu-4" in message and "needs 4 GPU(s)" in message and "profile" in message
    assert ("has no NVIDIA GPU" if GPUS == 0 else f"this machine has {GPUS} and") in message, message
    assert "gpu" not in stack.api("GET", "/users/alice").json()["servers"]
    # ... and the hub still spawns a CPU server right after.
    stack.spawn("alice", None, server="after-gpu")
    stack.stop_server("alice", "after-gpu")


def test_mlflow_ui_and_api_sit_behind_the_hub_login(stack, alice):
    base = f"{stack.url}/services/mlflow"
    api = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
    # The login redirect, then a refused call, back to back through the hub's proxy: the
    # front closes the connection it answers before reading the request, and says so (a
    # proxy that reused it answered the next request 503, once in CI).
    for _ in range(20):
        page = requests.get(f"{base}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
        assert page.status_code == 302 and "/hub/api/oauth2/authorize" in page.headers["Location"]
        r = requests.get(api, timeout=30)
        assert r.status_code == 403 and "MLFLOW_TRACKING_TOKEN" in r.json()["message"]
    assert requests.get(api, headers={"Authorization": "Bearer not-a-token"}, timeout=30).status_code == 403
    ok = requests.get(api, headers={"Authorization": f"Bearer {alice['token']}"}, timeout=30)
    assert ok.status_code == 200 and "experiments" in ok.json()

    # A logged-in browser session follows the OAuth dance to MLflow's UI.
    s = stack.login("alice", alice["password"])
    ui = s.get(f"{base}/", headers={"Accept": "text/html"}, timeout=60)
    assert ui.status_code == 200 and "MLflow" in ui.text
    # Writes from that browser session must be same-origin (CSRF) ...
    search = f"{base}/ajax-api/2.0/mlflow/experiments/search"
    assert s.post(search, json={"max_results": 1}, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert s.post(search, json={"max_results": 1}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_secrets_are_files_only_their_owner_reads(stack):
    for name in ["admin-token", "users.json", "deployment.json", "secrets/s3.json", "secrets/proxy-token"]:
        mode = stat.S_IMODE((stack.state / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    keys = json.loads((stack.state / "secrets" / "s3.json").read_text())
    log = (stack.state / "logs" / "hub.log").read_text()
    assert keys["secret_access_key"] not in log and stack.admin_token not in log
    # Not at a terminal, `atelier dev` leaves the first admin password in a 0600 file, not in its output.
    password_file = stack.state / "initial-admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert password and password not in stack.out.read_text() and password not in log
    assert str(password_file) in stack.out.read_text()
