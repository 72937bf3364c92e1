"""How the program was started: script, ``python -m`` module, notebook or interactive.

The rule this module keeps: the recorded command is the one the user typed
(``sys.orig_argv``), redacted, so ``repro rerun`` can type it again; paths are made
relative to the repository root where there is one, so they mean the same in a worktree.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

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


def detect() -> EntryPoint:
    """Inspect the running interpreter (no I/O beyond ``os.getcwd``)."""
    cwd = os.getcwd()
    notebook = _notebook_path()
    if notebook is not None:
        directory = os.path.dirname(notebook) if os.path.isabs(notebook) else cwd
        return EntryPoint("notebook", notebook, ["jupyter", "execute", notebook], directory)

    orig = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    command = redact_argv(orig)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    main_file = getattr(main, "__file__", None)
    if spec is not None and getattr(spec, "name", None) not in (None, "__main__"):
        module = spec.name.removesuffix(".__main__")
        directory = os.path.dirname(os.path.abspath(main_file)) if main_file else cwd
        return EntryPoint("module", module, command, directory)
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 == "-c":
        return EntryPoint("command", "", command, cwd)
    if argv0 and argv0 != "-" and os.path.exists(argv0):
        script = os.path.abspath(argv0)
        return EntryPoint("script", script, command, os.path.dirname(script))
    return EntryPoint("interactive", "", command, cwd)
