"""The Kubernetes tools come out of their one Go build as the releases the module pins:
each reports its own version (set by the build's -X flags where the release's own build
sets it), so a wrong flag, a dropped package or a stale binary shows here. helm is the
chart tests' (control_plane.helm_path())."""

from __future__ import annotations

import subprocess

import pytest
from control_plane import control_plane_paths, helm_path, missing_binaries

pytestmark = pytest.mark.k8s

# What each binary must say about itself: the versions tests/k8s/gomod/go.mod names.
EXPECTED = {
    "kube-apiserver": (["--version"], "Kubernetes v1.36.3"),
    "kube-controller-manager": (["--version"], "Kubernetes v1.36.3"),
    "kube-scheduler": (["--version"], "Kubernetes v1.36.3"),
    "kubelet": (["--version"], "Kubernetes v1.36.3"),
    "etcd": (["--version"], "etcd Version: 3.6.8"),
    "kwok": (["--version"], "kwok version v0.8.0"),
    "helm": (["version", "--template", "{{.Version}}"], "v4.2.4"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_tool_is_the_pinned_release(name):
    if missing_binaries():
        pytest.fail(f"not built: {missing_binaries()}; run `python3 tests/k8s/control_plane.py`", pytrace=False)
    args, expected = EXPECTED[name]
    out = subprocess.run([str(control_plane_paths()[name]), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # kwok adds its Go version and platform: the release is the line's start.
    assert out.stdout.splitlines()[0].strip().split(" go1.")[0] == expected


def test_helm_renders_a_chart(tmp_path):
    """The chart tests' helm works offline: `helm template` of a one-object chart."""
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n"
        "  greeting: {{ .Values.greeting | quote }}\n")
    out = subprocess.run([str(helm_path()), "template", "rel", str(chart), "--set", "greeting=hello"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "name: rel-cm" in out.stdout and 'greeting: "hello"' in out.stdout
