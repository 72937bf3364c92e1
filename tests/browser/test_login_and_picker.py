"""Headless Chromium (Debian's, driven by Playwright) through the real login page and
profile picker. Screenshots land in test-output/screenshots/ (git-ignored)."""

from __future__ import annotations

import pytest
from atelier_hub.embedded.gpus import detect_gpus
from chromium import SHOTS, login, serious_accessibility_faults

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_login_pick_a_gpu_profile_without_gpus_is_refused_on_the_page(stack, page):
    if detect_gpus():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    login(page, stack, "dora", stack.add_user("dora"))
    page.goto(f"{stack.url}/hub/spawn")
    cards = page.locator("label.atelier-profile")
    assert cards.count() == 5
    assert "64G" in page.locator('label[data-profile="highmem"]').inner_text()
    page.screenshot(path=str(SHOTS / "profile-picker.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / "profile-picker-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    assert serious_accessibility_faults(page) == []
    # From the keyboard: a card is chosen with the arrow keys, as radio buttons are.
    page.focus('label[data-profile="cpu-small"] input')
    page.keyboard.press("ArrowDown")
    assert page.locator('label[data-profile="cpu-small"] input').is_checked() is False
    assert page.locator('label.atelier-profile input:checked').count() == 1

    page.click('label[data-profile="gpu-1"]')
    page.click("#spawn_form [type=submit]")
    page.wait_for_selector("text=needs 1 GPU(s)")
    assert "this machine has no NVIDIA GPU" in page.content()
    assert page.content().count("needs 1 GPU(s)") == 1  # said once, plainly
    assert page.url.startswith(f"{stack.url}/hub/spawn")
    page.screenshot(path=str(SHOTS / "gpu-refused.png"), full_page=True)


def test_login_pick_a_cpu_profile_and_land_in_jupyterlab(stack, page):
    """A new user's first minute, as README's "The first minute" tells it: log in, land on
    the home page, start a server from a profile card, JupyterLab with the welcome
    notebook (its cells run in test_container_sessions.py); a screenshot of each screen."""
    login(page, stack, "erin", stack.add_user("erin"))
    # The hub lands on the home page after login: no server yet, and under "New server"
    # the profile cards (the spawn form's own, with what is free), to start one at once.
    assert page.url.startswith(f"{stack.url}/hub/home"), page.url
    page.wait_for_selector("#atelier-no-servers")
    cards = page.locator("#atelier-new-server label.atelier-profile")
    assert cards.count() == 5, page.inner_text("#atelier-home")
    assert serious_accessibility_faults(page) == []
    page.screenshot(path=str(SHOTS / "first-home.png"), full_page=True)
    page.click('#atelier-new-server label[data-profile="cpu-small"]')
    page.click("#atelier-start-card")
    # erin's own origin (docs/security.md: NAME.localhost on an embedded hub).
    page.wait_for_url(f"http://erin.localhost:{stack.port}/user/erin/lab**", timeout=180_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
    page.wait_for_selector(".jp-Launcher", timeout=60_000)
    # No "Would you like to get notified about official Jupyter news?" on the first load:
    # JupyterLab's own setting says never (its stock default, "none", asks).
    # (read by the page itself: erin.localhost resolves in the browser, not in Playwright's client)
    # A cookie-authenticated API call sends the _xsrf cookie back as a header, as JupyterLab does.
    notification = page.evaluate("""fetch('/user/erin/lab/api/settings/@jupyterlab/apputils-extension:notification',
        {headers: {'X-XSRFToken': document.cookie.match(/_xsrf=([^;]+)/)[1]}}).then(r => r.json())""")
    # The server applies the overrides as the schema's defaults; erin has set nothing.
    assert "schema" in notification, notification
    defaults = {k: v.get("default") for k, v in notification["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False, defaults
    assert "fetchNews" not in (notification.get("settings") or {}), notification.get("settings")
    assert page.get_by_text("official Jupyter news").count() == 0
    page.screenshot(path=str(SHOTS / "jupyterlab.png"))
    if stack.mode == "container":
        # A new home's welcome notebook (the image's start hook), open in JupyterLab.
        page.goto(f"http://erin.localhost:{stack.port}/user/erin/lab/tree/Welcome.ipynb")
        # Its first cell, rendered (JupyterLab renders a markdown cell after it attaches it).
        page.wait_for_selector(".jp-Notebook .jp-RenderedMarkdown h1:has-text('Welcome to Atelier')",
                               timeout=120_000)
        page.screenshot(path=str(SHOTS / "welcome-notebook.png"))
    server = stack.api("GET", "/users/erin").json()["servers"][""]
    assert server["ready"] and server["user_options"] == {"profile": "cpu-small"}
    if stack.mode == "container":
        # The JupyterLab on the page is served from erin's own container.
        import docker
        from atelier_hub.embedded.engine import engine

        client = docker.APIClient(base_url=engine().host)
        mine = [c for c in client.containers(filters={"label": "dev.atelier.user=erin"})
                if c["Labels"]["dev.atelier.server"] == ""]
        assert len(mine) == 1 and mine[0]["Labels"]["dev.atelier.profile"] == "cpu-small"
    stack.stop_server("erin")


def test_the_invite_pages_in_atelier_s_look_from_the_keyboard(stack, page):
    """An admin makes an invite link on /hub/invites; the new user opens it and chooses a
    password, all from the keyboard, on pages in Atelier's look with no serious or
    critical accessibility fault; a screenshot of each page at both sizes."""
    import re
    import subprocess

    from stack import REPO

    r = subprocess.run([str(REPO / ".venv" / "bin" / "atelier"), "users", "--state", str(stack.state), "add", "ivy",
                        "--no-password"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    admin = (stack.state / "initial-admin-password").read_text().strip()
    login(page, stack, "admin", admin)
    page.goto(f"{stack.url}/hub/invites")
    row = page.locator("tr", has_text="ivy")
    assert "no password yet" in row.inner_text() or "invite pending" in row.inner_text(), row.inner_text()
    assert page.locator("a.atelier-brand").count() == 1
    row.locator("button").focus()
    page.keyboard.press("Enter")
    link = page.locator("#invite_link").inner_text()
    assert re.fullmatch(rf"{re.escape(stack.url)}/hub/invite/ivy\?code=\S+", link), link
    assert serious_accessibility_faults(page) == []
    page.screenshot(path=str(SHOTS / "invites.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / "invites-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})

    ivy = page.context.browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    ivy.goto(link)
    ivy.wait_for_selector("input[type=password]")
    assert ivy.locator("a.atelier-brand").count() == 1
    assert serious_accessibility_faults(ivy) == []
    ivy.screenshot(path=str(SHOTS / "invite.png"), full_page=True)
    ivy.set_viewport_size({"width": 390, "height": 844})
    ivy.screenshot(path=str(SHOTS / "invite-phone.png"), full_page=True)
    fields = ivy.locator("input[type=password]")
    assert fields.count() == 2
    fields.nth(0).focus()
    ivy.keyboard.type("ivy-chose-this-one")
    ivy.keyboard.press("Tab")
    ivy.keyboard.type("ivy-chose-this-one")
    ivy.keyboard.press("Enter")
    # Logged in: the hub takes her to her home page.
    ivy.wait_for_url(f"{stack.url}/hub/home**")
    assert stack.try_login("ivy", "ivy-chose-this-one")[1].status_code == 302
    ivy.context.close()
