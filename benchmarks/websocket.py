"""WebSocket echo round trips per second, direct and through the proxy (plain and TLS), in one run.

    python benchmarks/websocket.py [--connections 16] [--seconds 5] [--size 64] [--pin]

Loopback only, bounded: an echo backend (the test suite's stdlib RFC 6455
server, in its own process) and the load generator share CPU 0 (both are
Python and threaded: unbound, they would measure their own GIL hand-offs);
the proxy runs as users run it, binding itself to a CPU by its default
(``server.cpu_affinity: auto``, the last one). ``--pin`` puts the proxy on
CPU 0 and the load on CPU 1 instead, as benchmarks/run.py does. Each
connection sends a masked message, waits for its echo,
and repeats until the time is up; a second figure is the round-trip latency of a
single connection (p50/p99). The load generator is Python too, so the direct
figure is the generator's ceiling as much as the backend's, and a proxy in
between can even raise it (part of the loopback work of each message moves to
the proxy's CPU). The proxy's own cost is the CPU it spends per round trip
(from /proc, Linux): its one relay thread could carry 1/that round trips a
second on a core of its own.
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))

from websocket import BINARY, connect  # noqa: E402  (the tests' helper)


def pin(cpu: int, pid: int | None = None) -> None:
    """Bind a process (this one by default) to ``cpu``; every thread, as taskset does."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        tasks = Path(f"/proc/{pid or os.getpid()}/task")
        for tid in [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid or 0]:
            os.sched_setaffinity(tid, {cpu})


def load(port: int, connections: int, seconds: float, size: int, context: ssl.SSLContext | None) -> float:
    """Round trips per second over ``connections`` WebSockets, each one message in flight."""
    sockets = []
    for _ in range(connections):
        ws, status, *_ = connect(port, context=context, host="bench.example" if context else "127.0.0.1")
        assert ws is not None, status
        sockets.append(ws)
    message = os.urandom(size)
    counts = [0] * connections
    stop = time.perf_counter() + seconds
    start = threading.Barrier(connections + 1)

    def run(index: int) -> None:
        ws = sockets[index]
        start.wait()
        while time.perf_counter() < stop:
            ws.send(BINARY, message)
            ws.recv()
            counts[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    for ws in sockets:
        ws.sock.close()
    return sum(counts) / elapsed


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc); 0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(port: int, size: int, context: ssl.SSLContext | None, count: int = 2000) -> tuple[float, float]:
    ws, *_ = connect(port, context=context, host="bench.example" if context else "127.0.0.1")
    assert ws is not None
    message = os.urandom(size)
    times = []
    for _ in range(count):
        t = time.perf_counter()
        ws.send(BINARY, message)
        ws.recv()
        times.append(time.perf_counter() - t)
    ws.sock.close()
    times.sort()
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6


BACKEND = r"""
import sys, threading
sys.path.insert(0, sys.argv[1])
from websocket import EchoServer
server = EchoServer()
print(server.port, flush=True)
threading.Event().wait()
"""

PROXY = r"""
import sys, yaml
from simpleproxy.affinity import bind_process
from simpleproxy.config import config_from_dict
from simpleproxy.server import ProxyServer
config = config_from_dict(yaml.safe_load(sys.argv[1]))
bind_process(config.server.cpu_affinity)  # as `simpleproxy run` does
server = ProxyServer(config)
print(server.addresses[0][1], server.https_addresses[0][1] if server.https_addresses else 0, flush=True)
server.serve_forever()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--pin", action="store_true", help="the proxy on CPU 0, the load and backend on CPU 1")
    args = parser.parse_args()

    import trustme
    import yaml

    pin(1 if args.pin else 0)  # the load generator and (in its own process, so that they share no GIL) the echo backend
    backend = subprocess.Popen([sys.executable, "-c", BACKEND, str(HERE.parent / "tests" / "integration")],
                               stdout=subprocess.PIPE, text=True)
    assert backend.stdout is not None
    backend_port = int(backend.stdout.readline())
    ca = trustme.CA()
    workdir = Path(tempfile.mkdtemp(prefix="wsbench-"))
    leaf = ca.issue_cert("bench.example")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    config = {
        "listen": {"http": "127.0.0.1:0", "https": {"address": "127.0.0.1:0",
                                                   "certificates": [{"cert": str(cert), "key": str(key)}]}},
        "upstreams": {"ws": {"servers": [{"url": f"ws://127.0.0.1:{backend_port}"}]}},
        "routes": [{"path": "/", "upstream": "ws", "tunnel_idle_timeout": "5m"}],
        "log": {"access": "off"},
    }
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    proxy = subprocess.Popen([sys.executable, "-c", PROXY, yaml.safe_dump(config)], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert proxy.stdout is not None
        http_port, https_port = map(int, proxy.stdout.readline().split())
        if args.pin:
            pin(0, proxy.pid)
        rows = []
        for name, port, context in (("direct", backend_port, None), ("proxy ws://", http_port, None),
                                    ("proxy wss://", https_port, client_context)):
            before = cpu_seconds(proxy.pid)
            began = time.perf_counter()
            rate = load(port, args.connections, args.seconds, args.size, context)
            trips = rate * (time.perf_counter() - began)
            spent = cpu_seconds(proxy.pid) - before
            p50, p99 = latency(port, args.size, context)
            rows.append((name, rate, spent / trips * 1e6 if name != "direct" and trips else 0.0, p50, p99))
        direct = rows[0][1]
        print(f"WebSocket echo, {args.size}-byte messages, {args.connections} connections, {args.seconds:g} s each")
        print(f"{'path':<14}{'round trips/s':>15}{'vs direct':>11}{'proxy CPU/trip':>16}{'p50 us':>9}{'p99 us':>9}"
              "  (latency: one connection)")
        for name, rate, cpu, p50, p99 in rows:
            shown = f"{cpu:.1f} us" if cpu else "-"
            print(f"{name:<14}{rate:>15,.0f}{rate / direct:>11.2f}{shown:>16}{p50:>9.0f}{p99:>9.0f}")
    finally:
        for child in (proxy, backend):
            child.terminate()
            child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
