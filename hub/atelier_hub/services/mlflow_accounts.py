"""The MLflow front's accounts: each hub identity's own account in MLflow's auth app, and
their passwords.

Rule this module keeps: passwords are generated here, kept in one 0600 file of the
state folder (embedded mode) or derived from the admin password (cluster mode,
:class:`DerivedCredentials`), never logged, and sent only to MLflow's server. An account
follows its hub identity (admin as on the hub) and owns its default experiment
``users/NAME``, made as that user. A database whose admin password was lost is set
aside (its permissions with it) rather than locking the front out. An account goes when its
hub user does (:meth:`Accounts.remove_gone`, both modes): the front reads the hub's users
every few seconds and deletes the MLflow account of each name it made that the hub no
longer has; their runs, experiments and models stay, as MLflow keeps them. From that reading
on the name is refused at the front (a token the front's cache still takes must not make the
account again), and the account is deleted once that user's requests in flight have ended:
MLflow answers a request whose account vanished halfway with a 404, not a refusal.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import json
import os
import secrets
import time
import urllib.parse
from pathlib import Path

from tornado import httpclient, web

from ..private_files import write_private
from .mlflow import personal_experiment
from .mlflow_server import FRONT_USER, MLFLOW_AUTH_ENV, Backend, auth_config

__all__ = ["Credentials", "DerivedCredentials", "Accounts", "prepare_auth"]

# How long a leaving user's requests already at MLflow may run before their account goes
# anyway (the front's own upstream timeout is longer: an upload may take that long).
DRAIN_S = 120.0


class Credentials:
    """The MLflow password of each account the front made, in one 0600 file of the state
    folder (generated here, never logged, sent only to MLflow's private server).

    >>> import tempfile
    >>> credentials = Credentials(Path(tempfile.mkdtemp()) / "credentials.json")
    >>> password = credentials.new("ada")
    >>> Credentials(credentials.file).get("ada") == password, credentials.header("ada").startswith("Basic ")
    (True, True)
    """

    def __init__(self, file: Path):
        self.file = file
        self._data: dict[str, str] = json.loads(file.read_text()) if file.exists() else {}

    def get(self, name: str) -> str | None:
        return self._data.get(name)

    def new(self, name: str) -> str:
        self._data[name] = secrets.token_urlsafe(32)
        self._save()
        return self._data[name]

    def names(self) -> list[str]:
        """Every account made (the front's own among them)."""
        return list(self._data)

    def forget(self, name: str) -> None:
        if self._data.pop(name, None) is not None:
            self._save()

    def _save(self) -> None:
        write_private(self.file, json.dumps(self._data, indent=1), durable=True)

    def header(self, name: str) -> str:
        return "Basic " + base64.b64encode(f"{name}:{self._data[name]}".encode()).decode()


class DerivedCredentials:
    """Cluster mode: the front's admin password is the deployment's (a Secret mounted in
    the hub pod), and each account's password is derived from it (HMAC-SHA256 of the
    account's name), so nothing new is stored: a new hub pod, or a second one, gives
    every account the same password again, and a changed admin password changes them
    all (the front sets each again on its user's next request, :meth:`Accounts._provision`).
    Same interface as :class:`Credentials`; the names of the accounts made (no password)
    are kept in ``names_file`` where one is given (on the hub's volume), so that an
    account whose user was removed while the front was down still goes.

    >>> c = DerivedCredentials("s3cret")
    >>> c.get("ada") == DerivedCredentials("s3cret").get("ada") != c.get("bob"), c.get(FRONT_USER)
    (True, 's3cret')
    >>> DerivedCredentials("other").get("ada") == c.get("ada")
    False
    """

    def __init__(self, admin_password: str, names_file: Path | None = None):
        if not admin_password:
            raise ValueError("the MLflow admin password is empty")
        self._admin = admin_password
        self._file = names_file
        self._names: list[str] = json.loads(names_file.read_text()) if names_file and names_file.exists() else []

    def names(self) -> list[str]:
        return list(self._names)

    def new(self, name: str) -> str:
        if name not in self._names:
            self._names.append(name)
            self._save()
        return self.get(name)

    def forget(self, name: str) -> None:
        if name in self._names:
            self._names.remove(name)
            self._save()

    def _save(self) -> None:
        if self._file is not None:
            write_private(self._file, json.dumps(self._names, indent=1), durable=True)

    def get(self, name: str) -> str:
        if name == FRONT_USER:
            return self._admin
        digest = hmac.new(self._admin.encode(), f"atelier-mlflow-account:{name}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")

    def header(self, name: str) -> str:
        return "Basic " + base64.b64encode(f"{name}:{self.get(name)}".encode()).decode()


class Accounts:
    """Each hub identity's own account in MLflow's auth app, made from the hub on its
    first request after a start (MLflow's own user store and permission model decide
    the rest): its password, whether it is an MLflow admin (as on the hub), and its
    default experiment ``users/NAME``, created as that user so that it is theirs."""

    def __init__(self, *, credentials: Credentials | DerivedCredentials, backend: Backend, prefix: str):
        self.credentials, self.backend, self.prefix = credentials, backend, prefix
        self.known: dict[str, bool] = {FRONT_USER: True}
        # When each account was made or set by this front (monotonic): one made after the
        # hub's users were read is not judged by that reading.
        self._set_at: dict[str, float] = {}
        self._lock = asyncio.Lock()
        # Names the hub no longer had at its last reading (refused until it has them again),
        # and each name's requests now at MLflow (see :meth:`begin`).
        self.gone: set[str] = set()
        self._in_flight: collections.Counter[str] = collections.Counter()

    async def authorization(self, name: str, admin: bool) -> str:
        """The Authorization header that makes MLflow see this identity; a 403 for a
        name the hub no longer has (its token may still be in the front's short cache)."""
        if name in self.gone:
            raise web.HTTPError(403, f"{name} is no longer a user of this hub")
        if self.known.get(name) != admin:
            async with self._lock:
                if self.known.get(name) != admin:
                    await self._provision(name, admin)
        return self.credentials.header(name)

    def begin(self, name: str) -> None:
        """A request of ``name``'s goes to MLflow now; :meth:`end` when it has ended."""
        self._in_flight[name] += 1

    def end(self, name: str) -> None:
        self._in_flight[name] -= 1
        if self._in_flight[name] <= 0:
            del self._in_flight[name]

    async def call(self, method: str, path: str, body: dict, *, as_user: str = FRONT_USER) -> tuple[int, dict]:
        url, data = self.backend.url + self.prefix + path, json.dumps(body)
        headers = {"Authorization": self.credentials.header(as_user), "Content-Type": "application/json"}
        if method in ("GET", "DELETE"):  # no body: MLflow reads these from the query then
            url, data = f"{url}?{urllib.parse.urlencode(body)}", None
            del headers["Content-Type"]
        r = await httpclient.AsyncHTTPClient().fetch(url, method=method, body=data, raise_error=False,
                                                     headers=headers, request_timeout=60)
        try:
            answer = json.loads(r.body or b"{}")
        except ValueError:
            answer = {"message": (r.body or b"")[:200].decode(errors="replace")}
        return r.code, answer if isinstance(answer, dict) else {}

    @staticmethod
    def _expect(what: str, code: int, answer: dict, *, also: str = "") -> None:
        if code != 200 and answer.get("error_code") != also:
            raise web.HTTPError(502, f"MLflow refused to {what}: {code} {answer.get('message', '')}")

    async def remove_gone(self, hub_users: set[str], read_at: float) -> list[str]:
        """Delete the MLflow account of each hub user the front made an account for and
        the hub no longer has (``hub_users``: every name, read at ``read_at``, monotonic);
        the names deleted. Service identities (``service/NAME``) are not hub users and
        stay; an empty list is taken as a hub that answered wrong, not as nobody."""
        if not hub_users:
            return []
        self.gone -= hub_users  # a user of that name again: served again
        async with self._lock:
            leaving = [name for name in self.credentials.names()
                       if name != FRONT_USER and not name.startswith("service/") and name not in hub_users
                       and self._set_at.get(name, 0.0) < read_at]
            self.gone.update(leaving)
        # No new request of theirs reaches MLflow now; those already there end first.
        waited = time.monotonic()
        while any(self._in_flight[name] for name in leaving) and time.monotonic() - waited < DRAIN_S:
            await asyncio.sleep(0.1)
        gone = []
        async with self._lock:
            for name in leaving:
                code, answer = await self.call("DELETE", "/api/2.0/mlflow/users/delete", {"username": name})
                if code != 200 and answer.get("error_code") != "RESOURCE_DOES_NOT_EXIST":
                    print(f"MLflow front: {name}'s account is deleted once MLflow answers "
                          f"({code} {answer.get('message', '')[:200]})", flush=True)
                    continue
                self.credentials.forget(name)
                self.known.pop(name, None)
                gone.append(name)
        if gone:
            print(f"MLflow front: deleted the accounts of {', '.join(gone)} (no longer hub users)", flush=True)
        return gone

    async def _provision(self, name: str, admin: bool) -> None:
        self._set_at[name] = time.monotonic()
        password = self.credentials.new(name) if name not in self.credentials.names() else self.credentials.get(name)
        code, answer = await self.call("POST", "/api/2.0/mlflow/users/create",
                                       {"username": name, "password": password})
        if code != 200:
            self._expect(f"create the account {name}", code, answer, also="RESOURCE_ALREADY_EXISTS")
            # Made before (or its password file was lost): the password here is the one.
            self._expect(f"set {name}'s password", *await self.call(
                "PATCH", "/api/2.0/mlflow/users/update-password", {"username": name, "password": password}))
        self._expect(f"set {name}'s admin flag", *await self.call(
            "PATCH", "/api/2.0/mlflow/users/update-admin", {"username": name, "is_admin": admin}))
        if not name.startswith("service/"):
            self._expect(f"create {name}'s experiment", *await self.call(
                "POST", "/api/2.0/mlflow/experiments/create", {"name": personal_experiment(name)}, as_user=name),
                also="RESOURCE_ALREADY_EXISTS")
        self.known[name] = admin


def prepare_auth(folder: Path) -> tuple[Credentials, dict[str, str]]:
    """The auth app's folder (0700) with its configuration, database and the front's
    credentials; and the variables its worker needs. A database whose admin password
    was lost is set aside (its permissions with it) rather than locking the front out."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    credentials = Credentials(folder / "credentials.json")
    database = folder / "basic_auth.db"
    if credentials.get(FRONT_USER) is None:
        if database.exists():
            aside = database.with_name(f"basic_auth.db.lost-{int(time.time())}")
            database.rename(aside)
            print(f"MLflow front: no credentials for {database}; set it aside as {aside.name}", flush=True)
        credentials.new(FRONT_USER)
    config = folder / "basic_auth.ini"
    write_private(config, auth_config(database=database.resolve()), durable=True)
    return credentials, {
        MLFLOW_AUTH_ENV["config"]: str(config),
        MLFLOW_AUTH_ENV["admin_username"]: FRONT_USER,
        MLFLOW_AUTH_ENV["admin_password"]: credentials.get(FRONT_USER),
        # Signs the auth app's own sign-up form (CSRF), which nobody reaches here:
        # a fresh one per start will do.
        MLFLOW_AUTH_ENV["secret_key"]: secrets.token_hex(32),
    }
