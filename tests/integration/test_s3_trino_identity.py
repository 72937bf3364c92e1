"""Every user is their own in S3 and Trino: a second real user (ben) attacks from his
own session of the real stack, and the assertions are the attacks failing.

- S3: ben's session holds ben's keys and no one else's; with them he reads and writes
  the shared bucket, but cannot write MLflow's artifact bucket nor touch alice's
  private prefix ``users/alice/``; once removed (``atelier users remove``) his keys stop
  working; the store's access log names who wrote what.
- Trino: ben is ben through the Python client and the CLI, even when he says he is
  alice, and Trino's own (private) port refuses him whatever he sends; he neither sees
  nor cancels alice's queries, by any spelling of the path (a hub admin does both).
- Removal: once ben is removed, his token stops at MLflow, Trino and the culler
  within 10 s, as his S3 keys stop at once.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import boto3
import pytest
from atelier_hub.services.trino_server import TrinoError, query
from botocore.exceptions import ClientError
from kernel import run_code
from stack import VENV_BIN, raw_request

pytestmark = pytest.mark.integration

SHARED, ARTIFACTS = "atelier-shared", "atelier-mlflow"
TRINO_READY_TIMEOUT = 420

ALICE = r"""
import boto3, os
s3 = boto3.client("s3")
s3.put_object(Bucket="atelier-shared", Key="users/alice/diary.txt", Body=b"alice's own")
s3.put_object(Bucket="atelier-shared", Key="from-alice/hello.txt", Body=b"hello from alice")
print(os.environ["AWS_ACCESS_KEY_ID"])
"""

BOB = r"""
import glob, json, os, subprocess, urllib.error, urllib.request
import boto3, botocore
s3 = boto3.client("s3")                      # no argument: the session's own keys

def attempt(call):
    try:
        call()
        return "ok"
    except botocore.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"]

out = {"key": os.environ.get("AWS_ACCESS_KEY_ID")}
out["shared_write"] = attempt(lambda: s3.put_object(Bucket="atelier-shared", Key="from-ben/hi.txt", Body=b"ben"))
out["shared_read"] = s3.get_object(Bucket="atelier-shared", Key="from-alice/hello.txt")["Body"].read().decode()
out["artifacts_write"] = attempt(lambda: s3.put_object(Bucket="atelier-mlflow", Key="0/evil", Body=b"x"))
out["alice_write"] = attempt(lambda: s3.put_object(Bucket="atelier-shared", Key="users/alice/evil", Body=b"x"))
out["alice_read"] = attempt(lambda: s3.get_object(Bucket="atelier-shared", Key="users/alice/diary.txt"))
out["alice_delete"] = attempt(lambda: s3.delete_object(Bucket="atelier-shared", Key="users/alice/diary.txt"))
out["alice_list"] = attempt(lambda: s3.list_objects_v2(Bucket="atelier-shared", Prefix="users/alice/"))
out["alice_copy"] = attempt(lambda: s3.copy_object(Bucket="atelier-shared", Key="from-ben/stolen",
                                                   CopySource={"Bucket": "atelier-shared",
                                                               "Key": "users/alice/diary.txt"}))
out["own_copy"] = attempt(lambda: s3.copy_object(Bucket="atelier-shared", Key="from-ben/copy.txt",
                                                 CopySource={"Bucket": "atelier-shared", "Key": "from-ben/hi.txt"}))
out["own_private"] = attempt(lambda: s3.put_object(Bucket="atelier-shared", Key="users/ben/mine", Body=b"b"))

import atelier_lab
cur = atelier_lab.connect_trino(user="alice").cursor()     # claims to be alice
cur.execute("SELECT current_user")
out["trino_client"] = cur.fetchall()[0][0]
cli = subprocess.run(["trino", "--user", "alice", "--execute", "SELECT current_user"], capture_output=True,
                     text=True, timeout=180)
out["trino_cli"], out["trino_cli_err"] = cli.stdout.strip(), cli.stderr[-400:]

def direct(headers):
    req = urllib.request.Request(f"http://127.0.0.1:{PRIVATE_PORT}/v1/statement", data=b"SELECT current_user",
                                 headers={"X-Trino-User": "alice", **headers}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return "unreachable"  # a container session has a network of its own
out["direct_plain"] = direct({})
out["direct_forged"] = direct({"X-Forwarded-Proto": "https", "Authorization": "Bearer e30.e30.x"})

out["env"] = dict(os.environ)
out["files"] = {p: open(p).read() for p in glob.glob("/etc/atelier/session/**", recursive=True)
                if os.path.isfile(p)}
print(json.dumps(out))
"""


def _client(keys: dict):
    port = json.loads(_STATE[0].joinpath("atelier.json").read_text())["ports"]["s3"]
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"])


_STATE: list = []


@pytest.fixture(scope="module")
def ben(stack):
    password = stack.add_user("ben")
    return {"name": "ben", "password": password, "token": stack.user_token("ben")}


@pytest.fixture(scope="module")
def trino_private_port(stack):
    """Trino's own port, as any local process finds it (here: from its ready file)."""
    ready = stack.state / "trino" / "ready"
    deadline = time.monotonic() + TRINO_READY_TIMEOUT
    while not ready.exists():
        assert time.monotonic() < deadline, f"Trino not ready in {TRINO_READY_TIMEOUT} s:\n{stack.hub_log()}"
        time.sleep(1)
    return int(json.loads(ready.read_text())["url"].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def attack(stack, alice, ben, trino_private_port):
    """Alice writes her objects, then ben runs the attacks from his own session."""
    _STATE[:] = [stack.state]
    model = stack.spawn("alice", None, server="ident")
    try:
        alice_key = run_code(stack.url, model["url"], alice["token"], ALICE).strip()
    finally:
        stack.stop_server("alice", "ident")
    model = stack.spawn("ben", None, server="ident")
    try:
        raw = run_code(stack.url, model["url"], ben["token"], BOB.replace("PRIVATE_PORT", str(trino_private_port)),
                       timeout=400)
    finally:
        stack.stop_server("ben", "ident")
    out = json.loads(raw.strip().splitlines()[-1])
    out["alice_key"] = alice_key
    return out


def _keys(stack, kind: str, name: str) -> dict:
    return json.loads((stack.state / "secrets" / "s3-accounts" / kind / f"{name}.json").read_text())


def test_each_users_sessions_hold_their_own_keys_and_no_one_elses(stack, attack):
    assert attack["alice_key"] == "user-alice" and attack["key"] == "user-ben"
    ben_keys = _keys(stack, "users", "ben")
    assert attack["env"]["AWS_SECRET_ACCESS_KEY"] == ben_keys["secret_access_key"]
    others = [json.loads((stack.state / "secrets" / "s3.json").read_text())["secret_access_key"],
              _keys(stack, "users", "alice")["secret_access_key"],
              _keys(stack, "services", "trino")["secret_access_key"],
              _keys(stack, "services", "mlflow")["secret_access_key"]]
    seen = json.dumps(attack["env"]) + json.dumps(attack["files"])
    for secret in others:
        assert secret not in seen
    # The settings every session reads hold no key at all.
    deployment = json.loads((stack.state / "deployment.json").read_text())
    assert deployment["services"]["s3"]["secret_access_key"] is None


def test_the_shared_bucket_is_read_and_written_by_everyone(stack, attack):
    assert attack["shared_write"] == "ok" and attack["shared_read"] == "hello from alice"
    assert attack["own_copy"] == "ok"
    alice = _client(_keys(stack, "users", "alice"))
    assert alice.get_object(Bucket=SHARED, Key="from-ben/hi.txt")["Body"].read() == b"ben"


def test_another_users_keys_cannot_write_the_artifact_bucket_nor_touch_a_private_prefix(stack, attack):
    assert attack["artifacts_write"] == "AccessDenied"
    for what in ("alice_write", "alice_read", "alice_delete", "alice_list", "alice_copy"):
        assert attack[what] == "AccessDenied", (what, attack[what])
    assert attack["own_private"] == "ok"
    # Alice's object is untouched, nothing landed where ben aimed.
    s3 = stack.s3()
    assert s3.get_object(Bucket=SHARED, Key="users/alice/diary.txt")["Body"].read() == b"alice's own"
    for bucket, key in ((SHARED, "users/alice/evil"), (SHARED, "from-ben/stolen"), (ARTIFACTS, "0/evil")):
        with pytest.raises(ClientError):
            s3.head_object(Bucket=bucket, Key=key)


def test_writes_are_attributed_to_the_users_account(stack, attack):
    log = (stack.state / "logs" / "s3-access.log").read_text()
    line = next(entry for entry in log.splitlines() if "from-ben/hi.txt" in entry and "PutObject" in entry)
    assert " user-ben " in line
    secrets = [_keys(stack, "users", n)["secret_access_key"] for n in ("alice", "ben")]
    assert not any(s in log for s in secrets)


def test_trino_sees_ben_as_ben_even_when_he_claims_to_be_alice(attack):
    assert attack["trino_client"] == "ben"
    assert attack["trino_cli"] == '"ben"', attack["trino_cli_err"]


def test_trino_itself_refuses_a_connection_that_bypasses_the_front(stack, attack, trino_private_port):
    front = json.loads((stack.state / "deployment.json").read_text())["services"]["trino"]["url"]
    assert not front.endswith(f":{trino_private_port}")  # sessions are given the front only
    if stack.mode == "container":
        # ben's session does not even reach the private port: it has a network of its own.
        assert attack["direct_plain"] == attack["direct_forged"] == "unreachable", attack
    else:
        assert (attack["direct_plain"], attack["direct_forged"]) == (403, 401), attack
    # Any process of the machine does reach it: Trino itself refuses it there.
    assert _direct(trino_private_port, {}) == 403  # "Authentication over HTTP is not enabled"
    forged = {"X-Forwarded-Proto": "https", "Authorization": "Bearer e30.e30.x"}
    assert _direct(trino_private_port, forged) == 401  # a JWT not signed with the per-start key


def _direct(port: int, headers: dict) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/statement", data=b"SELECT current_user",
                                 headers={"X-Trino-User": "alice", **headers}, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


# -- whose tables one changes: Trino's own rules ------------------------------------------------


def _as(stack, who: dict, sql: str) -> list:
    """``sql`` through the front with ``who``'s hub token (the client claims alice)."""
    return query(_front(stack), sql, user="alice", token=who["token"], timeout=120)


@pytest.fixture(scope="module")
def tables(stack, alice, hub_admin, trino_private_port):
    """alice's table in her own schema, and a shared table (made by the hub admin in
    hive.default, which the stack names no shared schema for)."""
    _as(stack, alice, "CREATE TABLE hive.users_alice.mine AS SELECT 1 AS id")
    _as(stack, hub_admin, "CREATE TABLE hive.default.common AS SELECT 7 AS id")
    yield
    _as(stack, hub_admin, "DROP TABLE IF EXISTS hive.users_alice.mine")
    _as(stack, hub_admin, "DROP TABLE IF EXISTS hive.default.common")


def test_ben_reads_alices_table_but_neither_changes_nor_drops_it_nor_a_shared_table(stack, ben, tables):
    assert _as(stack, ben, "SELECT id FROM hive.users_alice.mine") == [[1]]
    assert ["mine"] in _as(stack, ben, "SHOW TABLES FROM hive.users_alice")
    assert _as(stack, ben, "SELECT id FROM hive.default.common") == [[7]]
    denied = {
        "DROP TABLE hive.users_alice.mine": "Access Denied: Cannot drop table hive.users_alice.mine",
        "INSERT INTO hive.users_alice.mine VALUES 2": "Access Denied: Cannot insert into table hive.users_alice.mine",
        "DELETE FROM hive.users_alice.mine": "Access Denied: Cannot delete from table hive.users_alice.mine",
        "ALTER TABLE hive.users_alice.mine RENAME TO hive.users_alice.gone":
            "Access Denied: Cannot rename table from hive.users_alice.mine to hive.users_alice.gone",
        "ALTER TABLE hive.users_alice.mine ADD COLUMN x bigint":
            "Access Denied: Cannot add a column to table hive.users_alice.mine",
        "CREATE TABLE hive.users_alice.planted AS SELECT 1 AS id":
            "Access Denied: Cannot create table hive.users_alice.planted",
        "CREATE SCHEMA hive.elsewhere": "Access Denied: Cannot create schema hive.elsewhere",
        "DROP TABLE hive.default.common": "Access Denied: Cannot drop table hive.default.common",
        "INSERT INTO hive.default.common VALUES 8": "Access Denied: Cannot insert into table hive.default.common",
        "CREATE TABLE hive.default.planted (id bigint)": "Access Denied: Cannot create table hive.default.planted",
    }
    for sql, says in denied.items():
        with pytest.raises(TrinoError) as err:
            _as(stack, ben, sql)
        assert str(err.value).startswith(says), (sql, str(err.value))
    # Nothing changed.
    assert _as(stack, ben, "SELECT id FROM hive.users_alice.mine") == [[1]]
    assert _as(stack, ben, "SELECT id FROM hive.default.common") == [[7]]
    assert ["planted"] not in _as(stack, ben, "SHOW TABLES FROM hive.default")


def test_ben_has_his_own_schema_made_for_him_and_changes_his_tables_there(stack, alice, ben, hub_admin, tables):
    # Made by the service when ben was added, before any query of his.
    assert ["users_ben"] in _as(stack, ben, "SHOW SCHEMAS FROM hive")
    _as(stack, ben, "CREATE TABLE hive.users_ben.his AS SELECT 1 AS id")
    _as(stack, ben, "INSERT INTO hive.users_ben.his VALUES 2")
    assert _as(stack, ben, "SELECT sum(id) FROM hive.users_ben.his") == [[3]]
    _as(stack, ben, "DROP TABLE hive.users_ben.his")
    # ... and alice may not change his (the same rules, the other way round).
    _as(stack, ben, "CREATE TABLE hive.users_ben.kept AS SELECT 5 AS id")
    with pytest.raises(TrinoError, match="Access Denied: Cannot drop table hive.users_ben.kept"):
        _as(stack, alice, "DROP TABLE hive.users_ben.kept")
    # The hub admin may (admins keep every right).
    _as(stack, hub_admin, "DROP TABLE hive.users_ben.kept")


# -- whose queries one sees and cancels (security item 4) ----------------------------------------

MARKER = "alice-secret-7"
# Blocks on its full output buffer once running (nobody reads it): it stays RUNNING,
# using no CPU, until it is cancelled (or abandoned after Trino's client timeout).
ALICE_SQL = f"SELECT '{MARKER}' AS marker, l.* FROM tpch.sf1.lineitem l"


def _front(stack) -> str:
    return json.loads((stack.state / "deployment.json").read_text())["services"]["trino"]["url"]


def _trino(stack, method: str, path: str, token: str | None = None, body: str | None = None) -> tuple[int, str]:
    """One request to the Trino front with its path exactly as written."""
    headers = {"X-Trino-User": "alice", **({"Authorization": f"Bearer {token}"} if token else {})}
    return raw_request(_front(stack), method, path, headers=headers, body=body)


@pytest.fixture(scope="module")
def hub_admin(stack):
    """The hub admin `atelier dev` made ("admin"), logged in once so the hub knows it is admin."""
    password = (stack.state / "initial-admin-password").read_text().strip()
    stack.login("admin", password)
    return {"name": "admin", "token": stack.user_token("admin")}


def _start_query(stack, token: str, sql: str) -> dict:
    """A query started through the front and followed until it is dispatched (running);
    then left alone. Its id and its next statement URI."""
    status, text = _trino(stack, "POST", "/v1/statement", token, sql)
    assert status == 200, text[:300]
    doc = json.loads(text)
    deadline = time.monotonic() + 120
    while "/executing/" not in doc.get("nextUri", "/executing/"):
        assert time.monotonic() < deadline, f"query not dispatched: {doc}"
        time.sleep(0.2)
        status, text = _trino(stack, "GET", urlparse(doc["nextUri"]).path, token)
        assert status == 200, text[:300]
        doc = json.loads(text)
    assert "error" not in doc, doc["error"]
    return {"id": doc["id"], "next": urlparse(doc["nextUri"]).path}


@pytest.fixture
def alice_query(stack, alice, trino_private_port):
    """A query of alice's, running (dispatched) when the test starts; cancelled after."""
    started = _start_query(stack, alice["token"], ALICE_SQL)
    yield started
    _trino(stack, "DELETE", f"/v1/query/{started['id']}", alice["token"])


def _state(stack, viewer, query_id: str) -> str:
    status, text = _trino(stack, "GET", f"/v1/query/{query_id}", viewer["token"])
    assert status == 200, text[:300]
    return json.loads(text)["state"]


def test_ben_neither_sees_nor_cancels_alices_trino_query_and_an_admin_does_both(stack, alice, ben, hub_admin,
                                                                                 alice_query):
    qid = alice_query["id"]
    status, text = _trino(stack, "GET", "/v1/query", ben["token"])
    assert status == 200, text[:300]
    assert MARKER not in text and qid not in text
    status, text = _trino(stack, "GET", f"/v1/query/{qid}", ben["token"])
    assert status in (403, 404) and MARKER not in text and text.strip(), (status, text[:300])
    status, text = _trino(stack, "DELETE", f"/v1/query/{qid}", ben["token"])
    assert status in (403, 404), (status, text[:300])
    # Nor through SQL: Trino's own tables and procedure keep the same rules.
    rows = query(_front(stack), "SELECT query_id, query FROM system.runtime.queries", token=ben["token"], timeout=120)
    assert qid not in json.dumps(rows) and MARKER not in json.dumps(rows)
    with pytest.raises(TrinoError, match="Access Denied"):
        query(_front(stack), f"CALL system.runtime.kill_query(query_id => '{qid}', message => 'ben')",
              token=ben["token"], timeout=120)
    assert _state(stack, alice, qid) not in ("FAILED", "FINISHED")
    # Alice sees her own.
    status, text = _trino(stack, "GET", "/v1/query", alice["token"])
    assert status == 200 and qid in text and MARKER in text
    # A hub admin sees everyone's and cancels them.
    status, text = _trino(stack, "GET", "/v1/query", hub_admin["token"])
    assert status == 200 and qid in text and MARKER in text, (status, text[:300])
    status, text = _trino(stack, "DELETE", f"/v1/query/{qid}", hub_admin["token"])
    assert status in (200, 204), (status, text[:300])
    deadline = time.monotonic() + 60
    while (state := _state(stack, alice, qid)) != "FAILED":
        assert time.monotonic() < deadline, f"alice's query still {state} after the admin's cancel"
        time.sleep(0.5)


def test_no_spelling_of_a_trino_path_reaches_alices_query(stack, alice, ben, alice_query):
    qid, stmt = alice_query["id"], alice_query["next"]
    # ben's token, the query-management paths spelled as a server may decode or resolve them.
    lists = ["/v1%2Fquery", "/v1%2fquery", "/v1%252Fquery", "/v1/./query", "/v1/x/../query", "/v1//query",
             "//v1/query", "/v1/query/", "/v1/query;x", f"/v1/query/{qid}/..", "/v1/info/../query"]
    for path in lists:
        status, text = _trino(stack, "GET", path, ben["token"])
        assert status != 500 and MARKER not in text, (path, status, text[:300])
    cancels = [f"/v1%2Fquery%2F{qid}", f"/v1/query%2f{qid}", f"/v1/./query/{qid}", f"/v1//query/{qid}",
               f"/v1/query/x/../{qid}", f"/v1/query/{qid};x", f"/v1/query%252F{qid}"]
    for path in cancels:
        status, text = _trino(stack, "DELETE", path, ben["token"])
        assert status in (400, 401, 403, 404), (path, status, text[:300])
    # No token at all: a statement URI of hers (known by its id) walked to another endpoint.
    ups = "/.." * (stmt.count("/") - 1)  # back to /v1
    for method, path in (("GET", f"{stmt}{ups}/query"), ("DELETE", f"{stmt}{ups}/query/{qid}"),
                         ("GET", f"{stmt}/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/query"),
                         ("DELETE", f"{stmt}%2F..%2F..%2F..%2F..%2F..%2Fquery%2F{qid}")):
        status, text = _trino(stack, method, path)
        assert status in (400, 401, 403, 404) and MARKER not in text, (method, path, status, text[:300])
    assert _state(stack, alice, qid) not in ("FAILED", "FINISHED")


def test_a_removed_users_keys_and_token_stop_working(stack, attack, ben, hub_admin):
    env = attack["env"]  # the keys ben's session held
    ben_s3 = _client({"access_key_id": env["AWS_ACCESS_KEY_ID"],
                      "secret_access_key": env["AWS_SECRET_ACCESS_KEY"]})
    ben_s3.put_object(Bucket=SHARED, Key="from-ben/before-removal", Body=b"1")
    # His token works at each front and service just before (so each has it cached).
    uses = _uses_of_a_token(stack, ben["token"])
    assert {name: use() for name, use in uses.items()} == dict.fromkeys(uses, True)
    assert "ben" in (had := _mlflow_accounts(stack)), had
    # ... and a query of his is running.
    running = _start_query(stack, ben["token"], ALICE_SQL.replace(MARKER, "ben-running"))
    out = subprocess.run([str(VENV_BIN / "atelier"), "users", "--state", str(stack.state), "remove", "ben"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    removed = time.monotonic()
    with pytest.raises(ClientError) as err:
        ben_s3.put_object(Bucket=SHARED, Key="from-ben/after-removal", Body=b"1")
    assert err.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    # Within 10 s his token is refused by MLflow's front, Trino's front and the culler.
    working = dict(uses)
    while working and time.monotonic() - removed < 15:
        working = {name: use for name, use in working.items() if use()}
        time.sleep(0.5)
    took = round(time.monotonic() - removed, 1)
    assert not working, f"ben's token still works at {sorted(working)} {took} s after his removal"
    assert took <= 10, f"ben's token stopped everywhere only after {took} s"
    # His MLflow account is deleted too (the front follows the hub's users), as MLflow's
    # own account database says; everyone else's stays.
    while "ben" in (accounts := _mlflow_accounts(stack)):
        assert time.monotonic() - removed < 10, f"ben's MLflow account still there after his removal: {accounts}"
        time.sleep(0.5)
    assert had - {"ben"} <= accounts, (had, accounts)
    # His running query was cancelled with him (within the same 10 s): whoever polls its
    # statement URI (no token needed there) learns that it failed.
    while (state := _state(stack, hub_admin, running["id"])) != "FAILED":
        assert time.monotonic() - removed < 10, f"ben's query still {state} after his removal"
        time.sleep(0.5)
    status, text = _trino(stack, "GET", running["next"])
    assert status == 410 or (status == 200 and json.loads(text)["stats"]["state"] == "FAILED"), (status, text[:300])
    assert "removed from the running hub too" in out.stdout, out.stdout + out.stderr
    assert not (stack.state / "secrets" / "s3-accounts" / "users" / "ben.json").exists()
    # Alice is unaffected, and ben's objects stay.
    alice = _client(_keys(stack, "users", "alice"))
    alice.put_object(Bucket=SHARED, Key="from-alice/after-ben", Body=b"1")
    assert alice.get_object(Bucket=SHARED, Key="from-ben/before-removal")["Body"].read() == b"1"


def _mlflow_accounts(stack) -> set[str]:
    """The accounts in MLflow's auth app, read from its own database (sqlite)."""
    import sqlite3

    db = sqlite3.connect(f"file:{stack.state / 'mlflow' / 'auth' / 'basic_auth.db'}?mode=ro", uri=True)
    try:
        return {name for (name,) in db.execute("SELECT username FROM users")}
    finally:
        db.close()


def _uses_of_a_token(stack, token: str) -> dict:
    """One call per front and service a session's token is used at; each says whether
    the token was taken (True) or refused (False: 401/403), and fails on anything else."""
    client = stack.http
    auth = {"Authorization": f"token {token}"}

    def mlflow() -> bool:
        r = client.get(f"{stack.url}/services/mlflow/api/2.0/mlflow/experiments/search?max_results=1",
                       headers=auth, timeout=60)
        assert r.status_code in (200, 401, 403), (r.status_code, r.text[:300])
        return r.status_code == 200

    def trino() -> bool:
        try:
            return query(_front(stack), "SELECT 1", token=token, timeout=60) == [[1]]
        except Exception as exc:  # noqa: BLE001 - the front's refusal is an HTTP error
            assert "HTTP 401" in str(exc) or "HTTP 403" in str(exc), exc
            return False

    def culler() -> bool:
        r = client.post(f"{stack.url}/services/culler/api/report", json={"prefix": "/user/ben/"},
                        headers=auth, timeout=60)
        assert r.status_code in (200, 401, 403), (r.status_code, r.text[:300])
        return r.status_code == 200

    return {"mlflow": mlflow, "trino": trino, "culler": culler}
