"""The hub's home page in headless Chromium: a user's two servers on two profiles, each
with its profile and sizes, state, uptime, the culler's planned stop, cost so far and the
ways in; their latest MLflow run (not another user's); Stop on the page stops one; a
second user sees none of it, on the page or in the usage page's API. The buttons are
pressed from the keyboard; axe-core finds no serious or critical violation on the home,
usage and jobs pages.

It runs in the culling window (tests/culling.py): that stack's culler checks every 5 s,
so its decision on both servers is there within seconds; its profiles `home-priced` and
`home-plain` are this test's. Screenshots at 1400x900 and 390x844 (a phone) go to
test-output/screenshots/.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from chromium import SHOTS, login, serious_accessibility_faults
from culling import USER

pytestmark = [pytest.mark.browser, pytest.mark.integration]

NAME = "homer"


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _wait_ready(s, user: str, servers: tuple[str, ...], within: float = 300) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        models = s.api("GET", f"/users/{user}").json()["servers"]
        if all(models.get(n, {}).get("ready") for n in servers):
            return models
        time.sleep(1)
    raise AssertionError(f"{servers} not ready in {within:.0f} s:\n{s.hub_log(80)}")


def _plan(s, user: str, models: dict, within: float = 60) -> dict:
    """The culler's latest decision for each of ``models`` (the run the hub reports)."""
    path = s.state / "logs" / "culler-plan.json"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        plan = json.loads(path.read_text()) if path.exists() else {}
        mine = {n: plan.get(f"{user}/{n}") for n in models}
        if all(d and _t(d["started"]) == _t(models[n]["started"]) for n, d in mine.items()):
            return mine
        time.sleep(1)
    raise AssertionError(f"the culler decided nothing on {list(models)} in {within:.0f} s: {plan}")


def _mlflow_run(s, user: str, name: str) -> dict:
    """A run in ``user``'s own experiment, made through the MLflow front with their token."""
    api = f"{s.url}/services/mlflow/api/2.0/mlflow"
    auth = {"Authorization": f"Bearer {s.user_token(user)}"}
    r = s.http.get(f"{api}/experiments/get-by-name", params={"experiment_name": f"users/{user}"}, headers=auth,
                   timeout=120)
    assert r.status_code == 200, r.text[:300]
    exp = r.json()["experiment"]["experiment_id"]
    started = int(time.time() * 1000)  # as MLflow's client sends it
    r = s.http.post(f"{api}/runs/create", json={"experiment_id": exp, "run_name": name, "start_time": started},
                    headers=auth, timeout=60)
    assert r.status_code == 200, r.text[:300]
    return {"run_id": r.json()["run"]["info"]["run_id"], "experiment_id": exp, "started": started}


def test_home_page_shows_each_server_and_stops_one(cull_window, page):
    s = cull_window.stack
    if s.mode != "container":
        pytest.fail(f"the stack runs {s.mode} sessions: only its admin may log in there; a second user "
                    "needs container sessions (`make install` builds the images)")
    password = s.add_user(NAME)
    # homer is in a hub group: his servers count in its usage (admins see it per group).
    assert s.api("POST", "/groups/home-team").status_code in (201, 409)
    assert s.api("POST", "/groups/home-team/users", json={"users": [NAME]}).status_code == 200
    for server, profile in (("a", "home-priced"), ("b", "home-plain")):
        r = s.request_spawn(NAME, profile, server)
        assert r.status_code in (201, 202), r.text
    models = _wait_ready(s, NAME, ("a", "b"))
    decisions = _plan(s, NAME, {n: models[n] for n in ("a", "b")})
    # A run of the user's and one of another user's, logged through the MLflow front.
    runs = {who: _mlflow_run(s, who, f"{who}s-run") for who in (NAME, USER)}

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.set_viewport_size({"width": 1400, "height": 900})
    login(page, s, NAME, password)
    page.goto(f"{s.url}/hub/home")
    rows = page.locator("tr.atelier-server")
    assert rows.count() == 2, page.inner_text("#atelier-home")
    # The user's latest MLflow runs, read by the page through the front as the user: theirs
    # only, each linking to the run in MLflow's UI.
    page.wait_for_selector("#atelier-run-table tr.atelier-run, #atelier-runs-error", timeout=60_000)
    listed = page.locator("#atelier-run-table tr.atelier-run")
    assert listed.count() == 1, page.inner_text("#atelier-runs")
    assert listed.get_attribute("data-run") == runs[NAME]["run_id"]
    link = listed.locator("a")
    assert link.inner_text() == f"{NAME}s-run"
    assert link.get_attribute("href") == (f"/services/mlflow/#/experiments/{runs[NAME]['experiment_id']}"
                                          f"/runs/{runs[NAME]['run_id']}")
    assert f"users/{NAME}" in listed.inner_text()
    started = datetime.fromtimestamp(runs[NAME]["started"] / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")
    assert started in listed.inner_text(), listed.inner_text()  # its start, in UTC
    seen_at = datetime.now(timezone.utc)
    page.screenshot(path=str(SHOTS / "home.png"), full_page=True)
    # Atelier's look: its mark and name in the navbar, its stylesheet in the page.
    assert page.locator("#jupyterhub-logo a.atelier-brand").inner_text().strip() == "Atelier"
    assert page.locator("#jupyterhub-logo svg[aria-label=Atelier]").count() == 1
    assert page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--atelier-ink')").strip()
    assert serious_accessibility_faults(page) == []

    a, b = page.locator('tr.atelier-server[data-server="a"]'), page.locator('tr.atelier-server[data-server="b"]')
    # Profile and sizes, as the profile files say them (tests/culling.py).
    assert a.get_attribute("data-profile") == "home-priced" == models["a"]["user_options"]["profile"]
    assert b.get_attribute("data-profile") == "home-plain" == models["b"]["user_options"]["profile"]
    assert a.locator('[data-field="profile"]').inner_text().split("\n")[0].strip() == "Home priced"
    assert a.locator('[data-field="sizes"]').inner_text() == "1 CPU · 1G"
    assert b.locator('[data-field="sizes"]').inner_text() == "2 CPU · 2G"
    assert a.get_attribute("data-state") == b.get_attribute("data-state") == "running"
    # Uptime: from the hub's own start time, in minutes or seconds (both started just now).
    up = (seen_at - _t(models["a"]["started"])).total_seconds()
    number, unit = a.locator('[data-field="uptime"]').inner_text().split()
    assert (unit == "s" and abs(int(number) - up) <= 10) or (unit == "min" and int(number) in (
        int(up) // 60, int(up) // 60 - 1)), (number, unit, up)

    # The planned stop is the culler's decision, and within the profile's idle timeout.
    for row, name, timeout in ((a, "a", 600), (b, "b", 900)):
        cell = row.locator('[data-field="cull"]')
        assert decisions[name]["action"] == "keep", decisions[name]
        at = cell.get_attribute("data-cull-at")
        assert _t(at) == _t(decisions[name]["cull_at"]).replace(microsecond=0), (at, decisions[name])
        assert 0 < (_t(at) - seen_at).total_seconds() <= timeout, (at, seen_at)
        assert f"after {timeout // 60} min idle" in cell.inner_text()

    # Cost so far: home-priced costs 60 an hour, counted from the start the hub recorded;
    # home-plain has no price, so hours only (2 CPUs: CPU-hours twice its hours).
    events = [json.loads(x) for x in (s.state / "usage.jsonl").read_text().splitlines()]
    start = max(_t(e["time"]) for e in events if e["user"] == NAME and e["server"] == "a")
    money = float(a.locator('[data-field="money"]').inner_text())
    hours = (seen_at - start).total_seconds() / 3600
    assert abs(money - 60 * hours) <= 0.05, (money, hours)
    assert not b.locator('[data-field="money"]').count()
    assert "CPU-h" in b.locator('[data-field="hours"]').inner_text()

    # The ways in: JupyterLab and VS Code on the server's own origin; the ssh line to copy.
    a_url = s.user_url(NAME, "a")
    assert a.locator("a.atelier-lab").get_attribute("href") == f"{a_url}lab"
    assert a.locator("a.atelier-vscode").get_attribute("href") == f"{a_url}vscode/"
    assert a.locator("code.atelier-ssh").inner_text() == f"atelier vscode a --hub {s.url}"
    # From the keyboard (as every action on the page): focus the button, press Enter.
    a.locator("button.atelier-copy").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector('tr[data-server="a"] button.atelier-copy:text("Copied")')
    assert page.evaluate("navigator.clipboard.readText()") == f"atelier vscode a --hub {s.url}"

    # A phone's view of the same page.
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / "home-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})

    # The run's link opens MLflow's UI on model training (not its GenAI view), for a
    # browser that never chose: the UI's own stored choice, set by the front's page.
    mlflow_page = page.context.new_page()
    mlflow_page.goto(f"{s.url}{link.get_attribute('href')}")
    try:
        mlflow_page.wait_for_selector(f"text={NAME}s-run", timeout=120_000)
    except Exception:  # what the UI showed instead, for the report
        mlflow_page.screenshot(path=str(SHOTS / "mlflow-run-failed.png"))
        raise AssertionError(f"MLflow's run page did not show the run in 120 s: {mlflow_page.url}\n"
                             f"{mlflow_page.inner_text('body')[:2000]}\n{s.hub_log(40)}") from None
    assert mlflow_page.evaluate("localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'
    nav = mlflow_page.locator("nav, aside").first
    mlflow_page.screenshot(path=str(SHOTS / "mlflow-run.png"))
    assert nav.get_by_text("Models", exact=True).count() >= 1, nav.inner_text()
    assert nav.get_by_text("Prompts", exact=True).count() == 0, nav.inner_text()
    # MLflow's assistant is refused at the front (docs/security.md): its panel does not
    # open on its own at the first load, as it would at localhost.
    assert mlflow_page.get_by_text("Welcome to MLflow Assistant").count() == 0
    mlflow_page.close()

    # Stop from the page: the hub stops it, and the row says so without a reload.
    page.evaluate("window.__atelier_same_page = true")
    said = []  # what the page said and asked, quoted if the stop does not happen
    page.on("console", lambda m: said.append(f"console {m.type}: {m.text}"))
    page.on("response", lambda r: said.append(f"{r.status} {r.request.method} {r.url}"))
    b.locator("button.atelier-stop").focus()
    page.keyboard.press("Enter")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = s.api("GET", f"/users/{NAME}").json()["servers"].get("b")
        if m is None or (not m["ready"] and not m["pending"]):
            break
        page.wait_for_timeout(1000)  # (the browser's events reach `said` while Playwright waits)
    else:
        asked = [line for line in s.log.read_text(errors="replace").splitlines() if f"/users/{NAME}/servers/b" in line]
        raise AssertionError(f"b was not stopped; the page: {said}; the hub: {asked}")
    page.wait_for_selector('tr.atelier-server[data-server="b"][data-state="stopped"]', timeout=60_000)
    assert page.evaluate("window.__atelier_same_page") is True  # not reloaded
    assert s.api("GET", f"/users/{NAME}").json()["servers"]["a"]["ready"]
    page.screenshot(path=str(SHOTS / "home-after-stop.png"), full_page=True)

    # The usage page, in the same look (the navbar's mark leads home), the user's own lines.
    page.goto(f"{s.url}/services/usage/")
    page.wait_for_selector("main.atelier-page h1", timeout=60_000)
    assert page.locator("h1").inner_text() == f"Your usage ({NAME})"
    assert page.locator("a.atelier-brand").get_attribute("href") == "/hub/home"
    assert page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--atelier-ink')").strip()
    assert serious_accessibility_faults(page) == []
    assert page.locator(f'.atelier-bar[data-user="{NAME}"]').count() == 1
    # ... and over time: today's bar (UTC), with its cost (home-priced has a price).
    today = page.locator(f'#atelier-usage-days .atelier-bar[data-day="{seen_at.strftime("%Y-%m-%d")}"]')
    assert today.count() == 1 and "cost" in today.inner_text(), page.inner_text("#atelier-usage-days")
    page.screenshot(path=str(SHOTS / "usage.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / "usage-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})

    # The jobs page, in the same look: no job of this user's yet.
    page.goto(f"{s.url}/services/jobs/")
    page.wait_for_selector("main.atelier-page h1", timeout=60_000)
    assert page.locator("h1").inner_text() == f"Your jobs ({NAME})"
    assert page.locator("#atelier-no-jobs").count() == 1
    assert serious_accessibility_faults(page) == []
    page.screenshot(path=str(SHOTS / "jobs.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / "jobs-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})

    # The usage page's API: this user's own lines only; the admin (the window's other user,
    # with servers of their own) sees both.
    read_at = time.monotonic()
    mine = s.http.get(f"{s.url}/services/usage/api/usage", timeout=60,
                      headers={"Authorization": f"token {s.user_token(NAME)}"})
    assert mine.status_code == 200, mine.text
    assert set(mine.json()["by_user"]) == {NAME}, mine.json()
    assert set(mine.json()["by_profile"]) == {"home-priced", "home-plain"}, mine.json()
    everyone = s.http.get(f"{s.url}/services/usage/api/usage", timeout=60,
                          headers={"Authorization": f"token {s.admin_token}"}).json()
    assert {NAME, USER} <= set(everyone["by_user"]), everyone
    # `atelier usage --cost` from a laptop, with homer's login: the same, his lines only.
    r = s.atelier(s.user_token(NAME), "usage", "--cost", "--hub", s.url, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.splitlines()]
    assert [x[1] for x in lines if x[0] == "user"] == [NAME], r.stdout
    assert ["profile", "home-priced"] in [x[:2] for x in lines] and lines[-1][0] == "total", r.stdout
    # Server a (60 an hour) ran on between the two readings: its cost grew by that much at most.
    grew = 60 * (time.monotonic() - read_at) / 3600
    assert -0.01 <= float(lines[-1][1]) - mine.json()["total"]["cost"] <= grew + 0.01, (grew, r.stdout, mine.json())
    assert everyone["by_group"]["home-team"]["servers"] == 2, everyone["by_group"]
    assert everyone["by_group"]["home-team"]["cost"] == pytest.approx(everyone["by_user"][NAME]["cost"], abs=0.01)
    # ... and the home page of the admin is not reachable as theirs: /hub/home is the
    # caller's own, and the admin's servers through the hub's API are refused.
    page.goto(f"{s.url}/hub/home")
    assert set(page.locator("tr.atelier-server").evaluate_all("rs => rs.map(r => r.dataset.server)")) == {"a", "b"}
    refused = s.http.get(f"{s.url}/hub/api/users/{USER}", timeout=60,
                         headers={"Authorization": f"token {s.user_token(NAME)}"})
    assert refused.status_code in (403, 404), refused.text
    s.stop_server(NAME, "a")
    s.stop_server(NAME, "b")
