"""The proxy's own CPU per ordinary request, in one process, against another build of it.

    python benchmarks/hotpath.py [--requests 20000] [--rounds 7] [--compare REV] [--pin]

Each request goes through the code a request meets in ``simpleproxy run``, minus
waitress's event loop and the client: the strict parser reads a 1 KiB-response
GET's head, the channel's task class builds the environ, and the app routes it
and forwards it over a pooled keep-alive connection to a backend in another
process, whose answer it reads and relays (``--pin``: this process on CPU 0, the
backend on CPU 1; one thread here, so unpinned rounds differ little). The figure
is this process's CPU time per request (best and median of interleaved rounds,
each in a fresh interpreter), so it leaves out what neighbours on a shared VM
steal: a change of a few hundred nanoseconds shows, which whole-server throughput
(swinging by 10% here) cannot show. ``--compare REV`` runs the same rounds
against a git worktree of REV, alternating, and prints the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
HEAD = (b"GET /api/items/42?x=1 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: bench/1.0\r\n"
        b"Accept: */*\r\nAccept-Encoding: gzip\r\n\r\n")

BACKEND = r"""
import os, socket, sys, threading
body = b"x" * 1024
answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + body
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
def serve(conn):
    buf = b""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buf += data
        while b"\r\n\r\n" in buf:
            _, _, buf = buf.partition(b"\r\n\r\n")
            conn.sendall(answer)
while True:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def one_round(port: int, requests: int) -> float:
    """In this interpreter: CPU microseconds per request through parser, environ and app."""
    from waitress.adjustments import Adjustments

    from simpleproxy.app import ProxyApp
    from simpleproxy.config import config_from_dict
    try:
        from simpleproxy.frontend.channel import ProxyChannel as channel_class
        from simpleproxy.frontend.parser import StrictRequestParser
    except ImportError:  # a revision from before the front-end package
        try:
            from simpleproxy.channel import ProxyChannel as channel_class  # type: ignore[no-redef]
            from simpleproxy.parser import StrictRequestParser  # type: ignore[no-redef]
        except ImportError:  # a revision from before channel.py
            from simpleproxy.server import StrictChannel as channel_class, StrictRequestParser  # type: ignore[attr-defined,no-redef]

    app = ProxyApp(config_from_dict({
        "listen": {"http": "127.0.0.1:0"},
        "upstreams": {"api": {"servers": [{"url": f"http://127.0.0.1:{port}"}]}},
        "routes": [{"host": "app.example.com", "path": "/api", "upstream": "api"}],
        "log": {"access": "off"},
    }))
    adj = Adjustments(ident="simpleproxy")
    channel = SimpleNamespace(server=SimpleNamespace(adj=adj, effective_port=8080, server_name="localhost"),
                              addr=("127.0.0.1", 40000), adj=adj, check_client_disconnected=lambda: False)
    task_class = channel_class.task_class

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        pass

    def request() -> None:
        parser = StrictRequestParser(adj)
        parser.received(HEAD)
        environ = task_class(channel, parser).get_environment()
        body = app(environ, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    for _ in range(2000):  # warm: memo tables, the pool's connection, the allocator
        request()
    started = time.process_time()
    for _ in range(requests):
        request()
    spent = time.process_time() - started
    app.close()
    return spent / requests * 1e6


def run_rounds(source: Path, port: int, requests: int, pin: bool) -> float:
    """One round in a fresh interpreter importing simpleproxy from ``source`` (on CPU 0 with ``pin``)."""
    env = dict(os.environ, PYTHONPATH=str(source))
    command = [sys.executable, str(Path(__file__).resolve()), "--one-round", str(port), "--requests", str(requests)]
    if pin and hasattr(os, "sched_setaffinity"):
        command = ["taskset", "-c", "0", *command]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    return float(json.loads(out.stdout)["us"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compare", metavar="REV", help="also measure this git revision, interleaved")
    parser.add_argument("--pin", action="store_true", help="this process on CPU 0, the backend on CPU 1")
    parser.add_argument("--one-round", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps({"us": one_round(args.one_round, args.requests)}))
        return 0

    pin = ["taskset", "-c", "1"] if args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1 else []
    backend = subprocess.Popen([*pin, sys.executable, "-c", BACKEND], stdout=subprocess.PIPE, text=True)
    worktree = None
    try:
        assert backend.stdout is not None
        port = int(backend.stdout.readline())
        builds = {"working tree": CHECKOUT}
        if args.compare:
            worktree = Path(tempfile.mkdtemp(prefix="hotpath-")) / "tree"
            subprocess.run(["git", "-C", str(CHECKOUT), "worktree", "add", "--detach", str(worktree), args.compare],
                           check=True, capture_output=True)
            builds[args.compare] = worktree
        results: dict[str, list[float]] = {name: [] for name in builds}
        for _ in range(args.rounds):
            for name, source in builds.items():  # alternating, so drifts hit both alike
                results[name].append(run_rounds(source, port, args.requests, args.pin))
        print(f"CPU per request (parser + environ + app + upstream exchange), {args.requests} requests x "
              f"{args.rounds} rounds")
        for name, values in results.items():
            print(f"  {name:>14}: best {min(values):7.2f} us   median {statistics.median(values):7.2f} us")
        if args.compare:
            ours, theirs = (min(v) for v in results.values())
            print(f"  difference (best): {ours - theirs:+.2f} us ({(ours / theirs - 1) * 100:+.1f}%)")
    finally:
        backend.terminate()
        backend.wait()
        if worktree is not None:
            subprocess.run(["git", "-C", str(CHECKOUT), "worktree", "remove", "--force", str(worktree)],
                           capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
