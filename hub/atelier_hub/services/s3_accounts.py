"""The S3 store's accounts: one per hub user and per service, keys on disk, accounts on
the server (versitygw's internal IAM), and the buckets' policies that say what each may do.

Rules this module keeps:

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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

__all__ = ["SHARED_BUCKET", "MLFLOW_BUCKET", "SERVICE_ACCOUNTS", "S3Accounts", "S3AdminError", "bucket_policies",
           "user_access_key", "service_access_key", "private_prefix"]

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


def bucket_policies(*, users: list[str], services: list[str], shared_bucket: str = SHARED_BUCKET,
                    mlflow_bucket: str | None = MLFLOW_BUCKET) -> dict[str, dict | None]:
    """Each bucket's policy for these hub users and services (pure); None: no policy
    (nobody but root may use the bucket). A cluster's store names its own shared bucket
    and has no MLflow bucket of Atelier's (``mlflow_bucket`` None: no entry for it).

    >>> p = bucket_policies(users=["ada", "bob"], services=["trino", "mlflow"])
    >>> p["atelier-shared"]["Statement"][0]["Principal"]["AWS"]
    ['svc-trino', 'user-ada', 'user-bob']
    >>> [s["Principal"]["AWS"] for s in p["atelier-shared"]["Statement"] if s["Sid"] == "private-ada-objects"]
    [['svc-trino', 'user-bob']]
    >>> p["atelier-mlflow"]["Statement"][0]["Principal"]["AWS"]
    ['svc-mlflow']
    >>> bucket_policies(users=[], services=[])["atelier-shared"] is None
    True
    >>> sorted(bucket_policies(users=["ada"], services=[], shared_bucket="team", mlflow_bucket=None))
    ['team']
    """
    shared_principals = [user_access_key(u) for u in users]
    if "trino" in services:
        # Trino queries for every user; it gets the shared area, not anybody's private prefix.
        shared_principals.append(service_access_key("trino"))
    policies: dict[str, dict | None] = {shared_bucket: None}
    if mlflow_bucket is not None:
        policies[mlflow_bucket] = None
    if shared_principals:
        statements = _grant("everyone", shared_principals, shared_bucket)
        for user in sorted(users):
            others = sorted(p for p in shared_principals if p != user_access_key(user))
            if not others:
                continue
            prefix = private_prefix(user)
            # An explicit Deny wins over the Allow above. ref: versitygw auth/access-control.go
            statements.append({"Sid": f"private-{user}-objects", "Effect": "Deny", "Principal": {"AWS": others},
                               "Action": ["s3:*"], "Resource": [_arn(shared_bucket, prefix + "*")]})
            statements.append({"Sid": f"private-{user}-listing", "Effect": "Deny", "Principal": {"AWS": others},
                               "Action": ["s3:ListBucket"], "Resource": [_arn(shared_bucket)],
                               "Condition": {"StringLike": {"s3:prefix": [prefix + "*", prefix.rstrip("/")]}}})
        policies[shared_bucket] = {"Version": "2012-10-17", "Statement": statements}
    if "mlflow" in services and mlflow_bucket is not None:
        policies[mlflow_bucket] = {"Version": "2012-10-17",
                                   "Statement": _grant("mlflow", [service_access_key("mlflow")], mlflow_bucket)}
    return policies


class S3AdminError(RuntimeError):
    """The store refused or did not answer an admin request; the message says which."""


class S3Accounts:
    """The accounts of one store: keys on disk, accounts on the server.

    ``root`` is ``{"access_key_id", "secret_access_key"}`` of versitygw's root user.
    The embedded store has both of Atelier's buckets and the services' accounts (the
    defaults); a cluster's store (the hub in the chart, :mod:`atelier_hub.cluster.kubespawner`)
    names its shared bucket, no MLflow bucket and no service account: users' accounts only.
    """

    def __init__(self, *, keys_dir: str | Path, endpoint: str, root: dict[str, str], region: str = "us-east-1",
                 shared_bucket: str = SHARED_BUCKET, mlflow_bucket: str | None = MLFLOW_BUCKET,
                 service_accounts: tuple[str, ...] = SERVICE_ACCOUNTS):
        self.keys_dir = Path(keys_dir)
        self.endpoint = endpoint.rstrip("/")
        self.root = root
        self.region = region
        self.shared_bucket = shared_bucket
        self.mlflow_bucket = mlflow_bucket
        self.service_accounts = service_accounts

    # -- keys on disk ------------------------------------------------------------------

    def _path(self, kind: str, name: str) -> Path:
        return self.keys_dir / kind / f"{name}.json"

    def _keys(self, kind: str, name: str, access: str) -> dict[str, str]:
        # Here, not at the top: the descriptor (imported in either mode) reads this
        # module's names, and only the embedded store writes keys.
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
        for bucket, policy in bucket_policies(users=self.users(), services=self.services(),
                                              shared_bucket=self.shared_bucket, mlflow_bucket=self.mlflow_bucket).items():
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
            for name in self.service_accounts:
                self.service_keys(name)
            have = self.server_accounts()
            for kind, names in (("services", self.services()), ("users", self.users())):
                for name in names:
                    keys = json.loads(self._path(kind, name).read_text())
                    if keys["access_key_id"] not in have:
                        self._create(keys)
            for bucket in (self.shared_bucket, self.mlflow_bucket):
                if bucket is None:
                    continue
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
            if not path.exists() and user_access_key(name) in have:
                # An account whose keys were lost (a hub volume made anew): its secret is
                # unknown, so it is made again with new keys.
                self._admin("delete-user", query=f"access={user_access_key(name)}")
                have.discard(user_access_key(name))
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
