"""The channel's output hand-off between a worker thread and the loop thread (channel.py).

The loop is asked to write a channel's output only when it can act on it;
while a worker is sending its own output, stock waitress reported the channel
writable and the loop spun (issue 21). And when a client reads slowly, the
loop must still drain what the worker could not send, or a worker waiting at
``server.max_buffered_response`` would wait for ever.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel

from conftest import LONG_TIMEOUT, read_request, single_upstream
from simpleproxy.frontend.channel import ProxyChannel
from simpleproxy.config import config_from_dict
from simpleproxy.frontend import waitress_settings


class Server:
    """What a channel asks of its waitress server, counting the loop's wake-ups."""

    def __init__(self) -> None:
        self.active_channels: dict = {}
        self.triggers = 0

    def pull_trigger(self) -> None:
        self.triggers += 1

    def add_task(self, channel: object) -> None:
        pass


@pytest.fixture
def pair():
    """(a ProxyChannel on one end of a socket pair, the client's end, the server stub)."""
    ours, client = socket.socketpair()
    adj = Adjustments(**waitress_settings(config_from_dict({"routes": [{"respond": {}}]})))
    server = Server()
    channel = ProxyChannel(server, ours, ("127.0.0.1", 40000), adj, map={})
    yield channel, client, server
    channel.handle_close()  # closes its buffers too (a large one spills to a file)
    client.close()


def test_output_a_worker_is_sending_is_not_the_loops_to_write(pair) -> None:
    channel, _, _ = pair
    channel.requests = [object()]  # a request being served
    assert not channel.writable()
    with channel.outbuf_lock:  # a worker inside write_soon, between append and send()
        channel.outbufs[-1].append(b"HTTP/1.1 200 OK\r\n")
        channel.total_outbufs_len += 17
        assert not channel.writable()
        assert HTTPChannel.writable(channel)  # stock waitress: the loop would poll it, find the lock taken, poll again


def test_output_the_worker_could_not_send_is_the_loops_until_it_is_all_sent(pair) -> None:
    channel, client, server = pair
    channel.requests = [object()]
    body = b"y" * (16 * 1024 * 1024)  # more than the socket pair buffers: the client is not reading yet
    channel.write_soon(body)
    assert channel.total_outbufs_len and channel.loop_flushes
    assert channel.writable() and server.triggers >= 1
    received = 0
    client.settimeout(LONG_TIMEOUT)
    while received < len(body):  # the client reads; the loop (here, this thread) writes as it may
        channel.handle_write()
        received += len(client.recv(1024 * 1024))
    assert channel.total_outbufs_len == 0 and not channel.loop_flushes and not channel.writable()


def test_output_after_the_response_or_when_closing_is_the_loops(pair) -> None:
    channel, _, _ = pair
    channel.outbufs[-1].append(b"left over")
    channel.total_outbufs_len += 9
    assert channel.writable()  # no request in progress: the loop flushes what the last one left
    channel.requests = [object()]
    channel.will_close = True
    assert channel.writable()


def test_a_client_that_stops_reading_still_gets_every_byte(raw_backend, proxy) -> None:
    size, block = 8 * 1024 * 1024, b"z" * 65536

    def large(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            conn.sendall(block)

    watermark = 256 * 1024
    p = proxy({**single_upstream(raw_backend(large).url), "server": {"max_buffered_response": watermark}})
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)
    conn.request("GET", "/big")
    response = conn.getresponse()
    # Read nothing until the worker has filled the channel's buffer past the watermark and waits for the loop.
    deadline = time.monotonic() + LONG_TIMEOUT
    while not any(c.total_outbufs_len > watermark for c in p.server.front._connections()):
        assert time.monotonic() < deadline, "the worker never filled the buffer"
        threading.Event().wait(0.01)
    total = 0
    while data := response.read(1024 * 1024):
        total += len(data)
    assert total == size
    conn.close()


def test_a_small_answer_goes_out_in_one_send_and_an_empty_one_still_goes(raw_backend, proxy, monkeypatch) -> None:
    """The head and the first body bytes are one send() (two system calls were one too many);
    a head with nothing after it is sent by the loop once the task ends."""
    def script(conn: socket.socket) -> None:
        while True:
            head = read_request(conn)
            if not head:
                return
            status = b"204 No Content" if b" /empty " in head else b"200 OK"
            body = b"" if b" /empty " in head else b"x" * 1024
            conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    sends: list[int] = []
    original = ProxyChannel.send

    def counted(self, data, do_close=True):  # the real send, counted before it goes: once the client has
        sends.append(len(data))             # the bytes, every send that carried them is in the list
        return original(self, data, do_close)

    monkeypatch.setattr(ProxyChannel, "send", counted)
    p = proxy(single_upstream(raw_backend(script).url))
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)
    conn.request("GET", "/small")
    answer = conn.getresponse()
    assert answer.read() == b"x" * 1024
    assert len(sends) == 1 and sends[0] > 1024  # head and body together
    conn.request("GET", "/empty")
    empty = conn.getresponse()
    assert empty.status == 204 and empty.read() == b""
    conn.close()
