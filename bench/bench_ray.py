"""A personal Ray cluster, request -> ready: `ray_cluster(workers=1)` against bare `ray start`.

Atelier's side goes the whole way a user's does: a kernel of a running container session
calls ``atelier_lab.ray_cluster(workers=1, profile=...)``, which asks the Ray clusters
service (with the session's token); the service starts a head and a worker as containers
of the session's image inside the session's namespaces, sized by the profile, with Ray's
token authentication, and answers once every node has joined. The baseline is the same
Ray of the same image with none of that: a head container (`ray start --head`) and a
worker container (`ray start --address=...`) created through the same Docker engine on
the host network, timed until the worker says it joined. Runs alternate between the two.
Prints the median of N each and the ratio. (Embedded mode; the cluster mode's KubeRay
cluster is timed by bench/bench_chart.py.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hub"))
from atelier_hub.embedded.engine import engine, session_mode  # noqa: E402
from atelier_hub.install.paths import image_ref  # noqa: E402
from atelier_hub.origins import resolve_localhost_names  # noqa: E402
from kernel import run_code, start_kernel  # noqa: E402
from paired import alternate, report  # noqa: E402
from stack import Stack, free_port  # noqa: E402

STARTED = "Ray runtime started"
REQUEST = """
import json, time
from atelier_lab import ray_cluster
t0 = time.perf_counter()
cluster = ray_cluster(workers=1, profile={profile!r})
took = time.perf_counter() - t0
cluster.down()
print(json.dumps({{"seconds": took}}))
"""


def wait_logged(box, text: str, timeout: float = 180) -> None:
    for chunk in box.logs(stream=True, follow=True):
        if text in chunk.decode(errors="replace"):
            return
    raise RuntimeError(f"{box.name} ended without {text!r}: {box.logs()[-2000:]!r}")


def bare_seconds(client, image: str) -> float:
    """Seconds from creating a bare head container (Ray's dashboard on, as a personal
    cluster's head) to its worker container having joined. The head has a network
    namespace of its own (loopback only), which the worker joins."""
    port = free_port()
    common = {"detach": True, "user": "1000", "shm_size": "1g"}
    store = str(256 * 2**20)
    t0 = time.perf_counter()
    head = client.containers.run(image, ["ray", "start", "--head", "--block", "--node-ip-address=127.0.60.1",
                                         f"--port={port}", "--num-cpus=0", "--include-dashboard=true",
                                         "--dashboard-host=127.0.60.1", "--dashboard-agent-listen-port=0",
                                         f"--object-store-memory={store}", "--disable-usage-stats"],
                                 network_mode="none", **common)
    worker = None
    try:
        wait_logged(head, STARTED)
        worker = client.containers.run(image, ["ray", "start", "--block", f"--address=127.0.60.1:{port}",
                                               "--node-ip-address=127.0.60.2", "--num-cpus=1",
                                               "--dashboard-agent-listen-port=0",
                                               f"--object-store-memory={store}"],
                                       network_mode=f"container:{head.id}", **common)
        wait_logged(worker, STARTED)
        return time.perf_counter() - t0
    finally:
        for box in (worker, head):
            if box is not None:
                box.remove(force=True)


def main() -> None:
    import docker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="clusters of each (default 5)")
    ap.add_argument("--profile", default="cpu-small")
    args = ap.parse_args()
    resolve_localhost_names()  # each user's session answers at NAME.localhost, as in the tests
    mode = session_mode(start=True)
    if mode.name != "container":
        print(f"  skipped: personal Ray clusters need container sessions ({mode.reason})")
        return
    client = docker.DockerClient(base_url=engine().host)
    image = image_ref("base")
    code = REQUEST.format(profile=args.profile)
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        print("starting the stack and a session ...", flush=True)
        stack = Stack(Path(tmp) / "s", name="bench-ray", args=("--no-trino",)).start()
        try:
            stack.add_user("bench")
            token = stack.user_token("bench")
            model = stack.spawn("bench", args.profile, server="ray")
            kernel = start_kernel(stack.url, model["url"], token)

            def atelier() -> float:
                out = run_code(stack.url, model["url"], token, code, kernel_id=kernel, timeout=400)
                return json.loads(out.strip().splitlines()[-1])["seconds"]

            # One untimed run each: first-start costs (bytecode, caches) are not the subject.
            atelier()
            bare_seconds(client, image)
            times = alternate(args.n, ("ray_cluster()", lambda i: atelier()),
                              ("bare ray start", lambda i: bare_seconds(client, image)), unit="cluster")
        finally:
            stack.stop()
    report(f"Request -> cluster ready, a head and 1 worker (median of {args.n}, same machine, image and "
           f"engine; profile {args.profile})", times)

if __name__ == "__main__":
    main()
