"""The session contract, the profile picker, logins and GPU assignment (pure parts)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from atelier_hub.capacity import Request
from atelier_hub.embedded.auth import Backoff, UserError, UsersFile, check_password, hash_password
from atelier_hub.embedded.gpus import GPUPool
from atelier_hub.embedded.spawner_base import render_profile_form
from atelier_hub.embedded.users import InviteError
from atelier_hub.profiles import Profile
from atelier_hub.services import Services, SettingsError, load_deployment
from atelier_hub.services.mlflow import MLflowService
from atelier_hub.services.s3 import S3Service
from atelier_hub.session import session_env

SMALL = Profile(name="cpu-small", display_name="Small", cpu={"limit": 2, "guarantee": 0.5},
                memory={"limit": "4G", "guarantee": "1G"})
GPU = Profile(name="gpu-1", display_name="1 GPU <b>", cpu={"limit": 8}, memory={"limit": "32G"},
              gpu={"count": 1, "type": "a100"})
SERVICES = Services(
    s3=S3Service(endpoint_url="http://127.0.0.1:9000", bucket="shared", access_key_id="AK", secret_access_key="SK"),
    mlflow=MLflowService(tracking_uri="http://127.0.0.1:8000/services/mlflow"),
)


def test_session_env_configures_each_library_its_own_way():
    env = session_env(SMALL, username="ada", services=SERVICES, cpus=2, api_token="tok")
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("AK", "SK")
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["ATELIER_SHARED_BUCKET"] == "shared"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:8000/services/mlflow"
    assert env["MLFLOW_TRACKING_TOKEN"] == "tok"
    assert env["MLFLOW_EXPERIMENT_NAME"] == "users/ada"  # the user's own, made theirs by the front
    # The user guide's thread pools (OpenMP, MKL, OpenBLAS, numexpr, Accelerate, BLIS), each the CPU limit.
    threads = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")
    assert {v: env.get(v) for v in threads} == dict.fromkeys(threads, "2")
    assert (env["ATELIER_PROFILE"], env["ATELIER_CPU_LIMIT"], env["ATELIER_CPU_GUARANTEE"]) == ("cpu-small", "2", "0.5")
    assert (env["ATELIER_MEM_LIMIT"], env["ATELIER_MEM_GUARANTEE"]) == (str(4 * 10**9), str(10**9))
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["ATELIER_GPU_COUNT"] == "0"


def test_session_env_gpu_and_absent_services():
    env = session_env(GPU, username="ada", services=Services(), cpus=8, gpu_ids=[2])
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and env["ATELIER_GPU_TYPE"] == "a100"
    assert not any(k.startswith(("AWS_", "MLFLOW_")) for k in env)
    # An open MLflow server gets no token.
    env = session_env(SMALL, username="a", cpus=1, api_token="tok",
                      services=Services(mlflow=MLflowService(tracking_uri="http://x", auth="none")))
    assert "MLFLOW_TRACKING_TOKEN" not in env and "MLFLOW_EXPERIMENT_NAME" not in env


def test_profile_form_escapes_and_marks_the_default():
    html = render_profile_form([SMALL, GPU], notes={"gpu-1": "No GPU on this machine"})
    assert 'value="cpu-small" checked' in html and 'value="gpu-1">' in html
    assert "1 GPU &lt;b&gt;" in html and "<b>" not in html.split("<style>")[0]
    assert "No GPU on this machine" in html and "32G" in html


def test_passwords_are_scrypt_hashed(tmp_path):
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert check_password("correct horse", stored) and not check_password("wrong", stored)
    assert not check_password("x", None) and not check_password("x", "md5$abc")


def test_users_file(tmp_path):
    users = UsersFile(tmp_path / "users.json")
    pw = users.add("ada", admin=True)
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert pw not in (tmp_path / "users.json").read_text()
    assert check_password(pw, users.load()["ada"]["password"])
    code = users.add("bob", password=False)
    assert code and users.load()["bob"]["password"] is None and code not in (tmp_path / "users.json").read_text()
    with pytest.raises(UserError, match="already exists"):
        users.add("ada")
    with pytest.raises(UserError, match="not valid"):
        users.add("Bad Name")
    with pytest.raises(UserError, match="no user 'zed'"):
        users.set_password("zed")
    users.remove("bob")
    assert set(users.load()) == {"ada"}


def test_gpu_pool_hands_each_gpu_to_one_server_and_queues_the_rest():
    async def scenario():
        pool = GPUPool([(0, "A100"), (1, "A100")])

        def ask(user: str, since: float, gpus: int = 1):
            return pool.request(Request(key=f"{user}/", user=user, group="everyone", gpus=gpus, since=since))

        assert ask("ada", 1) == [0]
        assert ask("ada", 1) == [0]  # the same server asks again
        assert ask("bob", 2) == [1]
        cy, dan = ask("cy", 3), ask("dan", 4)  # both wait: positions 1 and 2
        assert isinstance(cy, asyncio.Future) and not cy.done()
        assert (pool.place("cy/").position, pool.place("dan/").position) == (1, 2)
        pool.leave("cy/")  # cy's spawn was cancelled: dan moves up
        assert cy.cancelled() and pool.place("dan/").position == 1
        pool.release("ada/")
        assert await asyncio.wait_for(dan, 5) == [0] and pool.held["dan/"] == [0]
        assert pool.refusal(Request("x/", "x", "everyone", 3, 0), profile="gpu-4").startswith(
            "Profile 'gpu-4' needs 3 GPU(s) and this machine has 2: it can never start here.")
        assert "no NVIDIA GPU" in GPUPool([]).refusal(Request("x/", "x", "everyone", 1, 0), profile="gpu-1")

    asyncio.run(scenario())


def test_deployment_settings_errors_name_the_field(tmp_path):
    good = tmp_path / "d.json"
    good.write_text(json.dumps({"services": {"s3": {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"}}}))
    assert load_deployment(good).services.s3.bucket == "b"
    bad = tmp_path / "d.yaml"
    bad.write_text("services:\n  s3:\n    bucket: b\n    endpoint: http://x\n")
    with pytest.raises(SettingsError, match="services.s3.endpoint: .*remove it or check its spelling"):
        load_deployment(bad)
    with pytest.raises(SettingsError, match="cannot read"):
        load_deployment(tmp_path / "missing.yaml")


def test_an_invite_works_once_and_not_after_it_expires(tmp_path):
    users = UsersFile(tmp_path / "users.json")
    code = users.add("cy", password=False, expires_in=60)
    with pytest.raises(InviteError, match="not valid or was already used"):
        users.check_invite("cy", code + "x")
    with pytest.raises(InviteError, match="expired"):
        users.check_invite("cy", code, now=time.time() + 61)
    with pytest.raises(UserError, match="password: choose at least 8"):
        users.accept_invite("cy", code, "short")
    users.accept_invite("cy", code, "long enough pw")
    assert check_password("long enough pw", users.load()["cy"]["password"]) and "invite" not in users.load()["cy"]
    with pytest.raises(InviteError, match="already used"):
        users.accept_invite("cy", code, "another password")
    # A new link replaces the old one.
    first, second = users.invite("cy"), users.invite("cy")
    with pytest.raises(InviteError):
        users.check_invite("cy", first)
    assert users.check_invite("cy", second)


def test_backoff_doubles_after_the_free_attempts_and_forgets():
    b = Backoff(free=2, base=1, cap=8)
    b.fail("k", now=0)
    assert b.wait("k", now=0) == 0
    waits = []
    for _ in range(6):
        b.fail("k", now=0)
        waits.append(b.wait("k", now=0))
    assert waits == [1, 2, 4, 8, 8, 8]
    b.fail("k", now=100)  # quiet for longer than the cap past its wait: starts over
    assert b.wait("k", now=100) == 0
    small = Backoff(free=1, base=1, cap=1, size=3)
    for name in "abcde":
        small.fail(name, now=0)
    assert small.wait("a", now=0) == 0 and small.wait("e", now=0) == 1  # oldest dropped first
    small.undo("e")
    assert small.wait("e", now=0) == 0
    huge = Backoff(free=1, base=1, cap=300)
    for _ in range(3000):  # no float overflow however many failures
        huge.fail("k", now=0)
    assert huge.wait("k", now=0) == 300


def test_the_hub_takes_only_user_names_the_users_file_takes(tmp_path):
    from atelier_hub.embedded.auth import AtelierAuthenticator

    auth = AtelierAuthenticator(users_file=str(tmp_path / "users.json"))
    assert auth.validate_username("ada") and auth.validate_username("a" * 64)
    assert not auth.validate_username("a" * 65) and not auth.validate_username("Ada Lovelace")


def test_each_hub_request_gets_the_limit_of_the_handler_that_reads_it():
    from atelier_hub.input_limits import HUB_BODY_MAX, USER_OPTIONS_MAX, _rule_for
    from jupyterhub.apihandlers.users import UserAPIHandler, UserServerAPIHandler, UserTokenListAPIHandler
    from jupyterhub.handlers.pages import SpawnHandler

    class Subclass(UserServerAPIHandler):  # a handler extending the hub's is held to its limit
        pass

    for cls in (UserServerAPIHandler, Subclass, SpawnHandler, UserTokenListAPIHandler):
        assert _rule_for(cls).limit == USER_OPTIONS_MAX, cls
    assert _rule_for(UserServerAPIHandler).stored and not _rule_for(SpawnHandler).stored
    assert _rule_for(UserAPIHandler).limit == _rule_for(None).limit == HUB_BODY_MAX
    assert "16 KiB" in _rule_for(UserServerAPIHandler).refusal(70_000)


@pytest.fixture
def hub_like_server():
    """A real Tornado HTTP server built as JupyterHub 6.1.1 builds its own
    (``HTTPServer(app, xheaders=True)``) after :func:`bound_hub_requests`, serving two of
    the hub's handlers whose methods only count the body they got; and a plain
    application on the same server class, which the limits leave alone."""
    import asyncio
    import threading

    from atelier_hub.input_limits import bound_hub_requests
    from atelier_hub.services._process import free_port
    from jupyterhub.apihandlers.users import ActivityAPIHandler, UserServerAPIHandler
    from jupyterhub.objects import Hub
    from tornado import web
    from tornado.httpserver import HTTPServer

    got: list[int] = []

    def counting(base):
        class Counting(base):
            async def prepare(self):  # no database, no login: only the body matters here
                pass

            def set_default_headers(self):
                pass

            finish = web.RequestHandler.finish

            async def post(self, *args):
                got.append(len(self.request.body))
                self.write({"got": len(self.request.body)})

            put = patch = post

        return Counting

    routes = [(r"/hub/api/users/([^/]+)/server", counting(UserServerAPIHandler)),
              (r"/hub/api/users/([^/]+)/activity", counting(ActivityAPIHandler))]
    before = HTTPServer.configured_class()
    bound_hub_requests()
    first = free_port()
    ports, loop, ready = [first, free_port(avoid={first})], asyncio.new_event_loop(), threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        HTTPServer(web.Application(routes, hub=Hub(base_url="/hub/")), xheaders=True).listen(ports[0], "127.0.0.1")
        HTTPServer(web.Application(routes)).listen(ports[1], "127.0.0.1")
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield [f"http://127.0.0.1:{port}" for port in ports], got
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    HTTPServer.configure(before)


def test_the_hub_server_answers_413_to_bodies_past_their_limit_before_any_handler(hub_like_server):
    import requests

    (hub, plain), got = hub_like_server
    http = requests.Session()  # one connection throughout: a refusal leaves it usable
    http.trust_env = False
    spawn, activity = f"{hub}/hub/api/users/ada/server", f"{hub}/hub/api/users/ada/activity"

    r = http.post(spawn, json={"profile": "cpu-small", "notes": "x" * (2 * 2**20)}, timeout=60)
    assert r.status_code == 413 and "spawn options are limited to 16 KiB" in r.json()["message"]
    utf8 = json.dumps({"user_options": {"notes": "é" * 6000}}, ensure_ascii=False).encode()  # 12 KB sent
    r = http.put(spawn, data=utf8, timeout=60)  # 36 KB as stored (each "é" kept as \u00e9)
    assert r.status_code == 413 and "as the hub would store them" in r.json()["message"]
    r = http.post(activity, data=iter([b"x" * 2**16] * 20), timeout=60)  # chunked: no length announced
    assert r.status_code == 413 and "limited to 1 MiB" in r.json()["message"]
    r = http.post(activity, data=b"x" * (2 * 2**20), timeout=60)
    assert r.status_code == 413 and "1 MiB" in r.json()["message"]
    assert got == []  # no handler saw any of them

    assert http.post(spawn, json={"profile": "cpu-small", "notes": "x" * 8000}, timeout=60).status_code == 200
    assert http.post(activity, data=b"x" * 2**19, timeout=60).json() == {"got": 2**19}
    assert requests.post(f"{plain}/hub/api/users/ada/server", data=b"x" * (2 * 2**20), timeout=60).status_code == 200


def _hub_db(path: Path, rows: dict[str, str]) -> sqlite3.Connection:
    """The two tables of JupyterHub's database the trim reads (user_options: JSON text)."""
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
                      "CREATE TABLE spawners (id INTEGER PRIMARY KEY, user_id INTEGER, name TEXT, user_options TEXT);"
                      "INSERT INTO users VALUES (1, 'ada');")
    con.executemany("INSERT INTO spawners (user_id, name, user_options) VALUES (1, ?, ?)", rows.items())
    con.commit()
    return con


def test_stored_spawn_options_past_the_limit_are_cut_back_and_the_file_shrinks(tmp_path, caplog):
    from atelier_hub.input_limits import trim_saved_options

    big = "y" * 200_000
    db = tmp_path / "jupyterhub.sqlite"
    con = _hub_db(db, {
        "": json.dumps({"profile": "cpu-small"}),  # within the limit: left as it is
        "big": json.dumps({"profile": "cpu-large", "notes": big}),
        "odd": json.dumps({"profile": "no-such-profile", "notes": big}),
        "cut": '{"profile": "cpu-large", "notes": "' + big,  # not JSON at all
    })
    planted = db.stat().st_size
    log = logging.getLogger("test-trim")
    with caplog.at_level(logging.INFO, logger="test-trim"):
        assert trim_saved_options(db, profiles=["cpu-small", "cpu-large"], log=log) == 3
    assert dict(con.execute("SELECT name, user_options FROM spawners")) == {
        "": '{"profile": "cpu-small"}', "big": '{"profile": "cpu-large"}', "odd": "{}", "cut": "{}"}
    assert db.stat().st_size < planted / 10  # VACUUMed
    assert "ada/big took" in caplog.text and "ada/(default server)" not in caplog.text
    assert "yyyy" not in caplog.text  # sizes and names only
    assert trim_saved_options(db, profiles=["cpu-small"], log=log) == 0  # nothing left to cut
    assert trim_saved_options(tmp_path / "none.sqlite", profiles=[], log=log) == 0  # a first start
    sqlite3.connect(tmp_path / "empty.sqlite").close()
    assert trim_saved_options(tmp_path / "empty.sqlite", profiles=[], log=log) == 0  # no tables yet


_WRITER = """
import sys
from atelier_hub.embedded.users import UsersFile
users = UsersFile(sys.argv[1])
for i in range(int(sys.argv[3])):
    name = f"{sys.argv[2]}{i}"
    users.add(name, password=False)
    if i % 2:
        users.remove(name)
"""


def test_two_processes_writing_the_users_file_never_corrupt_it(tmp_path):
    """Two real processes add and remove users in a loop; every change survives and
    the file is valid JSON whenever a third one reads it."""
    path = tmp_path / "users.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), prefix, "60"], env=env)
               for prefix in ("a", "b")]
    reads = 0
    while any(w.poll() is None for w in writers):
        if path.exists():
            json.loads(path.read_text())  # never half a file
            reads += 1
    assert [w.returncode for w in writers] == [0, 0]
    assert set(UsersFile(path).load()) == {f"{p}{i}" for p in "ab" for i in range(0, 60, 2)}
    assert reads and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_state_folder_is_made_private_and_no_admin_comes_back(tmp_path):
    from atelier_hub.embedded.stack import EmbeddedStack
    from atelier_hub.embedded.state_folder import ADMIN_USER
    from atelier_hub.services._process import free_port

    profiles = Path(__file__).resolve().parents[2] / "profiles"
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True, mode=0o755)
    (state / "logs" / "hub.log").write_text("old log")
    for path, mode in ((state, 0o755), (state / "logs", 0o755), (state / "logs" / "hub.log", 0o644)):
        path.chmod(mode)
    stack, password = EmbeddedStack.prepare(state, port=free_port(), profiles_dir=profiles, without=("trino",))
    assert password and set(stack.users.load()) == {ADMIN_USER}  # the first start makes the admin
    for path in (state, state / "logs", state / "homes", state / "secrets"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in (state / "logs" / "hub.log", state / "atelier.json", state / "users.json", state / "admin-token"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # Every user removed: a later start brings no admin back.
    stack.users.remove(ADMIN_USER)
    stack, password = EmbeddedStack.prepare(state, port=free_port(), profiles_dir=profiles, without=("trino",))
    assert password is None and stack.users.load() == {}
