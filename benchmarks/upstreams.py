"""Figures for the upstream machinery, measured on loopback with bounded durations.

    python benchmarks/upstreams.py [--duration 4] [--rounds 3]

1. The throughput cost of each balancing policy against round robin: one
   proxy per policy in front of the same three backends, 1 KiB GETs over
   16 keep-alive connections with wrk, rounds interleaved; each ratio is the
   median of the rounds' own ratios.
2. Failover: how long after a backend dies it still receives routed requests,
   with passive ejection alone and with active checks alone, while one client
   sends GETs back to back.

Needs wrk for part 1 (``apt-get install wrk``). Nothing pinned (simpleproxy
binds itself to one CPU); ``--pin``: servers on CPU 0, wrk and backends on CPU 1.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (benchmarks/run.py: process helpers and wrk)

POLICIES = ("round_robin", "least_conn", "random_two", "first", "hash")


def policy_costs(args: argparse.Namespace, workdir: Path) -> None:
    procs = []
    try:
        ports = []
        for _ in range(3):
            proc, port = bench.start([sys.executable, str(HERE / "backend.py")], cpu=1)
            procs.append(proc)
            ports.append(port)
        servers = "\n".join(f"      - url: http://127.0.0.1:{port}" for port in ports)
        targets = {}
        for policy in POLICIES:
            config = workdir / f"{policy}.yaml"
            listen = bench.free_port()
            config.write_text(
                f"listen: {{http: '127.0.0.1:{listen}'}}\nserver: {{threads: {args.threads}}}\n"
                f"upstreams:\n  app:\n    balance: {policy}\n    servers:\n{servers}\n"
                f"routes:\n  - upstream: app\nlog: {{access: '{workdir / (policy + '.log')}'}}\n"
            )
            proc, port = bench.start_simpleproxy(config)
            procs.append(proc)
            targets[policy] = port
        for port in targets.values():
            bench.wrk(port, "/bench/1k", 16, 1)
        samples: dict[str, list[float]] = {policy: [] for policy in POLICIES}
        for _ in range(args.rounds):
            for policy, port in targets.items():
                samples[policy].append(bench.wrk(port, "/bench/1k", 16, args.duration)["rps"])
        print(f"\nBalancing policies, 1 KiB GET, 16 connections, 3 backends ({args.rounds} rounds of {args.duration:g}s)")
        print(f"  {'policy':12} {'req/s':>8} {'/round_robin':>13}")
        for policy in POLICIES:
            ratios = sorted(a / b for a, b in zip(samples[policy], samples["round_robin"], strict=True))
            median = sorted(samples[policy])[len(samples[policy]) // 2]
            print(f"  {policy:12} {median:8.0f} {ratios[len(ratios) // 2]:13.3f}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


class _Times(logging.Handler):
    """Records when a server was last tried and failed, from the proxy's own log."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_ = name
        self.last_failure = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if f"from {self.name_}" in record.getMessage() and "retrying" in record.getMessage():
            self.last_failure = time.monotonic()


def failover(mode: str) -> float:
    """Seconds from a backend's death to the last request routed to it."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import EchoBackend, Proxy  # real servers on 127.0.0.1, as the tests use them

    backends = [EchoBackend(name) for name in "ABC"]
    upstream: dict = {"servers": [b.url for b in backends], "retries": {"min_retries": 1000}}
    if mode == "passive":
        upstream["passive"] = {"failures": 3, "ejection": "30s"}
    else:
        upstream["passive"] = {"failures": 1000}  # active checks alone
        upstream["health"] = {"path": "/", "interval": "500ms", "timeout": "500ms", "unhealthy_threshold": 2}
    proxy = Proxy({"upstreams": {"app": upstream}, "routes": [{"upstream": "app"}], "log": {"access": "off"}})
    victim = backends[1]
    times = _Times(victim.url.removeprefix("http://"))
    logging.getLogger("simpleproxy").addHandler(times)
    logging.getLogger("simpleproxy").setLevel(logging.WARNING)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        for _ in range(200):
            conn.request("GET", "/")
            conn.getresponse().read()
        victim.kill()  # returns once it no longer accepts and every connection is cut
        died = time.monotonic()
        errors = 0
        while time.monotonic() - died < 3.0:  # bounded: a few seconds of back-to-back GETs
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            errors += response.status != 200
        assert errors == 0, f"{errors} client errors during failover"
        return max(0.0, times.last_failure - died)
    finally:
        conn.close()
        logging.getLogger("simpleproxy").removeHandler(times)
        proxy.stop()
        for backend in backends:
            backend.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    bench.add_pin_option(parser)
    args = parser.parse_args()
    bench.use_pinning(args.pin)
    workdir = Path(tempfile.mkdtemp(prefix="simpleproxy-upstreams-"))
    try:
        if shutil.which("wrk"):
            policy_costs(args, workdir)
        else:
            print("wrk not found: skipping the policy costs (apt-get install wrk)")
        print("\nFailover, one client sending GETs back to back, a backend of three killed:")
        print(f"  passive ejection (3 failures): last request routed to it {failover('passive') * 1000:.1f} ms after its death")
        print(f"  active checks (every 500 ms, 2 failures): last request routed to it "
              f"{failover('active') * 1000:.0f} ms after its death")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(HERE.parent))
    sys.exit(main())
