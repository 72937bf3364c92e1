"""Run code in a real Jupyter kernel of a spawned server, through the hub's proxy."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urljoin

import requests
from websockets.sync.client import connect


class KernelError(RuntimeError):
    pass


def run_code(base_url: str, server_url: str, token: str, code: str, *, timeout: float = 180,
             notebook: str | None = None, kernel_id: str | None = None, kernel: str = "python3") -> str:
    """Start a kernel on the server at ``server_url`` (its URL from the hub's API, or a
    path such as ``/user/ada/`` on ``base_url``), run ``code``,
    return its stdout; raise :class:`KernelError` with the traceback if it fails.

    With ``notebook`` (a path under the server's root, e.g. ``analysis/train.ipynb``) the
    kernel is started the way JupyterLab opens a notebook: through a session for that path.
    With ``kernel_id`` (from :func:`start_kernel`) the code runs in that kernel, which is
    left running (its variables live on). ``kernel``: the kernelspec's name.
    """
    headers = {"Authorization": f"token {token}"}
    api = f"{server_address(base_url, server_url)}api"
    session_id = None
    kept = kernel_id is not None
    if kept:
        pass  # the caller's kernel
    elif notebook:
        r = requests.post(f"{api}/sessions", json={"path": notebook, "name": notebook.rsplit("/", 1)[-1],
                                                   "type": "notebook", "kernel": {"name": kernel}},
                          headers=headers, timeout=60)
        r.raise_for_status()
        session_id, kernel_id = r.json()["id"], r.json()["kernel"]["id"]
    else:
        r = requests.post(f"{api}/kernels", json={"name": kernel}, headers=headers, timeout=60)
        r.raise_for_status()
        kernel_id = r.json()["id"]
    ws_url = f"{api}/kernels/{kernel_id}/channels".replace("http://", "ws://", 1)
    msg_id = uuid.uuid4().hex
    request = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }
    out: list[str] = []
    error = None
    try:
        with connect(ws_url, additional_headers=headers, open_timeout=60, max_size=None) as ws:
            ws.send(json.dumps(request))
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise KernelError(f"no result in {timeout} s; output so far: {''.join(out)}")
                msg = json.loads(ws.recv(timeout=remaining))
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    error = "\n".join(content["traceback"])
                elif kind == "status" and content["execution_state"] == "idle":
                    break
    finally:
        if kept:
            pass  # left running for the caller
        elif session_id:  # ending the session shuts its kernel down
            requests.delete(f"{api}/sessions/{session_id}", headers=headers, timeout=60)
        else:
            requests.delete(f"{api}/kernels/{kernel_id}", headers=headers, timeout=60)
    if error:
        raise KernelError(error)
    return "".join(out)


def server_address(base_url: str, server_url: str) -> str:
    """Where a server answers: ``server_url`` as the hub's API gives it, absolute on a hub
    that gives each user an origin of their own (``http://ada.localhost:8000/user/ada/``),
    else a path on ``base_url``."""
    return urljoin(base_url + "/", server_url)


def start_kernel(base_url: str, server_url: str, token: str) -> str:
    """A kernel that stays running on the server (for :func:`run_code`'s ``kernel_id``)."""
    r = requests.post(f"{server_address(base_url, server_url)}api/kernels", json={"name": "python3"},
                      headers={"Authorization": f"token {token}"}, timeout=60)
    r.raise_for_status()
    return r.json()["id"]
