"""Fixtures shared by every suite: the real embedded stack, started once per run (once per
worker: `make test` runs two, see :func:`pytest_xdist_make_scheduler`), with Trino only
where a test queries it (:data:`TRINO_GROUP`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from atelier_hub.origins import resolve_localhost_names
from stack import OUTPUT, Stack

# Each user's server answers at NAME.localhost (its own web origin), which browsers and
# curl resolve by themselves and glibc does not; the tests reach it as the CLI does.
resolve_localhost_names()

HERE = Path(__file__).parent
_STARTED = time.time()
#: the git host the shared stacks name in services.credentials.git_hosts
GIT_HOST = "git.example.org"
TRINO_GROUP = "trino"  # the files that query the shared stack's Trino, as one group (TRINO_FILES)
#: The files that wait for the culler: one group, one stack, their servers started together
#: so that their waits overlap (tests/culling.py). The browser's first: it runs in the
#: foreground while the idle-culling scenarios run in the background.
CULL_GROUP = "culling"
CULL_FILES = ("browser/test_cull_warning.py", "browser/test_home_page.py", "integration/test_idle_culling.py")

#: Files (or groups) that take longest, slowest first: they start first, so that the
#: workers of `make test` finish together. Everything else follows in collection order.
#: Minutes of each group's setup + call + teardown, from the last full two-worker run
#: (CI5, a busy machine), regrouped as below where marked.
SLOW_FIRST = (
    CULL_GROUP,  # ~5: real idle timeouts, overlapping (tests/culling.py); were 4.9 + 2.7 apart
    "faults/test_service_faults.py",  # 3.9
    TRINO_GROUP,  # ~4: 1.8 + 1.2 + 0.4, and the Spark-to-Trino test; the shared stack with Trino
    "integration/test_session_services.py",  # 2.5 with the Spark-to-Trino test, now in test_trino.py
    "browser/test_vscode_browser.py",  # 1.5
    "integration/test_accounts.py",  # 1.4
    "repro/test_repro_integration.py",  # 1.3
    "faults/test_container_hub_restart.py",  # 1.3
    "k8s",  # 1.2: one control plane and one real node, so one worker (one group)
    "repro/test_repro_distributed.py",  # 1.1
    "integration/test_embedded_stack.py",  # 0.9
    "integration/test_restart_and_bad_config.py",  # 0.8
    "integration/test_vscode_ssh.py",  # 0.7
)


#: The files whose tests query the shared stack's Trino (or, for test_container_sessions.py's
#: start-hook test, write a session's Trino config from the stack's deployment): one group,
#: so that one worker starts the one shared stack with Trino (a JVM, 60-90 s on busy cores).
#: Every other file's `stack` runs `--without trino`.
TRINO_FILES = (
    "integration/test_container_sessions.py",
    "integration/test_s3_trino_identity.py",
    "integration/test_trino.py",
)


def _group(path: str) -> str:
    """The unit of work one worker takes whole: a file (its module fixtures start once),
    the whole k8s folder (one control plane, one real node with its containerd), the
    files that query the shared stack's Trino (:data:`TRINO_GROUP`), or those that wait
    for the culler (:data:`CULL_GROUP`).
    ``path`` is relative to this folder."""
    if path.startswith("k8s/"):
        return "k8s"
    return TRINO_GROUP if path in TRINO_FILES else CULL_GROUP if path in CULL_FILES else path


def _rank(group: str) -> int:
    for i, name in enumerate(SLOW_FIRST):
        if group == name or group.startswith(name + "/"):
            return i
    return len(SLOW_FIRST)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slowest files first (a plain ``pytest`` runs the same order); in the culling
    group, the browser's file first, whatever order the command line named them in (its
    test runs while the idle-culling scenarios wait: tests/culling.py)."""
    def rank(item: pytest.Item) -> tuple[int, int]:
        path = Path(str(item.fspath)).resolve().relative_to(HERE).as_posix()
        return _rank(_group(path)), CULL_FILES.index(path) if path in CULL_FILES else 0

    items.sort(key=rank)  # stable: file order kept within a rank


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``make test``'s scheduler: pytest-xdist's by-scope one, a scope being :func:`_group`.
    (xdist's own ``loadgroup`` marks do nothing under pytest 9: it renames ``_nodeid``,
    which pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    # The work queue in collection order (slowest first, above). By default xdist 3.8
    # re-sorts it by the number of tests in each scope (``--loadscope-reorder``, on unless
    # ``--no-loadscope-reorder`` is given), which put a file of many quick tests before
    # one of a few slow ones: the order above only broke ties. Set here rather than on
    # the command line, so that any ``pytest -n N --dist loadfile`` keeps it (checked: a
    # file of one test collected before one of five ran first only with this line).
    # ref: xdist/scheduler/loadscope.py LoadScopeScheduling.schedule
    config.option.loadscopereorder = False

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return _group(path.removeprefix("tests/"))

    return ByFile(config, log)


@pytest.fixture(scope="session")
def _shared_stacks():
    """The shared stacks this process started, by kind: "trino" (with Trino) and "plain"
    (``--without trino``); each with the users made on it. Stopped at the end of the run."""
    started: dict[str, tuple[Stack, dict]] = {}
    yield started
    for s, _ in started.values():
        s.stop()


def _shared(request: pytest.FixtureRequest) -> tuple[Stack, dict]:
    """The shared stack for the requesting module, started on first use: the one with
    Trino for the files of :data:`TRINO_GROUP`; for any other file the one without, unless
    this process already runs the one with Trino (a superset: no second stack then)."""
    started = request.getfixturevalue("_shared_stacks")
    queries_trino = _group(request.path.resolve().relative_to(HERE).as_posix()) == TRINO_GROUP
    kind = "trino" if queries_trino or "trino" in started else "plain"
    if kind not in started:
        args = () if kind == "trino" else ("--without", "trino")
        root = request.getfixturevalue("tmp_path_factory").mktemp(f"atelier-{kind}")
        # As a deployment whose users keep tokens for a git host (docs/user-guide.md, "Your own
        # packages, and git"): the admin names it in STATE/deployment.json.
        (root / "state").mkdir(mode=0o700)
        (root / "state" / "deployment.json").write_text(json.dumps(
            {"services": {"credentials": {"git_hosts": [GIT_HOST]}}}))
        started[kind] = (Stack(root / "state", name=f"session-{kind}", args=args).start(), {})
    return started[kind]


@pytest.fixture(scope="module")
def stack(request):
    """The embedded stack (`atelier dev`) on a free port with a fresh state folder, shared
    by the files of this process (:func:`_shared`)."""
    return _shared(request)[0]


@pytest.fixture(scope="module")
def containers(stack):
    """The shared stack, where its sessions are containers (the files that need them say so)."""
    if stack.mode != "container":
        pytest.fail(f"the stack runs {stack.mode} sessions: `make install` builds the images and "
                    "`atelier dev` starts the Docker engine; see the atelier dev log")
    return stack


@pytest.fixture(scope="session")
def cull_window(tmp_path_factory):
    """The culling window (tests/culling.py): its stack, and the idle-culling scenarios
    started on it at once."""
    from culling import Window

    window = Window(tmp_path_factory.mktemp("culling"))
    try:
        yield window.start()
    finally:
        window.close()


@pytest.fixture(scope="module")
def alice(request, stack):
    """A user created the way an admin does it, with their password and an API token
    (once per shared stack)."""
    users = _shared(request)[1]
    if "alice" not in users:
        password = stack.add_user("alice")
        users["alice"] = {"name": "alice", "password": password, "token": stack.user_token("alice")}
    return users["alice"]


def pytest_terminal_summary(terminalreporter):
    """Where the time went, per file group; then the fault tests' figures; and the counts
    for `make test`'s closing line (tests/run.py names the file)."""
    _time_per_group(terminalreporter)
    _fault_figures(terminalreporter)
    counts_file = os.environ.get("ATELIER_TEST_COUNTS")
    if counts_file:
        stats = terminalreporter.stats
        # As pytest's own summary line counts them (a report may opt out of it).
        counts = {kind: len([r for r in stats.get(kind, []) if getattr(r, "count_towards_summary", True)])
                  for kind in ("passed", "failed", "skipped", "error")}
        Path(counts_file).write_text(json.dumps(counts))


def _time_per_group(terminalreporter) -> None:
    """Seconds per file group (a worker takes a group whole: these are what decide when
    the run ends), slowest first, from every test's setup, call and teardown."""
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            nodeid, duration = getattr(report, "nodeid", ""), getattr(report, "duration", None)
            if nodeid and duration is not None and getattr(report, "when", None):
                group = _group(nodeid.split("::", 1)[0].removeprefix("tests/"))
                seconds[group] = seconds.get(group, 0.0) + duration
    if not seconds:
        return
    terminalreporter.section("time per file group (setup + call + teardown)")
    for group, secs in sorted(seconds.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{secs / 60:6.1f} min  {group}")
    wall = time.time() - _STARTED
    terminalreporter.write_line(f"{sum(seconds.values()) / 60:6.1f} min  in all, over {wall / 60:.1f} min of wall clock")


def _fault_figures(terminalreporter) -> None:
    """The fault tests' figures (tests/faults/conftest.py), whichever process recorded them."""
    figures: dict[str, dict] = {}
    for path in OUTPUT.glob("faults-*.json") if OUTPUT.exists() else ():
        if path.stat().st_mtime >= _STARTED:
            figures.update(json.loads(path.read_text()))
    if not figures:
        return
    (OUTPUT / "faults.json").write_text(json.dumps(figures, indent=2))
    terminalreporter.section("fault figures")
    for name, values in figures.items():
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        terminalreporter.write_line(f"{name}: {shown}")
