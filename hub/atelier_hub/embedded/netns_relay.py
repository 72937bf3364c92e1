"""A container session's own network, joined to the hub's loopback by one relay.

Rule this module keeps: a container session runs with Docker's ``--network none``, so
its network namespace holds only ``lo`` and no port it opens (kernels, Spark's UI,
sshd, Ray, code-server, anything a user starts) is reachable from another session or
from the machine. One relay process per session, run by the hub as root on the
host, is the only way in or out, and it opens exactly:

- inward, for each endpoint of the session contract (the hub's API, its public
  proxy, S3, Trino's front, ...): a listener on that loopback address and port
  *inside* the session's namespace, forwarding each connection to the same address
  and port of the host, so the session's environment names the same URLs as before;
- outward, the session's server: a listener on the host's 127.0.0.1:PORT forwarding
  to 127.0.0.1:PORT inside the namespace, for the hub and its proxy;
- egress, where asked (``--egress``): an HTTP proxy inside the namespace (the session's
  ``HTTPS_PROXY``) that opens connections to public addresses only, as a pod's network
  policy lets a session reach the internet but no private address. An address on
  loopback (another session's server, the hub's own ports), a private, link-local or
  reserved one (:data:`BLOCKED`) is refused (403) before any connection is tried.

Nothing else crosses, and only 127.0.0.0/8 is used on either side: no bridge, no
veth, no other address. A socket belongs for good to the network namespace of the
thread that created it: the relay's one helper thread enters the session's namespace
(setns(2)) and creates every inside socket; the main thread (the event loop) never
leaves the host's, and moves bytes for both.

The relay ends when its parent (the hub) dies, even by SIGKILL, when the container's
first process is gone, or on SIGTERM; the hub records it (``PID STARTTIME``, as the
services' groups in :mod:`.services._process`) so that ``end_leftovers`` can end it
after a hub killed hard. Standard library only.
ref: man 2 setns (CLONE_NEWNET moves the calling thread), man 7 network_namespaces

    python -m atelier_hub.embedded.netns_relay --pid PID --inward 127.0.0.1:8081 ... --outward 127.0.0.1:40123 \
        --egress 127.0.0.1:3128
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import struct
import sys
from concurrent.futures import ThreadPoolExecutor

from ..services._process import die_with_parent, start_time

__all__ = ["Endpoint", "parse_endpoint", "Relay", "main", "READY"]

CLONE_NEWNET = 0x40000000
#: the line the relay prints on stdout once every listener is bound
READY = "relay ready"
CHUNK = 256 * 1024

Endpoint = tuple[str, int]


def parse_endpoint(text: str) -> Endpoint:
    """``HOST:PORT`` with HOST in 127.0.0.0/8 (the only addresses the relay uses).

    >>> parse_endpoint("127.0.0.1:8081")
    ('127.0.0.1', 8081)
    >>> parse_endpoint("10.0.0.1:80")
    Traceback (most recent call last):
    ...
    ValueError: 10.0.0.1:80: the relay uses loopback addresses only (127.0.0.0/8)
    """
    host, _, port = text.rpartition(":")
    try:
        loopback = ipaddress.IPv4Address(host) in ipaddress.IPv4Network("127.0.0.0/8")
        number = int(port)
    except ValueError:
        raise ValueError(f"{text}: expected HOST:PORT, e.g. 127.0.0.1:8081") from None
    if not loopback:
        raise ValueError(f"{text}: the relay uses loopback addresses only (127.0.0.0/8)")
    if not 0 < number < 65536:
        raise ValueError(f"{text}: the port must be 1 to 65535")
    return host, number


def _endpoint_arg(text: str) -> Endpoint:
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _enter_netns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd`` (for good)."""
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)} (the relay must run as root)")


def _listener(endpoint: Endpoint) -> socket.socket:
    """A listening TCP socket, in the network namespace of the calling thread."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(endpoint)
        s.listen(128)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def _socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    return s


def _refuse(writer: asyncio.StreamWriter, status: int, why: str) -> None:
    """Answer a proxy request that is not served, saying why, and close."""
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = (why + "\n").encode()
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, so the client sees its peer refuse, as when nothing listens."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Copy both ways until both sides are done; an end of stream is passed on as a
    half-close (a request/response on one connection keeps working), a reset ends both."""
    writers = (a[1], b[1])

    async def one(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(CHUNK):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof() and not dst.is_closing():
                dst.write_eof()
        except OSError:  # a reset on either side: nothing more can cross
            for w in writers:
                w.transport.abort()

    await asyncio.gather(one(a[0], b[1]), one(b[0], a[1]))
    for w in writers:
        w.close()


#: the most a proxy request's head may take (its request line and headers)
HEAD_MAX = 16 * 1024


#: what the egress proxy never connects to: this machine (loopback: the hub's ports and
#: every other session's), private and shared networks (the LAN, a cloud's VPC),
#: link-local (a cloud's metadata service), multicast and reserved ranges. As a pod's
#: network policy has it (the chart's privateIPs and cloudMetadataServer rules).
BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8"))


def reachable(ip: str) -> bool:
    """Whether the egress proxy may connect to ``ip`` (IPv4-mapped IPv6 as its IPv4).

    >>> [reachable(a) for a in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "::ffff:192.168.1.1", "9.9.9.9")]
    [False, False, False, False, True]
    """
    address = ipaddress.ip_address(ip)
    if getattr(address, "ipv4_mapped", None) is not None:
        address = address.ipv4_mapped
    return not any(address in net for net in BLOCKED if net.version == address.version)


def public_address(host: str, port: int) -> str | None:
    """An address of ``host`` the egress proxy may connect to (:func:`reachable`), else
    None. Names are resolved here, on the host, and the address checked is the one
    connected to: a name cannot point the proxy at loopback.

    >>> public_address("127.0.0.1", 80), public_address("10.1.2.3", 80), public_address("9.9.9.9", 443)
    (None, None, '9.9.9.9')
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return next((addr[0] for *_, addr in infos if reachable(addr[0])), None)


def parse_proxy_request(head: bytes) -> tuple[str, str, int, bytes] | None:
    r"""``(method, host, port, head to send upstream)`` of a proxy request, None if it is
    not one. CONNECT sends nothing upstream; a plain ``http://`` request is passed on in
    origin form (its path only).

    >>> parse_proxy_request(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n")[:3]
    ('CONNECT', 'pypi.org', 443)
    >>> m, h, p, up = parse_proxy_request(b"GET http://example.org/a?b HTTP/1.1\r\nHost: example.org\r\n\r\n")
    >>> (m, h, p, up.split(b"\r\n")[0])
    ('GET', 'example.org', 80, b'GET /a?b HTTP/1.1')
    >>> parse_proxy_request(b"GET /relative HTTP/1.1\r\n\r\n") is None
    True
    """
    line, _, rest = head.partition(b"\r\n")
    try:
        method, target, version = line.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        return None
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            return None
        return method, host.strip("[]"), int(port), b""
    if not target.startswith("http://"):
        return None
    authority, _, path = target[len("http://"):].partition("/")
    host, colon, port = authority.rpartition(":") if ":" in authority else (authority, "", "80")
    if not host or not port.isdigit():
        return None
    upstream = f"{method} /{path} {version}".encode("ascii")
    return method, host.strip("[]"), int(port), upstream + b"\r\n" + rest


class Relay:
    """The listeners of one session, both ways; :meth:`run` serves until stopped."""

    def __init__(self, *, netns: int, inward: list[Endpoint], outward: list[Endpoint],
                 egress: list[Endpoint] = ()):
        self.inward, self.outward, self.egress = inward, outward, list(egress)
        # The one thread that lives in the session's namespace: every inside socket is
        # made there. A failed setns breaks the pool, and each use then raises.
        self.inside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-netns",
                                         initializer=_enter_netns, initargs=(netns,))
        self.stopping = asyncio.Event()
        self.connections: set[asyncio.Task] = set()

    async def _inside(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.inside, fn, *args)

    async def _connect_host(self, endpoint: Endpoint):
        return await asyncio.open_connection(*endpoint)

    async def _connect_inside(self, endpoint: Endpoint):
        sock = await self._inside(_socket)
        try:
            await asyncio.get_running_loop().sock_connect(sock, endpoint)
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    @contextlib.asynccontextmanager
    async def _connection(self, writer: asyncio.StreamWriter):
        """One connection, tracked; its ends (the writers: the caller adds its peer's)
        are aborted when the relay stops (run's end cancels it), and that is not raised
        on: asyncio's stream server would log each as an error."""
        task = asyncio.current_task()
        self.connections.add(task)
        ends = [writer]
        try:
            yield ends
        except asyncio.CancelledError:
            for end in ends:
                end.transport.abort()
        finally:
            self.connections.discard(task)

    def _handler(self, connect, endpoint: Endpoint):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async with self._connection(writer) as ends:
                try:
                    peer = await asyncio.wait_for(connect(endpoint), timeout=30)
                except (OSError, asyncio.TimeoutError):
                    _reset(writer)  # nothing listens at the other end (a service that is down)
                    return
                ends.append(peer[1])
                await _splice((reader, writer), peer)

        return handle

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection to the egress proxy: to a public address, or a 4xx and nothing."""
        async with self._connection(writer) as ends:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, OSError):
                writer.close()
                return
            request = parse_proxy_request(head)
            if request is None:
                return _refuse(writer, 400, "a proxy request: CONNECT HOST:PORT, or a request for an http:// URL")
            method, host, port, upstream = request
            loop = asyncio.get_running_loop()
            address = await loop.run_in_executor(None, public_address, host, port)
            if address is None:
                return _refuse(writer, 403, f"{host}:{port} is not a public address: a session reaches the "
                                            "hub and the services at their own URLs, nothing private")
            try:
                peer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout=30)
            except (OSError, asyncio.TimeoutError) as exc:
                return _refuse(writer, 502, f"{host}:{port} did not answer ({type(exc).__name__})")
            ends.append(peer[1])
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                peer[1].write(upstream)
            await _splice((reader, writer), peer)

    async def start(self) -> list[asyncio.Server]:
        """Bind every listener (inside ones from the namespace's thread); an address
        that cannot be bound stops the start with an error naming it and its side."""
        servers = []
        for endpoint in self.inward:
            try:
                sock = await self._inside(_listener, endpoint)
            except OSError as exc:
                raise OSError(f"inside the session, {endpoint[0]}:{endpoint[1]} cannot be bound: {exc}") from None
            servers.append(await asyncio.start_server(self._handler(self._connect_host, endpoint), sock=sock))
        for endpoint in self.outward:
            try:
                sock = _listener(endpoint)
            except OSError as exc:
                raise OSError(f"on the host, {endpoint[0]}:{endpoint[1]} cannot be bound (choose another "
                              f"port for the session): {exc}") from None
            servers.append(await asyncio.start_server(self._handler(self._connect_inside, endpoint), sock=sock))
        for endpoint in self.egress:
            try:
                sock = await self._inside(_listener, endpoint)
            except OSError as exc:
                raise OSError(f"inside the session, the proxy's {endpoint[0]}:{endpoint[1]} cannot be bound: "
                              f"{exc}") from None
            servers.append(await asyncio.start_server(self._proxy, sock=sock, limit=HEAD_MAX))
        return servers

    async def run(self, *, container_pid: int, ready=lambda: None, interval: float = 1.0) -> str:
        """Serve until SIGTERM/SIGINT, the hub's exit or the container's; returns why."""
        loop = asyncio.get_running_loop()
        why: list[str] = []

        def stop(reason: str) -> None:
            why.append(reason)
            self.stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, f"signal {sig.name}")
        servers = await self.start()
        ready()
        parent, started = os.getppid(), start_time(container_pid)
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=interval)
            if os.getppid() != parent:
                stop("the hub is gone")
            elif started is None or start_time(container_pid) != started:
                stop("the session's container is gone")
        for server in servers:
            server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        self.inside.shutdown(wait=False)
        return why[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m atelier_hub.embedded.netns_relay",
                                 description="Join one session's network namespace to the host's loopback.")
    ap.add_argument("--pid", type=int, required=True, help="the container's first process (its namespace)")
    ap.add_argument("--name", default="session", help="the session, for messages")
    ap.add_argument("--inward", type=_endpoint_arg, action="append", default=[],
                    help="HOST:PORT listened on inside the session, forwarded to the host's (repeat)")
    ap.add_argument("--outward", type=_endpoint_arg, action="append", default=[],
                    help="HOST:PORT listened on on the host, forwarded to the session's (repeat)")
    ap.add_argument("--egress", type=_endpoint_arg, action="append", default=[],
                    help="HOST:PORT inside the session for an HTTP proxy to public addresses only")
    die_with_parent()
    args = ap.parse_args(argv)
    try:
        netns = os.open(f"/proc/{args.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        sys.exit(f"{args.name}: the container's network namespace (/proc/{args.pid}/ns/net) cannot be "
                 f"opened: {exc.strerror}; is the container running, and the hub root?")
    if os.fstat(netns).st_ino == os.stat("/proc/self/ns/net").st_ino:
        # A container on the host's network (or a pid reused by a host process): there
        # is nothing to join, and listening "inside" would listen on the host.
        sys.exit(f"{args.name}: process {args.pid} is on the host's own network, not in a namespace of its "
                 "own; run the container with --network none")

    def ready() -> None:
        print(READY, flush=True)
        # Nobody reads stdout after this line: a later write must not block on a full pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    relay = Relay(netns=netns, inward=args.inward, outward=args.outward, egress=args.egress)
    try:
        why = asyncio.run(relay.run(container_pid=args.pid, ready=ready))
    except OSError as exc:
        sys.exit(f"{args.name}: {exc}")
    print(f"{args.name}: relay stopped ({why})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
