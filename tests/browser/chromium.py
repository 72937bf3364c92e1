"""Headless Chromium for the browser tests: Debian's, driven by Playwright (no browser
download), with the flags measured to work here (RECIPES.md), and the hub's login form.
The fixtures that use it are in this folder's conftest.py."""

from __future__ import annotations

import shutil

from stack import OUTPUT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = OUTPUT / "screenshots"


def login(page, stack, name, password):
    """Log in through the hub's own login form."""
    page.goto(f"{stack.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(f"{stack.url}/hub/**")


def serious_accessibility_faults(page) -> list[dict]:
    """axe-core's serious and critical violations on ``page`` as it is now (axe-core from
    npm, installed by `make install-test`): each rule's id, its help text, and up to five
    of the elements at fault. An empty list is the pass."""
    from atelier_hub.install.paths import tool_path

    axe = tool_path("axe-core")
    assert axe.exists(), f"axe-core is not installed at {axe}: run `make install-test`"
    page.add_script_tag(path=str(axe))
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [{"rule": v["id"], "impact": v["impact"], "help": v["help"],
             "at": [n["target"] for n in v["nodes"][:5]]}
            for v in found if v["impact"] in ("serious", "critical")]
