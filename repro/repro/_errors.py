"""The one exception repro raises for things a user can fix, and its one warning line.

The rule this module keeps: a message names the thing that is wrong and the next step,
in one line, so the CLI can print it as is (no traceback). What costs a run part of its
record but not the run itself is one :func:`warn` line instead.
"""

from __future__ import annotations


class ReproError(Exception):
    """A problem the user can fix; the message says how.

    >>> str(ReproError("run 'abc' not found on http://h:5000; check the id"))
    "run 'abc' not found on http://h:5000; check the id"
    """


def warn(message: str, *args: object) -> None:
    """One warning line on the "repro" logger (stderr when logging is not configured)."""
    import logging

    logging.getLogger("repro").warning(message, *args)
