"""simpleproxy under other WSGI servers: gunicorn (sync, gthread), waitress-serve --call, and as middleware.

Each host is really started on 127.0.0.1 and answers a routed request (proxied
to a real backend), a fall-through request (the wrapped site, or the proxy's
404), and a large response that must stream: the backend holds back all but
its first megabyte until the client has read that megabyte through the host.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from wsgiref.validate import validator

import pytest
import yaml
from waitress import wasyncore
from waitress.server import create_server

import simpleproxy
from simpleproxy import ProxyMiddleware, config_from_dict, make_app

from conftest import LONG_TIMEOUT

HERE = Path(__file__).parent
STREAM_SIZE = 16 * 1024 * 1024
FIRST_PART = 1024 * 1024
gunicorn_missing = pytest.mark.skipif(
    sys.platform == "win32" or subprocess.run([sys.executable, "-c", "import gunicorn"]).returncode != 0,
    reason="gunicorn runs on POSIX systems only (pip install '.[test]' installs it there)",
)


def _block(index: int) -> bytes:
    return bytes([index % 251]) * 65536


class GatedHandler(BaseHTTPRequestHandler):
    """``/api/stream/NAME``: 16 MiB, held after the first MiB until ``release(NAME)``; else JSON echo."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/api/stream/"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(STREAM_SIZE))
            self.end_headers()
            gate = self.server.gate(self.path.rsplit("/", 1)[1])  # type: ignore[attr-defined]
            for index in range(STREAM_SIZE // 65536):
                if index * 65536 == FIRST_PART:
                    gate.wait(LONG_TIMEOUT)
                self.wfile.write(_block(index))
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps({
            "path": self.path, "method": self.command, "body": len(self.rfile.read(length)) if length else 0,
            "forwarded_for": self.headers.get("X-Forwarded-For"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_POST = do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class GatedBackend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), GatedHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def gate(self, name: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(name, threading.Event())

    def stop(self) -> None:
        for gate in list(self._gates.values()):
            gate.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def backend() -> Iterator[GatedBackend]:
    server = GatedBackend()
    yield server
    server.stop()


def write_config(tmp_path: Path, backend: GatedBackend, **extra: Any) -> Path:
    """Routes for /api only, so that other paths fall through to a wrapped site."""
    config = {
        "upstreams": {"api": {"servers": [{"url": backend.url}], "timeouts": {"connect": "2s", "read": "30s"}}},
        "routes": [{"path": "/api", "upstream": "api"}],
        "log": {"access": "off"},
        **extra,
    }
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def get(
    port: int, path: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LONG_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def assert_streams(port: int, backend: GatedBackend, name: str) -> None:
    """The first MiB arrives while the backend holds the rest; then all 16 MiB, intact."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LONG_TIMEOUT)
    conn.request("GET", f"/api/stream/{name}")
    response = conn.getresponse()
    assert response.status == 200
    digest, received = hashlib.sha256(), 0
    while received < FIRST_PART:  # would hang (and time out) if anything buffered the whole body
        data = response.read1(65536)
        assert data, "the body ended early"
        digest.update(data)
        received += len(data)
    backend.gate(name).set()
    while data := response.read(1024 * 1024):
        digest.update(data)
        received += len(data)
    conn.close()
    expected = hashlib.sha256(b"".join(_block(i) for i in range(STREAM_SIZE // 65536))).hexdigest()
    assert (received, digest.hexdigest()) == (STREAM_SIZE, expected)


def assert_routes(port: int, fall_through: str) -> None:
    """A routed GET and POST reach the backend; /elsewhere gets the site's answer or the proxy's 404."""
    response, body = get(port, "/api/items?x=1")
    answer = json.loads(body)
    assert response.status == 200 and answer["path"] == "/api/items?x=1"
    assert answer["forwarded_for"] == "127.0.0.1" and response.getheader("X-Request-Id")
    response, body = get(port, "/api/upload", "POST", b"u" * 300_000)
    assert json.loads(body)["body"] == 300_000
    response, body = get(port, "/elsewhere")
    if fall_through == "site":
        assert (response.status, body) == (200, b"site answered GET /elsewhere\n")
    else:
        assert response.status == 404 and b"no route" in body


class HostProcess:
    """A WSGI server started as a child process; its address read from what it logs."""

    def __init__(self, args: list[str], config: Path, pattern: str) -> None:
        env = dict(os.environ, SIMPLEPROXY_CONFIG=str(config), PYTHONUNBUFFERED="1")
        # the simpleproxy under test (installed or the checkout), and wsgi_site.py beside this file
        paths = [str(Path(simpleproxy.__file__).parent.parent), str(HERE)]
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output: list[str] = []
        found = threading.Event()
        self.port = 0

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                match = re.search(pattern, line)
                if match and not self.port:
                    self.port = int(match.group(1))
                    found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(LONG_TIMEOUT):
            self.stop()
            raise AssertionError("the server did not start:\n" + "".join(self.output))
        self._wait_until_answering()

    def _wait_until_answering(self) -> None:
        """Ready-check: the listener is up before the workers have imported the app."""
        deadline = time.monotonic() + LONG_TIMEOUT
        while True:
            try:
                get(self.port, "/api/ready")
                return
            except (OSError, http.client.HTTPException):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the server does not answer:\n" + "".join(self.output)) from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(LONG_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(LONG_TIMEOUT)  # to the end of its output, before the pipe is closed
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def gunicorn(config: Path, app: str, worker: str, workers: int = 2) -> HostProcess:
    threads = ["--threads", "4"] if worker == "gthread" else []
    return HostProcess(
        ["-m", "gunicorn", "-b", "127.0.0.1:0", "-w", str(workers), "-k", worker, *threads,
         "--graceful-timeout", "5", app],
        config, r"Listening at: http://127\.0\.0\.1:(\d+)",
    )


@gunicorn_missing
@pytest.mark.parametrize(("worker", "app", "fall_through"), [
    ("sync", "simpleproxy.wsgi:application", "404"),
    ("sync", "wsgi_site:application", "site"),
    ("gthread", "simpleproxy.wsgi:application", "404"),
    ("gthread", "wsgi_site:application", "site"),
])
def test_under_gunicorn(tmp_path, backend, worker, app, fall_through) -> None:
    host = gunicorn(write_config(tmp_path, backend), app, worker)
    try:
        assert_routes(host.port, fall_through)
        assert_streams(host.port, backend, f"{worker}-{fall_through}")
    finally:
        host.stop()
    assert "Traceback" not in "".join(host.output)


@gunicorn_missing
def test_limits_shared_through_redis_stay_global_across_gunicorn_workers(tmp_path, backend, redis_server) -> None:
    """Three tokens in all, whichever worker answers: each sync worker is pinned busy in turn."""
    limit = {"rate": "1/h", "burst": 3, "store": redis_server.url, "key": "client_ip"}
    config = write_config(tmp_path, backend)
    data = yaml.safe_load(config.read_text())
    data["routes"].insert(0, {"path": "/api/limited", "upstream": "api", "rate_limit": limit})
    config.write_text(yaml.safe_dump(data))
    host = gunicorn(config, "simpleproxy.wsgi:application", "sync", workers=2)
    workers_seen: dict[str, list[int]] = {}

    def limited() -> None:
        response, _ = get(host.port, "/api/limited")
        workers_seen.setdefault(response.getheader("X-Request-Id", "")[:6], []).append(response.status)

    def hold(name: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=LONG_TIMEOUT)
        conn.request("GET", f"/api/stream/{name}")
        response = conn.getresponse()
        response.read(FIRST_PART)  # the worker serving it now waits on the gate
        return conn, response

    try:
        first = hold("first")  # one worker busy: the other answers
        limited()
        limited()
        second = hold("second")  # now that one is busy too...
        backend.gate("first").set()
        first[1].read()
        first[0].close()  # ...and the first is free again: it answers the rest
        limited()
        limited()
        limited()
        backend.gate("second").set()
        second[1].read()
        second[0].close()
    finally:
        host.stop()
    assert len(workers_seen) == 2, workers_seen  # both workers answered limited requests
    statuses = sorted(status for answers in workers_seen.values() for status in answers)
    assert statuses == [200, 200, 200, 429, 429], workers_seen  # 3 tokens in all, not 3 per worker


def test_under_waitress_serve_call(tmp_path, backend) -> None:
    host = HostProcess(
        ["-m", "waitress", "--listen=127.0.0.1:0", "--call", "simpleproxy.wsgi:make_application"],
        write_config(tmp_path, backend), r"Serving on http://127\.0\.0\.1:(\d+)",
    )
    try:
        assert_routes(host.port, "404")
        assert_streams(host.port, backend, "waitress-serve")
    finally:
        host.stop()


class _Served:
    """waitress serving an app from a thread of this process; :meth:`close` stops it from its own loop."""

    def __init__(self, app: Any) -> None:
        self.server = create_server(app, listen="127.0.0.1:0", threads=4)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        # The worker threads first, while the loop still runs for them: a task that ends later
        # would wake a trigger whose descriptor may by then belong to the next test's server.
        # Then the sockets, closed by the loop itself: closing them from this thread while the
        # loop sits in select() on them makes select() fail in the loop's thread (EBADF).
        # The loop may run the thunk before pull_trigger() writes its byte (woken by another pull),
        # and the thunk closes the trigger too: that write then fails, the work being done.
        server = self.server
        server.task_dispatcher.shutdown()
        try:
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError:
            pass
        self.thread.join(LONG_TIMEOUT)
        assert not self.thread.is_alive()


def _serve_in_thread(app: Any) -> tuple[_Served, int]:
    served = _Served(app)
    return served, int(served.server.effective_port)


def test_as_middleware_in_front_of_a_plain_wsgi_app(tmp_path, backend) -> None:
    sys.path.insert(0, str(HERE))
    try:
        from wsgi_site import site
    finally:
        sys.path.remove(str(HERE))
    middleware = ProxyMiddleware(site, write_config(tmp_path, backend))
    server, port = _serve_in_thread(middleware)
    try:
        assert_routes(port, "site")
        assert_streams(port, backend, "middleware")
        response, body = get(port, "/elsewhere", "POST", b"form=1")
        assert (response.status, body) == (200, b"site answered POST /elsewhere\n")
        # a malformed request is the proxy's to refuse, not the site's to see
        response, body = get(port, "/elsewhere", headers={"Host": "user@host"})
        assert response.status == 400 and b"invalid Host" in body
    finally:
        server.close()
        middleware.close()


def test_proxied_traffic_passes_wsgiref_validate(tmp_path, backend) -> None:
    """PEP 3333, as wsgiref.validate checks it, over routed, streamed, refused and failed requests."""
    config = config_from_dict({
        **yaml.safe_load(write_config(tmp_path, backend).read_text()),
        "upstreams": {
            "api": {"servers": [{"url": backend.url}], "timeouts": {"connect": "2s", "read": "30s"}},
            "dead": {"servers": [{"url": "http://127.0.0.1:9"}], "timeouts": {"connect": "1s", "read": "1s"}},
        },
        "routes": [{"path": "/api", "upstream": "api"}, {"path": "/dead", "upstream": "dead"}],
    })
    app = make_app(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # wsgiref.validate reports some problems as warnings
        server, port = _serve_in_thread(validator(app))
        try:
            assert get(port, "/api/x")[0].status == 200
            assert get(port, "/api/x", "HEAD")[0].status == 200
            assert json.loads(get(port, "/api/p", "POST", b"x" * 100_000)[1])["body"] == 100_000
            assert get(port, "/dead/x")[0].status == 502
            assert get(port, "/nowhere")[0].status == 404
            assert_streams(port, backend, "validated")
        finally:
            server.close()
            app.close()


def call_app(app: Any, environ: dict[str, Any], statuses: list[str]) -> bytes:
    """As a WSGI server calls an app: the body iterated, then closed (which releases its connection)."""
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        return b"".join(body)
    finally:
        if hasattr(body, "close"):
            body.close()


def test_a_chunked_body_from_a_server_that_does_not_dechunk_is_411(tmp_path, backend) -> None:
    """Without wsgi.input_terminated, the body's end is unknown: refused, not forwarded empty."""
    import io

    app = make_app(write_config(tmp_path, backend))
    statuses = []
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/api/upload", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "h",
        "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"5\r\nhello\r\n0\r\n\r\n"),
        "wsgi.url_scheme": "http", "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "h", "SERVER_PORT": "80",
        "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "QUERY_STRING": "",
    }
    try:
        body = call_app(app, dict(environ), statuses)
        assert statuses[-1].startswith("411") and b"length" in body
        terminated = dict(environ, **{"wsgi.input": io.BytesIO(b"hello"), "wsgi.input_terminated": True})
        body = call_app(app, terminated, statuses)
        assert statuses[-1].startswith("200") and json.loads(body)["body"] == 5
    finally:
        app.close()


def test_application_is_made_once_from_simpleproxy_config(tmp_path, backend, monkeypatch) -> None:
    import simpleproxy.wsgi as wsgi_module

    monkeypatch.setenv("SIMPLEPROXY_CONFIG", str(write_config(tmp_path, backend)))
    monkeypatch.setattr(wsgi_module, "_application", None)
    first = wsgi_module.application
    try:
        assert first is wsgi_module.application and first.config.routes[0].path == "/api"
    finally:
        first.close()


def test_a_bad_config_named_by_simpleproxy_config_fails_with_its_key(tmp_path, monkeypatch) -> None:
    import simpleproxy.wsgi as wsgi_module

    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  - path: /api\n    upstream: apii\n")
    monkeypatch.setenv("SIMPLEPROXY_CONFIG", str(bad))
    with pytest.raises(simpleproxy.ConfigError, match=r"routes\[0\]\.upstream"):
        wsgi_module.make_application()


def test_paste_deploy_loads_the_app_factory(tmp_path, backend) -> None:
    loadapp = pytest.importorskip("paste.deploy").loadapp
    write_config(tmp_path, backend)
    ini = tmp_path / "site.ini"
    ini.write_text("[app:main]\nuse = egg:simpleproxy\nconfig = proxy.yaml\n")
    app = loadapp(f"config:{ini}")
    server, port = _serve_in_thread(app)
    try:
        assert_routes(port, "404")
    finally:
        server.close()
        app.close()
    with pytest.raises(TypeError, match="threads"):
        ini.write_text("[app:main]\nuse = egg:simpleproxy\nconfig = proxy.yaml\nthreads = 4\n")
        loadapp(f"config:{ini}")


def test_health_checks_start_in_each_forked_worker_not_in_the_parent(tmp_path, backend) -> None:
    """Background threads start on a worker's first request, so a pre-forking server's workers each get one."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    code = """
import os, threading, simpleproxy, simpleproxy.wsgi as w
app = w.application
assert not [t for t in threading.enumerate() if t.name == "simpleproxy-health"], "started in the parent"
pid = os.fork()
if pid == 0:
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/x", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "h",
           "wsgi.input": None, "wsgi.url_scheme": "http", "REMOTE_ADDR": "127.0.0.1", "QUERY_STRING": ""}
    b"".join(app(env, lambda *a: None))
    alive = [t for t in threading.enumerate() if t.name == "simpleproxy-health" and t.is_alive()]
    os._exit(0 if alive else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""
    data = yaml.safe_load(write_config(tmp_path, backend).read_text())
    data["upstreams"]["api"]["health"] = {"path": "/api/health", "interval": "1s"}
    config = tmp_path / "health.yaml"
    config.write_text(yaml.safe_dump(data))
    env = dict(os.environ, SIMPLEPROXY_CONFIG=str(config), PYTHONPATH=str(Path(simpleproxy.__file__).parent.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: none run in the parent here
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=LONG_TIMEOUT)
    assert out.returncode == 0 and "child 0" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("host", ["gunicorn", "waitress-serve"])
def test_a_request_just_before_sigterm_is_in_the_access_log(tmp_path, backend, host) -> None:
    """The access log writes its lines in batches; a stop right after a request must not lose its line."""
    access = tmp_path / "access.log"
    config = write_config(tmp_path, backend, log={"access": str(access), "format": "json"})
    if host == "gunicorn":
        if subprocess.run([sys.executable, "-c", "import gunicorn"]).returncode != 0:
            pytest.skip("gunicorn is not installed")
        server = gunicorn(config, "simpleproxy.wsgi:application", "sync", workers=1)
    else:
        server = HostProcess(["-m", "waitress", "--listen=127.0.0.1:0", "--call", "simpleproxy.wsgi:make_application"],
                             config, r"Serving on http://127\.0\.0\.1:(\d+)")
    response, _ = get(server.port, "/api/last-one")
    rid = response.getheader("X-Request-Id")
    server.stop()  # SIGTERM at once, well within the flush interval
    logged = [json.loads(line) for line in access.read_text().splitlines()] if access.exists() else []
    assert [entry["target"] for entry in logged if entry["request_id"] == rid] == ["/api/last-one"], logged


def test_as_middleware_a_route_whose_matchers_refuse_leaves_the_request_to_the_app() -> None:
    from werkzeug.test import Client

    def site(environ: dict, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the site's own"]

    config = config_from_dict({
        "upstreams": {"hooks": {"servers": ["http://127.0.0.1:9"], "timeouts": {"connect": "1s"}}},
        "routes": [{"path": "/hooks", "upstream": "hooks", "match": {"methods": ["POST"]}}],
        "log": {"access": "off"},
    })
    middleware = ProxyMiddleware(site, config)
    try:
        client = Client(middleware)
        assert client.get("/hooks/x").data == b"the site's own"  # GET: no route takes it
        assert client.post("/hooks/x").status_code == 502  # POST: the proxy's (its backend is down)
    finally:
        middleware.close()
