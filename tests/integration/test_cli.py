"""`atelier dev` refusing to start: its port already taken, or a tool it runs missing.

Each case is the real command; it must end quickly with exit status 2 and one line
naming what is wrong and the fix, start nothing and leave no state behind. A missing
tool is shown with ATELIER_CACHE pointing at a temporary folder (nothing is uninstalled).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from atelier_hub.install.paths import cache_dir, tool_path, trino_paths
from stack import REPO, VENV_BIN

pytestmark = pytest.mark.integration


def dev(state, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    r = subprocess.run([str(VENV_BIN / "atelier"), "dev", "--port", str(port), "--state", str(state), *extra],
                       capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **(env or {})})
    # Refusals come before anything starts: seconds, not a start-up timeout.
    assert time.monotonic() - t0 < 60, r.stderr
    return r


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == "", r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_dev_with_its_port_in_use_says_so_and_starts_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        state = tmp_path / "state"
        line = one_line(dev(state, port))
    assert line == f"atelier: port {port} on 127.0.0.1 is in use; stop what uses it or pass --port N"
    # Nothing written: not even an empty state folder.
    assert not state.exists()


def _cache_with(tmp_path, *names: str):
    """A cache folder holding only the named installed parts (links to the real ones)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in names:
        (cache / name).symlink_to(cache_dir() / name)
    return cache


def test_dev_without_the_proxy_names_it_and_the_fix(tmp_path):
    cache = _cache_with(tmp_path)
    line = one_line(dev(tmp_path / "state", 0, env={"ATELIER_CACHE": str(cache)}))
    path = cache / tool_path("configurable-http-proxy").relative_to(cache_dir())
    assert line == f"atelier: configurable-http-proxy is not installed ({path}); run `make install`"
    assert not (tmp_path / "state").exists()


def test_dev_without_versitygw_names_it_and_the_fix(tmp_path):
    chp = tool_path("configurable-http-proxy").relative_to(cache_dir()).parts[0]
    if not (cache_dir() / chp).exists():
        pytest.fail(f"configurable-http-proxy is not installed in {cache_dir()}: run `make install`", pytrace=False)
    cache = _cache_with(tmp_path, chp)
    line = one_line(dev(tmp_path / "state", 0, env={"ATELIER_CACHE": str(cache)}))
    assert line == "atelier: S3 needs versitygw, which is not installed; run `make install`"
    assert not (tmp_path / "state").exists()


def test_dev_without_trino_offers_to_start_without_it(tmp_path):
    parts = [tool_path(t).relative_to(cache_dir()).parts[0] for t in ("configurable-http-proxy", "versitygw")]
    missing = [p for p in parts if not (cache_dir() / p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed in {cache_dir()}: run `make install`", pytrace=False)
    assert trino_paths().root.parent == cache_dir()  # so leaving it out of the cache leaves Trino out
    cache = _cache_with(tmp_path, *parts)
    line = one_line(dev(tmp_path / "state", 0, env={"ATELIER_CACHE": str(cache)}))
    assert line == ("atelier: Trino needs trino, which is not installed; run `make install`, "
                    "or start without it: atelier dev --without trino")
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("name, line", [
    ("s3", "atelier: --without s3: S3 cannot be left out (optional services: trino, culler, jobs, ray_clusters, "
           "usage, credentials)"),
    ("nosuch", "atelier: --without nosuch: no service 'nosuch'; known: s3, mlflow, trino, spark, ray, culler, jobs, "
               "ray_clusters, usage, credentials"),
])
def test_dev_without_a_service_it_cannot_leave_out(tmp_path, name, line):
    assert one_line(dev(tmp_path / "state", 0, "--without", name)) == line
    assert not (tmp_path / "state").exists()


def test_make_lint_runs_ruff_and_checks_the_profiles(tmp_path):
    """docs/admin-guide.md: `make lint` runs ruff and validates profiles/. Run the Makefile's own
    recipe (install taken as done: `make -o install`), on this tree and on a broken profile."""
    r = subprocess.run(["make", "--no-print-directory", "-o", "install", "lint"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ruff check" in r.stdout and "profiles in profiles are valid" in r.stdout, r.stdout
    # The profile check it runs refuses a broken profile, naming the file and the field.
    bad = tmp_path / "profiles"
    bad.mkdir()
    (bad / "tiny.yaml").write_text("name: tiny\ndisplay_name: Tiny\ncpu: {limit: -1}\nmemory: {limit: 1G}\n")
    r = subprocess.run([str(VENV_BIN / "atelier"), "profiles", "--check", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "tiny.yaml" in r.stderr and "cpu" in r.stderr, r.stderr


def test_atelier_state_moves_the_state_folder(tmp_path):
    """docs/admin-guide.md: `--state DIR` or ATELIER_STATE moves the state folder (here: users)."""
    state = tmp_path / "elsewhere"
    r = subprocess.run([str(VENV_BIN / "atelier"), "users", "add", "ada"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "ATELIER_STATE": str(state)})
    assert r.returncode == 0, r.stderr
    assert "ada" in (state / "users.json").read_text() and not (tmp_path / "state").exists()
