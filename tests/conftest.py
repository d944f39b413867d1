"""Shared test helpers: real backends and a real proxy, all on 127.0.0.1 port 0.

Servers bind before their thread starts, so a test never polls for readiness;
tests wait on Events and Queues, never on sleep().
"""

from __future__ import annotations

import http.client
import io
import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from simpleproxy.app import ProxyApp
from simpleproxy.config import config_from_dict
from simpleproxy.observe.accesslog import AccessLog
from simpleproxy.server import ProxyServer

SHORT_TIMEOUT = 5.0  # something that should happen at once


class FakeClock:
    """A clock the test moves by hand (``clock.now += 30``), for the cache and the limits."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


LONG_TIMEOUT = 30.0  # something that moves real data


class EchoHandler(BaseHTTPRequestHandler):
    """Answers with JSON describing the request it received (waitress's echo fixture, in spirit)."""

    protocol_version = "HTTP/1.1"
    wbufsize = 65536
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.sockets.add(self.connection)  # type: ignore[attr-defined]

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.put((self.command, self.path))  # type: ignore[attr-defined]
        self.server.connections.add(self.client_address)  # type: ignore[attr-defined]
        data = json.dumps(
            {
                "name": self.server.name,  # type: ignore[attr-defined]
                "method": self.command,
                "path": self.path,
                "headers": list(self.headers.items()),
                "body": body.decode("latin-1"),
                "client": self.client_address[1],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if not self.path.startswith("/plain"):  # /plain/...: no cookies, so a cache may store it
            self.send_header("Set-Cookie", "a=1")
            self.send_header("Set-Cookie", "b=2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_PURGE = _echo

    def log_message(self, format: str, *args: object) -> None:
        pass


class EchoBackend(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # refused TLS handshakes are part of some tests

    def __init__(self, name: str = "A", tls: ssl.SSLContext | None = None, port: int = 0) -> None:
        """``port``: 0 for a free one, or the port of a backend that was stopped (a restart)."""
        super().__init__(("127.0.0.1", port), EchoHandler)
        self.name = name
        self.seen: queue.Queue = queue.Queue()
        self.connections: set = set()
        self.sockets: set[socket.socket] = set()
        scheme = "http"
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def kill(self) -> None:
        """Die as a crashed process would: stop accepting and cut every connection."""
        self.stop()
        for sock in list(self.sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked reading keep-alive
            except OSError:
                pass


class RawBackend:
    """A scripted backend: ``script(conn)`` runs for each accepted connection.

    For failures a real server would not produce on purpose: garbage status
    lines, bare CRs, closing mid-body, never answering.
    """

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self.release = threading.Event()  # scripts that block wait on this; set at teardown
        self.closed = queue.Queue()  # scripts report what they saw of the proxy side
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.script(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.release.set()
        self.sock.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass


def read_request(conn: socket.socket) -> bytes:
    """Read one request head (and no body) from a raw connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def held_backend(raw_backend: Callable[..., Any], body: bytes = b"ok") -> tuple[Any, queue.Queue]:
    """A raw backend that answers each request with ``body`` only once the test sets its
    ``release``; the queue gets an item as each request reaches it (a request holding a thread)."""
    arrived: queue.Queue = queue.Queue()

    def script(conn: socket.socket) -> None:
        while read_request(conn):
            arrived.put(True)
            backend.release.wait(LONG_TIMEOUT)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    backend = raw_backend(script)
    return backend, arrived


class Proxy:
    """A ProxyServer on an ephemeral port with an in-memory access log."""

    def __init__(self, config: dict[str, Any], clock: Callable[[], float] | None = None) -> None:
        config = {"listen": {"http": "127.0.0.1:0"}, **config}
        self.log_stream = io.StringIO()
        self.access_log = AccessLog(self.log_stream, format=config.get("log", {}).get("format", "combined"))
        extra = {"clock": clock} if clock is not None else {}
        self.app = ProxyApp(config_from_dict(config), access_log=self.access_log, **extra)
        self.server = ProxyServer(self.app.config, app=self.app)
        self.host, self.port = self.server.addresses[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = self.server.start()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=LONG_TIMEOUT)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are; read until the proxy closes or the answer is complete."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=LONG_TIMEOUT) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            return out

    def log_lines(self, at_least: int = 0) -> list[str]:
        """The access log's lines, once there are ``at_least`` of them: a streamed response's line
        is written when the server closes its body, which may be just after the client has read it."""
        deadline = time.monotonic() + LONG_TIMEOUT
        while True:
            self.access_log.flush()
            lines = self.log_stream.getvalue().splitlines()
            if len(lines) >= at_least or time.monotonic() > deadline:
                return lines
            time.sleep(0.002)  # a ready-check's poll, bounded by the deadline

    def stop(self) -> None:
        self.server.stop()
        self._thread.join(SHORT_TIMEOUT)


class RunProcess:
    """``simpleproxy run`` in a child process on a free port, as a user starts it.

    ``config`` is the YAML after the ``listen:`` line (the port is chosen here);
    ``said`` holds what it logged up to its "listening on" line and the one after it.
    """

    def __init__(self, directory: Path, config: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        path = directory / "run.yaml"
        path.write_text(f"listen: {{http: '127.0.0.1:{self.port}'}}\n{config}")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        self.proc = subprocess.Popen([sys.executable, "-m", "simpleproxy", "run", "--config", str(path)],
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.said: list[str] = []
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.said.append(line)
            if "listening on" in line:
                self.said.append(self.proc.stderr.readline())  # type: ignore[union-attr]
                break

    @property
    def started(self) -> bool:
        return any("listening on" in line for line in self.said)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(LONG_TIMEOUT)
        self.proc.stderr.close()  # type: ignore[union-attr]


@pytest.fixture
def run_process(tmp_path: Path) -> Iterator[Callable[[str], RunProcess]]:
    yield from _started(partial(RunProcess, tmp_path))


def _started(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A factory fixture body: hands out ``make(...)`` and stops everything made."""
    made: list[Any] = []

    def create(*args: Any, **kwargs: Any) -> Any:
        made.append(make(*args, **kwargs))
        return made[-1]

    yield create
    for thing in reversed(made):
        thing.stop()


@pytest.fixture
def backends() -> Iterator[Callable[[str], EchoBackend]]:
    yield from _started(EchoBackend)


@pytest.fixture
def raw_backend() -> Iterator[Callable[[Callable[[socket.socket], None]], RawBackend]]:
    yield from _started(RawBackend)


@pytest.fixture
def proxy() -> Iterator[Callable[[dict[str, Any]], Proxy]]:
    yield from _started(Proxy)


def single_upstream(url: str, **route: Any) -> dict[str, Any]:
    """A config with one upstream and one route for it."""
    timeouts = route.pop("timeouts", {"connect": "2s", "read": "5s"})
    return {
        "upstreams": {"app": {"servers": [{"url": url}], "timeouts": timeouts}},
        "routes": [{"path": "/", "upstream": "app", **route}],
    }


class RedisServer:
    """A real redis-server on 127.0.0.1 and a free port, without persistence."""

    def __init__(self) -> None:
        import shutil
        import subprocess
        import time

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("needs redis-server (Debian: apt-get install redis-server; .ci/run installs it)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + LONG_TIMEOUT
        while True:  # ready-check: until it answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=SHORT_TIMEOUT) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(SHORT_TIMEOUT)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()
