"""repro: MLflow runs that record what it takes to run them again.

``repro.start_run()`` wraps ``mlflow.start_run()`` and records the git commit, branch,
remote and diff, the installed packages, the entry point and arguments (secrets
redacted), Python, platform, GPUs and the Atelier session. If the tracking server is
unreachable the run is spooled locally and ``repro sync`` uploads it later. The ``repro``
command shows, compares, syncs and re-runs recorded runs.

Importing repro is cheap: MLflow is imported when a run starts.

>>> import repro
>>> sorted(repro.__all__)[:2]
['NoOpRun', 'ReproError']
"""

from . import _launch  # noqa: F401 - first: it notes the directory the program started in
from ._distributed import NoOpRun
from ._errors import ReproError
from ._run import start_run
from ._sync import sync
from ._version import __version__

__all__ = ["NoOpRun", "ReproError", "__version__", "start_run", "sync"]
