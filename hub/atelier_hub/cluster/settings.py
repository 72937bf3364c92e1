"""Cluster settings: what a Kubernetes deployment adds to the profiles and the services.

Rule this module keeps: every cluster-only choice (images, home storage, culling, GPU
limits, node pools, how sessions get cloud credentials) is a field here with a default
that works, read once from an optional YAML file; :mod:`.values` (the chart's values)
and :mod:`.kubespawner` (the hub's spawner) both read it, so the two never disagree.
Unset is ``None``, distinct from an empty value.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .. import __version__
from ..schema import StrictModel
from ..settings import load_settings_file

__all__ = ["ClusterSettings", "ClusterSettingsError", "load_cluster_settings", "HOME_MOUNT_PATH"]

# The container home: the Jupyter Docker Stacks' user is jovyan, and z2jh mounts the
# home volume there by default. Embedded sessions use $HOME the same way, so code that
# writes under ~ behaves alike in both modes.
HOME_MOUNT_PATH = "/home/jovyan"


class ClusterSettingsError(ValueError):
    """The cluster settings file is invalid; the message names the field and the fix."""


class Image(StrictModel):
    """A container image by name and tag."""

    name: str = Field(description="Repository, e.g. `registry.example.com/atelier/base`.")
    tag: str = Field(description="Tag; pin a dated or digest-derived tag in production.")


class Storage(StrictModel):
    """One dynamic PVC per user, mounted as the home of every server of that user."""

    capacity: str = Field("20Gi", description="Size of each user's home volume.")
    storage_class: str | None = Field(None, description="StorageClass of the home volumes; null: the cluster's "
                                      "default (gp3 on EKS with the EBS CSI driver).")
    home_mount_path: str = Field(HOME_MOUNT_PATH, description="Where the home is mounted in every session.")
    pvc_name_template: str = Field("claim-{username}", description="Name of a user's home PVC; no "
                                   "`{servername}`, so all of a user's servers and profiles share one home.")


class Culling(StrictModel):
    """Idle servers are stopped (never deleted: the home PVC stays)."""

    enabled: bool = Field(True, description="Whether idle servers are stopped.")
    timeout: int = Field(3600, gt=0, description="Seconds idle before a server is stopped.")
    every: int = Field(300, gt=0, description="Seconds between checks.")
    max_age: int = Field(0, ge=0, description="Seconds a server may run at most; 0: no limit.")


class SessionIdentity(StrictModel):
    """How sessions reach cloud services without keys in the pod spec.

    On EKS: a ServiceAccount annotated with an IAM role (IRSA); the pod gets a projected
    web-identity token and boto3 picks it up with no configuration.
    """

    service_account: str | None = Field(None, description="ServiceAccount of session pods; null: none made.")
    role_arn: str | None = Field(None, description="IAM role for IRSA, e.g. arn:aws:iam::123456789012:role/atelier-session")


class NodePools(StrictModel):
    """Where the chart's own pods go; profiles place the sessions."""

    core: dict[str, str] = Field(default_factory=lambda: {"atelier.dev/pool": "core"},
                                 description="Node selector of the hub, the proxy and the chart's other pods.")


class Attach(StrictModel):
    """`atelier kubeconfig`: per-user kubeconfigs for VS Code's Kubernetes attach."""

    api_server_url: str | None = Field(None, description="The Kubernetes API URL users reach from their own "
                                       "machines (EKS: the cluster's endpoint); null: the one the hub uses, "
                                       "right only where that is reachable from outside.")
    max_token_seconds: int = Field(8 * 3600, ge=600, le=7 * 24 * 3600,
                                   description="Longest lifetime of a kubeconfig's token; it also ends with the pod.")


class ClusterSettings(StrictModel):
    """Everything a cluster deployment adds to ``profiles/`` and the services."""

    namespace: str | None = Field(None, description="Namespace of the sessions; null: the hub's own (the Helm release's).")
    hub_image: Image = Field(Image(name="ghcr.io/atelier-dev/atelier-hub", tag=__version__),
                             description="The hub image: `images/hub` (JupyterHub, KubeSpawner, atelier-hub), "
                             "pushed to your registry (images/README.md); name it after your registry.")
    singleuser_image: Image = Field(Image(name="ghcr.io/atelier-dev/atelier-base", tag=__version__),
                                    description="The session image unless a profile names its own: `images/base`, "
                                    "the same image as the embedded mode's container sessions (a GPU profile "
                                    "names `images/gpu`'s).")
    storage: Storage = Field(Storage(), description="Home volumes.")
    culling: Culling = Field(Culling(), description="Stopping idle servers.")
    gpu_servers_per_user: int = Field(1, ge=0, description="Concurrent GPU servers per user; 0: none.")
    named_servers_per_user: int = Field(5, ge=0, description="Named servers a user may have besides the default.")
    node_pools: NodePools = Field(NodePools(), description="Where the chart's own pods run.")
    identity: SessionIdentity = Field(SessionIdentity(), description="Cloud credentials of sessions (IRSA).")
    attach: Attach = Field(Attach(), description="Kubeconfigs for attaching VS Code to one's own pods.")
    private_cidrs: list[str] = Field(default_factory=lambda: ["10.0.0.0/8"],
                                     description="Where service hostnames outside the cluster resolve (the VPC): "
                                     "the chart blocks private IPs by default, so each service gets an egress "
                                     "rule to these CIDRs on its own port only.")


def load_cluster_settings(path: str | Path | None) -> ClusterSettings:
    """Read a cluster settings file (YAML); ``None`` gives the defaults.

    >>> load_cluster_settings(None).storage.home_mount_path
    '/home/jovyan'
    """
    if path is None:
        return ClusterSettings()
    return load_settings_file(path, ClusterSettings, what="cluster settings", error=ClusterSettingsError)
