"""Figures for the security layer, on loopback, bounded in time.

    python benchmarks/security.py [--seconds 10] [--duration 4] [--rounds 3]

1. Limiter accuracy: clients offer twice the configured rate (100/s, burst 10)
   for ``--seconds``; the requests admitted are compared with rate x time + burst.
   Once with the memory store (one proxy), once with two proxy processes
   sharing one limit in a real redis-server (skipped when it is not installed).
2. Per-request cost: 1 KiB GETs with wrk through a route with a limit that never
   refuses, one with the baseline WAF rules, and one with basic_auth (a user's
   right password, cost-10 bcrypt, after its first check), one with forward_auth
   (each request first asked of a local service, the benchmark backend), against the same
   proxy's route with nothing, as ratios; and the CPU of one bcrypt check, what
   a login (a header not yet verified) costs.
3. Slowloris: 500 connections sending their request head a byte a second for
   ``--slow-seconds`` while one client sends ordinary requests back to back:
   its answers and latency, and how many slow connections the proxy cut.
Nothing pinned (simpleproxy binds itself to one CPU); ``--pin``: servers on CPU 0,
wrk, the load generator and the backend on CPU 1.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (benchmarks/run.py: process helpers and wrk)

RATE, BURST = 100, 10


def _proxy(workdir: Path, name: str, backend_port: int, routes: str, top: str = "") -> tuple[subprocess.Popen, int]:
    config = workdir / f"{name}.yaml"
    config.write_text(
        f"listen: {{http: '127.0.0.1:{bench.free_port()}'}}\nserver: {{threads: 8}}\nlog: {{access: 'off'}}\n{top}"
        f"upstreams: {{app: {{servers: ['http://127.0.0.1:{backend_port}']}}}}\nroutes:\n{routes}"
    )
    return bench.start_simpleproxy(config)


def offer(ports: list[int], rate: float, seconds: float, threads: int = 8) -> tuple[int, int]:
    """Send ``rate`` requests/s for ``seconds``, round robin over ``ports``; -> (admitted, refused)."""
    counts = {"ok": 0, "limited": 0}
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def client(n: int) -> None:
        conns = {port: http.client.HTTPConnection("127.0.0.1", port, timeout=10) for port in ports}
        i = n
        while True:
            due = start + i / rate
            if due - start >= seconds:
                break
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            conn = conns[ports[i % len(ports)]]
            conn.request("GET", "/limited/1k")
            response = conn.getresponse()
            response.read()
            with lock:
                counts["ok" if response.status == 200 else "limited"] += 1
            i += threads
        for conn in conns.values():
            conn.close()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return counts["ok"], counts["limited"]


def accuracy(args: argparse.Namespace, workdir: Path, backend_port: int, procs: list) -> None:
    expected = RATE * args.seconds + BURST
    routes = f"  - {{path: /limited, upstream: app, rate_limit: {{rate: {RATE}/s, burst: {BURST}, key: route}}}}\n"
    proc, port = _proxy(workdir, "memory", backend_port, routes)
    procs.append(proc)
    admitted, refused = offer([port], 2 * RATE, args.seconds)
    print(f"\n1. Limiter accuracy: {RATE}/s, burst {BURST}, offered {2 * RATE}/s for {args.seconds:g}s "
          f"(expected admitted: {expected:.0f})")
    print(f"  memory store, one proxy:       {admitted} admitted, {refused} refused "
          f"({(admitted - expected) / expected:+.2%})")
    redis_server = shutil.which("redis-server")
    if not redis_server:
        print("  redis: skipped (no redis-server)")
        return
    redis_port = bench.free_port()
    procs.append(subprocess.Popen([redis_server, "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    bench.wait_port(redis_port)
    shared = (f"  - {{path: /limited, upstream: app, rate_limit: {{rate: {RATE}/s, burst: {BURST}, key: route, "
              f"store: 'redis://127.0.0.1:{redis_port}/0'}}}}\n")
    ports = []
    for name in ("redis-a", "redis-b"):
        proc, port = _proxy(workdir, name, backend_port, shared)
        procs.append(proc)
        ports.append(port)
    admitted, refused = offer(ports, 2 * RATE, args.seconds)
    print(f"  redis store, two proxies:      {admitted} admitted, {refused} refused "
          f"({(admitted - expected) / expected:+.2%})")


def cost(args: argparse.Namespace, workdir: Path, backend_port: int, procs: list) -> None:
    if not shutil.which("wrk"):
        print("\n2. skipped: wrk is needed")
        return
    import bcrypt

    hashed = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(10)).decode()
    routes = ("  - {path: /plain, upstream: app}\n"
              "  - {path: /limited, upstream: app, rate_limit: {rate: 1000000/s, burst: 1000000}}\n"
              "  - {path: /waf, upstream: app, waf: {baseline: true}}\n"
              f"  - {{path: /auth, upstream: app, basic_auth: {{users: {{alice: '{hashed}'}}}}}}\n"
              f"  - {{path: /ask, upstream: app, forward_auth: {{url: 'http://127.0.0.1:{backend_port}/verify/1k'}}}}\n")
    proc, port = _proxy(workdir, "cost", backend_port, routes)
    procs.append(proc)
    paths = {"nothing": "/plain/1k?q=shoes&page=2", "memory limit": "/limited/1k?q=shoes&page=2",
             "baseline WAF": "/waf/1k?q=shoes&page=2", "basic auth": "/auth/1k?q=shoes&page=2",
             "forward auth": "/ask/1k?q=shoes&page=2"}
    login = {"Authorization": "Basic YWxpY2U6d29uZGVybGFuZA=="}  # alice:wonderland
    for name, path in paths.items():
        result = bench.wrk(port, path, 16, 1, login if name == "basic auth" else None)
        assert not result["errors"], f"{name}: {result['errors']}"
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, path in paths.items():
            samples[name].append(bench.wrk(port, path, 16, args.duration, login if name == "basic auth" else None)["rps"])
    print(f"\n2. Per-request cost, 1 KiB GET with a query, 16 connections, {args.rounds} rounds of {args.duration:g}s")
    for name in paths:
        ratios = sorted(a / b for a, b in zip(samples[name], samples["nothing"], strict=True))
        values = sorted(samples[name])
        print(f"  {name:14} {values[len(values) // 2]:8.0f} req/s  ({ratios[len(ratios) // 2]:.3f} of nothing)")
    started = time.process_time()
    for _ in range(10):
        bcrypt.checkpw(b"wonderland", hashed.encode())
    print(f"  a login (one bcrypt check at cost 10): {(time.process_time() - started) / 10 * 1e3:.1f} ms of CPU")


def slowloris(args: argparse.Namespace, workdir: Path, backend_port: int, procs: list) -> None:
    import socket

    proc, port = _proxy(workdir, "slowloris", backend_port, "  - {path: /, upstream: app}\n")
    procs.append(proc)
    slow = []
    for _ in range(500):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
        slow.append(sock)
    stop = threading.Event()
    cut = []

    def trickle() -> None:
        while slow and not stop.wait(1.0):
            for sock in list(slow):
                try:
                    sock.send(b"a")
                    if sock.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    slow.remove(sock)
                    cut.append(time.monotonic())
                    sock.close()

    started = time.monotonic()
    thread = threading.Thread(target=trickle)
    thread.start()
    latencies, failures = [], 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() - started < args.slow_seconds:
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/1k")
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        latencies.append(time.perf_counter() - t0)
        failures += not ok
    stop.set()
    thread.join()
    for sock in slow:
        sock.close()
    latencies.sort()
    print(f"\n3. Slowloris: 500 connections sending a byte a second for {args.slow_seconds:g}s (header_timeout 10s)")
    print(f"  the ordinary client: {len(latencies)} requests, {failures} failed, "
          f"p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms, "
          f"max {latencies[-1] * 1e3:.1f} ms")
    print(f"  slow connections cut by the proxy: {len(cut)} of 500"
          + (f", between {min(cut) - started:.1f}s and {max(cut) - started:.1f}s" if cut else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow-seconds", type=float, default=15.0)
    parser.add_argument("--only", choices=("accuracy", "cost", "slowloris"), help="run one part")
    bench.add_pin_option(parser)
    args = parser.parse_args()
    bench.use_pinning(args.pin)
    with bench.workspace("simpleproxy-security-bench-") as (workdir, procs):
        backend, backend_port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
        procs.append(backend)
        for part in (accuracy, cost, slowloris):
            if args.only in (None, part.__name__):
                part(args, workdir, backend_port, procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
