"""The program's parsed arguments, as MLflow parameters.

The rule this module keeps: find what the program already parsed, never parse or import
anything. At ``start_run`` the caller's frames (and ``__main__``) are looked at for an
``argparse.Namespace``, an OmegaConf ``DictConfig`` (what a ``@hydra.main`` function
receives) and the current click context (click, and typer, which carries its own copy
of click), each only when its library is already in ``sys.modules``. Values are
flattened to dotted keys under ``args.`` (command line) or ``config.`` (Hydra/OmegaConf),
so they never collide with the parameters a script logs itself, and redacted like the
command line.

Beside the values, :func:`find` returns how each parameter is spelled on the command
line (its options, how many values follow it, flag or not), taken from the parser the
program built (an ``ArgumentParser`` in the same frames, the click command): ``repro
rerun --set`` needs it to change a parameter in the recorded command.
"""

from __future__ import annotations

import sys
from typing import Any

from ._redact import REDACTED, is_secret_name, redact_argv, redact_value

#: Most parameters logged per run, and the longest value (MLflow allows 6000).
MAX_PARAMS = 200
MAX_VALUE = 500
_MAX_FRAMES = 40
#: Sources whose values are a config (``config.*``), changed by ``key=value`` overrides.
CONFIG_SOURCES = ("omegaconf", "hydra")
_LIBRARIES = frozenset({"argparse", "click", "typer", "hydra", "omegaconf"})


def flatten(data: Any, prefix: str) -> dict[str, str]:
    """Nested mappings and lists as ``{dotted.key: text}``, secrets redacted.

    >>> flatten({"lr": 0.1, "db": {"password": "x", "host": "h"}, "layers": [1, 2]}, "config")
    {'config.lr': '0.1', 'config.db.password': '[REDACTED]', 'config.db.host': 'h', \
'config.layers': '[1, 2]'}
    >>> flatten({"extra": ["lr=1", "db.password=x"]}, "args")
    {'args.extra': "['lr=1', 'db.password=[REDACTED]']"}
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
        if isinstance(node, (list, tuple)) and all(isinstance(v, str) for v in node):
            # A list of command-line words (``--token X``, ``db.password=X``).
            node = type(node)(redact_argv(node))
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


def _argparse_options(parser: Any) -> dict[str, dict[str, Any]]:
    """``{args.dest: spelling}`` of an ``ArgumentParser``'s optional arguments."""
    out: dict[str, dict[str, Any]] = {}
    # ref: argparse keeps its actions in the (undocumented but stable since 2.7)
    # ``_actions`` list; ``option_strings`` is empty for positionals.
    for action in getattr(parser, "_actions", []):
        dest = getattr(action, "dest", None)
        if not dest or dest == "help" or not isinstance(dest, str):
            continue
        nargs = 1 if action.nargs is None else action.nargs
        out[f"args.{dest}"] = {"opts": list(action.option_strings), "nargs": nargs,
                               "secondary": [],
                               "multiple": type(action).__name__ in ("_AppendAction",
                                                                     "_ExtendAction")}
    return out


def _click_options(ctx: Any) -> dict[str, dict[str, Any]]:
    """``{args.name: spelling}`` of the click (or typer) commands of ``ctx`` and its
    parents."""
    out: dict[str, dict[str, Any]] = {}
    while ctx is not None:
        for param in getattr(ctx.command, "params", []) or []:
            name = getattr(param, "name", None)
            if not name or f"args.{name}" in out:
                continue
            opts = list(getattr(param, "opts", []) or [])
            if getattr(param, "param_type_name", "") == "argument":
                opts = []
            nargs: Any = 0 if getattr(param, "is_flag", False) else getattr(param, "nargs", 1)
            if nargs == -1:
                nargs = "*"
            out[f"args.{name}"] = {"opts": opts, "nargs": nargs,
                                   "secondary": list(getattr(param, "secondary_opts", []) or []),
                                   "multiple": bool(getattr(param, "multiple", False))}
        ctx = ctx.parent
    return out


def find(frame: Any) -> tuple[dict[str, str], list[str], dict[str, dict[str, Any]]]:
    """(params, sources, options) from the frames above ``frame`` and ``__main__``;
    sources name what was found ("argparse", "click", "typer", "omegaconf", "hydra"),
    options how each ``args.*`` parameter is written on the command line."""
    argparse = sys.modules.get("argparse")
    omegaconf = sys.modules.get("omegaconf")
    namespace_type = getattr(argparse, "Namespace", None)
    parser_type = getattr(argparse, "ArgumentParser", None)
    config_type = getattr(omegaconf, "DictConfig", None)
    found: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    parser = None
    scopes = []
    depth = 0
    while frame is not None and depth < _MAX_FRAMES:
        # The argument libraries' own frames hold their own parsers and configs (Hydra
        # parses its command line with argparse, and keeps the config with its `hydra`
        # node): only the program's frames count.
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] not in _LIBRARIES:
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
            elif parser_type is not None and parser is None and isinstance(value, parser_type):
                parser = value
            elif (config_type is not None and not any(c in found for c in CONFIG_SOURCES)
                  and isinstance(value, config_type)):
                data = _config_dict(value)
                if isinstance(data, dict):
                    # A Hydra app takes `key=value` overrides, `+key=value` for new keys.
                    found["hydra" if "hydra" in sys.modules else "omegaconf"] = data
    # Typer since 0.2x carries its own copy of click (``typer._click``), with a context
    # stack of its own; older typer, and click apps, use click's.
    for source, module in (("typer", "typer._click.globals"), ("click", "click")):
        lib = sys.modules.get(module)
        if lib is None or "typer" in found or "click" in found:
            continue
        try:
            ctx = lib.get_current_context(silent=True)
        except Exception:
            ctx = None
        params: dict[str, Any] = {}
        if ctx is not None:
            try:
                options.update(_click_options(ctx))
            except Exception:  # a spelling is a detail: the values still count
                pass
        while ctx is not None:
            params = {**dict(ctx.params or {}), **params}
            ctx = ctx.parent
        if params:
            found["typer" if "typer" in sys.modules else source] = params
    if parser is not None and "argparse" in found:
        try:
            options.update(_argparse_options(parser))
        except Exception:
            pass
    out: dict[str, str] = {}
    for source, data in found.items():
        out.update(flatten(data, "config" if source in CONFIG_SOURCES else "args"))
    if len(out) > MAX_PARAMS:
        out = dict(list(out.items())[:MAX_PARAMS])
    return out, list(found), options
