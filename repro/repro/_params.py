"""The program's parsed arguments, as MLflow parameters.

The rule this module keeps: find what the program already parsed, never parse or import
anything. At ``start_run`` the caller's frames (and ``__main__``) are looked at for an
``argparse.Namespace``, an OmegaConf ``DictConfig`` (what a ``@hydra.main`` function
receives) and the current click context (click and typer), each only when its library
is already in ``sys.modules``. Values are flattened to dotted keys under ``args.``
(command line) or ``config.`` (Hydra/OmegaConf), so they never collide with the
parameters a script logs itself, and redacted like the command line.
"""

from __future__ import annotations

import sys
from typing import Any

from ._redact import REDACTED, is_secret_name, redact_value

#: Most parameters logged per run, and the longest value (MLflow allows 6000).
MAX_PARAMS = 200
MAX_VALUE = 500
_MAX_FRAMES = 40


def flatten(data: Any, prefix: str) -> dict[str, str]:
    """Nested mappings and lists as ``{dotted.key: text}``, secrets redacted.

    >>> flatten({"lr": 0.1, "db": {"password": "x", "host": "h"}, "layers": [1, 2]}, "config")
    {'config.lr': '0.1', 'config.db.password': '[REDACTED]', 'config.db.host': 'h', \
'config.layers': '[1, 2]'}
    """
    out: dict[str, str] = {}

    def walk(node: Any, key: str, secret: bool) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}", secret or is_secret_name(str(k)))
            return
        if secret and node not in (None, ""):
            out[key] = REDACTED
            return
        text = str(node)
        text = redact_value(text)
        out[key] = text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"

    walk(data, prefix, False)
    return out


def _config_dict(cfg: Any) -> dict[str, Any] | None:
    omegaconf = sys.modules.get("omegaconf")
    try:
        return omegaconf.OmegaConf.to_container(cfg, resolve=True)  # type: ignore[union-attr]
    except Exception:  # an interpolation that cannot resolve yet
        try:
            return omegaconf.OmegaConf.to_container(cfg, resolve=False)  # type: ignore[union-attr]
        except Exception:
            return None


def find(frame: Any) -> tuple[dict[str, str], list[str]]:
    """(params, sources) from the frames above ``frame`` and ``__main__``; sources name
    what was found ("argparse", "click", "typer", "omegaconf")."""
    argparse = sys.modules.get("argparse")
    omegaconf = sys.modules.get("omegaconf")
    click = sys.modules.get("click")
    namespace_type = getattr(argparse, "Namespace", None)
    config_type = getattr(omegaconf, "DictConfig", None)
    found: dict[str, Any] = {}
    scopes = []
    depth = 0
    while frame is not None and depth < _MAX_FRAMES:
        scopes.append(frame.f_locals)
        frame, depth = frame.f_back, depth + 1
    main = sys.modules.get("__main__")
    if main is not None:
        scopes.append(vars(main))
    for scope in scopes:
        for value in list(scope.values()):
            if namespace_type is not None and "argparse" not in found and isinstance(
                    value, namespace_type):
                found["argparse"] = dict(vars(value))
            elif config_type is not None and "omegaconf" not in found and isinstance(
                    value, config_type):
                data = _config_dict(value)
                if isinstance(data, dict):
                    found["omegaconf"] = data
    if click is not None:
        try:
            ctx = click.get_current_context(silent=True)
        except Exception:
            ctx = None
        params: dict[str, Any] = {}
        while ctx is not None:
            params = {**dict(ctx.params or {}), **params}
            ctx = ctx.parent
        if params:
            found["typer" if "typer" in sys.modules else "click"] = params
    out: dict[str, str] = {}
    for source, data in found.items():
        out.update(flatten(data, "config" if source == "omegaconf" else "args"))
    if len(out) > MAX_PARAMS:
        out = dict(list(out.items())[:MAX_PARAMS])
    return out, list(found)
