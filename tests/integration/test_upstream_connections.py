"""A pooled upstream connection is reused only if nothing arrived on it while it sat idle.

Bytes on an idle keep-alive connection answer no request of ours: a backend's
late or unsolicited response, read as the next request's answer, would hand
one client's data to another (response-queue poisoning). Whatever the method,
such a connection is discarded, and so is one where more bytes followed the
end of a response.
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import time

import pytest

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT, read_request, single_upstream


def answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def idle_sockets(p) -> list[socket.socket]:
    """The proxy's idle pooled upstream sockets (in-process proxies only)."""
    return [conn.sock for upstream in p.app.state.upstreams.values() for server in upstream.servers
            for conn in server._idle.queue if conn is not None and conn.sock is not None]


def until_readable(sockets: list[socket.socket]) -> None:
    """Ready-check: what the backend sent has reached the proxy's side of the connection."""
    assert select.select(sockets, [], [], SHORT_TIMEOUT)[0], "nothing arrived on the idle connection"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_late_response_on_an_idle_connection_never_answers_the_next_request(raw_backend, proxy, method) -> None:
    late = threading.Event()
    sent = threading.Event()

    def script(conn: socket.socket) -> None:
        first = backend.accepted == 1
        while read_request(conn):
            conn.sendall(answer(b"first" if first else b"fresh"))
            if first:
                late.wait(LONG_TIMEOUT)
                conn.sendall(answer(b"poisoned"))  # a response nobody asked for, after a quiet spell
                sent.set()
                first = False  # were this connection used again, it would answer "fresh" after "poisoned"

    backend = raw_backend(script)
    p = proxy(single_upstream(backend.url))
    response, body = p.request("GET", "/one")
    assert body == b"first"
    late.set()
    assert sent.wait(LONG_TIMEOUT)
    until_readable(idle_sockets(p))
    response, body = p.request(method, "/two", body=b"data" if method == "POST" else None)
    assert (response.status, body) == (200, b"fresh")
    assert backend.accepted == 2


def test_bytes_after_a_chunked_response_retire_its_connection(raw_backend, proxy) -> None:
    def script(conn: socket.socket) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n"
                         + answer(b"poisoned"))

    backend = raw_backend(script)
    p = proxy(single_upstream(backend.url))
    for _ in range(2):
        response, body = p.request("GET", "/")
        assert (response.status, body) == (200, b"first")
    assert backend.accepted == 2  # the first connection was not lent again


def test_bytes_past_a_content_length_end_the_body_whole_and_retire_the_connection(raw_backend, proxy) -> None:
    size = 200_000  # more than arrives with the head: the body streams
    bodies: queue.Queue = queue.Queue()

    def script(conn: socket.socket) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"b" * size + answer(b"poisoned"))

    backend = raw_backend(script)
    p = proxy(single_upstream(backend.url))
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as client:
        for _ in range(2):  # the client's own connection stays good: its answer was whole
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < size:
                chunk = client.recv(65536)
                assert chunk, "the proxy cut the client"
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % size in head
            bodies.put(body)
    assert [bodies.get_nowait() for _ in range(2)] == [b"b" * size] * 2
    assert backend.accepted == 2


class Conn:
    """What set_timeout needs of a urllib3 connection: its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


def test_the_kernel_keeps_a_plain_sockets_timeouts_and_python_never_polls_first() -> None:
    from simpleproxy.upstream.pool import TIMED_OUT, set_timeout

    ours, peer = socket.socketpair()
    with ours, peer:
        conn = Conn(ours)
        set_timeout(conn, 0.2)
        assert ours.gettimeout() is None  # blocking: recv() is one system call, no poll() before it
        started = time.monotonic()
        with pytest.raises(TIMED_OUT):
            ours.recv(10)
        assert 0.15 < time.monotonic() - started < SHORT_TIMEOUT
        ours.settimeout(5.0)  # as urllib3 does to a pooled connection it borrows (health probes)
        set_timeout(conn, 0.2)
        assert ours.gettimeout() is None  # noticed and set again
        peer.sendall(b"x")
        assert ours.recv(10) == b"x"
        set_timeout(conn, None)  # a tunnel: no timeout at all
        peer.sendall(b"y")
        assert ours.recv(10) == b"y"


def test_a_backend_that_stops_reading_the_request_body_is_a_504(raw_backend, proxy) -> None:
    def never_reads(conn: socket.socket) -> None:
        read_request(conn)
        backend.release.wait(LONG_TIMEOUT)

    backend = raw_backend(never_reads)
    p = proxy({**single_upstream(backend.url, timeouts={"connect": "2s", "read": "300ms"}),
               "server": {"max_request_body": "64MiB"}})
    body = b"z" * (48 * 1024 * 1024)  # more than the socket buffers between proxy and backend hold
    started = time.monotonic()
    response, text = p.request("POST", "/upload", body=body)
    assert response.status == 504 and b"timed out" in text
    assert time.monotonic() - started < LONG_TIMEOUT
