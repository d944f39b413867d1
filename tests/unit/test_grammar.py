"""HTTP's field grammar, written once (grammar.py)."""

from __future__ import annotations

import pytest

from simpleproxy.grammar import (
    HOP_BY_HOP, TOKEN, capitalized, connection_keys, environ_key, field_name, is_token, split_list, tokens,
    unquote,
)


def test_tchar_is_exactly_rfc_9110s() -> None:
    # tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    rfc = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert {chr(c) for c in range(256) if TOKEN.fullmatch(chr(c))} == rfc
    assert is_token("max-age") and not is_token("") and not is_token("a b") and not is_token("a:b")


@pytest.mark.parametrize("field, key", [
    ("X-Api-Key", "HTTP_X_API_KEY"), ("content-type", "CONTENT_TYPE"), ("Content-Length", "CONTENT_LENGTH"),
    ("Host", "HTTP_HOST"), ("x-a", "HTTP_X_A"),
])
def test_a_field_name_and_its_environ_key(field: str, key: str) -> None:
    assert environ_key(field) == key
    assert field_name(key) == capitalized(field.lower())
    assert field_name("REMOTE_ADDR") is None and field_name("wsgi.input") is None


def test_capitalized_is_waitress_s_rule() -> None:
    assert capitalized("x-request-id") == "X-Request-Id" and capitalized("WWW-authenticate") == "Www-Authenticate"


def test_split_list_keeps_quoted_commas_and_trims_only_ows() -> None:
    assert split_list('a, "b, c" ,, d') == ["a", '"b, c"', "d"]
    assert split_list('private="x, y", max-age=5') == ['private="x, y"', "max-age=5"]
    assert split_list('private="unclosed, max-age=5') == ['private="unclosed, max-age=5']
    # A no-break space is not whitespace in HTTP: "chunked\xa0" is not "chunked".
    assert split_list("chunked\xa0, \tgzip\t") == ["chunked\xa0", "gzip"]


@pytest.mark.parametrize("text, content", [
    ('"abc"', "abc"), ('"a\\"b"', 'a"b'), ('"a\\\\"', "a\\"), ('"open', "open"), ("plain", "plain"), ('""', ""),
])
def test_unquote(text: str, content: str) -> None:
    assert unquote(text) == content


def test_tokens_and_what_connection_names() -> None:
    assert tokens(" Keep-Alive ,close,, Upgrade") == {"keep-alive", "close", "upgrade"}
    assert connection_keys("X-Secret, keep-alive") == {"HTTP_X_SECRET", "HTTP_KEEP_ALIVE"}
    # Never the body's framing or type, whatever a client names.
    assert connection_keys("Content-Length, content-type, x-a") == {"HTTP_X_A"}
    assert {"connection", "te", "transfer-encoding", "upgrade", "proxy-authorization"} <= HOP_BY_HOP
