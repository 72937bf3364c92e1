"""Cluster mode with ``public_url``: each user's server is a web origin of its own.

A second real JupyterHub (and its configurable-http-proxy) on the same control plane,
configured by ``configure_kubespawner`` from cluster settings that name a public URL, as
the chart's hub is (the chart's own hub.config adds the same subdomain_host, and its
proxy then routes by host as this one does). The public URL is ``http://localhost:PORT``:
names under ``.localhost`` are loopback (RFC 6761), so users' hosts need no DNS here.

Not covered: the chart itself (its templates, the proxy pod) and a browser's OAuth
round trip to the user's host; the kwok pod answers with a stub (PodPorts).
"""

from __future__ import annotations

import pytest
import yaml
from conftest import LOGS, Hub

pytestmark = [pytest.mark.k8s, pytest.mark.integration]

USER = "eve"  # a user of this hub only (the session hub's users keep their pods)


@pytest.fixture(scope="module")
def origin_hub(hub, control_plane, tmp_path_factory):
    """After the session hub (it makes the sessions' ServiceAccount and answers on kwok
    pods' addresses)."""
    h = Hub(tmp_path_factory.mktemp("originhub"), control_plane.server, control_plane.pki)
    h.url = f"http://localhost:{h.port}"
    settings = yaml.safe_load((h.dir / "cluster.yaml").read_text())
    # The culler is the session hub's to run (it listens on a fixed port).
    settings.update(public_url=h.url, culling={"enabled": False})
    (h.dir / "cluster.yaml").write_text(yaml.safe_dump(settings))
    h.log = LOGS / "jupyterhub-origins.log"
    try:
        h.start()
        h.add_user(USER)
        yield h
    finally:
        h.stop()


def test_a_users_server_answers_at_its_own_host_only(origin_hub, kube):
    h = origin_hub
    port = h.port
    model = h.spawn(USER, "cpu-small")
    try:
        # JupyterHub's naming (IDNA; "eve" stays "eve") under the public URL's host.
        assert model["url"] == f"http://eve.localhost:{port}/user/eve/"
        token = h.api("POST", f"/users/{USER}/tokens", json={"expires_in": 600}).json()["token"]
        auth = {"Authorization": f"token {token}"}
        # The proxy routes the user's host to the pod (the stub answers "{}") ...
        r = h.http.get(f"http://eve.localhost:{port}/user/eve/api/status", headers=auth, timeout=30,
                       allow_redirects=False)
        assert (r.status_code, r.text) == (200, "{}"), (r.status_code, r.text[:300])
        # ... and the same path on the hub's host does not reach it: the hub answers there
        # (its own page for a server it routes elsewhere).
        r = h.http.get(f"http://localhost:{port}/user/eve/api/status", headers=auth, timeout=30,
                       allow_redirects=False)
        assert r.text != "{}", "the user's server answered on the hub's host"
        assert r.status_code == 302 and r.headers["Location"].startswith(f"http://localhost:{port}/hub/"), (
            r.status_code, r.headers.get("Location"))
        # The hub and its API stay at the public URL's own host.
        assert h.api("GET", "/").status_code == 200
        # The session learns both origins: the hub's for its logins, its own for the callback.
        pod = kube.get(kube.ns("pods", "jupyter-eve"))
        env = {v["name"]: v.get("value") for v in pod["spec"]["containers"][0]["env"]}
        assert env["JUPYTERHUB_HOST"] == f"http://localhost:{port}"
        assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == f"http://eve.localhost:{port}/user/eve/oauth_callback"
    finally:
        h.stop_server(USER)
