"""The package list: METADATA header parsing, discovery on a path, caching."""

from __future__ import annotations

import importlib.metadata
import os
import time
from pathlib import Path

import pytest

from repro import _packages


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the usual order: Metadata-Version, Name, Version
        ("Metadata-Version: 2.1\nName: numpy\nVersion: 2.1.0\nSummary: x\n", ("numpy", "2.1.0")),
        # Version before Name
        ("Metadata-Version: 2.1\nVersion: 1.0\nName: foo\n", ("foo", "1.0")),
        # header names are case-insensitive, values are stripped
        ("name:  Foo-Bar \nVERSION: 3\n", ("Foo-Bar", "3")),
        # folded header lines (continuations) are skipped
        ("Metadata-Version: 2.1\nLicense: a\n  long\nName: x\nVersion: 1\n", ("x", "1")),
        # the body starts after the first blank line: a "Name:" there is description
        ("Metadata-Version: 2.1\nName: real\n\nVersion: 9\n", None),
        # Windows line endings
        ("Metadata-Version: 2.1\r\nName: win\r\nVersion: 0.1\r\n\r\n", ("win", "0.1")),
        # no Version at all
        ("Name: broken\n", None),
    ],
)
def test_parse_metadata_header(text: str, expected: tuple[str, str] | None) -> None:
    assert _packages.parse_metadata_header(text) == expected


def _dist(site: Path, name: str, version: str, *, egg: bool = False) -> None:
    if egg:
        (site / f"{name}-{version}.egg-info").mkdir(parents=True)
        (site / f"{name}-{version}.egg-info" / "PKG-INFO").write_text(
            f"Metadata-Version: 1.0\nName: {name}\nVersion: {version}\n"
        )
        return
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: not-this\n"
    )


def test_first_on_the_path_wins_like_imports(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _dist(first, "Foo-Bar", "2.0")
    _dist(second, "foo_bar", "1.0")
    _dist(second, "legacy", "0.3", egg=True)
    (second / "not-a-dist").mkdir()
    found = _packages.installed_packages([str(first), str(second), str(tmp_path / "missing")])
    assert found == [("Foo-Bar", "2.0"), ("legacy", "0.3")]


def test_matches_importlib_metadata() -> None:
    ours = {_packages.normalize_name(n): v for n, v in _packages.installed_packages()}
    theirs: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        theirs.setdefault(_packages.normalize_name(dist.metadata["Name"]), dist.version)
    assert ours == theirs


def test_cache_follows_installs(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _dist(site, "a", "1")
    assert _packages.installed_packages([str(site)]) == [("a", "1")]
    _dist(site, "b", "2")
    # a new *.dist-info folder changes the folder's mtime; make sure it differs
    os.utime(site, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert _packages.installed_packages([str(site)]) == [("a", "1"), ("b", "2")]


def test_format_parse_compare_roundtrip() -> None:
    text = _packages.format_packages([("NumPy", "2.1.0"), ("torch", "2.5.1")])
    assert _packages.parse_packages(text) == {"numpy": "2.1.0", "torch": "2.5.1"}
    assert _packages.compare_packages({"numpy": "2.1.0"}, {"numpy": "2.2.0"}) == [
        ("numpy", "2.1.0", "2.2.0")
    ]


def test_packages_from_the_user_site_are_marked_and_still_read_as_name_version(tmp_path: Path) -> None:
    """Atelier's user layer (a user site-packages before the image's): a distribution
    found there at the winning version is marked; one the image's copy shadows is not."""
    user, image = tmp_path / "user", tmp_path / "image"
    _dist(user, "tabulate", "0.9.0")
    _dist(user, "idna", "3.6")
    _dist(image, "idna", "3.20")
    _dist(image, "pandas", "2.3.3")
    found = _packages.installed_packages([str(user), str(image)])
    marked = _packages.user_layer_names(found, folder=str(user))
    assert marked == {"tabulate", "idna"}
    text = _packages.format_packages(found, marked)
    assert "tabulate==0.9.0  # user layer\n" in text and "pandas==2.3.3\n" in text
    assert _packages.parse_packages(text) == {"idna": "3.6", "pandas": "2.3.3", "tabulate": "0.9.0"}
    assert _packages.user_marked(text) == {"idna", "tabulate"}
    # the image's copy first on the path: the user's is not what runs
    assert _packages.user_layer_names(_packages.installed_packages([str(image), str(user)]),
                                      folder=str(user)) == {"tabulate"}
