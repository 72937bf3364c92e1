"""A personal Ray cluster from a kernel of a real container session (issue 30, embedded).

One session of alice's on the shared stack: her kernel runs
``ray_cluster(workers=2, profile="cpu-small")`` and Ray's own ``ray.init(cluster.address)``;
``ray.nodes()`` shows the head and two workers alive and tasks run on the workers only
(the head has no CPU). The real Docker engine shows the three containers with the
profile's limits inside her session's namespaces; a client in her session with another
token is refused by Ray; Ray's dashboard opens through the hub for her alone; a second
real user's token neither sees nor stops her cluster, nor starts one in her session, nor
opens its dashboard; a request over the per-user limit is refused with the
limit named, by the service and by `atelier ray up`. Stopping her session removes the
containers.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import time
from urllib.parse import urljoin, urlparse

import docker
import pytest
import requests
from atelier_hub.embedded.engine import engine
from atelier_hub.profiles import load_profiles
from kernel import run_code, server_address, start_kernel
from stack import REPO, VENV_BIN

pytestmark = pytest.mark.integration

SERVER = "ray"
TEAM = "ray-team"
API = "/services/ray_clusters/api/clusters"

START = """
import json, ray
from atelier_lab import ray_cluster
cluster = ray_cluster(workers=2, profile="cpu-small")
ray.init(cluster.address)
alive = [n for n in ray.nodes() if n["Alive"]]
heads = [n["NodeID"] for n in alive if not n["Resources"].get("CPU")]

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

ran_on = sorted(set(ray.get([where.remote() for _ in range(8)])))
print(json.dumps({"address": cluster.address, "alive": len(alive), "heads": heads, "ran_on": ran_on,
                  "dashboard_url": cluster.dashboard_url,
                  "workers": sorted(n["NodeID"] for n in alive if n["NodeID"] not in heads)}))
"""

# Other clients in the same session: with the cluster's token (from the kernel's
# environment, which ray_cluster() set) and with another one.
TWO_CLIENTS = """
import os, subprocess, sys
code = "import ray; ray.init(%r); print(len(ray.nodes()))" % cluster.address
for token in (os.environ["RAY_AUTH_TOKEN"], "not-the-clusters-token-0123456789"):
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=150)
    print(r.returncode, "auth" in r.stderr.lower())
"""


def nodes(client, user: str) -> list[dict]:
    return client.containers(all=True, filters={"label": ["dev.atelier.ray", f"dev.atelier.user={user}"]})


@pytest.fixture(scope="module")
def mallory(containers):
    """A second real user, with a token of their own."""
    containers.add_user("raymallory")  # her own name: the shared stack has other files' users
    return {"name": "raymallory", "token": containers.user_token("raymallory")}


@pytest.fixture(scope="module")
def cluster(containers, alice):
    """Alice's session with a cluster started from its kernel; the session is stopped at the
    end. She is in the hub group ray-team first, which her nodes' usage lines carry."""
    r = containers.api("POST", f"/groups/{TEAM}", json={"users": ["alice"]})
    if r.status_code == 409:  # the group is there already
        assert containers.api("POST", f"/groups/{TEAM}/users", json={"users": ["alice"]}).status_code == 200
    else:
        assert r.status_code == 201, r.text
    model = containers.spawn("alice", "cpu-small", server=SERVER)
    kernel = start_kernel(containers.url, model["url"], alice["token"])
    out = run_code(containers.url, model["url"], alice["token"], START, kernel_id=kernel, timeout=400)
    yield {"model": model, "kernel": kernel, "facts": json.loads(out.strip().splitlines()[-1])}
    if SERVER in containers.api("GET", "/users/alice").json()["servers"]:  # a test failed before stopping it
        containers.stop_server("alice", SERVER)


def test_a_kernel_s_cluster_runs_tasks_on_its_two_workers(cluster):
    facts = cluster["facts"]
    assert facts["alive"] == 3 and len(facts["heads"]) == 1 and len(facts["workers"]) == 2
    assert facts["address"].startswith("127.0.50.1:")
    assert set(facts["ran_on"]) <= set(facts["workers"]) and facts["ran_on"]


BUSY = """
import json, time
from atelier_lab._activity import SIGNALS, ray_cluster_busy

@ray.remote(num_cpus=1)
def slow():
    time.sleep(120)
    return 1

async def looked(until, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        seen = await ray_cluster_busy(None)
        if until(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(1)

before = await ray_cluster_busy(None)
ref = slow.remote()  # submitted; this kernel goes idle, the cluster works
during = await looked(lambda seen: seen is not None)
ray.cancel(ref, force=True)
after = await looked(lambda seen: seen is None)
print(json.dumps({"before": before, "during": during, "after": after, "signal": SIGNALS["ray"].__name__}))
"""


def test_a_task_running_on_the_cluster_is_the_sessions_activity(containers, alice, cluster):
    """The idle-culling signal `ray` (atelier_lab._activity), read in the session itself as
    its activity reporter reads it, from Ray's own GCS: a task running on a worker keeps
    the session; the idle cluster does not."""
    out = run_code(containers.url, cluster["model"]["url"], alice["token"], BUSY, kernel_id=cluster["kernel"],
                   timeout=240)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"before": None, "during": "Ray cluster: 1 node(s) running tasks", "after": None,
                    "signal": "ray_cluster_busy"}, (seen, out)


def test_the_nodes_are_containers_of_the_session_sized_by_the_profile(containers, cluster):
    client = docker.APIClient(base_url=engine().host)
    found = nodes(client, "alice")
    assert sorted(c["Labels"]["dev.atelier.ray"] for c in found) == ["head", "worker", "worker"]
    session = [c for c in client.containers(filters={"label": ["dev.atelier.user=alice",
                                                              f"dev.atelier.server={SERVER}"]})
               if "dev.atelier.ray" not in c["Labels"]]
    assert len(session) == 1
    small = next(p for p in load_profiles(REPO / "profiles") if p.name == "cpu-small")
    for c in found:
        info = client.inspect_container(c["Id"])
        hc = info["HostConfig"]
        assert info["Image"] == client.inspect_container(session[0]["Id"])["Image"]  # the same image id
        assert hc["NetworkMode"] == hc["PidMode"] == f"container:{session[0]['Id']}"
        assert hc["Memory"] == small.memory.limit and hc["NanoCpus"] == 2_000_000_000  # cpu-small: limit 2
        assert hc["CapDrop"] == ["ALL"] and info["Config"]["User"] == "1000:100"
        assert not any(e.startswith("RAY_AUTH_TOKEN=") for e in info["Config"]["Env"])  # a file, not the spec


def test_a_client_with_another_token_is_refused(containers, alice, cluster):
    out = run_code(containers.url, cluster["model"]["url"], alice["token"], TWO_CLIENTS,
                   kernel_id=cluster["kernel"], timeout=330)
    # Ray's own warnings (a raylet's "disk over 95% full") may be printed among the lines.
    right, wrong = (line.split() for line in out.strip().splitlines() if re.fullmatch(r"-?\d+ (True|False)", line))
    assert right[0] == "0", out  # the same client with the cluster's token joins
    assert wrong[0] != "0" and wrong[1] == "True", out  # Ray says the token is wrong


# Ray's dashboard API, asked from inside her session directly (not through her server),
# past the session's egress proxy (its no_proxy): without a token and with a token that is
# not the cluster's (urllib), then with the cluster's (requests, as Ray's job SDK asks).
DASHBOARD_DIRECT = """
import os, urllib.request, urllib.error, requests
for token in (None, "not-the-clusters-token-0123456789"):
    req = urllib.request.Request("http://127.0.50.1:8265/api/version",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        print(urllib.request.urlopen(req, timeout=30).status)
    except urllib.error.HTTPError as exc:
        print(exc.code)
print(requests.get("http://127.0.50.1:8265/api/version", timeout=30,
                   headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"}).status_code)
"""


def test_the_dashboard_is_hers_through_the_hub_and_refused_to_anyone_else(containers, alice, cluster, mallory):
    """Ray's dashboard, served by the head inside her session, proxied by her own server
    with the cluster's token: her hub login opens it (its page, its files, its API with
    her three nodes); a second real user's token is refused by her server, and a client
    without the cluster's token by the dashboard itself."""
    h = {"Authorization": f"token {alice['token']}"}
    model = requests.get(f"{containers.url}{API}", headers=h, timeout=30).json()["clusters"][0]
    assert model["dashboard_url"] == f"/user/alice/{SERVER}/atelier/ray/dashboard/", model
    # At her server's own origin (the hub sends a browser there from the hub's): what her
    # kernel's cluster.dashboard_url says.
    url = urljoin(server_address(containers.url, cluster["model"]["url"]), "atelier/ray/dashboard/")
    assert urljoin(containers.url + "/", cluster["facts"]["dashboard_url"]) == url, cluster["facts"]
    assert urlparse(url).path == model["dashboard_url"]
    page = requests.get(url, headers=h, timeout=60)
    assert page.status_code == 200 and "<title>Ray Dashboard</title>" in page.text, page.text[:300]
    script = re.search(r'src="\./(static/js/main\.[0-9a-f]+\.js)"', page.text).group(1)
    asset = requests.get(url + script, headers=h, timeout=60)
    assert asset.status_code == 200 and len(asset.content) > 100_000
    version = requests.get(url + "api/version", headers=h, timeout=60)
    assert version.status_code == 200 and version.json()["ray_version"] == importlib.metadata.version("ray"), version.text
    summary = requests.get(url + "nodes?view=summary", headers=h, timeout=60).json()
    assert summary["result"] is True and len(summary["data"]["summary"]) == cluster["facts"]["alive"], summary
    # The cluster's token never reaches her browser.
    assert model["token"] not in page.text + version.text and "Set-Cookie" not in version.headers
    # Another user, with a token of her own: refused by alice's server (the hub's login).
    other = requests.get(url + "api/version", headers={"Authorization": f"token {mallory['token']}"},
                         allow_redirects=False, timeout=60)
    assert other.status_code == 403, (other.status_code, other.text[:200])
    # And with no hub login at all: sent to the hub to log in, no dashboard.
    anonymous = requests.get(url + "api/version", allow_redirects=False, timeout=60)
    assert anonymous.status_code == 302 and "/hub/" in anonymous.headers["Location"], anonymous.headers
    # Inside her session, the dashboard itself refuses a client without the cluster's token.
    out = run_code(containers.url, cluster["model"]["url"], alice["token"], DASHBOARD_DIRECT,
                   kernel_id=cluster["kernel"], timeout=120)
    assert out.split() == ["401", "403", "200"], out


def test_another_user_neither_sees_stops_nor_joins_it(containers, cluster, mallory):
    h = {"Authorization": f"token {mallory['token']}"}
    assert requests.get(f"{containers.url}{API}", headers=h, timeout=30).json() == {"clusters": []}
    r = requests.delete(f"{containers.url}{API}", params={"server": SERVER}, headers=h, timeout=30)
    assert r.status_code == 404 and r.json()["field"] == "server"
    r = requests.post(f"{containers.url}{API}", json={"server": SERVER, "workers": 1}, headers=h, timeout=60)
    assert r.status_code == 409 and "not running" in r.json()["message"], r.text


def test_over_the_limit_and_bad_input_are_refused_with_the_field_named(containers, alice, cluster):
    h = {"Authorization": f"token {alice['token']}"}
    r = requests.post(f"{containers.url}{API}", json={"server": "other", "workers": 3}, headers=h, timeout=60)
    # alice runs 2 workers; the default limit is 4 per user
    assert r.status_code == 409 and r.json()["field"] == "workers", r.text
    assert "allows 4 per user" in r.json()["message"] and "ray_workers_per_user" in r.json()["message"]
    r = requests.post(f"{containers.url}{API}", json={"server": SERVER, "workers": 0}, headers=h, timeout=60)
    assert r.status_code == 400 and r.json()["field"] == "workers"
    r = requests.post(f"{containers.url}{API}", json={"server": SERVER, "profile": "nope"}, headers=h, timeout=60)
    assert r.status_code == 400 and r.json()["field"] == "profile" and "cpu-small" in r.json()["message"]
    env = {**os.environ, "ATELIER_HUB_URL": containers.url, "ATELIER_TOKEN": alice["token"]}
    up = subprocess.run([str(VENV_BIN / "atelier"), "ray", "up", "other", "--workers", "3"], env=env,
                        capture_output=True, text=True, timeout=120)
    assert up.returncode != 0 and "allows 4 per user" in up.stderr, up.stderr
    status = subprocess.run([str(VENV_BIN / "atelier"), "ray", "status"], env=env, capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert [line.split()[:3] for line in status.splitlines()[1:]] == [[SERVER, "cpu-small", "2"]], status
    # ... and where her dashboard is, through the hub
    assert status.splitlines()[1].split()[-1] == f"{containers.url}/user/alice/{SERVER}/atelier/ray/dashboard/"


def _ray_usage(containers) -> list[tuple]:
    lines = [json.loads(x) for x in (containers.state / "usage.jsonl").read_text().splitlines()]
    return sorted((e["event"], e["server"], e.get("kind"), e.get("profile"), tuple(e.get("groups", ())))
                  for e in lines if e["user"] == "alice" and e["server"].startswith(f"{SERVER}/"))


def test_stopping_the_session_removes_the_cluster_and_usage_counts_its_nodes(containers, cluster):
    client = docker.APIClient(base_url=engine().host)
    assert len(nodes(client, "alice")) == 3
    # Each node counts in usage as kind "ray", sized by its profile, from its start ...
    node_keys = [f"{SERVER}/ray-head", f"{SERVER}/ray-worker-0", f"{SERVER}/ray-worker-1"]
    # ... with her hub groups, so they count in her team's usage too
    assert _ray_usage(containers) == [("start", k, "ray", "cpu-small", (TEAM,)) for k in node_keys]
    out = subprocess.run([str(VENV_BIN / "atelier"), "usage", "--state", str(containers.state), "--format", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    ray = json.loads(out)["by_kind"]["ray"]
    small = next(p for p in load_profiles(REPO / "profiles") if p.name == "cpu-small")
    assert ray["servers"] == 3 and ray["hours"] > 0, ray
    assert ray["cpu_hours"] == pytest.approx(ray["hours"] * small.cpu.limit, abs=1e-4 * (small.cpu.limit + 1)), ray
    # The team's usage holds the three nodes and the session they belong to.
    assert json.loads(out)["by_group"][TEAM]["servers"] == 4, json.loads(out)["by_group"]
    containers.stop_server("alice", SERVER)
    deadline = time.monotonic() + 60
    while nodes(client, "alice") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert nodes(client, "alice") == []
    # ... to its removal with the session.
    deadline = time.monotonic() + 30
    while len(_ray_usage(containers)) < 6 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_usage(containers) == sorted([("start", k, "ray", "cpu-small", (TEAM,)) for k in node_keys]
                                            + [("stop", k, None, None, ()) for k in node_keys])
    tokens = containers.state / "ray_clusters"
    deadline = time.monotonic() + 30
    while tokens.is_dir() and any(tokens.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not tokens.is_dir() or not any(tokens.iterdir())
