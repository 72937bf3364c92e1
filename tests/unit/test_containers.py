"""Pure parts of container mode: names, the services seen from an image, image inputs,
the engine's flags and what each image's build context holds."""

from __future__ import annotations

import doctest
import fnmatch
import re
from pathlib import Path

import pytest
from atelier_hub import container_spawner, engine
from atelier_hub.container_spawner import container_services, stack_id
from atelier_hub.install import docker as install_docker
from atelier_hub.settings import S3Service, Services, SparkService

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", [container_spawner, engine, install_docker])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0


def test_stack_ids_differ_per_state_folder_and_are_stable():
    assert stack_id("/a/state") == stack_id("/a/state")
    assert stack_id("/a/state") != stack_id("/b/state")


def test_container_services_move_spark_to_the_image_and_keep_the_rest():
    host = Services(s3=S3Service(endpoint_url="http://127.0.0.1:9000", bucket="b"),
                    spark=SparkService(jars=["/root/.cache/atelier/m2/a/hadoop-aws-3.5.0.jar"],
                                       java_home="/usr/lib/jvm/host-java", local_ip="127.0.0.1"))
    inside = container_services(host)
    assert inside.spark.jars == ["/opt/atelier/spark-jars/hadoop-aws-3.5.0.jar"]
    assert inside.spark.java_home == "/usr/lib/jvm/java-17-openjdk-amd64"
    assert inside.spark.local_ip == "127.0.0.1" and inside.s3 == host.s3
    assert host.spark.jars[0].startswith("/root/")  # the input is left as it was


def test_the_engine_never_gets_a_bridge_iptables_or_forwarding():
    flags = set(engine.ISOLATION_FLAGS)
    assert {"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false"} <= flags


def _dockerignore() -> list[str]:
    return [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]


def _included(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last match wins)."""
    keep = True
    for pattern in _dockerignore():
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat.rstrip("/") + "/") or (
                pat.startswith("**/") and any(fnmatch.fnmatch(part, pat[3:]) for part in path.split("/"))):
            keep = negate
    return keep


@pytest.mark.parametrize("name", ["base", "gpu", "hub"])
def test_every_file_an_image_copies_is_in_its_build_context(name):
    dockerfile = (REPO / "images" / name / "Dockerfile").read_text()
    sources = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert sources
    for src in sources:
        assert _included(src.rstrip("/")), f"images/{name}/Dockerfile copies {src}, which .dockerignore leaves out"
    assert not _included("state/admin-token") and not _included(".venv/bin/python")


@pytest.mark.parametrize("name", ["base", "hub"])
def test_every_from_is_a_digest_pinned_bookworm_tag_overridable_by_build_arg(name):
    dockerfile = (REPO / "images" / name / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-\d{8}@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert re.findall(r"^FROM .*$", dockerfile, re.M) == ["FROM ${BASE_IMAGE}"]


@pytest.mark.parametrize("name", ["base", "hub"])
def test_each_apt_package_says_what_needs_it(name):
    """Packages come in groups, each opened by a comment saying what needs them."""
    dockerfile = (REPO / "images" / name / "Dockerfile").read_text()
    block = re.search(r"apt-get install[^\n]*\\\n((?:[ \t]+(?:#.*|[a-z0-9.+-]+ \\)\n)+)", dockerfile).group(1)
    lines = [line.strip() for line in block.splitlines()]
    assert lines[0].startswith("#") and len(lines) >= 2
    for comment, nxt in zip(lines, lines[1:], strict=False):
        if comment.startswith("#"):
            assert len(comment) > 10 and not nxt.startswith("#"), comment


def test_image_inputs_hash_changes_with_an_input_and_with_the_base(tmp_path, monkeypatch):
    h = install_docker.image_inputs_hash("hub", base="sha256:one")
    assert h == install_docker.image_inputs_hash("hub", base="sha256:one")
    assert h != install_docker.image_inputs_hash("hub", base="sha256:two")
    lock = REPO / "images" / "hub" / "requirements.lock"
    original = lock.read_bytes()
    try:
        lock.write_bytes(original + b"# changed\n")
        assert install_docker.image_inputs_hash("hub", base="sha256:one") != h
    finally:
        lock.write_bytes(original)
