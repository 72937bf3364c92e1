"""`kill -9` of `atelier dev`, or of its hub, while a container session runs, then
`atelier dev` again.

A killed `atelier dev` leaves its hub running on its own (the hub has its own process
group): the next `atelier dev` on the same state must end that hub without letting it
stop the session. A killed hub is noticed by its `atelier dev`, which ends what the hub
left and exits. Either way the next `atelier dev` re-adopts the session: the same
container (same ID, never restarted), the same kernel with its variables, the home's
file, the server reachable through the new hub's proxy (so through a new network
relay: the session's own died with the hub that started it). Nothing of the stack's,
relays included, is left running after it stops. A user removed while no hub ran (the
hub killed hard, then `atelier users remove`) has their container ended by that next
`atelier dev`, their home kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from atelier_hub.embedded.container_spawner import stack_id
from atelier_hub.embedded.engine import docker_host
from atelier_hub.embedded.stack import EmbeddedStack
from atelier_hub.embedded.state_folder import HUB_RECORD
from atelier_hub.services._process import pid_matches, start_time
from kernel import run_code, start_kernel
from stack import VENV_BIN, Stack

pytestmark = pytest.mark.integration

USER = "gil"
OTHER = "hal"  # removed while no hub runs: his container must not run on unrouted


def _containers(state) -> list[dict]:
    """This stack's session containers, running or not: ID, name, start time, state."""
    env = {**os.environ, "DOCKER_HOST": docker_host()}
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=dev.atelier.stack={stack_id(state)}"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return []
    # A container being removed (a session just stopped) can leave the list between the
    # two commands: inspect prints the others and exits 1 for it, so the exit code is not
    # checked, only that each ID it lost is really gone.
    done = subprocess.run(["docker", "inspect", *ids], env=env, capture_output=True, text=True)
    out = done.stdout if done.stdout.strip() else "[]"
    if done.returncode:
        assert all("No such" in line for line in done.stderr.splitlines() if line.strip()), done.stderr
    return [{"id": c["Id"], "name": c["Name"], "started": c["State"]["StartedAt"], "running": c["State"]["Running"]}
            for c in json.loads(out)]


def _relays(state) -> list[int]:
    """Pids of this stack's running session relays (their --name is the container's)."""
    mark = f"atelier-{stack_id(state)}-".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if b"atelier_hub.embedded.netns_relay" in cmdline and mark in cmdline and not zombie:
            found.append(int(proc.name))
    return found


@pytest.fixture
def container_stack(tmp_path):
    s = Stack(tmp_path / "state", name="container-restart", args=("--without", "trino"))
    try:
        s.start()
        if s.mode != "container":
            pytest.fail(f"the stack runs {s.mode} sessions: `make install` builds the images and "
                        "`atelier dev` starts the Docker engine; see the atelier dev log", pytrace=False)
        yield s
    finally:
        s.stop()
        # Stopping the stack stops its sessions: no container of it is left.
        left = [c for c in _containers(s.state) if c["running"]]
        assert not left, f"containers left running after the stack stopped: {left}"
        assert not _relays(s.state), "session relays left running after the stack stopped"


@pytest.mark.parametrize("victim", ["atelier dev", "hub"])
def test_kill_9_then_atelier_dev_again_readopts_the_container_session(container_stack, figures, victim):
    s = container_stack
    s.add_user(USER)
    token = s.user_token(USER)
    model = s.spawn(USER, "cpu-small")
    kernel = start_kernel(s.url, model["url"], token)
    marker = uuid.uuid4().hex
    run_code(s.url, model["url"], token, f"import pathlib\nx = {marker!r}\n"
             f"pathlib.Path.home().joinpath('before-restart.txt').write_text(x)", kernel_id=kernel)
    before = _containers(s.state)
    assert len(before) == 1 and before[0]["running"], before
    old_relays = _relays(s.state)
    assert len(old_relays) == 1, old_relays
    if victim == "hub":
        s.add_user(OTHER)
        s.spawn(OTHER, "cpu-small")
        theirs = [c for c in _containers(s.state) if c not in before]
        assert len(theirs) == 1 and theirs[0]["running"], theirs

    stack = EmbeddedStack.load(s.state)
    old_hub = pid_matches(stack.path(HUB_RECORD))
    assert old_hub, "no hub recorded"
    old_started = start_time(old_hub)
    if victim == "atelier dev":
        # Its hub is left running, alone.
        os.kill(s.proc.pid, signal.SIGKILL)
        assert s.proc.wait(30) == -signal.SIGKILL
        assert pid_matches(stack.path(HUB_RECORD)) == old_hub, "the hub died with atelier dev"
    else:
        # atelier dev sees its hub die, ends what it left and exits with an error.
        os.kill(old_hub, signal.SIGKILL)
        assert s.proc.wait(120) == 2
        # While no hub runs, the admin removes hal (the users file only).
        out = subprocess.run([str(VENV_BIN / "atelier"), "users", "--state", str(s.state), "remove", OTHER],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    s.proc = None

    t0 = time.monotonic()
    s.start()
    back_s = round(time.monotonic() - t0, 1)
    new_hub = pid_matches(EmbeddedStack.load(s.state).path(HUB_RECORD))
    assert new_hub and new_hub != old_hub
    assert start_time(old_hub) != old_started, "the previous hub still runs"

    # The next start ends hal's container (and keeps his home); gil's session is re-adopted.
    after = _containers(s.state)
    # The old relay ended with its hub; the new hub started one for the session it re-adopted.
    new_relays = _relays(s.state)
    assert len(new_relays) == 1 and new_relays != old_relays, (old_relays, new_relays)
    model = s.api("GET", f"/users/{USER}").json()["servers"].get("")
    figures(f"kill -9 {victim}, container session", restart_to_ready_s=back_s,
            readopted=bool(model and model["ready"]), same_container=after == before)
    assert model and model["ready"], f"the session was not re-adopted: {model}\n{s.hub_log()}"
    # The same container, never restarted, and no other (hal's is gone), ...
    assert after == before, (before, after)
    if victim == "hub":
        assert (s.state / "homes" / OTHER).is_dir()
        said = s.out.read_text()  # atelier dev's own output
        assert f"its user {OTHER} was removed while no hub ran" in said, said[-2000:]
    # ... the same kernel with its state, the home's file, through the new hub's proxy.
    out = run_code(s.url, model["url"], token, "import pathlib\n"
                   "print(x, pathlib.Path.home().joinpath('before-restart.txt').read_text())", kernel_id=kernel)
    assert out.split() == [marker, marker], out
    assert (s.state / "homes" / USER / "before-restart.txt").read_text() == marker

    s.stop_server(USER)
    assert not [c for c in _containers(s.state) if c["running"]], "the stopped session's container still runs"
    assert not _relays(s.state), "the stopped session's relay still runs"
