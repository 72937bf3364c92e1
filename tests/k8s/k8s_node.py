"""Test harness: one real node (kubelet + containerd) beside kwok's simulated ones.

Rule this module keeps: the node runs real pods without changing the shared host.
kubelet, left alone, rewrites kernel settings (``vm.overcommit_memory``,
``kernel.panic``, ``kernel.panic_on_oops``, ...) and adds iptables rules; here
containerd and kubelet run in a private mount namespace (``unshare -m``) where files
of this run are bind-mounted over those ``/proc/sys`` entries (kubelet's writes land there),
the paths both hard-code (``/var/lib/kubelet``, ``/var/log/pods``,
``/var/log/containers``, ``/run/containerd``) are this run's folders, and neither has
``/usr/sbin`` on its PATH (kubelet then finds no iptables; runc is named by its full
path). The only network is CNI's ``loopback`` plugin, so only ``hostNetwork`` pods run,
on 127.0.0.1, each on its own port. Images come from the local Docker engine
(``docker save`` piped to ``ctr images import``): no registry, ``imagePullPolicy:
Never``. Pods are deleted before kubelet and containerd stop; processes are stopped by
their own PID. ref: ../shared/RECIPES.md, "A real node".
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import textwrap
import time
from pathlib import Path

from atelier_hub.embedded.engine import docker_host
from atelier_hub.install.paths import cache_dir
from k8s_cluster import ControlPlane, Processes, _openssl, free_port, write_kubeconfig

NODE_NAME = "127.0.0.1"  # --hostname-override: the node's InternalIP then is 127.0.0.1
POOL = "real"
# Keeps every pod that does not ask for the real node (all of test_k8s_spawn's) on kwok.
TAINT = {"key": "atelier.dev/real-node", "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
PAUSE_IMAGE = "docker.io/library/atelier-pause:v1.36.3"
CTR_NAMESPACE = "k8s.io"  # the one containerd's CRI plugin (hence kubelet) sees
# What kubelet's container manager sets (pkg/kubelet/cm, setupKernelTunables). The
# files bind-mounted over these entries start with the host's values; kubelet's writes
# land in them (RealNode.caught_sysctls shows what it wrote), never in the kernel.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
HARD_CODED_DIRS = ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/containerd")
# No /usr/sbin, no /sbin: kubelet skips its iptables setup when it finds no iptables.
NODE_PATH = "/usr/local/bin:/usr/bin:/bin"


def node_pki(pki: Path) -> None:
    """The kubelet's client identity (``system:node:NAME`` in ``system:nodes``) and its
    serving certificate for 127.0.0.1, signed by the cluster's CA."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    certs = {
        "kubelet-client": (f"/O=system:nodes/CN=system:node:{NODE_NAME}", "extendedKeyUsage=clientAuth\n"),
        "kubelet-serving": (f"/CN={NODE_NAME}", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
    }
    for name, (subject, ext) in certs.items():
        (pki / f"{name}.ext").write_text(ext)
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=pki)


def containerd_config(*, root: Path, state: Path, socket: Path, cni_conf: Path) -> str:
    return textwrap.dedent(f"""\
        version = 2
        root = "{root}"
        state = "{state}"
        disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                            "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
        [grpc]
          address = "{socket}"
        [ttrpc]
          address = "{socket}.ttrpc"
        [metrics]
          address = ""
        [plugins."io.containerd.grpc.v1.cri"]
          sandbox_image = "{PAUSE_IMAGE}"
          # Root here lacks CAP_SYS_RESOURCE: without it every sandbox fails in runc
          # ("can't get final child's PID from pipe").
          restrict_oom_score_adj = true
          stream_server_address = "127.0.0.1"
          stream_server_port = "0"
          [plugins."io.containerd.grpc.v1.cri".containerd]
            snapshotter = "overlayfs"
            default_runtime_name = "runc"
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
              runtime_type = "io.containerd.runc.v2"
              [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
                BinaryName = "/usr/sbin/runc"
                SystemdCgroup = false
          [plugins."io.containerd.grpc.v1.cri".cni]
            bin_dir = "/usr/lib/cni"
            conf_dir = "{cni_conf}"
        """)


CNI_LOOPBACK = json.dumps({"cniVersion": "0.4.0", "name": "atelier-loopback",
                           "plugins": [{"type": "loopback"}]})


def kubelet_config(*, pki: Path, socket: Path, port: int, healthz_port: int, cgroup_root: str) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "containerRuntimeEndpoint": f"unix://{socket}",
        # This machine's cgroups are v1 (hybrid): kubelet refuses them unless told.
        "failCgroupV1": False, "failSwapOn": False,
        "cgroupDriver": "cgroupfs", "cgroupRoot": cgroup_root,
        "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"x509": {"clientCAFile": str(pki / "ca.crt")}, "webhook": {"enabled": True},
                           "anonymous": {"enabled": False}},
        "authorization": {"mode": "Webhook"},
        # The shared disk is nearly full and other programs use its memory: no evictions
        # and no image garbage collection (the base image would go).
        "evictionHard": {}, "imageGCHighThresholdPercent": 100,
        "registerWithTaints": [TAINT],
        "maxPods": 8,
    }


class RealNode:
    """containerd + kubelet registered as node ``127.0.0.1`` with the control plane."""

    def __init__(self, cp: ControlPlane, binaries: dict[str, Path], workdir: Path, logdir: Path):
        self.cp = cp
        self.bin = binaries
        self.dir = workdir
        self.logdir = logdir
        self.pki = cp.pki
        # Imported images are kept between runs (the base image is ~3 GB): containerd's
        # root lives in the cache, one node at a time (the lock).
        self.root = cache_dir() / "k8s-node" / "containerd"
        self.socket = workdir / "containerd.sock"
        self.cgroup_root = f"/atelier-test-node-{secrets.token_hex(3)}"
        self.holder: subprocess.Popen | None = None
        self.processes = Processes(logdir, workdir)
        self._lock = None

    # -- processes -----------------------------------------------------------------------

    def _in_namespace(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        """Start ``args`` inside the node's mount namespace (nsenter execs it: the PID is its own)."""
        return self.processes.launch(name, ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--", *args],
                                     env=env)

    def _wait(self, what: str, check, timeout: float = 120):
        return self.processes.wait(what, check, timeout, every=0.3)

    def _namespace(self) -> None:
        """A process that holds a private mount namespace with the overlays in place."""
        sysctl_dir = self.dir / "sysctl"
        mounts = []
        for entry in KUBELET_SYSCTLS:
            f = sysctl_dir / entry.replace("/", ".")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(Path("/proc/sys", entry).read_text())
            mounts.append(f"mount --bind {f} /proc/sys/{entry}")
        for path in HARD_CODED_DIRS:
            Path(path).mkdir(parents=True, exist_ok=True)  # an empty mount point on the host
            own = self.dir / "overlay" / path.strip("/").replace("/", "_")
            own.mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind {own} {path}")
        script = " && ".join([*mounts, "echo ready", "exec sleep infinity"])
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, text=True)
        first = self.holder.stdout.readline().strip()
        if first != "ready":
            rest = self.holder.stdout.read() if self.holder.poll() is not None else ""
            raise RuntimeError(f"the node's mount namespace could not be set up: {first} {rest}")

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> RealNode:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root.parent / ".lock", "w")
        deadline = time.monotonic() + 900
        while True:  # another test run's node holds containerd's root: wait for it
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another test run has held the real node's containerd ({self.root}) "
                                       "for 15 min; let it finish") from None
                time.sleep(2)
        node_pki(self.pki)
        self._rbac()
        cni = self.dir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-loopback.conflist").write_text(CNI_LOOPBACK)
        (self.dir / "containerd.toml").write_text(containerd_config(
            root=self.root, state=self.dir / "containerd-state", socket=self.socket, cni_conf=cni))
        self._make_cgroup_root()
        self._namespace()
        env = {"PATH": NODE_PATH, "HOME": str(self.dir), "LANG": "C.UTF-8"}
        self._start_containerd(env)
        self.import_image(self.pause_image(), PAUSE_IMAGE)
        kubeconfig = write_kubeconfig(self.dir / "kubelet.kubeconfig", server=self.cp.server, pki=self.pki,
                                      who="kubelet-client")
        (self.dir / "kubelet.json").write_text(json.dumps(kubelet_config(
            pki=self.pki, socket=self.socket, port=free_port(), healthz_port=free_port(),
            cgroup_root=self.cgroup_root)))
        self._in_namespace("kubelet", [
            str(self.bin["kubelet"]), f"--config={self.dir / 'kubelet.json'}", f"--kubeconfig={kubeconfig}",
            f"--hostname-override={NODE_NAME}", f"--node-labels=atelier.dev/pool={POOL},type=real", "--v=1",
        ], env)
        k = self.cp.admin
        self._wait("the real node Ready", lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in ((k.maybe(f"/api/v1/nodes/{NODE_NAME}") or {}).get("status", {}).get("conditions") or [])))
        self.ready_s = time.monotonic() - t0
        return self

    def _start_containerd(self, env: dict) -> None:
        self._in_namespace("containerd", ["/usr/bin/containerd", "--config", str(self.dir / "containerd.toml")],
                           env)
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, timeout=60)

    def _rbac(self) -> None:
        """No Node authorizer here (RBAC only): the node identity gets ``system:node``;
        the API server's kubelet client may use the kubelet API (exec, logs)."""
        k = self.cp.admin
        crb = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
        k.create(crb, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "atelier-test-nodes"},
            "subjects": [{"kind": "Group", "name": "system:nodes", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "ClusterRole", "name": "system:node", "apiGroup": "rbac.authorization.k8s.io"},
        })
        k.create(crb, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "atelier-test-apiserver-kubelet"},
            "subjects": [{"kind": "User", "name": "kube-apiserver-kubelet-client",
                          "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "ClusterRole", "name": "system:kubelet-api-admin",
                        "apiGroup": "rbac.authorization.k8s.io"},
        })

    # -- images ----------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", str(self.socket), "-n", CTR_NAMESPACE, *args],
                              check=check, capture_output=True, **kw)

    def pause_image(self) -> str:
        """The sandbox image: the static ``pause`` binary alone, imported into Docker
        once per binary (labelled with its hash, so no run leaves an old copy behind)."""
        ref = PAUSE_IMAGE.removeprefix("docker.io/library/")
        digest = hashlib.sha256(self.bin["pause"].read_bytes()).hexdigest()[:16]
        label = '{{index .Config.Labels "dev.atelier.pause"}}'
        r = subprocess.run(["docker", "image", "inspect", "--format", label, ref], capture_output=True, text=True,
                           env={**os.environ, "DOCKER_HOST": docker_host()})
        if r.returncode == 0 and r.stdout.strip() == digest:
            return ref
        tar = subprocess.run(["tar", "-C", str(self.bin["pause"].parent), "-c", "pause"], check=True,
                             capture_output=True).stdout
        _docker("import", "--change", 'ENTRYPOINT ["/pause"]', "--change", f"LABEL dev.atelier.pause={digest}",
                "-", ref, input=tar)
        return ref

    def import_image(self, ref: str, name: str | None = None) -> float:
        """``docker save REF | ctr images import``, unless containerd already holds this
        very image (same Docker image ID, recorded beside containerd's root). Seconds taken."""
        t0 = time.monotonic()
        image_id = _docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.decode().strip()
        stamps_file = self.root.parent / "imported.json"
        stamps = json.loads(stamps_file.read_text()) if stamps_file.exists() else {}
        # ref -> manifest digest, from `ctr images ls` (REF TYPE DIGEST ...).
        digests = dict(line.split()[::2][:2] for line in self.ctr("images", "ls").stdout.decode().splitlines()[1:])
        listed = list(digests)
        name = name or (ref if "/" in ref else f"docker.io/library/{ref}")
        if stamps.get(name) == image_id and name in listed:
            return 0.0
        # An earlier build of the image: its layers go first (--sync: containerd's garbage
        # collection done), so the kept root holds one copy, not one per build. The CRI
        # plugin keeps a second reference to it by image ID (``sha256:...``): every
        # reference to the old manifest goes, or its layers stay (4 GB for base).
        stale = [ref for ref, digest in digests.items() if name in digests and digest == digests[name]]
        if stale:
            self.ctr("images", "rm", "--sync", *stale)
        env = {**os.environ, "DOCKER_HOST": docker_host()}
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE, env=env)
        r = subprocess.run(["ctr", "--address", str(self.socket), "-n", CTR_NAMESPACE, "images", "import",
                            "--snapshotter", "overlayfs", "-"], stdin=save.stdout, capture_output=True)
        save.stdout.close()
        if save.wait() or r.returncode:
            raise RuntimeError(f"importing {ref} into containerd failed: {r.stderr.decode()[-2000:]}")
        stamps[name] = image_id
        stamps_file.write_text(json.dumps(stamps, indent=1))
        return time.monotonic() - t0

    def pids(self) -> list[int]:
        """kubelet's and containerd's PIDs."""
        return [proc.pid for proc in self.processes.running()]

    def caught_sysctls(self) -> dict[str, str]:
        """The values in the files over ``/proc/sys``: what kubelet set, host untouched."""
        return {entry: (self.dir / "sysctl" / entry.replace("/", ".")).read_text().strip()
                for entry in KUBELET_SYSCTLS}

    def pod_cgroup(self, pod_uid: str, controller: str = "memory") -> list[Path]:
        """The cgroup folders of a pod's containers on this node (cgroupfs driver)."""
        base = Path("/sys/fs/cgroup") / controller / self.cgroup_root.strip("/")
        return [p for p in base.rglob(f"pod{pod_uid}/*") if p.is_dir()]

    # -- stopping ----------------------------------------------------------------------------

    def delete_pods(self, timeout: float = 120) -> None:
        """Every pod on this node deleted and gone (kubelet stops its containers)."""
        k = self.cp.admin
        selector = {"fieldSelector": f"spec.nodeName={NODE_NAME}"}
        for pod in k.get("/api/v1/pods", params=selector)["items"]:
            md = pod["metadata"]
            k.request("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}",
                      json={"gracePeriodSeconds": 5})
        k.wait("the real node's pods to go", lambda: not k.get("/api/v1/pods", params=selector)["items"],
               timeout=timeout)

    def stop(self) -> None:
        """Pods first, then kubelet, containerd and the namespace holder, each by PID;
        then the node object and the empty cgroups kubelet made."""
        try:
            if self.processes.running("kubelet"):
                self.delete_pods()
        finally:
            self.processes.stop(20)
            self._end_shims()
            if self.holder and self.holder.poll() is None:
                self.holder.kill()
                self.holder.wait(5)
            self.cp.admin.request("DELETE", f"/api/v1/nodes/{NODE_NAME}")
            self._remove_cgroups()
            if self._lock:
                self._lock.close()

    def _end_shims(self) -> None:
        """containerd-shim-runc-v2 processes of this node's containerd (they outlive it
        by design): found by the containerd socket on their command line, ended by PID."""
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(self.socket).encode() in argv:
                try:
                    os.kill(int(cmdline.parent.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _make_cgroup_root(self) -> None:
        """kubelet wants its cgroupRoot to exist in every v1 hierarchy (cpuset's with the
        CPUs and memory nodes of the root, which v1 does not copy by itself)."""
        for controller in Path("/sys/fs/cgroup").iterdir():
            if controller.name == "unified" or not controller.is_dir():
                continue
            own = controller / self.cgroup_root.strip("/")
            own.mkdir(exist_ok=True)
            if controller.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (own / f).write_text((controller / f).read_text())

    def _remove_cgroups(self) -> None:
        for controller in Path("/sys/fs/cgroup").iterdir():
            base = controller / self.cgroup_root.strip("/")
            if not base.is_dir():
                continue
            for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                base.rmdir()
            except OSError:
                pass


def listening(*, pids: list[int] | None = None, port: int | None = None) -> set[str]:
    """``ADDRESS:PORT`` of every TCP socket in LISTEN state held by ``pids`` (all of them
    when None), or on ``port``: read from /proc, as ``ss -ltnp`` would show them."""
    inodes: set[str] | None = None
    if pids is not None:
        inodes = set()
        for pid in pids:
            for fd in Path(f"/proc/{pid}/fd").glob("*"):
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or (inodes is not None and inode not in inodes):
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc/net/tcp* hold each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = str(ipaddress.ip_address(raw))
            if port is None or int(port_hex, 16) == port:
                found.add(f"{address}:{int(port_hex, 16)}")
    return found


def _docker(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(["docker", *args], env={**os.environ, "DOCKER_HOST": docker_host()}, input=input,
                       capture_output=True)
    if r.returncode:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {r.stderr.decode()[-1000:]}")
    return r
