"""The ``atelier`` command: ``dev``, ``profiles``, ``users``, ``install``.

Rule this module keeps: bad input ends with one clear line on stderr naming the thing
and the fix, and exit status 2; no traceback for a user's mistake. Secrets are shown
only where the person asked for one (a new password), never logged.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .auth import UserError, UsersFile
from .embedded import ADMIN_USER, Embedded, write_secret
from .install import paths as install
from .profiles import ProfileError, format_memory, load_profiles

REPO = install.REPO


def _default_state() -> str:
    return os.environ.get("ATELIER_STATE") or str(REPO / "state")


def _default_profiles() -> str:
    return os.environ.get("ATELIER_PROFILES") or str(REPO / "profiles")


def fail(msg: str) -> None:
    print(f"atelier: {msg}", file=sys.stderr)
    raise SystemExit(2)


# -- atelier profiles ----------------------------------------------------------------------


def cmd_profiles(args) -> None:
    directory = args.check or args.dir
    try:
        profiles = load_profiles(directory)
    except ProfileError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(1) from None
    if args.check:
        print(f"{len(profiles)} profiles in {directory} are valid: {', '.join(p.name for p in profiles)}")
        return
    print(f"{'NAME':<12} {'CPU':>5} {'MEMORY':>8} {'GPU':>4}  DESCRIPTION")
    for p in profiles:
        star = "*" if p.default else " "
        print(f"{p.name + star:<12} {p.cpu.limit:>5g} {format_memory(p.memory.limit):>8} "
              f"{p.gpu_count:>4}  {p.description}")
    print("(* the default)")


# -- atelier users -------------------------------------------------------------------------


def cmd_users(args) -> None:
    users = UsersFile(Path(args.state) / "users.json")
    try:
        if args.action == "list":
            for name, entry in sorted(users.load().items()):
                flags = [f for f, on in (("admin", entry.get("admin")),
                                         ("no password yet", entry.get("password") is None)) if on]
                print(name + (f" ({', '.join(flags)})" if flags else ""))
        elif args.action == "add":
            password = users.add(args.name, admin=args.admin, password=not args.no_password)
            if password:
                print(f"Added {args.name}. Password (shown once): {password}")
            else:
                print(f"Added {args.name}; they choose a password (8+ characters) at first login.")
        elif args.action == "passwd":
            print(f"New password for {args.name} (shown once): {users.set_password(args.name)}")
        elif args.action == "remove":
            users.remove(args.name)
            print(f"Removed {args.name}; their home folder is kept.")
    except UserError as exc:
        fail(str(exc))


# -- atelier dev ---------------------------------------------------------------------------


def _get(url: str, timeout: float = 3) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_ready(stack: Embedded, hub: subprocess.Popen, log: Path, *, timeout: float, stopping: list) -> bool:
    """Until the hub, its proxy and MLflow answer through the public URL (False: stopped)."""
    deadline = time.monotonic() + timeout
    # (url, answers that count as ready): the proxy answers 404 until the hub adds its
    # routes, and S3 answers an anonymous request with 403.
    checks = {
        "hub": (f"{stack.url}/hub/api/", {200}),
        "MLflow": (f"{stack.url}/services/mlflow/health", {200}),
        "S3": (f"http://127.0.0.1:{stack.s3_port}/", {200, 403}),
    }
    if stack.trino_port:
        # Trino has no route through the proxy: its launcher writes STATE/trino/ready
        # once a real query has succeeded (/v1/info says "ready" a little too early).
        from .services.trino import read_ready

        checks["Trino"] = (None, lambda: read_ready(stack.path("trino")) is not None)
    pending = dict(checks)
    while pending:
        if stopping:
            return False
        if hub.poll() is not None:
            fail(f"the hub exited (code {hub.returncode}) while starting; last lines of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            fail(f"{', '.join(pending)} not ready after {timeout:.0f} s; see {log}")
        for name, (url, ok) in list(pending.items()):
            if ok() if callable(ok) else _get(url) in ok:
                pending.pop(name)
        time.sleep(0.5)
    return True


def _session_mode():
    """Containers where a Docker engine runs (started here when none does) and the base
    image is built; else the single-user process mode. The hub gets the same answer."""
    from .engine import session_mode

    mode = session_mode(start=True)
    print(f"Sessions: {mode.name} mode" + (f" ({mode.reason})" if mode.reason else ""), flush=True)
    return mode


def cmd_dev(args) -> None:
    try:
        profiles = load_profiles(args.profiles)
    except ProfileError as exc:
        fail(f"the profiles in {args.profiles} are not valid:\n{exc}")
    for tool in ("configurable-http-proxy", "versitygw"):
        if not install.tool_path(tool).exists():
            fail(f"{tool} is not installed ({install.tool_path(tool)}); run `make install`")
    if not args.no_trino and not install.trino_installed():
        fail("Trino is not installed; run `make install`, or start without it: atelier dev --no-trino")
    try:
        stack, password = Embedded.prepare(args.state, port=args.port, profiles_dir=args.profiles,
                                           trino=not args.no_trino)
    except OSError as exc:
        fail(str(exc))
    mode = _session_mode()
    config = REPO / "hub" / "jupyterhub_config.py"
    if not config.exists():  # installed without the repository: write the same few lines
        config = stack.path("jupyterhub_config.py")
        config.write_text("import atelier_hub\natelier_hub.configure(c)\n")
    log = stack.path("logs/hub.log")
    t0 = time.monotonic()
    print(f"Starting Atelier ({len(profiles)} profiles) with state in {stack.root}")
    print("  hub, proxy, S3 and MLflow: MLflow takes up to a minute on a busy machine ...", flush=True)
    env = {**os.environ, "ATELIER_STATE": str(stack.root), "ATELIER_SESSIONS": mode.name}
    with open(log, "ab") as out:
        hub = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(config)],
            cwd=stack.root, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the hub in order
        )

    stopping: list[float] = []

    def stop(*_):
        # Only signal here: the main loop waits (a wait() inside a signal handler would
        # deadlock on the wait() it interrupted).
        if not stopping:
            print("\nStopping Atelier (sessions, MLflow, S3, proxy; up to a minute) ...", flush=True)
            stopping.append(time.monotonic())
            hub.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    ready = wait_ready(stack, hub, log, timeout=args.timeout, stopping=stopping)
    if password and not sys.stdout.isatty():
        # Output that goes to a file or a pipe is a log: the password goes to a file only
        # its owner can read, and the log gets its path.
        secret_file = stack.path("initial-admin-password")
        write_secret(secret_file, password + "\n")
        login = f"user {ADMIN_USER}, password in {secret_file} (mode 0600; delete it once read)"
    elif password:
        login = f"user {ADMIN_USER}, password {password}  (shown once; new one: atelier users passwd {ADMIN_USER})"
    else:
        login = "your user name and password (add users: atelier users add NAME)"
    print(f"""
Atelier is running at {stack.url}/  (ready in {time.monotonic() - t0:.0f} s)
  Log in:      {login}
  MLflow:      {stack.url}/services/mlflow/  (same login)
  Trino:       {f"http://127.0.0.1:{stack.trino_port} (sessions: atelier_lab.connect_trino(), %sql, trino)"
                if stack.trino_port else "off (--no-trino)"}
  Sessions:    {mode.banner}
  Profiles:    {', '.join(p.name for p in profiles)}
  State:       {stack.root}  (users, homes, MLflow runs, S3 objects; `make reset` wipes it)
  Hub log:     {log}
  Admin token: {stack.path('admin-token')}  (for the hub's REST API)
Press Ctrl-C to stop.""" if ready else f"  Log in next time with: {login}", flush=True)
    if ready and args.ready_file:
        Path(args.ready_file).write_text(json.dumps({"url": stack.url, "state": str(stack.root)}))
    while hub.poll() is None:
        if stopping and time.monotonic() - stopping[0] > 120:
            hub.kill()
        time.sleep(0.2)
    if stopping:
        print(f"Stopped. Your state is kept in {stack.root}")
        return
    fail(f"the hub stopped unexpectedly (code {hub.returncode}); last lines of {log}:\n{_tail(log)}")


def _install(args) -> None:
    from .install.__main__ import main as install_main

    install_main(["--test"] if args.test else [])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="atelier", description="Atelier: a managed development environment for ML engineers.")
    sub = ap.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the embedded stack on 127.0.0.1 (hub, profiles, MLflow, S3)")
    dev.add_argument("--port", type=int, default=8000, help="public port (default 8000)")
    dev.add_argument("--state", default=_default_state(), help="state folder (default ./state or $ATELIER_STATE)")
    dev.add_argument("--profiles", default=_default_profiles(), help="profiles folder (default ./profiles)")
    dev.add_argument("--timeout", type=float, default=300, help="seconds to wait for the stack to be ready")
    dev.add_argument("--no-trino", action="store_true",
                     help="run without Trino (for machines without Java; sessions get no Trino settings)")
    dev.add_argument("--ready-file", help=argparse.SUPPRESS)
    dev.set_defaults(func=cmd_dev)

    prof = sub.add_parser("profiles", help="list the profiles, or validate a folder with --check DIR")
    prof.add_argument("--dir", default=_default_profiles(), help="profiles folder to list")
    prof.add_argument("--check", metavar="DIR", help="validate DIR; exit 1 on any error")
    prof.set_defaults(func=cmd_profiles)

    users = sub.add_parser("users", help="manage embedded-mode logins")
    users.add_argument("--state", default=_default_state(), help="state folder")
    usub = users.add_subparsers(dest="action", required=True)
    usub.add_parser("list", help="list users")
    add = usub.add_parser("add", help="add a user and print a generated password once")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="make them a hub admin")
    add.add_argument("--no-password", action="store_true", help="let them choose it at first login")
    pw = usub.add_parser("passwd", help="give a user a new generated password, printed once")
    pw.add_argument("name")
    rm = usub.add_parser("remove", help="remove a user's login (their home is kept)")
    rm.add_argument("name")
    users.set_defaults(func=cmd_users)

    from .cluster.values import add_render_parser

    add_render_parser(sub, profiles_default=_default_profiles())

    inst = sub.add_parser("install", help="install what is missing (what `make install` runs)")
    inst.add_argument("--test", action="store_true", help="also what the tests need")
    inst.set_defaults(func=_install)

    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
