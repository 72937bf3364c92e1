"""Assemble what a run records: tags (small, searchable) and artifacts (large).

The rule this module keeps: what is cheap is known at once, what is slow starts first
and is collected last. :func:`begin` reads ``.git`` directly and inspects the
interpreter (well under a millisecond: :meth:`Pending.early_tags` is all the run context
provider needs); for ``repro.start_run`` it also starts the working-tree scan (git) and
``nvidia-smi`` as child processes, and :meth:`Pending.finish` waits for them and returns
the complete record. Tag values stay under MLflow's 8,000-character limit; anything longer
(diff, package list, untracked files, full environment) goes in artifacts under
``repro/``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import _entry, _env, _git_dotgit, _git_record, _git_scan, _packages
from ._redact import REDACTED, scan_content, scan_diff
from ._version import __version__

TAG_LIMIT = 8000
#: Largest notebook recorded (after its outputs are stripped).
NOTEBOOK_LIMIT = 2 * 1024 * 1024
#: Most repositories of editable installs scanned per run.
EDITABLE_REPOS = 8
#: Seconds an editable install's scan may run past the run's own scan.
EDITABLE_GRACE = 0.25


def cap_tag(value: str, limit: int = TAG_LIMIT) -> str:
    """A tag value cut to MLflow's limit, marked when cut.

    >>> cap_tag("abcdef", 5)
    'ab…✂'
    """
    if len(value) <= limit:
        return value
    return value[: limit - 3] + "…✂"


@dataclass
class Editable:
    """The git state of one repository holding editable installs."""

    names: list[str]
    #: distribution name -> its source folder
    sources: dict[str, str]
    git: _git_record.GitInfo


def diff_digest(diff: bytes) -> str:
    """Short digest of a diff, to compare the code of editable installs across runs.

    >>> diff_digest(b"")
    ''
    """
    import hashlib

    return hashlib.sha256(diff).hexdigest()[:16] if diff else ""


def editable_records(editables: list[Editable]) -> list[dict[str, Any]]:
    """What ``editables.json`` holds: one record per editable distribution."""
    out = []
    for e in editables:
        for name in e.names:
            out.append({
                "name": name, "source": e.sources[name], "root": e.git.root,
                "git": e.git.state, "commit": e.git.commit, "branch": e.git.branch,
                "dirty": e.git.dirty, "diff_bytes": len(e.git.diff),
                "diff_sha": diff_digest(e.git.diff),
            })
    return out


@dataclass
class Capture:
    """The recorded context of one run."""

    tags: dict[str, str]
    #: artifact file name (under ``repro/``) -> content
    artifacts: dict[str, bytes]
    environment: dict[str, Any]
    git: _git_record.GitInfo
    entry: _entry.EntryPoint
    timings: dict[str, float] = field(default_factory=dict)


class Pending:
    """A capture whose child processes are running; see :func:`begin`."""

    def __init__(self, *, full: bool) -> None:
        self.began = time.monotonic()
        self.full = full
        self.entry = _entry.detect()
        self.cwd = os.getcwd()
        directory = self.entry.directory or self.cwd
        self.quick = _git_dotgit.quick(directory)
        self.scan = _git_scan.scan(directory, self.quick) if full else None
        self.gpu = _env.GpuProbe() if full else None
        #: {repository root: (distribution names, scan)} of editable installs outside
        #: the run's own repository, scanned side by side with it.
        self.editables: dict[str, tuple[list[str], dict[str, str], _git_scan.Scan]] = {}
        if full and os.environ.get("REPRO_EDITABLES", "1") != "0":
            try:
                self._scan_editables()
            except Exception:  # editables are a detail: finish() reports the package error
                self.editables = {}

    def _scan_editables(self) -> None:
        roots: dict[str, tuple[list[str], dict[str, str], _git_record.GitInfo]] = {}
        for name, source in sorted(_packages.editable_installs().items()):
            quick = _git_dotgit.quick(source)
            if quick.root is None or quick.root == self.quick.root:
                continue  # no repository, or the run's own (its diff covers it)
            names, sources, _ = roots.setdefault(quick.root, ([], {}, quick))
            names.append(name)
            sources[name] = source
        for root, (names, sources, quick) in list(roots.items())[:EDITABLE_REPOS]:
            self.editables[root] = (names, sources, _git_scan.scan(root, quick))

    def early_tags(self) -> dict[str, str]:
        """Tags known without waiting (no dirty flag, diff or package list yet)."""
        return self.partial().tags

    def partial(self) -> Capture:
        """What is known without the child processes (tags only, no artifacts)."""
        return build(entry=self.entry, cwd=self.cwd, git=self.quick, packages=None, gpu={})

    def abort(self) -> None:
        """Stop the child processes (the run is not going to be created)."""
        if self.scan is not None:
            self.scan.abort()
        for _, _, sub_scan in self.editables.values():
            sub_scan.abort()
        if self.gpu is not None and self.gpu.proc is not None:
            self.gpu.proc.kill()
            self.gpu.proc.communicate()

    def finish(self) -> Capture:
        """Wait for git (and GPUs), read the package list, build tags and artifacts."""
        timings: dict[str, float] = {}
        t = time.monotonic()
        packages = _packages.installed_packages() if self.full else None
        timings["packages"] = time.monotonic() - t
        t = time.monotonic()
        git = self.scan.result() if self.scan is not None else self.quick
        timings["git_wait"] = time.monotonic() - t
        timings["git"] = git.seconds
        gpu = self.gpu.result() if self.gpu is not None else {}
        # Editable installs' repositories may be large: they get what is left of the time
        # the run's own scan took, plus a little, never the full git timeout.
        until = time.monotonic() + EDITABLE_GRACE
        editables = [
            Editable(names=names, sources=sources, git=scan.result(until))
            for names, sources, scan in self.editables.values()
        ]
        prefix = _packages.conda_prefix() if self.full else None
        conda = (prefix, _packages.conda_packages(prefix)) if prefix else None
        notebook = read_notebook(self.entry) if self.full else None
        untracked = (_git_scan.read_untracked(git.root, git.untracked)
                     if self.full and git.root and git.untracked else None)
        capture = build(entry=self.entry, cwd=self.cwd, git=git, packages=packages, gpu=gpu,
                        editables=editables, conda=conda, untracked=untracked,
                        notebook=notebook)
        timings["total"] = time.monotonic() - self.began
        capture.timings = timings
        return capture


def add_arguments(capture: Capture, params: dict[str, str], arguments: dict[str, Any]) -> None:
    """Record the parsed arguments in ``environment.json`` (``params``): their values as
    logged, what parsed them, how each is written on the command line; ``repro rerun
    --set`` reads it."""
    capture.environment["params"] = {"values": dict(params), **arguments}
    if "environment.json" in capture.artifacts:
        capture.artifacts["environment.json"] = json.dumps(
            capture.environment, indent=2, sort_keys=True).encode()


def begin(*, full: bool = True) -> Pending:
    """Start capturing (child processes run in the background) and return at once."""
    return Pending(full=full)


def _command_parts(entry: _entry.EntryPoint) -> tuple[list[str], list[str]]:
    """(interpreter options, program arguments) of the command, both redacted."""
    if entry.kind == "notebook":
        return [], []
    command = entry.command
    nargs = max(0, len(sys.argv) - 1)
    args = command[len(command) - nargs :] if nargs else []
    # orig_argv = [python, *options, (script | -m module | -c code), *args]
    head = command[1 : len(command) - nargs]
    if entry.kind == "module" and "-m" in head:
        options = head[: head.index("-m")]
    elif entry.kind == "command" and "-c" in head:
        options = head[: head.index("-c")]
    elif entry.kind == "script" and head:
        options = head[:-1]
    else:
        options = []
    return options, args


def strip_outputs(content: bytes) -> bytes | None:
    """A notebook's JSON without cell outputs and execution counts (outputs can be huge
    and hold data; the source is what reproduces them), or None if it is not JSON.

    >>> strip_outputs(b'{"cells": [{"cell_type": "code", "source": "1", "outputs": [1], '
    ...               b'"execution_count": 3}]}')
    b'{"cells": [{"cell_type": "code", "source": "1", "outputs": [], "execution_count": null}]}'
    """
    try:
        data = json.loads(content)
    except ValueError:
        return None
    for cell in data.get("cells", []) if isinstance(data, dict) else []:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return json.dumps(data).encode()


def scan_notebook(content: bytes) -> tuple[bytes, int]:
    """A notebook with secrets in its cells' sources replaced (scanned as the source
    text, not as JSON, where quotes are escaped), and how many.

    >>> scan_notebook(
    ...     b'{"cells": [{"source": ["k = 1\\\\n", "API_KEY = \\\\"Zq8vL1pX0rT5\\\\"\\\\n"]}]}')
    (b'{"cells": [{"source": "k = 1\\\\nAPI_KEY = \\\\"[REDACTED]\\\\"\\\\n"}]}', 1)
    """
    try:
        data = json.loads(content)
    except ValueError:
        return scan_content(content)
    total = 0
    for cell in data.get("cells", []) if isinstance(data, dict) else []:
        if not isinstance(cell, dict):
            continue
        source = cell.get("source")
        text = "".join(source) if isinstance(source, list) else str(source or "")
        cleaned, n = scan_content(text.encode("utf-8", "surrogateescape"))
        if n:
            total += n
            cell["source"] = cleaned.decode("utf-8", "surrogateescape")
    return (json.dumps(data).encode() if total else content), total


def read_notebook(entry: _entry.EntryPoint) -> tuple[bytes, str] | None:
    """(the notebook file as saved, outputs stripped and capped; the cells the kernel
    ran so far) when the entry point is a notebook, else None."""
    if entry.kind != "notebook":
        return None
    content = b""
    if os.path.isabs(entry.target):
        try:
            with open(entry.target, "rb") as f:
                raw = f.read(NOTEBOOK_LIMIT * 8 + 1)
        except OSError:
            raw = b""
        stripped = strip_outputs(raw) if raw else None
        if stripped is not None and len(stripped) <= NOTEBOOK_LIMIT:
            content = stripped
    history = ""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    cells = (getattr(shell, "user_ns", None) or {}).get("In") if shell is not None else None
    if isinstance(cells, list):
        history = "".join(f"# In[{i}]\n{src}\n\n" for i, src in enumerate(cells) if src)
        history = history[-NOTEBOOK_LIMIT:]
    return content, history


def git_tags(git: _git_record.GitInfo) -> dict[str, str]:
    """The ``repro.git.*`` (and MLflow ``mlflow.source.git.*``) tags of a git state."""
    tags = {"repro.git": git.state}
    if git.commit:
        tags["repro.git.commit"] = git.commit
        tags["mlflow.source.git.commit"] = git.commit
    if git.state in ("repository", "no commits"):
        tags["repro.git.branch"] = git.branch or "(detached)"
        if git.branch:
            tags["mlflow.source.git.branch"] = git.branch
        if git.dirty is not None:
            tags["repro.git.dirty"] = "dirty" if git.dirty else "clean"
        if git.root:
            tags["repro.git.root"] = git.root
        if git.shallow:
            tags["repro.git.shallow"] = "true"
    if git.remote:
        tags["repro.git.remote"] = git.remote
        tags["mlflow.source.git.repoURL"] = git.remote
    if git.dirty:
        tags["repro.git.diff"] = git.diff_note or f"{len(git.diff)} bytes"
    if git.untracked:
        more = "+" if git.untracked_truncated else ""
        tags["repro.git.untracked"] = f"{len(git.untracked)}{more}"
    if git.submodules:
        tags["repro.git.submodules"] = cap_tag(" ".join(
            f"{p}@{c}{'' if s == ' ' else s}{'*' if p in git.submodule_diffs else ''}"
            for p, c, s in git.submodules
        ))
    if git.scan_notes:
        tags["repro.git.scan"] = cap_tag("; ".join(git.scan_notes))
    return tags


def build(*, entry: _entry.EntryPoint, cwd: str, git: _git_record.GitInfo,
          packages: list[tuple[str, str]] | None, gpu: dict[str, str],
          editables: list[Editable] | None = None,
          conda: tuple[str, list[dict[str, str]]] | None = None,
          untracked: tuple[dict[str, bytes], list[str]] | None = None,
          notebook: tuple[bytes, str] | None = None) -> Capture:
    """Tags, artifacts and the ``environment.json`` document from collected facts.

    ``packages=None`` builds the tags only (no artifacts).
    """
    root = git.root
    tags = {"repro.version": __version__, **git_tags(git)}
    described = entry.describe(root)
    tags["repro.entry_point"] = described
    tags["repro.entry_point.type"] = entry.kind
    tags["mlflow.source.name"] = described if entry.kind != "interactive" else "<console>"
    tags["mlflow.source.type"] = "NOTEBOOK" if entry.kind == "notebook" else "LOCAL"
    tags["repro.command"] = cap_tag(shlex.join(entry.command))
    cwd_rel = _entry.relative_to(cwd, root) if root else None
    if cwd_rel is not None and os.path.isabs(cwd_rel):
        cwd_rel = None
    tags["repro.cwd"] = cwd_rel if cwd_rel is not None else cwd
    launch = entry.launch_cwd or cwd
    launch_rel = _entry.relative_to(launch, root) if root else None
    if launch_rel is not None and os.path.isabs(launch_rel):
        launch_rel = None
    if os.path.normpath(launch) != os.path.normpath(cwd):
        tags["repro.launch_dir"] = launch_rel if launch_rel is not None else launch

    machine = _env.machine()
    tags["repro.python"] = machine["python"]
    tags["repro.platform"] = machine["platform"]
    tags["repro.host"] = machine["host"]
    if gpu.get("gpus"):
        tags["repro.gpu"] = gpu["gpus"]
    if gpu.get("driver"):
        tags["repro.gpu.driver"] = gpu["driver"]
    cuda = _env.torch_cuda()
    if cuda:
        tags["repro.cuda"] = cuda
    environment = _env.selected_environment()
    for name, value in environment.items():
        if name.startswith("ATELIER_") or name == "JUPYTERHUB_USER":
            tags[f"repro.env.{name}"] = cap_tag(value)
    if os.environ.get("REPRO_RERUN_OF"):
        tags["repro.rerun_of"] = os.environ["REPRO_RERUN_OF"][:64]

    options, args = _command_parts(entry)
    doc: dict[str, Any] = {
        "repro_version": __version__,
        "entry_point": {
            "kind": entry.kind,
            "target": _entry.relative_to(entry.target, root) if entry.target else "",
            "description": described,
        },
        "command": entry.command,
        "interpreter_options": options,
        "args": args,
        "redacted": any(REDACTED in a for a in entry.command),
        "cwd": cwd,
        "cwd_relative": cwd_rel,
        "launch_cwd": launch,
        "launch_cwd_relative": launch_rel,
        "git": {
            "state": git.state,
            "root": root,
            "commit": git.commit,
            "branch": git.branch,
            "remote": git.remote,
            "dirty": git.dirty,
            "shallow": git.shallow,
            "diff_bytes": len(git.diff),
            "diff_note": git.diff_note,
            "untracked_count": len(git.untracked),
            "untracked_truncated": git.untracked_truncated,
            "submodules": [
                {"path": p, "commit": c, "state": s, "moved": s == "+",
                 "diff_bytes": len(git.submodule_diffs.get(p, b""))}
                for p, c, s in git.submodules
            ],
            "scan_notes": list(git.scan_notes),
        },
        **machine,
        "gpu": gpu,
        "cuda": cuda,
        "environment": environment,
    }
    artifacts: dict[str, bytes] = {}
    if packages is not None:
        tags["repro.packages"] = str(len(packages))
        doc["packages_count"] = len(packages)
        user = _packages.user_layer_names(packages)
        if user:
            tags["repro.packages_user"] = str(len(user))
        artifacts["packages.txt"] = _packages.format_packages(packages, user).encode()
        # Nothing leaves the process unscanned: a key pasted into a config file would
        # otherwise reach the shared tracking server with the diff.
        found: dict[str, int] = {}
        if git.dirty and git.diff:
            artifacts["diff.patch"], found["diff"] = scan_diff(git.diff)
        if git.submodule_diffs or any(s == "+" for _, _, s in git.submodules):
            scanned = {}
            found["submodules"] = 0
            for path, sub_diff in git.submodule_diffs.items():
                scanned[path], n = scan_diff(sub_diff)
                found["submodules"] += n
            artifacts["submodules.patch"] = _git_record.format_submodule_diffs(
                git.submodules, scanned)
        if notebook is not None:
            content, history = notebook
            if content:
                artifacts["notebook.ipynb"], found["notebook"] = scan_notebook(content)
            if history:
                artifacts["notebook_history.py"], n = scan_content(history.encode())
                found["notebook"] = found.get("notebook", 0) + n
            tags["repro.notebook"] = (
                f"{len(content)} bytes, outputs stripped" if content else "not saved on disk"
            ) + (f"; {history.count('# In[')} cells run" if history else "")
        if untracked is not None and untracked[0]:
            files, left = untracked
            found["untracked"] = 0
            contents = {}
            for path, content in files.items():
                cleaned, n = scan_content(content)
                found["untracked"] += n
                contents[path] = cleaned.decode("utf-8", "replace")
            artifacts["untracked.json"] = json.dumps(
                {"files": contents, "names_only": left}, indent=1).encode()
            tags["repro.git.untracked.saved"] = f"{len(files)} files"
            doc["git"]["untracked_saved"] = sorted(files)
        if editables:
            records = editable_records(editables)
            tags["repro.editables"] = cap_tag(" ".join(
                f"{r['name']}@{(r['commit'] or r['git'])[:12]}{'*' if r['dirty'] else ''}"
                for r in records))
            artifacts["editables.json"] = json.dumps(records, indent=2).encode()
            patches = {}
            found["editables"] = 0
            for e in editables:
                if e.git.diff:
                    patches[e.git.root or ""], n = scan_diff(e.git.diff)
                    found["editables"] += n
            if patches:
                artifacts["editables.patch"] = _git_record.format_submodule_diffs(
                    [(root, next(r["commit"] or "" for r in records if r["root"] == root),
                      " ") for root in patches], patches)
            doc["editables"] = records
        if conda is not None:
            prefix, conda_list = conda
            tags["repro.conda"] = f"{os.path.basename(prefix)} ({len(conda_list)} packages)"
            artifacts["conda.txt"] = _packages.format_conda(conda_list, prefix).encode()
            doc["conda"] = {"prefix": prefix, "count": len(conda_list)}
        found = {k: n for k, n in found.items() if n}
        if doc["redacted"]:
            found = {"command": 1, **found}
        if found:
            tags["repro.redacted"] = ",".join(
                k if k == "command" else f"{k}:{n}" for k, n in found.items())
        doc["redacted_in"] = found
        if git.untracked:
            note = (
                f"# repro: list cut at {len(git.untracked)} entries\n"
                if git.untracked_truncated
                else ""
            )
            artifacts["untracked.txt"] = (note + "\n".join(git.untracked) + "\n").encode()
        artifacts["environment.json"] = json.dumps(doc, indent=2, sort_keys=True).encode()
    return Capture(tags=tags, artifacts=artifacts, environment=doc, git=git, entry=entry)
