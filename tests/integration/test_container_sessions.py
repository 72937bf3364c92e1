"""Container sessions: a kernel sees its own home and nothing else of the machine.

Two real users (alice, and bob made here) each spawn a real container session through
the real hub; alice's kernel then looks for everything the issue found readable from
a process session (another user's home, the state folder, the hub's secrets, other
sessions' environments) and for root. The session contract test runs the image's
start hook for every profile and compares what it wrote with session.py's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
from atelier_hub.container_spawner import SESSION_CONFIG_DIR, container_services
from atelier_hub.engine import engine
from atelier_hub.install.paths import image_ref
from atelier_hub.profiles import load_profiles, to_embedded
from atelier_hub.session import session_env, session_files
from atelier_hub.settings import load_deployment
from kernel import run_code
from stack import REPO, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def containers(stack):
    if stack.mode != "container":
        pytest.fail(f"the stack runs {stack.mode} sessions: `make install` builds the images and "
                    "`atelier dev` starts the Docker engine; see the atelier dev log")
    return stack


@pytest.fixture(scope="module")
def bob(containers):
    password = containers.add_user("bob")
    return {"name": "bob", "password": password, "token": containers.user_token("bob")}


@pytest.fixture(scope="module")
def two_sessions(containers, alice, bob):
    a = containers.spawn("alice", "cpu-small", server="iso")
    b = containers.spawn("bob", "cpu-large", server="iso")
    yield a, b
    containers.stop_server("alice", "iso")
    containers.stop_server("bob", "iso")


PROBE = """
import json, os, pathlib, subprocess
state, secret_name, bob_token, admin_token = {args!r}
def readable(p):
    try:
        pathlib.Path(p).read_bytes(); return True
    except OSError:
        return False
environs = []
for env in pathlib.Path("/proc").glob("[0-9]*/environ"):
    try:
        environs.append(env.read_bytes())
    except OSError:
        pass
cmdlines = []
for c in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
    try:
        cmdlines.append(c.read_bytes().replace(b"\\0", b" ").decode(errors="replace"))
    except OSError:
        pass
found = subprocess.run(["find", "/", "-xdev", "-name", secret_name], capture_output=True, text=True).stdout
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
print(json.dumps({{
    "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
    "cap_eff": status["CapEff"].strip(),
    "home": str(pathlib.Path.home()), "homes_visible": sorted(os.listdir("/home")),
    "state_exists": os.path.exists(state),
    "state_files": [p for p in ("admin-token", "users.json", "secrets/jupyterhub_cookie_secret",
                                "secrets/proxy-token", "jupyterhub.sqlite") if readable(os.path.join(state, p))],
    "bob_file_found": found.strip(),
    "bob_token_in_an_environ": any(bob_token.encode() in e for e in environs),
    "admin_token_in_an_environ": any(admin_token.encode() in e for e in environs),
    "hub_processes": [c for c in cmdlines if "jupyterhub " in c or "versitygw" in c or "mlflow" in c
                      or "configurable-http-proxy" in c],
    "docker_socket": any(os.path.exists(p) for p in ("/var/run/docker.sock", {socket!r})),
    "mem_limit": int(open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read()
                     if os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                     else open("/sys/fs/cgroup/memory.max").read()),
}}))
"""


def test_a_kernel_sees_no_other_home_no_state_no_secret_and_no_other_session(containers, alice, bob, two_sessions):
    a, b = two_sessions
    # Bob's session leaves a file in his home and tells us its own hub token.
    secret_name = f"bob-only-{uuid.uuid4().hex}.txt"
    bob_token = run_code(containers.url, b["url"], bob["token"],
                         f"open({secret_name!r}, 'w').write('private'); import os; "
                         "print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
    assert (containers.state / "homes" / "bob" / secret_name).exists()

    args = (str(containers.state), secret_name, bob_token, containers.admin_token)
    code = PROBE.format(args=args, socket=str(engine().socket))
    out = json.loads(run_code(containers.url, a["url"], alice["token"], code, timeout=300).strip().splitlines()[-1])

    assert out["uid"] == 1000 and out["euid"] == 1000, "the session runs as root"
    assert int(out["cap_eff"], 16) == 0, f"the session holds capabilities {out['cap_eff']}"
    assert out["home"] == "/home/jovyan" and out["homes_visible"] == ["jovyan"]
    assert out["state_exists"] is False and out["state_files"] == []
    assert out["bob_file_found"] == "", "bob's home is visible from alice's container"
    assert out["bob_token_in_an_environ"] is False
    assert out["admin_token_in_an_environ"] is False
    assert out["hub_processes"] == [], out["hub_processes"]
    assert out["docker_socket"] is False
    # The memory cgroup limit is the profile's (the kernel rounds it down to whole pages).
    limit = next(p for p in load_profiles(REPO / "profiles") if p.name == "cpu-small").memory.limit
    assert out["mem_limit"] == limit // 4096 * 4096


def test_each_profile_gets_its_own_memory_limit_and_cpu_quota(containers, two_sessions):
    """From the engine's side: each container carries its profile's cgroup limits."""
    import docker

    client = docker.APIClient(base_url=engine().host)
    profiles = {p.name: p for p in load_profiles(REPO / "profiles")}
    seen = {}
    for c in client.containers(filters={"label": "dev.atelier.server=iso"}):
        info = client.inspect_container(c["Id"])
        labels = info["Config"]["Labels"]
        p = profiles[labels["dev.atelier.profile"]]
        hc = info["HostConfig"]
        assert hc["Memory"] == p.memory.limit and hc["MemorySwap"] == p.memory.limit
        assert hc["CpuQuota"] == int(p.cpu.limit * hc["CpuPeriod"])
        assert hc["NetworkMode"] == "host" and hc["CapDrop"] == ["ALL"]
        assert [m["Destination"] for m in info["Mounts"]] == ["/home/jovyan"]
        assert info["Mounts"][0]["Source"] == str(containers.state / "homes" / labels["dev.atelier.user"])
        assert info["Config"]["User"] == "1000:100"
        seen[labels["dev.atelier.user"]] = (info["Name"], p.name)
    assert {u: prof for u, (_, prof) in seen.items()} == {"alice": "cpu-small", "bob": "cpu-large"}
    # Names carry the stack, the user and the server: no two can collide.
    names = sorted(n for n, _ in seen.values())
    assert len(set(names)) == 2 and all(n.startswith("/atelier-") and n.endswith("--iso") for n in names)


def _run_hook(env: dict[str, str]) -> dict:
    """The image's entrypoint (the start hook), then a command that reports what it did."""
    report = ("import json, os, pathlib; d = pathlib.Path(os.environ['ATELIER_SESSION_DIR']); "
              "print(json.dumps({'files': {str(p.relative_to(d)): p.read_text() for p in d.rglob('*') if p.is_file()}, "
              "'env': dict(os.environ)}))")
    cmd = ["docker", "run", "--rm", "--network", "host", "--user", "1000:100"]
    for k in env:
        cmd += ["-e", k]
    cmd += [image_ref("base"), "python", "-c", report]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, **env, "DOCKER_HOST": engine().host})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_start_hook_writes_exactly_session_py_files_for_every_profile(containers):
    services = container_services(load_deployment(containers.state / "deployment.json").services)
    for profile in load_profiles(REPO / "profiles"):
        files = session_files(profile, username="ada", services=services)
        env = session_env(profile, username="ada", services=services,
                          threads=to_embedded(profile, host_cpus=os.cpu_count() or 1).threads,
                          config_dir=SESSION_CONFIG_DIR if files else None)
        got = _run_hook({**env, "ATELIER_SESSION_FILES": json.dumps(files), "ATELIER_SESSION_DIR": SESSION_CONFIG_DIR})
        assert got["files"] == files, profile.name
        assert files, "the embedded deployment configures Spark, S3 and Trino: there are files to write"
        # The session's environment is session_env's, with the files' JSON dropped.
        assert {k: got["env"].get(k) for k in env} == env, profile.name
        assert "ATELIER_SESSION_FILES" not in got["env"]
        # The jars and Java the Spark file names are in the image.
        spark = files["spark/spark-defaults.conf"]
        jars = next(line.split(" ", 1)[1] for line in spark.splitlines() if line.startswith("spark.jars "))
        check = f"import os, sys; sys.exit(0 if all(map(os.path.exists, {jars.split(',')!r} + "
        check += f"[{env['JAVA_HOME']!r} + '/bin/java'])) else 1)"
        subprocess.run(["docker", "run", "--rm", "--network", "host", image_ref("base"), "python", "-c", check],
                       check=True, env={**os.environ, "DOCKER_HOST": engine().host}, timeout=120)


def test_single_user_mode_lets_only_the_admin_log_in(tmp_path):
    """Without containers, sessions are processes of the hub's OS user: one person only."""
    single = Stack(tmp_path / "state", name="single-user", args=("--no-trino",),
                   env={"ATELIER_SESSIONS": "process"}).start()
    try:
        assert single.mode == "process"
        assert "only you may log in" in single.out.read_text()
        password = single.add_user("carol")
        with pytest.raises(AssertionError, match="login refused: 403"):
            single.login("carol", password)
        admin_password = (tmp_path / "state" / "initial-admin-password").read_text().strip()
        assert single.login("admin", admin_password).get(f"{single.url}/hub/home").status_code == 200
    finally:
        single.stop()
