"""How the program was started: script, ``python -m`` module, notebook or interactive.

The rule this module keeps: the recorded command is the one the user typed
(``sys.orig_argv``), redacted, so ``repro rerun`` can type it again; paths are made
relative to the repository root where there is one, so they mean the same in a worktree.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from . import _launch
from ._redact import redact_argv


@dataclass
class EntryPoint:
    #: "script", "module", "notebook", "command" (``python -c``) or "interactive".
    kind: str
    #: Absolute path of the script or notebook, module name, or "".
    target: str
    #: The command line as typed, secrets redacted (argv[0] is the interpreter).
    command: list[str] = field(default_factory=list)
    #: Directory used to find the repository.
    directory: str = ""
    #: Directory the command was started in (may differ from the cwd at run start).
    launch_cwd: str = ""

    def describe(self, root: str | None) -> str:
        """What ``repro.entry_point`` records: ``train.py``, ``python -m pkg.mod``, ..."""
        if self.kind == "module":
            return f"python -m {self.target}"
        if self.kind in ("script", "notebook"):
            return relative_to(self.target, root)
        return self.kind


def relative_to(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` when inside it, else unchanged.

    >>> relative_to("/repo/src/train.py", "/repo"), relative_to("/tmp/x.py", "/repo")
    ('src/train.py', '/tmp/x.py')
    """
    if not root or not path:
        return path
    try:
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    except ValueError:
        return path
    return path if rel == ".." or rel.startswith(".." + os.sep) else rel


def _notebook_path() -> str | None:
    """The notebook a Jupyter kernel runs, or None outside a kernel.

    ``JPY_SESSION_NAME`` is inherited by any subprocess a notebook starts (``!python x.py``),
    so it only counts inside an actual kernel.
    """
    if "ipykernel" not in sys.modules:
        return None
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    if shell is None:
        return None
    candidates = [os.environ.get("JPY_SESSION_NAME")]
    user_ns = getattr(shell, "user_ns", {}) or {}
    candidates += [user_ns.get("__session__"), user_ns.get("__vsc_ipynb_file__")]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return os.path.abspath(candidate)
    return "notebook"


def _launch_cwd(argv0: str, script: str | None, cwd: str) -> str:
    """Where the command was typed: derived exactly from a relative script path (the
    absolute ``__main__.__file__`` minus the typed path), else ``sys.path[0]`` for
    ``python -m`` (Python puts the start directory there), else where repro was first
    imported."""
    if script and argv0 and not os.path.isabs(argv0):
        parts = [p for p in os.path.normpath(argv0).split(os.sep) if p not in ("", ".")]
        if ".." not in parts:
            base = script
            for _ in parts:
                base = os.path.dirname(base)
            return base
    return _launch.LAUNCH_CWD or cwd


def detect() -> EntryPoint:
    """Inspect the running interpreter (no I/O beyond ``os.getcwd`` and a ``stat``)."""
    cwd = os.getcwd()
    notebook = _notebook_path()
    if notebook is not None:
        directory = os.path.dirname(notebook) if os.path.isabs(notebook) else cwd
        return EntryPoint("notebook", notebook, ["jupyter", "execute", notebook], directory,
                          directory)

    orig = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    command = redact_argv(orig)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    main_file = getattr(main, "__file__", None)
    if spec is not None and getattr(spec, "name", None) not in (None, "__main__"):
        module = spec.name.removesuffix(".__main__")
        directory = os.path.dirname(os.path.abspath(main_file)) if main_file else cwd
        first = sys.path[0] if sys.path else ""
        launch = first if os.path.isabs(first) and os.path.isdir(first) else _launch_cwd(
            "", None, cwd)
        return EntryPoint("module", module, command, directory, launch)
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 == "-c":
        return EntryPoint("command", "", command, cwd, _launch_cwd("", None, cwd))
    if argv0 and argv0 != "-":
        # Since Python 3.9 __main__.__file__ is absolute, so it survives an os.chdir
        # that makes a relative argv[0] point nowhere.
        script = None
        if isinstance(main_file, str) and os.path.isabs(main_file) and os.path.exists(main_file):
            script = main_file
        elif os.path.exists(argv0):
            script = os.path.abspath(argv0)
        if script is not None:
            return EntryPoint("script", script, command, os.path.dirname(script),
                              _launch_cwd(argv0, script, cwd))
    return EntryPoint("interactive", "", command, cwd, cwd)
