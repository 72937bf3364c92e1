"""The settings reference is generated from the models and kept current; every hub
module's doctests run (and the modules with none are named here, so losing them shows);
the docs' links lead somewhere and the commands they show exist."""

from __future__ import annotations

import argparse
import doctest
import importlib
import os
import pkgutil
import re
import shlex
import subprocess
import sys
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
    "atelier_hub.install", "atelier_hub.install.__main__",
    "atelier_hub.install.trino", "atelier_hub.services.ray",
    "atelier_hub.services.trino",
    "atelier_hub.services.usage",
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


# The documents a reader follows from the front page: README.md and docs/*.md.
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOC_IDS = [str(path.relative_to(REPO)) for path in DOCS]
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`]*)")
# Fenced blocks whose lines are commands a reader types (an untyped block too).
SHELL_BLOCKS = {"", "bash", "console", "sh", "shell"}


def doc_lines(path: Path) -> list[tuple[int, str, str | None]]:
    """Each line of a markdown file with its number and the language of the fenced
    block it is in (``""`` for an untyped block, None outside blocks and on the fences)."""
    lines, fence, lang = [], None, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence, lang = opening.group(1), opening.group(2).lower()
            lines.append((number, line, None))
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) \
                and not line.strip().strip(fence[0]):
            fence, lang = None, None
            lines.append((number, line, None))
        else:
            lines.append((number, line, lang))
    return lines


def github_anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: the text of its links, lowercase, every
    character but letters, digits, ``_``, ``-`` and spaces dropped, spaces made ``-``.

    >>> github_anchor("Two embedded modes; the banner of `make dev` says which one runs")
    'two-embedded-modes-the-banner-of-make-dev-says-which-one-runs'
    >>> github_anchor("Security: what is isolated and what is not")
    'security-what-is-isolated-and-what-is-not'
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings (outside code blocks); a repeated one
    gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line, lang in doc_lines(path):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if lang is None and heading:
            anchor = github_anchor(heading.group(1))
            found.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
            seen[anchor] = seen.get(anchor, 0) + 1
    return found


def doc_links(path: Path) -> list[tuple[int, str]]:
    """The link targets of a markdown file's prose (not in code blocks or code spans)."""
    links = []
    for number, line, lang in doc_lines(path):
        if lang is None and not FENCE.match(line):
            prose = re.sub(r"`[^`]*`", "", line)
            links += [(number, target) for target in re.findall(r"\]\(<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\)", prose)]
            links += [(number, target) for target in re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", prose)]
    return links


def test_the_readme_links_the_settings_reference():
    assert "docs/reference.md" in [target.split("#")[0] for _, target in doc_links(REPO / "README.md")]


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_the_docs_links_lead_somewhere(doc):
    """Every relative link of README.md and docs/*.md names a file or folder of the
    repository, relative to the file that holds it (a reader following it lands
    somewhere), and a link's ``#anchor`` into a markdown file names one of its headings."""
    problems = []
    for number, target in doc_links(doc):
        if "://" in target or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        linked = (doc.parent / file).resolve() if file else doc
        where = f"{doc.relative_to(REPO)}:{number}: ({target})"
        if not linked.exists():
            problems.append(f"{where}: no such file {file}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{where}: {linked.relative_to(REPO)} has no heading with the anchor #{anchor}")
    assert problems == [], "\n".join(problems)


def make_targets() -> set[str]:
    targets = re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M)
    return set(targets) - {".PHONY"}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands (their parsers by name), {} where it has none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def unknown_subcommand(parser: argparse.ArgumentParser, words: list[str]) -> str | None:
    """The first of ``words`` (what follows the program) that is not a subcommand where
    the parser wants one; None when they all are. The walk stops at an option, or where
    a parser has no subcommands (the rest are its arguments)."""
    for word in words:
        choices = subcommands(parser)
        if not choices or word.startswith("-"):
            return None
        if word not in choices:
            return f"{parser.prog} has no subcommand {word!r} (it has: {', '.join(sorted(choices))})"
        parser = choices[word]
    return None


def test_unknown_subcommand_is_found_at_each_level():
    from atelier_hub.cli import build_parser

    atelier = build_parser()
    assert unknown_subcommand(atelier, ["users", "list"]) is None
    assert unknown_subcommand(atelier, ["vscode", "gpu", "--no-open"]) is None
    assert "no subcommand 'user'" in unknown_subcommand(atelier, ["user", "list"])
    assert "no subcommand 'lst'" in unknown_subcommand(atelier, ["users", "lst"])


def atelier_env_accepts(command: str, home: Path) -> bool:
    """images/base/atelier-env runs ``command`` (exit 0) on an empty home; it answers 2
    to a command it does not have. It runs where nothing is: a layer of its own under
    ``home``, so ``reset`` finds nothing to move."""
    env = {**os.environ, "HOME": str(home), "PYTHONUSERBASE": str(home / "layer"), "ATELIER_IMAGE": "base"}
    out = subprocess.run([sys.executable, str(REPO / "images" / "base" / "atelier-env"), command],
                         env=env, capture_output=True, text=True, timeout=60)
    return out.returncode == 0


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_the_docs_commands_exist(doc, tmp_path):
    """Every command line of a shell (or untyped) fenced block that runs ``make``,
    ``atelier`` (``.venv/bin/atelier``), ``atelier-env`` or ``repro`` names a Makefile
    target, or a subcommand their real parser has. Other commands are not checked."""
    from atelier_hub.cli import build_parser
    from repro._cli import _parser as repro_parser

    targets = make_targets()
    parsers = {"atelier": build_parser(), "repro": repro_parser()}
    env_commands: dict[str, bool] = {}
    problems = []
    for number, line, lang in doc_lines(doc):
        if lang not in SHELL_BLOCKS:
            continue
        command = line.strip().removeprefix("$ ")
        try:
            words = shlex.split(command, comments=True)
        except ValueError:
            words = command.split()
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # PORT=8100 make dev
            words = words[1:]
        if not words:
            continue
        program, args = words[0].rsplit("/", 1)[-1], words[1:]
        where = f"{doc.relative_to(REPO)}:{number}: `{command}`"
        if words[0] == "make":
            problems += [f"{where}: the Makefile has no target {t!r}" for t in args
                         if "=" not in t and not t.startswith("-") and t not in targets]
        elif program in parsers and (words[0] == program or words[0].endswith("/bin/" + program)):
            problem = unknown_subcommand(parsers[program], args)
            if problem:
                problems.append(f"{where}: {problem}")
        elif program == "atelier-env" and args:
            if args[0] not in env_commands:
                env_commands[args[0]] = atelier_env_accepts(args[0], tmp_path / args[0])
            if not env_commands[args[0]]:
                problems.append(f"{where}: images/base/atelier-env has no command {args[0]!r}")
    assert problems == [], "\n".join(problems)


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
