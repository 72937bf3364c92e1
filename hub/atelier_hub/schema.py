"""The one base of every settings model, and the reference generated from the models.

Rule this module keeps: a settings model (profiles, deployment settings, cluster
settings) derives from :class:`StrictModel`: unknown fields are refused, a loaded value
never changes, and every field carries a ``Field(description=...)``. The reference
(``docs/reference.md``) is generated from those descriptions by :func:`reference`, as
Zero to JupyterHub generates its docs from its schema, and a test keeps it current:
regenerate it with ``python -m atelier_hub.schema > docs/reference.md``.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticUndefined

__all__ = ["StrictModel", "parse_problem", "undocumented", "reference", "main"]


def parse_problem(exc: Exception) -> str:
    """One line for a file that does not parse (YAML or JSON): where, and what is wrong,
    so a CLI error stays one line per problem (pure).

    >>> import yaml
    >>> try:
    ...     yaml.safe_load("images:\\n  base: [unclosed\\n")
    ... except yaml.YAMLError as exc:
    ...     parse_problem(exc)
    "line 3, column 1: expected ',' or ']', but got '<stream end>'"
    >>> parse_problem(ValueError("Expecting value: line 1 column 1 (char 0)"))
    'Expecting value: line 1 column 1 (char 0)'
    """
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


class StrictModel(BaseModel):
    """Unknown fields are errors (a typo is never silently ignored); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model its fields use, depth first, each once."""
    seen: list[type[BaseModel]] = []

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp in seen:
                return
            seen.append(tp)
            for field in tp.model_fields.values():
                visit(field.annotation)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    visit(model)
    return seen


def undocumented(model: type[BaseModel]) -> list[str]:
    """``Model.field`` for every field (of ``model`` and the models it uses) without a
    description.

    >>> class A(StrictModel):
    ...     x: int = 1
    >>> undocumented(A)
    ['A.x']
    """
    return [f"{m.__name__}.{name}" for m in _models(model) for name, f in m.model_fields.items()
            if not f.exclude and not (f.description or "").strip()]


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
    """Markdown reference of ``(title, introduction, root model)`` sections (pure)."""
    out = ["# Settings reference", "",
           "Generated from the settings models by `python -m atelier_hub.schema`; do not edit by hand.",
           "Every field is refused if misspelt; unset optional fields are `null`.", ""]
    for title, intro, root in sections:
        out += [f"## {title}", "", intro, ""]
        for model in _models(root):
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
    from .cluster.settings import ClusterSettings
    from .profiles import Profile
    from .services import Deployment

    return [
        ("Profiles", "One YAML file per profile in `profiles/` (`atelier profiles --check DIR` validates a folder).",
         Profile),
        ("Deployment settings", "The services every session is configured for: written by `atelier dev` to "
         "`STATE/deployment.json` in embedded mode, given as `--deployment FILE` to `atelier render values` on a "
         "cluster.", Deployment),
        ("Cluster settings", "What a Kubernetes deployment adds (`atelier render values --cluster FILE`).",
         ClusterSettings),
    ]


def main() -> None:
    print(reference(sections()), end="")


if __name__ == "__main__":
    main()
