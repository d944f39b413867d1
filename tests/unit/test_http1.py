"""The upstream response parser refuses what two readers could read differently."""

from __future__ import annotations

import socket

import pytest

from simpleproxy.errors import UpstreamProtocolError
from simpleproxy.errors import UpstreamClosed
from simpleproxy.upstream.http1 import BodyReader, parse_head, read_head

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\n"


def test_a_good_head() -> None:
    head = parse_head(OK.rstrip(b"\r\n"), "GET")
    assert (head.status, head.reason, head.length, head.keep_alive) == (200, "OK", 5, True)
    assert head.status_line == "200 OK"
    assert head.headers == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Empty", ""), ("Content-Length", "5")]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 0",  # bare CR: http.client splits here
        b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: evil=1\r\nContent-Length: 0",  # bare LF
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0",  # obs-fold
        b"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 0",  # whitespace before the colon
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0",  # NUL
        b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked",
        b"HTTP/2 200 OK\r\nContent-Length: 0",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0",
        b"HTTP/1.1 700 Weird\r\nContent-Length: 0",
        b"ICY 200 OK\r\nContent-Length: 0",
    ],
)
def test_refused_heads(head: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_head(head, "GET")


def test_repeated_equal_content_lengths_are_one() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5", "GET").length == 5


def test_hop_by_hop_and_connection_named_fields_are_dropped() -> None:
    head = parse_head(
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret, close\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
        b"Upgrade: h2c\r\nProxy-Authenticate: Basic\r\nTrailer: X\r\nX-Kept: yes\r\nContent-Length: 0",
        "GET",
    )
    assert head.headers == [("X-Kept", "yes"), ("Content-Length", "0")]
    assert head.keep_alive is False


def test_framing_decisions() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked", "GET").chunked
    until_close = parse_head(b"HTTP/1.1 200 OK", "GET")
    assert until_close.length == -1 and not until_close.keep_alive
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99", "HEAD")
    assert not head.has_body and ("Content-Length", "99") in head.headers
    no_content = parse_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 0", "GET")
    assert not no_content.has_body and no_content.headers == []
    assert not parse_head(b"HTTP/1.1 304 Not Modified", "GET").has_body
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1", "GET").keep_alive is False
    assert parse_head(b"HTTP/1.1 200", "GET").status_line == "200 OK"  # empty reason gets the standard one


def body_of(wire: bytes, step: int | None = None) -> tuple[bytes, BodyReader]:
    """Run a BodyReader over a real socket pair, fed whole or ``step`` bytes at a time."""
    a, b = socket.socketpair()
    try:
        raw, rest = b"", b""
        if step is None:
            a.sendall(wire)
        else:
            for i in range(0, len(wire), step):
                a.sendall(wire[i:i + step])
        a.shutdown(socket.SHUT_WR)
        raw, rest = read_head(b)
        reader = BodyReader(b, parse_head(raw, "GET"), rest)
        out = b""
        while piece := reader.read():
            out += piece
        return out, reader
    finally:
        a.close()
        b.close()


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"


@pytest.mark.parametrize("step", [None, 1, 3])
def test_chunked_bodies_whole_and_byte_by_byte(step: int | None) -> None:
    body, reader = body_of(CHUNKED, step)
    assert body == b"hello world" and reader.complete


@pytest.mark.parametrize("step", [None, 1])
def test_content_length_bodies(step: int | None) -> None:
    body, reader = body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", step)
    assert body == b"hello world" and reader.complete


def test_close_delimited_body() -> None:
    body, reader = body_of(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    assert body == b"until the end" and reader.complete


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort", UpstreamClosed),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", UpstreamClosed),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", UpstreamProtocolError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", UpstreamProtocolError),
    ],
)
def test_broken_bodies(wire: bytes, error: type) -> None:
    with pytest.raises(error):
        body_of(wire)


def test_a_head_without_end_is_an_early_close() -> None:
    with pytest.raises(UpstreamClosed) as info:
        body_of(b"HTTP/1.1 200 OK\r\nContent-")
    assert info.value.received
