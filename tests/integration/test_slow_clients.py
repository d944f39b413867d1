"""Slow clients cost a connection and a bounded buffer, never a worker thread or a new client's turn.

A response waits for a slow reader in the connection's buffer (spilled to a
file), so its worker thread serves others; a request or a response that moves
slower than the minimum rates is cut; at the connection limit the oldest idle
connections make room. Each on real sockets against the proxy.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import pytest

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT, read_request, single_upstream
from simpleproxy.frontend.listeners import NOTSENT_LOWAT, UNSENT_LOWAT

MIB = 1024 * 1024


def until(condition, what: str, timeout: float = LONG_TIMEOUT) -> None:
    """Ready-check on the proxy's state, a hundredth of a second apart."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        threading.Event().wait(0.01)


def large_backend(raw_backend, size: int, released: threading.Event | None = None):
    """A backend answering every request with ``size`` bytes; ``released`` is set once it sent them all."""
    block = b"r" * 65536

    def script(conn: socket.socket) -> None:
        while head := read_request(conn):
            if b"/small" in head:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(block)):
                conn.sendall(block)
            if released is not None:
                released.set()

    return raw_backend(script)


def small_receiver() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that takes little at a time
    return sock


def test_a_slow_reader_does_not_hold_the_worker_thread(raw_backend, proxy) -> None:
    size, sent_all = 32 * MIB, threading.Event()
    backend = large_backend(raw_backend, size, sent_all)
    p = proxy({**single_upstream(backend.url), "server": {"threads": 1}})
    reader = small_receiver()
    reader.settimeout(LONG_TIMEOUT)
    reader.connect(("127.0.0.1", p.port))
    reader.sendall(b"GET /large HTTP/1.1\r\nHost: h\r\n\r\n")  # and then reads nothing for now
    assert sent_all.wait(LONG_TIMEOUT)  # the backend was read at its own speed, not the client's
    started = time.monotonic()
    response, body = p.request("GET", "/small")  # the one worker thread is free for another client
    assert (response.status, body) == (200, b"ok") and time.monotonic() - started < SHORT_TIMEOUT
    received = 0
    head = b""
    while b"\r\n\r\n" not in head:
        head += reader.recv(65536)
    received = len(head.partition(b"\r\n\r\n")[2])
    while received < size:  # the whole answer is still there, from the buffer and its file
        chunk = reader.recv(MIB)
        assert chunk, f"cut after {received} bytes"
        received += len(chunk)
    reader.close()
    assert received == size


@pytest.mark.skipif(NOTSENT_LOWAT is None, reason="no bound on a socket's unsent bytes here")
def test_a_slow_readers_waiting_response_is_counted_not_left_in_the_kernel(raw_backend, proxy) -> None:
    """The kernel would take up to 4 MiB (its loopback send buffer) of a response no one reads, outside
    ``server.max_buffered_total``; bounded, it keeps at most UNSENT_LOWAT and the proxy counts the rest."""
    size, sent_all = 8 * MIB, threading.Event()
    p = proxy(single_upstream(large_backend(raw_backend, size, sent_all).url))
    reader = small_receiver()
    reader.connect(("127.0.0.1", p.port))
    reader.sendall(b"GET /large HTTP/1.1\r\nHost: h\r\n\r\n")  # and then reads nothing
    assert sent_all.wait(LONG_TIMEOUT)
    until(lambda: p.server.front.waiting_output() >= size - UNSENT_LOWAT - 64 * 1024,
          f"the kernel took more than {UNSENT_LOWAT} bytes: only {p.server.front.waiting_output()} are counted")
    reader.close()


def test_a_slow_reader_that_resets_while_its_answer_waits_is_closed_quietly(raw_backend, proxy, caplog) -> None:
    """A send that fails closes the channel and empties its buffers; nothing is counted as sent after that
    (it once counted the whole buffer, lifted the bound on a socket gone, and waitress logged a traceback)."""
    caplog.set_level(logging.ERROR)
    p = proxy(single_upstream(large_backend(raw_backend, 8 * MIB).url))
    for _ in range(5):
        reader = small_receiver()
        reader.connect(("127.0.0.1", p.port))
        reader.sendall(b"GET /large HTTP/1.1\r\nHost: h\r\n\r\n")
        until(lambda: p.server.front.waiting_output() > 0, "no answer waits for the reader")
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reader.close()  # a reset, with most of the answer still waiting
        until(lambda: p.server.open_connections() == 0, "the connection stayed open")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.skipif(NOTSENT_LOWAT is None, reason="no bound on a socket's unsent bytes here")
def test_a_client_that_reads_gets_the_whole_send_queue_back(raw_backend, proxy) -> None:
    p = proxy(single_upstream(large_backend(raw_backend, 2 * MIB).url))
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as client:
        until(lambda: p.server.open_connections() == 1, "the connection was not accepted")
        (channel,) = p.server.front._connections()
        bound = lambda: channel.socket.getsockopt(socket.IPPROTO_TCP, NOTSENT_LOWAT)  # noqa: E731
        assert bound() == UNSENT_LOWAT  # inherited from the listener
        client.sendall(b"GET /large HTTP/1.1\r\nHost: h\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += client.recv(65536)
        left = 2 * MIB - len(received.partition(b"\r\n\r\n")[2])
        while left > 0:
            chunk = client.recv(MIB)
            assert chunk
            left -= len(chunk)
        until(lambda: bound() == 0, "the bound was never lifted")  # the system's default: no bound


def test_a_trickled_body_is_cut_at_the_minimum_request_rate(backends, proxy, caplog) -> None:
    caplog.set_level(logging.INFO, "simpleproxy.floods")
    backend = backends("A")
    p = proxy({**single_upstream(backend.url), "server": {"min_request_rate": "10KiB/s", "min_rate_grace": "500ms"}})
    slow = socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT)
    slow.sendall(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
    stop = threading.Event()

    def trickle() -> None:  # a byte every 50 ms: the idle timer alone would wait for ever
        while not stop.wait(0.05):
            try:
                slow.sendall(b"b")
            except OSError:
                return

    started = time.monotonic()
    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        assert p.request("GET", "/")[0].status == 200  # others are served meanwhile
        assert slow.recv(65536) == b""  # cut, without an answer
    finally:
        stop.set()
        thread.join(LONG_TIMEOUT)
        slow.close()
    assert 0.5 < time.monotonic() - started < 4
    assert backend.seen.qsize() == 1  # only the ordinary GET reached it
    assert any("under server.min_request_rate" in r.getMessage() for r in caplog.records)


def test_a_response_read_too_slowly_is_cut_at_the_minimum_response_rate(raw_backend, proxy, caplog) -> None:
    caplog.set_level(logging.INFO, "simpleproxy.floods")
    size = 32 * MIB
    p = proxy({**single_upstream(large_backend(raw_backend, size).url),
               "server": {"min_response_rate": "100KiB/s", "min_rate_grace": "500ms"}})
    reader = small_receiver()
    reader.settimeout(LONG_TIMEOUT)
    reader.connect(("127.0.0.1", p.port))
    reader.sendall(b"GET /large HTTP/1.1\r\nHost: h\r\n\r\n")
    until(lambda: any("under server.min_response_rate" in r.getMessage() for r in caplog.records), "never cut")
    until(lambda: p.server.open_connections() == 0, "the connection stayed open")
    received = 0
    try:
        while chunk := reader.recv(MIB):  # what was under way before the cut, then the end
            received += len(chunk)
    except ConnectionResetError:
        pass
    reader.close()
    assert received < size


def test_at_the_connection_limit_the_oldest_idle_connections_make_room(backends, proxy, caplog) -> None:
    caplog.set_level(logging.WARNING, "simpleproxy.floods")
    p = proxy({**single_upstream(backends("A").url), "server": {"connection_limit": 20}})
    idle = [socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) for _ in range(25)]
    try:
        started = time.monotonic()
        response, _ = p.request("GET", "/")
        assert response.status == 200 and time.monotonic() - started < SHORT_TIMEOUT
        oldest = idle[0]
        oldest.settimeout(SHORT_TIMEOUT)
        assert oldest.recv(1) == b""  # the first idle connection was the one closed first
        assert any("connection limit (20) reached" in r.getMessage() for r in caplog.records)
    finally:
        for sock in idle:
            sock.close()


def test_with_5000_idle_keep_alive_connections_a_new_client_is_served_within_a_second(run_process) -> None:
    resource = pytest.importorskip("resource", reason="POSIX: this process needs 5,300 open files")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 5300:
        pytest.skip(f"needs 5,300 open files in this process (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 5300), hard))
    proxy = run_process("routes: [{respond: {status: 200, body: ok}}]\nlog: {access: 'off'}\n")
    assert proxy.started, "".join(proxy.said)
    idle: list[socket.socket] = []
    try:
        for _ in range(10):  # each asks once, as a browser does, then keeps its connection open
            batch = [socket.create_connection(("127.0.0.1", proxy.port), timeout=LONG_TIMEOUT) for _ in range(500)]
            for sock in batch:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            for sock in batch:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            idle += batch
        slowest = 0.0
        for _ in range(5):
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=LONG_TIMEOUT) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            slowest = max(slowest, time.monotonic() - started)
            assert answer.startswith(b"HTTP/1.1 200 ")
        assert slowest < 1.0, f"a new client waited {slowest:.2f} s"
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_above_the_loops_small_map_every_connection_is_heard_again(proxy) -> None:
    """Past loop.SMALL sockets the loop asks only what changed: a connection whose request a worker
    answered is listened to again, a pipelined second request and one sent later are both
    answered, and a connection the client closes is forgotten (frontend/loop.py)."""
    from simpleproxy.frontend.loop import FULL_EVERY, SMALL

    p = proxy({"routes": [{"respond": {"status": 200, "body": "ok"}}], "log": {"access": "off"}})
    count = SMALL + 100
    conns = [socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) for _ in range(count)]
    try:
        for round_ in range(3):
            for i, sock in enumerate(conns):
                twice = round_ == 1 and i % 2  # some pipeline two requests at once
                sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * (2 if twice else 1))
            for i, sock in enumerate(conns):
                expected = 2 if round_ == 1 and i % 2 else 1
                answer = b""
                while answer.count(b"HTTP/1.1 200 ") < expected or not answer.endswith(b"ok"):
                    chunk = sock.recv(65536)
                    assert chunk, f"connection {i} closed in round {round_}"
                    answer += chunk
        for sock in conns[: count // 2]:  # half leave; the rest are still served
            sock.close()
        for sock in conns[count // 2:]:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        # A request right after an answer is heard at once, not at the next pass that asks every
        # socket (FULL_EVERY): the loop knew the connection's worker was done.
        waits = []
        for sock in conns[count // 2: count // 2 + 21]:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            waits.append(time.monotonic() - started)
        assert sorted(waits)[10] < FULL_EVERY / 5, f"median wait {sorted(waits)[10]:.3f} s"
    finally:
        for sock in conns:
            sock.close()


def test_over_the_output_budget_the_slowest_readers_are_closed(raw_backend, proxy, caplog) -> None:
    caplog.set_level(logging.INFO, "simpleproxy.floods")
    size = 16 * MIB  # each waits for its client less what the kernel holds unsent (listeners.UNSENT_LOWAT)
    p = proxy({**single_upstream(large_backend(raw_backend, size).url),
               "server": {"threads": 1, "max_buffered_total": "16MiB", "min_response_rate": 0}})
    readers = []
    for _ in range(3):  # 3 x 16 MiB asked by clients that read nothing, against a budget of 16
        reader = small_receiver()
        reader.settimeout(LONG_TIMEOUT)
        reader.connect(("127.0.0.1", p.port))
        reader.sendall(b"GET /large HTTP/1.1\r\nHost: h\r\n\r\n")
        readers.append(reader)
        assert p.request("GET", "/small")[1] == b"ok"  # the one worker was not kept waiting for it
    until(lambda: any("over server.max_buffered_total" in r.getMessage() for r in caplog.records), "never shed")
    until(lambda: p.server.open_connections() <= 1, "the slowest readers stayed open")  # one response fits 0.9 x 16
    # Over the budget again, a new response still does not keep the one worker waiting for its client.
    late = small_receiver()
    late.settimeout(LONG_TIMEOUT)
    late.connect(("127.0.0.1", p.port))
    late.sendall(b"GET /large HTTP/1.1\r\nHost: h\r\n\r\n")
    readers.append(late)
    started = time.monotonic()
    assert p.request("GET", "/small")[1] == b"ok" and time.monotonic() - started < SHORT_TIMEOUT
    for reader in readers:
        reader.close()
