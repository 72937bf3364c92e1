"""`atelier render values`: the chart's values from profiles/, checked against the
chart's own schema (jsonschema, draft 7), and the hub code they carry run for real.

No cluster needed: these are fast and run everywhere. The chart's schema and defaults
are vendored in the repository (tests/terraform/z2jh/, see SOURCE.md there, shared with
the Terraform values test), so the schema checks always run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml
from atelier_hub.cluster.kubespawner import configure_kubespawner, profile_list
from atelier_hub.cluster.settings import ClusterSettings, ClusterSettingsError, load_cluster_settings
from atelier_hub.cluster.values import ETC, egress_rules, main_render, merge_values, render_values, schema_problems
from atelier_hub.profiles import load_profiles
from atelier_hub.services import Deployment
from traitlets.config import Config

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "profiles"
SCHEMA = REPO / "tests" / "terraform" / "z2jh" / "values.schema.yaml"

DEPLOYMENT = Deployment.model_validate({"services": {
    "s3": {"endpoint_url": "http://minio.storage.svc.cluster.local:9000", "bucket": "atelier-shared"},
    "mlflow": {"tracking_uri": "http://10.20.30.40:5000", "auth": "none"},
}})
PUBLIC_URL = "https://atelier.example.org"
SETTINGS = ClusterSettings.model_validate({
    "public_url": PUBLIC_URL,
    "identity": {"service_account": "atelier-session", "role_arn": "arn:aws:iam::123456789012:role/atelier-session"},
    "storage": {"storage_class": "gp3", "capacity": "50Gi"},
    "gpu_servers_per_user": 2,
})


@pytest.fixture(scope="module")
def values():
    return render_values(load_profiles(PROFILES), DEPLOYMENT, SETTINGS)


def _schema() -> Path:
    # Vendored in the repository: a missing file is a broken checkout, never a skip.
    if not SCHEMA.exists() or not SCHEMA.with_name("values.yaml").exists():
        pytest.fail(f"the chart's schema or defaults are missing from {SCHEMA.parent}: restore them with "
                    "`git checkout -- tests/terraform/z2jh` (source and commit in SOURCE.md there)", pytrace=False)
    return SCHEMA


def test_values_validate_against_the_charts_schema(values):
    schema_path = _schema()
    assert schema_problems(values, schema_path) == []
    # The same check spelled out: Helm merges our values over the chart's defaults.
    schema = yaml.safe_load(schema_path.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    merged = merge_values(yaml.safe_load(schema_path.with_name("values.yaml").read_text()), values)
    jsonschema.Draft7Validator(schema).validate(merged)


def test_schema_catches_a_bad_value(values):
    schema_path = _schema()
    broken = merge_values(values, {"singleuser": {"storage": {"type": "floppy"}}, "hub": {"nodeSelctor": {}}})
    problems = schema_problems(broken, schema_path)
    assert any("singleuser.storage.type" in p for p in problems), problems
    assert any("nodeSelctor" in p for p in problems), problems


def test_values_blocks(values):
    # Each user's servers a web origin of their own: the chart's own setting, which its
    # hub applies as JupyterHub.subdomain_host and its proxy reads to route by host.
    assert values["hub"]["config"] == {"JupyterHub": {"subdomain_host": "https://atelier.example.org"}}
    su = values["singleuser"]
    # Home: one dynamic PVC per user at the container home.
    assert su["storage"]["type"] == "dynamic"
    assert su["storage"]["homeMountPath"] == "/home/jovyan"
    assert su["storage"]["dynamic"]["pvcNameTemplate"] == "claim-{username}"
    assert su["storage"]["dynamic"]["storageClass"] == "gp3"
    assert su["storage"]["capacity"] == "50Gi"
    # Private IPs stay blocked; each service gets its own port.
    assert su["networkPolicy"]["egressAllowRules"]["privateIPs"] is False
    assert su["networkPolicy"]["egress"] == [
        # S3 at a Service in namespace "storage", on its port only.
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}],
         "ports": [{"port": 9000, "protocol": "TCP"}]},
        # MLflow at a private IP: exactly that address.
        {"to": [{"ipBlock": {"cidr": "10.20.30.40/32"}}], "ports": [{"port": 5000, "protocol": "TCP"}]},
        # The culler, in the hub pod of this namespace, on its port only.
        {"to": [{"podSelector": {}}], "ports": [{"port": 8082, "protocol": "TCP"}]},
        # The jobs service there too (`atelier run` in a session), on its port only.
        {"to": [{"podSelector": {}}], "ports": [{"port": 8088, "protocol": "TCP"}]},
    ]
    assert su["serviceAccountName"] == "atelier-session"
    # The chart's one-timeout culler is off; Atelier's per-profile culler is a hub service.
    assert values["cull"] == {"enabled": False}
    # The hub pod's services, the culler (for sessions), the usage page (for the proxy) and
    # the jobs service (for both), on the settings' default ports (docs/reference.md).
    assert values["hub"]["service"]["extraPorts"] == [{"name": "culler", "port": 8082, "targetPort": 8082},
                                                      {"name": "usage", "port": 8083, "targetPort": 8083},
                                                      {"name": "jobs", "port": 8088, "targetPort": 8088}]
    assert values["hub"]["networkPolicy"]["ingress"] == [{
        "from": [{"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}],
        "ports": [{"port": 8082, "protocol": "TCP"}, {"port": 8083, "protocol": "TCP"},
                  {"port": 8088, "protocol": "TCP"}]}]
    assert values["hub"]["image"]["name"].endswith("atelier-hub")
    assert values["hub"]["nodeSelector"] == {"atelier.dev/pool": "core"}
    files = values["hub"]["extraFiles"]
    assert {f"atelier-profile-{p.stem}" for p in PROFILES.glob("*.yaml")} <= set(files)


@pytest.mark.parametrize(("url", "to"), [
    # A private IP: exactly that address (the chart blocks private IPs otherwise).
    ("http://10.20.30.40:5000", [{"ipBlock": {"cidr": "10.20.30.40/32"}}]),
    # A Service in another namespace, by its cluster DNS name.
    ("http://minio.storage.svc.cluster.local:9000",
     [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}]),
    ("http://mlflow.ml:5000", [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml"}}}]),
    # A short name: a Service in the hub's own namespace.
    ("http://mlflow:5000", [{"podSelector": {}}]),
    # Any other hostname may resolve inside the VPC: the VPC's CIDRs, on that port only.
    ("https://mlflow.internal.example.com", [{"ipBlock": {"cidr": "10.0.0.0/8"}}]),
])
def test_egress_rule_per_endpoint(url, to):
    d = Deployment.model_validate({"services": {"mlflow": {"tracking_uri": url}}})
    port = int(url.rsplit(":", 1)[1]) if url.count(":") == 2 else 443
    assert egress_rules(d, ClusterSettings()) == [{"to": to, "ports": [{"port": port, "protocol": "TCP"}]}]


def test_aws_s3_needs_no_rule():
    # No endpoint_url: AWS's public endpoint, already open (nonPrivateIPs).
    d = Deployment.model_validate({"services": {"s3": {"bucket": "b"}}})
    assert egress_rules(d, ClusterSettings()) == []


def _chart_hub_config(values, root: Path, monkeypatch) -> Config:
    """The hub's config as the chart's jupyterhub_config.py makes it from these values:
    hub.extraFiles written out, hub.config's sections applied, singleuser.storage's home
    set on KubeSpawner (as the chart does, always before hub.extraConfig), then
    hub.extraConfig run. The files land in ``root`` instead of the chart's folder, so
    the hub is told where they are ($ATELIER_CLUSTER_DIR)."""
    for entry in values["hub"]["extraFiles"].values():
        path = root / Path(entry["mountPath"]).relative_to(ETC)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry["stringData"])
    c = Config()
    for section, cfg in values["hub"].get("config", {}).items():
        c[section].update(cfg)
    storage = values["singleuser"]["storage"]
    c.KubeSpawner.pvc_name_template = storage["dynamic"]["pvcNameTemplate"]
    c.KubeSpawner.volumes = {storage["dynamic"]["volumeNameTemplate"]: {
        "name": storage["dynamic"]["volumeNameTemplate"], "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
    monkeypatch.delenv("ATELIER_STATE", raising=False)
    monkeypatch.setenv("ATELIER_CLUSTER_DIR", str(root))
    code = values["hub"]["extraConfig"]["atelier.py"]
    exec(compile(code, "hub.extraConfig.atelier", "exec"), {"c": c})  # noqa: S102 (the chart does the same)
    return c


def test_hub_code_in_values_configures_the_same_profiles(values, tmp_path, monkeypatch):
    """Run hub.extraConfig on hub.extraFiles the way the chart's hub does: the one entry,
    atelier_hub.configure(c), finds the cluster settings and configures KubeSpawner."""
    assert values["hub"]["extraConfig"]["atelier.py"].endswith("import atelier_hub\n\natelier_hub.configure(c)\n")
    root = tmp_path / "etc"
    c = _chart_hub_config(values, root, monkeypatch)

    s = c.AtelierKubeSpawner
    assert c.JupyterHub.spawner_class == "atelier_hub.cluster.kubespawner.AtelierKubeSpawner"
    assert s.profile_list is profile_list
    assert s.gpu_servers_per_user == 2
    assert s.service_account == "atelier-session"
    assert "volumes" not in s, "the chart's singleuser.storage sets the home"
    assert s.delete_pvc is False, "a removed user's home stays (KubeSpawner's default deletes it)"
    assert "storage_class" not in s and "pvc_name_template" not in s
    assert (s.profiles_dir, s.deployment_file) == (str(root / "profiles"), str(root / "deployment.json"))
    shipped = {p.name: p for p in load_profiles(root / "profiles")}
    assert shipped == {p.name: p.model_copy(update={"source": shipped[p.name].source})
                       for p in load_profiles(PROFILES)}
    shipped_deployment = json.loads((root / "deployment.json").read_text())
    assert shipped_deployment["services"].pop("culler")["url"] == "http://hub:8082/services/culler"
    assert shipped_deployment["services"].pop("jobs")["url"] == "http://hub:8088/services/jobs"
    assert shipped_deployment == DEPLOYMENT.model_dump(mode="json", exclude_none=True)
    assert load_cluster_settings(root / "cluster.yaml") == SETTINGS
    # The culler runs as a hub service with the embedded mode's command, listening in the pod.
    (culler,) = [svc for svc in c.JupyterHub.services if svc["name"] == "culler"]
    assert culler["command"][1:3] == ["-m", "atelier_hub.services.culler_server"]
    assert culler["command"][-4:] == ["--listen", "0.0.0.0:8082", "--prefix", "/services/culler"]
    assert any(r["services"] == ["culler"] and "delete:servers" in r["scopes"] for r in c.JupyterHub.load_roles)
    assert "access:services!service=culler" in s.server_token_scopes
    # So does the usage page, over the usage record on the hub's volume; the proxy reaches
    # it through the hub's Service.
    (usage,) = [svc for svc in c.JupyterHub.services if svc["name"] == "usage"]
    assert usage["url"] == "http://hub:8083" and usage["display"] is True
    assert usage["command"][1:] == ["-m", "atelier_hub.services.usage_page", "--usage-file",
                                    "/srv/jupyterhub/usage.jsonl", "--listen", "0.0.0.0:8083"]
    assert c.ProfileSpawnerMixin.usage_file == "/srv/jupyterhub/usage.jsonl"
    # The jobs service too: its records and each ended job's output on the hub's volume; the
    # output of a running job from the hub (which reads the pod's log).
    (jobs,) = [svc for svc in c.JupyterHub.services if svc["name"] == "jobs"]
    assert jobs["url"] == "http://hub:8088" and jobs["display"] is True
    assert jobs["command"][1:] == ["-m", "atelier_hub.services.jobs_server", "--jobs", "/srv/jupyterhub/jobs",
                                   "--profiles", str(root / "profiles"), "--output", "hub",
                                   "--listen", "0.0.0.0:8088"]
    assert s.jobs_dir == "/srv/jupyterhub/jobs"
    assert {"name": "jobs-service", "scopes": ["list:users", "read:users:name", "read:servers", "servers",
                                               "delete:servers"], "services": ["jobs"]} in c.JupyterHub.load_roles
    assert "access:services!service=jobs" in s.server_token_scopes
    # Every user may reach both (the usage page shows a non-admin their own lines only; the
    # jobs service, their own jobs only).
    assert {"name": "user", "scopes": ["self", "access:services!service=usage", "access:services!service=jobs"]} \
        in c.JupyterHub.load_roles


def test_each_users_servers_are_an_origin_of_their_own(values, tmp_path, monkeypatch):
    """JupyterHub itself, configured as the chart's hub is from these values, puts each
    user's servers at a subdomain of the public URL and services on the hub's host."""
    from atelier_hub.origins import subdomain_hook
    from jupyterhub import orm
    from jupyterhub.app import JupyterHub
    from jupyterhub.user import User

    c = _chart_hub_config(values, tmp_path / "etc", monkeypatch)
    assert c.JupyterHub.subdomain_host == "https://atelier.example.org"
    assert c.JupyterHub.subdomain_hook is subdomain_hook
    app = JupyterHub(config=c)
    assert (app.subdomain_host, app.domain, app.public_url) == (
        "https://atelier.example.org", "atelier.example.org", "https://atelier.example.org/")
    # The settings the hub's handlers and User objects read (JupyterHub.init_tornado_settings).
    settings = {"subdomain_host": app.subdomain_host, "subdomain_hook": app.subdomain_hook, "domain": app.domain,
                "base_url": app.base_url}
    db = orm.new_session_factory("sqlite://")()
    ada, bo = (User(orm.User(name=name), settings=settings, db=db) for name in ("ada", "bo"))
    assert ada.url == "https://ada.atelier.example.org/user/ada/"
    assert bo.server_url("gpu") == "https://bo.atelier.example.org/user/bo/gpu/"
    # The proxy's routes are per host (the chart runs it with --host-routing: hub.config above).
    assert ada.proxy_spec == "ada.atelier.example.org/user/ada/"
    # Services (the culler, the MLflow front) stay on the hub's own host.
    assert app.subdomain_hook("culler", app.domain, "service") == "atelier.example.org"


def test_values_without_a_public_url_are_refused():
    """Not a deployment where every user's pages share the hub's origin: no values at all."""
    unset = SETTINGS.model_copy(update={"public_url": None})
    with pytest.raises(ClusterSettingsError) as exc:
        render_values(load_profiles(PROFILES), DEPLOYMENT, unset)
    message = str(exc.value)
    assert message.startswith("public_url: not set; ")
    assert "public_url: https://atelier.example.org" in message and "*.atelier.example.org" in message


def test_storage_traits_match_the_charts_storage(values):
    c = Config()
    configure_kubespawner(c, profiles_dir=PROFILES, storage=True)
    s, chart = c.AtelierKubeSpawner, values["singleuser"]["storage"]
    defaults = ClusterSettings()
    assert s.pvc_name_template == chart["dynamic"]["pvcNameTemplate"] == defaults.storage.pvc_name_template
    assert s.volume_mounts["home"]["mountPath"] == chart["homeMountPath"] == "/home/jovyan"
    assert s.storage_pvc_ensure is True and s.delete_pvc is False


def test_the_chart_hub_has_atelier_s_home_page_and_look_and_an_operator_s_templates_win():
    """The cluster hub renders the embedded mode's templates (home page, frame, look) with
    a Home over the hub pod's files: the usage record and the culler's plan on the hub's
    volume (the culler writes it there). An operator's hub.templatePaths come first and
    their hub.templateVars win; the embedded login's invite line is not shown."""
    from atelier_hub.cluster.kubespawner import CULLER_PLAN, USAGE_FILE

    c = Config()
    c.JupyterHub.template_paths = ["/operator/templates"]
    c.JupyterHub.template_vars = {"announcement": "hello", "atelier_css": "/* the operator's */"}
    configure_kubespawner(c, profiles_dir=PROFILES, storage=True)
    paths = c.JupyterHub.template_paths
    assert paths[0] == "/operator/templates" and paths[1].endswith("atelier_hub/embedded/templates"), paths
    assert (Path(paths[1]) / "home.html").is_file() and (Path(paths[1]) / "page.html").is_file()
    tv = c.JupyterHub.template_vars
    assert tv["announcement"] == "hello" and tv["atelier_css"] == "/* the operator's */"
    assert "atelier_mark" in tv and not tv.get("atelier_invites")
    home = tv["atelier_home"]
    assert home.usage_file == Path(USAGE_FILE) and home.plan_file == Path(CULLER_PLAN) and home.vscode
    assert c.JupyterHub.default_url == "/hub/home"
    culler = next(svc for svc in c.JupyterHub.services if svc["name"] == "culler")
    assert culler["command"][culler["command"].index("--plan") + 1] == CULLER_PLAN


def test_profile_list_shows_each_user_only_their_profiles(tmp_path):
    for src in PROFILES.glob("*.yaml"):
        data = yaml.safe_load(src.read_text())
        if data.get("gpu"):
            data["groups"] = ["gpu-users"]
        (tmp_path / src.name).write_text(yaml.safe_dump(data))
    profiles = load_profiles(tmp_path)

    def entries(groups):  # (the capacity lines are test_k8s_spawn.py's: they read a real cluster)
        spawner = SimpleNamespace(profiles=profiles, groups=lambda: set(groups), show_capacity=False)
        return asyncio.run(profile_list(spawner))

    def slugs(groups):
        return [entry["slug"] for entry in entries(groups)]

    assert "gpu-1" not in slugs([]) and "cpu-small" in slugs([])
    assert {"gpu-1", "gpu-4", "cpu-small"} <= set(slugs(["gpu-users"]))
    gpu = next(e for e in entries({"gpu-users"}) if e["slug"] == "gpu-1")["kubespawner_override"]
    assert gpu["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert gpu["node_selector"] == {"atelier.dev/pool": "gpu"}
    assert gpu["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_cli_writes_the_values_file(tmp_path, capsys):
    out, cluster = tmp_path / "values.yaml", tmp_path / "cluster.yaml"
    cluster.write_text("public_url: https://Atelier.Example.org/\n")
    main_render(["values", "--profiles", str(PROFILES), "--cluster", str(cluster), "--out", str(out),
                 "--schema", str(_schema())])
    text = out.read_text()
    assert text.startswith("# Zero to JupyterHub values rendered by `atelier render values`")
    written = yaml.safe_load(text)
    # Without deployment settings, and only the public URL in the cluster settings: the defaults, spelled out.
    assert list(written) == ["hub", "proxy", "singleuser", "scheduling", "cull"]
    hub = written["hub"]
    assert hub["config"] == {"JupyterHub": {"subdomain_host": "https://atelier.example.org"}}
    assert hub["image"] == {"name": "ghcr.io/atelier-dev/atelier-hub", "tag": "0.1.0"}
    assert (hub["nodeSelector"], hub["allowNamedServers"], hub["namedServerLimitPerUser"]) == (
        {"atelier.dev/pool": "core"}, True, 5)
    assert {k: f["mountPath"] for k, f in hub["extraFiles"].items()} == {
        **{f"atelier-profile-{n}": f"/usr/local/etc/atelier/profiles/{n}.yaml"
           for n in ("cpu-small", "cpu-large", "highmem", "gpu-1", "gpu-4")},
        "atelier-deployment": "/usr/local/etc/atelier/deployment.json",
        "atelier-cluster": "/usr/local/etc/atelier/cluster.yaml",
    }
    # Each profile travels as the profile file it came from.
    for name in ("cpu-small", "highmem", "gpu-4"):
        assert yaml.safe_load(hub["extraFiles"][f"atelier-profile-{name}"]["stringData"]) == yaml.safe_load(
            (PROFILES / f"{name}.yaml").read_text())
    # Sessions report their activity to the culler in the hub pod; their git identity
    # takes the default email domain (docs/reference.md: git.email_domain).
    assert json.loads(hub["extraFiles"]["atelier-deployment"]["stringData"]) == {
        "services": {"culler": {"url": "http://hub:8082/services/culler", "gpu_busy_percent": 10},
                     "jobs": {"url": "http://hub:8088/services/jobs"}},
        "git": {"email_domain": "users.noreply.atelier"}}
    assert "\natelier_hub.configure(c)\n" in hub["extraConfig"]["atelier.py"]
    assert written["proxy"] == {"chp": {"nodeSelector": {"atelier.dev/pool": "core"}}}
    assert written["singleuser"] == {
        "image": {"name": "ghcr.io/atelier-dev/atelier-base", "tag": "0.1.0"},  # images/base
        "defaultUrl": "/lab",
        "storage": {"type": "dynamic", "capacity": "20Gi", "homeMountPath": "/home/jovyan",
                    "dynamic": {"storageClass": None, "pvcNameTemplate": "claim-{username}",
                                "volumeNameTemplate": "home", "storageAccessModes": ["ReadWriteOnce"]}},
        "networkPolicy": {"enabled": True,
                          "egressAllowRules": {"privateIPs": False, "nonPrivateIPs": True,
                                               "dnsPortsPrivateIPs": True, "cloudMetadataServer": False},
                          # no service configured: only the culler's and the jobs service's ports
                          # in the hub pod
                          "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": 8082, "protocol": "TCP"}]},
                                     {"to": [{"podSelector": {}}], "ports": [{"port": 8088, "protocol": "TCP"}]}]},
        "profileList": [],
    }
    assert written["scheduling"] == {"userScheduler": {"nodeSelector": {"atelier.dev/pool": "core"}},
                                     "userPods": {"nodeAffinity": {"matchNodePurpose": "ignore"}}}
    assert written["cull"] == {"enabled": False}
    # the culler's port (sessions), the usage page's (the proxy) and the jobs service's
    # (both) in the hub pod
    assert hub["networkPolicy"]["ingress"][0]["ports"] == [{"port": 8082, "protocol": "TCP"},
                                                           {"port": 8083, "protocol": "TCP"},
                                                           {"port": 8088, "protocol": "TCP"}]
    assert "Wrote" in capsys.readouterr().err


def test_cli_names_a_bad_profile_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main_render(["values", "--profiles", str(tmp_path / "missing")])
    assert exc.value.code == 2
    assert "profiles folder not found" in capsys.readouterr().err


def test_per_user_s3_accounts_read_the_root_keys_from_the_platforms_secret(tmp_path, monkeypatch):
    """identity.s3_admin_secret: the hub's environment names the Secret (never a key in the
    values), the values still match the chart's schema, and the hub code they carry sets the
    spawner's keys folder on the hub's volume."""
    settings = SETTINGS.model_copy(update={"identity": SETTINGS.identity.model_copy(
        update={"s3_admin_secret": "platform-s3-root"})})
    values = render_values(load_profiles(PROFILES), DEPLOYMENT, settings)
    assert values["hub"]["extraEnv"] == {
        "ATELIER_S3_ROOT_ACCESS_KEY_ID": {"valueFrom": {"secretKeyRef": {"name": "platform-s3-root",
                                                                           "key": "access_key_id"}}},
        "ATELIER_S3_ROOT_SECRET_ACCESS_KEY": {"valueFrom": {"secretKeyRef": {"name": "platform-s3-root",
                                                                               "key": "secret_access_key"}}},
    }
    assert schema_problems(values, _schema()) == []
    c = Config()
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"identity": {"s3_admin_secret": "platform-s3-root"}}))
    configure_kubespawner(c, profiles_dir=PROFILES, cluster_file=tmp_path / "cluster.yaml", storage=False)
    assert c.AtelierKubeSpawner.s3_accounts_dir == "/srv/jupyterhub/s3-accounts"
    # As the chart's hub.extraConfig calls it (the chart sets the storage): a removed
    # user's home is still kept (KubeSpawner's default would delete it).
    assert c.AtelierKubeSpawner.delete_pvc is False


@pytest.mark.parametrize(("s3", "field", "fix"), [
    # AWS S3 itself has no admin API: per-user roles instead.
    ({"bucket": "b"}, "identity.s3_admin_secret", "services.s3.endpoint_url"),
    # Static keys would reach every session.
    ({"endpoint_url": "http://s3:7070", "bucket": "b", "access_key_id": "k", "secret_access_key": "s"},
     "services.s3.access_key_id", "remove access_key_id and secret_access_key"),
])
def test_per_user_s3_accounts_refuse_a_store_without_them(s3, field, fix):
    settings = SETTINGS.model_copy(update={"identity": SETTINGS.identity.model_copy(
        update={"s3_admin_secret": "platform-s3-root"})})
    with pytest.raises(ClusterSettingsError) as exc:
        render_values(load_profiles(PROFILES), Deployment.model_validate({"services": {"s3": s3}}), settings)
    assert str(exc.value).startswith(field + ":") and fix in str(exc.value), exc.value


def test_per_user_aws_identity_names_no_shared_service_account(tmp_path):
    """identity.per_user_role_arn (EKS Pod Identity): no ServiceAccount shared by every
    session in the values; the hub code sets the role and cluster on the spawner, which
    gives each user their own ServiceAccount. Without the cluster's name, a message
    naming the field."""
    role = "arn:aws:iam::123456789012:role/atelier-session"
    identity = {"per_user_role_arn": role, "eks_cluster_name": "atelier"}
    settings = ClusterSettings.model_validate({"public_url": PUBLIC_URL, "identity": identity})
    values = render_values(load_profiles(PROFILES), DEPLOYMENT, settings)
    assert "serviceAccountName" not in values["singleuser"]
    c = Config()
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"identity": identity}))
    configure_kubespawner(c, profiles_dir=PROFILES, cluster_file=tmp_path / "cluster.yaml")
    assert (c.AtelierKubeSpawner.per_user_role_arn, c.AtelierKubeSpawner.eks_cluster_name) == (role, "atelier")
    with pytest.raises(ClusterSettingsError, match=r"^identity\.eks_cluster_name: not set"):
        render_values(load_profiles(PROFILES), DEPLOYMENT, ClusterSettings.model_validate(
            {"public_url": PUBLIC_URL, "identity": {"per_user_role_arn": role}}))


# -- MLflow behind the hub's front (cluster settings' `mlflow`) ------------------------------

MLFLOW_SERVER = "http://mlflow.atelier.svc.cluster.local:5000"
FRONT_SETTINGS = SETTINGS.model_copy(update={"mlflow": ClusterSettings.model_validate(
    {"mlflow": {"server_url": MLFLOW_SERVER}}).mlflow})
NO_MLFLOW = Deployment.model_validate({"services": {"s3": DEPLOYMENT.services.s3.model_dump()}})


def test_with_the_mlflow_front_sessions_reach_mlflow_through_the_hub_pod_only(tmp_path, monkeypatch):
    values = render_values(load_profiles(PROFILES), NO_MLFLOW, FRONT_SETTINGS)
    assert schema_problems(values, _schema()) == []
    hub, su = values["hub"], values["singleuser"]
    # Sessions get the front in the hub pod (its Service, port 8084), with auth `hub`: their
    # hub token is their MLflow token, as in embedded mode; never the server's own URL.
    shipped = json.loads(hub["extraFiles"]["atelier-deployment"]["stringData"])
    assert shipped["services"]["mlflow"] == {"tracking_uri": "http://hub:8084/services/mlflow", "auth": "hub"}
    assert "mlflow.atelier" not in json.dumps(su) and "5000" not in json.dumps(su["networkPolicy"])
    assert {"to": [{"podSelector": {}}], "ports": [{"port": 8084, "protocol": "TCP"}]} in su["networkPolicy"]["egress"]
    # The hub pod alone reaches the server's port, and mounts the admin Secret (read-only).
    assert hub["networkPolicy"]["egress"] == [{
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "atelier"}}}],
        "ports": [{"port": 5000, "protocol": "TCP"}]}]
    assert {"port": 8084, "protocol": "TCP"} in hub["networkPolicy"]["ingress"][0]["ports"]
    assert {"name": "mlflow", "port": 8084, "targetPort": 8084} in hub["service"]["extraPorts"]
    (volume,) = hub["extraVolumes"]
    assert volume["secret"]["secretName"] == "atelier-mlflow-admin"
    assert volume["secret"]["items"] == [{"key": "admin-password", "path": "admin-password"}]
    assert hub["extraVolumeMounts"] == [{"name": volume["name"], "mountPath": "/usr/local/etc/atelier-mlflow",
                                         "readOnly": True}]
    assert "extraVolumes" not in su and "atelier-mlflow-admin" not in json.dumps(su)
    # The hub runs the embedded mode's front, in cluster mode, with the file's path only.
    c = _chart_hub_config(values, tmp_path / "etc", monkeypatch)
    (front,) = [svc for svc in c.JupyterHub.services if svc["name"] == "mlflow"]
    assert front["url"] == "http://hub:8084" and front["oauth_no_confirm"] is True
    assert front["command"][1:] == [
        "-m", "atelier_hub.services.mlflow_front", "--server-url", MLFLOW_SERVER,
        "--admin-password-file", "/usr/local/etc/atelier-mlflow/admin-password",
        "--state", "/srv/jupyterhub/mlflow-front", "--listen", "0.0.0.0:8084",
        "--public-url", "https://atelier.example.org/services/mlflow"]
    # Its own token reads the hub's users (a removed user's MLflow account goes), no more.
    assert {"name": "mlflow-service", "scopes": ["list:users", "read:users:name"],
            "services": ["mlflow"]} in c.JupyterHub.load_roles
    assert "access:services!service=mlflow" in c.AtelierKubeSpawner.server_token_scopes
    assert any(r["name"] == "user" and "access:services!service=mlflow" in r["scopes"]
               for r in c.JupyterHub.load_roles)


def test_the_mlflow_front_and_a_deployment_mlflow_are_refused_together():
    with pytest.raises(ClusterSettingsError, match="remove services.mlflow from the deployment settings"):
        render_values(load_profiles(PROFILES), DEPLOYMENT, FRONT_SETTINGS)
    with pytest.raises(ValueError, match="mlflow.server_url|server's base URL"):
        ClusterSettings.model_validate({"mlflow": {"server_url": "http://mlflow:5000/services/mlflow"}})


# -- Trino's front in the hub pod, where the deployment names a Trino ----------------------------

TRINO_DEPLOYMENT = Deployment.model_validate({"services": {
    "s3": {"endpoint_url": "http://minio.storage.svc.cluster.local:9000", "bucket": "atelier-shared"},
    "trino": {"url": "http://trino.data.svc.cluster.local:8080", "catalog": "hive", "default_schema": "default",
              "shared_schemas": ["team"]},
}})
TRINO_SETTINGS = SETTINGS.model_copy(update={"trino": SETTINGS.trino.model_copy(update={
    "schemas_in": "hive",
    "rules_from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}}]})})


@pytest.fixture(scope="module")
def trino_values():
    return render_values(load_profiles(PROFILES), TRINO_DEPLOYMENT, TRINO_SETTINGS)


def test_trino_values_open_the_front_to_sessions_and_the_rules_to_the_coordinator_only(trino_values):
    assert schema_problems(trino_values, _schema()) == []
    hub = trino_values["hub"]
    assert hub["service"]["extraPorts"] == [{"name": "culler", "port": 8082, "targetPort": 8082},
                                            {"name": "usage", "port": 8083, "targetPort": 8083},
                                            {"name": "jobs", "port": 8088, "targetPort": 8088},
                                            {"name": "trino", "port": 8085, "targetPort": 8085},
                                            {"name": "trino-rules", "port": 8086, "targetPort": 8086}]
    assert hub["networkPolicy"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}],
         "ports": [{"port": 8082, "protocol": "TCP"}, {"port": 8083, "protocol": "TCP"},
                   {"port": 8088, "protocol": "TCP"}, {"port": 8085, "protocol": "TCP"}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}}],
         "ports": [{"port": 8086, "protocol": "TCP"}]}]
    # The JWT key: a Secret the platform makes (never rendered), mounted read-only.
    assert hub["extraVolumes"] == [{"name": "atelier-trino-jwt", "secret": {
        "secretName": "atelier-trino-jwt", "defaultMode": 0o400, "items": [{"key": "jwt-hmac", "path": "jwt-hmac"}]}}]
    assert hub["extraVolumeMounts"] == [{"name": "atelier-trino-jwt", "mountPath": "/etc/atelier/trino-jwt",
                                         "readOnly": True}]
    # Sessions reach the front in the hub pod, never the coordinator's port.
    egress = trino_values["singleuser"]["networkPolicy"]["egress"]
    assert {"to": [{"podSelector": {}}], "ports": [{"port": 8085, "protocol": "TCP"}]} in egress
    assert not any(p["port"] == 8080 for rule in egress for p in rule["ports"])


def test_values_without_trino_have_no_front(values):
    hub = values["hub"]
    assert [p["name"] for p in hub["service"]["extraPorts"]] == ["culler", "usage", "jobs"]
    assert "extraVolumes" not in hub and "extraVolumeMounts" not in hub


def test_hub_code_runs_the_trino_front_and_sessions_get_its_address(trino_values, tmp_path, monkeypatch):
    import sys

    c = _chart_hub_config(trino_values, tmp_path / "etc", monkeypatch)
    (front,) = [svc for svc in c.JupyterHub.services if svc["name"] == "trino"]
    assert "url" not in front and front["display"] is False  # not behind the proxy: sessions reach hub:8085
    assert front["command"] == [
        sys.executable, "-m", "atelier_hub.services.trino_server", "--state", "/srv/jupyterhub/trino",
        "--backend", "http://trino.data.svc.cluster.local:8080", "--jwt-key-file", "/etc/atelier/trino-jwt/jwt-hmac",
        "--listen-host", "0.0.0.0", "--front-port", "8085", "--rules-port", "8086", "--schemas-in", "hive",
        "--shared-schema", "team"]
    assert {"name": "trino-service", "scopes": ["list:users", "read:users:name"],
            "services": ["trino"]} in c.JupyterHub.load_roles
    (user,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
    assert "access:services!service=trino" in user["scopes"]
    assert c.AtelierKubeSpawner.server_token_scopes == [
        "users:activity!user", "access:servers!server", "access:services!service=culler",
        "access:services!service=jobs", "access:services!service=trino"]
    assert c.AtelierKubeSpawner.trino_front_url == "http://hub:8085"


def test_a_sessions_trino_settings_name_the_front_with_its_token(trino_values, tmp_path, monkeypatch):
    from atelier_hub.cluster.kubespawner import AtelierKubeSpawner

    root = tmp_path / "etc"
    c = _chart_hub_config(trino_values, root, monkeypatch)
    monkeypatch.setattr(AtelierKubeSpawner, "_deployment", None)  # read once per class
    spawner = AtelierKubeSpawner.__new__(AtelierKubeSpawner)
    spawner.deployment_file = c.AtelierKubeSpawner.deployment_file
    spawner.trino_front_url = c.AtelierKubeSpawner.trino_front_url
    trino = spawner.deployment.services.trino
    assert (trino.url, trino.shared_schemas) == ("http://hub:8085", ["team"])
    env = trino.session_env(SimpleNamespace(username="ben", api_token="TOKEN", config_dir=None))
    assert env["ATELIER_TRINO_URL"] == "http://hub:8085"
    assert env["DATABASE_URL"] == "trino://ben:TOKEN@hub:8085/hive/default?allow_insecure_auth=true"


def test_both_fronts_in_one_hub_pod_keep_both_secrets_and_distinct_ports():
    """MLflow's and Trino's fronts together: each Secret mounted (Helm would let one list
    of volumes replace the other), and no port of the hub pod given twice."""
    settings = TRINO_SETTINGS.model_copy(update={"mlflow": FRONT_SETTINGS.mlflow})
    values = render_values(load_profiles(PROFILES), TRINO_DEPLOYMENT, settings)
    assert schema_problems(values, _schema()) == []
    hub = values["hub"]
    assert [v["name"] for v in hub["extraVolumes"]] == ["atelier-trino-jwt", "atelier-mlflow-admin"]
    assert [m["mountPath"] for m in hub["extraVolumeMounts"]] == ["/etc/atelier/trino-jwt",
                                                                  "/usr/local/etc/atelier-mlflow"]
    assert [(p["name"], p["port"]) for p in hub["service"]["extraPorts"]] == [
        ("culler", 8082), ("usage", 8083), ("mlflow", 8084), ("jobs", 8088), ("trino", 8085), ("trino-rules", 8086)]


def test_git_hosts_run_the_credentials_service_in_the_hub_pod_and_sessions_reach_it(tmp_path, monkeypatch):
    """A deployment that names git hosts: the hub pod runs the credentials service on its
    port (open to sessions), every user and each server's token may reach it, and the
    sessions' settings and egress name it in the hub pod."""
    import sys

    deployment = DEPLOYMENT.model_copy(update={"services": DEPLOYMENT.services.model_copy(update={
        "credentials": Deployment.model_validate(
            {"services": {"credentials": {"git_hosts": ["github.com", "git.example.org"]}}}).services.credentials})})
    values = render_values(load_profiles(PROFILES), deployment, SETTINGS)
    assert schema_problems(values, _schema()) == []
    hub = values["hub"]
    assert {"name": "credentials", "port": 8087, "targetPort": 8087} in hub["service"]["extraPorts"]
    assert {"port": 8087, "protocol": "TCP"} in hub["networkPolicy"]["ingress"][0]["ports"]
    egress = values["singleuser"]["networkPolicy"]["egress"]
    assert {"to": [{"podSelector": {}}], "ports": [{"port": 8087, "protocol": "TCP"}]} in egress
    c = _chart_hub_config(values, tmp_path / "etc", monkeypatch)
    (service,) = [svc for svc in c.JupyterHub.services if svc["name"] == "credentials"]
    assert service["url"] == "http://hub:8087"  # users reach it through the proxy (atelier credentials)
    assert service["command"] == [
        sys.executable, "-m", "atelier_hub.services.credentials_server", "--folder", "/srv/jupyterhub/credentials",
        "--git-host", "github.com", "--git-host", "git.example.org", "--listen", "0.0.0.0:8087"]
    (user,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
    assert "access:services!service=credentials" in user["scopes"]
    assert "access:services!service=credentials" in c.AtelierKubeSpawner.server_token_scopes
    assert c.AtelierKubeSpawner.credentials_dir == "/srv/jupyterhub/credentials"  # a removed user's file goes
    rendered = json.loads((tmp_path / "etc" / "deployment.json").read_text())
    assert rendered["services"]["credentials"] == {"url": "http://hub:8087/services/credentials",
                                                   "git_hosts": ["github.com", "git.example.org"]}


def test_personal_ray_clusters_run_their_service_in_the_hub_pod_and_sessions_reach_only_the_heads(
        tmp_path, monkeypatch):
    """`ray_clusters: {enabled: true}`: the hub pod runs the Ray clusters service with the
    Kubernetes backend (its settings and namespace in the command, the API server's
    address handed on), its port open to sessions; sessions get its URL, and egress to
    the heads of Atelier's Ray clusters on Ray's client port only. Off by default."""
    import sys

    assert "ray_clusters" not in json.loads(render_values(load_profiles(PROFILES), DEPLOYMENT, SETTINGS)["hub"][
        "extraFiles"]["atelier-deployment"]["stringData"])["services"]
    settings = SETTINGS.model_copy(update={"ray_clusters": ClusterSettings.model_validate(
        {"ray_clusters": {"enabled": True, "workers_per_user": 3}}).ray_clusters})
    values = render_values(load_profiles(PROFILES), DEPLOYMENT, settings)
    assert schema_problems(values, _schema()) == []
    hub = values["hub"]
    assert {"name": "ray-clusters", "port": 8089, "targetPort": 8089} in hub["service"]["extraPorts"]
    assert {"port": 8089, "protocol": "TCP"} in hub["networkPolicy"]["ingress"][0]["ports"]
    egress = values["singleuser"]["networkPolicy"]["egress"]
    assert {"to": [{"podSelector": {}}], "ports": [{"port": 8089, "protocol": "TCP"}]} in egress
    assert {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "atelier",
                                                    "ray.io/node-type": "head"}}}],
            "ports": [{"port": 10001, "protocol": "TCP"}, {"port": 6379, "protocol": "TCP"},
                      {"port": 8265, "protocol": "TCP"}]} in egress
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    c = _chart_hub_config(values, tmp_path / "etc", monkeypatch)
    (service,) = [svc for svc in c.JupyterHub.services if svc["name"] == "ray_clusters"]
    assert service["url"] == "http://hub:8089"
    command = service["command"]
    assert command[:7] == [sys.executable, "-m", "atelier_hub.services.ray_clusters_kube", "--state",
                           "/srv/jupyterhub", "--profiles", str(tmp_path / "etc" / "profiles")]
    kube = json.loads(command[command.index("--kubernetes") + 1])
    assert kube["workers_per_user"] == 3 and kube["client_port"] == 10001 and kube["namespace"], kube
    assert command[-2:] == ["--listen", "0.0.0.0:8089"]
    assert service["environment"] == {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    (user,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
    assert "access:services!service=ray_clusters" in user["scopes"]
    assert "access:services!service=ray_clusters" in c.AtelierKubeSpawner.server_token_scopes
    rendered = json.loads((tmp_path / "etc" / "deployment.json").read_text())
    assert rendered["services"]["ray_clusters"] == {"url": "http://hub:8089/services/ray_clusters"}
