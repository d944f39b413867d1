"""Choosing an encoding from Accept-Encoding (RFC 9110 section 12.5.3), and the types compressed."""

from __future__ import annotations

import pytest

from simpleproxy.compression import _Types, choose
from simpleproxy.config import COMPRESSED_TYPES
from simpleproxy.grammar import weighted

ALL = ("zstd", "br", "gzip")


@pytest.mark.parametrize(("header", "offered", "chosen"), [
    ("gzip, deflate, br, zstd", ALL, "zstd"),  # a browser today: the server's first choice
    ("gzip, deflate, br", ALL, "br"),
    ("gzip;q=0.5, br;q=0.9", ALL, "br"),
    ("br;q=0.2, gzip", ALL, "gzip"),  # q decides before the server's order
    ("*", ("br", "gzip"), "br"),
    ("*;q=0.1, gzip;q=0", ALL, "zstd"),  # * counts for what is not named; gzip refused by name
    ("gzip;q=0", ALL, None),
    ("identity", ALL, None),
    ("identity;q=0", ALL, None),  # nothing acceptable: identity anyway (406 helps no one)
    ("x-gzip", ALL, "gzip"),  # RFC 9110 section 8.4.1.3: the old name
    ("GZIP;Q=1", ALL, "gzip"),  # case-insensitive
    ("gzip;q=2, br;q=abc", ALL, None),  # unreadable q-values: those members are left out
    ("", ALL, None),
    (None, ALL, None),  # no field: as it is (every browser sends one)
    ("zstd", ("gzip",), None),  # offered only gzip
])
def test_the_encoding_chosen(header, offered, chosen) -> None:
    assert choose(header, offered) == chosen


def test_weighted_reads_each_coding_once_with_its_q() -> None:
    assert weighted('gzip;q=0.8, br ; q=1.0, zstd;level=3;q=0.1, gzip;q=0') == {"gzip": 0.8, "br": 1.0, "zstd": 0.1}


@pytest.mark.parametrize(("content_type", "compressed"), [
    ("text/html; charset=utf-8", True), ("TEXT/CSS", True), ("application/json", True),
    ("application/problem+json", True), ("application/atom+xml", True), ("image/svg+xml", True),
    ("image/png", False), ("application/octet-stream", False), ("application/jsonx", False), ("video/mp4", False),
])
def test_the_default_types(content_type, compressed) -> None:
    assert (content_type in _Types(COMPRESSED_TYPES)) is compressed
