"""MLflow keeps users apart: only the hub-authenticated front reaches the backend, a run
records the hub user who made it, and a second real user cannot change or delete the
first one's runs, experiments or registered models (a hub admin can).

Real `atelier dev` (without Trino), real MLflow, real sessions; the attacks are made by a
real second hub user with their own hub token.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from kernel import run_code
from stack import Stack, raw_request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mstack(tmp_path_factory):
    # Process sessions: these tests are about MLflow, not the session image.
    s = Stack(tmp_path_factory.mktemp("mlflow-iso") / "state", name="mlflow-iso",
              args=("--without", "trino"), env={"ATELIER_SESSIONS": "process"}).start()
    yield s
    s.stop()


def _user(stack: Stack, name: str, *, admin: bool = False) -> dict:
    password = stack.add_user(name, admin=admin)
    return {"name": name, "password": password, "token": stack.user_token(name)}


@pytest.fixture(scope="module")
def alice(mstack):
    return _user(mstack, "alice")


@pytest.fixture(scope="module")
def bob(mstack):
    return _user(mstack, "bob")


@pytest.fixture(scope="module")
def ada(mstack):
    """The hub admin `atelier dev` made ("admin"), logged in once so the hub knows it is admin."""
    password = (mstack.state / "initial-admin-password").read_text().strip()
    mstack.login("admin", password)
    assert mstack.api("GET", "/users/admin").json()["admin"] is True
    return {"name": "admin", "password": password, "token": mstack.user_token("admin")}


class Api:
    """MLflow's REST API through the front, as one hub user (their hub token)."""

    def __init__(self, stack: Stack, token: str):
        self.base = f"{stack.url}/services/mlflow/api/2.0/mlflow"
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, f"{self.base}/{path}", timeout=120, **kw)

    def ok(self, method: str, path: str, **kw) -> dict:
        r = self.call(method, path, **kw)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text[:300]}"
        return r.json()


def _backend_port(stack: Stack) -> int:
    """The private port of MLflow's own server, read the way any local process can (ps)."""
    pgid = int((stack.state / "run" / "mlflow.pgid").read_text().split()[0])
    argv = Path(f"/proc/{pgid}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"--port") + 1])


def test_the_backend_refuses_requests_that_do_not_come_through_the_front(mstack, alice):
    Api(mstack, alice["token"]).ok("GET", "experiments/search?max_results=1")  # the front works
    port = _backend_port(mstack)
    direct = requests.Session()
    direct.trust_env = False
    base = f"http://127.0.0.1:{port}/services/mlflow/api/2.0/mlflow"
    search = direct.get(f"{base}/experiments/search?max_results=1", timeout=30)
    assert search.status_code == 401, search.text[:300]
    create = direct.post(f"{base}/experiments/create", json={"name": "from-outside"}, timeout=30)
    assert create.status_code == 401, create.text[:300]
    # Posing as a hub user by the front's own header gets nothing either.
    forged = direct.get(f"{base}/experiments/search?max_results=1", headers={"X-Forwarded-User": "alice"},
                        timeout=30)
    assert forged.status_code == 401
    # The native artifact route (no static prefix) is guarded as well.
    art = direct.put(f"http://127.0.0.1:{port}/api/2.0/mlflow-artifacts/artifacts/0/x/y.txt", data=b"x",
                     timeout=30)
    assert art.status_code == 401
    assert Api(mstack, alice["token"]).call("GET", "experiments/get-by-name?experiment_name=from-outside"
                                            ).status_code == 404
    # Through the front, MLflow's accounts are the hub's: nobody makes or changes one there.
    a = Api(mstack, alice["token"])
    assert a.call("PATCH", "users/update-password", json={"username": "alice", "password": "x" * 24}
                  ).status_code == 403
    assert a.call("POST", "users/create", json={"username": "mallory", "password": "x" * 24}).status_code == 403
    a.ok("GET", "experiments/search?max_results=1")  # and alice's own account still works


def test_a_refused_request_with_a_body_leaves_the_connection_usable(mstack, alice):
    """The front refuses some calls before reading their body (MLflow's own account calls):
    the next request on that keep-alive connection must still be answered. Found by CI as a
    503 "socket hang up" from the proxy after such a refusal: the front dropped the
    connection without saying so. Talks to the front's own port, as the proxy does."""
    port = json.loads((mstack.state / "atelier.json").read_text())["ports"]["mlflow"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    auth = {"Authorization": f"token {alice['token']}", "Content-Type": "application/json"}
    body = json.dumps({"username": "alice", "password": "x" * 24})
    refusals = [("PATCH", "/services/mlflow/api/2.0/mlflow/users/update-password", body),
                ("GET", "/services/mlflow/ajax-api/3.0/mlflow/assistant/config", None)]  # no body
    for method, path, data in refusals * 2:
        conn.request(method, path, body=data, headers=auth)
        refused = conn.getresponse()
        refused.read()
        assert refused.status == 403
        if refused.getheader("Connection") == "close":
            conn.close()  # as a client does when told
        # Either the connection stays usable, or the answer said it closes (then the
        # client opens a new one): never a silent drop.
        conn.request("GET", "/services/mlflow/api/2.0/mlflow/experiments/search?max_results=1", headers=auth)
        again = conn.getresponse()
        assert again.status == 200, again.read()[:300]
        again.read()
    conn.close()


def test_another_user_cannot_change_or_delete_what_a_user_made_and_the_owner_can(mstack, alice, bob, ada):
    a, b, admin = Api(mstack, alice["token"]), Api(mstack, bob["token"]), Api(mstack, ada["token"])
    exp = a.ok("POST", "experiments/create", json={"name": "alice-exp"})["experiment_id"]
    run = a.ok("POST", "runs/create", json={"experiment_id": exp})["run"]["info"]["run_id"]
    a.ok("POST", "runs/log-metric", json={"run_id": run, "key": "m", "value": 1, "timestamp": 0})
    model = "alice-model"
    a.ok("POST", "registered-models/create", json={"name": model})

    # Bob reads everything...
    assert b.ok("GET", f"runs/get?run_id={run}")["run"]["data"]["metrics"][0]["value"] == 1
    assert b.ok("GET", f"experiments/get?experiment_id={exp}")["experiment"]["name"] == "alice-exp"
    assert b.ok("GET", f"registered-models/get?name={model}")["registered_model"]["name"] == model
    # ... and changes nothing of Alice's.
    attacks = [
        ("POST", "runs/log-metric", {"run_id": run, "key": "m", "value": 666, "timestamp": 1}),
        ("POST", "runs/set-tag", {"run_id": run, "key": "owner", "value": "bob"}),
        ("POST", "runs/update", {"run_id": run, "run_name": "bobs-now"}),
        ("POST", "runs/delete", {"run_id": run}),
        ("POST", "runs/create", {"experiment_id": exp}),
        ("POST", "experiments/update", {"experiment_id": exp, "new_name": "bobs-exp"}),
        ("POST", "experiments/set-experiment-tag", {"experiment_id": exp, "key": "k", "value": "bob"}),
        ("POST", "experiments/delete", {"experiment_id": exp}),
        ("PATCH", "registered-models/update", {"name": model, "description": "bob was here"}),
        ("POST", "registered-models/rename", {"name": model, "new_name": "bobs-model"}),
        ("DELETE", "registered-models/delete", {"name": model}),
    ]
    for method, path, body in attacks:
        r = b.call(method, path, json=body)
        assert r.status_code == 403, f"bob's {method} {path} answered {r.status_code}: {r.text[:200]}"
    got = a.ok("GET", f"runs/get?run_id={run}")["run"]
    assert got["info"]["lifecycle_stage"] == "active" and got["info"]["run_name"] != "bobs-now"
    assert [m["value"] for m in got["data"]["metrics"]] == [1]
    assert "owner" not in {t["key"] for t in got["data"].get("tags", [])}
    assert a.ok("GET", f"experiments/get?experiment_id={exp}")["experiment"]["lifecycle_stage"] == "active"
    assert a.ok("GET", f"registered-models/get?name={model}")["registered_model"].get("description", "") == ""

    # Alice changes and deletes her own.
    a.ok("POST", "runs/set-tag", json={"run_id": run, "key": "owner", "value": "alice"})
    a.ok("PATCH", "registered-models/update", json={"name": model, "description": "mine"})
    a.ok("POST", "runs/delete", json={"run_id": run})
    a.ok("DELETE", "registered-models/delete", json={"name": model})

    # A hub admin changes anyone's.
    bob_exp = b.ok("POST", "experiments/create", json={"name": "bob-exp"})["experiment_id"]
    bob_run = b.ok("POST", "runs/create", json={"experiment_id": bob_exp})["run"]["info"]["run_id"]
    admin.ok("POST", "runs/set-tag", json={"run_id": bob_run, "key": "reviewed", "value": "yes"})
    admin.ok("POST", "runs/delete", json={"run_id": bob_run})
    admin.ok("POST", "experiments/delete", json={"experiment_id": exp})
    assert a.ok("GET", f"experiments/get?experiment_id={exp}")["experiment"]["lifecycle_stage"] == "deleted"


def test_a_run_made_with_a_users_token_records_that_hub_user(mstack, alice, bob):
    # MLflow's own client, as a script outside any session: it would send the OS user.
    code = ("import mlflow\nmlflow.set_experiment('alice-script')\n"
            "with mlflow.start_run() as r: pass\nprint(r.info.run_id)")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"{mstack.url}/services/mlflow",
           "MLFLOW_TRACKING_TOKEN": alice["token"], "USER": "root", "LOGNAME": "root"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    run_id = out.stdout.strip().splitlines()[-1]
    a = Api(mstack, alice["token"])
    info = a.ok("GET", f"runs/get?run_id={run_id}")["run"]
    assert info["info"]["user_id"] == "alice"
    assert {t["key"]: t["value"] for t in info["data"]["tags"]}["mlflow.user"] == "alice"
    # A forged user id is replaced by the real one.
    exp = a.ok("GET", "experiments/get-by-name?experiment_name=alice-script")["experiment"]["experiment_id"]
    forged = a.ok("POST", "runs/create", json={"experiment_id": exp, "user_id": "bob",
                                               "tags": [{"key": "mlflow.user", "value": "bob"}]})["run"]
    assert forged["info"]["user_id"] == "alice"
    assert {t["key"]: t["value"] for t in forged["data"]["tags"]}["mlflow.user"] == "alice"


def test_a_run_from_a_session_records_the_hub_user_with_no_set_up(mstack, alice, bob):
    model = mstack.spawn("alice", "cpu-small", server="iso")
    code = ("import json, mlflow\nwith mlflow.start_run() as r: mlflow.log_metric('x', 1)\n"
            "print(json.dumps({'run_id': r.info.run_id, 'user_id': r.info.user_id}))")
    out = json.loads(run_code(mstack.url, model["url"], alice["token"], code).strip().splitlines()[-1])
    mstack.stop_server("alice", "iso")
    assert out["user_id"] == "alice"
    run = Api(mstack, alice["token"]).ok("GET", f"runs/get?run_id={out['run_id']}")["run"]
    assert run["info"]["user_id"] == "alice"
    # The session's default experiment is the user's own: another user cannot touch the run.
    r = Api(mstack, bob["token"]).call("POST", "runs/delete", json={"run_id": out["run_id"]})
    assert r.status_code == 403, r.text[:200]


# -- the front decides on the path MLflow will see (security items 3 and 6) -------------------

# The spellings of one call that a server may decode or resolve to it: encoded slashes
# (either case, or encoded twice), dot segments and doubled slashes. "{}" is the call,
# e.g. "runs/create".
PATH_VARIANTS = (
    lambda call: call.replace("/", "%2F"),
    lambda call: call.replace("/", "%2f"),
    lambda call: call.replace("/", "%252F"),
    lambda call: call.replace("/", "/./"),
    lambda call: f"x/../{call}",
    lambda call: call.replace("/", "//"),
    lambda call: f"/{call}",  # .../mlflow//runs/create
    lambda call: call.replace("s/", "%73/", 1),  # an encoded letter: the same call
)


def _raw(stack: Stack, method: str, path: str, token: str, body) -> tuple[int, str]:
    """One request with its path exactly as written, through the hub's proxy, as a
    browser or script reaches the front."""
    return raw_request(stack.url, method, f"/services/mlflow/api/2.0/mlflow/{path}",
                       body=body if isinstance(body, (bytes, str)) else json.dumps(body),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


@pytest.fixture(scope="module")
def eve(mstack):
    """A user who has not used MLflow yet: her default experiment users/eve does not exist."""
    return _user(mstack, "eve")


def test_no_spelling_of_a_path_or_body_lets_one_user_record_a_run_as_another(mstack, alice, bob):
    b = Api(mstack, bob["token"])
    exp = b.ok("POST", "experiments/create", json={"name": "bob-spellings"})["experiment_id"]
    forged = {"experiment_id": exp, "user_id": "alice", "tags": [{"key": "mlflow.user", "value": "alice"}]}
    attempts = [(variant("runs/create"), forged) for variant in PATH_VARIANTS]
    # The same call by the other spellings MLflow reads: the field's JSON name, and a
    # body that is a JSON string of JSON (older clients').
    attempts += [("runs/create", {"experiment_id": exp, "userId": "alice"}),
                 ("runs/create", json.dumps(json.dumps(forged)))]
    for path, body in attempts:
        status, text = _raw(mstack, "POST", path, bob["token"], body)
        assert status in (200, 400, 403, 404), f"{path}: {status} {text[:200]}"
        if status == 200:  # taken as the plain call: then it records bob, whatever was sent
            run = json.loads(text)["run"]
            tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            assert (run["info"]["user_id"], tags.get("mlflow.user")) == ("bob", "bob"), (path, run["info"])
        elif status == 400:  # refused, saying why, with the path as sent
            assert path in json.loads(text)["message"], (path, text[:300])
    runs = b.ok("POST", "runs/search", json={"experiment_ids": [exp], "max_results": 100})
    assert {r["info"]["user_id"] for r in runs.get("runs", [])} <= {"bob"}


def test_no_spelling_of_a_path_or_body_lets_a_user_take_anothers_default_experiment(mstack, bob, eve):
    b = Api(mstack, bob["token"])
    attempts = [(variant("experiments/create"), {"name": "users/eve"}) for variant in PATH_VARIANTS]
    attempts.append(("experiments/create", json.dumps(json.dumps({"name": "users/eve"}))))
    mine = b.ok("POST", "experiments/create", json={"name": "bob-renamed"})["experiment_id"]
    attempts += [(variant("experiments/update"), {"experiment_id": mine, "new_name": "users/eve"})
                 for variant in PATH_VARIANTS]
    attempts.append(("experiments/update", {"experiment_id": mine, "newName": "users/eve"}))
    for path, body in attempts:
        status, text = _raw(mstack, "POST", path, bob["token"], body)
        assert status in (400, 403, 404), f"bob's {path} with {body!r}: {status} {text[:200]}"
    # Eve's first call makes her default experiment, hers: she logs a run in it.
    e = Api(mstack, eve["token"])
    own = e.ok("GET", "experiments/get-by-name?experiment_name=users/eve")["experiment"]["experiment_id"]
    run = e.ok("POST", "runs/create", json={"experiment_id": own})["run"]
    assert run["info"]["user_id"] == "eve"


def test_mlflow_user_is_never_changed_after_a_run_is_made(mstack, bob, ada):
    b, admin = Api(mstack, bob["token"]), Api(mstack, ada["token"])
    exp = b.ok("POST", "experiments/create", json={"name": "bob-user-tag"})["experiment_id"]
    run = b.ok("POST", "runs/create", json={"experiment_id": exp})["run"]["info"]["run_id"]
    tag = {"key": "mlflow.user", "value": "alice"}
    attempts = [("runs/set-tag", {"run_id": run, **tag}),
                ("runs/delete-tag", {"run_id": run, "key": "mlflow.user"}),
                ("runs/log-batch", {"run_id": run, "tags": [tag]}),
                ("runs/set-tag", json.dumps(json.dumps({"run_id": run, **tag})))]
    attempts += [(variant("runs/set-tag"), {"run_id": run, **tag}) for variant in PATH_VARIANTS]
    for api, who in ((bob, "bob"), (ada, "admin")):
        for path, body in attempts:
            status, text = _raw(mstack, "POST", path, api["token"], body)
            assert status in (400, 403, 404), f"{who}'s {path}: {status} {text[:200]}"
            if path in ("runs/set-tag", "runs/delete-tag", "runs/log-batch") and not isinstance(body, str):
                assert status == 403 and "mlflow.user" in json.loads(text)["message"], text[:300]
    got = b.ok("GET", f"runs/get?run_id={run}")["run"]
    assert got["info"]["user_id"] == "bob"
    assert {t["key"]: t["value"] for t in got["data"]["tags"]}["mlflow.user"] == "bob"
    # Other tags are the owner's to set, in one call or a batch, as before.
    b.ok("POST", "runs/set-tag", json={"run_id": run, "key": "note", "value": "mine"})
    b.ok("POST", "runs/log-batch", json={"run_id": run, "tags": [{"key": "note2", "value": "x"}]})
    admin.ok("POST", "runs/set-tag", json={"run_id": run, "key": "reviewed", "value": "yes"})


class _FakeModel(BaseHTTPRequestHandler):
    """The attacker's own "model": an OpenAI-style chat endpoint whose first answer asks
    MLflow's assistant to run ``attack`` with its Bash tool (what a hostile or
    prompt-injected model can always answer)."""

    attack = ""
    calls: list[str] = []

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # the model list an OpenAI-style provider may ask for
        self._send(json.dumps({"models": [{"model": "m"}], "data": [{"id": "m"}]}).encode(), "application/json")

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(self.path)
        answered = any(m.get("role") == "tool" for m in request.get("messages", []))
        call = {"index": 0, "id": "c1", "type": "function",
                "function": {"name": "Bash", "arguments": json.dumps({"command": self.attack})}}
        delta = {"content": "done"} if answered else {"tool_calls": [call]}
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if answered else "tool_calls"}]}
        self._send(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(), "text/event-stream")


def test_no_user_runs_commands_on_the_tracking_servers_machine_through_mlflows_assistant(mstack, bob, tmp_path):
    """MLflow 3's assistant (``/ajax-api/3.0/mlflow/assistant``) runs its model's Bash
    tool calls on the tracking server's machine, and trusts any request from 127.0.0.1:
    the front's requests all come from there. Any MLflow user could point it at a model
    of their own, give it full access, and run commands as the server, which holds every
    user's runs and the accounts' passwords. bob, a real second user, tries exactly that
    with his hub token; the front refuses every assistant call, naming why."""
    marker = tmp_path / "ran-on-the-server"
    _FakeModel.attack = f"id > {marker}"
    _FakeModel.calls = []
    model = ThreadingHTTPServer(("127.0.0.1", 0), _FakeModel)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    base = f"{mstack.url}/services/mlflow/ajax-api/3.0/mlflow/assistant"
    http = requests.Session()
    http.trust_env = False
    http.headers["Authorization"] = f"Bearer {bob['token']}"
    try:
        config = {"providers": {"ollama": {"model": "m", "selected": True,
                                           "base_url": f"http://127.0.0.1:{model.server_port}",
                                           "permissions": {"full_access": True}}}}
        answers = [http.put(f"{base}/config", json=config, timeout=60)]
        answers.append(http.post(f"{base}/message", json={"message": "hello"}, timeout=60))
        session = answers[-1].json().get("session_id", "x") if answers[-1].status_code == 200 else "x"
        answers.append(http.get(f"{base}/sessions/{session}/stream", timeout=120))
        answers.append(http.get(f"{base}/config", timeout=60))
        # Other spellings of the same path reach the same decision.
        answers.append(http.get(f"{mstack.url}/services/mlflow//ajax-api/3.0/mlflow/./assistant/config", timeout=60))
        answers.append(http.get(f"{mstack.url}/services/mlflow/ajax-api/3.0/mlflow/%61ssistant/config", timeout=60))
    finally:
        model.shutdown()
    assert not marker.exists(), f"the assistant ran bob's command on the server: {marker.read_text()!r}"
    assert _FakeModel.calls == []
    for r in answers:
        assert r.status_code in (400, 403), (r.request.method, r.url, r.status_code, r.text[:300])
    assert "assistant" in answers[0].text and "off" in answers[0].text, answers[0].text
    # MLflow itself still answers bob.
    Api(mstack, bob["token"]).ok("GET", "experiments/search?max_results=1")
