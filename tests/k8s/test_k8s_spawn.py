"""Cluster mode end to end: a real JupyterHub spawning with atelier_hub's KubeSpawner
against a real kube-apiserver, the real scheduler and kwok's simulated nodes.

Each profile's pod is accepted, scheduled to its pool, Running, with its home PVC
bound; credentials reach it only through a Secret; the GPU server limit and group
restrictions are enforced server-side; homes outlive servers.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import subprocess
import time
from datetime import datetime

import pytest
import yaml
from conftest import CULLED_AFTER_S, CULLED_PROFILE, VENV_BIN
from k8s_cluster import GPU_GROUP, GPU_IMAGE, assert_loopback, held_on, quantity, secret_env

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

# What each file in profiles/ asks for, written out (not read back through the code's
# own profile parser): pool, CPU (limit, guarantee), memory in bytes (limit, guarantee),
# GPUs, node selector.
EXPECTED = {
    "cpu-small": ("cpu", (2, 0.5), (4e9, 1e9), 0, {}),
    "cpu-large": ("cpu", (8, 4), (16e9, 8e9), 0, {}),
    "highmem": ("highmem", (4, 2), (64e9, 48e9), 0, {"atelier.dev/pool": "highmem"}),
    "gpu-1": ("gpu", (8, 4), (32e9, 24e9), 1, {"atelier.dev/pool": "gpu"}),
    "gpu-4": ("gpu", (32, 16), (192e9, 128e9), 4, {"atelier.dev/pool": "gpu"}),
}


@pytest.fixture(autouse=True)
def no_servers_left(hub):
    """Each test starts from no running server (a failed one must not hold a GPU slot)."""
    yield
    for user in ("ada", "bo", "cy"):
        for name, model in hub.api("GET", f"/users/{user}").json()["servers"].items():
            if model["ready"] or model["pending"]:
                hub.stop_server(user, name)


def server_pod(kube, user: str, server: str = "") -> dict | None:
    selector = f"hub.jupyter.org/username={user},hub.jupyter.org/servername={server}"
    items = kube.get(kube.ns("pods"), params={"labelSelector": selector})["items"]
    return items[0] if items else None


def node_pool(kube, node: str) -> str:
    return kube.get(f"/api/v1/nodes/{node}")["metadata"]["labels"]["atelier.dev/pool"]


def pvc(kube, name: str) -> dict | None:
    return kube.maybe(kube.ns("persistentvolumeclaims", name))


@pytest.mark.parametrize("profile_name", list(EXPECTED))
def test_profile_pod_lands_on_its_pool(hub, kube, profile_name):
    expected_pool, (cpu_limit, cpu_guarantee), (mem_limit, mem_guarantee), gpus, selector = EXPECTED[profile_name]
    server = f"p-{profile_name}"
    hub.spawn("ada", profile_name, server)
    pod = server_pod(kube, "ada", server)
    assert pod is not None, "no pod for the server"

    # Scheduled by the real scheduler to the profile's pool; GPU nodes host GPU pods only.
    pool = node_pool(kube, pod["spec"]["nodeName"])
    assert pool == expected_pool
    # Running under kwok, at a loopback address (the only kind a test may dial).
    assert pod["status"]["phase"] == "Running"
    assert ipaddress.ip_address(assert_loopback(pod["status"]["podIP"])).is_loopback

    container = pod["spec"]["containers"][0]
    limits, guarantees = container["resources"]["limits"], container["resources"]["requests"]
    assert quantity(limits["cpu"]) == cpu_limit
    assert quantity(guarantees["cpu"]) == cpu_guarantee
    assert quantity(limits["memory"]) == mem_limit
    assert quantity(guarantees["memory"]) == mem_guarantee
    if gpus:
        assert limits["nvidia.com/gpu"] == str(gpus)
        assert container["image"] == GPU_IMAGE  # a profile's own image
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    else:
        assert "nvidia.com/gpu" not in limits
        assert container["image"] != GPU_IMAGE
    assert pod["spec"].get("nodeSelector", {}) == selector

    # The home: one PVC per user, bound (through the scheduler's volume binding), at /home/jovyan.
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                 if "persistentVolumeClaim" in v)
    assert claim == "claim-ada"
    assert {"name": "home", "mountPath": "/home/jovyan"}.items() <= next(
        m for m in container["volumeMounts"] if m["name"] == "home").items()
    kube.wait("claim-ada bound", lambda: (pvc(kube, "claim-ada") or {}).get("status", {}).get("phase") == "Bound")

    # The session contract, with credentials only by reference; IRSA's service account.
    env = {e["name"]: e for e in container["env"]}
    assert env["ATELIER_PROFILE"]["value"] == profile_name
    assert env["OMP_NUM_THREADS"]["value"] == str(cpu_limit)
    # An empty value comes back without its field.
    assert env["CUDA_VISIBLE_DEVICES"].get("value", "") == {0: "", 1: "0", 4: "0,1,2,3"}[gpus]
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://127.0.0.1:9"
    for name in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name], f"{name} is a literal in the pod spec"
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == f"{pod['metadata']['name']}-env"
    assert hub.s3_secret not in str(pod), "the S3 secret key is in the pod spec"
    resolved = secret_env(kube, pod)
    # The credentials the session contract hands out (the user guide's table: the hub token
    # twice, MLflow's token, the S3 keys, and %sql's URL, which carries the hub token),
    # each only by reference to the server's Secret; and no other variable hides one.
    assert set(resolved) == {"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "MLFLOW_TRACKING_TOKEN",
                             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL"}
    by_value = {name: e.get("value", "") for name, e in env.items() if "valueFrom" not in e}
    assert not [n for n, v in by_value.items() if resolved["JUPYTERHUB_API_TOKEN"] in v or hub.s3_secret in v]
    assert resolved["AWS_SECRET_ACCESS_KEY"] == hub.s3_secret
    assert resolved["JUPYTERHUB_API_TOKEN"] not in str(pod)
    # The token in the Secret is the server's live hub token.
    who = hub.api("GET", "/user", token=resolved["JUPYTERHUB_API_TOKEN"])
    assert who.status_code == 200 and who.json()["name"] == "ada", who.text
    # The session's config files: from the same Secret, read-only, where the env points.
    # docs/admin-guide.md's place for them: /etc/atelier/session.
    assert env["SPARK_CONF_DIR"]["value"] == "/etc/atelier/session/spark"
    assert env["TRINO_CONFIG"]["value"] == "/etc/atelier/session/trino/config"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "atelier-session")
    assert mount["mountPath"] == "/etc/atelier/session" and mount["readOnly"] is True
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "atelier-session")
    files = {item["path"]: item["key"] for item in volume["secret"]["items"]}
    secret = kube.get(kube.ns("secrets", volume["secret"]["secretName"]))
    spark_conf = base64.b64decode(secret["data"][files["spark/spark-defaults.conf"]]).decode()
    assert f"spark.master local[{cpu_limit}]" in spark_conf
    assert "user=ada" in base64.b64decode(secret["data"][files["trino/config"]]).decode()
    # git commits as the hub user (docs/user-guide.md, "Your own packages, and git"), from the same folder.
    assert env["GIT_CONFIG_SYSTEM"]["value"] == "/etc/atelier/session/git/config"
    git = base64.b64decode(secret["data"][files["git/config"]]).decode()
    assert "name = ada\n" in git and "email = ada@users.noreply.atelier\n" in git, git
    # IRSA: the service account the cluster settings name (its role annotation is the
    # platform's, made by the fixture as Terraform makes it).
    assert pod["spec"]["serviceAccountName"] == "atelier-session"

    hub.stop_server("ada", server)
    kube.wait("the pod to go", lambda: server_pod(kube, "ada", server) is None)
    kube.wait("the server's Secret to go",
              lambda: kube.maybe(kube.ns("secrets", f"{pod['metadata']['name']}-env")) is None)
    assert pvc(kube, "claim-ada") is not None, "stopping a server deleted the home"


def test_second_gpu_server_is_refused(hub, kube):
    hub.spawn("ada", "gpu-1", "train")
    r = hub.request_spawn("ada", "gpu-1", "train-2")
    assert r.status_code == 409, r.text
    message = r.json()["message"]
    assert "GPU server limit" in message and "train" in message and "gpu-1" in message, message
    assert server_pod(kube, "ada", "train-2") is None
    # Past her GPU count (the cluster settings' gpus_per_user: 4): 4 more beside train's 1.
    # Refused at once, naming what holds hers; not queued.
    r = hub.request_spawn("ada", "gpu-4", "big")
    assert r.status_code == 409, r.text
    assert r.json()["message"] == ("GPU limit reached: you may hold 4 GPUs at a time, and these hold 1: server train "
                                   "(1 GPU). Stop one of them, or wait for it to end."), r.text
    assert server_pod(kube, "ada", "big") is None
    hub.api("DELETE", "/users/ada/servers/big", json={"remove": True})
    # A CPU server is still fine alongside the GPU one.
    hub.spawn("ada", "cpu-small", "notes")
    hub.stop_server("ada", "notes")
    # Once the first stops, the second may start.
    hub.stop_server("ada", "train")
    hub.api("DELETE", "/users/ada/servers/train-2", json={"remove": True})
    hub.spawn("ada", "gpu-1", "train-2")
    assert node_pool(kube, server_pod(kube, "ada", "train-2")["spec"]["nodeName"]) == "gpu"
    hub.stop_server("ada", "train-2")


def test_forbidden_profile_is_refused(hub, kube):
    # bo is not in the GPU group: a crafted request naming a GPU profile is refused
    # before anything is created, with the profiles bo may use. (bo's home claim may
    # exist from another test's server: the refusal must neither make nor touch it.)
    claim_before = (pvc(kube, "claim-bo") or {}).get("metadata", {}).get("uid")
    r = hub.request_spawn("bo", "gpu-1", "crafted")
    assert r.status_code == 403, r.text
    message = r.json()["message"]
    assert "'gpu-1' is not available to you" in message, message
    assert "cpu-small" in message and "gpu-4" not in message, message
    assert server_pod(kube, "bo", "crafted") is None
    assert (pvc(kube, "claim-bo") or {}).get("metadata", {}).get("uid") == claim_before
    r = hub.request_spawn("bo", "no-such-profile", "crafted-2")
    assert r.status_code == 400 and "unknown profile" in r.json()["message"], r.text
    # The GPU group's member may: the same request from ada gets a pod on the GPU pool.
    assert GPU_GROUP in hub.api("GET", "/users/ada").json()["groups"]
    hub.spawn("ada", "gpu-1", "crafted")
    assert node_pool(kube, server_pod(kube, "ada", "crafted")["spec"]["nodeName"]) == "gpu"
    hub.stop_server("ada", "crafted")


def test_spawn_form_lists_only_allowed_profiles_and_refuses_a_crafted_one(hub, kube):
    browser = hub.login("bo")
    page = browser.get(f"{hub.url}/hub/spawn/bo/form-check", timeout=60)
    assert page.status_code == 200, page.text[:300]
    assert 'value="cpu-small"' in page.text and 'value="highmem"' in page.text
    assert "gpu-1" not in page.text and "gpu-4" not in page.text
    # The form posted with a profile that was never offered: refused on the page.
    xsrf = re.search(r'xsrf_token: "([^"]+)"', page.text).group(1)  # as the page's script sends it
    r = browser.post(f"{hub.url}/hub/spawn/bo/form-check", data={"profile": "gpu-1", "_xsrf": xsrf}, timeout=60)
    assert "profile &#39;gpu-1&#39; is not available to you" in r.text or \
        "profile 'gpu-1' is not available to you" in r.text, r.text[-2000:]
    assert server_pod(kube, "bo", "form-check") is None


def test_home_pvc_kept_and_reused(hub, kube):
    hub.spawn("cy", None)  # the default profile on the default server
    first = kube.wait("claim-cy bound",
                      lambda: (c := pvc(kube, "claim-cy")) and c["status"].get("phase") == "Bound" and c)
    assert server_pod(kube, "cy")["status"]["phase"] == "Running"

    hub.stop_server("cy")
    kube.wait("cy's pod to go", lambda: server_pod(kube, "cy") is None)
    kept = pvc(kube, "claim-cy")
    assert kept is not None and kept["metadata"]["uid"] == first["metadata"]["uid"]
    assert kept["spec"]["volumeName"] == first["spec"]["volumeName"]

    # Again, with another profile on a named server: the same home, no new claim.
    hub.spawn("cy", "cpu-large", "big")
    pod = server_pod(kube, "cy", "big")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["claim-cy"]
    assert pvc(kube, "claim-cy")["metadata"]["uid"] == first["metadata"]["uid"]
    mine = kube.get(kube.ns("persistentvolumeclaims"), params={"labelSelector": "hub.jupyter.org/username=cy"})
    assert [c["metadata"]["name"] for c in mine["items"]] == ["claim-cy"]

    # Removing the named server (KubeSpawner's delete_forever) keeps the home too.
    hub.stop_server("cy", "big", remove=True)
    kube.wait("cy's big pod to go", lambda: server_pod(kube, "cy", "big") is None)
    assert pvc(kube, "claim-cy")["metadata"]["uid"] == first["metadata"]["uid"]


def test_gpu_slices_ask_for_their_resource_and_land_where_the_device_plugin_offers_them(hub, kube):
    """A MIG slice and a time-sliced share as profiles (tests/k8s/k8s_cluster.py,
    SLICE_PROFILES): each pod asks for its slice's extended resource and no whole GPU, and
    the real scheduler puts it on the node that advertises that resource; the form says
    what each slice isolates."""
    # As the browser reads it (the page says utf-8; requests would guess latin-1 for text/html).
    page = hub.login("ada").get(f"{hub.url}/hub/spawn/ada/form-slices", timeout=60).content.decode()
    assert "1 × a MIG slice (mig-1g.10gb): its own memory and compute, isolated from other sessions." in page
    assert "1 × a time-sliced share of a GPU: its memory is not isolated from the other sessions on it." in page
    for profile, resource in (("gpu-mig", "nvidia.com/mig-1g.10gb"), ("gpu-shared", "nvidia.com/gpu.shared")):
        hub.spawn("ada", profile, profile)
        pod = server_pod(kube, "ada", profile)
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits[resource] == "1" and "nvidia.com/gpu" not in limits, limits
        assert pod["spec"]["nodeName"] == "gpu-slice-0"
        hub.stop_server("ada", profile)


FULL = "full: no node of its pool has room now; a server started now waits for one"
OTHER_TEAM = "/api/v1/namespaces/other-team"


def hold_gpus(kube, name: str, count: int) -> None:
    """Another team's pod on gpu-0 holding ``count`` GPUs, in a namespace the hub does not spawn in."""
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other-team"}})
    kube.create(f"{OTHER_TEAM}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": "gpu-0", "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                 "containers": [{"name": "train", "image": "registry.invalid/train:1",
                                 "resources": {"limits": {"nvidia.com/gpu": str(count)}}}]}})


def release_gpus(kube, name: str) -> None:
    """That pod deleted, and gone (a terminating pod still holds its GPUs)."""
    kube.request("DELETE", f"{OTHER_TEAM}/pods/{name}", json={"gracePeriodSeconds": 0})
    kube.wait("the other team's pod gone", lambda: kube.maybe(f"{OTHER_TEAM}/pods/{name}") is None)


def held_in_queue(kube, resource: str) -> int:
    """What the hub's pods that Kueue admitted hold of ``resource``: the pods naming a
    queue, no longer gated, not ended, read from the API server."""
    held = 0
    for pod in kube.get(kube.ns("pods"), params={"labelSelector": "kueue.x-k8s.io/queue-name"})["items"]:
        if pod["spec"].get("schedulingGates") or pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        held += sum(int(c["resources"].get("limits", {}).get(resource, 0)) for c in pod["spec"]["containers"])
    return held


def test_the_form_shows_what_each_pool_has_free_in_chromium_and_counts_again_after_a_stop(hub, kube):
    """Live capacity on the cluster's spawn form, as ada's Chromium shows it. The GPU
    profiles wait in Kueue's queue (the hub's 4 GPUs, its 2 MIG slices and 4 shares:
    conftest's QUEUE_GPUS): their cards count the queue's room (less what Kueue admitted,
    her own server among it) and, where the queue is short, her place in line; where the
    queue has room but no node does (a pod of another namespace takes gpu-0's free GPUs,
    outside the queue), the card says the pool is full. Her server's stop frees its GPU."""
    from browser.chromium import CHROMIUM, FLAGS, SHOTS, login
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        form = f"{hub.url}/hub/spawn/ada/cap"

        def cards() -> dict[str, str]:
            page.goto(form)
            page.wait_for_selector(".atelier-capacity", timeout=60_000)
            return {c.get_attribute("data-profile"): c.inner_text().strip()
                    for c in page.locator(".atelier-capacity").all()}

        def until(profile: str, expected: str, timeout: float = 40) -> dict[str, str]:
            # The form's numbers may be 10 s old (capacity_max_age), Kueue's a moment more.
            deadline = time.monotonic() + timeout
            while (seen := cards())[profile] != expected:
                assert time.monotonic() < deadline, seen
                time.sleep(1)
            return seen

        try:
            login(page, hub, "ada", hub.password)
            hub.spawn("ada", "gpu-1", "cap-gpu")
            queue_free = 4 - held_in_queue(kube, "nvidia.com/gpu")
            assert queue_free <= 3  # ada's server holds one
            mig = 2 - held_in_queue(kube, "nvidia.com/mig-1g.10gb")
            shares = 4 - held_in_queue(kube, "nvidia.com/gpu.shared")
            seen = until("gpu-1", f"{queue_free} of 4 GPUs free in the queue · fits now")
            page.screenshot(path=str(SHOTS / "k8s-spawn-form-capacity.png"), full_page=True)
            # gpu-4 asks for more than the queue has free: nobody waits in ada's queue (everyone's).
            # It would start when ada's server gives its GPU back: when the culler stops it,
            # gpu-1's idle_timeout after it started (the hub's estimate, in whole minutes).
            idle_min = yaml.safe_load((hub.profiles / "gpu-1.yaml").read_text())["culling"]["idle_timeout"] / 60
            assert seen["gpu-4"] in {f"{queue_free} of 4 GPUs free in the queue · full: you would be 1st in line, "
                                     f"about {m} min" for m in (round(idle_min), round(idle_min) - 1)}, seen
            assert seen["gpu-mig"] == f"{mig} of 2 slices free in the queue · fits now", seen
            assert seen["gpu-shared"] == f"{shares} of 4 shares free in the queue · fits now", seen
            assert seen["cpu-small"] == "fits now", seen
            # The same lines from a laptop: `atelier profiles --free` with ada's login.
            token = hub.api("POST", "/users/ada/tokens", json={"note": "laptop"}).json()["token"]
            out = subprocess.run([str(VENV_BIN / "atelier"), "profiles", "--free", "--hub", hub.url],
                                 capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "ATELIER_TOKEN": token, "XDG_CONFIG_HOME": str(hub.dir)})
            assert out.returncode == 0, out.stderr
            # NAME[*] CPU MEMORY GPU  NOW
            rows = dict(re.match(r"^(\S+?)\*?\s+\S+\s+\S+\s+\d+  (.*)$", line).groups()
                        for line in out.stdout.splitlines()[1:-1])
            assert rows == seen, out.stdout
            # bo, a second user of the hub, is not answered ada's profiles (nor is anyone's
            # group membership told through it); his own are his.
            bo = hub.api("POST", "/users/bo/tokens", json={"note": "laptop"}).json()["token"]
            theirs = hub.http.get(f"{hub.url}/hub/api/atelier/users/ada/capacity", timeout=60,
                                  headers={"Authorization": f"token {bo}"})
            assert theirs.status_code in (403, 404), theirs.text
            own = hub.http.get(f"{hub.url}/hub/api/atelier/users/bo/capacity", timeout=60,
                               headers={"Authorization": f"token {bo}"})
            assert own.status_code == 200 and "gpu-1" not in {p["name"] for p in own.json()["profiles"]}, own.text
            # Another team's pod, in a namespace the hub does not spawn in, takes every GPU of
            # gpu-0 left: the queue still has room, no node has.
            hold_gpus(kube, "holds-gpus", 8 - held_on(kube, "gpu-0", "nvidia.com/gpu"))
            seen = until("gpu-1", f"{queue_free} of 4 GPUs free in the queue · {FULL}")
            assert seen["gpu-mig"] == f"{mig} of 2 slices free in the queue · fits now", seen  # another pool
            page.screenshot(path=str(SHOTS / "k8s-spawn-form-full.png"), full_page=True)
            # ada stops her server: its GPU is free on the node and in the queue.
            hub.stop_server("ada", "cap-gpu")
            until("gpu-1", f"{queue_free + 1} of 4 GPUs free in the queue · fits now", timeout=20)
        finally:
            browser.close()
            release_gpus(kube, "holds-gpus")


def test_the_cards_keep_the_nodes_numbers_where_kueue_cannot_be_read(hub, kube):
    """The hub may not list Kueue's ClusterQueues (its ClusterRole without them, as on a
    cluster without Kueue): the GPU cards say what the nodes have free, the others still
    fit, rather than every card losing its line (the API server's 403 is an answer, not
    a failed call: the hub reads it as one)."""
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/atelier-hub-capacity"
    role = kube.get(path)
    rules = [r for r in role["rules"] if "kueue.x-k8s.io" not in r.get("apiGroups", [])]
    assert len(rules) < len(role["rules"]), role["rules"]
    token = hub.api("POST", "/users/ada/tokens", json={"note": "cards"}).json()["token"]

    def cards() -> dict[str, str]:
        r = hub.http.get(f"{hub.url}/hub/api/atelier/users/ada/capacity", timeout=60,
                         headers={"Authorization": f"token {token}"})
        assert r.status_code == 200, r.text
        return {p["name"]: p.get("now", "") for p in r.json()["profiles"]}

    kube.request("PUT", path, json={**role, "rules": rules}).raise_for_status()
    try:
        # The form's numbers may be 10 s old (capacity_max_age).
        seen = wait_until("the GPU cards with the nodes' numbers", lambda: (
            c if re.fullmatch(r"\d+ of 8 GPUs free · fits now", (c := cards())["gpu-1"]) else None), 40)
        assert seen["cpu-small"] == "fits now" and "in the queue" not in seen["gpu-mig"], seen
    finally:
        fresh = kube.get(path)
        kube.request("PUT", path, json={**fresh, "rules": role["rules"]}).raise_for_status()


def test_a_gpu_server_with_no_room_waits_past_the_start_timeout_and_starts_when_a_gpu_frees(hub, kube):
    """No scheduler message on the progress page for a pod that waits for GPUs ("0/6 nodes
    are available: ..."): the spawn page says the pool is full, with its numbers; the
    pod stays Pending past the hub's start_timeout (60 s here: the wait is not a slow
    start), and starts once another namespace's pod gives its GPUs back."""
    hold_gpus(kube, "holds-all-gpus", 8 - held_on(kube, "gpu-0", "nvidia.com/gpu"))
    try:
        assert held_on(kube, "gpu-0", "nvidia.com/gpu") == 8
        r = hub.request_spawn("ada", "gpu-1", "waits")
        assert r.status_code == 202, r.text
        asked = time.monotonic()
        seen: list[str] = []
        said = hub.progress_message("ada", "waits", r"Waiting for room", timeout=90, seen=seen)
        # start_timeout (60 s) plus max_wait (a day, the default), for this start only.
        assert said == ("Waiting for room: every node of the 1 GPU pool is full now (0 of 8 GPUs free). The "
                        "server starts as soon as a server or job there ends; it waits up to 24 h 1 min, and "
                        "stopping it leaves the wait."), said
        assert not [m for m in seen if "nodes are available" in m], seen
        time.sleep(max(0.0, asked + 70 - time.monotonic()))  # past the hub's start_timeout
        model = hub.api("GET", "/users/ada").json()["servers"].get("waits", {})
        assert model.get("pending") == "spawn" and not model.get("ready"), (model, hub.hub_log())
        pod = server_pod(kube, "ada", "waits")
        assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName"), pod["status"]
    finally:
        release_gpus(kube, "holds-all-gpus")
    # The GPUs come back: the scheduler places the waiting pod, and the hub calls it ready.
    deadline = time.monotonic() + 100
    while not (model := hub.api("GET", "/users/ada").json()["servers"].get("waits", {})).get("ready"):
        assert model.get("pending") and time.monotonic() < deadline, (model, hub.hub_log())
        time.sleep(1)
    assert server_pod(kube, "ada", "waits")["spec"]["nodeName"] == "gpu-0"
    hub.stop_server("ada", "waits")


# -- the GPU queue: Kueue's (built from the Go module proxy), on the test hub's 4 GPUs ------------


def gated(kube, user: str, server: str = "q") -> bool:
    """Whether Kueue holds the user's pod (its admission gate), read from the API server."""
    pod = server_pod(kube, user, server)
    return bool(pod) and any(g["name"] == "kueue.x-k8s.io/admission" for g in pod["spec"].get("schedulingGates") or [])


def queue_state(kube) -> str:
    """The hub's queued pods (gated or where) and Kueue's ClusterQueues, for a failure's message."""
    pods = kube.get(kube.ns("pods"), params={"labelSelector": "kueue.x-k8s.io/queue-name"})["items"]
    lines = [f"{p['metadata']['name']}: {p['metadata']['labels'].get('kueue.x-k8s.io/queue-name')} "
             f"{p['status'].get('phase')} gates={[g['name'] for g in p['spec'].get('schedulingGates') or []]} "
             f"node={p['spec'].get('nodeName')}" for p in pods]
    for q in kube.get("/apis/kueue.x-k8s.io/v1beta2/clusterqueues")["items"]:
        st = q.get("status") or {}
        lines.append(f"{q['metadata']['name']}: pending={st.get('pendingWorkloads')} admitted="
                     f"{st.get('admittedWorkloads')} reserved={st.get('flavorsReservation')}")
    return "\n".join(lines)


def wait_until(what: str, check, timeout: float = 90, kube=None):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not in {timeout} s" + (f"\n{queue_state(kube)}" if kube else "")
        time.sleep(0.5)
    return value


def ready(hub, user: str) -> bool:
    return bool(hub.api("GET", f"/users/{user}").json()["servers"].get("q", {}).get("ready"))


def ask_in_order(hub, kube, users: list[str], profile: str = "gpu-1") -> None:
    """Each user asks for ``profile`` (server ``q``) once the one before has its pod:
    Kueue's order is the order of asking (its workloads' creation, to the second)."""
    for user in users:
        r = hub.request_spawn(user, profile, "q")
        assert r.status_code in (201, 202), r.text
        wait_until(f"{user}'s pod", lambda user=user: server_pod(kube, user, "q"), 30)
        time.sleep(1.1)


def stop_all(hub, users: list[str]) -> None:
    for user in users:
        if "q" in hub.api("GET", f"/users/{user}").json()["servers"]:
            hub.stop_server(user, "q")


def test_six_users_ask_for_one_gpu_of_four_two_wait_in_line_and_move_up_when_one_stops(hub, kube):
    """Kueue's queue (the hub's 4 GPUs; gpu-0 itself has 8): four servers run, two wait
    gated with their place on the spawn page, read from Kueue's visibility API, and an
    ETA. One of the four stops: the first in line starts, and the second becomes the
    first. The four are of a profile culled after a minute idle (kwok's pods are never
    active): the second's ETA, reckoned from the culler's deadlines, is checked against
    when the real culler's stop of another let it start."""
    users = [f"q{i}" for i in range(1, 7)]
    for user in users:
        hub.add_user(user, groups=(GPU_GROUP,))
    try:
        ask_in_order(hub, kube, users[:4], CULLED_PROFILE)
        ask_in_order(hub, kube, users[4:])
        for user in users[:4]:
            wait_until(f"{user} ready", lambda user=user: ready(hub, user), kube=kube)
            assert server_pod(kube, user, "q")["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "everyone"
        for user in users[4:]:
            assert gated(kube, user) and not ready(hub, user), server_pod(kube, user, "q")["spec"]
        assert held_on(kube, "gpu-0", "nvidia.com/gpu") == 4  # the node has room: the queue holds them
        first = hub.progress_message("q5", "q", r"In line", timeout=30)
        second = hub.progress_message("q6", "q", r"In line", timeout=30)
        # Their ETAs: when the first two of the four are culled (each within a minute).
        assert re.match(r"In line for 1 GPU: 1st of 2 waiting in everyone's queue, (about 1 min|any moment) "
                        r"\(from the running servers' idle-stop deadlines", first), first
        assert re.match(r"In line for 1 GPU: 2nd of 2 waiting in everyone's queue, (about 1 min|any moment) ", second), \
            second
        # One of the four stops: q5 starts within seconds, q6 moves up.
        hub.stop_server("q1", "q")
        stopped = time.monotonic()
        wait_until("q5 ready", lambda: ready(hub, "q5"), 60, kube)
        started_in = time.monotonic() - stopped
        assert gated(kube, "q6") and not ready(hub, "q6")
        moved = hub.progress_event("q6", "q", r"1st of 1 waiting", timeout=30)
        assert moved["message"].startswith("In line for 1 GPU: 1st of 1 waiting in everyone's queue, "), moved
        print(f"queue: the first in line started {started_in:.1f} s after a GPU server stopped")
        # Nobody stops the other three: the culler does, a minute after each started (it
        # looks every 15 s), and q6 starts then. Its ETA was q2's deadline (the first of them).
        eta = moved["eta"]
        q2 = hub.api("GET", "/users/q2").json()["servers"]["q"]["last_activity"]
        q2_active = datetime.fromisoformat(q2.replace("Z", "+00:00")).timestamp()
        assert abs(eta - (q2_active + CULLED_AFTER_S)) < 5, (eta, q2)
        wait_until("q6 ready", lambda: ready(hub, "q6"), CULLED_AFTER_S + 60, kube)
        late = time.time() - eta
        culled = [u for u in users[1:4] if not ready(hub, u)]
        print(f"queue: ETA shown {moved['message']!r}; q6 started {late:+.1f} s after it, when the culler stopped "
              f"{culled}")
        assert culled, "q6 started while the three still ran"
        # Late by the culler's look (every 15 s), the stop and the start; never early.
        assert -2 < late < 15 + 20, late
    finally:
        stop_all(hub, users)


def test_the_next_free_gpu_goes_to_the_team_below_its_share_though_it_asked_later(hub, kube):
    """Two teams of weight 1 (Kueue's fair sharing in one cohort): team-a holds all four
    GPUs and asks for a fifth; team-b asks later. When one of team-a's stops, team-b's
    server starts and team-a's waits on."""
    team_a, team_b = [f"ta{i}" for i in range(1, 6)], ["tb1"]
    for user in team_a:
        hub.add_user(user, groups=(GPU_GROUP, "team-a"))
    hub.add_user("tb1", groups=(GPU_GROUP, "team-b"))
    try:
        ask_in_order(hub, kube, team_a)
        for user in team_a[:4]:
            wait_until(f"{user} ready", lambda user=user: ready(hub, user), kube=kube)
        ask_in_order(hub, kube, team_b)
        assert gated(kube, "ta5") and gated(kube, "tb1")
        assert server_pod(kube, "tb1", "q")["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-b"
        said = hub.progress_message("tb1", "q", r"In line", timeout=30)
        # First: team-b holds nothing. Its ETA: when the first of team-a's four is culled
        # (gpu-1's 20 min idle_timeout after it started), fair share giving it to team-b.
        assert re.match(r"In line for 1 GPU: 1st of 1 waiting in team-b's queue, about (19|20) min ", said), said
        hub.stop_server("ta1", "q")
        wait_until("tb1 ready", lambda: ready(hub, "tb1"), 60, kube)
        assert gated(kube, "ta5") and not ready(hub, "ta5")
    finally:
        stop_all(hub, team_a + team_b)


def atelier(hub, token: str, *args: str) -> subprocess.CompletedProcess:
    """The real `atelier` command, as on a laptop after `atelier login`."""
    return subprocess.run([str(VENV_BIN / "atelier"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ATELIER_HUB_URL": hub.url, "ATELIER_TOKEN": token,
                               "XDG_CONFIG_HOME": str(hub.dir)})


def test_a_gpu_job_waits_in_the_queue_and_atelier_jobs_shows_its_place_until_cancelled(hub, kube):
    """`atelier run --profile gpu-1` while the hub's four GPUs are held: the job's pod waits
    gated in its team's queue as a server's does; `atelier jobs` (the jobs service, which
    asks the hub) shows its place, read from Kueue's visibility API, and its ETA; `atelier
    cancel` takes it out of the line. The job's user is a fifth, not one of the holders."""
    holders = [f"jh{i}" for i in range(1, 5)]
    for user in [*holders, "jq"]:
        hub.add_user(user, groups=(GPU_GROUP,))
    token = hub.api("POST", "/users/jq/tokens", json={"note": "laptop"}).json()["token"]
    try:
        ask_in_order(hub, kube, holders)
        for user in holders:
            wait_until(f"{user} ready", lambda user=user: ready(hub, user), kube=kube)
        r = atelier(hub, token, "run", "--profile", "gpu-1", "--name", "waits", "--detach", "--",
                    "python", "-c", "print('trained')")
        assert r.returncode == 0, r.stderr
        pod = wait_until("the job's pod", lambda: server_pod(kube, "jq", "job-waits"), 30, kube)
        assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "everyone"
        assert gated(kube, "jq", "job-waits"), pod["spec"]

        def listed() -> str | None:
            out = atelier(hub, token, "jobs")
            assert out.returncode == 0, out.stderr
            row = next((line for line in out.stdout.splitlines() if line.startswith("waits ")), "")
            return row if "queued (" in row else None

        row = wait_until("the job queued on `atelier jobs`", listed, 30, kube)
        # 1st of 1; it starts when the first holder is culled (gpu-1's 20 min idle_timeout).
        assert re.search(r" queued \(1st of 1 waiting, about (19|20) min\) ", row), row
        # The hub's answer behind it is jq's alone: a second user (a holder) is refused it.
        other = hub.api("POST", "/users/jh1/tokens", json={"note": "laptop"}).json()["token"]
        for who, expected in ((token, 200), (other, 404)):
            r = hub.http.get(f"{hub.url}/hub/api/atelier/users/jq/jobs/waits/queue", timeout=60,
                             headers={"Authorization": f"token {who}"})
            assert r.status_code == expected and (expected == 200) == ("position" in r.text), (r.status_code, r.text)
        r = atelier(hub, token, "cancel", "waits")
        assert r.returncode == 0, r.stderr
        wait_until("the job's pod gone", lambda: server_pod(kube, "jq", "job-waits") is None, 60, kube)
    finally:
        stop_all(hub, holders)
