"""Figures for the HTTP cache, on loopback, each part bounded in time.

    python benchmarks/cache.py [--duration 4] [--rounds 5] [--keys 1000000] [--skip-nginx]

1. Cache-hit throughput against the waitress hello-world (the ceiling of this
   design: the same server answering from memory) and nginx's proxy_cache
   where installed; 1 KiB responses, wrk, keep-alive, rounds interleaved,
   ratios the median of each round's own ratio. Nothing pinned (simpleproxy
   binds itself to one CPU); ``--pin``: servers on CPU 0, wrk and the backend on CPU 1.
2. Memory under churn: ``--keys`` distinct URLs pushed through one route's
   cache filter (in-process, a scripted origin, no sockets) with a 32 MiB
   budget; the process's RSS against that budget, and the store's per-entry
   estimate against what tracemalloc counts.
3. Collapsed forwarding: 50 concurrent misses for one URL through the real
   proxy in front of a backend that takes 300 ms; how many reached it.
4. Ranges: a 1 MiB cached object read whole and read in 64 KiB ranges (the
   sixteen in turn, as a player fetches a file), 16 connections, against
   nginx's proxy_cache; bytes per second of ranges against those of whole reads.

Part 1 also measures hits on a route with the cache's key and tag features on
(``cache.key`` leaving out and sorting query parameters, a header in the key,
tags, heuristic freshness), asked with a tracking parameter in the URL.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (benchmarks/run.py: process helpers and wrk)

MIB = 1024 * 1024


#: a route's cache with every key and tag feature on (part 1)
FEATURES = ("{default_ttl: 1h, heuristic: 10%, max_heuristic: 1d, "
            "key: {ignore_query: [utm_*, fbclid], sort_query: true, include_headers: [X-Tenant]}}")
#: the sixteen 64 KiB ranges of a 1 MiB object in turn (part 4)
RANGES_LUA = """
local i = 0
request = function()
  local first = (i % 16) * 65536
  i = i + 1
  return wrk.format("GET", nil, {["Range"] = "bytes=" .. first .. "-" .. (first + 65535)})
end
"""


def _proxy_config(workdir: Path, name: str, backend_port: int, threads: int, access: str,
                  cache: str = "{default_ttl: 1h}") -> Path:
    config = workdir / f"{name}.yaml"
    config.write_text(
        f"listen: {{http: '127.0.0.1:{bench.free_port()}'}}\nserver: {{threads: {threads}}}\n"
        f"upstreams:\n  app:\n    servers: ['http://127.0.0.1:{backend_port}']\n"
        f"routes:\n  - upstream: app\n    cache: {cache}\n"
        f"log: {{access: '{access}'}}\n"
    )
    return config


def _nginx_cache(workdir: Path, backend_port: int, extra: str = "") -> tuple[subprocess.Popen, int] | None:
    return bench.start_nginx(
        workdir, backend_port, http=f"proxy_cache_path {workdir}/nginx/cache keys_zone=bench:10m max_size=64m;",
        location="proxy_cache bench; proxy_cache_valid 200 1h; proxy_cache_lock on; " + extra,
    )


def hit_throughput(args: argparse.Namespace, workdir: Path) -> None:
    procs: list[subprocess.Popen] = []
    try:
        backend, backend_port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
        procs.append(backend)
        env = dict(os.environ, PYTHONPATH=str(bench.ROOT))
        targets: dict[str, int] = {}
        hello, targets["waitress hello-world"] = bench.start(
            [sys.executable, str(HERE / "refs.py"), "hello", str(args.threads)], cpu=0, env=env
        )
        procs.append(hello)
        paths = {name: "/bench/1k" for name in targets}
        for name, access, cache, path in (
            ("simpleproxy hit, access log", str(workdir / "access.log"), "{default_ttl: 1h}", "/bench/1k"),
            ("simpleproxy hit, no log", "off", "{default_ttl: 1h}", "/bench/1k"),
            ("simpleproxy hit, key features", "off", FEATURES, "/bench/1k?utm_source=news&b=2&a=1"),
        ):
            config = _proxy_config(workdir, re.sub(r"\W+", "_", name), backend_port, args.threads, access, cache)
            proc, targets[name] = bench.start_simpleproxy(config)
            paths[name] = path
            procs.append(proc)
        if not args.skip_nginx and (ng := _nginx_cache(workdir, backend_port)):
            procs.append(ng[0])
            targets["nginx proxy_cache hit"] = ng[1]
            paths["nginx proxy_cache hit"] = "/bench/1k"
        for name, port in targets.items():
            bench.wrk(port, paths[name], 16, 1.0)  # warm-up; fills the caches
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for conns in args.connections:
                for name, port in targets.items():
                    samples.setdefault((name, conns), []).append(bench.wrk(port, paths[name], conns, args.duration))
        print(f"\n1. Cache hits, GET 1 KiB, medians of {args.rounds} rounds of {args.duration:g}s "
              f"({args.threads} waitress threads; {bench.pinning_note()})")
        for conns in args.connections:
            print(f"  {conns} connections")
            print(f"    {'target':30} {'req/s':>9} {'range':>13} {'p99 ms':>8} {'/ceiling':>9}")
            ceiling = samples[("waitress hello-world", conns)]
            for name in targets:
                runs = samples[(name, conns)]
                rps = sorted(r["rps"] for r in runs)
                ratios = sorted(a["rps"] / b["rps"] for a, b in zip(runs, ceiling, strict=True))
                p99 = sorted(r["p99"] for r in runs)[len(runs) // 2]
                print(f"    {name:30} {rps[len(rps) // 2]:9.0f} {f'{rps[0]:.0f}-{rps[-1]:.0f}':>13} "
                      f"{p99 * 1e3:8.2f} {ratios[len(ratios) // 2]:9.2f} {runs[0]['errors']}")
    finally:
        bench.stop_all(procs)


# --------------------------------------------------------------------------- 2. memory under churn


def _rss_mib() -> float:
    status = Path("/proc/self/status")
    if not status.exists():
        return float("nan")
    m = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def churn_worker(keys: int, budget: int) -> None:
    """Runs in its own process, so that its RSS is the cache's alone."""
    from simpleproxy.cache.filter import CacheFilter
    from simpleproxy.cache.policy import format_http_date
    from simpleproxy.cache.store import Caches, Freshness, Store
    from simpleproxy.request import Request
    from simpleproxy.response import Response

    body = b"x" * 512
    date = format_http_date(time.time())

    def origin(request: Request) -> Response:
        # Fresh objects per response, as the upstream parser makes them.
        n = len(request.path)
        fields = [
            ("Date", date), ("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "max-age=3600"),
            ("ETag", '"0123456789abcdef"'), ("Last-Modified", date), ("Content-Length", "512"),
        ]
        return Response("200 OK", [(name[:n] + name[n:], value[:n] + value[n:]) for name, value in fields],
                        [body[:n] + body[n:]])

    def environ(i: int) -> dict:
        return {"REQUEST_METHOD": "GET", "REQUEST_URI": f"/articles/{i}?page=1", "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "site.example", "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(),
                "HTTP_ACCEPT_ENCODING": "gzip, br", "HTTP_USER_AGENT": "bench/1.0"}

    def through(cache: CacheFilter, i: int) -> None:
        response = cache(Request(environ(i), 1024), next=origin)
        for _ in response.body:
            pass

    store = Store(budget, 1 << 20)
    cache = CacheFilter(store, Caches([store]), Freshness())
    baseline = _rss_mib()
    peak = baseline
    started = time.perf_counter()
    for i in range(keys):
        through(cache, i)
        if i % 20000 == 0:
            peak = max(peak, _rss_mib())
    seconds = time.perf_counter() - started
    peak = max(peak, _rss_mib())
    # Calibration: what tracemalloc counts per stored entry against the store's own estimate.
    probe = Store(1 << 40, 1 << 20)
    probe_cache = CacheFilter(probe, Caches([probe]), Freshness())
    through(probe_cache, -1)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5000):
        through(probe_cache, i)
    counted = (tracemalloc.get_traced_memory()[0] - before) / 5000
    tracemalloc.stop()
    estimate = probe.size / len(probe)

    print(f"{counted:.0f} {estimate:.0f} {baseline:.1f} {peak:.1f} {len(store)} {store.size} {store.evictions} {seconds:.1f}")


def memory_churn(args: argparse.Namespace) -> None:
    budget = 32 * MIB
    out = subprocess.run(
        [sys.executable, __file__, "--churn-worker", str(args.keys), str(budget)],
        capture_output=True, text=True, timeout=1800, env=dict(os.environ, PYTHONPATH=str(bench.ROOT)),
    )
    if out.returncode:
        raise RuntimeError(out.stderr)
    counted, estimate, baseline, peak, entries, size, evictions, seconds = out.stdout.split()
    print(f"\n2. Memory: {int(args.keys):,} distinct URLs (512-byte bodies, 6 fields) through one route's cache, "
          f"budget {budget // MIB} MiB, in {float(seconds):.0f}s")
    print(f"  per entry: the store counts {estimate} bytes, tracemalloc sees {counted}")
    print(f"  stored at the end: {int(entries):,} entries, {int(size) / MIB:.1f} MiB counted; {int(evictions):,} evicted")
    print(f"  RSS: {float(baseline):.1f} MiB before the first entry, peak {float(peak):.1f} MiB "
          f"(+{float(peak) - float(baseline):.1f} MiB for a {budget // MIB} MiB budget)")


# --------------------------------------------------------------------------- 3. collapsed forwarding


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.count += 1  # type: ignore[attr-defined]
        time.sleep(0.3)  # the backend's own work; what the cache saves
        body = b"y" * 1024
        self.send_response(200)
        self.send_header("Cache-Control", "max-age=60")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _fetch(port: int, path: str, barrier: threading.Barrier, statuses: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    barrier.wait()  # all 50 ask at once
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    statuses.append(response.status)
    conn.close()


def collapsed(workdir: Path) -> None:
    from simpleproxy.app import ProxyApp
    from simpleproxy.config import config_from_dict
    from simpleproxy.server import ProxyServer

    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    backend.daemon_threads = True
    backend.count, backend.lock = 0, threading.Lock()  # type: ignore[attr-defined]
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    config = config_from_dict({
        "listen": {"http": "127.0.0.1:0"}, "server": {"threads": 64}, "log": {"access": "off"},
        "upstreams": {"app": {"servers": [f"http://127.0.0.1:{backend.server_address[1]}"]}},
        "routes": [{"upstream": "app", "cache": True}],
    })
    app = ProxyApp(config)
    server = ProxyServer(config, app=app)
    thread = server.start()
    port = server.addresses[0][1]
    print("\n3. Collapsed forwarding: 50 concurrent GETs of one uncached URL, backend takes 300 ms")
    try:
        for round_ in range(3):
            before = backend.count  # type: ignore[attr-defined]
            statuses: list[int] = []
            barrier = threading.Barrier(50)

            started = time.perf_counter()
            clients = [
                threading.Thread(target=_fetch, args=(port, f"/hot/{round_}", barrier, statuses)) for _ in range(50)
            ]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            print(f"  round {round_ + 1}: {statuses.count(200)}/50 answered 200 in {time.perf_counter() - started:.2f}s; "
                  f"backend requests: {backend.count - before}")  # type: ignore[attr-defined]
    finally:
        server.stop()
        thread.join(5)
        app.close()
        backend.shutdown()


# --------------------------------------------------------------------------- 4. ranges


def range_reads(args: argparse.Namespace, workdir: Path) -> None:
    procs: list[subprocess.Popen] = []
    script = workdir / "ranges.lua"
    script.write_text(RANGES_LUA)
    try:
        backend, backend_port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
        procs.append(backend)
        proc, port = bench.start_simpleproxy(_proxy_config(workdir, "ranges", backend_port, args.threads, "off"))
        procs.append(proc)
        targets = {"simpleproxy": port}
        # without proxy_force_ranges nginx answers ranges only of responses that say Accept-Ranges
        if not args.skip_nginx and (ng := _nginx_cache(workdir, backend_port, "proxy_force_ranges on;")):
            procs.append(ng[0])
            targets["nginx proxy_cache"] = ng[1]
        for port in targets.values():
            bench.wrk(port, "/bench/1m", 4, 1.0)  # warm-up; stores the object
        samples: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for name, port in targets.items():
                samples.setdefault((name, "whole"), []).append(bench.wrk(port, "/bench/1m", 16, args.duration))
                samples.setdefault((name, "64 KiB ranges"), []).append(
                    bench.wrk(port, "/bench/1m", 16, args.duration, script=script))
        print(f"\n4. A cached 1 MiB object, 16 connections, medians of {args.rounds} rounds of {args.duration:g}s "
              f"({bench.pinning_note()})")
        print(f"    {'target':20} {'read':15} {'req/s':>9} {'MiB/s':>9} {'ranges/whole (MiB/s)':>21}")
        for name in targets:
            whole, ranged = samples[(name, "whole")], samples[(name, "64 KiB ranges")]
            ratios = sorted(r["mibs"] / w["mibs"] for r, w in zip(ranged, whole, strict=True))
            for kind, runs in (("whole", whole), ("64 KiB ranges", ranged)):
                rps = sorted(r["rps"] for r in runs)[len(runs) // 2]
                mibs = sorted(r["mibs"] for r in runs)[len(runs) // 2]
                ratio = f"{ratios[len(ratios) // 2]:21.2f}" if kind != "whole" else ""
                print(f"    {name:20} {kind:15} {rps:9.0f} {mibs:9.0f} {ratio} {runs[0]['errors']}")
    finally:
        bench.stop_all(procs)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--churn-worker":
        churn_worker(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--threads", type=int, default=8, help="waitress threads for every target (as benchmarks/run.py)")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--only", choices=("hits", "memory", "collapse", "ranges"))
    bench.add_pin_option(parser)
    args = parser.parse_args()
    bench.use_pinning(args.pin)
    workdir = Path(tempfile.mkdtemp(prefix="simpleproxy-cache-bench-"))
    try:
        if args.only in (None, "hits"):
            if not shutil.which("wrk"):
                print("wrk is needed for part 1: apt-get install wrk", file=sys.stderr)
                return 2
            hit_throughput(args, workdir)
        if args.only in (None, "memory"):
            memory_churn(args)
        if args.only in (None, "collapse"):
            collapsed(workdir)
        if args.only in (None, "ranges"):
            if not shutil.which("wrk"):
                print("wrk is needed for part 4: apt-get install wrk", file=sys.stderr)
                return 2
            range_reads(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
