"""The S3 store's process: versitygw under a supervisor, its accounts made after each start.

Rule this module keeps: the store listens on 127.0.0.1 only, keeps its objects and
accounts private to the hub's OS user, and is ready (``STATE/run/s3.ready``) only
once the accounts and policies of :mod:`.s3_accounts` are made on the running server;
the file is removed whenever it is not running. The root keys arrive in this
process's environment (``ROOT_ACCESS_KEY_ID``, ``ROOT_SECRET_ACCESS_KEY``: versitygw
reads the same variables), never on a command line.

The store's metadata (each bucket's policy, ACL and ownership; each object's content
type, ETag and user metadata) is kept in files beside the objects (versitygw's sidecar,
``STATE/meta-s3``), not in extended attributes: the shared bucket's policy names every
user (:func:`.s3_accounts.bucket_policies`) and outgrows the ~4 KB a filesystem gives an
inode's attributes (ext4 refused it, ENOSPC, at the 7th user). A state folder made
before keeps its metadata: :func:`move_metadata_to_sidecar` copies it over once.

Run by the hub as ``python -m atelier_hub.services.s3 --state STATE --record F --port P --ready F``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..install.paths import tool_path
from ._process import Supervisor, die_with_parent, http_status, supervise_until_ready
from .base import local_url
from .s3_accounts import S3Accounts, S3AdminError

__all__ = ["server_command", "main"]


#: where versitygw keeps the store's metadata, under the state folder
SIDECAR = "meta-s3"  # not "s3-...": versitygw refuses a sidecar path that starts with the root's path
_XATTR_PREFIX = "user."


def move_metadata_to_sidecar(state: Path) -> int:
    """Copy the metadata an older store kept in extended attributes (``user.NAME`` of each
    bucket and object under ``STATE/s3``) into the sidecar layout versitygw reads
    (``STATE/meta-s3/REL/meta/NAME``), once: nothing is done when the sidecar folder
    exists. The attributes stay (an older Atelier still reads them). Returns how many
    were copied.

    >>> import tempfile
    >>> st = Path(tempfile.mkdtemp()); (st / "s3" / "b").mkdir(parents=True)
    >>> (st / "s3" / "b" / "k.txt").write_text("x")
    1
    >>> os.setxattr(st / "s3" / "b" / "k.txt", "user.content-type", b"text/plain")
    >>> move_metadata_to_sidecar(st), (st / "meta-s3" / "b" / "k.txt" / "meta" / "content-type").read_text()
    (1, 'text/plain')
    >>> move_metadata_to_sidecar(st)
    0
    """
    store, sidecar = state / "s3", state / SIDECAR
    if sidecar.exists():
        return 0
    tmp = state / (SIDECAR + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)  # a copy cut short: start it again
    tmp.mkdir(mode=0o700)
    copied = 0
    if store.is_dir():
        for root, dirs, files in os.walk(store):
            for name in [*dirs, *files]:
                path = Path(root) / name
                rel = path.relative_to(store)
                try:
                    attrs = [a for a in os.listxattr(path, follow_symlinks=False) if a.startswith(_XATTR_PREFIX)]
                except OSError:
                    continue
                for attr in attrs:
                    meta = tmp / rel / "meta"
                    meta.mkdir(parents=True, exist_ok=True, mode=0o700)
                    (meta / attr[len(_XATTR_PREFIX):]).write_bytes(os.getxattr(path, attr, follow_symlinks=False))
                    copied += 1
    os.replace(tmp, sidecar)
    return copied


def server_command(*, port: int, state: Path) -> list[str]:
    """versitygw's command line for the store of the state folder ``state``.

    >>> server_command(port=9000, state=Path("/s"))[1:3]
    ['--port', '127.0.0.1:9000']
    """
    return [
        str(tool_path("versitygw")), "--port", f"127.0.0.1:{port}", "--quiet",
        # Every request, with the access key that signed it: who wrote what.
        "--access-log", str(state / "logs/s3-access.log"),
        # Users' accounts, read at each request: a deleted account stops at once.
        "--iam-dir", str(state / "s3-iam"), "--iam-cache-disable",
        # Objects private to the hub's OS user (versitygw sets its own modes,
        # 0644/0755 by default, whatever the umask).
        "posix", "--file-perms", "0600", "--dir-perms", "0700",
        # Metadata in files: a policy naming many users does not fit in extended attributes.
        "--sidecar", str(state / SIDECAR), str(state / "s3"),
    ]


def main(argv: list[str] | None = None) -> None:
    die_with_parent()
    ap = argparse.ArgumentParser(prog="python -m atelier_hub.services.s3", description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, type=Path, help="the embedded stack's state folder")
    ap.add_argument("--record", required=True, type=Path, help="file that records versitygw's process group")
    ap.add_argument("--port", required=True, type=int, help="the store's port on 127.0.0.1")
    ap.add_argument("--ready", required=True, type=Path, help="file written once the accounts are made")
    args = ap.parse_args(argv)
    ready = args.ready
    ready.unlink(missing_ok=True)
    args.record.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    accounts = S3Accounts(keys_dir=args.state / "secrets/s3-accounts", endpoint=local_url(args.port),
                          root={"access_key_id": env["ROOT_ACCESS_KEY_ID"],
                                "secret_access_key": env["ROOT_SECRET_ACCESS_KEY"]})
    moved = move_metadata_to_sidecar(args.state)
    if moved:
        print(f"s3: moved {moved} metadata entries of the store to {args.state / SIDECAR}", flush=True)
    sup = Supervisor(server_command(port=args.port, state=args.state), name="s3", record_file=args.record,
                     env=env)

    def provisioned(_proc) -> bool:
        if http_status(f"{accounts.endpoint}/") not in (200, 403):
            return False
        try:
            accounts.provision()
        except S3AdminError as exc:
            print(f"s3: accounts not made yet ({exc}); trying again in 5 s", file=sys.stderr, flush=True)
            time.sleep(5)
            return False
        return True

    supervise_until_ready(sup, probe=provisioned, on_ready=lambda pid: ready.write_text(json.dumps({"pid": pid})),
                          on_lost=lambda: ready.unlink(missing_ok=True))
    ready.unlink(missing_ok=True)
