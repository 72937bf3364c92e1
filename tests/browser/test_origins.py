"""One link must not hand over an account: a page that one user's server serves cannot
act with another user's hub login (the security issue's takeover, in Chromium).

The attacker, mallet, puts pages in his own server's folders: his labextensions folder
(served to anyone at .../lab/extensions/...), as an HTML page and as an SVG, and a page
under /files/. victor, an admin logged in to the hub, opens mallet's links. Each page's
script tries what worked before per-user origins: read victor's XSRF token from
/hub/home and his identity from /hub/api/user, then make victor a token with
POST /hub/api/users/victor/tokens. It records what it got in the page, which the test
reads as the attacker would.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest
from chromium import login
from kernel import run_code

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ATTACKER, TARGET = "mallet", "victor"

# {hub} is the hub's address the link's page aims at (the address victor logged in at).
SCRIPT = r"""
(async () => {
  const hub = "{hub}", out = {origin: location.origin};
  const grab = async (what, url, opts) => {
    try {
      const r = await fetch(url, Object.assign({credentials: "include"}, opts || {}));
      const text = await r.text();
      out[what] = r.status + " " + text.slice(0, 300);
      return text;
    } catch (e) { out[what] = "blocked: " + e; return ""; }
  };
  const home = await grab("home", hub + "/hub/home");
  const m = /xsrf_token: "([^"]+)"/.exec(home);
  out.xsrf = m ? m[1] : "";
  await grab("user", hub + "/hub/api/user", {headers: {"X-XSRFToken": out.xsrf}});
  await grab("token", hub + "/hub/api/users/victor/tokens", {
    method: "POST", headers: {"X-XSRFToken": out.xsrf, "Content-Type": "application/json"},
    body: JSON.stringify({note: "stolen", expires_in: 600})});
  document.documentElement.setAttribute("data-out", JSON.stringify(out));
})();
"""

PAGE = "<!doctype html><html><body><p>harmless</p><script>{script}</script></body></html>"
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       '<script type="text/javascript"><![CDATA[{script}]]></script></svg>')

PLANT = """
import os, pathlib
static = pathlib.Path.home() / ".local/share/jupyter/labextensions/evil/static"
static.mkdir(parents=True, exist_ok=True)
(static / "page.html").write_text({page!r})
(static / "image.svg").write_text({svg!r})
(pathlib.Path.home() / "evil.html").write_text({page!r})
print("planted")
"""


@pytest.fixture(scope="module")
def attack(stack):
    """mallet's server with his pages planted; victor, an admin, with his password."""
    password = stack.add_user(TARGET, admin=True)
    stack.add_user(ATTACKER)
    model = stack.spawn(ATTACKER, "cpu-small")
    token = stack.user_token(ATTACKER)
    script = SCRIPT.replace("{hub}", stack.url)
    out = run_code(stack.url, model["url"], token,
                   PLANT.format(page=PAGE.replace("{script}", script), svg=SVG.replace("{script}", script)))
    assert "planted" in out
    yield {"server": stack.user_url(ATTACKER), "password": password}
    stack.stop_server(ATTACKER)


def _victor_tokens(stack) -> list[str]:
    """The notes of the target's tokens, but the one his home page's MLflow runs make once:
    the MLflow front's OAuth login (a token for that service alone, asked by the hub's own
    page, not by the attacker's)."""
    return [t.get("note") or "" for t in stack.api("GET", f"/users/{TARGET}/tokens").json()["api_tokens"]
            if not (t.get("oauth_client") and "access:services!service=mlflow" in (t.get("scopes") or []))]


def _links(stack, server: str) -> list[str]:
    # The server's own address as the hub gives it, and the same path on the hub's host
    # (a link an attacker could send instead): neither may run on the hub's origin.
    path = urlsplit(server).path
    return [f"{server}lab/extensions/evil/static/page.html",
            f"{server}lab/extensions/evil/static/image.svg",
            f"{server}files/evil.html",
            f"{stack.url}{path}lab/extensions/evil/static/page.html"]


def test_a_page_on_another_users_server_cannot_act_for_the_logged_in_user(stack, attack, page):
    login(page, stack, TARGET, attack["password"])
    before = _victor_tokens(stack)
    hub_origin = stack.url
    results = {}
    for link in _links(stack, attack["server"]):
        page.goto(link)
        out = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            raw = page.evaluate("document.documentElement.getAttribute('data-out')")
            if raw:
                out = json.loads(raw)
                break
            time.sleep(0.3)
        results[link] = out
        if out is not None:
            # No token made, and nothing learned: no identity, no XSRF token.
            assert not out["token"].startswith(("200", "201")), (link, out)
            assert TARGET not in out["user"], (link, out)
            assert out["xsrf"] == "", (link, out)
            # Wherever the page's script ran, it ran in the attacker's origin, never the hub's.
            assert out["origin"] != hub_origin, (link, out)
    assert "stolen" not in _victor_tokens(stack) and len(_victor_tokens(stack)) == len(before), results
    # The two labextension pages did run (the attack was tried, not just never loaded).
    ran = [link for link, out in results.items() if out is not None]
    assert len(ran) >= 2, results
