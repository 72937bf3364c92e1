"""The S3-compatible store (versitygw): the shared bucket every session reads and
writes, and MLflow's artifact bucket. One S3 account per user and per service.

Rules this module keeps:

- the store's address is decided here, once; sessions get it through
  :meth:`S3.endpoints` (without keys: the deployment settings every session reads hold
  none) and their own user's keys from the spawner (:meth:`S3Accounts.for_user`, at
  the first spawn). No session holds the root keys or another user's keys.
- each account is an IAM account of versitygw's internal IAM (``STATE/s3-iam``, made
  through its admin API with the root keys): ``user-NAME`` for a hub user,
  ``svc-NAME`` for a service (Trino, MLflow). The keys live in
  ``STATE/secrets/s3-accounts/`` (0600); the access key names the account, so the
  store's access log (``STATE/logs/s3-access.log``) attributes every request to a user.
- what each account may do is the buckets' policies (:func:`bucket_policies`, pure),
  rewritten whenever an account comes or goes: every user and Trino read and write the
  shared bucket; ``users/NAME/`` in it is NAME's alone (others are denied its objects
  and listing it); only MLflow's account reaches MLflow's bucket (sessions log
  artifacts through MLflow's artifact proxy). The root account bypasses policies: it
  is the hub's and the store's alone.
- keys travel through environments, never on a command line that ``ps`` shows.

As a program (the hub runs it)::

    python -m atelier_hub.services.s3 --state STATE --record F

runs versitygw under a :class:`._process.Supervisor` and, after each start, makes
the service accounts and policies (idempotent), then writes ``STATE/run/s3.ready``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

from ..install.paths import tool_path
from ..settings import S3Service
from . import Service
from ._process import Supervisor, die_with_parent, http_status

__all__ = ["SHARED_BUCKET", "MLFLOW_BUCKET", "S3", "S3Accounts", "S3AdminError", "bucket_policies",
           "user_access_key", "service_access_key", "private_prefix", "remove_user_keys", "SERVICE"]

SHARED_BUCKET = "atelier-shared"
MLFLOW_BUCKET = "atelier-mlflow"
#: services that get an S3 account of their own
SERVICE_ACCOUNTS = ("trino", "mlflow")

# What an account may do in a bucket it is granted: objects and listing, never the
# bucket's policy, ACL or existence. ref: versitygw auth/bucket_policy_actions.go
OBJECT_ACTIONS = [
    "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts", "s3:GetObjectTagging", "s3:PutObjectTagging",
    "s3:DeleteObjectTagging", "s3:GetObjectAttributes",
]
BUCKET_ACTIONS = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]


def user_access_key(name: str) -> str:
    """The access key id of hub user ``name``'s account (user names are [a-z0-9._-]).

    >>> user_access_key("ada")
    'user-ada'
    """
    return f"user-{name}"


def service_access_key(name: str) -> str:
    """The access key id of service ``name``'s account.

    >>> service_access_key("trino")
    'svc-trino'
    """
    return f"svc-{name}"


def private_prefix(name: str) -> str:
    """The prefix of the shared bucket that only ``name`` reaches.

    >>> private_prefix("ada")
    'users/ada/'
    """
    return f"users/{name}/"


def _arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")


def _grant(sid: str, principals: list[str], bucket: str) -> list[dict]:
    principal = {"AWS": sorted(principals)}
    return [
        {"Sid": f"{sid}-objects", "Effect": "Allow", "Principal": principal, "Action": OBJECT_ACTIONS,
         "Resource": [_arn(bucket, "*")]},
        {"Sid": f"{sid}-bucket", "Effect": "Allow", "Principal": principal, "Action": BUCKET_ACTIONS,
         "Resource": [_arn(bucket)]},
    ]


def bucket_policies(*, users: list[str], services: list[str]) -> dict[str, dict | None]:
    """Each bucket's policy for these hub users and services (pure); None: no policy
    (nobody but root may use the bucket).

    >>> p = bucket_policies(users=["ada", "bob"], services=["trino", "mlflow"])
    >>> p["atelier-shared"]["Statement"][0]["Principal"]["AWS"]
    ['svc-trino', 'user-ada', 'user-bob']
    >>> [s["Principal"]["AWS"] for s in p["atelier-shared"]["Statement"] if s["Sid"] == "private-ada-objects"]
    [['svc-trino', 'user-bob']]
    >>> p["atelier-mlflow"]["Statement"][0]["Principal"]["AWS"]
    ['svc-mlflow']
    >>> bucket_policies(users=[], services=[])["atelier-shared"] is None
    True
    """
    shared_principals = [user_access_key(u) for u in users]
    if "trino" in services:
        # Trino queries for every user; it gets the shared area, not anybody's private prefix.
        shared_principals.append(service_access_key("trino"))
    policies: dict[str, dict | None] = {SHARED_BUCKET: None, MLFLOW_BUCKET: None}
    if shared_principals:
        statements = _grant("everyone", shared_principals, SHARED_BUCKET)
        for user in sorted(users):
            others = sorted(p for p in shared_principals if p != user_access_key(user))
            if not others:
                continue
            prefix = private_prefix(user)
            # An explicit Deny wins over the Allow above. ref: versitygw auth/access-control.go
            statements.append({"Sid": f"private-{user}-objects", "Effect": "Deny", "Principal": {"AWS": others},
                               "Action": ["s3:*"], "Resource": [_arn(SHARED_BUCKET, prefix + "*")]})
            statements.append({"Sid": f"private-{user}-listing", "Effect": "Deny", "Principal": {"AWS": others},
                               "Action": ["s3:ListBucket"], "Resource": [_arn(SHARED_BUCKET)],
                               "Condition": {"StringLike": {"s3:prefix": [prefix + "*", prefix.rstrip("/")]}}})
        policies[SHARED_BUCKET] = {"Version": "2012-10-17", "Statement": statements}
    if "mlflow" in services:
        policies[MLFLOW_BUCKET] = {"Version": "2012-10-17",
                                   "Statement": _grant("mlflow", [service_access_key("mlflow")], MLFLOW_BUCKET)}
    return policies


class S3AdminError(RuntimeError):
    """The store refused or did not answer an admin request; the message says which."""


class S3Accounts:
    """The accounts of one embedded store: keys on disk, accounts on the server.

    ``root`` is ``{"access_key_id", "secret_access_key"}`` of versitygw's root user.
    """

    def __init__(self, *, keys_dir: str | Path, endpoint: str, root: dict[str, str], region: str = "us-east-1"):
        self.keys_dir = Path(keys_dir)
        self.endpoint = endpoint.rstrip("/")
        self.root = root
        self.region = region

    @classmethod
    def from_state(cls, state: str | Path) -> S3Accounts:
        """The accounts of the embedded stack whose state folder is ``state``."""
        from ..embedded import Embedded

        stack = Embedded.load(state)
        return cls(keys_dir=stack.path("secrets/s3-accounts"), endpoint=SERVICE.url(stack), root=stack.s3_keys())

    # -- keys on disk ------------------------------------------------------------------

    def _path(self, kind: str, name: str) -> Path:
        return self.keys_dir / kind / f"{name}.json"

    def _keys(self, kind: str, name: str, access: str) -> dict[str, str]:
        from ..private_files import write_private

        path = self._path(kind, name)
        if not path.exists():
            write_private(path, json.dumps({"access_key_id": access, "secret_access_key": secrets.token_urlsafe(30)}))
        return json.loads(path.read_text())

    def service_keys(self, name: str) -> dict[str, str]:
        """Service ``name``'s keys (made on disk if new; the account itself is made by
        :meth:`provision` once the store runs)."""
        return self._keys("services", name, service_access_key(name))

    def users(self) -> list[str]:
        return sorted(p.stem for p in (self.keys_dir / "users").glob("*.json"))

    def services(self) -> list[str]:
        return sorted(p.stem for p in (self.keys_dir / "services").glob("*.json"))

    # -- the admin API -----------------------------------------------------------------

    def _admin(self, action: str, *, query: str = "", body: bytes = b"") -> bytes:
        """One signed request of versitygw's admin API (PATCH /ACTION, SigV4 with the
        root keys). ref: versitygw cmd/internal/gwcli/admin.go"""
        import hashlib

        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = f"{self.endpoint}/{action}" + (f"?{query}" if query else "")
        req = AWSRequest(method="PATCH", url=url, data=body,
                         headers={"X-Amz-Content-Sha256": hashlib.sha256(body).hexdigest()})
        SigV4Auth(Credentials(self.root["access_key_id"], self.root["secret_access_key"]), "s3",
                  self.region).add_auth(req)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(url, data=body or None, method="PATCH", headers=dict(req.headers.items()))
        try:
            with opener.open(request, timeout=15) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            raise S3AdminError(f"the S3 server at {self.endpoint} refused {action}: HTTP {exc.code} "
                               f"{exc.read()[:300]!r}") from None
        except OSError as exc:
            raise S3AdminError(f"the S3 server at {self.endpoint} is not reachable ({exc}); "
                               "is the hub's 's3' service running?") from None

    def server_accounts(self) -> set[str]:
        root = ElementTree.fromstring(self._admin("list-users"))
        return {el.text or "" for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Access"}

    def _create(self, keys: dict[str, str]) -> None:
        account = ElementTree.Element("Account")
        for tag, value in (("Access", keys["access_key_id"]), ("Secret", keys["secret_access_key"]),
                           ("Role", "user")):
            ElementTree.SubElement(account, tag).text = value
        self._admin("create-user", body=ElementTree.tostring(account))

    def _client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.root["access_key_id"],
                            aws_secret_access_key=self.root["secret_access_key"],
                            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=15))

    @contextlib.contextmanager
    def _locked(self):
        """One writer of accounts and policies at a time (the hub and the CLI)."""
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.keys_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def apply_policies(self) -> None:
        client = self._client()
        for bucket, policy in bucket_policies(users=self.users(), services=self.services()).items():
            if policy is None:
                with contextlib.suppress(client.exceptions.ClientError):
                    client.delete_bucket_policy(Bucket=bucket)
            else:
                client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    # -- what the hub calls --------------------------------------------------------------

    def provision(self) -> None:
        """Make every account that has keys on disk but none on the server (the
        services', and users' after the store's IAM folder was lost), write the
        policies, and finish removals that found the store down."""
        with self._locked():
            for name in SERVICE_ACCOUNTS:
                self.service_keys(name)
            have = self.server_accounts()
            for kind, names in (("services", self.services()), ("users", self.users())):
                for name in names:
                    keys = json.loads(self._path(kind, name).read_text())
                    if keys["access_key_id"] not in have:
                        self._create(keys)
            for bucket in (SHARED_BUCKET, MLFLOW_BUCKET):
                # A bucket made as a folder has no owner record, and CopyObject then
                # fails with InternalError for every non-root account: the root owns it.
                self._admin("change-bucket-owner/", query=f"bucket={bucket}&owner={self.root['access_key_id']}")
            self.apply_policies()
            self._finish_removals(have)

    def _finish_removals(self, have: set[str]) -> None:
        """Delete the accounts of users removed (their key files moved to ``removed/``),
        once the policies no longer name them (a policy may name only existing accounts)."""
        for path in sorted((self.keys_dir / "removed").glob("*.json")):
            access = json.loads(path.read_text())["access_key_id"]
            if access in have:
                self._admin("delete-user", query=f"access={access}")
            path.unlink()

    def for_user(self, name: str) -> dict[str, str]:
        """User ``name``'s keys, their account made on the store at the first call."""
        with self._locked():
            path = self._path("users", name)
            have = self.server_accounts()
            if self._path("removed", name).exists():
                self._finish_removals(have)  # a user removed and added again gets new keys
                have = self.server_accounts()
            if path.exists() and user_access_key(name) in have:
                return json.loads(path.read_text())
            keys = self._keys("users", name, user_access_key(name))
            if keys["access_key_id"] not in have:
                self._create(keys)
            self.apply_policies()
            return keys

    def remove_user(self, name: str) -> bool:
        """Delete user ``name``'s account and keys; False if they had none. Their key
        file moves to ``removed/`` first: if the store is down, :meth:`provision`
        finishes the removal at its next start (S3AdminError says so meanwhile)."""
        with self._locked():
            path = self._path("users", name)
            if not path.exists():
                return False
            removed = self._path("removed", name)
            removed.parent.mkdir(mode=0o700, exist_ok=True)
            path.replace(removed)
            self.apply_policies()
            self._finish_removals(self.server_accounts())
            return True


def remove_user_keys(state: str | Path, name: str) -> bool:
    """The one place a removed hub user's S3 keys are deleted (their account on the
    store, their key file, their place in the policies). Their objects stay."""
    return S3Accounts.from_state(state).remove_user(name)


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
        stack.path("s3-iam").mkdir(mode=0o700, exist_ok=True)

    def endpoints(self, stack) -> dict:
        # No keys here: every session reads these settings; its own keys come from the spawner.
        return {"s3": S3Service(endpoint_url=self.url(stack), bucket=SHARED_BUCKET)}

    def accounts(self, stack) -> S3Accounts:
        return S3Accounts(keys_dir=stack.path("secrets/s3-accounts"), endpoint=self.url(stack),
                          root=stack.s3_keys())

    def view_for(self, stack, services, name: str):
        """The S3 entry carries service ``name``'s own account's keys (none for a
        service without an account)."""
        if services.s3 is None or name == self.name:
            return services
        keys = self.accounts(stack).service_keys(name) if name in SERVICE_ACCOUNTS else {}
        return services.model_copy(update={"s3": services.s3.model_copy(update={
            "access_key_id": keys.get("access_key_id"), "secret_access_key": keys.get("secret_access_key")})})

    def hub_service(self, stack, services) -> dict:
        root = stack.s3_keys()
        # No "url": the hub neither waits for the store (atelier dev checks it) nor
        # routes it through its public proxy (sessions reach it on 127.0.0.1).
        return {
            "name": self.name,
            "display": False,
            "environment": {
                "ROOT_ACCESS_KEY_ID": root["access_key_id"],
                "ROOT_SECRET_ACCESS_KEY": root["secret_access_key"],
            },
            "command": [
                sys.executable, "-m", "atelier_hub.services.s3",
                "--state", str(stack.root), "--record", str(self.record_file(stack.root)),
            ],
        }

    def server_command(self, stack) -> list[str]:
        return [
            str(tool_path("versitygw")), "--port", f"127.0.0.1:{stack.ports[self.name]}", "--quiet",
            # Every request, with the access key that signed it: who wrote what.
            "--access-log", str(stack.path("logs/s3-access.log")),
            # Users' accounts, read at each request: a deleted account stops at once.
            "--iam-dir", str(stack.path("s3-iam")), "--iam-cache-disable",
            # Objects private to the hub's OS user (versitygw sets its own modes,
            # 0644/0755 by default, whatever the umask).
            "posix", "--file-perms", "0600", "--dir-perms", "0700", str(stack.path("s3")),
        ]

    def remove_user(self, stack, name: str) -> None:
        try:
            remove_user_keys(stack.root, name)
        except S3AdminError as exc:
            # The store is down (at the hub's start-up it is not started yet): its
            # supervisor's next provisioning finishes the removal.
            print(f"s3: {name}'s account is deleted when the store is up ({exc})", file=sys.stderr, flush=True)

    def ready_file(self, stack) -> Path:
        return stack.path("run/s3.ready")

    def ready(self, stack) -> bool:
        # The accounts and policies are made (the supervisor writes the file), and an
        # anonymous request is refused (403) by a store that is up.
        return self.ready_file(stack).exists() and http_status(f"{self.url(stack)}/") in (200, 403)

    def banner(self, stack) -> str:
        return f"{self.url(stack)}  (bucket {SHARED_BUCKET}; sessions: boto3, s3fs, Spark s3a)"


SERVICE = S3()


def main(argv: list[str] | None = None) -> None:
    die_with_parent()
    from ..embedded import Embedded

    ap = argparse.ArgumentParser(prog="python -m atelier_hub.services.s3", description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, type=Path, help="the embedded stack's state folder")
    ap.add_argument("--record", required=True, type=Path, help="file that records versitygw's process group")
    args = ap.parse_args(argv)
    stack = Embedded.load(args.state)
    ready = SERVICE.ready_file(stack)
    ready.unlink(missing_ok=True)
    args.record.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    accounts = SERVICE.accounts(stack)
    sup = Supervisor(SERVICE.server_command(stack), name="s3", record_file=args.record, env=env)
    sup.handle_signals()
    sup.start()
    provisioned_pid = None
    while sup.check():
        pid = sup.proc.pid if sup.proc is not None and sup.proc.poll() is None else None
        if pid is None:
            ready.unlink(missing_ok=True)
        elif pid != provisioned_pid and http_status(f"{accounts.endpoint}/") in (200, 403):
            try:
                accounts.provision()
            except S3AdminError as exc:
                print(f"s3: accounts not made yet ({exc}); trying again in 5 s", file=sys.stderr, flush=True)
                time.sleep(5)
            else:
                provisioned_pid = pid
                ready.write_text(json.dumps({"pid": pid}))
        time.sleep(0.3)
    ready.unlink(missing_ok=True)
    sup.stop()


if __name__ == "__main__":
    main()
