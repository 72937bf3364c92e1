"""How a run's ``repro/`` files are stored: two artifacts at most, whatever was captured.

The rule this module keeps: every file repro captures can be read back byte for byte,
and a run costs the tracking server as few uploads as possible. Each artifact upload to
an MLflow server is one request that the server handles in turn with the run's own
calls (six small files added ~30 ms to a run's start+end, one ~10 ms), so:

- ``diff.patch`` (the uncommitted changes) and ``notebook.ipynb`` stay files of their
  own: they are what people open in MLflow's UI, and a notebook can be large;
- everything else (``environment.json``, ``packages.txt``, the untracked files, the
  editable and conda records, submodule and editable patches, the notebook's history)
  is one ``record.json``: JSON documents as themselves, text as a list of its lines
  (readable in the UI), anything else base64.

``repro show RUN --file NAME`` prints one of them; runs recorded before this layout
(one artifact per file) are read the same way.
"""

from __future__ import annotations

import base64
import json

#: The folder of a run's artifacts that repro writes.
ARTIFACT_DIR = "repro"
#: The bundle's name under :data:`ARTIFACT_DIR`.
BUNDLE = "record.json"
#: Files kept as artifacts of their own.
SEPARATE = frozenset({"diff.patch", "notebook.ipynb"})
_FORMAT = 1


def pack(files: dict[str, bytes]) -> dict[str, bytes]:
    """The artifacts to store for ``files`` (name -> content): the separate ones as they
    are, the rest in :data:`BUNDLE`.

    >>> sorted(pack({"diff.patch": b"-a\\n+b\\n", "packages.txt": b"x==1\\n"}))
    ['diff.patch', 'record.json']
    >>> pack({})
    {}
    """
    out = {name: content for name, content in files.items() if name in SEPARATE}
    bundled = {name: _encode(name, content) for name, content in sorted(files.items())
               if name not in SEPARATE}
    if bundled:
        doc = {"repro_record": _FORMAT,
               "about": "files repro recorded for this run; `repro show RUN_ID --file NAME` "
                        "prints one",
               "files": bundled}
        out[BUNDLE] = json.dumps(doc, indent=1, ensure_ascii=False).encode()
    return out


def unpack(raw: bytes) -> dict[str, bytes]:
    """The files inside a :data:`BUNDLE` ({} when it is not one).

    >>> files = {"packages.txt": b"a==1\\nb==2\\n", "environment.json": b'{"k": 1}',
    ...          "editables.patch": b"\\xff\\x00"}
    >>> unpack(pack(files)[BUNDLE])["packages.txt"]
    b'a==1\\nb==2\\n'
    >>> json.loads(unpack(pack(files)[BUNDLE])["environment.json"])
    {'k': 1}
    >>> unpack(pack(files)[BUNDLE])["editables.patch"]
    b'\\xff\\x00'
    >>> unpack(b"not json")
    {}
    """
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        return {}
    out = {}
    for name, value in doc["files"].items():
        content = _decode(value)
        if content is not None:
            out[str(name)] = content
    return out


def _encode(name: str, content: bytes) -> object:
    if name.endswith((".json", ".ipynb")):
        try:
            return {"json": json.loads(content)}
        except ValueError:
            pass
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(content).decode("ascii")}
    return {"lines": text.split("\n")}


def _decode(value: object) -> bytes | None:
    if not isinstance(value, dict):
        return None
    if "lines" in value and isinstance(value["lines"], list):
        return "\n".join(str(line) for line in value["lines"]).encode("utf-8")
    if "json" in value:
        return json.dumps(value["json"], indent=2, sort_keys=True, ensure_ascii=False).encode()
    if isinstance(value.get("base64"), str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except ValueError:
            return None
    return None
