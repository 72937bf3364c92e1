"""Terraform outputs -> `atelier render values` -> chart values that the chart's schema accepts.

The atelier module hands the query of its values/ submodule to render_values.py (an
``external`` data source) and gives the result to the Helm release. Here the real
terraform applies values/ with outputs shaped as the other modules make them, the
real render_values.py runs the real atelier CLI on that query, and the values are
validated against the chart's schema (vendored in z2jh/, so a fresh clone runs it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from atelier_hub.cluster.settings import ClusterSettings
from atelier_hub.cluster.values import egress_rules, merge_values, render_values, schema_problems
from atelier_hub.profiles import load_profiles
from atelier_hub.services import Deployment
from tf_run import REPO, TERRAFORM, apply_root, hcl, run, tf_env

VALUES_MODULE = TERRAFORM / "modules" / "atelier" / "values"
SCHEMA = Path(__file__).resolve().parent / "z2jh" / "values.schema.yaml"
ROLE = "arn:aws:iam::123456789012:role/atelier-session"
ATELIER = f"{sys.executable} -m atelier_hub.cli"

# What network, cluster, storage and identity output in a real deployment.
INPUTS = f"""
  atelier_command         = {hcl(ATELIER)}
  profiles_dir            = {hcl(REPO / 'profiles')}
  values_schema           = {hcl(SCHEMA)}
  public_url              = "https://atelier.example.org"
  namespace               = "atelier"
  hub_image               = {{ name = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/atelier/atelier-hub", tag = "0.1.0" }}
  singleuser_image        = {{ name = "quay.io/jupyter/scipy-notebook", tag = "2026-11-30" }}
  cluster_name            = "atelier"
  session_role_arn        = "{ROLE}"
  shared_bucket           = "atelier-shared-123456789012"
  region                  = "eu-west-1"
  mlflow_server_url       = "http://mlflow.atelier.svc.cluster.local:5000"
  core_node_selector      = {{ "atelier.dev/pool" = "cpu" }}
  private_cidrs           = ["10.0.0.0/16"]
"""


def render(query: dict) -> subprocess.CompletedProcess:
    """render_values.py as the external data source runs it: the query on stdin."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "hub"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(VALUES_MODULE / "render_values.py")], input=json.dumps(query),
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def outputs(terraform_bin, tmp_path_factory):
    return apply_root(terraform_bin, tmp_path_factory.mktemp("values"), f"""
module "values" {{
  source = {hcl(VALUES_MODULE)}
{INPUTS}
}}

output "query" {{
  value = module.values.query
}}

output "program" {{
  value = module.values.program
}}
""")


@pytest.fixture(scope="module")
def values(outputs):
    done = render(outputs["query"])
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(json.loads(done.stdout)["values"])


def test_the_query_is_strings_only(outputs):
    # The external protocol: an object of strings in, an object of strings out.
    assert set(outputs["query"]) == {"atelier", "profiles", "schema", "cluster_yaml", "deployment_json"}
    assert all(isinstance(v, str) for v in outputs["query"].values())
    assert outputs["program"][0] == "python3" and outputs["program"][1].endswith("values/render_values.py")


def test_values_from_terraform_outputs_validate_against_the_charts_schema(values):
    assert SCHEMA.exists(), f"the chart's schema must be vendored at {SCHEMA}"
    assert schema_problems(values, SCHEMA) == []
    # The same check refuses a value the chart does not know.
    broken = merge_values(values, {"singleuser": {"storage": {"type": "floppy"}}})
    assert any("singleuser.storage.type" in p for p in schema_problems(broken, SCHEMA))


def test_values_carry_what_the_modules_made(values, outputs):
    settings = ClusterSettings.model_validate(yaml.safe_load(outputs["query"]["cluster_yaml"]))
    deployment = Deployment.model_validate(json.loads(outputs["query"]["deployment_json"]))
    # Exactly the CLI's rendering of those settings: nothing restated by Terraform.
    assert values == render_values(load_profiles(REPO / "profiles"), deployment, settings)
    # No ServiceAccount shared by every session: each user's own, associated with the
    # session role by EKS Pod Identity (the hub's spawner makes it).
    assert "serviceAccountName" not in values["singleuser"]
    assert (settings.identity.per_user_role_arn, settings.identity.eks_cluster_name) == (ROLE, "atelier")
    # Each user's servers a web origin of their own, at a subdomain of the public URL.
    assert settings.public_url == "https://atelier.example.org"
    assert values["hub"]["config"] == {"JupyterHub": {"subdomain_host": "https://atelier.example.org"}}
    assert values["hub"]["nodeSelector"] == values["proxy"]["chp"]["nodeSelector"] == {"atelier.dev/pool": "cpu"}
    assert values["hub"]["image"] == {"name": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/atelier/atelier-hub",
                                      "tag": "0.1.0"}
    assert values["singleuser"]["storage"]["dynamic"]["storageClass"] == "gp3"
    assert values["singleuser"]["storage"]["capacity"] == "50Gi"
    # IRSA, not keys: no S3 secret anywhere in the values.
    assert deployment.services.s3.bucket == "atelier-shared-123456789012"
    assert deployment.services.s3.secret_access_key is None and "secret_access_key" not in json.dumps(values)
    # MLflow in the atelier namespace behind the hub's front: only the hub pod reaches
    # the server's port; sessions reach the front (8084), the culler (8082) and the jobs
    # service (8088) in the hub pod, with their hub token (auth `hub`), as in embedded mode.
    assert settings.mlflow.server_url == "http://mlflow.atelier.svc.cluster.local:5000"
    assert settings.mlflow.admin_secret == "atelier-mlflow-admin"
    assert deployment.services.mlflow is None and egress_rules(deployment, settings) == []
    assert values["hub"]["networkPolicy"]["egress"] == [
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "atelier"}}}],
         "ports": [{"port": 5000, "protocol": "TCP"}]}]
    assert values["singleuser"]["networkPolicy"]["egress"] == [
        {"to": [{"podSelector": {}}], "ports": [{"port": 8084, "protocol": "TCP"}]},
        {"to": [{"podSelector": {}}], "ports": [{"port": 8082, "protocol": "TCP"}]},
        {"to": [{"podSelector": {}}], "ports": [{"port": 8088, "protocol": "TCP"}]}]
    shipped = json.loads(values["hub"]["extraFiles"]["atelier-deployment"]["stringData"])
    assert shipped["services"]["mlflow"] == {"tracking_uri": "http://hub:8084/services/mlflow", "auth": "hub"}


def test_a_bad_input_fails_with_the_clis_message(outputs, tmp_path):
    """Rendering errors reach terraform (stderr, non-zero) with the field and the fix."""
    done = render({**outputs["query"], "profiles": str(tmp_path / "missing")})
    assert done.returncode == 1 and done.stdout == ""
    assert "atelier render values` exited 2" in done.stderr and "profiles folder not found" in done.stderr
    done = render({**outputs["query"], "cluster_yaml": "gpu_servers_per_user: -1\n"})
    assert done.returncode == 1 and "gpu_servers_per_user" in done.stderr
    done = render({k: v for k, v in outputs["query"].items() if k != "schema"})
    assert done.returncode == 1 and "lacks schema" in done.stderr
    # No values where every user's servers share the hub's origin: the field and the fix.
    settings = yaml.safe_load(outputs["query"]["cluster_yaml"])
    without = yaml.safe_dump({k: v for k, v in settings.items() if k != "public_url"})
    done = render({**outputs["query"], "cluster_yaml": without})
    assert done.returncode == 1 and done.stdout == ""
    assert "public_url: not set; " in done.stderr and "*.atelier.example.org" in done.stderr, done.stderr
    done = render({**outputs["query"], "cluster_yaml": yaml.safe_dump({**settings, "public_url": "atelier.example.org"})})
    assert done.returncode == 1 and "public_url: Value error, must start with https://" in done.stderr, done.stderr


def test_terraform_refuses_the_values_module_without_a_public_url(terraform_bin, tmp_path):
    """The variable has no default: terraform stops before any rendering."""
    inputs = "\n".join(line for line in INPUTS.splitlines() if "public_url" not in line)
    (tmp_path / "main.tf").write_text(f'module "values" {{\n  source = {hcl(VALUES_MODULE)}\n{inputs}\n}}\n')
    (tmp_path / "terraformrc").write_text("")
    env = tf_env(tmp_path)
    done = run([terraform_bin, "init", "-backend=false", "-no-color"], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    done = run([terraform_bin, "validate", "-no-color"], cwd=tmp_path, env=env)
    assert done.returncode == 1 and 'The argument "public_url" is required' in done.stderr, done.stderr


def test_the_public_url_passes_from_the_example_root_to_the_values():
    """The modules with providers cannot be initialised here: their wiring, from the source."""
    for module in ("envs/example", "modules/atelier", "modules/atelier/values"):
        assert re.search(r"\bpublic_url\s+= var\.public_url\n", (TERRAFORM / module / "main.tf").read_text()), module
        variables = (TERRAFORM / module / "variables.tf").read_text()
        block = variables[variables.index('variable "public_url"'):]
        block = block[:block.index("\n}\n")]
        assert re.search(r"type\s+= string", block) and "default" not in block, (module, block)


def test_the_atelier_module_feeds_the_release_with_these_values():
    """helm/kubernetes/external cannot be downloaded here: check the wiring in the source."""
    main = (TERRAFORM / "modules" / "atelier" / "main.tf").read_text()
    assert 'source = "./values"' in main
    assert "program = module.values.program" in main and "query   = module.values.query" in main
    release = main[main.index('resource "helm_release" "this"'):]
    release = release[:release.index("\n}\n")]
    assert "values = concat([data.external.values.result.values], var.extra_values)" in release


def test_extra_cluster_settings_reach_the_hub_and_a_wrong_one_is_named(terraform_bin, tmp_path):
    """The GPU queue, the GPU count per user and personal Ray clusters have no variable of
    their own: `extra_cluster_settings` is merged over what the module writes, and the
    real CLI renders it (a misspelt field fails there, named)."""
    extra = """
  extra_cluster_settings = {
    gpus_per_user = 3
    queue         = { kueue = true, gpus = { "nvidia.com/gpu" = 8 }, groups = { team-a = { weight = 2 } } }
    ray_clusters  = { enabled = true, workers_per_user = 2 }
  }
"""
    out = apply_root(terraform_bin, tmp_path, f"""
module "values" {{
  source = {hcl(VALUES_MODULE)}
{INPUTS}{extra}
}}

output "query" {{
  value = module.values.query
}}
""")
    done = render(out["query"])
    assert done.returncode == 0, done.stderr
    values = yaml.safe_load(json.loads(done.stdout)["values"])
    assert schema_problems(values, SCHEMA) == []
    shipped = yaml.safe_load(values["hub"]["extraFiles"]["atelier-cluster"]["stringData"])
    assert (shipped["gpus_per_user"], shipped["queue"]["kueue"], shipped["queue"]["groups"]["team-a"]["weight"],
            shipped["ray_clusters"]["workers_per_user"]) == (3, True, 2, 2)
    # What the module writes itself is still there (merged, not replaced).
    assert shipped["identity"]["per_user_role_arn"] == ROLE
    # Sessions may reach the personal clusters' heads: Ray's client, GCS and dashboard ports.
    ports = [p["port"] for rule in values["singleuser"]["networkPolicy"]["egress"] for p in rule["ports"]]
    assert {10001, 6379, 8265} <= set(ports), ports
    settings = yaml.safe_load(out["query"]["cluster_yaml"])
    done = render({**out["query"], "cluster_yaml": yaml.safe_dump({**settings, "gpu_per_user": 3})})
    assert done.returncode == 1 and "gpu_per_user" in done.stderr, done.stderr
