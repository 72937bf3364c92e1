"""repro as an MLflow run context provider: cheap tags on every ``mlflow.start_run()``.

The rule this module keeps: where repro is installed, a plain ``mlflow.start_run()``
gains the git (commit, branch, remote: read from ``.git``, no scan of the working tree),
entry-point and argument tags, and nothing else: no dirty flag or diff, no artifacts, no
spool, no package scan; it starts no process, and a failure is silent (MLflow logs and
ignores provider errors too). It steps aside while ``repro.start_run`` runs, which
records all of it and more.
Registered in ``pyproject.toml`` under the ``mlflow.run_context_provider`` entry points.
"""

from __future__ import annotations

import os

from . import _capture
from ._run import inside_start_run


# MLflow's registry only calls in_context() and tags(); not subclassing its
# RunContextProvider keeps this module free of MLflow imports, which matters because
# MLflow imports it while MLflow itself is still being imported.
class ReproRunContext:
    """Adds ``repro.*`` git, entry-point and argument tags to plain MLflow runs.

    Set ``REPRO_CONTEXT=0`` to turn it off.

    >>> ReproRunContext().in_context() in (True, False)
    True
    """

    def in_context(self) -> bool:
        return os.environ.get("REPRO_CONTEXT", "1") != "0" and not inside_start_run()

    def tags(self) -> dict[str, str]:
        try:
            return _capture.begin(full=False).early_tags()
        except Exception:  # never break a plain mlflow.start_run()
            return {}
