"""The credentials service: its descriptor. Each user's own tokens for the deployment's
git hosts, kept by the hub and handed to git in that user's sessions only.

Rules this module keeps:

- A token rests in one place, the service's folder in the state (``STATE/credentials/USER.json``,
  0600 in a 0700 folder, readable by the hub's OS account only); never in a home, a
  session's environment, its config files, a pod spec or a log.
- A session's git asks for it when it needs it, through git's own credential-helper
  protocol: the session's system gitconfig (:func:`atelier_hub.session.git_config`)
  includes ``git/credential-hosts``, which names :data:`HELPER_FILE` as the helper of
  each host the deployment lists (``services.credentials.git_hosts``). The helper sends
  the session's own hub token to ``PREFIX/api/git/fill`` and prints what the service
  answers to git, which keeps it in memory for that one command. Only ``https`` URLs of
  a listed host get one.
- Users set and remove their own tokens with their hub token (``atelier credentials``);
  an admin may do it for any user (``--user NAME``). Nobody reads a token back but the
  owner's sessions: the listing says only which hosts are set, by whom and when.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from ..private_files import write_private
from ..session import GIT_CREDENTIAL_HOSTS
from ..settings import ServiceSettings, SessionContext
from ._process import http_status
from .base import Service, Site

PREFIX = "/services/credentials"
#: under the session's config folder: the git config fragment naming the helper per host,
#: and the helper itself (run by the session's own python3; only the standard library)
HOSTS_FILE = GIT_CREDENTIAL_HOSTS
HELPER_FILE = "git/credential-helper.py"

#: a host as git names it in a URL: a DNS name, an optional :PORT
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?")


def check_host(value: str) -> str:
    """A git host name as the deployment lists it (lower case), or ValueError saying how to write one.

    >>> check_host("GitHub.com"), check_host("git.example.org:8443")
    ('github.com', 'git.example.org:8443')
    >>> check_host("https://github.com")
    Traceback (most recent call last):
    ...
    ValueError: 'https://github.com' is not a host name: write the host alone, as in a clone URL's host ...
    """
    host = value.strip().lower()
    if not _HOST.fullmatch(host):
        raise ValueError(f"{value!r} is not a host name: write the host alone, as in a clone URL's host part "
                         "(e.g. github.com or git.example.org:8443)")
    return host


#: a hub user name as a file name: what JupyterHub's names may be, less the path separators
_USER = re.compile(r"[^/\\\x00]{1,255}")


class Store:
    """``FOLDER/USER.json``: ``{"git": {HOST: {"username", "token", "updated"}}}``, 0600."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, user: str) -> Path:
        if not _USER.fullmatch(user) or user in (".", ".."):
            raise ValueError(f"{user!r} is not a user name")
        return self.folder / f"{user}.json"

    def read(self, user: str) -> dict:
        try:
            return json.loads(self.path(user).read_text())
        except FileNotFoundError:
            return {}

    def write(self, user: str, data: dict) -> None:
        write_private(self.path(user), json.dumps(data, indent=1), durable=True)

    def forget(self, user: str) -> None:
        self.path(user).unlink(missing_ok=True)


# The helper git runs in a session (``git credential-helper.py get``); stdlib only, so
# that it runs under any python3 the user's PATH names (a venv of theirs included).
HELPER = r'''"""git credential helper of an Atelier session: asks the hub for your token.

git runs it as `python3 credential-helper.py get|store|erase`, with key=value lines on
stdin. Only `get` does anything: it sends the session's own hub token to the hub's
credentials service, which answers with the token you set for that host (`atelier
credentials set-git HOST`). Nothing is written anywhere.
"""
import json
import os
import sys
import urllib.error
import urllib.request


def main(argv):
    if len(argv) < 2 or argv[1] != "get":
        return 0  # store, erase: the hub keeps your tokens; git's copy is its own
    asked = dict(line.split("=", 1) for line in sys.stdin.read().splitlines() if "=" in line)
    url = os.environ.get("ATELIER_CREDENTIALS_URL")
    token = os.environ.get("JUPYTERHUB_API_TOKEN") or os.environ.get("ATELIER_TOKEN")
    if not url or not token:
        return 0
    body = json.dumps({k: asked.get(k, "") for k in ("protocol", "host", "path")}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/api/git/fill", data=body, method="POST", headers={
        "Authorization": "token " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            answer = json.load(r)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("message", "")
        except ValueError:
            message = ""
        print("atelier: " + (message or "the hub's credentials service answered %d" % exc.code), file=sys.stderr)
        return 0
    except (OSError, ValueError) as exc:
        print("atelier: the hub's credentials service did not answer (%s); git asks you instead" % exc,
              file=sys.stderr)
        return 0
    sys.stdout.write("username=%s\npassword=%s\n" % (answer["username"], answer["password"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


def hosts_config(hosts: list[str]) -> str:
    """The git config fragment that names the helper for each host (https only).

    >>> print(hosts_config(["github.com"]), end="")
    [credential "https://github.com"]
        helper = "!python3 \\"${GIT_CONFIG_SYSTEM%/*}/credential-helper.py\\""
    """
    # The helper sits beside the system gitconfig (GIT_CONFIG_SYSTEM, the session's
    # config folder's git/config): the same path in a container, a pod or a process session.
    helper = '"!python3 \\"${GIT_CONFIG_SYSTEM%/*}/credential-helper.py\\""'
    return "".join(f'[credential "https://{h}"]\n    helper = {helper}\n' for h in hosts)


class CredentialsService(ServiceSettings):
    """Each user's own tokens for the deployment's git hosts, handed to git in their sessions."""

    about: ClassVar[str] = ("Per-user tokens for git hosts (docs/user-guide.md, \"Your own packages, and git\"); null: git "
                            "asks for credentials itself.")

    url: str = Field("", description="Its base URL as sessions reach it (`ATELIER_CREDENTIALS_URL`), e.g. "
                     "`http://127.0.0.1:8000/services/credentials`; the session's hub token authenticates. "
                     "Written by `atelier dev` and `atelier render values` (the service in the hub pod).")
    git_hosts: list[str] = Field([], description="Git hosts whose HTTPS credentials each user may keep in the hub "
                                 "(`atelier credentials set-git HOST`), e.g. `[github.com, gitlab.example.org]`; "
                                 "a session's git gets the user's own token for them. Empty: none.")

    @field_validator("git_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(check_host(h) for h in value))

    def session_env(self, ctx: SessionContext) -> dict[str, str]:
        return {"ATELIER_CREDENTIALS_URL": self.url} if self.git_hosts and self.url else {}

    def session_files(self, ctx: SessionContext) -> dict[str, str]:
        if not self.git_hosts or not self.url:
            return {}
        return {HOSTS_FILE: hosts_config(self.git_hosts), HELPER_FILE: HELPER}


def credentials_command(*, folder: str, git_hosts: list[str]) -> list[str]:
    """The service's command line.

    >>> credentials_command(folder="/s/credentials", git_hosts=["github.com"])[2:]
    ['atelier_hub.services.credentials_server', '--folder', '/s/credentials', '--git-host', 'github.com']
    """
    return [sys.executable, "-m", "atelier_hub.services.credentials_server", "--folder", folder,
            *[arg for h in git_hosts for arg in ("--git-host", h)]]


class Credentials(Service):
    name = "credentials"
    title = "Credentials"
    settings = CredentialsService
    prefix = PREFIX
    optional = True
    # A session's git (and the user's `atelier credentials`) reach it with the user's own token.
    session_scopes = (f"access:services!service={name}",)

    def git_hosts(self, site: Site) -> list[str]:
        """The git hosts an admin named in ``STATE/deployment.json``
        (``services.credentials.git_hosts``); none: the service runs nothing."""
        return self.kept_setting(site, "git_hosts", url="http://x") or []

    def endpoints(self, site: Site) -> dict:
        hosts = self.git_hosts(site)
        return {"credentials": CredentialsService(url=self.public_url(site), git_hosts=hosts)} if hosts else {}

    def hub_service(self, site: Site, services) -> dict | None:
        if services.credentials is None:
            return None  # no git host named: nothing to keep
        return {
            "name": self.name,
            "display": False,
            "url": self.local_url(site),
            "command": self.supervised(site, credentials_command(folder=str(site.path("credentials")),
                                                                 git_hosts=services.credentials.git_hosts)),
        }

    def remove_user(self, site: Site, name: str) -> None:
        """A removed user's tokens go with them."""
        Store(site.path("credentials")).forget(name)

    def ready(self, site: Site) -> bool:
        return not self.git_hosts(site) or http_status(f"{self.local_url(site)}{PREFIX}/health") == 200

    def banner(self, site: Site) -> str:
        hosts = self.git_hosts(site)
        return (f"tokens for {', '.join(hosts)}: `atelier credentials set-git HOST`" if hosts else
                "no git host named (services.credentials.git_hosts in STATE/deployment.json)")


SERVICE = Credentials()
