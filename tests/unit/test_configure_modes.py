"""``atelier_hub.configure(c)``, the one entry of both modes: it picks the mode from the
settings it finds, and a hub on a cluster gets the KubeSpawner config its cluster
settings say (what ``configure_kubespawner`` gave the chart before)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import atelier_hub
import pytest
import yaml
from atelier_hub.cluster.kubespawner import configure_kubespawner, profile_list
from traitlets.config import Config

REPO = Path(__file__).resolve().parents[2]

# A platform team's cluster settings and deployment settings, as they would write them.
CLUSTER_YAML = """\
public_url: https://atelier.example.org
namespace: atelier-users
singleuser_image: {name: registry.example.org/atelier-base, tag: "2024.06"}
storage: {storage_class: gp3, capacity: 50Gi}
identity: {service_account: atelier-session, role_arn: "arn:aws:iam::123456789012:role/atelier-session"}
gpu_servers_per_user: 2
named_servers_per_user: 3
"""
DEPLOYMENT = {"services": {"mlflow": {"tracking_uri": "http://mlflow.atelier.svc:5000", "auth": "none"}}}


@pytest.fixture
def cluster_dir(tmp_path, monkeypatch):
    """The chart's hub.extraFiles layout: cluster.yaml, deployment.json, profiles/."""
    folder = tmp_path / "etc"
    shutil.copytree(REPO / "profiles", folder / "profiles")
    (folder / "cluster.yaml").write_text(CLUSTER_YAML)
    (folder / "deployment.json").write_text(json.dumps(DEPLOYMENT))
    monkeypatch.delenv("ATELIER_STATE", raising=False)
    monkeypatch.setenv("ATELIER_CLUSTER_DIR", str(folder))
    return folder


def test_cluster_settings_give_the_kubespawner_config_of_those_settings(cluster_dir):
    c = Config()
    atelier_hub.configure(c)
    s = c.AtelierKubeSpawner
    assert c.JupyterHub.spawner_class == "atelier_hub.cluster.kubespawner.AtelierKubeSpawner"
    assert c.JupyterHub.allow_named_servers is True
    assert c.JupyterHub.named_server_limit_per_user == 3
    assert c.JupyterHub.subdomain_host == "https://atelier.example.org"
    assert s.namespace == "atelier-users"
    assert s.image == "registry.example.org/atelier-base:2024.06"
    assert s.gpu_servers_per_user == 2
    assert s.service_account == "atelier-session" and s.automount_service_account_token is True
    assert s.profiles_dir == str(cluster_dir / "profiles")
    assert s.deployment_file == str(cluster_dir / "deployment.json")
    assert s.profile_list is profile_list
    assert s.default_url == "/lab"
    # No chart around this hub set the home: the entry sets it, from the same settings.
    assert (s.storage_class, s.storage_capacity, s.pvc_name_template) == ("gp3", "50Gi", "claim-{username}")
    assert s.volume_mounts == {"home": {"name": "home", "mountPath": "/home/jovyan"}}
    assert s.delete_pvc is False
    # The culler, the usage page and the jobs service join the services, as configure_kubespawner
    # did for the chart.
    assert [svc["name"] for svc in c.JupyterHub.services] == ["culler", "usage", "jobs"]
    # And the whole config is what the cluster mode's configurer gives these files (the
    # kubeconfig handler's class is made per call: compared by name).
    expected = Config()
    configure_kubespawner(expected, profiles_dir=cluster_dir / "profiles",
                          deployment_file=cluster_dir / "deployment.json", cluster_file=cluster_dir / "cluster.yaml")

    got, want = ([(pattern, cls.__qualname__, kwargs) for pattern, cls, kwargs in config.JupyterHub.pop("extra_handlers")]
                 for config in (c, expected))
    assert got == want
    assert [pattern for pattern, _, _ in got] == [
        "/api/atelier/users/([^/]+)/kubeconfig", "/api/atelier/users/([^/]+)/servers/([^/]+)/kubeconfig",
        "/api/atelier/users/([^/]+)/capacity", "/api/atelier/users/([^/]+)/jobs/([^/]+)/output",
        "/api/atelier/users/([^/]+)/jobs/([^/]+)/queue"]
    assert c == expected


def test_in_the_chart_the_home_stays_the_charts(cluster_dir):
    """The chart's jupyterhub_config.py sets KubeSpawner.volumes from singleuser.storage
    before hub.extraConfig runs: the entry leaves the home to it."""
    c = Config()
    c.KubeSpawner.volumes = {"home": {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
    atelier_hub.configure(c)
    s = c.AtelierKubeSpawner
    for trait in ("volumes", "volume_mounts", "pvc_name_template", "storage_class", "storage_capacity"):
        assert trait not in s
    assert s.namespace == "atelier-users" and s.gpu_servers_per_user == 2


def test_the_cluster_mode_loads_no_embedded_code(cluster_dir):
    code = ("import json, sys, atelier_hub; from traitlets.config import Config; atelier_hub.configure(Config()); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('atelier_hub'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.splitlines()[-1])
    assert "atelier_hub.cluster.kubespawner" in loaded
    assert [m for m in loaded if m.startswith("atelier_hub.embedded")] == []


def test_no_mode_or_both_modes_is_refused_naming_both(tmp_path, monkeypatch, cluster_dir):
    monkeypatch.setenv("ATELIER_STATE", str(tmp_path / "state"))
    with pytest.raises(SystemExit) as both:
        atelier_hub.configure(Config())
    assert "ATELIER_STATE=" in str(both.value) and "unset ATELIER_STATE" in str(both.value)
    assert "ATELIER_CLUSTER_DIR" in str(both.value)
    monkeypatch.delenv("ATELIER_STATE")
    monkeypatch.delenv("ATELIER_CLUSTER_DIR")
    with pytest.raises(SystemExit) as neither:
        atelier_hub.configure(Config())
    assert str(neither.value).startswith("no mode to configure: ATELIER_STATE is not set")
    assert "ATELIER_CLUSTER_DIR" in str(neither.value) and "/usr/local/etc/atelier/cluster.yaml" in str(neither.value)


def test_a_cluster_folder_without_cluster_settings_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("ATELIER_STATE", raising=False)
    monkeypatch.setenv("ATELIER_CLUSTER_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        atelier_hub.configure(Config())
    assert str(exc.value).startswith(f"ATELIER_CLUSTER_DIR={tmp_path} has no cluster.yaml: point it at the folder")


def test_a_bad_cluster_setting_names_the_field(cluster_dir):
    (cluster_dir / "cluster.yaml").write_text(yaml.safe_dump({"gpu_servers_per_user": "many"}))
    with pytest.raises(Exception) as exc:
        atelier_hub.configure(Config())
    assert "gpu_servers_per_user" in str(exc.value)
