"""The request-head parser's fast path reads every head exactly as waitress's own path does.

Each head is fed to two parsers: the one the server uses, and the same class
with the fast path off (our framing checks, then waitress's parser). Every
attribute the WSGI environ is built from must agree, and so must the errors:
a head the fast path reads is one waitress reads the same way, and every other
head still gets waitress's (and our) answer.
"""

from __future__ import annotations

import random

import pytest
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel

from simpleproxy.frontend.parser import StrictRequestParser

ADJ = Adjustments()
STATE = (
    "completed", "empty", "headers_finished", "headers", "command", "request_uri", "version", "path", "query",
    "fragment", "url_scheme", "proxy_scheme", "proxy_netloc", "content_length", "chunked", "connection_close",
    "expect_continue", "upgrade", "tail", "first_line",
)


class WaitressPath(StrictRequestParser):
    fast = False


def feed(cls: type[StrictRequestParser], raw: bytes) -> StrictRequestParser:
    parser = cls(ADJ)
    while raw and not parser.completed:  # as the channel feeds it: head first, then the body
        used = parser.received(raw)
        if not used:
            break
        raw = raw[used:]
    return parser


def observed(parser: StrictRequestParser) -> dict:
    seen = {name: getattr(parser, name, None) for name in STATE}
    seen["error"] = (type(parser.error).__name__, parser.error.body) if parser.error is not None else None
    seen["body"] = parser.get_body_stream().read() if parser.completed and parser.error is None else None
    return seen


def same_reading(raw: bytes) -> dict:
    fast, reference = observed(feed(StrictRequestParser, raw)), observed(feed(WaitressPath, raw))
    assert fast == reference, raw
    return fast


class Recording(StrictRequestParser):
    took_fast_path = False

    def _read_common(self, header_plus, common):  # type: ignore[no-untyped-def]
        self.took_fast_path = True  # also when it finds the head invalid (a bad Content-Length)
        self.took_fast_path = super()._read_common(header_plus, common)
        return self.took_fast_path


def fast_path_taken(raw: bytes) -> bool:
    return feed(Recording, raw).took_fast_path


COMMON = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /api/items/42?x=1&y=%20 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n",
    b"GET /a%20b/%2Fc/%zz?q=%41#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a#x?y HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /? HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a:b@c HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"PROPFIND /dav HTTP/1.1\r\nHost: h\r\nDepth: 1\r\n\r\n",
    b"M-SEARCH / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\naccept: c\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:h\r\nX-Empty:\r\nX-Spaces:   \r\nX-Pad: \t v \t \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Inner: a \t b\r\nX-Latin: caf\xe9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Colon: a:b:c\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe",
    b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, upgrade\r\n\r\n",
    b"GET /chat HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 12x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    # singletons twice (RFC 9112 3.2, RFC 9110 8.6): refused on either path, with the same words
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 2\r\ncontent-type: text/x\r\n\r\nok",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
]

OTHER = [
    b"get / HTTP/1.1\r\nHost: h\r\n\r\n",  # lower-case method
    b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET http://h/x?y HTTP/1.1\r\nHost: h\r\n\r\n",  # absolute form
    b"GET //x/y?z HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /caf\xe9 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nX_Under: 1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Fold: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Ctl: a\x01b\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Del: a\x7fb\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-CR: a\rb\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\n\xe9: v\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",  # blank lines before a pipelined request
    b"GET / HTTP/1.1\r\nX_Under: 1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nX_Under: 1\r\nHost: a\r\nHost: b\r\n\r\n",  # waitress's path refuses them too
    b"POST / HTTP/1.1\r\nContent_Type: a\r\nContent-Type: b\r\nHost: h\r\n\r\n",  # the first is dropped, not a twin
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\nHost: b\r\n\r\n",
]


@pytest.mark.parametrize(("fields", "twice"), [
    (b"Host: a\r\nContent-Length: 1\r\nHost: a\r\n", "Host"),
    (b"Host: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n", "Content-Length"),
    (b"Host: h\r\nContent-Type: a\r\nContent-Length: 1\r\ncontent-type: b\r\n", "content-type"),
])
def test_a_singleton_field_twice_is_a_bad_request_on_either_path(fields: bytes, twice: str) -> None:
    for tail in (b"", b"X_Under: 1\r\n"):  # the fast path, then waitress's
        raw = b"POST / HTTP/1.1\r\n" + tail + fields + b"\r\nx"
        assert fast_path_taken(raw) == (not tail)
        seen = same_reading(raw)
        assert seen["error"] == ("BadRequest", f"Duplicate header: {twice}"), raw


def test_a_content_length_too_long_for_int_is_a_bad_request_on_either_path() -> None:
    for tail in (b"", b"X_Under: 1\r\n"):  # the fast path, then waitress's
        seen = same_reading(b"POST / HTTP/1.1\r\nHost: h\r\n" + tail + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n")
        assert seen["error"][0] == "BadRequest" and b"Content-Length is invalid" in seen["error"][1].encode()


@pytest.mark.parametrize("raw", COMMON)
def test_common_heads_take_the_fast_path_and_read_as_waitress_reads_them(raw: bytes) -> None:
    assert fast_path_taken(raw)
    same_reading(raw)


@pytest.mark.parametrize("raw", OTHER)
def test_other_heads_take_waitress_path(raw: bytes) -> None:
    assert not fast_path_taken(raw)
    same_reading(raw)


def test_a_common_head_becomes_the_environ_waitress_would_build() -> None:
    raw = b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h:8080\r\nX-Api-Key: k\r\nX-Api-Key: l\r\nContent-Type: t\r\n\r\n"
    seen = same_reading(raw)
    assert seen["path"] == "/a b" and seen["query"] == "x=1" and seen["request_uri"] == "/a%20b?x=1"
    assert seen["headers"] == {"HOST": "h:8080", "X_API_KEY": "k, l", "CONTENT_TYPE": "t"}

    class Server:
        adj, effective_port, server_name = ADJ, 8080, "localhost"

    class Channel:
        server, adj, addr = Server, ADJ, ("127.0.0.1", 4000)

        def check_client_disconnected(self) -> None:
            pass

    environs = [HTTPChannel.task_class(Channel(), feed(cls, raw)).get_environment() for cls in (StrictRequestParser, WaitressPath)]
    for environ in environs:
        environ.pop("wsgi.input"), environ.pop("waitress.client_disconnected")
    assert environs[0] == environs[1]


def test_mutated_heads_read_the_same_on_both_paths() -> None:
    """Random single and double edits of common heads: whichever path a head takes, the reading agrees."""
    rng = random.Random(9112)
    alphabet = [b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b"_", b"-", b"/", b"?", b"#", b"%", b"%41", b"\x00", b"\x7f",
                b"\xe9", b"a", b"Z", b"0", b",", b"HTTP/1.0", b"chunked", b"Content-Length: 2", b"Transfer-Encoding: chunked"]
    fast = 0
    for _ in range(3000):
        raw = bytearray(rng.choice(COMMON))
        for _ in range(rng.choice((1, 2))):
            at = rng.randrange(len(raw) + 1)
            edit = rng.random()
            if edit < 0.5:
                raw[at:at] = rng.choice(alphabet)
            elif edit < 0.8:
                del raw[at : at + rng.randrange(1, 4)]
            else:
                raw[at : at + 1] = rng.choice(alphabet)
        raw = bytes(raw)
        same_reading(raw)
        fast += fast_path_taken(raw)
    assert fast > 500  # a quarter of the mutations keep the common shape: the fast path is exercised
