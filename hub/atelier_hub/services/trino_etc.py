"""Trino's ``etc/`` folder, rendered from keyword arguments: pure functions, no I/O.

Rule this module keeps: everything Trino reads is rendered here, holds no secret (the
S3 keys are named as ``${ENV:...}``, which Trino resolves from its environment), and
a catalog is written whole or not at all: one bad catalog file stops the whole server.
Trino's own access control (:func:`access_rules`, generated from the hub's users) lets
everyone read every table but change tables only in their own schema (``users_NAME``)
and the shared schemas an admin named; each user sees and cancels only their own
queries; the hub's admins and the service's user may do everything.
ref: ../shared/RECIPES.md (S3, Trino, Spark)
"""

from __future__ import annotations

import json
import re

__all__ = ["HEAP", "QUERY_MAX_MEMORY", "RULES_REFRESH_S", "USER_SCHEMA_PREFIX", "render_etc", "render_properties",
           "jvm_options", "server_command", "access_rules", "render_rules", "user_schema", "front_only_properties"]

# Heap for the whole server; a query may use half of it (the rest is Trino's headroom
# and its own structures). ref: ../shared/RECIPES.md (-Xmx1G with 512MB per node ran)
HEAP = "1G"
QUERY_MAX_MEMORY = "512MB"

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


#: prefix of each hub user's own schema (:func:`user_schema`)
USER_SCHEMA_PREFIX = "users_"
#: seconds between Trino's checks of ``rules.json`` (``security.refresh-period``); the
#: supervisor rewrites the file when the hub's users change (:mod:`.trino_server`)
RULES_REFRESH_S = 1
_TABLE_ALL = ["SELECT", "INSERT", "DELETE", "UPDATE", "OWNERSHIP", "GRANT_SELECT"]
_FUNCTION_ALL = ["EXECUTE", "GRANT_EXECUTE", "OWNERSHIP"]
_ESCAPES = {"_": "__", ".": "_d", "-": "_h"}


def user_schema(name: str) -> str:
    """Hub user ``name``'s own schema: ``users_`` and the name, with ``a-z`` and ``0-9``
    kept, ``_`` written ``__``, ``.`` ``_d``, ``-`` ``_h`` and any other character
    ``_u`` and its code point in 6 hex digits. Each escape starts with ``_`` and says by
    its next character how long it is, so the name can be read back from the schema:
    two users never share a schema (``ada_b`` and ``ada.b`` are ``users_ada__b`` and
    ``users_ada_db``). Trino folds unquoted identifiers to lower case; these stay
    lower case, so ``hive.users_ada`` needs no quotes.

    >>> user_schema("ada"), user_schema("ada_b"), user_schema("ada.b"), user_schema("j-doe"), user_schema("Bo")
    ('users_ada', 'users_ada__b', 'users_ada_db', 'users_j_hdoe', 'users__u000042o')
    """
    out = []
    for ch in name:
        if ("a" <= ch <= "z") or ("0" <= ch <= "9"):
            out.append(ch)
        else:
            out.append(_ESCAPES.get(ch) or f"_u{ord(ch):06x}")
    return USER_SCHEMA_PREFIX + "".join(out)


def _any_of(names) -> str:
    """A Java regex matching exactly one of ``names`` (Trino matches whole names).

    >>> print(_any_of(["ada", "a.b"]))
    (ada|a\\.b)
    """
    return "(" + "|".join(re.escape(n) for n in names) + ")"


def access_rules(*, service_user: str, users=(), admins=(), shared_schemas=()) -> dict:
    """Trino's file-based system access control rules (pure), generated from the hub's
    users (``users``: every hub user's name; ``admins``: the hub admins among them) and
    the shared schemas an admin named (``TrinoService.shared_schemas``).

    - Everyone reads (SELECT, SHOW) every table of every catalog.
    - A user creates, inserts into, deletes from, alters and drops tables and views only
      in their own schema (:func:`user_schema`, in any catalog; they own it, so they
      may create it) and in the shared schemas, where every user may change every table.
    - Hub admins and ``service_user`` may do everything, everywhere.
    - Catalog procedures (Hive's ``register_partition``, ``drop_stats``...) work on
      any table: admins only; everyone runs ``system`` procedures (``kill_query``,
      which the query rules still restrict to one's own queries).
    - Queries: everyone runs them and sees and cancels their own (Trino always allows
      that), ``service_user`` sees and cancels every query.

    First match wins in each section; a user matching none is denied. A user missing
    here (added to the hub since the file was written) reads but changes nothing.
    ref: https://trino.io/docs/current/security/file-system-access-control.html

    >>> rules = access_rules(service_user="service/trino", users=["ada"], admins=["root"])
    >>> rules["schemas"]
    [{'user': '(service/trino|root)', 'owner': True}, {'user': 'ada', 'schema': 'users_ada', 'owner': True}, {'owner': False}]
    """
    users, admins, shared = sorted(set(users)), sorted(set(admins)), sorted(set(shared_schemas))
    schemas = {}
    for name in users:
        schema = user_schema(name)
        if schema in schemas or schema in shared:  # cannot happen (user_schema is one-to-one): refuse anyway
            raise ValueError(f"users {schemas.get(schema)!r} and {name!r} would share the schema {schema}")
        schemas[schema] = name
    everything = _any_of([service_user, *admins])
    own = [(re.escape(name), re.escape(schema)) for schema, name in sorted(schemas.items(), key=lambda i: i[1])]
    shared_re = _any_of(shared) if shared else None
    schema_rules = [{"user": everything, "owner": True}]
    schema_rules += [{"user": u, "schema": s, "owner": True} for u, s in own]
    schema_rules.append({"owner": False})
    table_rules = [{"user": everything, "privileges": _TABLE_ALL}]
    table_rules += [{"user": u, "schema": s, "privileges": _TABLE_ALL} for u, s in own]
    if shared_re:
        table_rules.append({"schema": shared_re, "privileges": _TABLE_ALL})
    table_rules.append({"privileges": ["SELECT", "GRANT_SELECT"]})
    function_rules = [{"user": everything, "privileges": _FUNCTION_ALL}]
    function_rules += [{"user": u, "schema": s, "privileges": _FUNCTION_ALL} for u, s in own]
    if shared_re:
        function_rules.append({"schema": shared_re, "privileges": _FUNCTION_ALL})
    function_rules.append({"privileges": ["EXECUTE", "GRANT_EXECUTE"]})
    return {
        # No catalogs section: every catalog is open to the schema and table rules below.
        "schemas": schema_rules,
        "tables": table_rules,
        "functions": function_rules,
        "procedures": [
            {"user": everything, "privileges": ["EXECUTE", "GRANT_EXECUTE"]},
            {"catalog": "system", "privileges": ["EXECUTE"]},
        ],
        "queries": [
            {"user": re.escape(service_user), "allow": ["execute", "kill", "view"]},
            {"allow": ["execute"]},
        ],
        # Read: system.runtime tables, /v1/node; write (graceful shutdown) for nobody.
        "system_information": [{"allow": ["read"]}],
    }


def front_only_properties(*, jwt_key_file: str, rules_location: str) -> dict[str, dict[str, str]]:
    """What a coordinator sets so that it accepts only the front (pure): every client
    sends a JWT signed with the front's HMAC key (``jwt_key_file``, base64; only the
    front holds it), checked on the requests the front marks ``X-Forwarded-Proto:
    https``, with no user-name-only login over plain HTTP; and the table and query
    rules the front serves (``rules_location``: a file, or the front's ``/rules.json``
    URL on a cluster), read again every :data:`RULES_REFRESH_S` seconds. By file name:
    ``config.properties`` and ``access-control.properties``. The embedded Trino is
    rendered with these (:func:`render_etc`); on a cluster the platform sets them
    (docs/admin-guide.md, "Trino on a cluster").

    >>> props = front_only_properties(jwt_key_file="/k", rules_location="http://hub:8085/rules.json")
    >>> props["access-control.properties"]["security.config-file"]
    'http://hub:8085/rules.json'
    """
    return {
        "config.properties": {
            # Trino checks JWTs only on requests it counts as secure: those the front marks
            # X-Forwarded-Proto: https (no TLS to terminate on the hop from the front).
            # Plain HTTP gets no "insecure" user-name-only login at all.
            # ref: trino io/trino/server/security/AuthenticationFilter.java
            # ref: https://trino.io/docs/current/security/jwt.html
            "http-server.authentication.type": "JWT",
            "http-server.authentication.jwt.key-file": jwt_key_file,
            "http-server.authentication.allow-insecure-over-http": "false",
            "http-server.process-forwarded": "true",
            # Required once authentication is on; resolved from Trino's environment.
            "internal-communication.shared-secret": "${ENV:TRINO_INTERNAL_SECRET}",
        },
        "access-control.properties": {
            "access-control.name": "file",
            "security.config-file": rules_location,
            # The hub's users come and go: Trino reads the rules again (the front rewrites
            # them whole) at most this long after they changed.
            "security.refresh-period": f"{RULES_REFRESH_S}s",
        },
    }


def render_rules(**kwargs) -> str:
    """``rules.json``'s text: :func:`access_rules` as JSON, keys in a stable order."""
    return json.dumps(access_rules(**kwargs), indent=1) + "\n"


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
    jwt_key_file: str | None = None,
    service_user: str = "service/trino",
    users=(),
    admins=(),
    shared_schemas=(),
) -> dict[str, str]:
    """Every file of Trino's ``etc/`` folder, by path relative to it (pure, no I/O).

    The ``hive`` catalog is written only when ``s3_endpoint`` and ``bucket`` are both
    given: one bad catalog file stops the whole server, so none is written half-done.
    With ``s3_keys_in_env`` the catalog reads the keys from Trino's environment;
    without, the AWS SDK's default chain finds them (instance or IRSA credentials).
    With ``jwt_key_file`` (the HMAC key of :mod:`.trino_front`, base64 in a 0600 file)
    every client must send a JWT signed with it: only the front can. The access rules
    (:func:`access_rules`, for ``users``, ``admins`` and ``shared_schemas``) are always
    written; Trino reads them again every :data:`RULES_REFRESH_S` seconds.

    >>> files = render_etc(port=8080, node_id="n1", data_dir="/s/data", etc_dir="/s/etc",
    ...                    trino_home="/t", s3_endpoint="http://127.0.0.1:9000", bucket="b")
    >>> sorted(files)
    ['access-control.properties', 'catalog/hive.properties', 'catalog/tpch.properties', 'config.properties', ...]
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
        # Absolute: Trino's default (etc/access-control.properties) is relative to its working folder.
        "access-control.config-files": f"{etc_dir}/access-control.properties",
    }
    front_only = front_only_properties(jwt_key_file=jwt_key_file or "", rules_location=f"{etc_dir}/rules.json")
    if jwt_key_file:
        config.update(front_only["config.properties"])
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
        "access-control.properties": render_properties(front_only["access-control.properties"]),
        "rules.json": render_rules(service_user=service_user, users=users, admins=admins,
                                   shared_schemas=shared_schemas),
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
