"""The credentials service's process: each user's tokens for the deployment's git hosts.

Rule this module keeps: every request is authenticated with the caller's hub token
(HubAuthenticated: a header, never a cookie, so no other site can make a browser send
one) and acts on the caller's own tokens; an admin may name another user with
``?user=NAME``. A token goes out only to its owner's token, for a listed host, over
``https``; listings never include one. Refusals are JSON naming the field and the fix.

    GET    PREFIX/api/git                 {"user", "hosts": [{"host", "set", "username", "updated"}]}
    PUT    PREFIX/api/git/HOST            {"token", "username"?} -> 200 the host's line
    DELETE PREFIX/api/git/HOST            -> 200 the host's line (set: false)
    POST   PREFIX/api/git/fill            git's {"protocol", "host", "path"} -> {"username", "password"}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth
from tornado import web

from ._api import HealthHandler, UserApi, serve_until_signalled
from ._front import HUB_AUTH_CACHE_S
from .credentials import Store, check_host

log = logging.getLogger("atelier.credentials")

#: the longest token kept (GitHub's fine-grained ones are under 100 characters)
TOKEN_MAX = 4096


def check_secret(body: dict, username_default: str) -> tuple[str, str]:
    """``(username, token)`` of a PUT body, or ValueError naming the field and the fix.

    >>> check_secret({"token": "ghp_x"}, "ada")
    ('ada', 'ghp_x')
    >>> check_secret({"token": ""}, "ada")
    Traceback (most recent call last):
    ...
    ValueError: token: give the token (a personal access token of yours on that host)
    """
    token = body.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ValueError("token: give the token (a personal access token of yours on that host)")
    if len(token) > TOKEN_MAX or any(c in token for c in "\r\n\x00"):
        raise ValueError(f"token: one line of at most {TOKEN_MAX} characters; paste the token alone")
    username = body.get("username") or username_default
    if not isinstance(username, str) or len(username) > 255 or any(c in username for c in "\r\n\x00"):
        raise ValueError("username: one line of at most 255 characters (your user name on that host)")
    return username, token.strip()


class _Api(UserApi):
    other_user_refusal = (400, "user: only an admin sets or lists another user's tokens; leave --user out for "
                               "your own")

    def initialize(self, store: Store, hosts: list[str]):
        self.store, self.hosts = store, hosts

    def caller(self) -> dict:
        user = super().caller()
        if user.get("kind", "user") != "user":
            raise web.HTTPError(403, "send a user's hub token: a service keeps no git tokens")
        return user

    def host(self, raw: str) -> str:
        try:
            host = check_host(raw)
        except ValueError as exc:
            raise web.HTTPError(400, f"host: {exc}") from None
        if host not in self.hosts:
            listed = ", ".join(self.hosts) or "none"
            raise web.HTTPError(400, f"host: {host} is not one of the deployment's git hosts ({listed}); an admin "
                                     "adds it to services.credentials.git_hosts")
        return host

    def line(self, user: str, host: str) -> dict:
        kept = (self.store.read(user).get("git") or {}).get(host)
        return {"host": host, "set": bool(kept), "username": (kept or {}).get("username"),
                "updated": (kept or {}).get("updated")}


class ListHandler(_Api):
    def get(self):
        user = self.owner()
        self.finish({"user": user, "hosts": [self.line(user, h) for h in self.hosts]})


class HostHandler(_Api):
    def put(self, raw):
        user, host = self.owner(), self.host(raw)
        try:
            body = json.loads(self.request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            raise web.HTTPError(400, 'body: send JSON, {"token": "...", "username": "..."}') from None
        try:
            username, token = check_secret(body, user)
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        data = self.store.read(user)
        when = datetime.fromtimestamp(time.time(), timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        data.setdefault("git", {})[host] = {"username": username, "token": token, "updated": when}
        self.store.write(user, data)
        log.info("%s set %s's token for %s", self.current_user["name"], user, host)
        self.finish(self.line(user, host))

    def delete(self, raw):
        user, host = self.owner(), self.host(raw)
        data = self.store.read(user)
        if (data.get("git") or {}).pop(host, None) is not None:
            self.store.write(user, data)
            log.info("%s removed %s's token for %s", self.current_user["name"], user, host)
        self.finish(self.line(user, host))


class FillHandler(_Api):
    def post(self):
        user = self.caller()["name"]  # the token's owner only: no ?user= here
        try:
            asked = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body: send git's protocol and host as JSON") from None
        if asked.get("protocol") != "https":
            raise web.HTTPError(404, f"no token is given for {asked.get('protocol')!r} URLs: clone with https://")
        host = self.host(str(asked.get("host") or ""))
        kept = (self.store.read(user).get("git") or {}).get(host)
        if not kept:
            raise web.HTTPError(404, f"you have no token for {host}: set one with "
                                     f"`atelier credentials set-git {host}`")
        self.finish({"username": kept["username"], "password": kept["token"]})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, type=Path, help="where each user's tokens are kept (0700)")
    ap.add_argument("--git-host", action="append", default=[], help="a git host users may keep a token for")
    ap.add_argument("--listen", help="HOST:PORT to listen on; default: the hub's JUPYTERHUB_SERVICE_URL")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"].rstrip("/")
    listen = urlparse(f"http://{args.listen}" if args.listen else os.environ["JUPYTERHUB_SERVICE_URL"])
    args.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(args.folder, 0o700)
    # A removed user's token stops here within a few seconds, as at the other services.
    HubAuth.instance(cache_max_age=HUB_AUTH_CACHE_S)
    kw = {"store": Store(args.folder), "hosts": [check_host(h) for h in args.git_host]}
    app = web.Application([
        (rf"{prefix}/api/git/?", ListHandler, kw),
        (rf"{prefix}/api/git/fill", FillHandler, kw),
        (rf"{prefix}/api/git/([^/]+)", HostHandler, kw),
        (rf"{prefix}/health", HealthHandler),
    ])

    log.info("credentials service listening at %s/ (git hosts: %s)", prefix, ", ".join(kw["hosts"]) or "none")
    asyncio.run(serve_until_signalled(app, listen))


if __name__ == "__main__":
    main()
