"""``repro rerun``: run a recorded run's code again, as it was.

The rule this module keeps: never touch the user's working tree. The recorded commit is
checked out in a separate ``git worktree`` (detached), the recorded diff is applied
there, package differences are printed (not "fixed"), and the recorded command runs in
the matching folder of the worktree with the interpreter running ``repro``, with the
recorded arguments, so the parsed parameters come back as they were; ``--set NAME=VALUE``
changes one where the program's parser writes it (``_overrides``), and a secret the
record redacted is never passed on as the marker: the re-run refuses, naming the
parameter and the ``--set`` that supplies it. Small untracked files and a notebook the
record holds are written into the worktree. ``--dry-run`` checks all of it (including
that the diff applies, using a throw-away index) and executes nothing.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import _git_dotgit, _git_record, _git_scan, _overrides, _packages
from ._errors import ReproError
from ._redact import REDACTED
from ._runs import RecordedRun

_GIT_TIMEOUT = 120


def _git(args: Sequence[str], cwd: str, *, env: dict[str, str] | None = None,
         input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ("git", *args), cwd=cwd, env=env, input=input, capture_output=True,
            timeout=_GIT_TIMEOUT,
        )
    except FileNotFoundError:
        raise ReproError("git is not installed (no `git` on PATH); install it to re-run") from None
    except subprocess.TimeoutExpired:
        command = " ".join(args[:2])
        raise ReproError(f"`git {command}` took over {_GIT_TIMEOUT} s in {cwd}") from None


def _repo_root(cwd: str) -> str:
    proc = _git(("rev-parse", "--show-toplevel"), cwd)
    if proc.returncode != 0:
        raise ReproError(
            f"not a git repository: {cwd}; run `repro rerun` inside a clone of the run's "
            "repository"
        )
    return proc.stdout.decode().strip()


def build_command(env: dict[str, Any], worktree: str, *, python: str = sys.executable
                  ) -> tuple[list[str], str]:
    """(command, working directory) to re-run a recorded run inside ``worktree``.

    >>> env = {"entry_point": {"kind": "script", "target": "src/train.py"},
    ...        "interpreter_options": [], "args": ["--lr", "0.1"], "cwd_relative": "src"}
    >>> build_command(env, "/wt", python="python")
    (['python', '/wt/src/train.py', '--lr', '0.1'], '/wt/src')
    """
    entry = env.get("entry_point") or {}
    kind, target = entry.get("kind"), entry.get("target") or ""
    options = list(env.get("interpreter_options") or [])
    args = list(env.get("args") or [])
    # The command starts where it was typed, which may not be where the run started
    # (Hydra's chdir=True moves into an output folder that a fresh worktree lacks).
    cwd_rel = env.get("launch_cwd_relative", env.get("cwd_relative"))
    cwd = os.path.normpath(os.path.join(worktree, cwd_rel)) if cwd_rel is not None else worktree
    if kind == "script":
        script = target if os.path.isabs(target) else os.path.join(worktree, target)
        return [python, *options, script, *args], cwd
    if kind == "module":
        return [python, *options, "-m", target, *args], cwd
    if kind == "notebook":
        notebook = target if os.path.isabs(target) else os.path.join(worktree, target)
        # The jupyter of the environment running repro, as for scripts its interpreter.
        beside = os.path.join(os.path.dirname(python), "jupyter")
        jupyter = beside if os.path.isabs(python) and os.path.exists(beside) else "jupyter"
        return [jupyter, "execute", notebook], os.path.dirname(notebook)
    if kind == "command":
        command = list(env.get("command") or [])
        if "-c" in command and command.index("-c") + 1 < len(command):
            code = command[command.index("-c") + 1]
            return [python, *options, "-c", code, *args], cwd
    raise ReproError(
        f"this run was started {kind or 'in an unknown way'} (no script, module or notebook); "
        "give the command to run after `--`: repro rerun RUN_ID -- python train.py ..."
    )


def _arguments(run: RecordedRun, env: dict[str, Any], record: dict[str, Any],
               sets: Sequence[str], echo: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """(program arguments to run with, the same for printing) from the recorded ones and
    the ``--set`` changes; refuses where a redacted secret would be passed on as the
    marker."""
    args = list(env.get("args") or [])
    shown = list(args)
    values = record.get("values") or {}
    if values:
        sources = ", ".join(record.get("sources") or []) or "?"
        echo(f"params     {len(values)} parsed arguments ({sources}); the command passes them")
    if sets:
        kind = (env.get("entry_point") or {}).get("kind")
        if kind == "notebook":
            raise ReproError("a notebook run has no command-line arguments for --set to "
                             "change; edit the notebook in a kept worktree (--keep) instead")
        safe = _overrides.masked(sets, record)
        args, changes = _overrides.apply_sets(args, sets, record)
        shown = _overrides.apply_sets(shown, safe, record)[0]
        for (full, was, _), item in zip(changes, safe, strict=True):
            echo(f"set        {full}: {was} → {item.partition('=')[2]}")
    hidden = _overrides.redacted_arguments(args, record)
    command = list(env.get("command") or [])
    head = command[: len(command) - len(env.get("args") or [])]
    if any(REDACTED in part for part in head):
        hidden.append("the interpreter's options or -c code")
    if hidden:
        hints = ", ".join(_overrides.set_hint(n) for n in hidden if not n.startswith("the "))
        raise ReproError(
            f"the recorded command has redacted secrets ({', '.join(hidden)}); "
            + (f"supply them with {hints}, or " if hints else "")
            + f"give the full command after `--`: repro rerun {run.run_id} -- "
            + run.tags.get("repro.command", "")
        )
    given = {_overrides.resolve_key(s.partition("=")[0].strip(), record) for s in sets}
    in_files = [name for name in _secret_params_in_changes(run, values)
                if name not in given]
    if in_files:
        raise ReproError(
            f"parameter {', '.join(in_files)} was redacted, and the recorded changes it "
            f"comes from hold {REDACTED} in its place, so the re-run would read the marker; "
            f"supply it with {', '.join(_overrides.set_hint(n) for n in in_files)}"
        )
    return args, shown


def _secret_params_in_changes(run: RecordedRun, values: dict[str, str]) -> list[str]:
    """Redacted parameters whose name is on a line of the recorded diff or untracked
    files where a secret was replaced by the marker (the re-run's code has the marker
    there, not the value)."""
    secret = [k for k, v in values.items() if v == REDACTED]
    parts = run.tags.get("repro.redacted", "")
    if not secret or not any(p in parts for p in ("diff", "untracked", "submodules")):
        return []
    import json

    texts = []
    for name in ("diff.patch", "submodules.patch"):
        data = (run.artifact(f"repro/{name}") or b"").decode("utf-8", "replace")
        texts += [line for line in data.splitlines() if line.startswith("+")]
    try:
        saved = json.loads(run.artifact("repro/untracked.json") or b"{}").get("files") or {}
    except (ValueError, AttributeError):
        saved = {}
    for text in saved.values():
        texts += str(text).splitlines()
    marked = [_squash(line) for line in texts if REDACTED in line]
    return [k for k in secret if any(_squash(k.rsplit(".", 1)[-1]) in line for line in marked)]


def _squash(text: str) -> str:
    return text.lower().replace("-", "").replace("_", "")


def rerun(
    run: RecordedRun,
    *,
    dry_run: bool = False,
    keep: bool = False,
    worktree: str | None = None,
    allow_partial_diff: bool = False,
    command: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> int:
    """Re-run ``run`` in a worktree; returns the command's exit status (0 for dry runs).

    ``sets`` (``NAME=VALUE``) change parsed arguments in the recorded command."""
    tags = run.tags
    commit = tags.get("repro.git.commit")
    if tags.get("repro.git") != "repository" or not commit:
        raise ReproError(
            f"run {run.run_id} recorded no git commit "
            f"(git: {tags.get('repro.git', 'not recorded')}); "
            "only runs started inside a git repository with commits can be re-run"
        )
    root = _repo_root(os.getcwd())
    if _git(("cat-file", "-e", f"{commit}^{{commit}}"), root).returncode != 0:
        hint = "git fetch --unshallow" if tags.get("repro.git.shallow") else "git fetch --all"
        raise ReproError(
            f"commit {commit[:12]} is not in the repository at {root}; fetch it "
            f"(`{hint}`) and try again"
        )
    env = run.environment()
    if not env:
        raise ReproError(
            f"run {run.run_id} has no repro/environment.json artifact, so its command is unknown;"
            " give it after `--`: repro rerun RUN_ID -- python train.py ..."
        )

    patch = b""
    if tags.get("repro.git.dirty") == "dirty":
        patch = run.artifact("repro/diff.patch") or b""
        if not patch:
            raise ReproError(
                f"run {run.run_id} had uncommitted changes but its repro/diff.patch artifact "
                "cannot be read; check the artifact store"
            )
        note = (env.get("git") or {}).get("diff_note")
        if note and not allow_partial_diff:
            raise ReproError(
                f"the recorded diff is incomplete ({note}); the code cannot be rebuilt exactly. "
                "Pass --allow-partial-diff to re-run anyway"
            )

    scan_note = tags.get("repro.git.scan", "")
    if "diffs not recorded" in scan_note and not allow_partial_diff:
        raise ReproError(
            f"the recorded code is incomplete ({scan_note}); the code cannot be rebuilt "
            "exactly. Pass --allow-partial-diff to re-run anyway"
        )
    heads, sub_diffs = _git_record.parse_submodule_diffs(
        run.artifact("repro/submodules.patch") or b"")

    echo(f"run        {run.run_id} ({run.where})")
    echo(f"commit     {commit} in {root}")
    echo(f"diff       {len(patch)} bytes to apply" if patch else "diff       none (clean checkout)")
    for sub_path, head in heads.items():
        extra = (f", then its diff ({len(sub_diffs[sub_path])} bytes)"
                 if sub_path in sub_diffs else "")
        echo(f"submodule  {sub_path} at {head[:12]}{extra}")
    if scan_note:
        echo(f"warning    {scan_note}")
    redacted = [part for part in tags.get("repro.redacted", "").split(",")
                if part.startswith(("diff", "submodules", "untracked", "notebook"))]
    if redacted:
        echo(f"warning    secrets in the recorded changes were replaced by {REDACTED} "
             f"({', '.join(redacted)}); the re-run code has the marker in their place")
    saved = _untracked_files(run)
    untracked = (env.get("git") or {}).get("untracked_count") or 0
    if saved:
        echo(f"untracked  {len(saved)} untracked files restored from repro/untracked.json")
    if untracked > len(saved):
        echo(f"untracked  {untracked - len(saved)} untracked entries were listed by name only "
             "(repro/untracked.txt); copy any the run needs")

    packages_text = (run.artifact("repro/packages.txt") or b"").decode("utf-8", "replace")
    recorded = _packages.parse_packages(packages_text)
    if recorded:
        user = sorted(_packages.user_marked(packages_text))
        if user:
            echo(f"packages   {len(user)} from the user's layer: {', '.join(user)}; "
                 f"{len(recorded) - len(user)} from the image")
        current = dict(
            (_packages.normalize_name(n), v) for n, v in _packages.installed_packages()
        )
        changes = [(n, was or "absent", now or "absent")
                   for n, was, now in _packages.compare_packages(recorded, current)]
        changes += compare_editables(run)
        changes += compare_conda(run)
        if not changes:
            echo(f"packages   same {len(recorded)} packages as recorded")
        else:
            echo(f"packages   {len(changes)} differ from the recorded run (recorded → here):")
            for name, was, now in changes:
                echo(f"  {name}: {was} → {now}" + (" (user's layer)" if name in user else ""))
    else:
        echo("packages   not recorded; nothing to compare")

    record = env.get("params") or {}
    shown: list[str] | None = None
    if command:
        if sets:
            raise ReproError("--set changes the recorded command; with a command after `--`, "
                             "write the values into that command instead")
        argv, cwd_hint = list(command), None
    else:
        args, shown_args = _arguments(run, env, record, sets, echo)
        env = {**env, "args": args}
        shown_env = {**env, "args": shown_args}
        argv, cwd_hint = None, None

    if dry_run:
        if patch:
            _check_patch(root, commit, patch)
            echo("apply      the diff applies cleanly to the commit")
        place = "<worktree>"
        if argv is None:
            argv, cwd_hint = build_command(env, place)
            shown = build_command(shown_env, place)[0]
        echo(f"command    {shlex.join(shown or argv)}")
        echo(f"in         {cwd_hint or place}")
        echo("dry run: nothing checked out or executed")
        return 0

    base = worktree or tempfile.mkdtemp(prefix=f"repro-rerun-{run.run_id[:8]}-")
    path = base if worktree else os.path.join(base, "src")
    proc = _git(("worktree", "add", "--detach", path, commit), root)
    if proc.returncode != 0:
        raise ReproError(
            f"could not create a worktree at {path}: {proc.stderr.decode().strip()[:200]}; "
            "pass --worktree DIR with a path that does not exist yet"
        )
    try:
        if patch:
            applied = _git(("apply", "--binary", "--whitespace=nowarn", "-"), path, input=patch)
            if applied.returncode != 0:
                raise ReproError(
                    f"the recorded diff does not apply to {commit[:12]}: "
                    f"{applied.stderr.decode().strip()[:200]}"
                )
        _restore_untracked(path, saved, echo)
        _restore_notebook(run, env, path, echo)
        if os.path.exists(os.path.join(path, ".gitmodules")):
            sub = _git(("submodule", "update", "--init", "--recursive"), path)
            if sub.returncode != 0:
                echo(f"warning    submodules not checked out: {sub.stderr.decode().strip()[:200]}")
        _restore_submodules(path, heads, sub_diffs, echo)
        if argv is None:
            argv, cwd = build_command(env, path)
            shown = build_command(shown_env, path)[0]
        else:
            cwd = path
        if not os.path.isdir(cwd):
            echo(f"warning    {cwd} does not exist in the worktree; running in {path}")
            cwd = path
        echo(f"worktree   {path}")
        echo(f"command    {shlex.join(shown or argv)}")
        echo(f"in         {cwd}")
        sys.stdout.flush()
        child_env = dict(os.environ, REPRO_RERUN_OF=run.run_id)
        try:
            status = subprocess.run(argv, cwd=cwd, env=child_env).returncode
        except FileNotFoundError:
            raise ReproError(f"cannot run {argv[0]!r}: not found; install it or pass the "
                             "command after `--`") from None
        echo(f"exit       {status}")
        return status
    finally:
        if keep:
            echo(f"kept       {path} (remove with `git worktree remove --force {path}`)")
        else:
            _git(("worktree", "remove", "--force", path), root)
            if not worktree:
                try:
                    Path(base).rmdir()
                except OSError:
                    pass


def _untracked_files(run: RecordedRun) -> dict[str, str]:
    """{path: text} of the untracked files whose content the run recorded."""
    import json

    try:
        data = json.loads(run.artifact("repro/untracked.json") or b"{}")
    except ValueError:
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in (files or {}).items()}


def _restore_untracked(worktree: str, files: dict[str, str],
                       echo: Callable[[str], None]) -> None:
    """Write the recorded untracked files into the worktree (never outside it, never over
    a file the commit or the diff provides)."""
    base = os.path.realpath(worktree)
    for rel, text in files.items():
        target = os.path.realpath(os.path.join(base, rel))
        if not target.startswith(base + os.sep):
            echo(f"warning    untracked {rel!r} points outside the worktree; not restored")
            continue
        if os.path.exists(target):
            echo(f"warning    untracked {rel} exists in the worktree; kept that one")
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)


def _restore_notebook(run: RecordedRun, env: dict[str, Any], worktree: str,
                      echo: Callable[[str], None]) -> None:
    """Write the recorded notebook where the run had it, when the commit and diff do not
    provide it (a notebook never added to git)."""
    entry = env.get("entry_point") or {}
    target = entry.get("target") or ""
    if entry.get("kind") != "notebook" or not target or os.path.isabs(target):
        return
    where = os.path.join(worktree, target)
    if os.path.exists(where):
        return
    content = run.artifact("repro/notebook.ipynb")
    if content:
        os.makedirs(os.path.dirname(where), exist_ok=True)
        with open(where, "wb") as f:
            f.write(content)
        echo(f"notebook   {target} restored from repro/notebook.ipynb")


def _code_state(commit: str | None, dirty: bool | None, sha: str) -> str:
    if not commit:
        return "no git commit"
    return f"{commit[:12]}" + (f" + diff {sha}" if dirty else " clean")


def compare_editables(run: RecordedRun) -> list[tuple[str, str, str]]:
    """(name, recorded code, code here) for each editable install whose source differs
    from the run's: another commit, other uncommitted changes, or no longer editable."""
    import json

    from ._capture import diff_digest

    try:
        records = json.loads(run.artifact("repro/editables.json") or b"[]")
    except ValueError:
        return []
    here = _packages.editable_installs()
    scans: dict[str, _git_record.GitInfo] = {}
    out = []
    for r in records:
        name = r.get("name", "?")
        if str(r.get("git", "")).startswith("unavailable"):
            out.append((f"{name} (editable)", f"not recorded ({r['git']})", "(not compared)"))
            continue
        was = _code_state(r.get("commit"), r.get("dirty"), r.get("diff_sha", ""))
        source = here.get(name)
        if source is None:
            out.append((f"{name} (editable)", was, "not an editable install here"))
            continue
        quick = _git_dotgit.quick(source)
        root = quick.root or source
        if root not in scans:
            scans[root] = _git_scan.scan(root, quick).result()
        info = scans[root]
        now = _code_state(info.commit, info.dirty, diff_digest(info.diff))
        if now != was:
            out.append((f"{name} (editable)", was, now))
    return out


def compare_conda(run: RecordedRun) -> list[tuple[str, str, str]]:
    """(package, recorded, here) for conda packages that differ, when both sides are
    conda environments."""
    text = run.artifact("repro/conda.txt")
    prefix = _packages.conda_prefix()
    if not text:
        return []
    if prefix is None:
        return [("conda", "a conda environment", "not running under conda")]
    recorded = _packages.parse_conda(text.decode("utf-8", "replace"))
    current = _packages.parse_conda(
        _packages.format_conda(_packages.conda_packages(prefix), prefix))
    out = []
    for name in sorted(set(recorded) ^ set(current)):
        out.append((f"conda {name}", "present" if name in recorded else "absent",
                    "present" if name in current else "absent"))
    return out


def _restore_submodules(worktree: str, heads: dict[str, str], diffs: dict[str, bytes],
                        echo: Callable[[str], None]) -> None:
    """Put each recorded submodule at the commit the run had checked out (which may not
    be the one the superproject records) and apply its own recorded diff."""
    for sub_path, head in heads.items():
        where = os.path.join(worktree, sub_path)
        if not os.path.isdir(where):
            echo(f"warning    submodule {sub_path} is not checked out; its recorded state "
                 "is not restored")
            continue
        current = _git(("rev-parse", "HEAD"), where).stdout.decode().strip()
        if current != head:
            moved = _git(("checkout", "-q", "--detach", head), where)
            if moved.returncode != 0:
                echo(f"warning    submodule {sub_path}: recorded commit {head[:12]} is not "
                     f"available (fetch it in the submodule); re-running with {current[:12]}")
                continue
        if sub_path in diffs:
            applied = _git(("apply", "--binary", "--whitespace=nowarn", "-"), where,
                           input=diffs[sub_path])
            if applied.returncode != 0:
                raise ReproError(
                    f"the recorded diff of submodule {sub_path} does not apply to "
                    f"{head[:12]}: {applied.stderr.decode().strip()[:200]}"
                )


def _check_patch(root: str, commit: str, patch: bytes) -> None:
    """Check that ``patch`` applies to ``commit`` without a checkout (temporary index)."""
    with tempfile.TemporaryDirectory(prefix="repro-index-") as tmp:
        env = dict(os.environ, GIT_INDEX_FILE=os.path.join(tmp, "index"))
        read = _git(("read-tree", commit), root, env=env)
        if read.returncode != 0:
            raise ReproError(f"cannot read commit {commit[:12]}: {read.stderr.decode().strip()}")
        check = _git(("apply", "--cached", "--check", "--binary", "-"), root, env=env, input=patch)
        if check.returncode != 0:
            raise ReproError(
                f"the recorded diff does not apply to {commit[:12]}: "
                f"{check.stderr.decode().strip()[:200]}"
            )
