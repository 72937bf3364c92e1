"""How much does ``repro.start_run()`` add to ``mlflow.start_run()``?

Run: ``python bench/bench_repro.py`` (with atelier-repro and mlflow installed).

Measured side by side in one run, on the same backends, in a git repository of 10,000
files with a small uncommitted change (so repro records a dirty diff):

- backends: a real ``mlflow server`` on 127.0.0.1 (started here the way the test fixture
  starts it) and a local sqlite store;
- warm: median of 15 repetitions of start+end inside one process, after one untimed
  repetition of each, repro and bare MLflow interleaved; repro reuses its git scan
  while inotify says the tree did not change, so "warm, rescanning" repeats it with
  that reuse off (``REPRO_GIT_CACHE=0``), and "warm, edit between runs" changes a
  tracked file (untimed) before every start, the normal edit-and-run loop, where git is
  asked about the files inotify names (not the whole tree) and the answer merged into
  the kept scan;
- first in process: median of 5 fresh processes each (alternating), timing the first
  start+end (``import repro`` included; ``import mlflow`` and choosing the experiment are not, since
  both sides pay them).

repro's own MLflow run-context provider is switched off (``REPRO_CONTEXT=0``) so the
baseline is plain MLflow; its cost on a plain ``mlflow.start_run()`` (provider on, same
process, interleaved) is a row of its own.
Targets (added, warm medians): 25 ms against the server and 30 ms against sqlite;
40 ms with an edit between runs; 5 ms for the provider on a plain ``mlflow.start_run()``.
"added ms" is the median of the paired differences (each repro measurement taken right
after its baseline one), which a busy machine disturbs least; the load average is printed
with the figures. PASS/FAIL is printed beside each row; the exit status is 0 either way.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "repro"))
from repro_testlib import start_mlflow_server, stop_process_group  # noqa: E402

WARM_REPS = 15
COLD_REPS = 5
N_FILES = 10_000
TARGETS_MS = {"server": 25.0, "sqlite": 30.0}
EDIT_TARGET_MS = 40.0
CONTEXT_TARGET_MS = 5.0

WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    mode, lib, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import mlflow
    mlflow.set_experiment("bench")

    def once(which):
        # "mlflow+ctx": plain MLflow with repro's run context provider switched on
        os.environ["REPRO_CONTEXT"] = "1" if which == "mlflow+ctx" else "0"
        t = time.perf_counter()
        if which == "repro":
            import repro
            with repro.start_run():
                pass
        else:
            with mlflow.start_run():
                pass
        return (time.perf_counter() - t) * 1000

    edits = [0]

    def edit():
        # A real change to a tracked file, as between two runs of an edit-and-run loop.
        edits[0] += 1
        with open(os.path.join("pkg001", "mod001.py"), "a") as f:
            f.write(f"EDIT = {edits[0]}\\n")

    if mode == "cold":
        result = {lib: [once(lib)]}
    else:
        libs = {"both": ["mlflow", "repro"], "ctx": ["mlflow", "mlflow+ctx"]}.get(lib, [lib])
        result = {name: [] for name in libs}
        for name in libs:
            once(name)  # untimed: imports, connections, caches
        for _ in range(reps):
            for name in libs:
                if mode == "edit":
                    edit()
                    time.sleep(0.05)  # let inotify report it, as a human edit would
                result[name].append(once(name))
    print("RESULT " + json.dumps(result), flush=True)
    """
)


def make_repo(root: Path) -> Path:
    """A repository with N_FILES committed files and a small uncommitted change."""
    repo = root / "repo"
    repo.mkdir()
    per_dir = 100
    past = time.time() - 60  # not "racily clean": git need not re-read the files
    for i in range(N_FILES):
        d = repo / f"pkg{i // per_dir:03d}"
        d.mkdir(exist_ok=True)
        f = d / f"mod{i % per_dir:03d}.py"
        f.write_text(f"VALUE = {i}\n")
        os.utime(f, (past, past))
    (repo / "bench_worker.py").write_text(WORKER)
    (repo / ".gitignore").write_text("mlruns/\n")
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], check=True)
    with open(repo / "pkg000" / "mod000.py", "a") as f:
        f.write("CHANGED = True\n")
    subprocess.run([*git, "status", "--short"], check=True, capture_output=True)
    return repo


def run_worker(repo: Path, env: dict[str, str], mode: str, lib: str, reps: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "bench_worker.py", mode, lib, str(reps)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise SystemExit(f"worker failed ({mode} {lib}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="bench-repro-"))
    server = None
    started_load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        print(f"setting up in {root}: repository of {N_FILES} files, mlflow server ...", flush=True)
        repo = make_repo(root)
        server, server_uri = start_mlflow_server(root)
        sqlite_uri = f"sqlite:///{root}/local.db"
        base_env = dict(os.environ)
        # Bytecode in a private cache folder, as a normal install has it, without writing
        # into site-packages or the interpreter's own folders.
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
        base_env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        base_env["REPRO_CONTEXT"] = "0"
        base_env["REPRO_SPOOL_DIR"] = str(root / "spool")
        base_env["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
        rows = []
        for backend, uri in (("server", server_uri), ("sqlite", sqlite_uri)):
            env = dict(base_env, MLFLOW_TRACKING_URI=uri)
            if backend == "sqlite":
                # Create the database and an experiment whose artifacts live outside the
                # repository (untimed: migrations take seconds).
                subprocess.run(
                    [sys.executable, "-c",
                     "import mlflow; mlflow.create_experiment('bench', "
                     f"artifact_location={str((root / 'sqlite-artifacts').as_uri())!r})"],
                    cwd=root, env=env, check=True, capture_output=True,
                )
            run_worker(repo, env, "cold", "mlflow", 1)  # untimed: fills the bytecode cache
            run_worker(repo, env, "cold", "repro", 1)
            print(f"[{backend}] warm ...", flush=True)
            warm = run_worker(repo, env, "warm", "both", WARM_REPS)
            rescan = run_worker(repo, dict(env, REPRO_GIT_CACHE="0"), "warm", "both", WARM_REPS)
            edited = run_worker(repo, env, "edit", "both", WARM_REPS)
            ctx = run_worker(repo, env, "warm", "ctx", WARM_REPS)
            print(f"[{backend}] first in process ...", flush=True)
            cold: dict[str, list[float]] = {"mlflow": [], "repro": []}
            for _ in range(COLD_REPS):
                for lib in ("mlflow", "repro"):
                    cold[lib] += run_worker(repo, env, "cold", lib, 1)[lib]
            rows.append((backend, "warm", warm["mlflow"], warm["repro"], TARGETS_MS[backend]))
            rows.append((backend, "warm, rescanning", rescan["mlflow"], rescan["repro"], None))
            rows.append((backend, "warm, edit between", edited["mlflow"], edited["repro"],
                         EDIT_TARGET_MS))
            rows.append((backend, "plain start_run", ctx["mlflow"], ctx["mlflow+ctx"],
                         CONTEXT_TARGET_MS))
            rows.append((backend, "first in process", cold["mlflow"], cold["repro"], None))

        print()
        print(f"repro.start_run()+end vs mlflow.start_run()+end, {N_FILES} files, dirty diff")
        print("(\"plain start_run\": mlflow.start_run()+end with repro's run context provider"
              " on, vs off)")
        header = f"{'backend':<8} {'measure':<18} {'mlflow ms':>10} {'repro ms':>9} "
        header += f"{'added ms':>9} {'ratio':>6}  target"
        print(header)
        print("-" * len(header))
        for backend, kind, base, ours, limit in rows:
            b, r = statistics.median(base), statistics.median(ours)
            # Each repro measurement was taken right after its baseline one: the median of
            # the pairs' differences is what a busy machine disturbs least.
            added = statistics.median(o - a for a, o in zip(base, ours, strict=True))
            verdict = ""
            if limit is not None:
                verdict = f"≤{limit:.0f} ms added: {'PASS' if added <= limit else 'FAIL'}"
            print(f"{backend:<8} {kind:<18} {b:>10.1f} {r:>9.1f} {added:>9.1f} {r / b:>5.2f}x  "
                  f"{verdict}")
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"(medians; added = median of paired differences, baseline and repro "
              f"alternating; warm n={WARM_REPS}, first in process n={COLD_REPS}; python "
              f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load {started_load} at "
              f"start, {load} at the end)")
    finally:
        if server is not None:
            stop_process_group(server)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
