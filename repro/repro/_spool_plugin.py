"""The spool as MLflow finds it: the ``repro-spool`` entry point of ``mlflow.tracking_store``.

MLflow loads every tracking-store plugin while it is imported itself, so this module
imports nothing at load time; the store (``_spool_store``, which imports MLflow's
entities) is imported when MLflow first builds one for a ``repro-spool:`` URI.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs more to import than all of this module
if TYPE_CHECKING:
    from ._spool_store import SpoolStore


def build_store(store_uri: str, artifact_uri: str | None = None) -> SpoolStore:
    """The store MLflow uses for a ``repro-spool:`` tracking URI (see ``_spool``).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     type(build_store("repro-spool://" + root)).__name__
    'SpoolStore'
    """
    from ._spool_store import SpoolStore

    return SpoolStore(store_uri, artifact_uri)
