"""``atelier credentials``: your tokens for the deployment's git hosts, kept by the hub.

Rule this module keeps: a token is read from the terminal without echo, or from stdin
when piped (``... | atelier credentials set-git HOST``), never from the command line
(where ``ps`` and the shell's history would keep it), and it goes only to the hub's
credentials service (``/services/credentials/api/git``) with the user's login. Nothing
here prints a token.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from urllib.parse import quote

from .jobs_cli import print_table
from .remote import Login, RemoteError, service_answer

API = "/services/credentials/api/git"


def _answer(r, what: str) -> dict:
    if r.status_code == 404:
        try:
            said = r.json().get("message")
        except ValueError:
            said = None
        if not said:
            raise RemoteError("this hub keeps no credentials (its credentials service is off)")
    return service_answer(r, service="credentials service", what=what)


def _params(args) -> dict:
    return {"user": args.user} if args.user else {}


def read_token(host: str, stdin=None) -> str:
    """The token, from the terminal without echo or from piped stdin (its first line).

    >>> import io
    >>> read_token("github.com", io.StringIO("ghp_abc\\n"))
    'ghp_abc'
    """
    stdin = stdin or sys.stdin
    if stdin.isatty():
        token = getpass.getpass(f"Token for {host} (not shown): ")
    else:
        token = stdin.readline()
    token = token.strip()
    if not token:
        raise RemoteError(f"token: none given; paste your token for {host} when asked, or pipe it: "
                          f"`atelier credentials set-git {host} < FILE`")
    return token


def cmd_list(args) -> None:
    body = _answer(Login.resolve(args.hub).request("GET", API, params=_params(args)), "the list")
    if not body["hosts"]:
        print("The deployment names no git hosts (an admin lists them in services.credentials.git_hosts).")
        return
    rows = [(h["host"], "set" if h["set"] else "-", h["username"] or "-", h["updated"] or "-") for h in body["hosts"]]
    print_table([("HOST", "TOKEN", "USERNAME", "UPDATED (UTC)"), *rows])


def cmd_set(args) -> None:
    login = Login.resolve(args.hub)
    token = read_token(args.host)
    body = {"token": token, **({"username": args.username} if args.username else {})}
    line = _answer(login.request("PUT", f"{API}/{quote(args.host, safe='')}", params=_params(args), json=body),
                   args.host)
    who = f"{args.user}'s" if args.user else "Your"
    print(f"{who} token for {line['host']} is kept by the hub (as {line['username']}); git in every session uses it.")


def cmd_remove(args) -> None:
    login = Login.resolve(args.hub)
    line = _answer(login.request("DELETE", f"{API}/{quote(args.host, safe='')}", params=_params(args)), args.host)
    print(f"No token is kept for {line['host']} now.")


def add_parsers(sub, wrap) -> None:
    hub_help = "the hub's URL (default: $ATELIER_HUB_URL, else the saved login)"
    creds = sub.add_parser("credentials", help="your tokens for the deployment's git hosts, kept by the hub")
    creds.add_argument("--user", help="another user's (admins)")
    creds.add_argument("--hub", help=hub_help)
    creds.set_defaults(func=wrap(cmd_list))
    csub = creds.add_subparsers(dest="action")
    put = csub.add_parser("set-git", help="keep your token for HOST (read without echo, or from stdin)")
    put.add_argument("host", help="a git host the deployment lists, e.g. github.com")
    put.add_argument("--username", help="your user name on that host (default: your hub name)")
    # SUPPRESS: `atelier credentials --user NAME set-git HOST` keeps the --user given first
    put.add_argument("--user", default=argparse.SUPPRESS, help="set another user's (admins)")
    put.add_argument("--hub", default=argparse.SUPPRESS, help=hub_help)
    put.set_defaults(func=wrap(cmd_set))
    rm = csub.add_parser("remove-git", help="forget your token for HOST")
    rm.add_argument("host")
    rm.add_argument("--user", default=argparse.SUPPRESS, help="another user's (admins)")
    rm.add_argument("--hub", default=argparse.SUPPRESS, help=hub_help)
    rm.set_defaults(func=wrap(cmd_remove))
