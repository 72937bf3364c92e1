"""The embedded mode's state folder: everything that must survive a restart lives here.

Rule this module keeps: ``prepare`` creates what is missing and never overwrites what
exists (users, secrets, homes, the hub database, MLflow's store and S3's data all
survive ``atelier dev`` being stopped and started again). Secrets are files of mode
0600 in ``secrets/``; they are read, never printed. Nothing in the state folder is
readable by another OS account: the folder is 0700, every file in it 0600 or
tighter and every folder 0700 (``prepare`` tightens what an older Atelier left
looser; ``atelier dev`` runs the hub and its services with umask 077), each home
0700. The admin user is made once, when there is no users file yet; a stack whose
users were all removed stays without one. Ports and endpoints come from the
service descriptors (:mod:`atelier_hub.services`): this module names no service.
Layout::

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

from .private_files import write_private
from .services import SERVICES, Service, enabled
from .services._process import end_group, end_recorded, free_port
from .settings import Deployment, Services
from .users import UsersFile

__all__ = ["Embedded", "ADMIN_USER", "RELAYS_DIR", "end_leftovers", "tighten"]

ADMIN_USER = "admin"
# Ports of the hub itself, beside each service's own (keys of Embedded.ports).
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
class Embedded:
    """Ports and paths of one embedded stack, stored in ``STATE/atelier.json``."""

    state: str
    port: int
    profiles_dir: str
    #: "hub", "proxy_api" and one per service that listens (Service.has_port)
    ports: dict[str, int] = field(default_factory=dict)
    #: the services this stack runs, by name (optional ones may be left out)
    services: list[str] = field(default_factory=lambda: [s.name for s in SERVICES])

    # -- paths -------------------------------------------------------------------------

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

    @property
    def running(self) -> list[Service]:
        """The descriptors of the services this stack runs, in start order."""
        return enabled(self.services)

    @property
    def session_scopes(self) -> list[str]:
        """Hub scopes a session's token gets for the running services (e.g. MLflow's front)."""
        return [scope for svc in self.running for scope in svc.session_scopes]

    def s3_keys(self) -> dict[str, str]:
        path = self.path("secrets/s3.json")
        if not path.exists():
            # versitygw's root user: the store's and the hub's alone (users and
            # services get accounts of their own, services/s3.py).
            write_private(path, json.dumps({
                "access_key_id": "atelier" + secrets.token_hex(6),
                "secret_access_key": secrets.token_urlsafe(30),
            }))
        return json.loads(path.read_text())

    def services_for(self, name: str, services: Services) -> Services:
        """``services`` as the managed service ``name`` sees them: each running
        service may narrow its own entry for it (the S3 store hands each service the
        keys of its own account instead of none)."""
        for svc in self.running:
            services = svc.view_for(self, services, name)
        return services

    def proxy_token(self) -> str:
        return _secret(self.path("secrets/proxy-token"))

    def admin_token(self) -> str:
        return _secret(self.path("admin-token"))

    def remove_user(self, name: str) -> None:
        """The one place that forgets what this stack keeps for a removed user, beyond
        the users file and the hub's database (the hub deletes their tokens, cookies and
        servers itself): each running service's :meth:`Service.remove_user` (S3: the
        user's keys). The hub calls it once per removal (``AtelierAuthenticator.delete_user``,
        or at start-up for a user removed while it was down, before the services start).
        Their home is kept."""
        for svc in self.running:
            svc.remove_user(self, name)

    def deployment(self) -> Deployment:
        """What every session is configured for: each running service's endpoints."""
        parts: dict = {}
        for svc in self.running:
            parts.update(svc.endpoints(self))
        return Deployment(services=Services(**parts))

    # -- life cycle ----------------------------------------------------------------------

    @classmethod
    def load(cls, state: str | Path) -> Embedded:
        path = Path(state) / "atelier.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found; start the stack with `atelier dev --state {state}`") from None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def prepare(cls, state: str | Path, *, port: int, profiles_dir: str | Path,
                without: tuple[str, ...] = ()) -> tuple[Embedded, str | None]:
        """Create or reuse the state folder; returns the stack and, on first start only,
        the generated admin password (also kept in ``initial-admin-password``, 0600,
        so that a start that fails half-way loses no login)."""
        root = Path(state).resolve()
        # Refused before anything is created: a busy port leaves no empty state folder.
        if free_port(port) != port:
            raise OSError(f"port {port} on 127.0.0.1 is in use; stop what uses it or pass --port N")
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tighten(root)
        previous: dict = {}
        if (root / "atelier.json").exists():
            previous = json.loads((root / "atelier.json").read_text())
        old_ports = dict(previous.get("ports") or {})
        for key in (*HUB_PORTS, *(s.name for s in SERVICES)):
            # atelier.json of an older Atelier kept each port as NAME_port.
            if key not in old_ports and previous.get(f"{key}_port"):
                old_ports[key] = previous[f"{key}_port"]
        names = [s.name for s in SERVICES if s.name not in without]
        taken = {port}
        ports: dict[str, int] = {}
        for key in (*HUB_PORTS, *(s.name for s in enabled(names) if s.has_port)):
            # Same port as last time where free, so running sessions keep their settings.
            ports[key] = free_port(old_ports.get(key), avoid=taken)
            taken.add(ports[key])
        stack = cls(state=str(root), port=port, profiles_dir=str(Path(profiles_dir).resolve()),
                    ports=ports, services=names)
        for sub in ("homes", "mlflow", "logs", "run"):
            (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / "secrets").mkdir(mode=0o700, exist_ok=True)
        for svc in stack.running:
            svc.prepare(stack)
        write_private(root / "atelier.json", json.dumps(asdict(stack), indent=2))
        write_private(root / "deployment.json", stack.deployment().model_dump_json(indent=2))
        stack.admin_token()
        password = None
        if not stack.users.path.exists():  # first start only: removing every user brings no admin back
            password = stack.users.add(ADMIN_USER, admin=True)
            write_private(root / "initial-admin-password", password + "\n")
        return stack, password


def end_leftovers(state: str | Path) -> list[str]:
    """End what a hub that died hard (``kill -9``) left running in ``state``: the hub
    itself if still there, its proxy, every service's recorded process group and every
    container session's network relay. Sessions are left alone: the next hub re-adopts
    them and starts their relays again (or stops those whose deployment settings
    changed). Returns what was ended, for the log.

    Only processes recorded by this stack are touched, and only while they are still
    the recorded process (same start time) or, for the proxy, still the proxy.
    """
    root = Path(state)
    ended = []
    # A hub still running here outlived its `atelier dev` (killed hard). On SIGTERM
    # JupyterHub stops every session before it exits (cleanup_servers), so it is ended
    # the way a crash ends it, with SIGKILL: its sessions stay up for the next hub.
    if end_recorded(root / HUB_RECORD, what="hub (its sessions are kept)", hard=True):
        ended.append("hub")
    try:
        pid = int((root / "logs" / "proxy.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        pid, cmdline = 0, []
    if pid and any(b"configurable-http-proxy" in part for part in cmdline):
        print(f"ending the previous hub's proxy (pid {pid})", flush=True)
        end_group(pid, grace=5)
        ended.append("proxy")
    for svc in SERVICES:
        if end_recorded(svc.record_file(root), what=f"{svc.name} process"):
            ended.append(svc.name)
    # Relays end with their hub by themselves (PDEATHSIG); a record left is checked anyway.
    relays = sum(end_recorded(rec, grace=5, what="session relay")
                 for rec in sorted((root / RELAYS_DIR).glob("*.pid")))
    if relays:
        ended.append(f"{relays} session relay(s)")
    return ended
