"""Pure parts of container mode: names, the services seen from an image, the endpoints
a session's relay opens, image inputs, the engine's flags and what each image's build
context holds; and the relay itself, between a real network namespace and the host."""

from __future__ import annotations

import doctest
import fnmatch
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from atelier_hub.embedded import container_spawner, engine, netns_relay
from atelier_hub.embedded.container_spawner import container_services, forwarded_endpoints, stack_id
from atelier_hub.install import docker as install_docker
from atelier_hub.services import Services
from atelier_hub.services._process import PARENT_PID_VAR, free_port, wait_for
from atelier_hub.services.culler import CullerService
from atelier_hub.services.mlflow import MLflowService
from atelier_hub.services.s3 import S3Service
from atelier_hub.services.spark import SparkService
from atelier_hub.services.trino import TrinoService

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", [container_spawner, engine, install_docker, netns_relay])
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


def test_a_session_relay_opens_each_loopback_endpoint_of_the_contract_once_and_nothing_else():
    services = container_services(Services(
        s3=S3Service(endpoint_url="http://127.0.0.1:9000", bucket="b"),
        mlflow=MLflowService(tracking_uri="http://127.0.0.1:8000/services/mlflow", auth="hub"),
        culler=CullerService(url="http://127.0.0.1:8000/services/culler"),  # the same proxy port: once
        trino=TrinoService(url="http://127.0.0.2:8090"),  # another loopback address is kept as it is
        spark=SparkService(jars=["/cache/x.jar"], local_ip="127.0.0.1"),  # an address without a port: nothing
    ))
    urls = ["http://127.0.0.1:8081/hub/api", "https://hub.example.org/", "http://10.0.0.5:80/", ""]
    assert forwarded_endpoints(services, urls=urls) == [
        ("127.0.0.1", 8000), ("127.0.0.1", 8081), ("127.0.0.1", 9000), ("127.0.0.2", 8090)]


@pytest.mark.parametrize("text", ["0.0.0.0:80", "172.17.0.1:80", "localhost:80", "127.0.0.1:0", "127.0.0.1"])
def test_the_relay_refuses_any_address_off_loopback(text):
    with pytest.raises(ValueError):
        netns_relay.parse_endpoint(text)


def test_the_relay_refuses_a_process_on_the_host_s_own_network():
    """Joining the host's namespace would listen "inside" on the host: refused, saying why."""
    env = {**os.environ, PARENT_PID_VAR: str(os.getpid()), "PYTHONPATH": str(REPO / "hub")}
    r = subprocess.run([sys.executable, "-m", "atelier_hub.embedded.netns_relay", "--pid", str(os.getpid()),
                        "--outward", f"127.0.0.1:{free_port()}"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "on the host's own network" in r.stderr and "--network none" in r.stderr, r.stderr


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = f"{self.server.word} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _in_netns(pid: int, code: str) -> str:
    """Run Python ``code`` in the network namespace of ``pid`` (nsenter), return stdout."""
    return subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60, check=True).stdout


GET = ("import sys, urllib.request\n"
       "try:\n    print(urllib.request.urlopen('http://{host}:{port}/x', timeout=5).read().decode())\n"
       "except OSError as e:\n    print('refused', e)\n")


CONNECT = ("import socket\n"
           "s = socket.create_connection(('127.0.0.1', {port}), timeout=10)\n"
           "s.sendall(b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n')\n"
           "print(s.recv(4096).decode())\n")


@pytest.mark.skipif(os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "nsenter", "ip"))),
                    reason="needs root, unshare, nsenter and ip (a network namespace of its own with lo up, "
                           "as Docker's --network none makes)")
def test_the_relay_joins_a_namespace_to_the_host_loopback_both_ways_and_nothing_else(tmp_path):
    """A real namespace with only lo (what ``--network none`` gives a container): the relay
    lets it reach one host port, lets the host reach one port inside, and nothing else."""
    host_port, other_port, inside_port, egress_port = free_port(), free_port(), free_port(), free_port()
    servers = []
    for port, word in ((host_port, "host-service"), (other_port, "not-forwarded")):
        server = ThreadingHTTPServer(("127.0.0.1", port), _Hello)
        server.word = word
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    inside = subprocess.Popen(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {sys.executable} "
                               f"-m http.server --bind 127.0.0.1 {inside_port}"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (tmp_path / "x").write_text("inside-server")
    relay = None
    try:
        wait_for(lambda: "inside-server" in _in_netns(inside.pid, GET.format(host="127.0.0.1", port=inside_port)),
                 timeout=30, what="the server inside the namespace")
        env = {**os.environ, PARENT_PID_VAR: str(os.getpid()), "PYTHONPATH": str(REPO / "hub")}
        relay = subprocess.Popen(
            [sys.executable, "-m", "atelier_hub.embedded.netns_relay", "--pid", str(inside.pid), "--name", "unit",
             "--inward", f"127.0.0.1:{host_port}", "--outward", f"127.0.0.1:{inside_port}",
             "--egress", f"127.0.0.1:{egress_port}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert relay.stdout.readline().strip() == netns_relay.READY, relay.stderr.read()
        # Inside -> host: the forwarded port answers at the same address; another does not.
        assert _in_netns(inside.pid, GET.format(host="127.0.0.1", port=host_port)).strip() == "host-service /x"
        assert _in_netns(inside.pid, GET.format(host="127.0.0.1", port=other_port)).startswith("refused")
        # Host -> inside: the server's port, through the relay's listener on the host.
        with socket.create_connection(("127.0.0.1", inside_port), timeout=10) as s:
            s.sendall(b"GET /x HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.endswith(b"inside-server"), reply
        # The egress proxy inside refuses this machine (a port the relay does not forward
        # included) and a private address, before connecting, saying why.
        for target in (f"127.0.0.1:{other_port}", f"localhost:{host_port}", "10.1.2.3:80", "[::1]:22"):
            answer = _in_netns(inside.pid, CONNECT.format(port=egress_port, target=target))
            assert answer.startswith("HTTP/1.1 403") and "not a public address" in answer, (target, answer)
        # The container's first process gone: the relay ends by itself.
        inside.kill()
        inside.wait()
        assert relay.wait(15) == 0
        assert "the session's container is gone" in relay.stderr.read()
    finally:
        for proc in (relay, inside):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for server in servers:
            server.shutdown()
            server.server_close()


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


def test_the_proxy_image_is_rebuilt_for_another_chp_version(monkeypatch):
    """images/proxy installs configurable-http-proxy at the embedded mode's pinned version
    (a build argument): a new pin is a new image."""
    h = install_docker.image_inputs_hash("proxy", base="sha256:one")
    assert install_docker.IMAGE_BUILD_ARGS["proxy"] == {"CHP_VERSION": "5.3.0"}
    monkeypatch.setitem(install_docker.IMAGE_BUILD_ARGS, "proxy", {"CHP_VERSION": "5.3.1"})
    assert install_docker.image_inputs_hash("proxy", base="sha256:one") != h
