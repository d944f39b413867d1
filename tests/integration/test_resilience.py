"""Upstreams that survive: retries elsewhere, ejection, health checks, limits, budgets."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections import Counter
from typing import Iterator

import pytest

from conftest import LONG_TIMEOUT, EchoBackend, held_backend, read_request


_HELD: list[socket.socket] = []


@pytest.fixture(autouse=True, scope="module")
def _release_held_ports() -> Iterator[None]:
    yield
    while _HELD:
        _HELD.pop().close()


def dead_url() -> str:
    """A port bound but never listening: connections are refused, and no later bind can take it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return f"http://127.0.0.1:{s.getsockname()[1]}"


def messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_server_killed_mid_stream_costs_no_client_errors(backends, proxy, caplog) -> None:
    caplog.set_level(logging.WARNING)
    a, b, c = backends("A"), backends("B"), backends("C")
    p = proxy({"upstreams": {"app": {"servers": [a.url, b.url, c.url]}}, "routes": [{"upstream": "app"}]})
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)
    statuses: Counter = Counter()
    served: Counter = Counter()
    for i in range(2000):
        if i == 500:
            b.kill()
        conn.request("GET", f"/item/{i}")
        response = conn.getresponse()
        statuses[response.status] += 1
        served[json.loads(response.read())["name"]] += 1
    conn.close()
    assert statuses == Counter({200: 2000})  # every failure was retried elsewhere
    b_name = b.url.removeprefix("http://")
    assert len(messages(caplog, "ejected for 10.0s")) == 1
    assert len(messages(caplog, f"from {b_name}")) == 3  # three failed tries, then no more traffic
    assert served["B"] < 200 and served["A"] > 850 and served["C"] > 850


def test_posts_are_not_retried_but_gets_are(backends, proxy) -> None:
    alive = backends("alive")
    p = proxy({"upstreams": {"app": {"servers": [dead_url(), alive.url], "passive": {"failures": 100}}},
               "routes": [{"upstream": "app"}]})
    assert p.request("POST", "/", body=b"once")[0].status == 502  # round robin starts on the dead one
    p.request("GET", "/")  # (the alive one's turn)
    response, body = p.request("GET", "/")  # the dead one's turn again: retried
    assert response.status == 200 and json.loads(body)["name"] == "alive"


def test_the_retry_budget_caps_retries_in_a_full_outage(proxy, caplog) -> None:
    caplog.set_level(logging.WARNING)
    p = proxy({
        "upstreams": {"app": {
            "servers": [dead_url(), dead_url(), dead_url()],
            "passive": {"failures": 1000},  # keep them in rotation: the budget alone must hold
            "retries": {"count": 2, "budget": "20%", "min_retries": 3},
        }},
        "routes": [{"upstream": "app"}],
    })
    for _ in range(50):
        assert p.request("GET", "/")[0].status == 502
    retried = len(messages(caplog, "retrying on another server"))
    assert 3 <= retried <= 3 + 10  # the floor plus 20% of 50, not 2 x 50
    assert messages(caplog, "retry budget spent")


def test_a_lone_server_restarting_is_tried_at_once_not_held_out_for_the_ejection(proxy) -> None:
    """Panic routing: every server ejected by the passive breaker still gets the requests
    (nginx never marks a lone server down), so the first request after a restart succeeds."""
    backend = EchoBackend("A")
    port = backend.server_address[1]
    p = proxy({"upstreams": {"app": {"servers": [backend.url], "timeouts": {"connect": "1s", "read": "5s"},
                                     "passive": {"failures": 3, "ejection": "10s"}}},
               "routes": [{"upstream": "app"}]})
    assert p.request("GET", "/")[0].status == 200
    backend.kill()  # a restart: refused for a while
    upstream = p.app.state.upstreams["app"]
    for _ in range(6):
        started = time.monotonic()
        response, body = p.request("GET", "/")
        assert response.status == 502 and b"refused" in body  # tried, not a 503 for the ejection
        assert time.monotonic() - started < 1.0  # never longer than the connect timeout
    assert upstream.in_panic() and upstream.panicked >= 3
    backend = EchoBackend("B", port=port)  # back on the same port
    try:
        response, body = p.request("GET", "/")
        assert response.status == 200 and json.loads(body)["name"] == "B"
        assert not upstream.in_panic()  # the success closed the breaker
    finally:
        backend.stop()


def test_servers_that_active_checks_hold_down_are_a_quick_503(raw_backend, proxy) -> None:
    def failing_check(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")

    backend = raw_backend(failing_check)
    p = proxy({"upstreams": {"app": {"servers": [backend.url],
                                     "health": {"path": "/health", "start": "unhealthy"}}},
               "routes": [{"upstream": "app"}]})
    response, body = p.request("GET", "/")
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert b"no available server" in body


def test_max_connections_per_server(raw_backend, proxy) -> None:
    backend, arrived = held_backend(raw_backend)
    p = proxy({"upstreams": {"app": {"servers": [backend.url], "max_connections": 1}},
               "routes": [{"upstream": "app"}]})
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(status=p.request("GET", "/")[0].status))
    thread.start()
    assert arrived.get(timeout=LONG_TIMEOUT)
    response, _ = p.request("GET", "/")
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    backend.release.set()
    thread.join(LONG_TIMEOUT)
    assert first == {"status": 200}


def test_active_checks_take_a_server_out_and_bring_it_back(raw_backend, proxy) -> None:
    health = {"status": 200}

    def flaky(conn: socket.socket) -> None:
        while head := read_request(conn):
            path = head.split(b" ", 2)[1]
            status = health["status"] if path == b"/healthz" else 200
            body = b'{"name": "flaky"}'
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))

    flaky_backend = raw_backend(flaky)
    p = proxy({
        "upstreams": {"app": {
            "servers": [flaky_backend.url, dead_url()],
            "health": {"path": "/healthz", "interval": "1h", "timeout": "2s",
                       "healthy_threshold": 2, "unhealthy_threshold": 2},
        }},
        "routes": [{"upstream": "app"}],
    })
    upstream = p.app.state.upstreams["app"]
    checker = upstream.checker
    flaky_server, dead_server = upstream.servers
    for _ in range(2):
        checker.run_once()  # deterministic rounds (the thread's own rounds are an hour apart)
    assert flaky_server.check.healthy and not dead_server.check.healthy
    assert all(p.request("GET", "/")[0].status == 200 for _ in range(4))  # only flaky gets traffic
    health["status"] = 503
    for _ in range(2):
        checker.run_once()
    assert not flaky_server.check.healthy
    assert p.request("GET", "/")[0].status == 503  # nobody left
    health["status"] = 200
    checker.run_once()
    assert not flaky_server.check.healthy  # one good answer is not enough
    checker.run_once()
    assert flaky_server.check.healthy
    assert p.request("GET", "/")[0].status == 200


def test_route_timeouts_override_the_upstream(raw_backend, proxy) -> None:
    def silent(conn: socket.socket) -> None:
        while read_request(conn):
            backend.release.wait(LONG_TIMEOUT)

    backend = raw_backend(silent)
    p = proxy({
        "upstreams": {"app": {"servers": [backend.url], "timeouts": {"connect": "5s", "read": "30s"},
                              "passive": {"failures": 100}}},
        "routes": [
            {"path": "/read", "upstream": "app", "timeouts": {"read": "200ms"}},
            {"path": "/total", "upstream": "app", "timeouts": {"total": "300ms"}},
        ],
    })
    response, body = p.request("GET", "/read")
    assert response.status == 504 and b"upstream read timed out" in body
    response, body = p.request("GET", "/total")
    assert response.status == 504 and b"total deadline exceeded" in body


def test_a_total_deadline_cuts_a_slow_body(raw_backend, proxy) -> None:
    def trickle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
        backend.release.wait(LONG_TIMEOUT)

    backend = raw_backend(trickle)
    p = proxy({"upstreams": {"app": {"servers": [backend.url]}},
               "routes": [{"upstream": "app", "timeouts": {"total": "300ms"}}]})
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200
    try:
        data = response.read()
    except http.client.IncompleteRead as exc:
        data = exc.partial
    assert data == b"first"  # cut at the deadline, not after the 30 s read timeout
    conn.close()
