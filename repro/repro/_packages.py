"""The installed distributions, as ``name==version`` lines.

The rule this module keeps: read only what is needed. Each ``*.dist-info/METADATA`` (or
``*.egg-info/PKG-INFO``) is opened and read until its ``Name`` and ``Version`` headers are
found, which takes a few milliseconds for hundreds of distributions, where
``importlib.metadata.distributions()`` parses every header (~110 ms) and ``pip freeze``
starts a process (~470 ms). Resolution follows ``sys.path`` order like the import system:
the first distribution of a name wins.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

_NORMALIZE = re.compile(r"[-_.]+")
# Headers are short; 8 KiB always holds Name and Version, which come first in practice.
_HEAD_BYTES = 8192


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name.

    >>> normalize_name("Foo.Bar_baz")
    'foo-bar-baz'
    """
    return _NORMALIZE.sub("-", name).lower()


def parse_metadata_header(text: str) -> tuple[str, str] | None:
    """(Name, Version) from the header block of a METADATA / PKG-INFO file, or None.

    Only the lines before the first blank line are headers (the body is the long
    description, which may itself contain "Name:" lines).

    >>> parse_metadata_header("Metadata-Version: 2.1\\nName: numpy\\nVersion: 2.1.0\\n\\nName: x")
    ('numpy', '2.1.0')
    """
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break
        if line[:1] in (" ", "\t"):
            continue  # continuation of a folded header
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "name" and name is None:
            name = value.strip()
        elif key == "version" and version is None:
            version = value.strip()
        if name is not None and version is not None:
            return name, version
    return None


def _read_header(path: str) -> tuple[str, str] | None:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return None
    return parse_metadata_header(head.decode("utf-8", "replace"))


# (sys.path entries, their modification times) -> result of the last scan. Installing,
# upgrading or removing a distribution adds or removes a *.dist-info folder, which
# changes the modification time of the folder holding it, so an unchanged key means an
# unchanged answer.
_cache: dict[tuple[tuple[str, ...], tuple[int, ...]], list[tuple[str, str]]] = {}


def _mtimes(paths: tuple[str, ...]) -> tuple[int, ...]:
    out = []
    for entry in paths:
        try:
            out.append(os.stat(entry or ".").st_mtime_ns)
        except OSError:
            out.append(-1)
    return tuple(out)


def installed_packages(paths: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(name, version) of every distribution found on ``paths`` (default ``sys.path``),
    sorted by normalised name. Repeated calls re-read only when a folder changed.

    >>> any(name == "mlflow-skinny" or name == "mlflow" for name, _ in installed_packages())
    True
    """
    entries = tuple(sys.path if paths is None else paths)
    key = (entries, _mtimes(entries))
    if key in _cache:
        return list(_cache[key])
    result = _scan(entries)
    _cache.clear()
    _cache[key] = result
    return list(result)


#: {normalised name: source folder} of editable installs found by the last scan
#: (PEP 610 ``direct_url.json`` with ``dir_info.editable``), filled by :func:`_scan`.
_editables: dict[tuple[str, ...], dict[str, str]] = {}


def editable_installs(paths: Iterable[str] | None = None) -> dict[str, str]:
    """``{normalised name: source folder}`` of the editable installs on ``paths``.

    >>> isinstance(editable_installs(), dict)
    True
    """
    entries = tuple(sys.path if paths is None else paths)
    installed_packages(entries)
    return dict(_editables.get(entries, {}))


def _editable_source(dist_info: str) -> str | None:
    """The source folder of an editable install, from its ``direct_url.json``."""
    import json
    from urllib.parse import unquote, urlsplit

    try:
        with open(os.path.join(dist_info, "direct_url.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not (data.get("dir_info") or {}).get("editable"):
        return None
    url = urlsplit(str(data.get("url", "")))
    return unquote(url.path) if url.scheme == "file" else None


def _scan(entries: tuple[str, ...]) -> list[tuple[str, str]]:
    seen: dict[str, tuple[str, str]] = {}
    editables: dict[str, str] = {}
    _editables.clear()
    _editables[entries] = editables
    for entry in entries:
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except OSError:
            continue  # zip files, missing directories
        for fname in names:
            if fname.endswith(".dist-info"):
                meta = os.path.join(directory, fname, "METADATA")
            elif fname.endswith(".egg-info"):
                meta = os.path.join(directory, fname)
                if os.path.isdir(meta):
                    meta = os.path.join(meta, "PKG-INFO")
            else:
                continue
            # Cheap pre-check from the directory name ("numpy-2.1.0.dist-info").
            stem = fname.rsplit(".", 1)[0].split("-", 1)[0]
            if normalize_name(stem) in seen:
                continue
            found = _read_header(meta)
            if found is None:
                continue
            key = normalize_name(found[0])
            if key not in seen:
                seen[key] = found
                if fname.endswith(".dist-info"):
                    source = _editable_source(os.path.join(directory, fname))
                    if source:
                        editables[key] = source
    return [seen[k] for k in sorted(seen)]


#: the mark of a distribution from the user's own layer in ``packages.txt`` (an inline
#: comment: ``pip install -r`` reads the line as ``name==version``)
USER_MARK = "# user layer"


def user_site() -> str | None:
    """The user site-packages folder when the interpreter reads it (Atelier's user layer
    on the home: ``$PYTHONUSERBASE``), else None."""
    import site

    if not site.ENABLE_USER_SITE:
        return None
    path = site.getusersitepackages()
    return path if path in sys.path else None


def user_layer_names(packages: Iterable[tuple[str, str]], folder: str | None = None) -> set[str]:
    """Normalised names of ``packages`` that come from the user site ``folder`` (default
    :func:`user_site`): found there at the version that wins on ``sys.path``.

    >>> user_layer_names([("numpy", "2.1.0")], folder="/nonexistent")
    set()
    """
    folder = folder if folder is not None else user_site()
    if not folder:
        return set()
    there = {normalize_name(n): v for n, v in installed_packages([folder])}
    return {normalize_name(n) for n, v in packages if there.get(normalize_name(n)) == v}


def format_packages(packages: Iterable[tuple[str, str]], user: set[str] = frozenset()) -> str:
    """One ``name==version`` line per distribution; those of ``user`` (normalised names:
    from the user's layer) marked with :data:`USER_MARK`.

    >>> format_packages([("numpy", "2.1.0"), ("torch", "2.5.1")])
    'numpy==2.1.0\\ntorch==2.5.1\\n'
    >>> format_packages([("tabulate", "0.9.0")], user={"tabulate"})
    'tabulate==0.9.0  # user layer\\n'
    """
    return "".join(f"{name}=={version}{'  ' + USER_MARK if normalize_name(name) in user else ''}\n"
                   for name, version in packages)


def user_marked(text: str) -> set[str]:
    """Normalised names of the lines marked as from the user's layer.

    >>> sorted(user_marked("a==1\\nTab_ulate==0.9  # user layer\\n"))
    ['tab-ulate']
    """
    return {normalize_name(line.partition("==")[0].strip()) for line in text.splitlines()
            if line.rstrip().endswith(USER_MARK) and "==" in line}


def parse_packages(text: str) -> dict[str, str]:
    """``{normalised name: version}`` from ``name==version`` lines (comments ignored).

    >>> parse_packages("NumPy==2.1.0\\n# note\\ntorch==2.5.1  # user layer\\n")
    {'numpy': '2.1.0', 'torch': '2.5.1'}
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        if sep:
            out[normalize_name(name)] = version.partition("#")[0].strip()
    return out


def compare_packages(recorded: dict[str, str], current: dict[str, str]
                     ) -> list[tuple[str, str | None, str | None]]:
    """(name, recorded version, current version) for each distribution that differs;
    None means absent on that side.

    >>> compare_packages({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "1"})
    [('b', '2', '3'), ('c', None, '1')]
    """
    names = sorted(set(recorded) | set(current))
    return [
        (n, recorded.get(n), current.get(n)) for n in names if recorded.get(n) != current.get(n)
    ]


def conda_prefix() -> str | None:
    """The active conda environment (``CONDA_PREFIX`` holding ``conda-meta``), or None."""
    prefix = os.environ.get("CONDA_PREFIX")
    if prefix and os.path.isdir(os.path.join(prefix, "conda-meta")):
        return prefix
    return None


def conda_packages(prefix: str) -> list[dict[str, str]]:
    """The packages of a conda environment, read from its ``conda-meta/*.json`` records
    (what ``conda list`` itself reads; no conda process), sorted by name.

    >>> conda_packages("/nonexistent")
    []
    """
    import json

    meta = os.path.join(prefix, "conda-meta")
    try:
        names = sorted(n for n in os.listdir(meta) if n.endswith(".json"))
    except OSError:
        return []
    out = []
    for fname in names:
        try:
            with open(os.path.join(meta, fname), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or "name" not in record:
            continue
        out.append({k: str(record.get(k) or "") for k in
                    ("name", "version", "build", "channel", "url", "md5")})
    out.sort(key=lambda r: r["name"])
    return out


def format_conda(packages: list[dict[str, str]], prefix: str) -> str:
    """``conda list --explicit --md5`` text: ``conda create --file`` rebuilds the
    environment from it.

    >>> format_conda([{"name": "x", "url": "https://c/x.conda", "md5": "ab"}], "/env")
    '# repro: conda environment /env\\n@EXPLICIT\\nhttps://c/x.conda#ab\\n'
    """
    lines = [f"# repro: conda environment {prefix}", "@EXPLICIT"]
    for p in packages:
        if p.get("url"):
            lines.append(p["url"] + (f"#{p['md5']}" if p.get("md5") else ""))
        else:
            lines.append(f"# {p['name']}=={p.get('version', '')} (no url recorded)")
    return "\n".join(lines) + "\n"


def parse_conda(text: str) -> dict[str, str]:
    """``{package file name: md5}`` from :func:`format_conda` text, for comparing.

    >>> parse_conda("@EXPLICIT\\nhttps://c/x-1-0.conda#ab\\n")
    {'x-1-0.conda': 'ab'}
    """
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        url, _, md5 = line.partition("#")
        out[url.rsplit("/", 1)[-1]] = md5
    return out
