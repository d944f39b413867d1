"""Reading the request: normalised paths, strict hosts, unambiguous body framing."""

from __future__ import annotations

import io

import pytest

from simpleproxy.errors import BadRequest, LengthRequired, TooLarge
from simpleproxy.request import Request, normalize_path


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("/a/b", "/a/b"),
        ("/public/../admin", "/admin"),
        ("/a/./b/../c", "/a/c"),
        ("/../../etc", "/etc"),
        ("/a/b/..", "/a/"),
        ("/%2e%2e/admin", "/admin"),
        ("/public/%2E%2e/admin", "/admin"),
        ("/a%2Fb/../c", "/c"),  # %2F is one segment "a%2Fb", removed by ".."
        ("/public/..%2fadmin", "/public/..%2Fadmin"),  # an escaped slash never separates segments
        ("/%7euser/%41", "/~user/A"),  # unreserved escapes decoded
        ("/a%20b", "/a%20b"),
    ],
)
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize("raw", ["/a%zz", "/a%2", "/nul%00"])
def test_malformed_escapes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_path(raw)


def environ(**extra: object) -> dict:
    env = {
        "REQUEST_METHOD": "GET", "REQUEST_URI": "/", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "192.0.2.1", "HTTP_HOST": "Example.COM:8080",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.input_terminated": True,
    }
    env.update(extra)
    return env


def test_host_is_lowercased_without_port_and_kept_as_given_for_forwarding() -> None:
    request = Request(environ(REQUEST_URI="/a/../b?q=1"), max_body=100)
    assert (request.host, request.authority) == ("example.com", "Example.COM:8080")
    assert (request.path, request.query) == ("/b", "?q=1")


def test_absolute_form_target_overrides_host() -> None:
    request = Request(environ(REQUEST_URI="http://other.example:81/p/%2e%2e/q?x=1"), max_body=100)
    assert (request.host, request.path, request.query) == ("other.example", "/q", "?x=1")


@pytest.mark.parametrize(
    "extra",
    [
        {"HTTP_HOST": "a, b"},  # two Host fields joined by the server
        {"HTTP_HOST": "user@host"},
        {"HTTP_HOST": "host:"},
        {"REQUEST_URI": "*"},
        {"REQUEST_URI": "ftp://x/"},
        {"REQUEST_URI": "/a%zz"},
    ],
)
def test_bad_requests(extra: dict) -> None:
    with pytest.raises(BadRequest):
        Request(environ(**extra), max_body=100)


def test_http11_without_host_is_400_but_http10_is_fine() -> None:
    env = environ()
    del env["HTTP_HOST"]
    with pytest.raises(BadRequest, match="missing Host"):
        Request(env, max_body=100)
    env["SERVER_PROTOCOL"] = "HTTP/1.0"
    assert Request(env, max_body=100).host == ""


def test_body_framing_from_servers_that_pass_transfer_encoding() -> None:
    with pytest.raises(BadRequest, match="both Content-Length and Transfer-Encoding"):
        Request(environ(CONTENT_LENGTH="5", HTTP_TRANSFER_ENCODING="chunked"), max_body=100)
    with pytest.raises(LengthRequired):
        Request(environ(HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input_terminated": False}), max_body=100)
    assert Request(environ(HTTP_TRANSFER_ENCODING="chunked"), max_body=100).content_length == -1
    with pytest.raises(TooLarge):
        Request(environ(CONTENT_LENGTH="101"), max_body=100)
    with pytest.raises(BadRequest, match="invalid Content-Length"):
        Request(environ(CONTENT_LENGTH="1e3"), max_body=100)


def test_target_and_host_readings_are_memoised_within_a_bound() -> None:
    from simpleproxy import request as module

    for _ in range(2):  # the second time from the memo, the same answer; a bad Host stays bad
        assert Request(environ(REQUEST_URI="/x/../y?a"), max_body=100).path == "/y"
        with pytest.raises(BadRequest):
            Request(environ(HTTP_HOST="a, b"), max_body=100)
    for i in range(module._targets.limit + 10):
        Request(environ(REQUEST_URI=f"/flood/{i}", HTTP_HOST=f"h{i}.example"), max_body=100)
    assert len(module._targets) <= module._targets.limit and len(module._hosts) <= module._hosts.limit
