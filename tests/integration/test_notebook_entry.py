"""repro's entry-point detection inside a real Jupyter kernel of the embedded stack.

A notebook opened the way JupyterLab opens one (a session for its path) is recorded as
that notebook; a script the notebook starts (``!python train.py``) inherits the
kernel's environment but is recorded as the script; a console kernel with no notebook
is a notebook of unknown path. No fake IPython: the real ipykernel and Jupyter Server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from kernel import run_code

pytestmark = pytest.mark.integration

DETECT = """
import json, os, subprocess, sys
from repro import _entry
e = _entry.detect()
out = {"kind": e.kind, "target": e.target, "command": e.command, "described": e.describe(os.path.expanduser("~")),
       "session_name": os.environ.get("JPY_SESSION_NAME")}
child = subprocess.run([sys.executable, os.path.expanduser("~/train.py")], capture_output=True, text=True, timeout=120)
out["child"] = child.stdout.strip() or child.stderr[-2000:]
print(json.dumps(out))
"""

SCRIPT = """import json
from repro import _entry
e = _entry.detect()
print(json.dumps([e.kind, e.target]))
"""


def _put(stack, token: str, model: dict, path: str, body: dict) -> None:
    r = requests.put(f"{model['url']}api/contents/{path}", json=body,
                     headers={"Authorization": f"token {token}"}, timeout=60)
    assert r.status_code in (200, 201), r.text


def test_entry_point_in_a_real_notebook_kernel_and_in_a_script_it_starts(stack, alice):
    model = stack.spawn("alice", "cpu-small", server="entry")
    try:
        token = alice["token"]
        # The home as the session sees it: STATE/homes/alice for a local process,
        # /home/jovyan in a container.
        home = Path(run_code(stack.url, model["url"], token,
                             "import os; print(os.path.expanduser('~'))").strip().splitlines()[-1])
        _put(stack, token, model, "analysis", {"type": "directory"})
        _put(stack, token, model, "analysis/train.ipynb", {"type": "notebook", "format": "json", "content": {
            "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
        _put(stack, token, model, "train.py", {"type": "file", "format": "text", "content": SCRIPT})

        out = json.loads(run_code(stack.url, model["url"], token, DETECT,
                                  notebook="analysis/train.ipynb").strip().splitlines()[-1])
        notebook = str(home / "analysis" / "train.ipynb")
        assert out["session_name"] == notebook  # what Jupyter Server told the kernel
        assert (out["kind"], out["target"]) == ("notebook", notebook), out
        assert out["command"] == ["jupyter", "execute", notebook]
        assert out["described"] == "analysis/train.ipynb"
        # The child inherits JPY_SESSION_NAME but is no kernel: it is the script.
        assert json.loads(out["child"]) == ["script", str(home / "train.py")], out["child"]

        # A kernel started without a notebook (a console): a notebook, path unknown.
        bare = json.loads(run_code(stack.url, model["url"], token, DETECT).strip().splitlines()[-1])
        assert (bare["kind"], bare["target"], bare["session_name"]) == ("notebook", "notebook", None), bare
    finally:
        stack.stop_server("alice", "entry")
