"""What every Atelier session imports: connections to the deployment's services.

Rule this package keeps: importing it is cheap (no client library is imported until a
function needs it), and a service that is down or absent is reported within seconds
with its name and endpoint, never as a hang.

>>> import atelier_lab
>>> conn = atelier_lab.connect_trino()  # doctest: +SKIP
"""

from ._trino import TrinoSettings, TrinoUnavailable, connect_trino, trino_settings
from ._version import __version__


def _jupyter_server_extension_points() -> list[dict]:
    """The server extension every session loads (activity reports for idle culling)."""
    return [{"module": "atelier_lab._activity"}]


__all__ = ["TrinoSettings", "TrinoUnavailable", "__version__", "connect_trino", "trino_settings"]
