"""What the hub services with a token API of their own share (jobs, credentials, the
usage page, the culler): the handler base that answers as the caller's hub token says,
the health check, and serving until a signal; and the hub's users as a service with
``list:users`` reads them (Trino's rules, MLflow's accounts).

Rules this module keeps: an API request is authenticated by its ``Authorization: token``
header only (HubAuthenticated without OAuth: no cookie, so no other site can make a
browser act); every refusal is JSON ``{"status", "message"[, "field"]}`` whose message
names the field and the fix; a user acts on their own things, and only an admin may name
another user (``?user=NAME``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from urllib.parse import ParseResult

from jupyterhub.services.auth import HubAuthenticated
from tornado import web

__all__ = ["UserApi", "HealthHandler", "refusal", "serve_until_signalled", "hub_users", "USERS_EVERY_S"]


def refusal(status: int, message: str, field: str) -> web.HTTPError:
    """An HTTPError whose JSON answer names ``field`` too.

    >>> e = refusal(400, "profile: no such profile 'x'; see atelier profiles", "profile")
    >>> e.status_code, e.field
    (400, 'profile')
    """
    err = web.HTTPError(status, message)
    err.field = field
    return err


class UserApi(HubAuthenticated, web.RequestHandler):
    """A handler of a token API; :attr:`other_user_refusal` is how a user who is not an
    admin is answered when naming another user (a 404 hides that the thing exists)."""

    other_user_refusal: tuple[int, str] = (404, "not found")

    def check_xsrf_cookie(self):
        pass  # token-authenticated API: no cookie is accepted (HubAuthenticated without OAuth)

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        body = {"status": status_code, "message": message}
        if isinstance(exc, web.HTTPError) and getattr(exc, "field", None):
            body["field"] = exc.field
        self.finish(body)

    def caller(self) -> dict:
        user = self.current_user
        if not user:
            raise web.HTTPError(403, "send your hub token: Authorization: token TOKEN (atelier login)")
        return user

    def owner(self) -> str:
        """Whose things this request is about: the caller's; an admin may name another user."""
        user = self.caller()
        other = self.get_argument("user", None)
        if other and other != user["name"]:
            if not user.get("admin"):
                raise web.HTTPError(*self.other_user_refusal)
            return other
        return user["name"]


class HealthHandler(web.RequestHandler):
    def get(self):
        self.finish({"ok": True})


async def serve_until_signalled(app: web.Application, listen: ParseResult) -> None:
    """Serve ``app`` at ``listen``'s host and port until SIGTERM or SIGINT."""
    app.listen(listen.port, listen.hostname)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()


#: seconds between two readings of the hub's users by a service that follows them
USERS_EVERY_S = 5


def hub_users(api_url: str, token: str, *, timeout: float = 10) -> dict[str, bool]:
    """Every hub user's name and whether they are admin, from the hub's REST API (the
    service's token has ``list:users`` and ``read:users:name``), page by page.

    Raises OSError (or ValueError) when the hub does not answer as expected.
    ref: https://jupyterhub.readthedocs.io/en/stable/reference/rest-api.html (pagination)
    """
    users: dict[str, bool] = {}
    offset = 0
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the hub is local
    while True:
        request = urllib.request.Request(
            f"{api_url.rstrip('/')}/users?offset={offset}&limit=200",
            headers={"Authorization": f"token {token}", "Accept": "application/jupyterhub-pagination+json"})
        with opener.open(request, timeout=timeout) as r:
            page = json.loads(r.read())
        for user in page["items"]:
            users[user["name"]] = bool(user.get("admin"))
        following = (page.get("_pagination") or {}).get("next")
        if not following or not page["items"]:
            return users
        offset = int(following["offset"])
