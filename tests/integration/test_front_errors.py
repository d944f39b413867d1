"""Requests the front end refuses before the app runs are answered and logged like every other error.

A malformed head (400), a head or body over the limits (431, 413), an unknown
transfer coding (501) and load shedding (503) get the project's error page
naming our settings, an ``X-Request-Id`` that the page and the access-log line
repeat, and a status line in the request's own HTTP version.
"""

from __future__ import annotations

import re
import socket
import threading

import pytest

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT, held_backend, single_upstream


def exchange(port: int, data: bytes) -> bytes:
    """Send bytes, read until the proxy closes (each of these answers closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=LONG_TIMEOUT) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def checked(answer: bytes, version: bytes, status: int, words: str, log_lines: list[str]) -> str:
    """The answer's status line, id, page and log line agree; -> the request id."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/{version.decode()} {status} "), lines[0]
    fields = dict(line.split(": ", 1) for line in lines[1:])
    rid = fields["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{12}", rid)
    page = body.decode()
    assert page.startswith(f"{status} ") and words in page and page.endswith(f"request id: {rid}\n"), page
    assert fields["Connection"] == "close" and "waitress" not in answer.decode("latin-1").lower()
    logged = [line for line in log_lines if f" {rid} " in line]
    assert len(logged) == 1 and f'" {status} ' in logged[0], log_lines
    return rid


@pytest.mark.parametrize(("version", "raw", "status", "words"), [
    (b"1.1", b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Duplicate header: Host"),
    (b"1.1", b"GET /x HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, "bare LF"),
    (b"1.0", b"GET /x HTTP/1.0\r\nX-Bad : y\r\n\r\n", 400, "Bad Request"),
    (b"1.1", b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "Transfer-Encoding"),
    (b"1.1", b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n", 413,
     "request body over server.max_request_body (1024 bytes)"),
    (b"1.1", b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431,
     "request head over server.max_request_header (8192 bytes)"),
])
def test_refused_heads_get_our_page_an_id_the_version_and_a_log_line(backends, proxy, version, raw, status, words) -> None:
    backend = backends("A")
    p = proxy({**single_upstream(backend.url), "server": {"max_request_body": 1024, "max_request_header": "8KiB"}})
    rid = checked(exchange(p.port, raw), version, status, words, p.log_lines())
    assert backend.seen.empty(), rid  # the backend never saw it


def test_a_body_over_the_limit_with_expect_100_continue_is_refused_before_any_continue(backends, proxy) -> None:
    p = proxy({**single_upstream(backends("A").url), "server": {"max_request_body": 1024}})
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as sock:
        sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # the proxy answers and closes without the body ever being sent
            answer += chunk
    assert b"100 Continue" not in answer
    checked(answer, b"1.1", 413, "server.max_request_body", p.log_lines())


def test_shed_requests_get_our_page_an_id_and_a_log_line(raw_backend, proxy) -> None:
    backend, arrived = held_backend(raw_backend)
    p = proxy({**single_upstream(backend.url), "server": {"threads": 1, "max_queue": 1}})
    holders = [socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) for _ in range(2)]
    try:
        holders[0].sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")  # takes the one thread
        assert arrived.get(timeout=SHORT_TIMEOUT)
        holders[1].sendall(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")  # waits in the queue
        until_queued(p, 1)
        answer = exchange(p.port, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")  # past max_queue
        checked(answer, b"1.1", 503, "overloaded", p.log_lines())
        assert b"Retry-After: 1\r\n" in answer
    finally:
        backend.release.set()
        for sock in holders:
            sock.close()


def until_queued(p, depth: int) -> None:
    """Ready-check: ``depth`` requests wait for a worker thread."""
    done = threading.Event()
    for _ in range(int(SHORT_TIMEOUT / 0.01)):
        if p.server.queue_depth() >= depth:
            return
        done.wait(0.01)
    raise AssertionError("the request never queued")


def test_a_refused_body_still_arriving_does_not_cost_the_client_its_answer(backends, proxy) -> None:
    """Closing with the client's bytes unread would send a reset that can destroy the 413 on its way:
    the proxy ends its side and reads the rest away first (a lingering close, as nginx does)."""
    p = proxy({**single_upstream(backends("A").url), "server": {"max_request_body": 1024}})
    body = b"u" * (512 * 1024)
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as sock:
        sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body))
        sender = threading.Thread(target=lambda: sock.sendall(body))  # as curl keeps sending
        sender.start()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sender.join(LONG_TIMEOUT)
    checked(answer, b"1.1", 413, "server.max_request_body", p.log_lines())
