"""Job submission -> its first line of output: `atelier run` against a bare container run.

Atelier's job goes the whole way a user's does: `atelier run` (the CLI, with the user's
token) asks the jobs service, which asks the hub to start the user's named server
``job-NAME``; the container spawner builds its container from the profile as it builds a
session (network namespace and relay, the home, the session's settings and S3 keys),
the runner starts the command, and the CLI prints the output it reads back through the
service. The baseline is the same command in a container of the same image, created and
started through the same Docker engine's API (what `docker run --rm IMAGE CMD` does: no
limits, no mounts, host network), its output read from the engine's log stream. Runs
alternate between the two so load drifts hit both alike. Prints the median of N each and
the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hub"))
from atelier_hub.embedded.engine import engine, session_mode  # noqa: E402
from atelier_hub.install.paths import image_ref  # noqa: E402
from paired import alternate, report  # noqa: E402
from stack import VENV_BIN, Stack  # noqa: E402

COMMAND = ["sh", "-c", "echo first; sleep 1; echo done"]


def job_seconds(stack: Stack, token: str, name: str, profile: str) -> float:
    """Seconds from `atelier run` to the job's first line on its stdout; the job is then
    followed to its end (exit code 0, or it raises)."""
    env = {**os.environ, "ATELIER_HUB_URL": stack.url, "ATELIER_TOKEN": token,
           "XDG_CONFIG_HOME": str(stack.state.parent / "bench-config")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(VENV_BIN / "atelier"), "run", "--profile", profile, "--name", name, "--",
                             *COMMAND], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    out, err = proc.communicate(timeout=300)
    if first != "first\n" or proc.returncode != 0:
        raise RuntimeError(f"job {name}: exit {proc.returncode}, first line {first!r}\n{out}\n{err}")
    return elapsed


def container_seconds(client, image: str) -> float:
    """Seconds from the engine's create to the container's first line of output."""
    t0 = time.perf_counter()
    box = client.containers.run(image, COMMAND, detach=True, network_mode="host", user="1000")
    try:
        first = next(iter(box.logs(stream=True, follow=True)), b"")
        elapsed = time.perf_counter() - t0
        code = box.wait(timeout=120)["StatusCode"]
    finally:
        box.remove(force=True)
    if first.decode().splitlines()[:1] != ["first"] or code != 0:
        raise RuntimeError(f"container: exit {code}, first output {first!r}")
    return elapsed


def main() -> None:
    import docker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="runs of each (default 5)")
    ap.add_argument("--profile", default="cpu-small")
    args = ap.parse_args()
    mode = session_mode(start=True)
    if mode.name != "container":
        print(f"  skipped: jobs need container sessions ({mode.reason})")
        return
    client = docker.DockerClient(base_url=engine().host)
    image = image_ref("base")
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        print("starting the stack ...", flush=True)
        stack = Stack(Path(tmp) / "s", name="bench-jobs", args=("--no-trino",)).start()
        try:
            stack.add_user("bench")
            token = stack.user_token("bench")
            # One untimed run each: first-start costs (bytecode, caches) are not the subject.
            job_seconds(stack, token, "warm", args.profile)
            container_seconds(client, image)
            times = alternate(args.n, ("atelier run", lambda i: job_seconds(stack, token, f"bench-{i}", args.profile)),
                              ("bare container", lambda i: container_seconds(client, image)))
        finally:
            stack.stop()
    report(f"Submission -> first line of output (median of {args.n}, same machine, image and engine; "
           f"profile {args.profile})", times)

if __name__ == "__main__":
    main()
