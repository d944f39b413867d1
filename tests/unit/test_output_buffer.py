"""The output buffer keeps pieces uncopied; what comes out, however sends cut it, is what went in."""

from __future__ import annotations

import random

import pytest

from simpleproxy.frontend.buffers import JOIN_BELOW, ChunkBuffer


@pytest.mark.parametrize("overflow", [10**9, 200_000])  # in memory; spilled to a file part way
def test_what_is_sent_is_what_was_appended_however_sends_are_cut(overflow: int) -> None:
    rng = random.Random(overflow)
    buffer = ChunkBuffer(overflow)
    written, sent = bytearray(), bytearray()
    for _ in range(400):
        if rng.random() < 0.6:
            piece = rng.randbytes(rng.choice([3, 200, 5000, 65536]))
            buffer.append(piece)
            written += piece
        else:
            chunk = buffer.get(rng.choice([1, 1000, 256 * 1024]))
            took = min(len(chunk), rng.choice([len(chunk), 1, 700, 70000]))  # the kernel takes what it takes
            sent += bytes(chunk[:took])
            buffer.skip(took, True)
        assert len(buffer) == len(written) - len(sent)
    while len(buffer):
        chunk = buffer.get(256 * 1024)
        sent += bytes(chunk)
        buffer.skip(len(chunk), True)
    assert sent == written and (buffer.spilled is not None) == (overflow < 10**9)
    buffer.close()


def test_a_large_piece_goes_out_as_it_is_and_small_ones_together() -> None:
    buffer = ChunkBuffer(10**9)
    body = b"x" * 65536
    buffer.append(body)
    assert buffer.get(256 * 1024) is body  # no copy
    buffer.skip(1000)
    assert isinstance(buffer.get(256 * 1024), memoryview) and len(buffer.get(256 * 1024)) == 64536
    buffer.skip(64536)
    buffer.append(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    buffer.append(b"ok")
    assert buffer.get(256 * 1024) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"  # one send()
    assert len(buffer.get(5)) <= JOIN_BELOW and not buffer.get(5) == b""
