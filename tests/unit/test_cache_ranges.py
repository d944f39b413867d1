"""Byte ranges cut from a body as it arrives agree with those cut from the whole, however it is split."""

from __future__ import annotations

import random

import pytest

from simpleproxy.cache.ranges import RangeBody, RangePlan, byte_ranges

BODY = bytes(range(256)) * 40  # 10,240 bytes


class Arriving:
    """A body in pieces, with what a stream from upstream has: close() and no error."""

    error = ""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.read = 0
        self.closed = False

    def __iter__(self):
        for piece in self.pieces:
            self.read += len(piece)
            yield piece

    def close(self) -> None:
        self.closed = True


def split(body: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(body)), rng.randint(0, 30)))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]


@pytest.mark.parametrize("header", [
    "bytes=0-0", "bytes=100-199", "bytes=-300", "bytes=10000-", "bytes=9000-1, 5-9",  # the last: unread
    "bytes=5000-5009, 0-9, -5", "bytes=0-99, 50-149, 10200-10300", "bytes=20000-", "bytes=3-3, 3-3",
])
def test_a_plan_cut_from_an_arriving_body_equals_one_cut_from_the_whole(header: str) -> None:
    spans = byte_ranges(header, len(BODY))
    if spans is None:
        return  # the whole response is the answer: nothing to cut
    rng = random.Random(header)
    for _ in range(20):
        plan = RangePlan(spans, len(BODY), "video/mp4")
        inner = Arriving(split(BODY, rng))
        streamed = RangeBody(inner, plan)
        got = b"".join(streamed)
        streamed.close()
        expected = plan.cut(BODY)
        assert got == expected and streamed.sent == len(expected)
        assert int(dict(plan.headers([]))["Content-Length"]) == len(expected)
        assert inner.read == len(BODY) and inner.closed  # read on to the end, for the store


def test_a_client_that_leaves_once_answered_still_has_the_rest_read_for_the_store() -> None:
    plan = RangePlan([(0, 9)], len(BODY), None)
    inner = Arriving([BODY[:100], BODY[100:5000], BODY[5000:]])
    streamed = RangeBody(inner, plan)
    assert next(iter(streamed)) == BODY[:10]
    streamed.close()  # the server closes after the client had its ten bytes
    assert inner.read == len(BODY) and inner.closed


def test_a_client_that_leaves_before_its_answer_stops_the_read() -> None:
    plan = RangePlan([(9000, 9009)], len(BODY), None)
    inner = Arriving([BODY[:100], BODY[100:5000], BODY[5000:]])
    streamed = RangeBody(inner, plan)
    done: list[bool] = []
    streamed.on_close = lambda body: done.append(True)
    iter(streamed)
    streamed.close()
    assert inner.read == 0 and inner.closed and done == [True]
