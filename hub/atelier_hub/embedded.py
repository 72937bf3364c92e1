"""The embedded mode's state folder: everything that must survive a restart lives here.

Rule this module keeps: ``prepare`` creates what is missing and never overwrites what
exists (users, secrets, homes, the hub database, MLflow's store and S3's data all
survive ``atelier dev`` being stopped and started again). Secrets are files of mode
0600 in ``secrets/``; they are read, never printed. Layout::

    STATE/atelier.json       ports and paths of this stack (rewritten at each start)
    STATE/deployment.json    the services every session is configured for (0600)
    STATE/users.json         logins (scrypt hashes only, 0600)
    STATE/admin-token        an admin API token for scripts (0600)
    STATE/secrets/           S3 keys, proxy token, cookie secret (0700)
    STATE/jupyterhub.sqlite  the hub's database
    STATE/homes/USER/        each user's home, shared by all their servers
    STATE/s3/BUCKET/         the S3 server's objects, as plain files
    STATE/mlflow/            MLflow's backend store (artifacts go to S3)
    STATE/logs/              service logs
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from .install import paths as install
from .auth import UsersFile
from .settings import Deployment, MLflowService, RayService, S3Service, Services, SparkService, TrinoService

__all__ = ["Embedded", "SHARED_BUCKET", "MLFLOW_BUCKET", "free_port"]

SHARED_BUCKET = "atelier-shared"
MLFLOW_BUCKET = "atelier-mlflow"
ADMIN_USER = "admin"


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            # As the servers themselves do: a port in TIME_WAIT after a restart is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)


def _secret(path: Path, make=lambda: secrets.token_hex(32)) -> str:
    if not path.exists():
        write_secret(path, make())
    return path.read_text().strip()


@dataclass
class Embedded:
    """Ports and paths of one embedded stack, stored in ``STATE/atelier.json``."""

    state: str
    port: int
    hub_port: int
    proxy_api_port: int
    s3_port: int
    mlflow_port: int
    profiles_dir: str
    # None: Trino is switched off (`atelier dev --no-trino`), so no service, no session settings.
    trino_port: int | None = None

    # -- paths -------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return Path(self.state)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def users(self) -> UsersFile:
        return UsersFile(self.path("users.json"))

    def s3_keys(self) -> dict[str, str]:
        path = self.path("secrets/s3.json")
        if not path.exists():
            # versitygw's root user; the embedded mode's only S3 identity.
            write_secret(path, json.dumps({
                "access_key_id": "atelier" + secrets.token_hex(6),
                "secret_access_key": secrets.token_urlsafe(30),
            }))
        return json.loads(path.read_text())

    def proxy_token(self) -> str:
        return _secret(self.path("secrets/proxy-token"))

    def admin_token(self) -> str:
        return _secret(self.path("admin-token"))

    def deployment(self) -> Deployment:
        keys = self.s3_keys()
        return Deployment(services=Services(
            s3=S3Service(
                endpoint_url=f"http://127.0.0.1:{self.s3_port}",
                bucket=SHARED_BUCKET,
                access_key_id=keys["access_key_id"],
                secret_access_key=keys["secret_access_key"],
            ),
            # Through the hub's public port, so the same URL works from a session, a
            # script on this machine and a browser; the hub checks the token.
            mlflow=MLflowService(tracking_uri=f"{self.url}/services/mlflow", auth="hub"),
            spark=SparkService(
                jars=[str(p) for p in install.spark_jars()],
                java_home=str(install.JAVA17_HOME),
                local_ip="127.0.0.1",
            ),
            ray=RayService(),
            trino=TrinoService(url=f"http://127.0.0.1:{self.trino_port}") if self.trino_port else None,
        ))

    # -- life cycle ----------------------------------------------------------------------

    @classmethod
    def load(cls, state: str | Path) -> Embedded:
        path = Path(state) / "atelier.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found; start the stack with `atelier dev --state {state}`") from None

    @classmethod
    def prepare(cls, state: str | Path, *, port: int, profiles_dir: str | Path,
                trino: bool = True) -> tuple[Embedded, str | None]:
        """Create or reuse the state folder; returns the stack and, on first start only,
        the generated admin password (to be shown once)."""
        root = Path(state).resolve()
        root.mkdir(parents=True, exist_ok=True)
        previous = {}
        if (root / "atelier.json").exists():
            previous = json.loads((root / "atelier.json").read_text())
        if free_port(port) != port:
            raise OSError(f"port {port} on 127.0.0.1 is in use; stop what uses it or pass --port N")
        taken = {port}

        def pick(key: str) -> int:
            # Same port as last time where free, so running sessions keep their settings.
            chosen = free_port(previous.get(key))
            while chosen in taken:
                chosen = free_port()
            taken.add(chosen)
            return chosen

        stack = cls(
            state=str(root),
            port=port,
            hub_port=pick("hub_port"),
            proxy_api_port=pick("proxy_api_port"),
            s3_port=pick("s3_port"),
            mlflow_port=pick("mlflow_port"),
            profiles_dir=str(Path(profiles_dir).resolve()),
            trino_port=pick("trino_port") if trino else None,
        )
        for sub in ("homes", "mlflow", "logs", f"s3/{SHARED_BUCKET}", f"s3/{MLFLOW_BUCKET}"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "secrets").mkdir(mode=0o700, exist_ok=True)
        (root / "atelier.json").write_text(json.dumps(asdict(stack), indent=2))
        write_secret(root / "deployment.json", stack.deployment().model_dump_json(indent=2))
        stack.admin_token()
        password = None
        if not stack.users.load():
            password = stack.users.add(ADMIN_USER, admin=True)
        return stack, password
