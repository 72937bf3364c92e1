"""The embedded S3 store's metadata, on the real versitygw binary (no hub): the shared
bucket's policy for a team larger than an inode's extended attributes hold is stored and
enforced, and a store made by an older Atelier (metadata in extended attributes) keeps
its buckets, objects, content types and policy once its metadata moves to the sidecar."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from atelier_hub.install.paths import missing
from atelier_hub.services._process import free_port, http_status
from atelier_hub.services.s3_accounts import MLFLOW_BUCKET, SHARED_BUCKET, S3Accounts, bucket_policies
from atelier_hub.services.s3_server import SIDECAR, move_metadata_to_sidecar, server_command
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = {"access_key_id": "atelier-root", "secret_access_key": "root-secret-for-this-test-only"}


@pytest.fixture
def store(tmp_path):
    """Start versitygw on ``tmp_path`` as the state folder (``sidecar``: as Atelier runs
    it now, else as it ran before, metadata in extended attributes); yields a starter."""
    if missing(("versitygw",)):
        pytest.fail("versitygw is not installed: run `make install`")
    procs = []

    def start(*, sidecar: bool) -> str:
        port = free_port()
        for folder in ("logs", "s3", "s3-iam"):  # as the S3 service prepares them
            (tmp_path / folder).mkdir(exist_ok=True, mode=0o700)
        cmd = server_command(port=port, state=tmp_path)
        if not sidecar:
            at = cmd.index("--sidecar")
            del cmd[at:at + 2]
        env = {**os.environ, "ROOT_ACCESS_KEY_ID": ROOT["access_key_id"],
               "ROOT_SECRET_ACCESS_KEY": ROOT["secret_access_key"]}
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while http_status(f"{url}/") not in (200, 403):
            assert time.monotonic() < deadline, "versitygw did not answer"
            time.sleep(0.2)
        return url

    def stop() -> None:
        for p in procs:
            p.terminate()
            p.wait(10)
        procs.clear()

    start.stop = stop
    yield start
    stop()


def _client(url: str, keys: dict):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=keys["access_key_id"],
                        aws_secret_access_key=keys["secret_access_key"], config=Config(retries={"max_attempts": 1}))


def test_a_team_of_twenty_gets_its_policy_and_each_private_prefix_holds(tmp_path, store):
    move_metadata_to_sidecar(tmp_path)
    url = store(sidecar=True)
    for bucket in (SHARED_BUCKET, MLFLOW_BUCKET):  # as the S3 service makes them
        _client(url, ROOT).create_bucket(Bucket=bucket)
    accounts = S3Accounts(keys_dir=tmp_path / "keys", endpoint=url, root=ROOT)
    users = [f"member{i:02d}" for i in range(20)]
    keys = {u: accounts.for_user(u) for u in users}  # each makes the account and applies the policies
    size = len(json.dumps(bucket_policies(users=users, services=[])[SHARED_BUCKET]))
    assert size > 4096 * 4, size  # far more than an inode's extended attributes hold
    first, last = _client(url, keys["member00"]), _client(url, keys["member19"])
    first.put_object(Bucket=SHARED_BUCKET, Key="users/member00/mine.txt", Body=b"private")
    last.put_object(Bucket=SHARED_BUCKET, Key="shared.txt", Body=b"for all")
    assert first.get_object(Bucket=SHARED_BUCKET, Key="shared.txt")["Body"].read() == b"for all"
    with pytest.raises(ClientError, match="AccessDenied"):
        last.get_object(Bucket=SHARED_BUCKET, Key="users/member00/mine.txt")


def test_a_store_made_before_keeps_its_objects_metadata_and_policy(tmp_path, store):
    url = store(sidecar=False)  # as an older Atelier ran it
    root = _client(url, ROOT)
    root.create_bucket(Bucket="older")
    root.put_object(Bucket="older", Key="frame.parquet", Body=b"PAR1", ContentType="application/x-parquet",
                    Metadata={"made-by": "ada"})
    policy = {"Version": "2012-10-17", "Statement": [{"Sid": "root-reads", "Effect": "Allow",
              "Principal": {"AWS": [ROOT["access_key_id"]]}, "Action": ["s3:GetObject"],
              "Resource": ["arn:aws:s3:::older/*"]}]}
    root.put_bucket_policy(Bucket="older", Policy=json.dumps(policy))
    store.stop()
    assert not (tmp_path / SIDECAR).exists()

    assert move_metadata_to_sidecar(tmp_path) > 0
    url = store(sidecar=True)
    root = _client(url, ROOT)
    head = root.head_object(Bucket="older", Key="frame.parquet")
    assert (head["ContentType"], head["Metadata"]) == ("application/x-parquet", {"made-by": "ada"})
    assert root.get_object(Bucket="older", Key="frame.parquet")["Body"].read() == b"PAR1"
    assert json.loads(root.get_bucket_policy(Bucket="older")["Policy"])["Statement"][0]["Sid"] == "root-reads"
    assert [b["Name"] for b in root.list_buckets()["Buckets"]] == ["older"]
    assert move_metadata_to_sidecar(tmp_path) == 0  # once
    assert Path(tmp_path / SIDECAR / "older" / "meta").is_dir()
