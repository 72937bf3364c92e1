"""The admin guide's "Services: one module each" is true: its example module, plus one
line in the list, is a service in the hub's config, the deployment settings and a
session's environment.

The module is the guide's own code block (docs/admin-guide.md), written where the
package finds it; the one line is added to the real ``services/__init__.py`` source,
which is then run as the package, in a fresh interpreter (nothing else in the hub is
touched).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DRIVER = r'''
import importlib.util, json, sys
from pathlib import Path

import atelier_hub

extra, state, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
package = Path(atelier_hub.__file__).parent / "services"
source = (package / "__init__.py").read_text()
# The one line a developer adds.
assert source.count('    "credentials",\n]\n') == 1
source = source.replace('    "credentials",\n]\n', '    "credentials",\n    "feast",\n]\n')
spec = importlib.util.spec_from_file_location("atelier_hub.services", package / "__init__.py",
                                              submodule_search_locations=[str(package), extra])
services = importlib.util.module_from_spec(spec)
sys.modules["atelier_hub.services"] = services
exec(compile(source, str(package / "__init__.py"), "exec"), services.__dict__)

from traitlets.config import Config

from atelier_hub.config import update_services
from atelier_hub.profiles import Profile
from atelier_hub.session import session_env
from atelier_hub.embedded.stack import EmbeddedStack

stack, _ = EmbeddedStack.prepare(state, port=port, profiles_dir="profiles", without=("trino",))
c = Config()
update_services(c, stack)
deployment = services.load_deployment(Path(state) / "deployment.json")
profile = Profile(name="cpu-small", display_name="S", cpu={"limit": 2}, memory={"limit": "4G"})
env = session_env(profile, username="ada", services=deployment.services, cpus=2)
print(json.dumps({
    "port": EmbeddedStack.load(state).ports.get("feast"),
    "hub_services": {s["name"]: s for s in c.JupyterHub.services},
    "deployment": json.loads((Path(state) / "deployment.json").read_text())["services"],
    "env": env,
    "banner_titles": [s.title for s in stack.running],
}))
'''


def _guide_example() -> str:
    guide = (REPO / "docs" / "admin-guide.md").read_text()
    match = re.search(r"```python\n(# hub/atelier_hub/services/feast\.py\n.*?)```", guide, re.S)
    assert match, "docs/admin-guide.md's 'Services: one module each' has no feast.py example"
    return match.group(1)


def test_the_guides_example_is_one_module_and_one_line(tmp_path):
    from atelier_hub.services import MODULES
    from atelier_hub.services._process import free_port

    assert "feast" not in MODULES
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "feast.py").write_text(_guide_example())
    port = free_port()
    out = subprocess.run([sys.executable, "-c", DRIVER, str(extra), str(tmp_path / "state"), str(port)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.splitlines()[-1])

    feast_port = seen["port"]
    assert isinstance(feast_port, int) and feast_port not in (port, 0)
    url = f"http://127.0.0.1:{feast_port}"
    # the deployment settings every session reads
    assert seen["deployment"]["feast"] == {"url": url}
    # the hub's config: a managed service, supervised, that dies with the hub
    entry = seen["hub_services"]["feast"]
    assert entry["url"] == url
    assert entry["command"][1:3] == ["-m", "atelier_hub.services._process"]
    assert entry["command"][-4:] == ["feast", "serve", "--port", str(feast_port)]
    assert "ATELIER_PARENT_PID" in entry["environment"]
    # a session's environment
    assert seen["env"]["FEAST_URL"] == url
    # the services that were there are still there, in their order, the new one last
    assert seen["banner_titles"] == ["S3", "MLflow", "Spark", "Ray", "Idle culler", "Jobs", "Ray clusters", "Usage",
                                      "Credentials", "Feast"]
