"""``repro rerun --set``: change a recorded run's parsed arguments in its command line.

The rule this module keeps: the recorded command is changed only where a parameter is
written, spelled the way the program's own parser spells it (recorded at run start by
``_params``: options, how many values follow, flags); anything not understood is an
error naming the parameter and the way out (``--`` and the whole command), never a
guess that silently runs something else. A secret redacted in the record is never
passed on as the marker: :func:`redacted_arguments` names every parameter the re-run
would otherwise receive as ``[REDACTED]``. Pure functions, unit-tested.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import ReproError
from ._params import CONFIG_SOURCES
from ._redact import REDACTED, is_secret_name

_TRUE = ("1", "true", "yes", "on", "y")


def _is_option(token: str) -> bool:
    if not token.startswith("-") or len(token) < 2:
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def _guess(name: str) -> dict[str, Any]:
    """How an option is most likely written when the parser's spelling is unknown."""
    dashed = name.replace("_", "-")
    return {"opts": list(dict.fromkeys([f"--{dashed}", f"--{name}"])), "nargs": 1,
            "guessed": True}


def resolve_key(key: str, record: Mapping[str, Any]) -> str:
    """The full parameter name (``args.*`` or ``config.*``) a ``--set`` key means.

    >>> rec = {"values": {"args.lr": "0.1", "config.db.host": "h"}, "sources": ["argparse"]}
    >>> resolve_key("lr", rec), resolve_key("args.lr", rec), resolve_key("db.host", rec)
    ('args.lr', 'args.lr', 'config.db.host')
    """
    if key.startswith(("args.", "config.")):
        return key
    values = record.get("values") or {}
    options = record.get("options") or {}
    for full in (f"args.{key}", f"args.{key.replace('-', '_')}"):
        if full in values or full in options:
            return full
    config = f"config.{key}"
    if config in values or any(k.startswith(config + ".") for k in values):
        return config
    if any(s in CONFIG_SOURCES for s in record.get("sources") or []):
        return config
    return f"args.{key.replace('-', '_')}"


def _spelling(full: str, record: Mapping[str, Any], args: Sequence[str]) -> dict[str, Any]:
    spelling = (record.get("options") or {}).get(full)
    if spelling is not None:
        return spelling
    guess = _guess(full[len("args."):])
    present = [o for o in guess["opts"]
               if any(a == o or a.startswith(o + "=") for a in args)]
    return {**guess, "opts": present or guess["opts"]}


def _values_after(args: Sequence[str], i: int, nargs: Any) -> int:
    """How many tokens after ``args[i]`` (an option) are its values."""
    if isinstance(nargs, int):
        return min(nargs, len(args) - i - 1)
    n = 0
    while i + 1 + n < len(args) and not _is_option(args[i + 1 + n]):
        n += 1
        if nargs == "?":
            break
    return n


def _drop_option(args: list[str], spelling: Mapping[str, Any]) -> list[str]:
    opts = [*spelling.get("opts", []), *spelling.get("secondary", [])]
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token in opts:
            nargs = 0 if token in spelling.get("secondary", []) else spelling.get("nargs", 1)
            i += 1 + _values_after(args, i, nargs)
            continue
        if any(token.startswith(o + "=") for o in opts if o.startswith("--")):
            i += 1
            continue
        if any(len(o) == 2 and token.startswith(o) and not token.startswith("--")
               for o in opts):
            i += 1  # -pVALUE
            continue
        out.append(token)
        i += 1
    return out


def _option_tokens(full: str, spelling: Mapping[str, Any], value: str) -> list[str]:
    opts = list(spelling.get("opts", []))
    if not opts:
        raise ReproError(
            f"{full} is a positional argument, which --set cannot place; give the whole "
            "command after `--`: repro rerun RUN_ID -- python train.py ..."
        )
    opt = next((o for o in opts if o.startswith("--")), opts[0])
    nargs = spelling.get("nargs", 1)
    if nargs == 0:  # a flag: on, or off (its --no- form when it has one)
        on = value.strip().lower() in _TRUE
        if spelling.get("flag_value") is False:
            on = not on
        secondary = spelling.get("secondary") or []
        if on:
            return [opt]
        return [secondary[0]] if secondary else []
    if spelling.get("multiple"):
        return [t for v in shlex.split(value) for t in (opt, v)]
    if nargs in ("+", "*") or (isinstance(nargs, int) and nargs > 1):
        return [opt, *shlex.split(value)]
    return [opt, value]


def _config_key(token: str) -> tuple[str, str] | None:
    """(prefix, dotted key) of a ``key=value`` override (``+key``, ``++key``, ``~key``)."""
    if _is_option(token) or "=" not in token:
        return None
    key = token.split("=", 1)[0]
    bare = key.lstrip("+~")
    if not bare or any(c.isspace() for c in bare):
        return None
    return key[: len(key) - len(bare)], bare


def apply_sets(args: Sequence[str], sets: Sequence[str], record: Mapping[str, Any]
               ) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The program arguments with each ``KEY=VALUE`` of ``sets`` written in, and
    (parameter, recorded value, new value) per change.

    >>> rec = {"values": {"args.lr": "0.1", "args.layers": "[1]"}, "sources": ["argparse"],
    ...        "options": {"args.lr": {"opts": ["-l", "--lr"], "nargs": 1},
    ...                    "args.layers": {"opts": ["--layers"], "nargs": "+"}}}
    >>> apply_sets(["data", "-l", "0.1", "--layers", "1"], ["lr=0.2", "layers=3 4"], rec)[0]
    ['data', '--lr', '0.2', '--layers', '3', '4']
    >>> hydra = {"values": {"config.lr": "0.1"}, "sources": ["hydra"]}
    >>> apply_sets(["lr=0.1"], ["lr=0.5", "db.user=u"], hydra)[0]
    ['lr=0.5', '+db.user=u']
    """
    out = list(args)
    changes = []
    values = record.get("values") or {}
    sources = record.get("sources") or []
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ReproError(f"--set {item!r}: write it as NAME=VALUE (e.g. --set lr=0.01)")
        full = resolve_key(key.strip(), record)
        if full.startswith("config."):
            dotted = full[len("config."):]
            prefix = None
            kept = []
            for token in out:
                parsed = _config_key(token)
                if parsed is not None and parsed[1] == dotted:
                    prefix = parsed[0] if parsed[0] != "~" else ""
                    continue
                kept.append(token)
            if prefix is None:
                known = full in values or any(k.startswith(full + ".") for k in values)
                prefix = "+" if "hydra" in sources and not known else ""
            out = [*kept, f"{prefix}{dotted}={value}"]
        else:
            spelling = _spelling(full, record, out)
            out = [*_drop_option(out, spelling), *_option_tokens(full, spelling, value)]
        changes.append((full, values.get(full, "(not recorded)"), value))
    return out, changes


def redacted_arguments(args: Sequence[str], record: Mapping[str, Any]) -> list[str]:
    """Names of the parameters (or options, where the parser is unknown) whose value in
    ``args`` is the redaction marker.

    >>> rec = {"values": {"args.db_password": "[REDACTED]"}, "sources": ["argparse"],
    ...        "options": {"args.db_password": {"opts": ["-p", "--db-password"]}}}
    >>> redacted_arguments(["-p", "[REDACTED]", "--token=[REDACTED]", "db.key=[REDACTED]"], rec)
    ['args.db_password (-p)', '--token', 'db.key']
    >>> redacted_arguments(["-p[REDACTED]", "-k[REDACTED]"], rec)
    ['args.db_password (-p)', '-k']
    """
    options = record.get("options") or {}
    config = any(s in CONFIG_SOURCES for s in record.get("sources") or [])
    by_opt = {o: name for name, sp in options.items()
              for o in [*sp.get("opts", []), *sp.get("secondary", [])]}
    names: list[str] = []
    for i, token in enumerate(args):
        if REDACTED not in token:
            continue
        if _is_option(token):
            opt = token.split("=", 1)[0]
            if not token.startswith("--") and (token[:2] in by_opt
                                               or token[2:].startswith(REDACTED)):
                opt = token[:2]  # -pVALUE
        elif i and _is_option(args[i - 1]) and "=" not in args[i - 1]:
            opt = args[i - 1].split("=", 1)[0]
        else:
            parsed = _config_key(token)
            if parsed is not None:
                names.append(f"config.{parsed[1]}" if config else parsed[1])
            else:
                names.append(f"argument {i + 1}")
            continue
        names.append(f"{by_opt[opt]} ({opt})" if opt in by_opt else opt)
    return list(dict.fromkeys(names))


def set_hint(name: str) -> str:
    """The ``--set`` that supplies a redacted parameter named as
    :func:`redacted_arguments` names it.

    >>> set_hint("args.db_password (-p)"), set_hint("--token"), set_hint("db.key")
    ('--set args.db_password=VALUE', '--set token=VALUE', '--set db.key=VALUE')
    """
    key = name.split(" (", 1)[0]
    if key.startswith("-"):
        key = key.lstrip("-")
    return f"--set {key}=VALUE"


def masked(sets: Sequence[str], record: Mapping[str, Any]) -> list[str]:
    """``sets`` with the values of secret parameters (redacted in the record, or named
    like a secret) replaced by the marker, for printing.

    >>> masked(["lr=0.1", "db.password=hunter2"], {})
    ['lr=0.1', 'db.password=[REDACTED]']
    """
    values = record.get("values") or {}
    out = []
    for item in sets:
        key, eq, value = item.partition("=")
        full = resolve_key(key.strip(), record) if eq and key.strip() else key
        secret = values.get(full) == REDACTED or is_secret_name(full.rsplit(".", 1)[-1])
        out.append(f"{key}={REDACTED}" if eq and secret else item)
    return out
