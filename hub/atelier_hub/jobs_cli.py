"""``atelier run``, ``atelier jobs``, ``atelier logs``, ``atelier cancel``: the jobs service's client.

Rule this module keeps: it talks only to the jobs service (``/services/jobs/api/``)
with the user's login (:class:`atelier_hub.remote.Login`: ``atelier login``, or
``ATELIER_HUB_URL`` + ``ATELIER_TOKEN``); the service's refusals
are printed as they come (they name the field and the fix), with exit status 2. A
followed job's output goes to stdout byte for byte, and ``atelier run`` exits with the
job's own exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

from .embedded.users import UserError, parse_duration
from .remote import HubUnreachable, Login, RemoteError, service_answer

API = "/services/jobs/api/jobs"
#: seconds between two reads of a followed job's output
POLL = 1.0
#: how long a follower waits for a hub or jobs service that restarts (the job runs on meanwhile)
DOWN_S = 300.0
#: what the proxy answers for a service that is not up (yet)
UNAVAILABLE = (502, 503, 504)
OVER = ("succeeded", "failed", "cancelled")


def _answer(r, what: str) -> dict:
    return service_answer(r, service="jobs service", what=what)


def _login(args) -> Login:
    return Login.resolve(getattr(args, "hub", None))


def follow(login: Login, name: str, *, out=None, say=None) -> int | None:
    """Print the output of job ``name`` from its start until it ends; its exit code
    (None: it ended without one). A hub or jobs service that does not answer for a while
    (a restart) is waited for up to :data:`DOWN_S`, said once on stderr; the output goes
    on from where it was."""
    out = out or sys.stdout.buffer
    announce, say = say is not None, say or _say
    offset, down, answered = 0, None, False
    while True:
        try:
            r = login.request("GET", f"{API}/{quote(name, safe='')}/log", params={"offset": offset})
            why = None if _from_the_service(r) else f"the jobs service answered {r.status_code}"
            # Once the service has answered (or the hub was down), anything else is a restart
            # under way; before, only the proxy's own refusals are.
            why = why if answered or down is not None or r.status_code in UNAVAILABLE else None
        except HubUnreachable as exc:
            why = str(exc).split(";")[0]
        if why:
            # A hub or service restart: the job runs on; so does the follower, from its offset.
            if down is None:
                down = time.monotonic()
                say(f"{why}; job {name} runs on: trying again for up to {DOWN_S / 60:g} min")
            elif time.monotonic() - down > DOWN_S:
                raise RemoteError(f"{why} for {DOWN_S / 60:g} min; job {name} may still be running: "
                                  f"`atelier logs {name} -f` follows it again")
            time.sleep(POLL)
            continue
        if down is not None:
            say("the jobs service answers again; following on")
            down = None
        answered = True
        if r.status_code >= 400:
            _answer(r, f"the output of {name}")
        out.write(r.content)
        out.flush()
        offset = int(r.headers.get("X-Atelier-Job-Offset", offset + len(r.content)))
        state = r.headers.get("X-Atelier-Job-State", "")
        if state in OVER and not r.content:
            code = r.headers.get("X-Atelier-Job-Exit-Code", "")
            if announce:
                say(f"Job {name} {state}" + (f" (exit code {code})" if code else ""))
            return int(code) if code else None
        if not r.content:
            time.sleep(POLL)


def _from_the_service(r) -> bool:
    """Whether ``r`` is the jobs service's answer: its output (with its offset header), or
    its refusal (JSON); not the proxy's 502-504 while the service is down, nor the hub's own
    redirect or 404 page while the service's route is not back yet."""
    if r.status_code in UNAVAILABLE:
        return False
    if r.status_code < 400:
        return "X-Atelier-Job-Offset" in r.headers
    return r.headers.get("Content-Type", "").startswith("application/json")


def _say(line: str) -> None:
    print(f"atelier: {line}", file=sys.stderr, flush=True)


def parse_parameters(args: list[str]) -> dict:
    """A notebook job's ``-p NAME=VALUE`` (or ``-pNAME=VALUE``): VALUE as JSON where it is
    (numbers, true, null), else the text.

    >>> parse_parameters(["-p", "lr=0.1", "-pnote=first try", "-p", "on=true"])
    {'lr': 0.1, 'note': 'first try', 'on': True}
    """
    found, rest = {}, list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-p" and rest:
            arg = rest.pop(0)
        elif arg.startswith("-p"):
            arg = arg[2:]
        else:
            raise RemoteError(f"{arg!r}: after a notebook, give parameters as -p NAME=VALUE "
                              "(atelier run nb.ipynb -p lr=0.1)")
        name, eq, value = arg.partition("=")
        if not eq:
            raise RemoteError(f"-p {arg}: give NAME=VALUE, e.g. -p lr=0.1")
        try:
            found[name] = json.loads(value)
        except ValueError:
            found[name] = value
    return found


def cmd_run(args) -> None:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise RemoteError("no command: give it after --, e.g. atelier run --profile cpu-small -- python train.py")
    try:
        timeout = parse_duration(args.timeout, option="--timeout", example="2h") if args.timeout else None
    except UserError as exc:
        raise RemoteError(str(exc)) from None
    body = {"command": command, "profile": args.profile, "name": args.name, "cwd": args.cwd, "timeout": timeout}
    if command[0].endswith(".ipynb") and args.command[:1] != ["--"]:
        body.update(command=None, notebook=command[0], parameters=parse_parameters(command[1:]))
    login = _login(args)
    job = _answer(login.request("POST", API, json={k: v for k, v in body.items() if v}), "the submission")
    name = job["name"]
    _say(f"job {name} submitted (profile {job['profile']})" + ("" if args.detach else
         "; following its output (Ctrl-C detaches)"))
    if args.detach:
        print(name)
        return
    try:
        code = follow(login, name, say=_say)
    except KeyboardInterrupt:
        if args.cancel_on_interrupt:
            _answer(login.request("DELETE", f"{API}/{quote(name, safe='')}"), f"cancelling {name}")
            _say(f"cancelled job {name} (--cancel-on-interrupt)")
        else:
            _say(f"detached; job {name} keeps running. Follow it: atelier logs {name} -f; "
                 f"cancel it: atelier cancel {name}")
        raise SystemExit(130) from None
    _say_runs(login, name)
    raise SystemExit(1 if code is None else code)


def _say_runs(login: Login, name: str) -> None:
    """One line per MLflow run the job recorded with ``repro.start_run()``: where to see it."""
    r = login.request("GET", f"{API}/{quote(name, safe='')}")
    if r.status_code >= 400:
        return  # the job's end is said; its runs are on the jobs page
    origin = urlsplit(login.hub_url)
    for run in r.json().get("runs") or []:
        where = (f"{origin.scheme}://{origin.netloc}{run['url']}" if run.get("url")
                 else "spooled in the job's home: `repro sync` there uploads it")
        _say(f"MLflow run {run['run_id']}: {where}")


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m04s`` or ``12s``.

    >>> _duration(3725), _duration(184), _duration(12.4)
    ('1h02m', '3m04s', '12s')
    """
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def jobs_table(jobs: list[dict], *, everyone: bool) -> list[tuple[str, ...]]:
    """`atelier jobs`' table (its head first) from the service's jobs; a user column where
    ``everyone``'s are listed and more than one user has some. A job waiting for GPUs says
    its place in its state: ``queued (2nd of 3 waiting, about 25 min)``."""
    who = everyone and len({j["user"] for j in jobs}) > 1
    head = ("USER", ) if who else ()
    rows = [(*((j["user"],) if who else ()), j["name"], j["profile"],
             j["state"] + (f" ({j['queue']['text']})" if j.get("queue") else ""), _when(j["started"]),
             _duration(j["duration"]), "-" if j["exit_code"] is None else str(j["exit_code"])) for j in jobs]
    return [(*head, "NAME", "PROFILE", "STATE", "STARTED (UTC)", "DURATION", "EXIT"), *rows]


def cmd_jobs(args) -> None:
    login = _login(args)
    jobs = _answer(login.request("GET", API, params={"all": "1"} if args.all else {}), "the job list")["jobs"]
    print_table(jobs_table(jobs, everyone=args.all))


def print_table(table: list[tuple[str, ...]]) -> None:
    """Rows of text in columns as wide as their widest cell, two spaces apart.

    >>> print_table([("NAME", "STATE"), ("train", "running")])
    NAME   STATE
    train  running
    """
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_logs(args) -> None:
    login = _login(args)
    if args.follow:
        try:
            follow(login, args.name)
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        return
    r = login.request("GET", f"{API}/{quote(args.name, safe='')}/log", params={"offset": 0})
    if r.status_code >= 400:
        _answer(r, f"the output of {args.name}")
    sys.stdout.buffer.write(r.content)
    sys.stdout.flush()


def cmd_cancel(args) -> None:
    login = _login(args)
    job = _answer(login.request("DELETE", f"{API}/{quote(args.name, safe='')}"), f"cancelling {args.name}")
    print(f"Cancelled job {job['name']} (it had run {_duration(job['duration'])}).")


def add_parsers(sub, wrap) -> None:
    """The four commands, each run through ``wrap`` (which turns a RemoteError into one line)."""
    hub_help = "the hub's URL (default: $ATELIER_HUB_URL, else the saved login)"
    run = sub.add_parser("run", help="run a command as a job in a container sized by a profile",
                         usage="atelier run [--profile P] [--name NAME] [--cwd DIR] [--timeout D]\n"
                               "                   [--detach | --cancel-on-interrupt] -- CMD [ARGS ...]\n"
                               "       atelier run [options] NOTEBOOK.ipynb [-p NAME=VALUE ...]")
    run.add_argument("--profile", help="the profile that sizes it (default: your default profile)")
    run.add_argument("--name", help="the job's name (default: the program's name and the time)")
    run.add_argument("--cwd", help="the folder of your home it runs in (default: the home)")
    run.add_argument("--detach", action="store_true", help="print the job's name and return at once")
    run.add_argument("--cancel-on-interrupt", action="store_true",
                     help="Ctrl-C cancels the job (default: Ctrl-C detaches, the job goes on)")
    run.add_argument("--timeout", metavar="DURATION",
                     help="end the job after this long, e.g. 90s, 30m, 12h, 2d (its log says so; exit code 124)")
    run.add_argument("--hub", help=hub_help)
    run.add_argument("command", nargs=argparse.REMAINDER,
                     help="the command, after --; or a notebook and its -p NAME=VALUE parameters")
    run.set_defaults(func=wrap(cmd_run))

    jobs = sub.add_parser("jobs", help="your jobs: name, profile, state, started, duration, exit code")
    jobs.add_argument("--all", action="store_true", help="every user's jobs (admins)")
    jobs.add_argument("--hub", help=hub_help)
    jobs.set_defaults(func=wrap(cmd_jobs))

    logs = sub.add_parser("logs", help="a job's output, from its start")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--hub", help=hub_help)
    logs.set_defaults(func=wrap(cmd_logs))

    cancel = sub.add_parser("cancel", help="stop a running job")
    cancel.add_argument("name")
    cancel.add_argument("--hub", help=hub_help)
    cancel.set_defaults(func=wrap(cmd_cancel))
