"""The idle-culling warning in JupyterLab (headless Chromium): it appears before the
stop, Extend postpones the stop, and a notebook left with unsaved changes is saved
before the server stops.

How "a notebook changed and left unsaved" is read here: the notebook is open in
JupyterLab, text is typed into a cell (the document is dirty in the browser; nothing
reaches the server), autosave is off, and nobody saves. After the cull the file in the
home holds the typed text: the warning's plugin saved it. A change written through the
server's contents API is on disk already, so there it is the browser's copy that can
be lost, and that is what is tested.

It runs in the culling window (tests/culling.py): the idle-culling scenarios' servers
start beside it on the same stack, so that its waits and theirs overlap.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

import pytest
from chromium import SHOTS, login
from culling import LAB_TIMEOUT, LAB_WARN, USER

pytestmark = [pytest.mark.browser, pytest.mark.integration]

TIMEOUT, WARN = LAB_TIMEOUT, LAB_WARN  # the `lab` profile's (tests/culling.py)


@pytest.fixture(scope="module")
def lab_stack(cull_window):
    """The culling window's stack: the idle-culling scenarios run beside this test."""
    return cull_window.stack


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_warning_extend_and_unsaved_notebook_saved_before_the_cull(lab_stack, page):
    s = lab_stack
    model = s.spawn(USER, "lab", server="w")
    base = model["url"]
    auth = {"Authorization": f"token {s.admin_token}"}
    nb = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [], "execution_count": None}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    r = s.http.put(f"{base}api/contents/work.ipynb", json={"type": "notebook", "content": nb}, headers=auth,
                   timeout=60)
    assert r.status_code in (200, 201), r.text
    # Autosave off: only the warning's plugin may save the typed text.
    r = s.http.put(f"{base}lab/api/settings/@jupyterlab/docmanager-extension:plugin",
                   json={"raw": json.dumps({"autosave": False})}, headers=auth, timeout=60)
    assert r.status_code == 204, r.text

    password = (s.state / "initial-admin-password").read_text().strip()
    login(page, s, USER, password)
    page.goto(f"{base}lab/tree/work.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=180_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    if page.locator(".jp-Dialog").count():  # nothing should ask anything; say what did
        page.screenshot(path=str(SHOTS / "cull-warning-dialog.png"))
        raise AssertionError(f"JupyterLab shows a dialog: {page.locator('.jp-Dialog').inner_text()}")
    marker = f"typed_but_unsaved_{uuid.uuid4().hex[:8]} = 1"
    page.click(".jp-Notebook .jp-Cell .cm-content")
    page.keyboard.type(marker)
    page.wait_for_selector(".jp-mod-dirty", timeout=30_000)  # the tab shows unsaved changes

    # The warning, some time before the stop; Extend moves the stop a whole timeout later.
    warning = page.wait_for_selector("#atelier-cull-warning:not([hidden])", timeout=(TIMEOUT + 60) * 1000)
    text = warning.inner_text()
    assert "stopping in" in text and "min" in text, text
    page.screenshot(path=str(SHOTS / "cull-warning.png"))
    before = s.http.get(f"{base}api/atelier/culling", headers=auth, timeout=60).json()
    page.click("#atelier-cull-warning button")
    page.wait_for_selector("#atelier-cull-warning", state="hidden", timeout=30_000)
    after = s.http.get(f"{base}api/atelier/culling", headers=auth, timeout=60).json()
    # Extend moves the stop to a whole timeout after the click (its promise), not merely later:
    # a stop that moved by less (say 20 s) fails here; 15 s covers the click's round trip.
    left = (_t(after["cull_at"]) - _t(after["now"])).total_seconds()
    assert TIMEOUT - 15 <= left <= TIMEOUT, (before, after)
    home = s.state / "homes" / USER / "work.ipynb"
    assert marker not in home.read_text(), "saved before the stop came near: not the warning's save"

    # Past the first planned stop, the server still runs (Extend postponed it): checked
    # halfway between the two stops. (A fixed 30 s past the first one could fall after
    # the new stop: they are only TIMEOUT - WARN = 25 s apart when Extend is clicked at once.)
    first, extended = _t(before["cull_at"]), _t(after["cull_at"])
    halfway = first + (extended - first) / 2
    time.sleep(max(0.0, (halfway - datetime.now(timezone.utc)).total_seconds()))
    alive = s.api("GET", f"/users/{USER}").json()["servers"].get("w")
    assert alive and alive["ready"], f"Extend did not postpone the stop:\n{s.hub_log(60)}"
    # ... and the culler still plans the extended stop, not the first one.
    plan = s.http.get(f"{base}api/atelier/culling", headers=auth, timeout=60).json()
    assert _t(plan["cull_at"]) == extended and datetime.now(timezone.utc) > first, (before, after, plan)

    # Nobody comes back: the warning again, the unsaved text saved, then the stop.
    deadline = time.monotonic() + TIMEOUT + 120
    while time.monotonic() < deadline:
        m = s.api("GET", f"/users/{USER}").json()["servers"].get("w")
        if m is None or (not m["ready"] and not m["pending"]):
            break
        time.sleep(2)
    else:
        raise AssertionError(f"the server was not stopped:\n{s.hub_log(80)}")
    saved = json.loads(home.read_text())
    assert marker in "".join(saved["cells"][0]["source"]), saved["cells"][0]
    audit = [json.loads(line) for line in (s.state / "logs" / "culler-audit.jsonl").read_text().splitlines()]
    assert any(line["server"] == f"{USER}/w" and line["action"] == "cull" for line in audit), audit
