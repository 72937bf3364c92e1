#!/usr/bin/env python3
"""Run ``atelier render values`` for Terraform's ``external`` data source.

Rule this script keeps: it renders nothing itself. It reads the query Terraform sends
on standard input (a JSON object of strings: atelier, profiles, schema, cluster_yaml,
deployment_json), writes the two settings files to a private temporary folder, runs
the atelier CLI on them and answers ``{"values": "<the values file>"}`` on standard
output, the one shape the protocol allows (an object of strings). Any failure exits
non-zero with the CLI's own message on standard error, which Terraform shows.

Standard library only: it runs with whatever ``python3`` Terraform finds.
ref: https://registry.terraform.io/providers/hashicorp/external/latest/docs/data-sources/external#external-program-protocol
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

FIELDS = ("atelier", "profiles", "schema", "cluster_yaml", "deployment_json")


def fail(msg: str) -> None:
    print(f"render_values.py: {msg}", file=sys.stderr)
    raise SystemExit(1)


def render(query: dict[str, str]) -> str:
    """The values text for one query (what ``atelier render values --out`` writes)."""
    missing = [f for f in FIELDS if f not in query]
    if missing:
        fail(f"the query lacks {', '.join(missing)}; pass the values module's `query` output unchanged")
    command = shlex.split(query["atelier"])
    if not command:
        fail("query.atelier is empty; set the atelier module's atelier_command (e.g. .venv/bin/atelier)")
    with tempfile.TemporaryDirectory(prefix="atelier-values-") as tmp:
        cluster, deployment, out = Path(tmp, "cluster.yaml"), Path(tmp, "deployment.json"), Path(tmp, "values.yaml")
        cluster.write_text(query["cluster_yaml"])
        deployment.write_text(query["deployment_json"])
        args = [*command, "render", "values", "--profiles", query["profiles"],
                "--cluster", str(cluster), "--deployment", str(deployment), "--out", str(out)]
        if query["schema"]:
            args += ["--schema", query["schema"]]
        try:
            done = subprocess.run(args, capture_output=True, text=True)
        except OSError as exc:
            fail(f"cannot run {command[0]!r} ({exc.strerror}); set atelier_command to the atelier CLI's path")
        if done.returncode != 0:
            fail(f"`atelier render values` exited {done.returncode}:\n{done.stderr.strip()}")
        return out.read_text()


def main() -> None:
    try:
        query = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        fail(f"standard input is not the JSON object Terraform sends: {exc}")
    if not isinstance(query, dict):
        fail("standard input must be a JSON object")
    json.dump({"values": render(query)}, sys.stdout)


if __name__ == "__main__":
    main()
