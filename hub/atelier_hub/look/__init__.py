"""Atelier's look: one stylesheet and one mark, for the hub's pages and the services' pages.

Rule this module keeps: the look lives in ``atelier.css`` and ``mark.svg`` beside this
file, and nowhere else. The hub's templates get both as template variables
(``atelier_css``, ``atelier_mark``: :func:`template_vars`) from the templates in
:data:`TEMPLATES`, which both modes' hubs put on their template path; a service's page is
:func:`service_page`, which loads JupyterHub's own stylesheet (the service is on the hub's
origin) and puts the same navbar and stylesheet around its content.
"""

from __future__ import annotations

import html
import os
from functools import cache
from pathlib import Path

__all__ = ["TEMPLATES", "stylesheet", "mark", "template_vars", "service_page"]

_HERE = Path(__file__).parent
#: the hub's pages with Atelier's look (the frame page.html, the home page, the spawn form's
#: cards, the admin page), beside JupyterHub's own, which they extend as "templates/..."
TEMPLATES = _HERE.parent / "embedded" / "templates"


@cache
def stylesheet() -> str:
    """The stylesheet's text.

    >>> "--atelier-ink" in stylesheet()
    True
    """
    return (_HERE / "atelier.css").read_text()


@cache
def mark() -> str:
    """The mark, as inline SVG (labelled "Atelier" for screen readers).

    >>> mark().startswith("<svg") and 'aria-label="Atelier"' in mark()
    True
    """
    return (_HERE / "mark.svg").read_text().strip()


def template_vars() -> dict[str, str]:
    """What the hub's templates need for the look (embedded/templates/page.html)."""
    return {"atelier_css": stylesheet(), "atelier_mark": mark()}


def service_page(title: str, body: str, *, hub_prefix: str | None = None,
                 links: tuple[tuple[str, str], ...] = ()) -> str:
    """A service's whole page: JupyterHub's stylesheet, Atelier's, the navbar (the mark,
    back to the hub's home, then ``links`` as (label, href)), and ``body`` (HTML, already
    escaped by the caller) in ``<main>``. ``title`` is text. ``hub_prefix``: the hub's
    ``/hub/`` (default: under the base URL the hub gives its services, ``JUPYTERHUB_BASE_URL``).

    >>> page = service_page("Usage", "<p>x</p>", links=(("Usage", "/services/usage/"),))
    >>> '<title>Usage · Atelier</title>' in page and 'href="/hub/static/css/style.min.css"' in page
    True
    >>> '<main class="container atelier-page' in page and 'href="/hub/home"' in page
    True
    """
    if hub_prefix is None:
        hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/"
    nav = "".join(f'<li class="nav-item"><a class="nav-link" href="{html.escape(href)}">{html.escape(label)}</a></li>'
                  for label, href in links)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Atelier</title>
<link rel="stylesheet" href="{html.escape(hub_prefix)}static/css/style.min.css">
<style>{stylesheet()}</style></head>
<body>
<nav class="navbar navbar-expand border-bottom mb-3" aria-label="Atelier">
<div class="container-fluid">
<a class="atelier-brand navbar-brand" href="{html.escape(hub_prefix)}home">{mark()}<span>Atelier</span></a>
<ul class="navbar-nav me-auto">
<li class="nav-item"><a class="nav-link" href="{html.escape(hub_prefix)}home">Home</a></li>{nav}</ul>
</div></nav>
<main class="container atelier-page pb-4">
{body}
</main>
</body></html>"""
