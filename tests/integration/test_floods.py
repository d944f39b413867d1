"""Smuggling shapes, oversized and slow requests, connection floods, and load shedding."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT, held_backend, single_upstream


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.") else 0


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),  # obs-fold
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nabcde", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nabcde", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nabcde", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \xd9\xa5\r\n\r\nabcde", 400),  # a non-ASCII digit
    (b"GET / HTTP/1.1\nHost: h\n\n", 400),  # bare LF
    (b"GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400),  # bare CR
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n", 400),  # space before the colon
    (b"GET / HTTP/1.1\r\nHost: h\r\nX\x01A: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),  # HTTP/0.9
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 400),
    (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
])
def test_ambiguous_or_malformed_requests_never_reach_the_backend(backends, proxy, request_bytes, status) -> None:
    backend = backends()
    p = proxy(single_upstream(backend.url))
    assert status_of(p.raw(request_bytes)) == status
    assert backend.seen.empty()


def test_an_oversized_head_is_431(backends, proxy) -> None:
    backend = backends()
    p = proxy(single_upstream(backend.url))
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n")
        assert status_of(sock.recv(100)) == 431
    assert backend.seen.empty()


def wait_for(predicate, timeout: float = LONG_TIMEOUT) -> None:
    """A ready-check on server state that has no event to wait on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.005)


def test_a_client_past_its_connection_limit_gets_503(backends, proxy) -> None:
    p = proxy({**single_upstream(backends().url), "server": {"max_connections_per_client": 3}})
    held = [socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) for _ in range(3)]
    for sock in held:  # each is answered, so each was accepted and counted
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert status_of(sock.recv(65536)) == 200
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as fourth:
        answer = fourth.recv(65536)
        assert status_of(answer) == 503 and b"too many connections" in answer
    held.pop().close()
    open_per_client = p.server.front.open_per_client
    wait_for(lambda: open_per_client.get("127.0.0.1") == 2)  # the server saw it close
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as again:  # a slot is free again
        again.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert status_of(again.recv(65536)) == 200
    for sock in held:
        sock.close()


def test_requests_past_the_queue_bound_get_a_quick_503(raw_backend, proxy) -> None:
    backend, arrived = held_backend(raw_backend)
    p = proxy({**single_upstream(backend.url), "server": {"threads": 1, "max_queue": 1}})
    answers: list[int] = []

    def send() -> None:
        with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            answers.append(status_of(sock.recv(65536)))

    first = threading.Thread(target=send)
    first.start()
    assert arrived.get(timeout=SHORT_TIMEOUT)  # the only thread is busy at the backend
    second = threading.Thread(target=send)
    second.start()
    wait_for(lambda: p.server.queue_depth() == 1)  # the second waits in the queue
    started = time.monotonic()
    send()  # the third finds the queue full
    assert answers == [503] and time.monotonic() - started < SHORT_TIMEOUT and p.server.front.shedder.shed == 1
    backend.release.set()
    first.join(LONG_TIMEOUT)
    second.join(LONG_TIMEOUT)
    assert sorted(answers) == [200, 200, 503]


def test_a_slow_request_head_is_cut_while_others_are_served(backends, proxy) -> None:
    p = proxy({**single_upstream(backends().url), "server": {"header_timeout": "500ms"}})
    slow = socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT)
    slow.sendall(b"GET / HTTP/1.1\r\n")
    cut = threading.Event()

    def trickle() -> None:  # one byte every 50 ms: waitress alone would wait forever
        for byte in b"X-Slow: " + b"a" * 400:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            if cut.wait(0.05):
                break

    started = time.monotonic()
    thread = threading.Thread(target=trickle)
    thread.start()
    assert p.request("GET", "/")[0].status == 200  # others are answered meanwhile
    assert slow.recv(65536) == b""  # closed, without an answer
    cut.set()
    elapsed = time.monotonic() - started
    thread.join(LONG_TIMEOUT)
    slow.close()
    assert 0.4 < elapsed < 5


def test_two_hundred_idle_connections_lock_no_one_out(backends, proxy) -> None:
    """waitress's own default (100 connections) would refuse the next client until one times out."""
    p = proxy(single_upstream(backends().url))
    idle = [socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) for _ in range(200)]
    try:
        assert p.request("GET", "/")[0].status == 200
    finally:
        for sock in idle:
            sock.close()
