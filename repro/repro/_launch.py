"""Where the program was started, as far as importing repro can tell.

A framework may change directory before the run starts (Hydra's ``chdir=True``), and
``repro rerun`` must start the command where the user did. ``import repro`` imports this
module first, and MLflow imports repro's run context provider when it is imported
itself, so the directory is usually taken at the top of the script. Standard library
only: this is part of every ``import repro``.

>>> LAUNCH_CWD is None or os.path.isabs(LAUNCH_CWD)
True
"""

from __future__ import annotations

import os

try:
    LAUNCH_CWD: str | None = os.getcwd()
except OSError:  # started in a deleted directory
    LAUNCH_CWD = None
