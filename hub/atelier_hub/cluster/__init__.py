"""Cluster mode: Zero to JupyterHub values and KubeSpawner, both from ``profiles/``.

Imports stay lazy (as in the parent package).

- ``settings``: the cluster settings (images, home storage, culling, GPU limit, node
  pools, IRSA), read by both modules below.
- ``values``: ``atelier render values`` — the chart's values.
- ``kubespawner``: ``configure_kubespawner(c, ...)`` — what the hub runs in the chart.
"""
