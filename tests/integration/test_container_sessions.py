"""Container sessions: a kernel sees its own home and nothing else of the machine, and
reaches no port of another session.

Two real users (alice, and bob made here) each spawn a real container session through
the real hub; alice's kernel then looks for everything the issue found readable from
a process session (another user's home, the state folder, the hub's secrets, other
sessions' environments) and for root. Then alice is the attacker on the network: she
connect-scans every TCP port of 127.0.0.1 from her kernel and subscribes to the iopub
port of bob's kernel while bob prints a secret (with host networking she read it). The
session contract test runs the image's start hook for every profile and compares what
it wrote with session.py's output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from atelier_hub.embedded.container_spawner import SESSION_CONFIG_DIR, container_services
from atelier_hub.embedded.engine import engine
from atelier_hub.install.paths import image_ref
from atelier_hub.profiles import load_profiles, to_embedded
from atelier_hub.services import load_deployment
from atelier_hub.services._process import wait_for
from atelier_hub.session import session_env, session_files
from kernel import run_code, start_kernel
from stack import REPO, Stack

pytestmark = pytest.mark.integration


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
        # A network namespace of its own (only lo): see the network tests below.
        assert hc["NetworkMode"] == "none" and hc["CapDrop"] == ["ALL"]
        assert [m["Destination"] for m in info["Mounts"]] == ["/home/jovyan"]
        assert info["Mounts"][0]["Source"] == str(containers.state / "homes" / labels["dev.atelier.user"])
        assert info["Config"]["User"] == "1000:100"
        seen[labels["dev.atelier.user"]] = (info["Name"], p.name)
    assert {u: prof for u, (_, prof) in seen.items()} == {"alice": "cpu-small", "bob": "cpu-large"}
    # Names carry the stack, the user and the server: no two can collide.
    names = sorted(n for n, _ in seen.values())
    assert len(set(names)) == 2 and all(n.startswith("/atelier-") and n.endswith("--iso") for n in names)


# -- the network: alice attacks bob's session from her kernel ------------------------------

# The ports of the listening sockets that belong to processes this session can see: its
# own (the relay's listeners for the hub and the services belong to no process of it).
OWN_LISTENING = r"""
import glob, os, re
def own_listening():
    inodes = set()
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN, owned by a process of this session
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports
"""

# Every port of 127.0.0.1 that accepts a TCP connection from where this runs (non-blocking
# connects, 512 at a time: a closed loopback port answers at once).
SCAN = OWN_LISTENING + r"""
import errno, itertools, json, selectors, socket, time
def self_connected(s, port):
    # A connect to a free port of the ephemeral range may be given that very port as its
    # own source port, and then "connects" to itself (TCP simultaneous open): no listener.
    try:
        return s.getsockname()[1] == port
    except OSError:
        return False
def scan(ports=range(1, 65536), batch=512):
    found, it = [], iter(ports)
    while chunk := list(itertools.islice(it, batch)):
        sel = selectors.DefaultSelector()
        for port in chunk:
            s = socket.socket(); s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err == errno.EINPROGRESS:
                sel.register(s, selectors.EVENT_WRITE, port); continue
            if err == 0 and not self_connected(s, port):
                found.append(port)
            s.close()
        deadline = time.monotonic() + 3
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                sock = key.fileobj
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and not self_connected(sock, key.data):
                    found.append(key.data)
                sel.unregister(key.fileobj); key.fileobj.close()
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj); key.fileobj.close()
    return sorted(found)
def contract_ports():
    # Every 127.0.0.1 port the session's environment and config files name, but its own server's.
    own = int(re.search(r":(\d+)/", os.environ["JUPYTERHUB_SERVICE_URL"]).group(1))
    texts = list(os.environ.values())
    texts += [open(p).read() for p in glob.glob(os.environ["ATELIER_SESSION_DIR"] + "/**", recursive=True)
              if os.path.isfile(p)]
    return {int(p) for t in texts for p in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", t)} - {own}
t0 = time.monotonic()
before = own_listening()
found = scan()
after = own_listening()
print(json.dumps({"open": found, "own": sorted(before | after), "contract": sorted(contract_ports()),
                  "seconds": round(time.monotonic() - t0, 1)}))
"""

# A ZMQ subscriber to every message on a kernel's iopub port (what alice did to bob's):
# it collects in a thread for ``seconds``; the second snippet reports what it got.
SNIFF_START = OWN_LISTENING.replace("{", "{{").replace("}", "}}") + r"""
import socket, threading, time, zmq
_port = {port}
_own = _port in own_listening()  # the same number by chance, on a socket of this session
_probe = socket.socket(); _probe.settimeout(3)
_connected = _probe.connect_ex(("127.0.0.1", _port)) == 0
_probe.close()
_got = []
def _sniff():
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(f"tcp://127.0.0.1:{{_port}}")
    end = time.monotonic() + {seconds}
    while time.monotonic() < end:
        if sub.poll(200):
            _got.append(b"".join(sub.recv_multipart()))
    sub.close()
_sniffer = threading.Thread(target=_sniff)
_sniffer.start()
print("sniffing", _connected)
"""
SNIFF_REPORT = r"""
import json
_sniffer.join()
_all = b"\n".join(_got)
print(json.dumps({"connected": _connected, "messages": len(_got), "secret": b"BEN-SECRET-42" in _all,
                  "own_port": _own}))
"""

BOB_SECRET = 'secret = "BEN-SECRET-42"; print(secret)'


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it holds no socket)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bob_ports(containers, bob, two_sessions):
    """Bob's kernel (kept running), and every port his session listens on: the kernel's
    five, his server's, and a server he started himself (as a Spark UI or sshd would)."""
    _, b = two_sessions
    kernel = start_kernel(containers.url, b["url"], bob["token"])
    code = r"""
import json, os, re, socket, subprocess, sys, time
from ipykernel.connect import get_connection_info
info = get_connection_info(unpack=True)
s = socket.socket(); s.bind(("127.0.0.1", 0)); mine = s.getsockname()[1]; s.close()
server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(mine)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
for _ in range(100):
    if socket.socket().connect_ex(("127.0.0.1", mine)) == 0:
        break
    time.sleep(0.1)
print(json.dumps({"kernel": {k: info[k] for k in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")},
                  "server": int(re.search(r":(\d+)/", os.environ["JUPYTERHUB_SERVICE_URL"]).group(1)),
                  "started": mine, "started_pid": server.pid}))
"""
    ports = _last_json(run_code(containers.url, b["url"], bob["token"], code, kernel_id=kernel))
    yield {"kernel_id": kernel, **ports}
    run_code(containers.url, b["url"], bob["token"], f"import os, signal; os.killpg({ports['started_pid']}, 15)",
             kernel_id=kernel)


def test_a_scan_of_every_port_from_a_session_finds_no_port_of_another_session(containers, alice, two_sessions,
                                                                             bob_ports):
    a, _ = two_sessions
    out = _last_json(run_code(containers.url, a["url"], alice["token"], SCAN, timeout=300))
    opened, own, contract = set(out["open"]), set(out["own"]), set(out["contract"])
    bobs = {**bob_ports["kernel"], "server": bob_ports["server"], "started by bob": bob_ports["started"]}
    # Whatever alice's scan opens is hers, or an endpoint of her session contract (the
    # hub, its proxy, S3, Trino's front ...: the relay's listeners): nothing else of the
    # machine, and none of bob's ports.
    reached = {name: port for name, port in bobs.items() if port in opened - own - contract}
    assert not reached, f"alice's session reaches bob's ports {reached} (scan took {out['seconds']} s)"
    assert opened - own == contract, (
        f"ports reachable from alice's session beyond her own and her contract's: {sorted(opened - own - contract)}; "
        f"contract ports that do not answer: {sorted(contract - opened)}")
    assert out["seconds"] < 240


def test_another_session_hears_nothing_of_a_kernel_s_iopub(containers, alice, bob, two_sessions, bob_ports):
    a, b = two_sessions
    port = bob_ports["kernel"]["iopub_port"]
    spy = start_kernel(containers.url, a["url"], alice["token"])
    # Control: the same sniffer in bob's own session hears his kernel (the code works).
    control = start_kernel(containers.url, b["url"], bob["token"])
    sniff = SNIFF_START.format(port=port, seconds=20)
    assert run_code(containers.url, a["url"], alice["token"], sniff, kernel_id=spy).startswith("sniffing")
    assert run_code(containers.url, b["url"], bob["token"], sniff, kernel_id=control).startswith("sniffing")
    time.sleep(3)  # ZMQ's subscription reaches a publisher a moment after the connect
    for _ in range(5):
        assert "BEN-SECRET-42" in run_code(containers.url, b["url"], bob["token"], BOB_SECRET,
                                           kernel_id=bob_ports["kernel_id"])
        time.sleep(1)
    heard = _last_json(run_code(containers.url, a["url"], alice["token"], SNIFF_REPORT, kernel_id=spy, timeout=60))
    own = _last_json(run_code(containers.url, b["url"], bob["token"], SNIFF_REPORT, kernel_id=control, timeout=60))
    assert own["secret"] and own["messages"] > 0, f"the sniffer heard nothing even in bob's session: {own}"
    assert not heard["secret"], "alice's session read bob's code and output from his kernel's iopub"
    if not heard["own_port"]:  # else alice has a port of that number herself (her own kernel's)
        assert heard == {"connected": False, "messages": 0, "secret": False, "own_port": False}, heard
    for name, who, kernel in (("alice", alice, spy), ("bob", bob, control)):
        url = a["url"] if name == "alice" else b["url"]
        containers.http.delete(f"{url}api/kernels/{kernel}",
                               headers={"Authorization": f"token {who['token']}"}, timeout=60)


REACH = r"""
import json, os, urllib.request, boto3, mlflow
req = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + "/user",
                             headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]})
hub = json.load(urllib.request.urlopen(req, timeout=30))["name"]
s3, bucket = boto3.client("s3"), os.environ["ATELIER_SHARED_BUCKET"]
s3.put_object(Bucket=bucket, Key="net/alice.txt", Body=b"through the relay")
back = s3.get_object(Bucket=bucket, Key="net/alice.txt")["Body"].read()
experiments = mlflow.search_experiments()
print(json.dumps({"hub": hub, "s3": back == b"through the relay", "mlflow": len(experiments) > 0}))
"""


def test_a_session_on_its_own_network_still_reaches_the_hub_s3_and_mlflow(containers, alice, two_sessions):
    a, _ = two_sessions
    out = _last_json(run_code(containers.url, a["url"], alice["token"], REACH, timeout=180))
    assert out == {"hub": "alice", "s3": True, "mlflow": True}, out


EGRESS = r"""
import json, os, socket
proxy = os.environ["HTTPS_PROXY"].rsplit("/", 1)[-1]
host, port = proxy.split(":")
def connect(target):
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
hub = int(os.environ["JUPYTERHUB_API_URL"].split(":")[2].split("/")[0])
print(json.dumps({"proxy": os.environ["HTTPS_PROXY"], "no_proxy": os.environ["NO_PROXY"],
                  "hub": connect(f"127.0.0.1:{hub}"), "bob": connect("127.0.0.1:{bob}"),
                  "named_loopback": connect(f"localhost:{hub}"), "private": connect("10.1.2.3:80"),
                  "metadata": connect("169.254.169.254:80"), "registry": connect("pypi.org:443")}))
"""


def test_a_session_reaches_the_internet_through_its_proxy_but_nothing_private(containers, alice, two_sessions,
                                                                               bob_ports):
    """The session's HTTPS_PROXY (the relay's egress proxy) connects to public addresses,
    as a pod's network policy allows: here the package registry pip and uv use, a first
    step only (CONNECT answered, no request sent). Loopback (the hub's own ports, bob's
    server), a private address and a cloud's metadata address are refused before any
    connection is tried: no packet goes to them."""
    a, _ = two_sessions
    out = _last_json(run_code(containers.url, a["url"], alice["token"],
                              EGRESS.replace("{bob}", str(bob_ports["server"])), timeout=180))
    assert out["proxy"].startswith("http://127.0.0.1:") and "127.0.0.1" in out["no_proxy"].split(","), out
    for name in ("hub", "bob", "named_loopback", "private", "metadata"):
        assert out[name].startswith("HTTP/1.1 403"), (name, out)
    assert out["registry"] == "HTTP/1.1 200 Connection established", out


def test_a_new_home_has_the_welcome_notebook_and_each_of_its_cells_runs(containers, bob, two_sessions):
    """bob's first session (a new home) has ~/Welcome.ipynb; its cells, run in order in
    one kernel as a user runs them, install a package to his layer and reach S3, MLflow,
    Spark, Ray and Trino (this stack runs them all)."""
    nb = json.loads((containers.state / "homes" / "bob" / "Welcome.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    url = two_sessions[1]["url"]
    kernel = start_kernel(containers.url, url, bob["token"])
    out = "\n".join(run_code(containers.url, url, bob["token"], code, kernel_id=kernel, timeout=300) for code in cells)
    assert "user bob, profile cpu-large" in out, out
    for name in ("S3", "MLflow", "Spark", "Ray", "Trino"):
        assert f"{name:7} configured" in out, out
    assert "/home/jovyan/.atelier/layers/base-py3.11/lib/python3.11/site-packages/tabulate" in out, out
    bucket = load_deployment(containers.state / "deployment.json").services.s3.bucket
    assert f"s3://{bucket}/users/bob/welcome.parquet -> 3 rows" in out, out
    assert "Spark" in out and "counts 1000" in out, out
    assert "Ray says 285" in out, out  # the sum of the squares of 0..9
    assert "TPC-H nations: 25" in out, out
    run_id = re.search(r"^run ([0-9a-f]{32}) in experiment users/bob$", out, re.M)
    assert run_id, out
    run = containers.mlflow().get_run(run_id.group(1))
    assert run.data.params["lr"] == "0.1" and run.data.metrics["loss"] == 0.25


def test_a_stopped_session_leaves_no_relay(containers, alice):
    """The relay of a session ends with it (its record too)."""
    containers.spawn("alice", "cpu-small", server="relay")
    relays = containers.state / "run" / "relays"
    records = sorted(relays.glob("*--relay.pid"))
    assert len(records) == 1, sorted(relays.iterdir())
    pid = int(records[0].read_text().split()[0])
    assert b"atelier_hub.embedded.netns_relay" in Path(f"/proc/{pid}/cmdline").read_bytes()
    containers.stop_server("alice", "relay")
    wait_for(lambda: not _alive(pid), timeout=30, what="the relay's end after its session stopped")
    assert not list(relays.glob("*--relay.pid"))


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
        cpus = to_embedded(profile, host_cpus=os.cpu_count() or 1).threads
        files = session_files(profile, username="ada", services=services, cpus=cpus)
        env = session_env(profile, username="ada", services=services, cpus=cpus,
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
