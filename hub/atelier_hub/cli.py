"""The ``atelier`` command: ``dev``, ``profiles``, ``users``, ``usage``, ``install``; on a user's own
machine ``login``, ``vscode``, ``ssh-proxy``, ``kubeconfig`` (atelier_hub.remote) and ``run``,
``jobs``, ``logs``, ``cancel`` (atelier_hub.jobs_cli), ``ray up|status|down`` (atelier_hub.ray_cli).

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
from pathlib import Path

from . import services
from .capacity import CapacityError, CapacitySettings, Request, load_capacity
from .embedded.stack import EmbeddedStack, end_leftovers
from .embedded.state_folder import ADMIN_USER, HUB_RECORD
from .embedded.users import INVITE_LIFETIME, UserError, UsersFile, invite_url, parse_duration
from .install import paths as install
from .origins import resolve_localhost_names
from .private_files import write_private
from .profiles import ProfileError, format_memory, load_profiles
from .services._process import http_status, record, tail

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
    if args.free and (args.hub or not Path(args.state).is_dir()):
        _hub_profiles(args)
        return
    # The last column: what is free now (--free), else each profile's description.
    notes = _free_notes(profiles, Path(args.state), group=args.group) if args.free else None
    _print_profiles("NOW" if notes is not None else "DESCRIPTION",
                    [(p.name, p.default, p.cpu.limit, p.memory.limit, p.gpu_count,
                      notes[p.name] if notes is not None else p.description) for p in profiles])


def _print_profiles(last: str, rows: list[tuple]) -> None:
    """The profiles table: ``rows`` of (name, default, CPUs, memory bytes, GPUs, last column)."""
    print(f"{'NAME':<12} {'CPU':>5} {'MEMORY':>8} {'GPU':>4}  {last}")
    for name, default, cpu, memory, gpus, text in rows:
        star = "*" if default else " "
        print(f"{name + star:<12} {cpu:>5g} {format_memory(memory):>8} {gpus:>4}  {text}")
    print("(* the default)")


def _hub_profiles(args) -> None:
    """``--free`` against a cluster's hub (``--hub``, or no state folder here): the
    profiles the login's user may start, with their cards' capacity lines."""
    from .remote import Login, RemoteError, service_answer

    try:
        login = Login.resolve(args.hub)
        user = service_answer(login.request("GET", "/hub/api/user"), service="hub", what="who you are")["name"]
        answer = service_answer(login.request("GET", f"/hub/api/atelier/users/{user}/capacity"),
                                service="hub", what="the profiles' capacity (a cluster's hub has it)")
    except RemoteError as exc:
        fail(f"no state folder at {args.state} and no hub to ask: pass --state DIR, or log in to a hub ({exc})"
             if not args.hub else str(exc))
    _print_profiles("NOW", [(p["name"], p.get("default"), p["cpu"], p["memory"], p["gpus"],
                             p.get("now", "unknown (the hub cannot read the cluster)")) for p in answer["profiles"]])


def _free_notes(profiles, state: Path, *, group: str | None) -> dict[str, str]:
    """Each profile's capacity line on the embedded stack of ``state``, from the queue as
    its hub last saved it (``STATE/run/capacity.json``), the same lines as the spawn form's."""
    from .capacity import CAPACITY_FILE
    from .embedded.gpus import GPUPool
    from .embedded.spawner_base import SNAPSHOT_FILE, capacity_notes
    from .services.culler import PLAN_FILE

    try:
        settings = load_capacity(state / CAPACITY_FILE) if (state / CAPACITY_FILE).is_file() else CapacitySettings()
    except CapacityError as exc:
        fail(str(exc))
    try:
        snapshot = json.loads((state / SNAPSHOT_FILE).read_text())
    except FileNotFoundError:
        snapshot = None  # no GPU asked for since the hub started: nothing held, nothing waits
    except (OSError, ValueError) as exc:
        fail(f"{state / SNAPSHOT_FILE}: cannot read the queue ({exc}); is `atelier dev --state {state}` running?")
    pool = GPUPool.from_snapshot(snapshot, settings, plan_file=state / PLAN_FILE)
    now = time.time()
    return capacity_notes(pool, profiles, now=now, probe=lambda p: Request(
        key="\0cli/", user="\0cli", group=group or settings.default_group, gpus=p.gpu_count, since=now))


# -- atelier usage -------------------------------------------------------------------------


def cmd_usage(args) -> None:
    from . import usage

    try:
        since = usage.parse_when(args.since) if args.since else None
        until = usage.parse_when(args.until) if args.until else None
    except ValueError as exc:
        fail(f"--since/--until: {exc}")
    if since and until and until <= since:
        fail(f"--until ({args.until}) must be after --since ({args.since})")
    path = Path(args.file) if args.file else Path(args.state) / "usage.jsonl"
    if args.hub or (not args.file and not Path(args.state).is_dir()):
        summary = _hub_usage(args, missing_state=not args.hub)
    else:
        summary = usage.summarize(usage.read_events(path), since=since, until=until)
    sys.stdout.write(usage.render_cost(summary) if args.cost else usage.render(summary, args.format))


def _hub_usage(args, *, missing_state: bool) -> dict:
    """The usage page's summary from a hub, as the login's user sees it (their own lines;
    an admin's: everyone's)."""
    from .remote import Login, RemoteError, service_answer

    try:
        login = Login.resolve(args.hub)
        params = {k: v for k, v in (("since", args.since), ("until", args.until)) if v}
        return service_answer(login.request("GET", "/services/usage/api/usage", params=params),
                              service="usage page", what="your usage")
    except RemoteError as exc:
        if missing_state:
            fail(f"no state folder at {args.state} and no hub to ask: pass --state DIR (or --file USAGE.jsonl), "
                 f"or log in to a hub ({exc})")
        fail(str(exc))


# -- atelier users -------------------------------------------------------------------------


def _invite_line(state: Path, name: str, code: str, expires_in: int) -> str:
    try:
        base = EmbeddedStack.load(state).url
    except (FileNotFoundError, ValueError):
        base = "http://HUB"  # never started: the link's path is all that is known
    hours = expires_in / 3600
    when = f"{hours:g} hours" if hours < 48 else f"{hours / 24:g} days"
    return f"Invite link for {name} (shown once; works once, for {when}): {invite_url(base, name, code)}"


def _remove_from_hub(state: Path, name: str) -> str:
    """Delete ``name`` through the running hub's REST API (stops their servers, revokes
    their tokens and cookies, runs the removal hook). Says what happened."""
    import urllib.error
    import urllib.request

    try:
        stack = EmbeddedStack.load(state)
        token = stack.admin_token() if stack.path("admin-token").exists() else ""
    except (FileNotFoundError, ValueError):
        return "the hub has never run here"
    url = f"http://127.0.0.1:{stack.hub_port}/hub/api/users/{name}"
    deadline = time.monotonic() + 120
    while True:
        req = urllib.request.Request(url, method="DELETE", headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(req, timeout=120):
                return "removed from the running hub too (servers stopped, tokens, cookies and S3 account revoked)"
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return "the running hub never knew them"
            body = exc.read().decode(errors="replace")
            if exc.code == 400 and "please wait" in body and time.monotonic() < deadline:
                time.sleep(1)  # a server of theirs is stopping
                continue
            fail(f"the hub at {url} refused to delete {name} ({exc.code}: {body[:200]}); they are out of "
                 "users.json and the hub deletes them at its next start")
        except OSError:
            return "the hub is not running: it deletes them from its database at its next start"


def cmd_users(args) -> None:
    state = Path(args.state)
    users = UsersFile(state / "users.json")
    try:
        expires_in = parse_duration(args.expires_in) if getattr(args, "expires_in", None) else INVITE_LIFETIME
        if args.action == "list":
            now = time.time()
            for name, entry in sorted(users.load().items()):
                invite = entry.get("invite")
                flags = [f for f, on in (
                    ("admin", entry.get("admin")),
                    ("invited", invite and invite.get("expires", 0) > now),
                    ("invite expired", invite and invite.get("expires", 0) <= now),
                    ("no password yet", entry.get("password") is None and not invite)) if on]
                print(name + (f" ({', '.join(flags)})" if flags else ""))
        elif args.action == "add":
            secret = users.add(args.name, admin=args.admin, password=not args.no_password, expires_in=expires_in)
            if args.no_password:
                print(f"Added {args.name}. " + _invite_line(state, args.name, secret, expires_in))
            else:
                print(f"Added {args.name}. Password (shown once): {secret}")
        elif args.action == "invite":
            print(_invite_line(state, args.name, users.invite(args.name, expires_in=expires_in), expires_in))
        elif args.action == "passwd":
            print(f"New password for {args.name} (shown once): {users.set_password(args.name)}")
        elif args.action == "remove":
            # The file first: whatever happens next, the hub's next start deletes them.
            users.remove(args.name)
            print(f"Removed {args.name}: {_remove_from_hub(state, args.name)}. Their home folder is kept.")
    except UserError as exc:
        fail(str(exc))


# -- atelier dev ---------------------------------------------------------------------------


def _stop_hub(hub: subprocess.Popen, state: Path, *, grace: float = 120) -> None:
    """Stop the hub in order (it stops sessions and services), then end whatever a hub
    that could not finish left behind: nothing of this stack stays running."""
    if hub.poll() is None:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(grace)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
    end_leftovers(state)
    # A service's supervisor that the hub had not registered yet (a start cut short)
    # ends itself within half a second of the hub's exit: wait for that, so that
    # "nothing is left running" holds when this returns.
    mark = str(Path(state).resolve()).encode()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _processes_mentioning(mark):
        time.sleep(0.1)


def _processes_mentioning(mark: bytes) -> list[int]:
    """Other processes whose command line names ``mark`` (this stack's state folder)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) != os.getpid() and mark in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def _check_services(args) -> tuple[str, ...]:
    """The services to leave out (``--without``), once every other one's parts are installed."""
    without = tuple(dict.fromkeys([*args.without, *(["trino"] if args.no_trino else [])]))
    for name in without:
        try:
            svc = services.by_name(name)
        except KeyError as exc:
            fail(f"--without {name}: {exc.args[0]}")
        if not svc.optional:
            optional = ", ".join(s.name for s in services.SERVICES if s.optional) or "none"
            fail(f"--without {name}: {svc.title} cannot be left out (optional services: {optional})")
    if not install.tool_path("configurable-http-proxy").exists():
        fail(f"configurable-http-proxy is not installed ({install.tool_path('configurable-http-proxy')}); "
             "run `make install`")
    for svc in services.SERVICES:
        if svc.name in without:
            continue
        missing = install.missing(svc.needs)
        if missing:
            alt = f", or start without it: atelier dev --without {svc.name}" if svc.optional else ""
            fail(f"{svc.title} needs {', '.join(missing)}, which is not installed; run `make install`{alt}")
    return without


def _login_line(stack: EmbeddedStack, password: str | None) -> str:
    secret_file = stack.path("initial-admin-password")
    if password and sys.stdout.isatty():
        return (f"user {ADMIN_USER}, password {password}  (shown once, also in {secret_file}; "
                f"new one: atelier users passwd {ADMIN_USER})")
    if password or secret_file.exists():
        # Output that goes to a file or a pipe is a log: it gets the path, never the password.
        return f"user {ADMIN_USER}, password in {secret_file} (mode 0600; delete it once read)"
    return "your user name and password (add users: atelier users add NAME)"


def _session_mode():
    """Containers where a Docker engine runs (started here when none does) and the base
    image is built; else the single-user process mode. The hub gets the same answer."""
    from .embedded.engine import session_mode

    mode = session_mode(start=True)
    print(f"Sessions: {mode.name} mode" + (f" ({mode.reason})" if mode.reason else ""), flush=True)
    return mode


def cmd_dev(args) -> None:
    # Everything the hub and its services write in the state folder (database, logs,
    # S3 objects, MLflow's store) is private to this OS user.
    os.umask(0o077)
    try:
        profiles = load_profiles(args.profiles)
    except ProfileError as exc:
        fail(f"the profiles in {args.profiles} are not valid:\n{exc}")
    without = _check_services(args)
    capacity = None
    if args.capacity:
        try:
            capacity = load_capacity(args.capacity)
        except CapacityError as exc:
            fail(f"the capacity settings are not valid:\n{exc}")
    if (Path(args.state) / "run").is_dir():
        ended = end_leftovers(args.state)
        if ended:
            print(f"Cleaned up after a hub that stopped without cleaning up: ended {', '.join(ended)}")
    try:
        stack, password = EmbeddedStack.prepare(args.state, port=args.port, profiles_dir=args.profiles, without=without)
    except (OSError, services.SettingsError) as exc:  # a port in use; a setting an admin wrote (Trino's shared schemas)
        fail(str(exc))
    from .capacity import CAPACITY_FILE

    if capacity is not None:
        write_private(stack.path(CAPACITY_FILE), capacity.model_dump_json(indent=2))
    else:  # a start without --capacity is back to the defaults
        stack.path(CAPACITY_FILE).unlink(missing_ok=True)
    mode = _session_mode()
    config = REPO / "hub" / "jupyterhub_config.py"
    if not config.exists():  # installed without the repository: write the same few lines
        config = stack.path("jupyterhub_config.py")
        config.write_text("import atelier_hub\natelier_hub.configure(c)\n")
    log = stack.path("logs/hub.log")
    t0 = time.monotonic()
    print(f"Starting Atelier ({len(profiles)} profiles) with state in {stack.root} ...", flush=True)
    env = {**os.environ, "ATELIER_STATE": str(stack.root), "ATELIER_SESSIONS": mode.name}
    with open(log, "ab") as out:
        hub = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(config)],
            cwd=stack.root, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the hub in order
        )
    record(stack.path(HUB_RECORD), hub.pid)

    stopping: list[float] = []

    def stop(*_):
        # Only signal here: the main loop waits (a wait() inside a signal handler would
        # deadlock on the wait() it interrupted).
        if not stopping:
            print("\nStopping Atelier (sessions, services, proxy; up to a minute) ...", flush=True)
            stopping.append(time.monotonic())
            hub.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    deadline = t0 + args.timeout

    def gave_up(what: str) -> None:
        _stop_hub(hub, stack.root)
        again = f"\n  Log in next time with: {_login_line(stack, password)}" if password else ""
        fail(f"{what}; nothing is left running.{again}")

    # 1. The hub and its login page: usable as soon as the hub and the proxy are up.
    # The hub's own port first (its health check is not logged), then the public page
    # (routed as soon as the hub listens: services come up behind their routes; config.py).
    health, login = f"http://127.0.0.1:{stack.hub_port}/hub/health", f"{stack.url}/hub/login"
    while (http_status(health) != 200 or http_status(login) != 200):
        if stopping:
            break
        if hub.poll() is not None:
            end_leftovers(stack.root)
            fail(f"the hub exited (code {hub.returncode}) while starting; last lines of {log}:\n{tail(log)}")
        if time.monotonic() > deadline:
            gave_up(f"the hub did not answer at {login} in {args.timeout:.0f} s; see {log}")
        time.sleep(0.2)
    if not stopping:
        print(f"""
Atelier is running at {stack.url}/  (login page ready in {time.monotonic() - t0:.1f} s)
  Log in:      {_login_line(stack, password)}
  Profiles:    {', '.join(p.name for p in profiles)}
  Sessions:    {mode.banner}
  State:       {stack.root}  (users, homes, MLflow runs, S3 objects; `make reset` wipes it)
  Hub log:     {log}
  Admin token: {stack.path('admin-token')}  (for the hub's REST API)
Services (each line appears once it is ready):""", flush=True)

    # 2. The services, each announced when it is ready; the login page already works.
    pending = list(stack.running)
    while pending and not stopping:
        if hub.poll() is not None:
            break
        for svc in list(pending):
            if svc.ready(stack):
                pending.remove(svc)
                print(f"  {svc.title + ':':<12} {svc.banner(stack)}  [{time.monotonic() - t0:.0f} s]", flush=True)
        if pending and time.monotonic() > deadline:
            lines = "\n".join(f"  {svc.title}: not ready; see {svc.log_path(stack)}" for svc in pending)
            gave_up(f"not ready after {args.timeout:.0f} s:\n{lines}")
        time.sleep(0.3)
    if not pending and not stopping and hub.poll() is None:
        print(f"Every service is ready ({time.monotonic() - t0:.0f} s). Press Ctrl-C to stop.", flush=True)
        if args.ready_file:
            Path(args.ready_file).write_text(json.dumps({"url": stack.url, "state": str(stack.root)}))

    while hub.poll() is None:
        if stopping and time.monotonic() - stopping[0] > 120:
            hub.kill()
        time.sleep(0.2)
    if stopping:
        end_leftovers(stack.root)
        print(f"Stopped. Your state is kept in {stack.root}")
        return
    ended = end_leftovers(stack.root)
    fail(f"the hub stopped unexpectedly (code {hub.returncode}); ended what it left "
         f"({', '.join(ended) or 'nothing'}); running sessions are re-adopted by the next `atelier dev`. "
         f"Last lines of {log}:\n{tail(log)}")


def _install(args) -> None:
    from .install.__main__ import main as install_main

    install_main(["--test"] if args.test else [])


def _remote(name: str):
    """A command of atelier_hub.remote, its RemoteError ending as one clear line."""
    def run(args) -> None:
        from . import remote

        try:
            getattr(remote, name)(args)
        except remote.RemoteError as exc:
            fail(str(exc))
    return run


def _wrap_remote(func):
    """A command of atelier_hub.jobs_cli or .credentials_cli, its RemoteError ending as one clear line."""
    def run(args) -> None:
        from .remote import RemoteError

        try:
            func(args)
        except RemoteError as exc:
            fail(str(exc))
    return run


def _add_remote_parsers(sub) -> None:
    hub_help = "the hub's URL (default: $ATELIER_HUB_URL, else the saved login)"
    login = sub.add_parser("login", help="save a hub URL and token (0600) for the commands below")
    login.add_argument("--hub", required=True, help="the hub's URL, e.g. https://hub.example.org")
    login.add_argument("--token-stdin", action="store_true", help="read the token from stdin (no prompt)")
    login.set_defaults(func=_remote("cmd_login"))

    vs = sub.add_parser("vscode", help="set up VS Code Remote-SSH to a server (starts it when stopped)")
    vs.add_argument("server", nargs="?", default="", help="a named server (default: your default server)")
    vs.add_argument("--hub", help=hub_help)
    vs.add_argument("--profile", help="profile to start the server with when it is stopped")
    vs.add_argument("--ssh-config", metavar="FILE", help="write the Host block here (default ~/.ssh/config)")
    vs.add_argument("--identity-file", metavar="KEY", help="SSH key to use (default ~/.ssh/atelier_ed25519, "
                    "made when missing)")
    vs.add_argument("--no-open", action="store_true", help="print the `code` command instead of running it")
    vs.add_argument("--timeout", type=float, default=300, help="seconds to wait for the server to start")
    vs.set_defaults(func=_remote("cmd_vscode"))

    proxy = sub.add_parser("ssh-proxy", help="ssh's ProxyCommand: a session's sshd through the hub")
    proxy.add_argument("--hub", help=hub_help)
    proxy.add_argument("--user", required=True, help="the server's owner")
    proxy.add_argument("--server", default="", help="a named server")
    proxy.set_defaults(func=_remote("cmd_ssh_proxy"))

    kc = sub.add_parser("kubeconfig", help="a kubeconfig reaching only your own pods (cluster mode)")
    kc.add_argument("server", nargs="?", default="", help="a named server (default: your default server)")
    kc.add_argument("--hub", help=hub_help)
    kc.add_argument("--output", "-o", metavar="FILE",
                    help="where to write it (default ~/.kube/atelier-USER[-SERVER].yaml)")
    kc.add_argument("--duration", type=int, default=8 * 3600, metavar="SECONDS",
                    help="token lifetime asked for (the hub caps it; default 8 h)")
    kc.set_defaults(func=_remote("cmd_kubeconfig"))


def build_parser() -> argparse.ArgumentParser:
    """The ``atelier`` command's parser, every subcommand with its ``func`` (the docs'
    test, tests/unit/test_schema_and_docs.py, reads the subcommands from it)."""
    ap = argparse.ArgumentParser(prog="atelier", description="Atelier: a managed development environment for ML engineers.")
    sub = ap.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the embedded stack on 127.0.0.1 (hub, profiles, MLflow, S3, Trino)")
    dev.add_argument("--port", type=int, default=8000, help="public port (default 8000)")
    dev.add_argument("--state", default=_default_state(), help="state folder (default ./state or $ATELIER_STATE)")
    dev.add_argument("--profiles", default=_default_profiles(), help="profiles folder (default ./profiles)")
    dev.add_argument("--timeout", type=float, default=300, help="seconds to wait for the stack to be ready")
    dev.add_argument("--without", action="append", default=[], metavar="SERVICE",
                     help="leave an optional service out (repeatable; e.g. trino): sessions get no settings for it")
    dev.add_argument("--no-trino", action="store_true", help="the same as --without trino")
    dev.add_argument("--capacity", metavar="FILE",
                     help="capacity settings (YAML or JSON): the GPU pool, GPUs per user, teams' fair share "
                          "(docs/reference.md, \"Capacity settings\")")
    dev.add_argument("--ready-file", help=argparse.SUPPRESS)
    dev.set_defaults(func=cmd_dev)

    prof = sub.add_parser("profiles", help="list the profiles, or validate a folder with --check DIR")
    prof.add_argument("--dir", default=_default_profiles(), help="profiles folder to list")
    prof.add_argument("--check", metavar="DIR", help="validate DIR; exit 1 on any error")
    prof.add_argument("--free", action="store_true",
                      help="also what is free now on the embedded stack of --state: fits now, or your place in "
                           "line; on a cluster (--hub, or no state folder here), the hub's profiles for your login")
    prof.add_argument("--hub", help="the hub to ask (with --free; default: your `atelier login`)")
    prof.add_argument("--state", default=_default_state(), help="state folder of the stack (with --free)")
    prof.add_argument("--group", help="the hub group to reckon the place in line for (with --free; default: the "
                                      "capacity settings' default group)")
    prof.set_defaults(func=cmd_profiles)

    users = sub.add_parser("users", help="manage embedded-mode logins")
    users.add_argument("--state", default=_default_state(), help="state folder")
    usub = users.add_subparsers(dest="action", required=True)
    usub.add_parser("list", help="list users")
    add = usub.add_parser("add", help="add a user and print a generated password once")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="make them a hub admin")
    add.add_argument("--no-password", action="store_true",
                     help="print a one-time invite link instead, with which they choose their password")
    add.add_argument("--expires-in", default=None, metavar="DURATION",
                     help="how long the invite link works (e.g. 30m, 12h, 7d; default 7d)")
    inv = usub.add_parser("invite", help="print a new one-time invite link (the old one stops working)")
    inv.add_argument("name")
    inv.add_argument("--expires-in", default=None, metavar="DURATION", help="e.g. 30m, 12h, 7d (default 7d)")
    pw = usub.add_parser("passwd", help="give a user a new generated password, printed once")
    pw.add_argument("name")
    rm = usub.add_parser("remove", help="remove a user from the users file and the hub (their home is kept)")
    rm.add_argument("name")
    users.set_defaults(func=cmd_users)

    use = sub.add_parser("usage", help="server count, CPU-, memory- and GPU-hours per user and profile")
    use.add_argument("--state", default=_default_state(), help="state folder (its usage.jsonl)")
    use.add_argument("--file", help="a usage file elsewhere (a cluster hub's, copied out)")
    use.add_argument("--since", metavar="DATE", help="from this date or time (UTC), e.g. 2026-03-01")
    use.add_argument("--until", metavar="DATE", help="up to this date or time (UTC); default: now")
    use.add_argument("--format", choices=("table", "csv", "json"), default="table")
    use.add_argument("--cost", action="store_true",
                     help="the cost only: per user, profile, kind, group and day, most costly first")
    use.add_argument("--hub", help="ask this hub's usage page instead, as your login's user (after `atelier login`, "
                     "or with ATELIER_HUB_URL and ATELIER_TOKEN): your own lines, an admin's everyone's; "
                     "the default where there is no state folder")
    use.set_defaults(func=cmd_usage)

    from .cluster.values import add_render_parser

    add_render_parser(sub, profiles_default=_default_profiles())

    _add_remote_parsers(sub)

    from .jobs_cli import add_parsers as add_job_parsers

    add_job_parsers(sub, _wrap_remote)

    from .ray_cli import add_parsers as add_ray_parsers

    add_ray_parsers(sub, _wrap_remote)

    from .credentials_cli import add_parsers as add_credentials_parsers

    add_credentials_parsers(sub, _wrap_remote)

    inst = sub.add_parser("install", help="install what is missing (what `make install` runs)")
    inst.add_argument("--test", action="store_true", help="also what the tests need")
    inst.set_defaults(func=_install)
    return ap


def main(argv: list[str] | None = None) -> None:
    # A user's server answers at NAME.localhost on an embedded hub, as browsers resolve it.
    resolve_localhost_names()
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
