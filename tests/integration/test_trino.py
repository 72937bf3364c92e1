"""Trino, for real: the hub-managed launcher on its own, then sessions of the embedded stack.

Part one starts the S3 server (versitygw) and ``python -m atelier_hub.services.trino_server``
directly, as the hub does, and checks the server from outside: TPC-H, a Parquet table
on the shared bucket read and written through the hive catalog, loopback only, no
secret on disk, the CLI, a crash (the launcher exits non-zero), a restart that keeps
the tables, and a clean stop. Part two runs in a session of the real stack: the
Python client through ``atelier_lab.connect_trino()``, ``%sql`` (jupysql) and the
``trino`` CLI all reach the hub's Trino with no set-up, and a table Spark wrote to S3 is
queried there.

Every wait is bounded; timings and memory go to ``test-output/trino-metrics.json``.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from atelier_hub.install.paths import tool_path, trino_installed
from atelier_hub.services.trino_front import sign_jwt
from atelier_hub.services.trino_server import SERVICE_USER, TrinoError, local_token, query, read_ready
from kernel import run_code
from stack import OUTPUT, REPO, VENV_BIN, free_port, tail

pytestmark = pytest.mark.integration

BUCKET = "atelier-shared"
# Trino needs 16-25 s to answer a first query on a quiet machine, 60-90 s on two busy cores.
READY_TIMEOUT = 420
METRICS = OUTPUT / "trino-metrics.json"


def record(**values) -> None:
    OUTPUT.mkdir(exist_ok=True)
    data = json.loads(METRICS.read_text()) if METRICS.exists() else {}
    data.update(values)
    METRICS.write_text(json.dumps(data, indent=2))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and fields[2] == str(pgid):
            pids.append(int(stat.parent.name))
    return pids


def wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.2)
    return False


class Standalone:
    """versitygw plus the Trino launcher, started the way the hub starts them."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / "trino"
        self.s3_dir = root / "s3"
        (self.s3_dir / BUCKET).mkdir(parents=True)  # a folder is a bucket to versitygw
        self.keys = {"AWS_ACCESS_KEY_ID": "atelier" + secrets.token_hex(6),
                     "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
        self.s3_port = free_port()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        OUTPUT.mkdir(exist_ok=True)
        self.log = OUTPUT / "trino-standalone.log"
        self.gw: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def s3(self):
        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=self.keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.keys["AWS_SECRET_ACCESS_KEY"])

    def start_s3(self) -> None:
        env = {**os.environ, "ROOT_ACCESS_KEY_ID": self.keys["AWS_ACCESS_KEY_ID"],
               "ROOT_SECRET_ACCESS_KEY": self.keys["AWS_SECRET_ACCESS_KEY"]}
        self.gw = subprocess.Popen([str(tool_path("versitygw")), "--port", f"127.0.0.1:{self.s3_port}", "--quiet",
                                    "posix", str(self.s3_dir)], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)

    def start(self) -> float:
        """Start the launcher; return seconds until a real query succeeded."""
        # As the hub's service entry: keys only in the environment, not on the command line.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JUPYTERHUB_"))}
        env.update(self.keys, AWS_REGION="us-east-1")
        cmd = [sys.executable, "-m", "atelier_hub.services.trino_server", "--state", str(self.state),
               "--port", str(self.port), "--s3-endpoint", self.s3_endpoint, "--bucket", BUCKET,
               # No hub here, so no user has a schema of their own: hive.default is shared.
               "--shared-schema", "default"]
        t0 = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        while read_ready(self.state) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Trino launcher exited {self.proc.returncode}:\n{tail(self.log)}")
            if time.monotonic() - t0 > READY_TIMEOUT:
                raise RuntimeError(f"Trino not ready in {READY_TIMEOUT} s:\n{tail(self.log)}\n"
                                   f"server log:\n{tail(self.state / 'logs' / 'server.log')}")
            time.sleep(0.5)
        return time.monotonic() - t0

    @property
    def java_pid(self) -> int:
        return int((self.state / "server.pgid").read_text().split()[0])

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    if not tool_path("versitygw").exists():
        pytest.fail(f"versitygw is not installed at {tool_path('versitygw')}: run `make install`")
    if not trino_installed():
        pytest.fail("Trino is not installed in the cache: run `make install` (PYTHONPATH=hub python3 -m atelier_hub.install)")
    s = Standalone(tmp_path_factory.mktemp("trino-standalone"))
    STANDALONE_STATE[:] = [s.state]
    s.start_s3()
    try:
        ready_s = s.start()
        record(standalone_ready_s=round(ready_s, 1), standalone_java_rss_mib=rss_mib(s.java_pid),
               standalone_launcher_rss_mib=rss_mib(s.proc.pid))
        yield s
    finally:
        s.stop()
        if s.gw is not None:
            s.gw.terminate()
            s.gw.wait(10)


def sql(url: str, statement: str, user: str = "ada", *, state: Path | None = None) -> list:
    """Straight to a standalone server: with a JWT signed with its per-start key, as only
    the front (and whoever reads the server's state folder) can send."""
    state = state if state is not None else STANDALONE_STATE[0]
    return query(url, statement, user=user, token=local_token(state, user), timeout=120)


STANDALONE_STATE: list[Path] = []


# -- part one: the launcher on its own ----------------------------------------------------------


def test_tpch_answers_the_token_holder(standalone):
    assert sql(standalone.url, "SELECT count(*) FROM tpch.tiny.nation") == [[25]]
    assert sql(standalone.url, "SELECT current_user", user="ada") == [["ada"]]


def test_trino_itself_refuses_whoever_lacks_its_per_start_key(standalone):
    # Anyone on this machine can find the port; naming a user gets them nothing.
    with pytest.raises(TrinoError, match="HTTP 403.*Authentication over HTTP is not enabled"):
        query(standalone.url, "SELECT current_user", user="ada", timeout=30)  # X-Trino-User alone
    for token in (sign_jwt(b"not-the-key" * 4, subject="ada"), "not-a-jwt"):
        with pytest.raises(TrinoError, match="HTTP 401"):
            query(standalone.url, "SELECT current_user", user="ada", token=token, timeout=30)
    key_file = standalone.state / "secret" / "jwt-hmac"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert query(standalone.url, "SELECT current_user", user="ada",
                 token=local_token(standalone.state, "ada")) == [["ada"]]


def test_the_server_listens_on_loopback_only(standalone):
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port = local.split(":")
            if state == "0A" and int(port, 16) == standalone.port:  # LISTEN
                listening.append(addr)
    # 127.0.0.1 as IPv4 (0100007F) or IPv4-mapped IPv6 (::ffff:127.0.0.1).
    assert listening and all(a in ("0100007F", "0000000000000000FFFF00000100007F") for a in listening), listening


def test_no_secret_is_written_to_disk_or_logs(standalone):
    secret = standalone.keys["AWS_SECRET_ACCESS_KEY"].encode()
    for path in standalone.state.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    assert secret not in standalone.log.read_bytes()
    # ... and yet Hive reaches S3 with it (the next test reads and writes a table there).


def test_hive_reads_and_writes_a_parquet_table_on_the_shared_bucket(standalone):
    # Written the way Spark writes a table: a folder of Parquet parts and a _SUCCESS marker.
    s3 = standalone.s3()
    table = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"], "score": [0.5, 1.5, 2.5]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    s3.put_object(Bucket=BUCKET, Key="tables/scores/part-00000.parquet", Body=buf.getvalue())
    s3.put_object(Bucket=BUCKET, Key="tables/scores/_SUCCESS", Body=b"")

    sql(standalone.url, "CREATE TABLE hive.default.scores (id bigint, name varchar, score double) "
                        f"WITH (external_location = 's3://{BUCKET}/tables/scores', format = 'PARQUET')")
    assert sql(standalone.url, "SELECT count(*), sum(score) FROM hive.default.scores") == [[3, 4.5]]

    # ... and Trino writes into the same folder, readable by anything that reads Parquet.
    sql(standalone.url, "INSERT INTO hive.default.scores VALUES (4, 'd', 3.5)")
    assert sql(standalone.url, "SELECT name FROM hive.default.scores ORDER BY id") == [["a"], ["b"], ["c"], ["d"]]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="tables/scores/")["Contents"]]
    new = [k for k in keys if not k.endswith(("part-00000.parquet", "_SUCCESS"))]
    assert len(new) == 1, keys
    written = pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=new[0])["Body"].read()))
    assert written.column("name").to_pylist() == ["d"]
    # The table definitions live on the bucket too.
    assert any(o["Key"].startswith("hive-metastore/default/scores/")
               for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="hive-metastore/")["Contents"])


def test_a_schema_not_shared_is_read_only_to_a_user_it_is_not_the_own_of(standalone):
    # No hub: ada has no schema of her own; she reads everything, changes only hive.default.
    with pytest.raises(TrinoError, match="Access Denied: Cannot create schema hive.other"):
        sql(standalone.url, "CREATE SCHEMA hive.other")
    sql(standalone.url, "CREATE SCHEMA hive.other", user=SERVICE_USER)
    with pytest.raises(TrinoError, match="Access Denied: Cannot create table hive.other.t"):
        sql(standalone.url, "CREATE TABLE hive.other.t (id bigint)")
    sql(standalone.url, "CREATE TABLE hive.other.t AS SELECT 1 AS id", user=SERVICE_USER)
    assert sql(standalone.url, "SELECT id FROM hive.other.t") == [[1]]
    assert ["other"] in sql(standalone.url, "SHOW SCHEMAS FROM hive")


def test_the_front_alone_before_a_coordinator_serves_its_rules_and_asks_for_a_hub_token(standalone, tmp_path):
    # Cluster mode's process (the hub pod's), here before the standalone coordinator,
    # with no hub: no user yet, and every query is refused for want of a hub token.
    front, rules_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "AWS_"))}
    cmd = [sys.executable, "-m", "atelier_hub.services.trino_server", "--state", str(tmp_path / "front"),
           "--backend", standalone.url, "--jwt-key-file", str(standalone.state / "secret" / "jwt-hmac"),
           "--front-port", str(front), "--rules-port", str(rules_port), "--shared-schema", "team"]
    with open(tmp_path / "front.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rules_port}/rules.json", timeout=5) as r:
                    rules = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "front.log").read_text()
                time.sleep(0.5)
        assert rules["schemas"] == [{"user": "(service/trino)", "owner": True}, {"owner": False}]
        assert rules["tables"][-2:] == [{"schema": "(team)", "privileges": [
            "SELECT", "INSERT", "DELETE", "UPDATE", "OWNERSHIP", "GRANT_SELECT"]},
            {"privileges": ["SELECT", "GRANT_SELECT"]}]
        with pytest.raises(TrinoError, match="HTTP 401"):
            query(f"http://127.0.0.1:{front}", "SELECT 1", user="ada", timeout=30)
    finally:
        proc.terminate()
        proc.wait(10)


def put_parquet(s3, prefix: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/part-00000.parquet", Body=buf.getvalue())


def test_when_trino_dies_its_supervisor_starts_it_again_and_the_tables_stay(standalone):
    # This test's own table (no other test's rows), defined before the crash.
    put_parquet(standalone.s3(), "tables/kept", pa.table({"id": pa.array([10, 20, 30], pa.int64())}))
    sql(standalone.url, "CREATE TABLE hive.default.kept (id bigint) "
                        f"WITH (external_location = 's3://{BUCKET}/tables/kept', format = 'PARQUET')")
    assert sql(standalone.url, "SELECT count(*), sum(id) FROM hive.default.kept") == [[3, 60]]
    node_id = (standalone.state / "node-id").read_text()
    java = standalone.java_pid
    os.kill(java, signal.SIGKILL)
    assert wait_gone(java, 10)
    # The supervisor notices within a second and starts a new JVM itself (the hub's own
    # restart of an exited service waits up to 30 s); it does not exit.
    t0 = time.monotonic()
    deadline = t0 + READY_TIMEOUT
    while True:
        info = read_ready(standalone.state)
        if info is not None and info["pid"] != java:
            break
        assert standalone.proc.poll() is None, f"the supervisor exited:\n{tail(standalone.log)}"
        assert time.monotonic() < deadline, f"Trino not back in {READY_TIMEOUT} s:\n{tail(standalone.log)}"
        time.sleep(0.5)
    record(standalone_restart_ready_s=round(time.monotonic() - t0, 1))
    assert standalone.java_pid == info["pid"]
    assert "the server stopped" in tail(standalone.log)
    assert (standalone.state / "node-id").read_text() == node_id
    assert sql(standalone.url, "SELECT count(*), sum(id) FROM hive.default.kept") == [[3, 60]]


def test_a_launcher_killed_hard_takes_its_server_along(standalone):
    java = standalone.java_pid
    standalone.proc.kill()  # SIGKILL: no handler runs; PR_SET_PDEATHSIG ends the JVM
    standalone.proc.wait(10)
    assert wait_gone(java, 60), f"the JVM {java} outlived its launcher"
    ready_s = standalone.start()  # the stale pid and ready files do not confuse a new start
    assert sql(standalone.url, "SELECT count(*) FROM tpch.tiny.region") == [[5]]
    record(standalone_second_restart_ready_s=round(ready_s, 1))


def test_sigterm_stops_the_server_and_leaves_nothing_behind(standalone):
    java = standalone.java_pid
    t0 = time.monotonic()
    assert standalone.stop(timeout=60) == 0
    record(standalone_stop_s=round(time.monotonic() - t0, 1))
    assert wait_gone(java, 5)
    assert not (standalone.state / "server.pgid").exists() and read_ready(standalone.state) is None


# -- part two: sessions of the embedded stack ------------------------------------------------------

SESSION = r"""
import json, os, re, subprocess, time
import boto3, pyarrow as pa, pyarrow.parquet as pq
import atelier_lab

# The URL's password is the session's hub token: shown masked.
out = {"url": os.environ.get("ATELIER_TRINO_URL"),
       "database_url": re.sub(r":[^:@/]+@", ":***@", os.environ.get("DATABASE_URL", ""))}
cur = atelier_lab.connect_trino().cursor()          # no argument: the session's settings
cur.execute("SELECT (SELECT count(*) FROM tpch.tiny.nation), current_user")
(out["client"], out["user"]), = cur.fetchall()

ip = get_ipython()
ip.run_line_magic("load_ext", "sql")                # jupysql connects to DATABASE_URL itself
out["sql"] = ip.run_line_magic("sql", "SELECT count(*) AS n FROM tpch.tiny.nation").dict()["n"][0]
out["sql_cell"] = ip.run_cell_magic("sql", "", "SELECT count(*) AS n FROM region").dict()["n"][0]

cli = subprocess.run(["trino", "--execute", "SELECT count(*) FROM nation"], capture_output=True, text=True,
                     timeout=180)                   # the CLI reads TRINO_CONFIG
out["cli"], out["cli_err"] = cli.stdout.strip(), cli.stderr[-500:]

# A table written into the shared bucket from the session, queried through Trino.
bucket = os.environ["ATELIER_SHARED_BUCKET"]
buf = pa.BufferOutputStream()
pq.write_table(pa.table({"id": pa.array(range(1, 11), pa.int64())}), buf)
boto3.client("s3").put_object(Bucket=bucket, Key="trino-test/from-session/part-0.parquet",
                              Body=buf.getvalue().to_pybytes())
cur.execute("CREATE TABLE IF NOT EXISTS hive.users_alice.from_session (id bigint) "
            f"WITH (external_location = 's3://{bucket}/trino-test/from-session', format = 'PARQUET')")
cur.fetchall()
cur.execute("SELECT sum(id) FROM hive.users_alice.from_session")
out["hive"] = cur.fetchall()[0][0]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def stack_trino(stack):
    """The stack's Trino URL, once a real query succeeds there (the hub does not wait
    for Trino: it has no route through the hub's proxy)."""
    deployment = json.loads((stack.state / "deployment.json").read_text())
    trino = (deployment.get("services") or {}).get("trino")
    assert trino, "the embedded stack configures no Trino service (services.trino in deployment.json)"
    deadline = time.monotonic() + READY_TIMEOUT
    t0 = time.monotonic()
    last = None
    while time.monotonic() < deadline:
        try:
            if query(trino["url"], "SELECT count(*) FROM tpch.tiny.nation", timeout=15,
                     token=stack.admin_token) == [[25]]:
                record(stack_trino_wait_after_hub_ready_s=round(time.monotonic() - t0, 1))
                return trino
        except Exception as exc:  # noqa: BLE001 - shown when the wait runs out
            last = exc
        time.sleep(1)
    pytest.fail(f"the stack's Trino at {trino['url']} answered no query in {READY_TIMEOUT} s ({last}):\n"
                f"{stack.hub_log()}")


@pytest.fixture(scope="module")
def session(stack, alice, stack_trino):
    """alice's server on the default profile, for the tests that query Trino from a session."""
    model = stack.spawn("alice", None, server="trino")
    yield model
    stack.stop_server("alice", "trino")


def test_a_session_reaches_trino_through_the_client_sql_magic_and_cli(stack, alice, stack_trino, session):
    t0 = time.monotonic()
    raw = run_code(stack.url, session["url"], alice["token"], SESSION, timeout=400)
    record(session_trino_snippet_s=round(time.monotonic() - t0, 1))
    out = json.loads(raw.strip().splitlines()[-1])
    port = stack_trino["url"].rsplit(":", 1)[1]
    assert out["url"] == stack_trino["url"]
    assert out["database_url"].startswith(f"trino://alice:***@127.0.0.1:{port}/")
    assert (out["client"], out["user"]) == (25, "alice")
    assert (out["sql"], out["sql_cell"]) == (25, 5)
    assert out["cli"] == '"25"', out["cli_err"]
    assert out["hive"] == 55


def test_a_table_written_by_spark_is_queryable_from_trino(stack, alice, stack_trino, session):
    code = """
import os
from pyspark.sql import SparkSession
import atelier_lab
bucket = os.environ["ATELIER_SHARED_BUCKET"]
spark = SparkSession.builder.getOrCreate()
spark.createDataFrame([(i, i % 3) for i in range(12)], ["id", "grp"]).write.mode("overwrite").parquet(
    f"s3a://{bucket}/tables/from_spark")
spark.stop()
cur = atelier_lab.connect_trino().cursor()
cur.execute("DROP TABLE IF EXISTS hive.users_alice.from_spark")
cur.fetchall()
cur.execute(f"CREATE TABLE hive.users_alice.from_spark (id bigint, grp bigint) "
            f"WITH (external_location = 's3://{bucket}/tables/from_spark', format = 'PARQUET')")
cur.fetchall()
cur.execute("SELECT count(*), sum(id) FROM hive.users_alice.from_spark WHERE grp = 0")
print(cur.fetchall())
"""
    out = run_code(stack.url, session["url"], alice["token"], code, timeout=500)
    assert out.strip().splitlines()[-1] == "[[4, 18]]"


def test_the_trino_cli_reads_the_trino_config_file_and_runs_as_the_tokens_user(stack, alice, stack_trino,
                                                                               tmp_path):
    # The config claims bob; the token is alice's: Trino sees alice.
    config = tmp_path / "config"
    config.write_text(f"server={stack_trino['url']}\nuser=bob\ncatalog=tpch\nschema=tiny\n")
    env = {**os.environ, "TRINO_CONFIG": str(config), "JUPYTERHUB_API_TOKEN": alice["token"]}
    t0 = time.monotonic()
    r = subprocess.run([str(VENV_BIN / "trino"), "--execute", "SELECT (SELECT count(*) FROM nation), current_user"],
                       capture_output=True, text=True, env=env, timeout=180)
    record(cli_query_s=round(time.monotonic() - t0, 1))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '"25","alice"'
    assert "WARNING" not in r.stderr  # no terminal-library noise in scripted use
    # Without a hub token the front refuses, whatever user the config names.
    env.pop("JUPYTERHUB_API_TOKEN")
    r = subprocess.run([str(VENV_BIN / "trino"), "--execute", "SELECT current_user"],
                       capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode != 0 and "401" in r.stderr + r.stdout, r.stderr
