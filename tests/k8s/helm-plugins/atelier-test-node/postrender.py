#!/usr/bin/env python3
"""Post-renderer for the chart on the test cluster's loopback-only node.

The chart's proxy container gets ``--ip= --api-ip= --port=8000 --api-port=8001``:
every address of the machine (a hostNetwork pod's ports are the machine's) on fixed
ports. No value changes them, and repeating the flags in ``proxy.chp.extraCommandLineFlags``
does not work: configurable-http-proxy parses a repeated port as NaN and falls back to
8000. So this rewrites those four arguments of the proxy Deployment only: 127.0.0.1, on
the ports the test passes (``--post-renderer-args --proxy-port=P --proxy-api-port=A``).
Everything else the overlay (chart-overlay.yaml) sets through the chart's own values.
Reads the manifests on stdin, writes them on stdout, as JSON documents (JSON is YAML):
PyYAML's own output follows YAML 1.1, where a string such as the chart's
``checksum/auth-token: "0190"`` (four hex digits of a random token's hash) needs no
quotes, and helm, reading YAML 1.2, would take it for the number 190 and fail the install.
"""

import json
import sys

import yaml


def main() -> None:
    ports = dict(a.removeprefix("--").split("=", 1) for a in sys.argv[1:])
    wanted = {"--ip=": "--ip=127.0.0.1", "--api-ip=": "--api-ip=127.0.0.1",
              "--port=8000": f"--port={int(ports['proxy-port'])}",
              "--api-port=8001": f"--api-port={int(ports['proxy-api-port'])}"}
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    done = False
    for doc in docs:
        if doc.get("kind") != "Deployment" or doc["spec"]["template"]["metadata"]["labels"].get("component") != "proxy":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if container["name"] == "chp":
                missing = set(wanted) - set(container["args"])
                if missing:
                    sys.exit(f"atelier-test-node: the chart's proxy args changed; not found: {sorted(missing)}")
                container["args"] = [wanted.get(a, a) for a in container["args"]]
                done = True
    if not done:
        sys.exit("atelier-test-node: no proxy Deployment with a chp container in the chart's output")
    sys.stdout.write("".join(f"---\n{json.dumps(doc)}\n" for doc in docs))


if __name__ == "__main__":
    main()
