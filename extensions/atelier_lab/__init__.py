"""What every Atelier session imports: connections to the deployment's services.

Rule this package keeps: importing it is cheap (no client library is imported until a
function needs it), and a service that is down or absent is reported within seconds
with its name and endpoint, never as a hang.

>>> import atelier_lab
>>> conn = atelier_lab.connect_trino()  # doctest: +SKIP
"""

from ._jobs import Job, JobUnavailable, run
from ._ray import RayCluster, RayClusterUnavailable, ray_cluster
from ._trino import TrinoSettings, TrinoUnavailable, connect_trino, trino_settings
from ._version import __version__

__all__ = ["Job", "JobUnavailable", "RayCluster", "RayClusterUnavailable", "TrinoSettings", "TrinoUnavailable",
           "__version__", "connect_trino", "ray_cluster", "run", "trino_settings"]


# -- JupyterLab: the labextension (built into labextension/) and its server extension ----
# ref: https://jupyter-server.readthedocs.io/en/latest/developers/extensions.html


def _jupyter_labextension_paths() -> list[dict]:
    return [{"src": "labextension", "dest": "atelier-lab"}]


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "atelier_lab"}]


def _load_jupyter_server_extension(serverapp) -> None:
    # jupyter_server is imported here, not above: `import atelier_lab` stays cheap.
    from . import _activity, _ray_dashboard
    from ._server import load

    load(serverapp)
    _ray_dashboard.load(serverapp)  # this session's Ray cluster's dashboard, for its owner
    _activity.load(serverapp)  # activity reports for idle culling, the culling warning's plan
