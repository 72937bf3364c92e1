"""VS Code in the browser and the Connect panel, in real container sessions spawned
through the real hub (``atelier dev``), seen by headless Chromium.

- The Connect panel (atelier-lab's JupyterLab extension) renders this session's
  commands, alias and facts: compared with what the profile file says.
- code-server, launched from JupyterLab's launcher, answers its editor through the
  hub at /user/NAME/vscode/ for the owner (screenshot of the loaded workbench), and
  another real user (cookie or token) or nobody never gets it: 403 or the login page.
- No session's editor is reachable around the hub: another user's kernel scans every
  TCP port listening where it runs for a code-server, and finds none; as a control,
  the owner's own kernel does find one that the owner starts on a TCP port (what a
  proxy without a Unix socket would do), and the other user's still does not: each
  session has its own network namespace.
"""

from __future__ import annotations

import re

import pytest
from atelier_hub.profiles import format_memory, load_profiles
from chromium import SHOTS, login
from kernel import run_code
from stack import REPO

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# What code-server's page holds once VS Code's workbench has loaded (not its loading page).
WORKBENCH = ".monaco-workbench"


@pytest.fixture(scope="module")
def vstack(containers):
    """The shared stack (tests/conftest.py), in container mode; this file's users are its own."""
    return containers


@pytest.fixture(scope="module")
def owner(vstack):
    name = "vera"
    password = vstack.add_user(name)
    vstack.spawn(name, "cpu-small")
    yield {"name": name, "password": password, "token": vstack.user_token(name)}
    vstack.stop_server(name)


@pytest.fixture(scope="module")
def mallory(vstack):
    """A second real user, with a running session of her own (the attacker)."""
    name = "mallory"
    password = vstack.add_user(name)
    vstack.spawn(name, "cpu-small")
    yield {"name": name, "password": password, "token": vstack.user_token(name)}
    vstack.stop_server(name)


def test_connect_panel_shows_this_sessions_commands_and_size(vstack, page):
    """A named server: its alias and commands carry the server's name."""
    name, server = "cara", "work"
    password = vstack.add_user(name)
    vstack.spawn(name, "cpu-small", server=server)
    try:
        login(page, vstack, name, password)
        page.goto(f"{vstack.user_url(name, server)}lab")
        page.wait_for_selector(".jp-Launcher", timeout=180_000)
        page.click('li[data-id="atelier-connect"]')
        page.wait_for_selector('pre[data-command="vscode"]', timeout=60_000)
        panel = page.locator("#atelier-connect")
        commands = {c.get_attribute("data-command"): c.inner_text()
                    for c in panel.locator("pre[data-command]").all()}
        facts = {r.get_attribute("data-fact"): r.locator("td").inner_text()
                 for r in panel.locator("tr[data-fact]").all()}
        page.screenshot(path=str(SHOTS / "connect-panel.png"))

        alias = f"atelier-{name}-{server}"
        assert commands == {
            "login": f"atelier login --hub {vstack.url}",
            "vscode": f"atelier vscode {server}",
            "code": f"code --remote ssh-remote+{alias} /home/jovyan",
            "ssh": f"ssh {alias}",
            "run": "atelier run --profile cpu-small -- python train.py",
            # the shared stack runs the Ray clusters service: its line, for this server
            "ray": f"atelier ray up {server} --workers 2",
        }, commands  # embedded mode: no kubeconfig command; container sessions run jobs
        profile = {p.name: p for p in load_profiles(REPO / "profiles")}["cpu-small"]
        assert facts["user"] == name and facts["server"] == server
        assert facts["profile"].startswith("cpu-small")
        assert facts["cpu"] == f"{profile.cpu.limit:g}"
        assert facts["memory"] == format_memory(profile.memory.limit)
        assert facts["gpu"] == "none" and facts["mode"] == "embedded"
        # code-server is in the image: the panel links to it.
        link = panel.locator("a.atelier-Connect-vscode").get_attribute("href")
        # Its own origin (docs/security.md: NAME.localhost on an embedded hub).
        assert link == f"http://{name}.localhost:{vstack.port}/user/{name}/{server}/vscode/"
    finally:
        vstack.stop_server(name, server)


def test_code_server_from_the_launcher_answers_its_editor_to_the_owner(vstack, owner, page):
    login(page, vstack, owner["name"], owner["password"])
    page.goto(f"{vstack.user_url(owner['name'])}lab")
    page.wait_for_selector(".jp-Launcher", timeout=180_000)
    card = page.locator('.jp-LauncherCard:has-text("VS Code")')
    assert card.count() == 1, "no VS Code card in JupyterLab's launcher"
    with page.context.expect_page(timeout=60_000) as opened:
        card.click()
    editor = opened.value
    # code-server starts on first request (jupyter-server-proxy), then loads the workbench.
    editor.wait_for_selector(WORKBENCH, timeout=240_000)
    assert editor.url.startswith(f"http://{owner['name']}.localhost:{vstack.port}/user/{owner['name']}/vscode/")
    # The workbench paints its parts over several seconds after it appears (RECIPES.md):
    # wait for each part the screenshot should show, visible, rather than a fixed time.
    for part in (".part.activitybar", ".part.sidebar", ".part.editor", ".part.statusbar"):
        editor.wait_for_selector(part, state="visible", timeout=120_000)
    # The welcome page is the last thing the first start paints: wait for it, then the
    # first screen is what the user sees.
    editor.wait_for_selector(".part.editor .gettingStartedContainer", timeout=120_000)
    editor.screenshot(path=str(SHOTS / "code-server.png"))
    assert editor.locator(".part.editor").count() == 1
    # code-server's own settings (images/base/code-server): the user's home is trusted
    # (no trust prompt, no Restricted Mode), VS Code's welcome page is not replaced by
    # code-server's "Deploy code-server for your team", and no chat panel opens.
    shown = editor.locator("body").inner_text()
    for unwanted in ("Do you trust the authors", "Restricted Mode", "Deploy code-server"):
        assert unwanted not in shown, (unwanted, shown[:2000])
    assert editor.locator(".part.auxiliarybar").is_hidden()


def _is_editor(r) -> bool:
    return r.status_code == 200 and "vs/workbench" in r.text


def test_code_server_is_refused_to_everyone_but_the_owner(vstack, owner, mallory):
    url = f"{vstack.user_url(owner['name'])}vscode/"
    # The owner's token gets the editor: the refusals below are not a page that never works.
    own = vstack.http.get(url, headers={"Authorization": f"token {owner['token']}"}, timeout=120)
    assert _is_editor(own), (own.status_code, own.url, own.text[:300])

    # Another real user, logged in through the hub's form: her cookie is refused.
    s = vstack.login(mallory["name"], mallory["password"])
    r = s.get(url, timeout=120)
    assert not _is_editor(r)
    assert r.status_code == 403, (r.status_code, r.url)
    # Her API token too.
    r = vstack.http.get(url, headers={"Authorization": f"token {mallory['token']}"}, timeout=60)
    assert not _is_editor(r) and r.status_code == 403, (r.status_code, r.url)
    # And nobody: sent to the login page.
    r = vstack.http.get(url, timeout=60)
    assert not _is_editor(r)
    assert r.status_code == 200 and r.url.startswith(f"{vstack.url}/hub/login"), (r.status_code, r.url)


SCAN = r"""
import urllib.request
from concurrent.futures import ThreadPoolExecutor
ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A":  # LISTEN
            ports.add(int(f[1].rsplit(":", 1)[1], 16))
def editor(port):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read(300000)
    except Exception:
        return False
    return b"vs/workbench" in body
with ThreadPoolExecutor(32) as pool:
    found = [p for p, hit in zip(sorted(ports), pool.map(editor, sorted(ports))) if hit]
print("LISTENING", len(ports), "EDITORS", found)
"""

TCP_CODE_SERVER = r"""
import subprocess, time, urllib.request
p = subprocess.Popen(["code-server", "--auth", "none", "--disable-telemetry", "--bind-addr", "127.0.0.1:{port}",
                      "--user-data-dir", "/tmp/cs-tcp", "/home/jovyan"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
for _ in range(120):
    try:
        urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=3); break
    except Exception:
        time.sleep(1)
print("PID", p.pid)
"""


def _editors(output: str) -> list[int]:
    found = re.search(r"EDITORS \[([^\]]*)\]", output).group(1)
    return [int(p) for p in found.split(",") if p.strip()]


def test_no_editor_is_reachable_around_the_hub(vstack, owner, mallory):
    # The owner's editor is running (started through the hub, on its Unix socket).
    r = vstack.http.get(f"{vstack.user_url(owner['name'])}vscode/",
                        headers={"Authorization": f"token {owner['token']}"}, timeout=120)
    assert _is_editor(r)
    scan = run_code(vstack.url, vstack.user_url(mallory["name"]), mallory["token"], SCAN, timeout=300)
    assert "LISTENING" in scan and _editors(scan) == [], scan

    # Control: a code-server on a TCP port, as the proxy would start it without the
    # socket, IS found by the same scan from its owner's session, and still not from the
    # other user's: every session has its own network (test_container_sessions.py).
    from stack import free_port

    port = free_port()
    started = run_code(vstack.url, vstack.user_url(owner["name"]), owner["token"],
                       TCP_CODE_SERVER.replace("{port}", str(port)), timeout=300)
    pid = int(re.search(r"PID (\d+)", started).group(1))
    try:
        own = run_code(vstack.url, vstack.user_url(owner["name"]), owner["token"], SCAN, timeout=300)
        assert _editors(own) == [port], own
        scan = run_code(vstack.url, vstack.user_url(mallory["name"]), mallory["token"], SCAN, timeout=300)
        assert _editors(scan) == [], scan
    finally:
        run_code(vstack.url, vstack.user_url(owner["name"]), owner["token"],
                 f"import os, signal; os.killpg({pid}, signal.SIGTERM)")
