"""Bad input gets a clear answer, a bad backend a 502/504, and nothing hangs or leaks."""

from __future__ import annotations

import http.client
import queue
import select
import socket
import struct
import sys
import threading

import pytest

from conftest import LONG_TIMEOUT, read_request, single_upstream


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_upstream_is_502_with_reason_and_request_id(proxy, caplog) -> None:
    p = proxy(single_upstream(f"http://127.0.0.1:{free_port()}"))
    response, body = p.request("GET", "/")
    rid = response.headers["X-Request-Id"]
    assert response.status == 502
    assert body.decode() == f"502 Bad Gateway: upstream refused the connection\nrequest id: {rid}\n"
    assert any(rid in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)


def test_reset_upstream_is_502(raw_backend, proxy) -> None:
    def reset(conn: socket.socket) -> None:
        read_request(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST instead of FIN

    p = proxy(single_upstream(raw_backend(reset).url))
    response, body = p.request("POST", "/", body=b"not retried")
    assert response.status == 502 and b"upstream" in body


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux dropping SYNs to a full accept queue")
def test_unanswered_connect_is_504_after_the_connect_timeout(proxy) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(2):  # fill the accept queue; the proxy's SYN is then dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        p = proxy(single_upstream(f"http://127.0.0.1:{port}", timeouts={"connect": "300ms", "read": "5s"}))
        response, body = p.request("GET", "/")
        assert response.status == 504 and b"connect timed out" in body
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_silent_upstream_is_504_after_the_read_timeout(raw_backend, proxy) -> None:
    def silent(conn: socket.socket) -> None:
        read_request(conn)
        backend.release.wait(LONG_TIMEOUT)

    backend = raw_backend(silent)
    p = proxy(single_upstream(backend.url, timeouts={"connect": "1s", "read": "300ms"}))
    response, body = p.request("GET", "/")
    assert response.status == 504 and b"upstream read timed out" in body


@pytest.mark.parametrize(
    "answer, words",
    [
        (b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: session=stolen\r\nContent-Length: 0\r\n\r\n", b"malformed response header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"both Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", b"conflicting Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", b"Content-Length"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", b"malformed response header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", b"invalid chunk size"),
        (b"garbage\r\n\r\n", b"malformed status line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", b"unexpected 101"),
        (b"", b"upstream closed the connection"),
    ],
)
def test_ambiguous_or_broken_answers_are_refused_with_502(raw_backend, proxy, answer: bytes, words: bytes) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(answer)

    p = proxy(single_upstream(raw_backend(script).url))
    response, body = p.request("GET", "/")
    assert response.status == 502 and words in body
    assert response.headers.get_all("Set-Cookie") is None


def test_interim_responses_are_skipped_where_early_hints_are_off(raw_backend, proxy) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    p = proxy(single_upstream(raw_backend(script).url, early_hints=False))
    response, body = p.request("GET", "/")  # http.client would take a 103 for the answer
    assert (response.status, body) == (200, b"ok")


def test_backend_closing_mid_body_truncates_the_client_visibly(raw_backend, proxy) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 70000)

    p = proxy(single_upstream(raw_backend(script).url))
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)
    conn.request("GET", "/")
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()


def test_backend_closing_a_chunked_body_never_looks_complete(raw_backend, proxy) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n" + b"y" * 70000)

    p = proxy(single_upstream(raw_backend(script).url))
    raw = p.raw(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and not raw.endswith(b"0\r\n\r\n")


def test_client_leaving_mid_response_closes_the_upstream_connection(raw_backend, proxy) -> None:
    outcome: queue.Queue = queue.Queue()

    def endless(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        try:
            while True:  # the proxy must close this connection, not park it in the pool
                conn.sendall(b"x" * 65536)
        except OSError:
            outcome.put("closed")

    backend = raw_backend(endless)
    p = proxy(single_upstream(backend.url))
    client = socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT)
    client.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert client.recv(65536).startswith(b"HTTP/1.1 200")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # a reset: the client is gone
    assert outcome.get(timeout=LONG_TIMEOUT) == "closed"


def test_stale_keepalive_connection_is_retried_for_idempotent_requests(raw_backend, proxy) -> None:
    """A backend that drops an idle connection between requests costs no error."""

    def one_per_connection(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        # then close without "Connection: close", as a backend's idle timeout would

    backend = raw_backend(one_per_connection)
    p = proxy(single_upstream(backend.url))
    for _ in range(3):
        response, body = p.request("GET", "/")
        assert (response.status, body) == (200, b"ok")
    assert backend.accepted == 3


def test_every_idle_connection_closed_by_the_backend_costs_no_error(raw_backend, proxy) -> None:
    """After a quiet spell a backend may have closed every pooled connection. The pool sees
    each end of file before lending a connection again, so neither a GET nor a POST (which
    could not be resent) meets a closed one."""
    held = 3
    together = threading.Barrier(held, timeout=LONG_TIMEOUT)
    closed: queue.Queue = queue.Queue()

    def one_per_connection(conn: socket.socket) -> None:
        head = read_request(conn)
        if b"X-Hold" in head:
            together.wait()  # so that the proxy holds three connections at once
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.close()  # without "Connection: close", as a backend's idle timeout would
        closed.put(head)

    backend = raw_backend(one_per_connection)
    p = proxy(single_upstream(backend.url))
    answers: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=lambda: answers.put(p.request("GET", "/", headers={"X-Hold": "1"})[0].status))
               for _ in range(held)]
    for thread in threads:
        thread.start()
    assert [answers.get(timeout=LONG_TIMEOUT) for _ in range(held)] == [200] * held
    for _ in range(held):
        closed.get(timeout=LONG_TIMEOUT)  # every pooled connection is now closed at the backend
    until_every_idle_connection_has_news(p)
    response, body = p.request("GET", "/")
    assert (response.status, body) == (200, b"ok")
    closed.get(timeout=LONG_TIMEOUT)  # the GET's connection, which went back to the pool, too
    until_every_idle_connection_has_news(p)
    response, body = p.request("POST", "/", body=b"data")
    assert (response.status, body) == (200, b"ok")
    assert backend.accepted == held + 2  # the GET and the POST each on a new connection


def until_every_idle_connection_has_news(p) -> None:
    """Ready-check: each idle pooled connection's end of file has reached the proxy's side."""
    sockets = [conn.sock for upstream in p.app.state.upstreams.values() for server in upstream.servers
               for conn in server._idle.queue if conn is not None and conn.sock is not None]
    for sock in sockets:
        assert select.select([sock], [], [], LONG_TIMEOUT)[0], "an idle connection's close never arrived"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"POST / HTTP/1.1\r\nHost: h\r\nX_Pad: 1\r\nContent-Type: a\r\nContent-Type: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
    ],
)
def test_malformed_requests_get_400_and_reach_no_backend(backends, proxy, request_bytes: bytes) -> None:
    backend = backends()
    p = proxy(single_upstream(backend.url))
    assert status_of(p.raw(request_bytes)) == 400
    assert backend.seen.empty()


def test_body_over_the_limit_is_413_before_any_backend(backends, proxy) -> None:
    backend = backends()
    p = proxy({**single_upstream(backend.url), "server": {"max_request_body": "1KiB"}})
    raw = p.raw(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048)
    assert status_of(raw) == 413
    assert backend.seen.empty()


def test_a_chunked_request_body_is_forwarded_with_its_length(backends, proxy) -> None:
    backend = backends()
    p = proxy(single_upstream(backend.url))
    raw = p.raw(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert status_of(raw) == 200
    assert b'["Content-Length", "5"]' in raw and b'"body": "abcde"' in raw


def test_no_traceback_reaches_client_or_log_on_a_cut_body(raw_backend, proxy, caplog) -> None:
    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    p = proxy(single_upstream(raw_backend(script).url))
    raw = p.raw(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert raw.endswith(b"abc")
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("waitress"))
    assert any("upstream closed mid-body" in r.getMessage() for r in caplog.records)
