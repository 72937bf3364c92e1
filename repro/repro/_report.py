"""Text for ``repro show`` and ``repro diff``.

The rule this module keeps: pure formatting of already-loaded runs, one fact per line,
label first, so the output reads top to bottom and diffs cleanly; the comparison helpers
(:func:`argument_pairs`, :func:`compare_mappings`) are unit-tested on their own.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping, Sequence

from ._errors import ReproError
from ._packages import compare_packages, parse_packages
from ._record import ARTIFACT_DIR, BUNDLE, SEPARATE
from ._runs import RecordedRun

_DIFF_LINES = 200


def _when(ms: int | None) -> str:
    if not ms:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def recorded_file(run: RecordedRun, name: str) -> bytes:
    """One file repro recorded for ``run`` (``repro show RUN --file NAME``)."""
    name = name.removeprefix(f"{ARTIFACT_DIR}/")
    content = run.artifact(f"{ARTIFACT_DIR}/{name}")
    if content is None:
        names = ", ".join(run.recorded_files()) or "none"
        raise ReproError(f"run {run.run_id} recorded no file {name!r} (--file); it has: {names}")
    return content


def show(run: RecordedRun) -> str:
    """Everything recorded about one run, readable."""
    t = run.tags
    env = run.environment()
    lines: list[str] = []

    def row(label: str, value: str | None) -> None:
        if value:
            lines.append(f"{label:<10} {value}")

    duration = ""
    if run.start_time and run.end_time:
        duration = f" ({(run.end_time - run.start_time) / 1000:.1f} s)"
    row("run", f"{run.run_id}" + (f"  name: {run.name}" if run.name else ""))
    row("status", f"{run.status}, started {_when(run.start_time)}{duration}")
    row("where", f"{run.where}, experiment {run.experiment}")
    if run.spool_note or t.get("repro.spooled") == "true":
        reason = t.get("repro.spool.reason", "server unreachable")
        row("spooled", run.spool_note or f"yes ({reason})")
    row("command", t.get("repro.command"))
    entry = t.get("repro.entry_point")
    if entry:
        kind = t.get("repro.entry_point.type", "?")
        row("entry", f"{entry} ({kind}), cwd {t.get('repro.cwd', '?')}")
    row("launched", t.get("repro.launch_dir"))
    if t.get("repro.params"):
        row("parsed", f"{t['repro.params']} arguments, logged as args.*/config.* params "
            "(`repro rerun --set NAME=VALUE` changes one)")
    if t.get("repro.notebook"):
        row("notebook", f"{t['repro.notebook']} (artifact repro/notebook.ipynb)")
    if t.get("repro.redacted"):
        row("redacted", f"{t['repro.redacted']} (secrets replaced by [REDACTED])")
    git_state = t.get("repro.git")
    if git_state == "repository":
        parts = [t.get("repro.git.commit", "?")]
        parts.append(f"on {t.get('repro.git.branch', '?')}")
        parts.append(t.get("repro.git.dirty", ""))
        if t.get("repro.git.shallow"):
            parts.append("shallow clone")
        row("git", ", ".join(p for p in parts if p))
        if t.get("repro.git.diff"):
            row("diff", f"{t['repro.git.diff']} (artifact repro/diff.patch)")
        if t.get("repro.git.untracked"):
            saved = t.get("repro.git.untracked.saved")
            row("untracked", f"{t['repro.git.untracked']} entries (--file untracked.txt)"
                + (f", content of {saved} (--file untracked.json)" if saved else ""))
        row("remote", t.get("repro.git.remote"))
        row("submodule", t.get("repro.git.submodules"))
        row("scan", t.get("repro.git.scan"))
    elif git_state:
        row("git", git_state)
    job = []
    if t.get("repro.env.ATELIER_JOB"):
        name = t["repro.env.ATELIER_JOB"]
        job.append(f"atelier job {name}" + (f" on profile {t['repro.env.ATELIER_PROFILE']}"
                                            if t.get("repro.env.ATELIER_PROFILE") else "")
                   + f" (`atelier logs {name}`; `repro rerun RUN_ID --as-job` runs it again "
                   "as a job)")
    if t.get("repro.slurm.job"):
        job.append(f"slurm job {t['repro.slurm.job']}"
                   + (f", task {t['repro.slurm.task']}" if t.get("repro.slurm.task") else ""))
    if t.get("repro.distributed.world_size"):
        job.append(f"rank 0 of {t['repro.distributed.world_size']} (the other ranks record "
                   "nothing)")
    row("job", "; ".join(job))
    row("python", t.get("repro.python"))
    row("platform", t.get("repro.platform"))
    row("host", t.get("repro.host"))
    gpu = t.get("repro.gpu")
    if gpu:
        extra = [f"driver {t['repro.gpu.driver']}"] if t.get("repro.gpu.driver") else []
        extra += [f"CUDA {t['repro.cuda']}"] if t.get("repro.cuda") else []
        row("gpu", gpu + (f" ({', '.join(extra)})" if extra else ""))
    if t.get("repro.packages"):
        row("packages", f"{t['repro.packages']} installed (--file packages.txt)")
    if t.get("repro.editables"):
        row("editable", f"{t['repro.editables']} (--file editables.json)")
    if t.get("repro.conda"):
        row("conda", f"{t['repro.conda']} (--file conda.txt)")
    prefix = "repro.env."
    session = {k[len(prefix) :]: v for k, v in sorted(t.items()) if k.startswith(prefix)}
    for name, value in session.items():
        row("session", f"{name}={value}")
    for name, value in sorted((env.get("environment") or {}).items()):
        if name not in session:
            row("env", f"{name}={value}")
    for key, value in sorted(run.params.items()):
        row("param", f"{key} = {value}")
    for key, value in sorted(run.metrics.items()):
        row("metric", f"{key} = {value:g}")
    if t.get("repro.rerun_of"):
        row("rerun of", t["repro.rerun_of"])
    for path in run.artifact_list():
        if path == f"{ARTIFACT_DIR}/{BUNDLE}":
            inside = [n for n in run.recorded_files() if n not in SEPARATE]
            path += f" ({', '.join(inside)}: `repro show RUN_ID --file NAME` prints one)"
        row("artifact", path)
    if not git_state:
        lines.append("note       no repro.* tags: this run was not started by repro.start_run()")
    return "\n".join(lines) + "\n"


def argument_pairs(args: Sequence[str]) -> dict[str, str]:
    """Command-line arguments as ``{option: value}`` for comparison: ``--k v`` and
    ``--k=v`` become ``{"--k": "v"}``, a bare flag ``{"--f": ""}``, positionals
    ``{"#1": value}``.

    >>> argument_pairs(["data.csv", "--lr", "0.1", "--fast", "--bs=32"])
    {'#1': 'data.csv', '--lr': '0.1', '--fast': '', '--bs': '32'}
    """
    out: dict[str, str] = {}
    position = 0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            name, eq, value = arg.partition("=")
            if eq:
                out[name] = value
            elif i + 1 < len(args) and (not args[i + 1].startswith("-") or _is_number(args[i + 1])):
                out[name] = args[i + 1]
                i += 1
            else:
                out[name] = ""
        else:
            position += 1
            out[f"#{position}"] = arg
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def compare_mappings(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    """Lines ``key: a → b`` for changed keys, ``+ key: b`` / ``- key: a`` for one-sided.

    >>> compare_mappings({"lr": "0.1", "x": "1"}, {"lr": "0.2", "y": "2"})
    ['  lr: 0.1 → 0.2', '- x: 1', '+ y: 2']
    """
    lines = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            lines.append(f"- {key}: {a[key]}")
        elif key not in a:
            lines.append(f"+ {key}: {b[key]}")
        elif a[key] != b[key]:
            lines.append(f"  {key}: {a[key]} → {b[key]}")
    return lines


def _artifact_diff(code: list[str], a: RecordedRun, b: RecordedRun, name: str) -> None:
    """Append the diff of one text artifact of two runs (when it differs)."""
    text_a = (a.artifact(f"repro/{name}") or b"").decode("utf-8", "replace")
    text_b = (b.artifact(f"repro/{name}") or b"").decode("utf-8", "replace")
    if text_a == text_b:
        return
    udiff = list(
        difflib.unified_diff(
            text_a.splitlines(), text_b.splitlines(),
            f"{a.run_id[:8]}/{name}", f"{b.run_id[:8]}/{name}", lineterm="",
        )
    )
    what = "uncommitted changes" if name == "diff.patch" else name
    code.append(f"{what} differ (diff of the two recorded files):")
    code.extend("  " + line for line in udiff[:_DIFF_LINES])
    if len(udiff) > _DIFF_LINES:
        code.append(f"  … {len(udiff) - _DIFF_LINES} more lines")


def diff(a: RecordedRun, b: RecordedRun) -> str:
    """Code, package, argument, parameter and environment differences between two runs."""
    out = [f"--- {a.run_id} ({a.where})", f"+++ {b.run_id} ({b.where})"]

    def section(title: str, lines: list[str]) -> None:
        out.append(f"{title}:")
        out.extend(f"  {line}" for line in lines or ["(same)"])

    ta, tb = a.tags, b.tags
    code_keys = ("repro.git", "repro.git.commit", "repro.git.branch", "repro.git.dirty",
                 "repro.git.remote", "repro.git.submodules", "repro.git.scan",
                 "repro.git.untracked", "repro.git.untracked.saved", "repro.entry_point",
                 "repro.launch_dir", "repro.notebook", "repro.redacted", "repro.editables",
                 "repro.conda")
    code = compare_mappings(
        {k: ta[k] for k in code_keys if k in ta}, {k: tb[k] for k in code_keys if k in tb}
    )
    for name in ("diff.patch", "submodules.patch", "untracked.json", "notebook_history.py"):
        _artifact_diff(code, a, b, name)
    section("code", code)

    pa = parse_packages((a.artifact("repro/packages.txt") or b"").decode("utf-8", "replace"))
    pb = parse_packages((b.artifact("repro/packages.txt") or b"").decode("utf-8", "replace"))
    packages = []
    if not pa or not pb:
        missing = a.run_id if not pa else b.run_id
        packages.append(f"(run {missing} has no packages.txt)")
    else:
        for name, va, vb in compare_packages(pa, pb):
            if va is None:
                packages.append(f"+ {name}=={vb}")
            elif vb is None:
                packages.append(f"- {name}=={va}")
            else:
                packages.append(f"  {name}: {va} → {vb}")
    for name in ("editables.json", "editables.patch", "conda.txt"):
        _artifact_diff(packages, a, b, name)
    section("packages", packages)

    ea, eb = a.environment(), b.environment()
    args = compare_mappings(
        argument_pairs(ea.get("args") or []), argument_pairs(eb.get("args") or [])
    )
    if not ea or not eb:
        args = compare_mappings(
            {"command": ta.get("repro.command", "")}, {"command": tb.get("repro.command", "")}
        )
    args += compare_mappings(
        {"parsed by": ta["repro.params"]} if "repro.params" in ta else {},
        {"parsed by": tb["repro.params"]} if "repro.params" in tb else {},
    )
    section("arguments", args)
    section("params", compare_mappings(a.params, b.params))
    env_keys = ("repro.python", "repro.platform", "repro.host", "repro.gpu", "repro.gpu.driver",
                "repro.cuda", "repro.slurm.job", "repro.slurm.task",
                "repro.distributed.world_size")
    env = compare_mappings(
        {k: v for k, v in ta.items() if k in env_keys or k.startswith("repro.env.")},
        {k: v for k, v in tb.items() if k in env_keys or k.startswith("repro.env.")},
    )
    env += compare_mappings(ea.get("environment") or {}, eb.get("environment") or {})
    section("environment", env)
    return "\n".join(out) + "\n"
