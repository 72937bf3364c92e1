"""The settings reference (``docs/reference.md``), generated from the settings models.

Rule this module keeps: the reference is generated from the models' own field
descriptions, as Zero to JupyterHub generates its docs from its schema, and a test
keeps it current: regenerate it with ``python -m atelier_hub.reference > docs/reference.md``.
It sits above the models it documents (they import only :mod:`atelier_hub.schema`).
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .capacity import CapacitySettings
from .cluster.settings import ClusterSettings
from .profiles import Profile
from .schema import models_used
from .services import Deployment

__all__ = ["reference", "sections", "main"]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " / ".join(json.dumps(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _default(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{json.dumps(value, default=str)}`"


def reference(sections: list[tuple[str, str, type[BaseModel]]]) -> str:
    """Markdown reference of ``(title, introduction, root model)`` sections (pure).

    >>> from pydantic import Field
    >>> from atelier_hub.schema import StrictModel
    >>> class Size(StrictModel):
    ...     "How big a session is."
    ...     cores: int = Field(2, description="Cores it may use.")
    >>> print(reference([("Sizes", "One size.", Size)]).split("### ")[1])
    `Size`
    <BLANKLINE>
    How big a session is.
    <BLANKLINE>
    | field | type | default | description |
    |---|---|---|---|
    | `cores` | int | `2` | Cores it may use. |
    <BLANKLINE>
    """
    out = ["# Settings reference", "",
           "Generated from the settings models by `python -m atelier_hub.reference`; do not edit by hand.",
           "Every field is refused if misspelt; unset optional fields are `null`.", ""]
    for title, intro, root in sections:
        out += [f"## {title}", "", intro, ""]
        for model in models_used(root):
            doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            out += [f"### `{model.__name__}`", "", doc, "",
                    "| field | type | default | description |", "|---|---|---|---|"]
            for name, field in model.model_fields.items():
                if field.exclude:
                    continue
                desc = (field.description or "").replace("\n", " ").replace("|", "\\|")
                out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def sections() -> list[tuple[str, str, type[BaseModel]]]:
    return [
        ("Profiles", "One YAML file per profile in `profiles/` (`atelier profiles --check DIR` validates a folder).",
         Profile),
        ("Deployment settings", "The services every session is configured for: written by `atelier dev` to "
         "`STATE/deployment.json` in embedded mode, given as `--deployment FILE` to `atelier render values` on a "
         "cluster.", Deployment),
        ("Cluster settings", "What a Kubernetes deployment adds (`atelier render values --cluster FILE`).",
         ClusterSettings),
        ("Capacity settings", "The GPU pool of an embedded stack and its fair share between teams "
         "(`atelier dev --capacity FILE`, YAML or JSON; docs/admin-guide.md, \"Capacity and the queue\").", CapacitySettings),
    ]


def main() -> None:
    print(reference(sections()), end="")


if __name__ == "__main__":
    main()
