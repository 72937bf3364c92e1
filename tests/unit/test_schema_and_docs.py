"""The settings reference is generated from the models and kept current; every hub
module's doctests run (and the modules with none are named here, so losing them shows)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import atelier_hub
import pytest
from atelier_hub.reference import reference, sections
from atelier_hub.schema import StrictModel, undocumented

REPO = Path(__file__).resolve().parents[2]

# Modules without a single `>>>` example: runtime glue (tornado handlers, traitlets
# spawners, process supervisors) whose behaviour the integration tests exercise instead,
# and the image's paths (constants only).
NO_EXAMPLES = {
    "atelier_hub", "atelier_hub._version", "atelier_hub.cli", "atelier_hub.image_paths",
    "atelier_hub.embedded", "atelier_hub.embedded.cgroups", "atelier_hub.embedded.state_folder",
    "atelier_hub.embedded.engine", "atelier_hub.embedded.gpus", "atelier_hub.embedded.process_spawner",
    "atelier_hub.install.docker",
    "atelier_hub.profile_spawner",
    "atelier_hub.cluster",
    "atelier_hub.install", "atelier_hub.install.__main__", "atelier_hub.install._steps",
    "atelier_hub.install.trino", "atelier_hub.services.ray",
    "atelier_hub.services.trino",
    "atelier_hub.services.usage",
    "atelier_hub._job_runner",  # a script run in a job's container: tests/integration/test_jobs.py
}


def hub_modules() -> list[str]:
    names = ["atelier_hub"]
    for info in pkgutil.walk_packages(atelier_hub.__path__, "atelier_hub."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("title,intro,model", sections(), ids=[s[0] for s in sections()])
def test_every_settings_field_has_a_description(title, intro, model):
    assert issubclass(model, StrictModel)
    assert undocumented(model) == []


def test_the_reference_is_generated_from_the_models_and_current():
    committed = (REPO / "docs" / "reference.md").read_text()
    assert committed == reference(sections()), (
        "docs/reference.md is out of date: regenerate it with "
        "`.venv/bin/python -m atelier_hub.reference > docs/reference.md`")


def test_the_readmes_links_lead_somewhere_the_reference_among_them():
    """Every relative link of README.md names a file or folder of the repository (a
    reader following it lands somewhere), and one of them is the settings reference."""
    import re

    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text())
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    assert "docs/reference.md" in local
    missing = [link for link in local if not (REPO / link).exists()]
    assert missing == [], missing


def test_doctests_of_every_hub_module_pass():
    without = set()
    for name in hub_modules():
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name
        if result.attempted == 0:
            without.add(name)
    # A module that loses its examples (or gains its first) changes this list on purpose.
    assert without == NO_EXAMPLES
