"""Trino's pieces that need no running server: the service's config rendering, the
installer's layout, and the session side (atelier_lab's settings and `trino` command)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile

import atelier_lab
import pytest
from atelier_hub.install import paths as install_paths
from atelier_hub.install import trino as trino_install
from atelier_hub.services import _process
from atelier_hub.services import trino_etc as etc
from atelier_hub.services import trino_server as server
from atelier_lab import TrinoUnavailable, connect_trino, trino_settings
from atelier_lab._trino_cli import cli_command

ETC = dict(port=18080, node_id="abc123", data_dir="/st/data", etc_dir="/st/etc", trino_home="/opt/trino")


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


# -- the service's etc/ ----------------------------------------------------------------------


def test_single_node_on_loopback_only():
    files = etc.render_etc(**ETC)
    assert props(files["node.properties"]) == {
        "node.environment": "atelier",
        "node.id": "abc123",
        "node.data-dir": "/st/data",
        "node.bind-ip": "127.0.0.1",
        "node.internal-address": "127.0.0.1",
    }
    config = props(files["config.properties"])
    assert config == {
        "coordinator": "true",
        "node-scheduler.include-coordinator": "true",
        "http-server.http.port": "18080",
        "discovery.uri": "http://127.0.0.1:18080",
        "query.max-memory": "512MB",
        "query.max-memory-per-node": "512MB",
        "plugin.dir": "/opt/trino/plugin",
        "catalog.config-dir": "/st/etc/catalog",
        "shutdown.grace-period": "2s",
        "http-server.log.enabled": "false",
        "access-control.config-files": "/st/etc/access-control.properties",
    }


def test_each_user_sees_and_cancels_only_their_own_queries_and_the_service_all():
    files = etc.render_etc(**ETC)
    assert props(files["access-control.properties"]) == {
        "access-control.name": "file", "security.config-file": "/st/etc/rules.json",
        "security.refresh-period": "1s"}
    rules = json.loads(files["rules.json"])
    # First match wins: the service's user (a name no hub user can have) sees and cancels
    # all; everyone else runs queries (and, as Trino always allows, sees and cancels their own).
    assert rules["queries"] == [{"user": "service/trino", "allow": ["execute", "kill", "view"]},
                                {"allow": ["execute"]}]
    assert server.SERVICE_USER == "service/trino"
    assert rules["system_information"] == [{"allow": ["read"]}]


ALL = ["SELECT", "INSERT", "DELETE", "UPDATE", "OWNERSHIP", "GRANT_SELECT"]


def test_users_change_tables_only_in_their_own_schema_and_the_shared_ones_admins_everywhere():
    rules = etc.access_rules(service_user="service/trino", users=["bob", "alice", "root", "j.doe"],
                             admins=["root"], shared_schemas=["team", "lab"])
    assert "catalogs" not in rules  # every catalog, as far as the rules below allow
    assert rules["schemas"] == [
        {"user": "(service/trino|root)", "owner": True},
        {"user": "alice", "schema": "users_alice", "owner": True},
        {"user": "bob", "schema": "users_bob", "owner": True},
        {"user": "j\\.doe", "schema": "users_j_ddoe", "owner": True},
        {"user": "root", "schema": "users_root", "owner": True},
        {"owner": False},
    ]
    assert rules["tables"] == [
        {"user": "(service/trino|root)", "privileges": ALL},
        {"user": "alice", "schema": "users_alice", "privileges": ALL},
        {"user": "bob", "schema": "users_bob", "privileges": ALL},
        {"user": "j\\.doe", "schema": "users_j_ddoe", "privileges": ALL},
        {"user": "root", "schema": "users_root", "privileges": ALL},
        {"schema": "(lab|team)", "privileges": ALL},
        {"privileges": ["SELECT", "GRANT_SELECT"]},  # everyone reads everything
    ]
    assert rules["functions"] == [
        {"user": "(service/trino|root)", "privileges": ["EXECUTE", "GRANT_EXECUTE", "OWNERSHIP"]},
        {"user": "alice", "schema": "users_alice", "privileges": ["EXECUTE", "GRANT_EXECUTE", "OWNERSHIP"]},
        {"user": "bob", "schema": "users_bob", "privileges": ["EXECUTE", "GRANT_EXECUTE", "OWNERSHIP"]},
        {"user": "j\\.doe", "schema": "users_j_ddoe", "privileges": ["EXECUTE", "GRANT_EXECUTE", "OWNERSHIP"]},
        {"user": "root", "schema": "users_root", "privileges": ["EXECUTE", "GRANT_EXECUTE", "OWNERSHIP"]},
        {"schema": "(lab|team)", "privileges": ["EXECUTE", "GRANT_EXECUTE", "OWNERSHIP"]},
        {"privileges": ["EXECUTE", "GRANT_EXECUTE"]},
    ]
    # Hive's procedures change any table: admins only; kill_query stays everyone's (the
    # query rules decide whose queries).
    assert rules["procedures"] == [{"user": "(service/trino|root)", "privileges": ["EXECUTE", "GRANT_EXECUTE"]},
                                   {"catalog": "system", "privileges": ["EXECUTE"]}]


def test_no_user_no_shared_schema_everyone_reads_and_only_the_service_changes():
    rules = etc.access_rules(service_user="service/trino")
    assert rules["schemas"] == [{"user": "(service/trino)", "owner": True}, {"owner": False}]
    assert rules["tables"] == [{"user": "(service/trino)", "privileges": ALL},
                               {"privileges": ["SELECT", "GRANT_SELECT"]}]


@pytest.mark.parametrize(("name", "schema"), [
    ("alice", "users_alice"), ("a_b", "users_a__b"), ("a.b", "users_a_db"), ("a-b", "users_a_hb"),
    ("a_db", "users_a__db"), ("Bo", "users__u000042o"), ("é", "users__u0000e9"), ("ab2", "users_ab2")])
def test_a_users_schema_name(name, schema):
    assert etc.user_schema(name) == schema


def test_two_users_never_share_a_schema():
    # Names that a "replace what is not a letter by _" would fold together.
    names = ["a_b", "a.b", "a-b", "a__b", "a_db", "a.db", "a_hb", "a_u00002eb", "a", "a_", "a__", "a_d", "a."]
    assert len({etc.user_schema(n) for n in names}) == len(names)
    rules = etc.access_rules(service_user="s", users=names)
    assert len(rules["schemas"]) == len(names) + 2


def test_the_shared_schemas_setting_is_checked_naming_the_field_and_the_fix():
    from atelier_hub.services.trino import TrinoService
    from pydantic import ValidationError

    assert TrinoService(url="http://h:1").shared_schemas is None
    assert TrinoService(url="http://h:1", shared_schemas=["team", "lab_2"]).shared_schemas == ["team", "lab_2"]
    for bad, says in (("Team", "lower-case letters"), ("a.b", "lower-case letters"), ("1x", "starting with a letter"),
                      ("users_bob", "each user's own schema"), ("information_schema", "choose another name")):
        with pytest.raises(ValidationError) as err:
            TrinoService(url="http://h:1", shared_schemas=[bad])
        assert "shared_schemas" in str(err.value) and says in str(err.value), str(err.value)


def test_the_shared_schemas_an_admin_wrote_in_the_state_folder_are_kept(tmp_path):
    from atelier_hub.services.trino import SERVICE as TRINO
    from atelier_hub.settings import SettingsError

    class Site:
        root = tmp_path

        def path(self, name):
            return tmp_path / name

    assert TRINO.kept_setting(Site(), "shared_schemas", url="http://x") is None  # no file yet
    (tmp_path / "deployment.json").write_text(json.dumps({"services": {"trino": {"url": "u", "shared_schemas": ["team"]}}}))
    assert TRINO.kept_setting(Site(), "shared_schemas", url="http://x") == ["team"]
    (tmp_path / "deployment.json").write_text(json.dumps({"services": {"trino": {"shared_schemas": ["users_x"]}}}))
    with pytest.raises(SettingsError, match=r"deployment.json: services.trino.shared_schemas: 'users_x' cannot be "
                                            r"shared: users_NAME is each user's own schema"):
        TRINO.kept_setting(Site(), "shared_schemas", url="http://x")


def test_atelier_dev_names_a_bad_shared_schema_in_the_state_folder_and_the_fix(tmp_path, capsys, monkeypatch):
    from atelier_hub import cli

    def start(*args, **kwargs):
        raise AssertionError(f"atelier dev started {args[0][:2]} despite the bad setting")

    monkeypatch.setattr(cli.subprocess, "Popen", start)  # it must stop before the hub starts
    state = tmp_path / "state"
    state.mkdir()
    (state / "deployment.json").write_text(json.dumps({"services": {"trino": {"shared_schemas": ["Team"]}}}))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["dev", "--state", str(state), "--port", str(_process.free_port())])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("deployment.json: services.trino.shared_schemas: 'Team' is not a schema name: use "
                                "lower-case letters, digits and '_', starting with a letter (e.g. team_data)"), err


def test_the_server_command_passes_the_shared_schemas_and_the_service_may_list_the_hubs_users(tmp_path):
    from atelier_hub.services import Services
    from atelier_hub.services.trino import SERVICE as TRINO
    from atelier_hub.services.trino import TrinoService

    class Site:
        root = tmp_path
        ports = {"trino": 18081}

        def path(self, name):
            return tmp_path / name

    services = Services(trino=TrinoService(url="http://127.0.0.1:18081", shared_schemas=["team", "lab"]))
    cmd = TRINO.hub_service(Site(), services)["command"]
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--shared-schema"] == ["team", "lab"]
    assert "--shared-schema" not in TRINO.hub_service(Site(), Services())["command"]
    # The supervisor reads the hub's users (and who is admin) for Trino's rules.
    assert TRINO.hub_scopes == ("list:users", "read:users:name")


# Both spellings count in powers of 1024: the JVM's -Xmx1G and Trino's DataSize 512MB.
_UNITS = {"": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30}


def size_bytes(text: str) -> int:
    number = text.rstrip("kKmMgGbB")
    return int(number) * _UNITS[text[len(number):].upper()]


def test_jvm_config_fits_the_query_memory_and_java_25():
    files = etc.render_etc(**ETC)
    options = etc.jvm_options(files["jvm.config"])
    heaps = [o.removeprefix("-Xmx") for o in options if o.startswith("-Xmx")]
    assert heaps == ["1G"]
    # Trino keeps ~30% of the heap as headroom: the rendered query memory must fit in the rest.
    heap = size_bytes(heaps[0])
    config = props(files["config.properties"])
    for key in ("query.max-memory-per-node", "query.max-memory"):
        assert size_bytes(config[key]) <= 0.7 * heap, (key, config[key], heaps[0])
    assert "--sun-misc-unsafe-memory-access=allow" in options
    assert all(o.startswith("-") for o in options)


def test_without_an_s3_endpoint_only_tpch_is_written():
    # One bad catalog file stops the whole server: none is written half-done.
    for kw in ({}, {"s3_endpoint": "http://127.0.0.1:9000"}, {"bucket": "b"}):
        files = etc.render_etc(**ETC, **kw)
        assert sorted(f for f in files if f.startswith("catalog/")) == ["catalog/tpch.properties"]
    assert etc.render_etc(**ETC)["catalog/tpch.properties"] == "connector.name=tpch\n"


def test_hive_catalog_on_the_shared_bucket_names_keys_only_as_env_references():
    files = etc.render_etc(**ETC, s3_endpoint="http://127.0.0.1:9000", bucket="atelier-shared", region="eu-west-1")
    assert props(files["catalog/hive.properties"]) == {
        "connector.name": "hive",
        "hive.metastore": "file",
        "hive.metastore.catalog.dir": "s3://atelier-shared/hive-metastore",
        "fs.native-s3.enabled": "true",
        "s3.endpoint": "http://127.0.0.1:9000",
        "s3.region": "eu-west-1",
        "s3.path-style-access": "true",
        "s3.aws-access-key": "${ENV:AWS_ACCESS_KEY_ID}",
        "s3.aws-secret-key": "${ENV:AWS_SECRET_ACCESS_KEY}",
        "hive.non-managed-table-writes-enabled": "true",
        "hive.storage-format": "PARQUET",
    }


def test_hive_catalog_without_static_keys_leaves_credentials_to_the_sdk():
    files = etc.render_etc(**ETC, s3_endpoint="http://s3", bucket="b", s3_keys_in_env=False)
    assert "aws-access-key" not in files["catalog/hive.properties"]
    assert "aws-secret-key" not in files["catalog/hive.properties"]


@pytest.mark.parametrize(
    "props_in",
    [
        {"s3.endpoint": "http://x\ncoordinator=false"},  # a value smuggling a second line
        {"a=b": "c"},  # a key that would split differently when read back
    ],
)
def test_properties_refuse_what_would_read_back_differently(props_in):
    with pytest.raises(ValueError):
        etc.render_properties(props_in)


def test_server_command_is_what_trinos_launcher_builds():
    files = etc.render_etc(**ETC)
    cmd = etc.server_command(java="/j/bin/java", trino_home="/opt/trino", etc_dir="/st/etc", files=files,
                             log_file="/st/logs/server.log", main_class="io.trino.server.TrinoServer")
    assert cmd[0] == "/j/bin/java" and cmd[-1] == "io.trino.server.TrinoServer"
    assert cmd[cmd.index("-cp") + 1] == "/opt/trino/lib/*"
    assert "-Dnode.bind-ip=127.0.0.1" in cmd and "-Dnode.id=abc123" in cmd
    assert "-Dconfig=/st/etc/config.properties" in cmd
    assert "-Dlog.levels-file=/st/etc/log.properties" in cmd
    assert "-Dlog.path=/st/logs/server.log" in cmd
    # JVM options come before the main class, all of them.
    assert cmd[1:1 + len(etc.jvm_options(files["jvm.config"]))] == etc.jvm_options(files["jvm.config"])


@pytest.mark.parametrize(
    "release, major",
    [
        ('JAVA_VERSION="25.0.2"\n', 25),
        ('IMPLEMENTOR="x"\nJAVA_VERSION="17.0.12"\n', 17),
        ('JAVA_VERSION="1.8.0_402"\n', 8),  # the old numbering
        ("nothing useful\n", None),
    ],
)
def test_java_major_version(tmp_path, release, major):
    (tmp_path / "release").write_text(release)
    assert server.java_major_version(tmp_path) == major


def test_java_major_version_without_a_release_file(tmp_path):
    assert server.java_major_version(tmp_path / "nope") is None


def test_a_stale_ready_file_is_not_ready(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "ready").write_text(f'{{"url": "http://127.0.0.1:1", "pid": {dead.pid}}}')
    assert server.read_ready(tmp_path) is None
    (tmp_path / "ready").write_text(f'{{"url": "http://127.0.0.1:1", "pid": {os.getpid()}}}')
    assert server.read_ready(tmp_path)["url"] == "http://127.0.0.1:1"


def test_predecessor_cleanup_leaves_a_reused_pid_alone(tmp_path):
    # The recorded group leader's start time no longer matches: a different program
    # got the pid, and it must survive.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        (tmp_path / "server.pgid").write_text(f"{bystander.pid} 1\n")
        _process.end_recorded(tmp_path / "server.pgid")
        assert bystander.poll() is None
        assert not (tmp_path / "server.pgid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_predecessor_cleanup_ends_the_recorded_group(tmp_path):
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    (tmp_path / "server.pgid").write_text(f"{leader.pid} {_process.start_time(leader.pid)}\n")
    t0 = time.monotonic()
    _process.end_recorded(tmp_path / "server.pgid")
    assert leader.wait(5) == -15 and time.monotonic() - t0 < 10


# -- the installer ------------------------------------------------------------------------------


def test_install_layout_follows_atelier_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path))
    p = install_paths.trino_paths()
    assert p.root == tmp_path / "trino-476"
    assert p.home == tmp_path / "trino-476" / "server"
    assert p.plugin("hive") == tmp_path / "trino-476" / "server" / "plugin" / "hive"
    assert p.cli_jar == tmp_path / "trino-476" / "trino-cli.jar"
    assert not install_paths.trino_installed()
    assert install_paths.trino_missing(p) == ["cli", "tpch", "server", "hive"]


def test_parts_land_in_the_cache_maven_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path))
    assert install_paths.maven_jar("io.trino:trino-server-core:476", packaging="tar.gz") == (
        tmp_path / "m2/io/trino/trino-server-core/476/trino-server-core-476.tar.gz")
    assert install_paths.maven_jar("io.trino:trino-cli:476", classifier="executable") == (
        tmp_path / "m2/io/trino/trino-cli/476/trino-cli-476-executable.jar")
    assert set(trino_install._PARTS) == {"cli", "tpch", "server", "hive"}


def test_unpack_moves_the_single_top_folder_into_place(tmp_path):
    tgz = tmp_path / "server.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, data in {"trino-server-core-476/lib/a.jar": b"A", "trino-server-core-476/bin/launcher": b"#!"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    zpath = tmp_path / "tpch.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("trino-tpch-476/tpch.jar", b"T")

    home = tmp_path / "trino-476" / "server"
    trino_install._unpack(tgz, home)
    trino_install._unpack(zpath, home / "plugin" / "tpch")
    assert (home / "lib" / "a.jar").read_bytes() == b"A"
    assert os.access(home / "bin" / "launcher", os.X_OK)
    assert (home / "plugin" / "tpch" / "tpch.jar").read_bytes() == b"T"
    assert (home / ".complete").exists() and (home / "plugin" / "tpch" / ".complete").exists()
    assert sorted(p.name for p in (tmp_path / "trino-476").iterdir()) == ["server"]  # no staging left


def test_unpack_refuses_an_archive_with_several_top_folders(tmp_path):
    zpath = tmp_path / "odd.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("a/x", b"")
        z.writestr("b/y", b"")
    with pytest.raises(SystemExit, match="unexpected archive layout"):
        trino_install._unpack(zpath, tmp_path / "dest")


def test_link_cli_points_a_venv_at_the_cached_jar(tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path / "cache"))
    jar = install_paths.trino_paths().cli_jar
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"jar")
    link = trino_install.link_cli(tmp_path / "venv")
    assert link == tmp_path / "venv" / "share" / "atelier" / "trino-cli.jar"
    assert link.read_bytes() == b"jar"
    assert trino_install.link_cli(tmp_path / "venv") == link  # again: unchanged


# -- the session side: atelier_lab ------------------------------------------------------------------


def test_importing_atelier_lab_loads_no_client_library():
    code = "import sys, atelier_lab; print([m for m in ('trino', 'requests', 'urllib.request') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names():
    public = {n for n in dir(atelier_lab) if not n.startswith("_")}
    assert set(atelier_lab.__all__) == public | {"__version__"}
    assert {"connect_trino", "TrinoUnavailable", "trino_settings"} <= public


@pytest.mark.parametrize(
    "env, config, expected",
    [
        # The session contract: URL variable, user variable, catalog and schema from the file.
        ({"ATELIER_TRINO_URL": "http://127.0.0.1:8080", "ATELIER_USER": "ada"},
         "server=http://127.0.0.1:8080\nuser=ada\ncatalog=hive\nschema=default\n",
         ("http://127.0.0.1:8080", "ada", "hive", "default")),
        # JupyterHub's own variable when Atelier's is missing.
        ({"ATELIER_TRINO_URL": "http://h:1/", "JUPYTERHUB_USER": "bob"}, None, ("http://h:1", "bob", "tpch", "tiny")),
        # Only the CLI file: its server (scheme added) and user.
        ({}, "server=127.0.0.1:8080\nuser=cy\n", ("http://127.0.0.1:8080", "cy", "tpch", "tiny")),
        # A catalog without a schema means no schema, not the tpch default.
        ({"ATELIER_TRINO_URL": "http://h:1", "ATELIER_USER": "d"}, "catalog=hive\n", ("http://h:1", "d", "hive", None)),
    ],
)
def test_trino_settings(tmp_path, env, config, expected):
    if config is not None:
        (tmp_path / "config").write_text(config)
        env = {**env, "TRINO_CONFIG": str(tmp_path / "config")}
    s = trino_settings(env)
    assert (s.url, s.user, s.catalog, s.schema) == expected


def test_connect_trino_without_configuration_says_so(monkeypatch):
    for var in ("ATELIER_TRINO_URL", "TRINO_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TrinoUnavailable, match="not configured for this session.*ATELIER_TRINO_URL"):
        connect_trino()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_trino_to_a_stopped_server_names_the_endpoint_at_once(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("ATELIER_TRINO_URL", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(TrinoUnavailable) as err:
        connect_trino()
    assert time.monotonic() - t0 < 5
    assert f"127.0.0.1:{port}" in str(err.value) and "'trino'" in str(err.value)


def test_connect_trino_to_a_server_that_never_answers_gives_up_in_time(monkeypatch):
    # Accepts connections but never answers: the check is bounded by connect_timeout.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    monkeypatch.setenv("ATELIER_TRINO_URL", f"http://127.0.0.1:{srv.getsockname()[1]}")
    t0 = time.monotonic()
    with pytest.raises(TrinoUnavailable, match="did not answer within 1 s"):
        connect_trino(connect_timeout=1)
    assert time.monotonic() - t0 < 5
    srv.close()


def test_connect_trino_passes_session_settings_and_overrides(monkeypatch, tmp_path):
    (tmp_path / "config").write_text("server=http://127.0.0.1:1\nuser=ada\ncatalog=hive\nschema=default\n")
    monkeypatch.setenv("ATELIER_TRINO_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("ATELIER_USER", "ada")
    monkeypatch.setenv("TRINO_CONFIG", str(tmp_path / "config"))
    conn = connect_trino(check=False, schema="other", session_properties={"query_max_run_time": "1m"})
    assert (conn.host, conn.port, conn.user, conn.catalog, conn.schema) == ("127.0.0.1", 1, "ada", "hive", "other")
    assert conn.request_timeout == (5.0, 60.0)


def test_trino_command_passes_server_and_user_only_without_a_config_file(tmp_path):
    env = {"ATELIER_TRINO_URL": "http://127.0.0.1:8080", "ATELIER_USER": "ada"}
    cmd = cli_command(["--execute", "SELECT 1"], java="java", jar="cli.jar", environ=env)
    assert cmd[0] == "java" and cmd[cmd.index("-jar") + 1] == "cli.jar"
    assert cmd[-6:] == ["--server", "http://127.0.0.1:8080", "--user", "ada", "--execute", "SELECT 1"]
    # An explicit --server wins.
    cmd = cli_command(["--server=http://other:1", "--execute", "SELECT 1"], java="java", jar="j", environ=env)
    assert "http://127.0.0.1:8080" not in cmd
    # With the session's config file, the CLI reads it itself (TRINO_CONFIG).
    (tmp_path / "config").write_text("server=http://127.0.0.1:8080\nuser=ada\n")
    cmd = cli_command(["--execute", "SELECT 1"], java="java", jar="j", environ={**env, "TRINO_CONFIG": str(tmp_path / "config")})
    assert "--server" not in cmd and "--user" not in cmd


def test_trino_command_for_a_stopped_server_fails_fast_naming_it(tmp_path):
    port = _closed_port()
    jar = tmp_path / "trino-cli.jar"
    jar.write_bytes(b"not run")
    env = {**os.environ, "ATELIER_TRINO_URL": f"http://127.0.0.1:{port}", "ATELIER_TRINO_CLI_JAR": str(jar)}
    env.pop("TRINO_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "atelier_lab._trino_cli", "--execute", "SELECT 1"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1
    assert f"not reachable at http://127.0.0.1:{port}" in r.stderr and "'trino'" in r.stderr


def test_trino_command_without_the_jar_says_how_to_get_it(tmp_path):
    env = {**os.environ, "ATELIER_TRINO_CLI_JAR": str(tmp_path / "missing.jar")}
    r = subprocess.run([sys.executable, "-m", "atelier_lab._trino_cli", "--version"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1 and "make install" in r.stderr


def test_doctests_of_the_trino_modules():
    import doctest

    import atelier_lab._trino as lab_trino
    import atelier_lab._trino_cli as lab_cli

    for module in (etc, server, _process, trino_install, install_paths, lab_trino, lab_cli):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__



def test_with_a_jwt_key_trino_takes_only_signed_requests_and_no_plain_http_login():
    files = etc.render_etc(**ETC, jwt_key_file="/st/secret/jwt-hmac")
    config = dict(line.split("=", 1) for line in files["config.properties"].splitlines())
    assert config["http-server.authentication.type"] == "JWT"
    assert config["http-server.authentication.jwt.key-file"] == "/st/secret/jwt-hmac"
    assert config["http-server.authentication.allow-insecure-over-http"] == "false"
    assert config["http-server.process-forwarded"] == "true"
    assert config["internal-communication.shared-secret"] == "${ENV:TRINO_INTERNAL_SECRET}"
    assert "http-server.authentication.type" not in etc.render_etc(**ETC)["config.properties"]
