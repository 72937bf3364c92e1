"""The S3 server of the embedded stack, versitygw, built from the Go module proxy (once
per machine) by :mod:`.gobuild` from the module in ``gomod/versitygw``.

Rule this module keeps: standard library only; it names the tool, :mod:`.gobuild`
builds it the one way every Go tool is built. The binary's path is
:func:`atelier_hub.install.paths.tool_path` ``("versitygw")``, which runtime code reads.
"""

from __future__ import annotations

from pathlib import Path

from . import gobuild
from .paths import VERSITYGW_VERSION, tool_path

__all__ = ["go_group", "ensure_versitygw"]


def go_group() -> gobuild.GoGroup:
    """versitygw as a Go tool group (about 5 min cold on 2 busy cores, 45 MB).

    >>> go_group().paths()["versitygw"] == tool_path("versitygw")
    True
    """
    return gobuild.GoGroup(name=f"versitygw-{VERSITYGW_VERSION}", gomod=Path(__file__).with_name("gomod") / "versitygw",
                           binaries={"versitygw": "github.com/versity/versitygw/cmd/versitygw"},
                           out=tool_path("versitygw").parent, xflags=(f"main.Version={VERSITYGW_VERSION}",),
                           expect="5 min cold, once per machine", retry="make install")


def ensure_versitygw() -> None:
    gobuild.build(go_group())
