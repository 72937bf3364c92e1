"""The home page's time to first paint with 5 servers, against JupyterHub's stock home.

Two hubs side by side on 127.0.0.1, each with one user holding 5 running named servers:
- Atelier's (``atelier dev``, process sessions, without Trino), whose ``/hub/home`` lists
  each server's profile, state, uptime, idle stop, cost and ways in, the user's jobs and
  latest MLflow runs (atelier_hub.home, embedded/templates/home.html);
- a stock JupyterHub from the same installation (its own ``home.html``; bench_spawn's
  plain hub: DummyAuthenticator, SimpleLocalProcessSpawner), the baseline.

Headless Chromium (Debian's, as the browser tests drive it) loads each ``/hub/home``
ROUNDS times, alternating; the figure is the median of the browser's own
``first-contentful-paint`` per hub, and their ratio (target: within 1.5x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "browser"))
sys.path.insert(0, str(REPO / "hub"))
from bench_spawn import PlainHub  # noqa: E402
from chromium import CHROMIUM, FLAGS, login  # noqa: E402
from stack import Stack  # noqa: E402

SERVERS = 5
# The stock hub: bench_spawn's plain JupyterHub with SimpleLocalProcessSpawner, plus
# named servers (its DummyAuthenticator takes any password).
NAMED = f"""
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = {SERVERS}
"""


def _first_paint(page, url: str) -> float:
    page.goto(url, wait_until="load")
    page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0", timeout=30_000)
    return page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-home-") as tmp:
        stack = Stack(Path(tmp) / "state", name="bench-home", args=("--without", "trino"),
                      env={"ATELIER_SESSIONS": "process"}).start()
        (Path(tmp) / "stock").mkdir()
        stock = None
        try:
            stock = PlainHub(Path(tmp) / "stock", "simple", extra=NAMED)
            admin_password = (stack.state / "initial-admin-password").read_text().strip()
            stack.login("admin", admin_password)  # the hub knows its admin
            assert stock.api("POST", "/users/bench").status_code in (201, 409)
            for i in range(SERVERS):
                stack.spawn("admin", "cpu-small", server=f"s{i}")
                stock.spawn("bench", None, server=f"s{i}")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                pages = {}
                for label, hub, user, password in (("atelier", stack, "admin", admin_password),
                                                   ("stock", stock, "bench", "any password")):
                    pages[label] = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
                    login(pages[label], hub, user, password)
                    _first_paint(pages[label], f"{hub.url}/hub/home")  # warm: templates compiled, files cached
                times: dict[str, list[float]] = {"atelier": [], "stock": []}
                for _ in range(args.rounds):
                    for label, url in (("atelier", stack.url), ("stock", stock.url)):
                        times[label].append(_first_paint(pages[label], f"{url}/hub/home"))
                browser.close()
            ours, theirs = (statistics.median(times[k]) for k in ("atelier", "stock"))
            print(json.dumps({k: [round(t, 1) for t in v] for k, v in times.items()}))
            print(f"home page with {SERVERS} servers, first contentful paint (median of {args.rounds}): "
                  f"Atelier {ours:.0f} ms, stock JupyterHub {theirs:.0f} ms -> ratio {ours / theirs:.2f}x "
                  f"(target <= 1.5x)")
        finally:
            if stock is not None:
                stock.stop()
            stack.stop()


if __name__ == "__main__":
    main()
