"""The application core without sockets: chains, local answers, error pages."""

from __future__ import annotations

import io

from werkzeug.test import Client

from simpleproxy.app import ProxyApp, compose
from simpleproxy.config import config_from_dict
from simpleproxy.observe.accesslog import AccessLog
from simpleproxy.response import Response


def call(app: ProxyApp, path: str, **extra: object) -> tuple[str, dict[str, str], bytes]:
    """A GET through the app in this process (werkzeug's test client: it also closes the body)."""
    answer = Client(app).get(path, headers={"Host": "h"}, environ_base={"REMOTE_ADDR": "127.0.0.1", **extra})
    return answer.status, dict(answer.headers), answer.data


def test_filters_run_in_order_around_the_terminal_handler() -> None:
    order = []

    def outer(request: object, next) -> Response:
        order.append("outer")
        return next(request)

    def deny(request: object, next) -> Response:
        order.append("deny")
        return Response("403 Forbidden", [], [b"no"])

    def terminal(request: object) -> Response:
        order.append("terminal")
        return Response("200 OK", [], [b"yes"])

    assert compose([outer, deny], terminal)("req").status == "403 Forbidden"
    assert order == ["outer", "deny"]
    assert compose([outer], terminal)("req").body == [b"yes"]


def test_respond_routes_and_short_error_pages_with_request_ids() -> None:
    log = io.StringIO()
    app = ProxyApp(
        config_from_dict({"routes": [{"host": "h", "path": "/hi", "respond": {"status": 201, "body": "hello"}}]}),
        access_log=AccessLog(log),
    )
    status, headers, body = call(app, "/hi")
    assert (status, body) == ("201 Created", b"hello") and len(headers.pop("X-Request-Id")) == 12
    assert headers == {"Content-Type": "text/plain; charset=utf-8", "Content-Length": "5"}
    status, headers, body = call(app, "/nothing")
    assert status == "404 Not Found"
    assert body.decode() == f"404 Not Found: no route for this host and path\nrequest id: {headers['X-Request-Id']}\n"
    status, _, body = call(app, "/a%zz")
    assert status == "400 Bad Request" and b"Traceback" not in body
    app.access_log.flush()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith('127.0.0.1 - - [') and '"GET /hi HTTP/1.1" 201 5 ' in lines[0]


def test_access_log_escapes_what_the_client_controls() -> None:
    log = io.StringIO()
    app = ProxyApp(config_from_dict({"routes": [{"respond": {}}]}), access_log=AccessLog(log))
    call(app, "/", HTTP_USER_AGENT='x"\n127.0.0.1 - - forged')
    app.access_log.flush()
    (line,) = log.getvalue().splitlines()
    assert '"x\\"\\x0a127.0.0.1 - - forged"' in line


def test_background_threads_restart_after_a_fork(monkeypatch) -> None:
    """A pre-forked worker gets its own access-log flusher (fork itself is simulated)."""
    from simpleproxy import forks

    log = AccessLog(io.StringIO(), flush_interval=3600)
    environ = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/", "REMOTE_ADDR": "127.0.0.1"}
    log.log(environ, "200 OK", 0, 0.0, "-")
    started = log._flusher_generation
    assert started == forks.generation
    monkeypatch.setattr(forks, "generation", forks.generation + 1)  # what the at-fork hook does
    log.log(environ, "200 OK", 0, 0.0, "-")
    assert log._flusher_generation == started + 1  # a flusher for the child
    log.close()


def test_access_log_to_a_file_is_appended_and_flushed_on_close(tmp_path) -> None:
    path = tmp_path / "access.log"
    path.write_text("earlier line\n")
    log = AccessLog.to(str(path))
    log.log({"REQUEST_METHOD": "GET", "REQUEST_URI": "/f", "REMOTE_ADDR": "192.0.2.1"}, "204 No Content", 0, 0.5, "-")
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "earlier line" and lines[1].startswith("192.0.2.1 - - [") and '"GET /f -" 204 0' in lines[1]
    assert AccessLog.to("off").stream is None


def test_requests_are_counted_only_when_an_admin_listener_can_show_them() -> None:
    routes = {"routes": [{"respond": {}}], "log": {"access": "off"}}
    assert ProxyApp(config_from_dict(routes)).stats is None
    counted = ProxyApp(config_from_dict({**routes, "admin": {"listen": "127.0.0.1:0"}}))
    call(counted, "/")
    assert counted.stats is not None and counted.stats.snapshot()[0] == {("*/", "200"): 1}
