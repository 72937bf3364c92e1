"""The one exception repro raises for things a user can fix.

The rule this module keeps: a message names the thing that is wrong and the next step,
in one line, so the CLI can print it as is (no traceback).
"""

from __future__ import annotations


class ReproError(Exception):
    """A problem the user can fix; the message says how.

    >>> str(ReproError("run 'abc' not found on http://h:5000; check the id"))
    "run 'abc' not found on http://h:5000; check the id"
    """
