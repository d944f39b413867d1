"""waitress wiring without sockets: the stricter parser and the settings handed over."""

from __future__ import annotations

import select

import pytest
from waitress.adjustments import Adjustments

from simpleproxy.config import config_from_dict
from simpleproxy.frontend.parser import StrictRequestParser
from simpleproxy.frontend import waitress_settings


def parse(raw: bytes) -> StrictRequestParser:
    parser = StrictRequestParser(Adjustments())
    while raw and not parser.completed:  # as the channel feeds it: head first, then the body
        raw = raw[parser.received(raw):]
    return parser


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_ambiguous_framing_is_a_parse_error(raw: bytes) -> None:
    parser = parse(raw)
    assert parser.error is not None and parser.error.code == 400


def test_ordinary_requests_still_parse() -> None:
    parser = parse(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert parser.error is None and parser.completed and parser.get_body_stream().read() == b"abc"


def test_settings_handed_to_waitress(monkeypatch) -> None:
    config = config_from_dict({
        "listen": {"http": ["127.0.0.1:8080", "[::1]:8081"]},
        "server": {"threads": 8, "connection_limit": 2000, "max_buffered_response": "1MiB"},
        "routes": [{"respond": {}}],
    })
    settings = waitress_settings(config)
    assert "listen" not in settings  # the proxy binds its sockets itself (listeners.py)
    assert settings["threads"] == 8 and settings["outbuf_high_watermark"] == 1024**2 and settings["outbuf_overflow"] == 1024**2
    Adjustments(**settings)  # waitress accepts every key
    monkeypatch.delattr(select, "poll", raising=False)  # as on Windows
    windows = waitress_settings(config)
    assert windows["connection_limit"] == 500 and windows["asyncore_use_poll"] is False


@pytest.mark.parametrize(("message", "refused"), [
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab\ncd\nefgh", False),  # LFs in the body are fine
    (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", True),
    (b"GET / HTTP/1.1\nHost: h\n\n", True),
])
def test_bare_lf_in_the_head_is_found_however_the_bytes_are_split(message, refused) -> None:
    from waitress.adjustments import Adjustments

    from simpleproxy.frontend.parser import StrictRequestParser

    for step in range(1, len(message) + 1):  # every way a client or the network may cut the bytes
        parser = StrictRequestParser(Adjustments())
        for i in range(0, len(message), step):
            data = message[i : i + step]
            while data and not parser.completed:
                data = data[parser.received(data):]
        assert (parser.error is not None) is refused, step


def test_the_open_file_limit_is_raised_to_what_the_configuration_can_use() -> None:
    resource = pytest.importorskip("resource")
    from simpleproxy.frontend import raise_open_file_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 512 if hard == resource.RLIM_INFINITY else min(512, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        config = config_from_dict({"server": {"connection_limit": 300, "max_tunnels": 100}, "routes": [{"respond": {}}]})
        wanted = 300 + 2 * 100 + 256
        expected = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        assert raise_open_file_limit(config) == expected == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
