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
