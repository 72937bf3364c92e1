"""Cluster mode: Zero to JupyterHub values and KubeSpawner, both from ``profiles/``.

Imports stay lazy (as in the parent package).

- ``settings``: the cluster settings (images, home storage, culling, GPU limit, node
  pools, IRSA), read by both modules below.
- ``values``: ``atelier render values`` — the chart's values.
- ``kubespawner``: ``configure_kubespawner(c, ...)`` — what the hub runs in the chart, called
  by :func:`atelier_hub.configure` in cluster mode.
"""

#: Where the chart's ``hub.extraFiles`` put the hub's inputs, and their names in it: the
#: values write them there (:mod:`.values`) and :func:`atelier_hub.configure` finds them
#: there (or in ``$ATELIER_CLUSTER_DIR``).
CHART_DIR = "/usr/local/etc/atelier"
CLUSTER_FILE = "cluster.yaml"
DEPLOYMENT_FILE = "deployment.json"
PROFILES_DIR = "profiles"
#: where the hub pod mounts the Secret of the Trino front's JWT key (cluster settings ``trino.jwt_secret``)
TRINO_JWT_DIR = "/etc/atelier/trino-jwt"
