"""forward_auth on real sockets: an auth service decides, its fields reach the backend, never a client's."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import LONG_TIMEOUT, held_backend, single_upstream


class AuthService(ThreadingHTTPServer):
    """Authelia in miniature: a good session cookie is alice; a bad password 401; else a login redirect."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Verify)
        self.asked: queue.Queue = queue.Queue()  #: (method, path, headers) of each question
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Verify(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.asked.put((self.command, self.path, dict(self.headers.items())))  # type: ignore[attr-defined]
        if "session=good" in self.headers.get("Cookie", ""):
            self.send_response(200)
            self.send_header("Remote-User", "alice")
            self.send_header("Remote-Email", "alice@example.com")
        elif self.headers.get("Authorization"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="authelia"')
        else:
            self.send_response(302)
            self.send_header("Location", "https://login.example/?rd=" + self.headers.get("X-Forwarded-Uri", ""))
            self.send_header("Content-Length", "26")
            self.end_headers()
            self.wfile.write(b"<html>please log in</html>")
            return
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Any:
    made = AuthService()
    yield made
    made.shutdown()
    made.server_close()


def guarded(backend_url: str, service_url: str, **extra: Any) -> dict[str, Any]:
    return {**single_upstream(backend_url), "forward_auth": {
        "url": f"{service_url}/api/verify?rd=1", "copy_headers": ["Remote-User", "Remote-Groups", "Remote-Email"],
        **extra}}


def test_a_2xx_lets_the_request_through_with_the_services_fields_and_no_forged_ones(backends, proxy, service) -> None:
    backend = backends()
    p = proxy(guarded(backend.url, service.url))
    forged = {"Cookie": "session=good", "Remote-User": "root", "Remote-Groups": "admins", "X-Forwarded-Uri": "/x"}
    answer, body = p.request("POST", "/app/page?id=7", body=b"payload", headers=forged)
    assert answer.status == 200
    seen = dict(json.loads(body)["headers"])
    assert seen["Remote-User"] == "alice" and seen["Remote-Email"] == "alice@example.com"
    assert "Remote-Groups" not in seen  # the client's copy is gone; the service sent none
    assert json.loads(body)["method"] == "POST" and json.loads(body)["body"] == "payload"  # the request, untouched
    method, path, asked = service.asked.get(timeout=LONG_TIMEOUT)
    assert (method, path) == ("GET", "/api/verify?rd=1")
    assert asked["X-Forwarded-Method"] == "POST" and asked["X-Forwarded-Uri"] == "/app/page?id=7"
    assert asked["X-Forwarded-Proto"] == "http" and asked["X-Forwarded-For"] == "127.0.0.1"
    assert asked["X-Forwarded-Host"] == f"127.0.0.1:{p.port}" and asked["Cookie"] == "session=good"
    assert "Content-Length" not in asked or asked["Content-Length"] == "0"


def test_any_other_answer_goes_to_the_client_as_the_service_sent_it(backends, proxy, service) -> None:
    backend = backends()
    p = proxy(guarded(backend.url, service.url))
    redirect, _ = p.request("GET", "/private")
    assert redirect.status == 302 and redirect.getheader("Location") == "https://login.example/?rd=/private"
    challenge, _ = p.request("GET", "/private", headers={"Authorization": "Basic d3Jvbmc6d3Jvbmc="})
    assert challenge.status == 401 and challenge.getheader("WWW-Authenticate") == 'Basic realm="authelia"'
    assert backend.seen.empty()


def test_a_service_that_is_down_or_slow_is_never_an_open_door(backends, proxy, raw_backend, service) -> None:
    backend = backends()
    down = f"http://127.0.0.1:{service.server_address[1]}"
    service.shutdown()
    service.server_close()
    p = proxy(guarded(backend.url, down))
    assert p.request("GET", "/", headers={"Cookie": "session=good"})[0].status == 502
    slow, arrived = held_backend(raw_backend)
    q = proxy(guarded(backend.url, slow.url, timeout="300ms"))
    answer, _ = q.request("GET", "/", headers={"Cookie": "session=good"})
    assert answer.status == 504 and arrived.get(timeout=LONG_TIMEOUT)
    slow.release.set()
    assert backend.seen.empty()


def test_a_route_may_opt_out_and_the_service_shows_as_an_upstream(backends, proxy, service) -> None:
    backend = backends()
    config = guarded(backend.url, service.url)
    config["routes"] = [{"path": "/public", "upstream": "app", "forward_auth": False}, {"path": "/", "upstream": "app"}]
    p = proxy(config)
    assert p.request("GET", "/public/x")[0].status == 200 and service.asked.empty()
    assert p.request("GET", "/x")[0].status == 302
    assert "forward_auth (127.0.0.1:%d)" % service.server_address[1] in p.app.state.upstreams


def test_a_client_cannot_steer_the_question_or_strip_the_answer(backends, proxy, service) -> None:
    backend = backends()
    p = proxy(guarded(backend.url, service.url))
    tricks = {"Cookie": "session=good", "X-Original-URL": "https://public.example/", "X-Forwarded-Prefix": "/public",
              "Connection": "keep-alive, X-Forwarded-Uri, X-Forwarded-Method, X-Original-URL, Remote-User"}
    answer, body = p.request("DELETE", "/admin/secret?x=1", headers=tricks)
    _, _, asked = service.asked.get(timeout=LONG_TIMEOUT)
    assert asked["X-Forwarded-Uri"] == "/admin/secret?x=1" and asked["X-Forwarded-Method"] == "DELETE"
    assert asked["X-Original-URL"] == f"http://127.0.0.1:{p.port}/admin/secret?x=1" and "X-Forwarded-Prefix" not in asked
    assert answer.status == 200 and dict(json.loads(body)["headers"])["Remote-User"] == "alice"  # not named away


def test_the_service_sees_a_field_it_is_also_to_set(backends, proxy, service) -> None:
    backend = backends()
    p = proxy(guarded(backend.url, service.url, copy_headers=["Authorization"]))
    p.request("GET", "/", headers={"Authorization": "Bearer client-token", "Cookie": "session=good"})
    assert service.asked.get(timeout=LONG_TIMEOUT)[2]["Authorization"] == "Bearer client-token"


def test_a_head_gets_no_body_from_a_get_verdict(backends, proxy, service) -> None:
    backend = backends()
    p = proxy(guarded(backend.url, service.url))
    raw = p.raw(b"HEAD /private HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 302") and rest.startswith(b"HTTP/1.1 302")  # the next answer, not a body
