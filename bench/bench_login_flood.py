"""Hub API latency during a flood of wrong passwords, against the same hub idle.

One ``atelier dev`` (without Trino) on a fresh state folder. The figure is the median
latency of ``GET /hub/api/users`` (admin token, through the public URL) while the
flood runs, divided by its median while nothing else happens (target: within 2x).
Two floods, each THREADS clients posting wrong passwords to the login form for
SECONDS seconds:

- one attacker through the proxy: one client address, so the back-off soon answers
  without hashing (what an attacker from one address gets);
- many addresses: straight to the hub's own port with a new X-Forwarded-For for each
  attempt, so that no back-off engages and every attempt costs a scrypt hash (the
  worst case for the event loop: how well hashing is kept off it).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hub"))
from stack import Stack  # noqa: E402


def _latencies(stack: Stack, seconds: float) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        r = stack.api("GET", "/users")
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.status_code
        time.sleep(0.05)
    return out


def _xsrf(s: requests.Session, base: str, headers: dict) -> str:
    page = s.get(f"{base}/hub/login", headers=headers, timeout=60).text
    return re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)


def _flood(base: str, *, stop: threading.Event, counts: collections.Counter, spoof: bool, n: int) -> None:
    s = requests.Session()
    s.trust_env = False
    xsrf = _xsrf(s, base, {})
    i = 0
    while not stop.is_set():
        i += 1
        # Many addresses: a new (claimed) address and a new name each time, so neither
        # back-off engages; the hub ties the form's XSRF token to the address, hence the GET.
        headers = {"X-Forwarded-For": f"10.{n}.{i // 250 % 250}.{i % 250}"} if spoof else {}
        name = f"guess-{n}-{i}" if spoof else "admin"
        try:
            if spoof:
                xsrf = _xsrf(s, base, headers)
            r = s.post(f"{base}/hub/login", data={"username": name, "password": f"wrong-{i}", "_xsrf": xsrf},
                       headers=headers, timeout=120, allow_redirects=False)
            counts[r.status_code] += 1
        except requests.RequestException:
            counts["error"] += 1


def run_flood(stack: Stack, base: str, *, spoof: bool, threads: int, seconds: float) -> tuple[list[float], dict]:
    stop, counts = threading.Event(), collections.Counter()
    workers = [threading.Thread(target=_flood, args=(base,), kwargs=dict(stop=stop, counts=counts, spoof=spoof, n=n))
               for n in range(threads)]
    for w in workers:
        w.start()
    time.sleep(1)  # the flood is under way
    try:
        lat = _latencies(stack, seconds)
    finally:
        stop.set()
        for w in workers:
            w.join()
    return lat, dict(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-login-") as tmp:
        stack = Stack(Path(tmp) / "state", name="bench-login", args=("--without", "trino")).start()
        try:
            hub_port = json.loads((stack.state / "atelier.json").read_text())["ports"]["hub"]
            idle = statistics.median(_latencies(stack, args.seconds))
            print(f"idle: GET /hub/api/users median {idle * 1000:.1f} ms")
            for label, base, spoof in (("one address, through the proxy", stack.url, False),
                                       ("many addresses, at the hub's port", f"http://127.0.0.1:{hub_port}", True)):
                lat, counts = run_flood(stack, base, spoof=spoof, threads=args.threads, seconds=args.seconds)
                busy = statistics.median(lat)
                answers = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
                print(f"flood ({label}; {args.threads} clients, {sum(counts.values())} attempts: {answers}): "
                      f"median {busy * 1000:.1f} ms, p90 {statistics.quantiles(lat, n=10)[-1] * 1000:.1f} ms "
                      f"-> ratio {busy / idle:.2f}x idle (target <= 2x)")
                time.sleep(2)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
