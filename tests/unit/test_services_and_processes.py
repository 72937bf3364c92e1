"""The service descriptors' contract, and the process helper with real processes:
groups, start-time-checked ends, supervised restarts with back-off, death with the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from atelier_hub import services
from atelier_hub.embedded.stack import EmbeddedStack
from atelier_hub.install import paths
from atelier_hub.services import _process
from atelier_hub.services.s3 import SERVICE as S3

# -- the descriptors -------------------------------------------------------------------------


def test_descriptors_have_unique_names_and_need_only_installable_parts():
    names = [s.name for s in services.SERVICES]
    assert len(names) == len(set(names))
    for svc in services.SERVICES:
        assert set(svc.needs) <= set(paths.PARTS), svc.name
        assert svc.title


def test_the_state_folder_gets_ports_and_endpoints_from_the_descriptors(tmp_path):
    stack, password = EmbeddedStack.prepare(tmp_path / "state", port=_process.free_port(), profiles_dir="profiles")
    assert password and (tmp_path / "state" / "initial-admin-password").read_text().strip() == password
    assert oct((tmp_path / "state" / "initial-admin-password").stat().st_mode & 0o777) == "0o600"
    with_port = {s.name for s in services.SERVICES if s.has_port}
    assert set(stack.ports) == {"hub", "proxy_api", *with_port}
    assert len(set(stack.ports.values()) | {stack.port}) == len(stack.ports) + 1  # no port twice
    deployment = stack.deployment().services
    # Each descriptor's endpoints, and nothing else, land in the deployment settings.
    assert deployment.s3.endpoint_url == f"http://127.0.0.1:{stack.ports['s3']}"
    assert deployment.mlflow.tracking_uri == f"{stack.url}/services/mlflow"
    assert deployment.trino.url == f"http://127.0.0.1:{stack.ports['trino']}"
    assert deployment.spark is not None and deployment.ray is not None
    # A second start reuses the ports (running sessions keep their settings) ...
    again, password = EmbeddedStack.prepare(tmp_path / "state", port=stack.port, profiles_dir="profiles")
    assert again.ports == stack.ports and password is None
    # ... and an optional service left out gives sessions no settings for it.
    without, _ = EmbeddedStack.prepare(tmp_path / "state", port=stack.port, profiles_dir="profiles",
                                  without=("trino",))
    assert "trino" not in without.ports and without.deployment().services.trino is None


def test_the_hub_config_runs_each_descriptor_through_a_supervisor(tmp_path):
    from atelier_hub.config import configure
    from traitlets.config import Config

    stack, _ = EmbeddedStack.prepare(tmp_path / "state", port=_process.free_port(), profiles_dir="profiles")
    c = Config()
    configure(c, stack.root)
    entries = {e["name"]: e for e in c.JupyterHub.services}
    assert set(entries) == {"s3", "mlflow", "trino", "culler", "jobs", "ray_clusters", "usage", "atelier-admin"}
    secret = S3.root_keys(stack)["secret_access_key"]
    for name in ("s3", "mlflow", "trino", "culler", "jobs", "ray_clusters", "usage"):
        cmd = entries[name]["command"]
        assert "--record" in cmd and cmd[cmd.index("--record") + 1] == str(stack.root / "run" / f"{name}.pgid")
        assert secret not in " ".join(cmd)  # keys travel in the environment only
    assert entries["s3"]["command"][1:3] == ["-m", "atelier_hub.services.s3"]
    spawner = c.JupyterHub.spawner_class.rsplit(".", 1)[1]  # containers or processes, by the machine
    assert "access:services!service=mlflow" in c[spawner].server_token_scopes
    # The culler and the usage page run supervised too (a hub killed hard leaves no orphan
    # culler behind), with the hub's variables; the culler's token may stop servers and
    # read their state (the profile), sessions' tokens may report to it.
    for name, module in (("culler", "atelier_hub.services.culler_server"), ("usage", "atelier_hub.services.usage_page"),
                         ("ray_clusters", "atelier_hub.services.ray_clusters_server")):
        cmd = entries[name]["command"]
        assert cmd[1:3] == ["-m", "atelier_hub.services._process"] and "--hub-env" in cmd, cmd
        assert cmd[cmd.index("--") + 2:cmd.index("--") + 4] == ["-m", module], cmd
    role = next(r for r in c.JupyterHub.load_roles if r.get("services") == ["culler"])
    assert {"delete:servers", "admin:server_state"} <= set(role["scopes"])
    assert "access:services!service=culler" in c[spawner].server_token_scopes
    assert "access:services!service=ray_clusters" in c[spawner].server_token_scopes  # ray_cluster() in a kernel


# -- the process helper ------------------------------------------------------------------------


def _wait(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_end_recorded_leaves_a_reused_pid_alone_and_ends_the_recorded_group(tmp_path):
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = tmp_path / "x.pgid"
        record.write_text(f"{bystander.pid} 1\n")  # same pid, another start time: a stranger
        assert _process.end_recorded(record) is False
        assert bystander.poll() is None and not record.exists()
        _process.record(record, bystander.pid)
        assert _process.pid_matches(record) == bystander.pid
        assert _process.end_recorded(record, grace=5) is True
        assert bystander.wait(10) is not None
    finally:
        bystander.kill()



def test_end_recorded_hard_never_runs_the_process_own_sigterm_handling(tmp_path):
    """A hub ended this way must not run its SIGTERM cleanup (it would stop every session)."""
    marker = tmp_path / "cleaned-up"
    code = ("import pathlib, signal, sys, time\n"
            f"def cleanup(*_):\n    pathlib.Path({str(marker)!r}).write_text('ran'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, cleanup)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    for hard, ran in ((False, True), (True, False)):
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            record = tmp_path / "hub.pid"
            _process.record(record, proc.pid)
            assert _process.end_recorded(record, grace=5, hard=hard) is True
            assert proc.wait(10) is not None
            assert marker.exists() is ran, f"hard={hard}: the SIGTERM handler {'did not run' if ran else 'ran'}"
        finally:
            proc.kill()
            proc.wait()


SUPERVISED = textwrap.dedent("""
    import sys
    from pathlib import Path
    from atelier_hub.services._process import Supervisor
    state = Path(sys.argv[1])
    sup = Supervisor(["sleep", "300"], name="t", record_file=state / "t.pgid")
    sys.exit(sup.run(interval=0.1))
""")


def _start_supervisor(tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, str(tmp_path)], env=env)
    _wait(lambda: _process.pid_matches(tmp_path / "t.pgid") is not None)
    return proc


def test_a_supervised_child_killed_hard_is_started_again(tmp_path):
    sup = _start_supervisor(tmp_path)
    try:
        first = _process.pid_matches(tmp_path / "t.pgid")
        os.kill(first, signal.SIGKILL)
        _wait(lambda: (_process.pid_matches(tmp_path / "t.pgid") or first) != first)
        assert sup.poll() is None
    finally:
        sup.terminate()
        assert sup.wait(20) == 0
    assert not (tmp_path / "t.pgid").exists()


def test_a_supervisor_killed_hard_takes_its_child_along(tmp_path):
    sup = _start_supervisor(tmp_path)
    child = _process.pid_matches(tmp_path / "t.pgid")
    sup.kill()
    sup.wait(10)
    _wait(lambda: not _process.group_alive(child))


def test_a_supervisor_whose_parent_dies_ends_its_child_and_itself(tmp_path):
    # parent (killed hard) -> supervisor -> child: the supervisor notices the reparenting.
    launcher = textwrap.dedent(f"""
        import os, subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", {SUPERVISED!r}, {str(tmp_path)!r}], start_new_session=True)
        open({str(tmp_path / 'sup.pid')!r}, "w").write(str(p.pid))
        time.sleep(300)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, "-c", launcher], env=env)
    try:
        _wait(lambda: _process.pid_matches(tmp_path / "t.pgid") is not None)
        child = _process.pid_matches(tmp_path / "t.pgid")
        sup_pid = int((tmp_path / "sup.pid").read_text())
        parent.kill()
        parent.wait(10)
        _wait(lambda: not _process.group_alive(child) and _process.start_time(sup_pid) is None)
    finally:
        parent.kill()


def test_a_service_whose_hub_died_while_it_was_still_starting_never_starts(tmp_path):
    # The red fault test's cause: the hub stopped while a service process was still
    # importing; the orphan then took init for its parent and ran on for good. The
    # supervisor here starts only after its parent (the "hub") has died.
    launcher = textwrap.dedent(f"""
        import os, subprocess, sys
        env = {{**os.environ, "ATELIER_PARENT_PID": str(os.getpid())}}
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5); "
                              "from atelier_hub.services import _process; _process.main()",
                              "--name", "t", "--record", {str(tmp_path / 't.pgid')!r}, "--", "sleep", "300"],
                             env=env, start_new_session=True)
        open({str(tmp_path / 'sup.pid')!r}, "w").write(str(p.pid))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", launcher], env=env, check=True, timeout=60)
    sup_pid = int((tmp_path / "sup.pid").read_text())
    # The "hub" is gone before the supervisor's first line: it must exit without a child.
    _wait(lambda: _process.start_time(sup_pid) is None)
    assert _process.pid_matches(tmp_path / "t.pgid") is None


def test_a_child_that_keeps_failing_backs_off_instead_of_spinning(tmp_path):
    sup = _process.Supervisor(["false"], name="t", record_file=tmp_path / "t.pgid")
    sup.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6:
        sup.check()
        time.sleep(0.05)
    sup.stop()
    # 1 + 1 + 2 + 4 s of back-off: at most four starts in six seconds, never dozens.
    assert 2 <= sup.starts <= 4, sup.starts


def test_free_port_keeps_a_free_preferred_port_and_avoids_taken_ones():
    port = _process.free_port()
    assert _process.free_port(port) == port
    assert _process.free_port(port, avoid={port}) != port
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not _process.port_free(port)
        assert _process.free_port(port) != port


def test_http_status_is_zero_when_nothing_answers():
    assert _process.http_status(f"http://127.0.0.1:{_process.free_port()}/", timeout=1) == 0


def test_the_mlflow_worker_gets_the_variables_the_installed_mlflow_reads():
    """The front starts MLflow's uvicorn worker itself, with `mlflow server`'s variables:
    their names must be the installed MLflow's own (an upgrade that renames one fails here)."""
    import inspect

    import mlflow.server as server
    from atelier_hub.services.mlflow_server import MLFLOW_SERVER_ENV
    from mlflow.server import constants, handlers

    assert MLFLOW_SERVER_ENV["backend"] == constants.BACKEND_STORE_URI_ENV_VAR
    assert MLFLOW_SERVER_ENV["registry"] == constants.REGISTRY_STORE_URI_ENV_VAR
    assert MLFLOW_SERVER_ENV["artifact_root"] == constants.ARTIFACT_ROOT_ENV_VAR
    assert MLFLOW_SERVER_ENV["serve_artifacts"] == constants.SERVE_ARTIFACTS_ENV_VAR
    assert MLFLOW_SERVER_ENV["artifacts_destination"] == constants.ARTIFACTS_DESTINATION_ENV_VAR
    assert MLFLOW_SERVER_ENV["static_prefix"] == handlers.STATIC_PREFIX_ENV_VAR
    # Everything _run_server puts in the worker's environment for a plain uvicorn start.
    source = inspect.getsource(server._run_server)
    for name in ("_MLFLOW_SERVER_BOOT_ID", "_MLFLOW_IN_JOB_EXECUTOR", "_MLFLOW_SGI_NAME"):
        assert name.removeprefix("_") in source or name in source
    assert '"mlflow.server.fastapi_app:app"' in source


def test_the_mlflow_worker_runs_the_installed_mlflows_auth_app_by_its_own_names():
    """The worker is MLflow's auth app (what `mlflow server --app-name basic-auth` runs),
    configured by MLflow's own variables and configuration keys."""
    import mlflow.environment_variables as ev
    from atelier_hub.services.mlflow_server import AUTH_APP, MLFLOW_AUTH_ENV, auth_config
    from mlflow.server import _find_app, _is_factory
    from mlflow.server.auth.config import AuthConfig

    assert _find_app("basic-auth") == AUTH_APP and _is_factory(AUTH_APP)
    for name in MLFLOW_AUTH_ENV.values():
        assert any(getattr(v, "name", None) == name for v in vars(ev).values()), name
    import configparser

    keys = configparser.ConfigParser()
    keys.read_string(auth_config(database=Path("/s/auth.db")))
    assert set(keys["mlflow"]) <= set(AuthConfig._fields) | {"authorization_function"}


def test_the_mlflow_front_in_cluster_mode_names_what_it_lacks(tmp_path):
    """`--server-url` (the hub pod's front before the deployment's server) needs the admin
    password's file; a missing or empty file is named, with the Secret's key to fill."""
    env = {**os.environ, "JUPYTERHUB_SERVICE_PREFIX": "/services/mlflow/",
           "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:1"}

    def front(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "atelier_hub.services.mlflow_front", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    done = front("--server-url", "http://127.0.0.1:1")
    assert done.returncode == 2 and "--server-url needs --admin-password-file" in done.stderr, done.stderr
    done = front("--server-url", "http://127.0.0.1:1", "--admin-password-file", str(tmp_path / "none"))
    assert done.returncode == 1 and f"cannot read the MLflow admin password from {tmp_path / 'none'}" in done.stderr
    assert "mlflow.admin_secret" in done.stderr and "admin-password" in done.stderr
    (tmp_path / "empty").write_text("\n")
    done = front("--server-url", "http://127.0.0.1:1", "--admin-password-file", str(tmp_path / "empty"))
    assert done.returncode == 1 and "is empty" in done.stderr, done.stderr
    done = front()
    assert done.returncode == 2 and "without --server-url, --state, --record and --artifacts-destination" in done.stderr
