"""Installing what Atelier needs, once per machine: ``python3 -m atelier_hub.install``.

Rule this package keeps: standard library only (it runs from the system Python before
the virtualenv exists). Runtime code imports :mod:`atelier_hub.install.paths` alone,
never the install steps; the steps (``_steps``, one module per heavy part) import the
paths, never the other way round. Every heavy download or build lands in a versioned
folder of ``${ATELIER_CACHE:-~/.cache/atelier}`` outside the clone, and a step whose
result is present is skipped.

What each managed service needs installed is named by its descriptor
(:mod:`atelier_hub.services`); :func:`atelier_hub.install.__main__.main` runs them.
"""
