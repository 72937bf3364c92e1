"""Embedded-mode login: users and password hashes in ``<state>/users.json`` (mode 0600).

Rule this module keeps: a password is never stored, logged or returned except once,
to the person who asked for it (``atelier users add`` prints it); only scrypt hashes
are kept. Only names in the file may log in. A user an admin adds in the hub's admin
page (or with ``atelier users add NAME --no-password``) has no password yet and sets
it at first login, as JupyterHub's FirstUseAuthenticator does.
"""

from __future__ import annotations

from jupyterhub.auth import Authenticator
from traitlets import Int, Unicode

from .users import UserError, UsersFile, check_password, check_username, hash_password

__all__ = ["UsersFile", "AtelierAuthenticator", "hash_password", "check_password", "check_username", "UserError"]


class AtelierAuthenticator(Authenticator):
    """Password login against the embedded users file."""

    users_file = Unicode(
        "users.json",
        config=True,
        help="""
        Path of the users file (hashes only), relative to the hub's working directory.

            c.AtelierAuthenticator.users_file = "/var/lib/atelier/users.json"
        """,
    )
    min_password_length = Int(
        8, config=True, help="Shortest password a user may choose at first login."
    )

    only_user = Unicode(
        "",
        config=True,
        help="""
        When set, the one user who may log in (the embedded single-user mode, whose
        sessions are processes of the hub's own OS user and so not isolated).

            c.AtelierAuthenticator.only_user = "admin"
        """,
    )

    @property
    def _file(self) -> UsersFile:
        return UsersFile(self.users_file)

    async def authenticate(self, handler, data):
        name = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        try:
            users = self._file.load()
        except UserError as exc:
            self.log.error("%s", exc)
            return None
        entry = users.get(name)
        if entry is None:
            return None
        if entry.get("password") is None:
            # Added by an admin without a password: the first login chooses it.
            if len(password) < self.min_password_length:
                return None
            self._file.set_password(name, password)
            self.log.info("User %s set a password at first login", name)
        elif not check_password(password, entry["password"]):
            return None
        return {"name": name, "admin": bool(entry.get("admin"))}

    def check_allowed(self, username, authentication=None):
        if self.only_user and username != self.only_user:
            self.log.warning("Refused %s: single-user mode lets only %s log in", username, self.only_user)
            return False
        return username in self._file.load()

    def add_user(self, user):
        """Called when an admin adds a user in the hub: record them, without a password."""
        users = self._file.load()
        if user.name not in users:
            users[user.name] = {"password": None, "admin": bool(user.admin)}
            self._file.save(users)
        return super().add_user(user)

    def delete_user(self, user):
        users = self._file.load()
        if users.pop(user.name, None) is not None:
            self._file.save(users)
        return super().delete_user(user)
