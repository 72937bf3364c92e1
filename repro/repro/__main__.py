"""``python -m repro`` runs the ``repro`` command."""

import sys

from ._cli import main

sys.exit(main())
