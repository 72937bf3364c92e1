"""The Jupyter server extension: ``GET {base_url}atelier/connect`` answers the Connect
panel's facts (:func:`atelier_lab._connect.session_facts`) as JSON.

Rule this module keeps: only a logged-in request gets an answer (jupyter_server's own
authentication, which on a hub session admits the server's owner alone), and the
answer holds no secret: no token, no key, only names, sizes and commands.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ._connect import session_facts


def vscode_available() -> bool:
    """code-server and the proxy that serves it at ``vscode/`` are both in this image."""
    return shutil.which("code-server") is not None and importlib.util.find_spec("jupyter_vscode_proxy") is not None


class ConnectHandler(APIHandler):
    @web.authenticated
    def get(self) -> None:
        facts = session_facts(os.environ, home=os.path.expanduser("~"),
                              origin=self.get_query_argument("origin", ""), vscode=vscode_available())
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(facts))


def load(serverapp) -> None:
    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], "atelier", "connect")
    web_app.add_handlers(".*$", [(route, ConnectHandler)])
    serverapp.log.info("atelier_lab: Connect panel facts at %s", route)
