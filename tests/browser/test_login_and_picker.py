"""Headless Chromium (Debian's, driven by Playwright) through the real login page and
profile picker. Screenshots land in test-output/screenshots/ (git-ignored)."""

from __future__ import annotations

import shutil

import pytest
from atelier_hub.gpus import detect_gpus
from stack import OUTPUT

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = OUTPUT / "screenshots"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile (no cookies) per test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def login(page, stack, name, password):
    page.goto(f"{stack.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(f"{stack.url}/hub/**")


def test_login_pick_a_gpu_profile_without_gpus_is_refused_on_the_page(stack, page):
    if detect_gpus():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    login(page, stack, "dora", stack.add_user("dora"))
    page.goto(f"{stack.url}/hub/spawn")
    cards = page.locator("label.atelier-profile")
    assert cards.count() == 5
    assert "64G" in page.locator('label[data-profile="highmem"]').inner_text()
    page.screenshot(path=str(SHOTS / "profile-picker.png"), full_page=True)

    page.click('label[data-profile="gpu-1"]')
    page.click("#spawn_form [type=submit]")
    page.wait_for_selector("text=needs 1 GPU(s)")
    assert "this machine has no NVIDIA GPU" in page.content()
    assert page.content().count("needs 1 GPU(s)") == 1  # said once, plainly
    assert page.url.startswith(f"{stack.url}/hub/spawn")
    page.screenshot(path=str(SHOTS / "gpu-refused.png"), full_page=True)


def test_login_pick_a_cpu_profile_and_land_in_jupyterlab(stack, page):
    login(page, stack, "erin", stack.add_user("erin"))
    page.goto(f"{stack.url}/hub/spawn")
    page.click('label[data-profile="cpu-small"]')
    page.click("#spawn_form [type=submit]")
    page.wait_for_url(f"{stack.url}/user/erin/lab**", timeout=180_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
    page.wait_for_selector(".jp-Launcher", timeout=60_000)
    page.screenshot(path=str(SHOTS / "jupyterlab.png"))
    server = stack.api("GET", "/users/erin").json()["servers"][""]
    assert server["ready"] and server["user_options"] == {"profile": "cpu-small"}
    if stack.mode == "container":
        # The JupyterLab on the page is served from erin's own container.
        import docker
        from atelier_hub.engine import engine

        client = docker.APIClient(base_url=engine().host)
        mine = [c for c in client.containers(filters={"label": "dev.atelier.user=erin"})
                if c["Labels"]["dev.atelier.server"] == ""]
        assert len(mine) == 1 and mine[0]["Labels"]["dev.atelier.profile"] == "cpu-small"
    stack.stop_server("erin")
