"""Every Go tool is built one way (atelier_hub/install/gobuild.py): one toolchain, one
set of flags, a committed go.sum per module, binaries stamped with their inputs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from atelier_hub.install import _steps, gobuild, versitygw

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "k8s"))
sys.path.insert(0, str(REPO / "tests" / "terraform"))
import control_plane  # noqa: E402
import terraform_tools  # noqa: E402


def all_groups() -> list[gobuild.GoGroup]:
    return [versitygw.go_group(), control_plane.go_group(), control_plane.kuberay_group(), control_plane.kueue_group(),
            *terraform_tools.go_groups().values()]


def test_every_go_module_of_the_repository_is_built_by_a_group():
    """A go.mod nobody builds (or a tool built some other way) shows here."""
    modules = {p.parent for p in REPO.glob("**/go.mod") if ".venv" not in p.parts and "node_modules" not in p.parts}
    assert modules == {g.gomod for g in all_groups()}


@pytest.mark.parametrize("group", all_groups(), ids=lambda g: g.name)
def test_each_module_pins_its_sums_names_what_is_built_and_fits_the_one_toolchain(group):
    # -mod=readonly needs the committed go.sum: without it the build would re-resolve.
    assert (group.gomod / "go.sum").stat().st_size > 0
    assert gobuild.go_env(group.gomod)["GOFLAGS"] == "-mod=readonly -buildvcs=false -trimpath"
    imports = set(re.findall(r'_ "([^"]+)"', (group.gomod / "tools.go").read_text()))
    assert imports == set(group.binaries.values())
    need = re.search(r"^go (\d+)\.(\d+)(?:\.(\d+))?$", (group.gomod / "go.mod").read_text(), re.M).groups()
    have = re.fullmatch(r"go(\d+)\.(\d+)\.(\d+)", gobuild.GO_TOOLCHAIN).groups()
    assert tuple(int(x or 0) for x in need) <= tuple(map(int, have)), "go.mod asks for a newer Go than GO_TOOLCHAIN"


def test_the_flags_are_the_same_everywhere():
    env = gobuild.go_env(None)
    assert env["CGO_ENABLED"] == "0" and env["GOTOOLCHAIN"] == gobuild.GO_TOOLCHAIN and env["GOBIN"] == ""
    for group in all_groups():
        assert group.ldflags().startswith("-s -w")


def test_the_kubernetes_tools_are_one_build():
    """The shared packages compile once: one group holds the control plane, kwok and helm."""
    assert set(control_plane.go_group().binaries) == {
        "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "etcd", "kwok", "helm"}
    assert control_plane.helm_path().name == "helm"


def test_a_changed_module_is_rebuilt_and_an_unchanged_one_is_not(tmp_path):
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "go.mod").write_text("module x\n\ngo 1.26.0\n")
    (mod / "go.sum").write_text("")
    (mod / "tools.go").write_text('package tools\n\nimport _ "example.com/tool"\n')
    group = gobuild.GoGroup(name="x", gomod=mod, binaries={"tool": "example.com/tool"}, out=tmp_path / "out")
    assert not group.built()
    group.out.mkdir()
    (group.out / "tool").write_text("#!/bin/sh\n")
    (group.out / "tool").chmod(0o755)
    (group.out / ".go-inputs").write_text(group.stamp() + "\n")
    assert group.built()
    (mod / "go.sum").write_text("example.com/tool v1.0.1 h1:x=\n")
    assert not group.built()


def test_the_install_breakdown_lists_the_slowest_step_first(tmp_path, monkeypatch):
    times = tmp_path / "times.jsonl"
    monkeypatch.setenv("ATELIER_INSTALL_TIMES", str(times))
    monkeypatch.setenv("ATELIER_INSTALL_LANE", "go")
    _steps.run([sys.executable, "-c", "pass"], what="a quick step")
    _steps.record("a slow step", 600)
    sys.path.insert(0, str(REPO / "tests"))
    import install

    lines = install.breakdown(times)
    assert lines[0] == "  10.0 min  [go] a slow step"
    assert lines[1].endswith("[go] a quick step")


def test_an_unknown_image_is_refused_by_name():
    """`python3 -m atelier_hub.install --images` names the field and the choices."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "atelier_hub.install", "--images", "base,hubb"], cwd=REPO,
                       env={"PYTHONPATH": str(REPO / "hub"), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert r.returncode == 2
    assert "--images: unknown image hubb; choose among base, hub, gpu" in r.stderr
