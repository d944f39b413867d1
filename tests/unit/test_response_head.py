"""build_response_head writes what waitress's build_response_header writes, and decides as it does."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from waitress.adjustments import Adjustments
from waitress.task import WSGITask

from simpleproxy.frontend.response_head import build_response_head

FIELD_SETS = [
    [],
    [("Content-Type", "text/plain"), ("Content-Length", "5")],
    [("content-type", "text/plain"), ("content-length", "5"), ("x-request-id", "abc")],
    [("Content-Length", "")],
    [("Set-Cookie", "a=1"), ("X-A", "1"), ("set-cookie", "b=2"), ("SET-COOKIE", "c=3"), ("www-authenticate", "Basic")],
    [("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Server", "backend/1.0"), ("ETag", '"x"')],
    [("Connection", "close"), ("Content-Length", "0")],
    [("CONNECTION", "Keep-Alive")],
    [("x--odd-", "v"), ("Cache-Status", "simpleproxy; hit"), ("Age", "3")],
]


def task(version: str, connection: str | None, status: str, fields: list, content_length: int | None, ident: str) -> WSGITask:
    adj = Adjustments(ident=ident)
    headers = {"HOST": "h"} if connection is None else {"HOST": "h", "CONNECTION": connection}
    made = WSGITask.__new__(WSGITask)
    made.request = SimpleNamespace(headers=headers)
    made.channel = SimpleNamespace(server=SimpleNamespace(adj=adj), adj=adj)
    made.version, made.status, made.response_headers = version, status, list(fields)
    made.content_length, made.start_time = content_length, 1764410000.75
    return made


def test_every_combination_gives_the_same_head_and_decisions() -> None:
    cases = itertools.product(
        ("1.0", "1.1"), (None, "close", "keep-alive", "Keep-Alive", "upgrade"),
        ("200 OK", "204 No Content", "304 Not Modified", "101 Switching Protocols", "404 Not Found"),
        FIELD_SETS, (None, 0, 5), ("simpleproxy", ""),
    )
    count = 0
    for args in cases:
        count += 1
        ours, theirs = task(*args), task(*args)
        assert build_response_head(ours) == theirs.build_response_header(), args
        assert (ours.close_on_finish, ours.chunked_response, ours.response_headers) == (
            theirs.close_on_finish, theirs.chunked_response, theirs.response_headers
        ), args
    assert count == 2 * 5 * 5 * len(FIELD_SETS) * 3 * 2


def test_the_date_follows_the_clock_second_by_second() -> None:
    heads = []
    for when in (1764410000.2, 1764410000.9, 1764410001.0, 1764409999.5):
        made, reference = task("1.1", None, "200 OK", [], 0, "x"), task("1.1", None, "200 OK", [], 0, "x")
        made.start_time = reference.start_time = when
        heads.append(build_response_head(made))
        assert heads[-1] == reference.build_response_header()
    assert heads[0] == heads[1] != heads[2] != heads[3]
