"""The embedded mode's state folder: everything that must survive a restart lives here.

Rule this module keeps: ``prepare`` creates what is missing and never overwrites what
exists (users, secrets, homes, the hub database, MLflow's store and S3's data all
survive ``atelier dev`` being stopped and started again). Secrets are files of mode
0600 in ``secrets/``; they are read, never printed. Nothing in the state folder is
readable by another OS account: the folder is 0700, every file in it 0600 or
tighter and every folder 0700 (``prepare`` tightens what an older Atelier left
looser; ``atelier dev`` runs the hub and its services with umask 077), each home
0700. The admin user is made once, when there is no users file yet; a stack whose
users were all removed stays without one. This module names and imports no service:
the stack's life cycle (which ports, which services, their folders and endpoints) is
:mod:`atelier_hub.embedded.stack`'s, above the services; the state folder is what a service
descriptor is given (:class:`atelier_hub.services.base.Site`). Layout::

    STATE/atelier.json       ports and paths of this stack (rewritten at each start, 0600)
    STATE/deployment.json    the services every session is configured for (0600)
    STATE/users.json         logins (scrypt hashes only, 0600)
    STATE/admin-token        an admin API token for scripts (0600)
    STATE/initial-admin-password  the first admin password, until deleted (0600)
    STATE/secrets/           S3 keys, proxy token, cookie secret (0700)
    STATE/jupyterhub.sqlite  the hub's database
    STATE/homes/USER/        each user's home, shared by all their servers
    STATE/s3/BUCKET/         the S3 server's objects, as plain files
    STATE/s3-iam/            the S3 server's accounts (versitygw's internal IAM, 0600)
    STATE/secrets/s3-accounts/  each user's and service's S3 keys (services/s3.py)
    STATE/mlflow/            MLflow's backend store (artifacts go to S3)
    STATE/run/               process records (hub, services) for a clean restart
    STATE/run/relays/        one record per container session's network relay
    STATE/logs/              service logs
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..private_files import write_private
from .users import UsersFile

__all__ = ["StateFolder", "ADMIN_USER", "HUB_PORTS", "HUB_RECORD", "RELAYS_DIR", "tighten"]

ADMIN_USER = "admin"
# Ports of the hub itself, beside each service's own (keys of StateFolder.ports).
HUB_PORTS = ("hub", "proxy_api")
# Where `atelier dev` records the hub's process, for the next start's clean-up.
HUB_RECORD = "run/hub.pid"
# Where the container spawner records each session's network relay (netns_relay.py).
RELAYS_DIR = "run/relays"


def tighten(root: Path) -> None:
    """Take group and other permissions off everything in the state folder (what an
    older Atelier, or a process with a looser umask, left readable). Homes are 0700;
    what is inside them is the user's own business."""
    root.chmod(0o700)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == root / "homes":
            for name in dirs:
                _strip(here / name, 0o700)
            dirs.clear()
            continue
        for name in (*dirs, *files):
            _strip(here / name)


def _strip(path: Path, mode: int | None = None) -> None:
    try:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode):
            path.chmod(mode if mode is not None else stat.S_IMODE(st.st_mode) & 0o700)
    except FileNotFoundError:  # a service removed it meanwhile
        pass


def _secret(path: Path, make=lambda: secrets.token_hex(32)) -> str:
    if not path.exists():
        write_private(path, make())
    return path.read_text().strip()


@dataclass
class StateFolder:
    """Ports and paths of one embedded stack, stored in ``STATE/atelier.json``."""

    state: str
    port: int
    profiles_dir: str
    #: "hub", "proxy_api" and one per service that listens (Service.has_port)
    ports: dict[str, int] = field(default_factory=dict)
    #: the services this stack runs, by name (optional ones may be left out); None: all
    #: (an ``atelier.json`` of an older Atelier)
    services: list[str] | None = None

    @property
    def root(self) -> Path:
        return Path(self.state)

    @property
    def url(self) -> str:
        """The public URL: the hub and services at ``localhost``, each user's servers at
        ``NAME.localhost`` on the same port (:mod:`atelier_hub.origins`). The proxy
        listens on 127.0.0.1 only; ``localhost`` names it for every resolver."""
        return f"http://localhost:{self.port}"

    @property
    def hub_port(self) -> int:
        return self.ports["hub"]

    @property
    def proxy_api_port(self) -> int:
        return self.ports["proxy_api"]

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def users(self) -> UsersFile:
        return UsersFile(self.path("users.json"))

    def secret(self, name: str, make=lambda: secrets.token_hex(32)) -> str:
        """``secrets/NAME``, made by ``make`` at the first call (0600)."""
        return _secret(self.path(f"secrets/{name}"), make)

    def proxy_token(self) -> str:
        return self.secret("proxy-token")

    def admin_token(self) -> str:
        return _secret(self.path("admin-token"))

    def save(self) -> None:
        """Write ``atelier.json`` (0600)."""
        write_private(self.path("atelier.json"), json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state: str | Path):
        path = Path(state) / "atelier.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found; start the stack with `atelier dev --state {state}`") from None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
