"""The browser: one headless Chromium per module, a fresh profile (no cookies) per test."""

from __future__ import annotations

import pytest
from chromium import CHROMIUM, FLAGS, SHOTS


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
