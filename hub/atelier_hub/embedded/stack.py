"""The embedded stack's life cycle: the state folder plus the services it runs.

Rule this module keeps: it sits above the services and the state folder and is the
one place that joins them: which services a stack runs and their ports (kept across
starts where free), their folders (:meth:`Service.prepare`), the deployment settings
every session reads (each running service's endpoints), what each managed service is
handed (:meth:`EmbeddedStack.services_for`), the clean-up of a removed user, and the end of
what a hub that died hard left running. The state folder itself
(:class:`atelier_hub.embedded.state_folder.StateFolder`) knows no service; the descriptors know no
stack, only the :class:`~atelier_hub.services.base.Site` the folder is.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..private_files import write_private
from ..services import SERVICES, Deployment, Service, Services, enabled
from ..services._process import end_group, end_recorded, free_port
from ..settings import GitSettings, SettingsError
from .state_folder import ADMIN_USER, HUB_PORTS, HUB_RECORD, RELAYS_DIR, StateFolder, tighten

__all__ = ["EmbeddedStack", "end_leftovers"]


class EmbeddedStack(StateFolder):
    """One embedded stack: its state folder and the running services' descriptors."""

    @property
    def running(self) -> list[Service]:
        """The descriptors of the services this stack runs, in start order.

        >>> [s.name for s in EmbeddedStack(state="/s", port=8000, profiles_dir="p", services=["trino", "s3"]).running]
        ['s3', 'trino']
        """
        return SERVICES if self.services is None else enabled(self.services)

    @property
    def session_scopes(self) -> list[str]:
        """Hub scopes a session's token gets for the running services (e.g. MLflow's front)."""
        return [scope for svc in self.running for scope in svc.session_scopes]

    def services_for(self, name: str, services: BaseModel) -> BaseModel:
        """``services`` as the managed service ``name`` sees them: each running
        service may narrow its own entry for it (the S3 store hands each service the
        keys of its own account instead of none)."""
        for svc in self.running:
            services = svc.view_for(self, services, name)
        return services

    def remove_user(self, name: str) -> None:
        """The one place that forgets what this stack keeps for a removed user, beyond
        the users file and the hub's database (the hub deletes their tokens, cookies and
        servers itself): each running service's :meth:`Service.remove_user` (S3: the
        user's keys). The hub calls it once per removal (``AtelierAuthenticator.delete_user``,
        or at start-up for a user removed while it was down, before the services start).
        Their home is kept."""
        for svc in self.running:
            svc.remove_user(self, name)

    def deployment(self) -> BaseModel:
        """What every session is configured for: each running service's endpoints."""
        parts: dict = {}
        for svc in self.running:
            parts.update(svc.endpoints(self))
        return Deployment(services=Services(**parts), git=self.kept_git())

    def kept_git(self) -> GitSettings:
        """The ``git`` part an admin wrote in ``STATE/deployment.json`` (``email_domain``):
        kept when ``atelier dev`` writes the file again; a bad one names the field and the fix."""
        path = self.path("deployment.json")
        try:
            old = json.loads(path.read_text()).get("git") or {}
        except FileNotFoundError:
            return GitSettings()
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{path}: cannot read it ({exc}); fix it or delete it (atelier dev writes it "
                                "again, with the default git settings)") from None
        try:
            return GitSettings(**old)
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"])
            raise SettingsError(f"{path}: git.{field}: {problem['msg'].removeprefix('Value error, ')}") from None

    @classmethod
    def prepare(cls, state: str | Path, *, port: int, profiles_dir: str | Path,
                without: tuple[str, ...] = ()) -> tuple[EmbeddedStack, str | None]:
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
        stack.save()
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
    removed = end_containers_of_removed_users(root)
    if removed:
        ended.append(f"{len(removed)} container(s) of removed users ({', '.join(removed)})")
    return ended


def end_containers_of_removed_users(state: str | Path) -> list[str]:
    """Stop and remove this stack's containers (sessions, jobs, Ray nodes) whose user is
    no longer in ``users.json``: a user removed while no hub ran (`atelier users remove`
    after a hub died hard). The next hub would not know their container, which would run
    on, unrouted. Their home stays. Returns the users whose containers were ended.
    Without a users file, or a Docker engine running, there is nothing to do."""
    from .container_spawner import stack_id
    from .engine import engine
    from .users import UserError, UsersFile

    root = Path(state)
    users_file = root / "users.json"
    eng = engine()
    if not users_file.is_file() or not eng.running():
        return []
    try:
        users = set(UsersFile(users_file).load())
    except UserError:
        return []  # atelier dev names what is wrong with it
    import docker

    api = docker.APIClient(base_url=eng.host, version="auto", timeout=60)
    ended = set()
    for c in api.containers(all=True, filters={"label": f"dev.atelier.stack={stack_id(root)}"}):
        user = (c.get("Labels") or {}).get("dev.atelier.user")
        if not user or user in users:
            continue
        print(f"ending {c['Names'][0].lstrip('/')}: its user {user} was removed while no hub ran "
              "(their home is kept)", flush=True)
        try:
            api.remove_container(c["Id"], force=True)
        except docker.errors.NotFound:
            pass
        ended.add(user)
    return sorted(ended)
