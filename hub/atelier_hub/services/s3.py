"""The S3-compatible store (versitygw): the shared bucket every session reads and
writes, and MLflow's artifact bucket.

Rule this module keeps: the store's address and keys are decided here, once; the
sessions (through :meth:`S3.endpoints`) and the services that use the store (MLflow,
Trino, through the deployment settings they are handed) read them from there. Keys
travel through environments, never on a command line that ``ps`` shows.
"""

from __future__ import annotations

import sys

from ..install.paths import tool_path
from ..settings import S3Service
from . import Service
from ._process import http_status

SHARED_BUCKET = "atelier-shared"
MLFLOW_BUCKET = "atelier-mlflow"


class S3(Service):
    name = "s3"
    title = "S3"
    needs = ("versitygw",)

    def url(self, stack) -> str:
        return f"http://127.0.0.1:{stack.ports[self.name]}"

    def prepare(self, stack) -> None:
        for bucket in (SHARED_BUCKET, MLFLOW_BUCKET):
            # A folder is a bucket to versitygw's posix backend: the buckets exist before
            # the S3 server answers, so no session can race their creation.
            (stack.path("s3") / bucket).mkdir(parents=True, exist_ok=True)

    def endpoints(self, stack) -> dict:
        keys = stack.s3_keys()
        return {"s3": S3Service(
            endpoint_url=self.url(stack),
            bucket=SHARED_BUCKET,
            access_key_id=keys["access_key_id"],
            secret_access_key=keys["secret_access_key"],
        )}

    def hub_service(self, stack, services) -> dict:
        s3 = services.s3
        # No "url": the hub neither waits for the store (atelier dev checks it) nor
        # routes it through its public proxy (sessions reach it on 127.0.0.1).
        return {
            "name": self.name,
            "display": False,
            "environment": {
                "ROOT_ACCESS_KEY_ID": s3.access_key_id,
                "ROOT_SECRET_ACCESS_KEY": s3.secret_access_key,
            },
            "command": [
                sys.executable, "-m", "atelier_hub.services._process",
                "--name", self.name, "--record", str(self.record_file(stack.root)), "--",
                str(tool_path("versitygw")), "--port", f"127.0.0.1:{stack.ports[self.name]}", "--quiet",
                # Objects private to the hub's OS user (versitygw sets its own modes,
                # 0644/0755 by default, whatever the umask).
                "posix", "--file-perms", "0600", "--dir-perms", "0700", str(stack.path("s3")),
            ],
        }

    def ready(self, stack) -> bool:
        # An anonymous request is refused (403) by a store that is up.
        return http_status(f"{self.url(stack)}/") in (200, 403)

    def banner(self, stack) -> str:
        return f"{self.url(stack)}  (bucket {SHARED_BUCKET}; sessions: boto3, s3fs, Spark s3a)"


SERVICE = S3()
