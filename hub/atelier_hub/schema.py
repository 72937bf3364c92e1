"""The one base of every settings model.

Rule this module keeps: a settings model (profiles, deployment settings, cluster
settings) derives from :class:`StrictModel`: unknown fields are refused, a loaded value
never changes, and every field carries a ``Field(description=...)``. It imports no
model: the reference generated from the models' descriptions lives above them, in
:mod:`atelier_hub.reference`.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel", "models_used", "parse_problem", "undocumented"]


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


def models_used(model: type[BaseModel]) -> list[type[BaseModel]]:
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
    return [f"{m.__name__}.{name}" for m in models_used(model) for name, f in m.model_fields.items()
            if not f.exclude and not (f.description or "").strip()]
