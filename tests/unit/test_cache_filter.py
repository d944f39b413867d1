"""The cache filter under a fake clock, in front of a scripted origin handler (no sockets).

Each test says which RFC 9111 rule it exercises; the origin counts what
reached it, which is what a cache exists to save.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Callable

import pytest

from conftest import FakeClock

from simpleproxy.cache.filter import CacheFilter
from simpleproxy.cache.policy import format_http_date
from simpleproxy.cache.store import Caches, Freshness, Store
from simpleproxy.errors import NotInCache, UpstreamConnectError
from simpleproxy.request import Request
from simpleproxy.response import Response

T0 = 1_800_000_000.0


class Origin:
    """A terminal handler answering from a script; records every request it got."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.seen: list[dict[str, Any]] = []
        self.status = "200 OK"
        self.headers: list[tuple[str, str]] = [("Cache-Control", "max-age=60")]
        self.body = b"v1"
        self.fail: Exception | None = None
        self.on_request: Callable[[dict[str, Any]], None] | None = None

    def __call__(self, request: Request) -> Response:
        self.seen.append(request.environ)
        if self.on_request is not None:
            self.on_request(request.environ)
        if self.fail is not None:
            raise self.fail
        headers = [("Date", format_http_date(self.clock.now)), *self.headers]
        return Response(self.status, headers, [self.body] if self.body else [], "origin")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def origin(clock) -> Origin:
    return Origin(clock)


@pytest.fixture
def cache(clock) -> CacheFilter:
    store = Store(10**7, 10**6)
    return CacheFilter(store, Caches([store]), Freshness(stale_on_error=0), clock=clock, lock_timeout=5)


def get(cache: CacheFilter, origin: Origin, path: str = "/x", method: str = "GET", host: str = "site", **fields: str):
    environ = {
        "REQUEST_METHOD": method, "REQUEST_URI": path, "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": host,
        "REMOTE_ADDR": "10.0.0.1", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http",
    }
    environ.update({"HTTP_" + k.upper(): v for k, v in fields.items()})
    response = cache(Request(environ, 10**6), next=origin)
    body = b"".join(response.body)
    close = getattr(response.body, "close", None)
    if close:
        close()
    return response, dict(response.headers), body


def status_of(headers: dict[str, str]) -> str:
    return headers["Cache-Status"].removeprefix("simpleproxy; ")


def test_4_a_fresh_stored_response_is_reused_without_the_origin(cache, origin, clock) -> None:
    first = get(cache, origin)
    clock.now += 30
    response, headers, body = get(cache, origin)
    assert len(origin.seen) == 1 and body == b"v1" and response.status == "200 OK"
    assert status_of(first[1]) == "fwd=uri-miss; fwd-status=200; stored"
    assert status_of(headers) == "hit; ttl=30"
    assert headers["Age"] == "30"
    assert headers["Date"] == format_http_date(T0)  # never rewritten on a hit


def test_4_2_3_age_adds_the_received_age_and_counts_staleness(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "max-age=60"), ("Age", "50")]
    get(cache, origin)
    clock.now += 9
    assert get(cache, origin)[1]["Age"] == "59"
    clock.now += 1
    get(cache, origin)
    assert len(origin.seen) == 2  # 60 s old: stale, fetched again


def test_4_2_1_expires_relative_to_date(cache, origin, clock) -> None:
    origin.headers = [("Expires", format_http_date(T0 + 20))]
    get(cache, origin)
    clock.now += 19
    get(cache, origin)
    clock.now += 1
    get(cache, origin)
    assert len(origin.seen) == 2


def test_query_strings_are_distinct_keys(cache, origin) -> None:
    get(cache, origin, "/x?a=1")
    get(cache, origin, "/x?a=2")
    get(cache, origin, "/x?a=1")
    assert len(origin.seen) == 2


def test_3_responses_without_freshness_or_validator_are_not_stored(cache, origin) -> None:
    origin.headers = []
    _, headers, _ = get(cache, origin)
    get(cache, origin)
    assert len(origin.seen) == 2
    assert 'detail="no freshness and no validator"' in headers["Cache-Status"]


def test_4_3_1_stale_responses_are_revalidated_with_their_validators(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "max-age=10"), ("ETag", '"v1"'), ("Last-Modified", format_http_date(T0 - 999))]
    get(cache, origin)
    clock.now += 11
    origin.status, origin.body = "304 Not Modified", b""
    origin.headers = [("Cache-Control", "max-age=100"), ("ETag", '"v1"'), ("X-New", "yes")]
    response, headers, body = get(cache, origin)
    sent = origin.seen[-1]
    assert sent["HTTP_IF_NONE_MATCH"] == '"v1"' and sent["HTTP_IF_MODIFIED_SINCE"] == format_http_date(T0 - 999)
    assert response.status == "200 OK" and body == b"v1" and headers["X-New"] == "yes"
    assert status_of(headers) == "fwd=stale; fwd-status=304"
    clock.now += 99  # 3.2: the 304's max-age=100 now rules the stored response
    assert status_of(get(cache, origin)[1]).startswith("hit")
    assert len(origin.seen) == 2


def test_4_3_3_a_full_response_to_a_revalidation_replaces_the_stored_one(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "max-age=10"), ("ETag", '"v1"')]
    get(cache, origin)
    clock.now += 11
    origin.headers, origin.body = [("Cache-Control", "max-age=10"), ("ETag", '"v2"')], b"v2"
    assert get(cache, origin)[2] == b"v2"
    assert get(cache, origin)[2] == b"v2" and len(origin.seen) == 2


def test_4_3_4_a_304_for_another_representation_is_not_used(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "max-age=10"), ("ETag", '"v1"')]
    get(cache, origin)
    clock.now += 11
    origin.status, origin.body, origin.headers = "304 Not Modified", b"", [("ETag", '"other"')]
    seen = []
    origin.on_request = lambda environ: seen.append(environ.get("HTTP_IF_NONE_MATCH"))
    get(cache, origin)
    assert seen == ['"v1"', None]  # asked again, unconditionally


def test_4_3_2_client_conditionals_are_answered_from_the_cache(cache, origin) -> None:
    origin.headers = [("Cache-Control", "max-age=60"), ("ETag", 'W/"v1"'), ("X-Other", "1"), ("Content-Type", "text/x")]
    get(cache, origin)
    response, headers, body = get(cache, origin, if_none_match='"zz", "v1"')
    assert response.status == "304 Not Modified" and body == b""
    assert headers["ETag"] == 'W/"v1"' and "X-Other" not in headers and "Content-Type" not in headers
    assert get(cache, origin, if_none_match='"zz"')[0].status == "200 OK"
    assert len(origin.seen) == 1


def test_4_3_2_if_modified_since_uses_date_without_last_modified(cache, origin) -> None:
    get(cache, origin)
    assert get(cache, origin, if_modified_since=format_http_date(T0))[0].status == "304 Not Modified"
    assert get(cache, origin, if_modified_since=format_http_date(T0 - 1))[0].status == "200 OK"


def test_5_2_1_4_request_no_cache_revalidates(cache, origin) -> None:
    origin.headers = [("Cache-Control", "max-age=60"), ("ETag", '"v1"')]
    get(cache, origin)
    origin.status, origin.body = "304 Not Modified", b""
    _, headers, body = get(cache, origin, cache_control="no-cache")
    assert len(origin.seen) == 2 and body == b"v1" and origin.seen[-1]["HTTP_IF_NONE_MATCH"] == '"v1"'


def test_5_2_1_7_only_if_cached(cache, origin) -> None:
    with pytest.raises(NotInCache):
        get(cache, origin, cache_control="only-if-cached")
    assert origin.seen == []
    get(cache, origin)
    assert get(cache, origin, cache_control="only-if-cached")[2] == b"v1"


def test_5_2_2_2_must_revalidate_is_never_served_stale_even_when_the_origin_is_down(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "max-age=10, must-revalidate, stale-if-error=600"), ("ETag", '"v1"')]
    get(cache, origin)
    clock.now += 11
    origin.fail = UpstreamConnectError("refused")
    with pytest.raises(UpstreamConnectError):
        get(cache, origin)


def test_rfc5861_stale_if_error_serves_stale_while_the_origin_fails(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "max-age=10, stale-if-error=60"), ("ETag", '"v1"')]
    get(cache, origin)
    clock.now += 30
    origin.fail = UpstreamConnectError("refused")
    _, headers, body = get(cache, origin)
    assert body == b"v1" and 'detail="refused"' in headers["Cache-Status"]
    origin.fail, origin.status, origin.body = None, "503 Service Unavailable", b"down"
    _, headers, body = get(cache, origin)
    assert body == b"v1" and "fwd-status=503" in headers["Cache-Status"]
    clock.now += 60  # 80 s stale: beyond the window
    assert get(cache, origin)[2] == b"down"


def test_rfc5861_stale_while_revalidate_serves_stale_and_refreshes_in_the_background(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "max-age=10, stale-while-revalidate=30"), ("ETag", '"v1"')]
    get(cache, origin)
    clock.now += 15
    refreshed = threading.Event()
    origin.status, origin.body = "304 Not Modified", b""
    origin.headers = [("Cache-Control", "max-age=100"), ("ETag", '"v1"')]
    origin.on_request = lambda environ: refreshed.set()
    _, headers, body = get(cache, origin)
    assert body == b"v1" and status_of(headers) == 'hit; ttl=-5; detail="stale-while-revalidate"'
    assert refreshed.wait(5)
    with cache.flights.changed:  # the refresh lands its flight when done
        assert cache.flights.changed.wait_for(lambda: not cache.flights._events, timeout=5)
    assert status_of(get(cache, origin)[1]).startswith("hit; ttl=")
    assert len(origin.seen) == 2


def test_4_1_vary_keeps_variants_apart(cache, origin) -> None:
    origin.headers = [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")]
    get(cache, origin, accept_language="en")
    get(cache, origin, accept_language="fr")
    get(cache, origin, accept_language="en")
    _, headers, _ = get(cache, origin)
    assert len(origin.seen) == 3 and "fwd=vary-miss" in headers["Cache-Status"]


def test_4_4_unsafe_methods_invalidate_the_uri_and_same_host_locations(cache, origin) -> None:
    for path in ("/x", "/y", "/z"):
        get(cache, origin, path)
    origin.headers = [("Location", "/y"), ("Content-Location", "http://elsewhere/z")]
    get(cache, origin, "/x", method="M-SEARCH")
    origin.headers = [("Cache-Control", "max-age=60")]
    for path in ("/x", "/y", "/z"):
        get(cache, origin, path)
    assert [e["REQUEST_URI"] for e in origin.seen[4:]] == ["/x", "/y"]


def test_4_4_a_failed_unsafe_request_invalidates_nothing(cache, origin) -> None:
    get(cache, origin)
    origin.status = "500 Internal Server Error"
    get(cache, origin, method="POST")
    get(cache, origin)
    assert len(origin.seen) == 2


def test_head_is_answered_from_a_stored_get(cache, origin) -> None:
    get(cache, origin)
    response, headers, body = get(cache, origin, method="HEAD")
    assert body == b"" and headers["Content-Length"] == "2" and len(origin.seen) == 1


def test_rfc9110_14_byte_ranges_from_a_stored_response(cache, origin) -> None:
    origin.body = b"0123456789"
    get(cache, origin)
    response, headers, body = get(cache, origin, range="bytes=2-4")
    assert response.status == "206 Partial Content" and body == b"234"
    assert headers["Content-Range"] == "bytes 2-4/10" and headers["Content-Length"] == "3"
    assert get(cache, origin, range="bytes=-3")[2] == b"789"
    assert get(cache, origin, range="bytes=7-")[2] == b"789"
    assert get(cache, origin, range="bytes=20-")[0].status == "416 Range Not Satisfiable"
    several, headers, _ = get(cache, origin, range="bytes=0-1,3-4")  # several ranges: one part each
    assert several.status == "206 Partial Content" and headers["Content-Type"].startswith("multipart/byteranges")
    assert get(cache, origin, range="bytes=0-1;3-4")[0].status == "200 OK"  # unreadable: the whole
    assert len(origin.seen) == 1


def test_a_range_on_a_miss_is_cut_from_the_whole_response_which_is_stored(cache, origin) -> None:
    origin.body = b"0123456789"
    origin.headers.append(("Content-Length", "10"))
    response, headers, body = get(cache, origin, range="bytes=2-4")
    assert response.status == "206 Partial Content" and body == b"234" and headers["Content-Range"] == "bytes 2-4/10"
    assert status_of(headers) == 'fwd=uri-miss; fwd-status=200; stored; detail="range of the whole"'
    assert "HTTP_RANGE" not in origin.seen[0]  # the origin was asked for all of it
    assert get(cache, origin)[2] == b"0123456789" and get(cache, origin, range="bytes=-2")[2] == b"89"
    assert len(origin.seen) == 1


def test_a_range_on_a_miss_of_unknown_length_gets_the_whole_stored_response(cache, origin) -> None:
    origin.body = b"0123456789"
    response, headers, body = get(cache, origin, range="bytes=2-4")
    assert response.status == "200 OK" and body == b"0123456789"
    assert 'stored; detail="range of unknown length: the whole"' in headers["Cache-Status"]
    assert get(cache, origin, range="bytes=2-4")[2] == b"234" and len(origin.seen) == 1


def test_a_range_of_what_will_not_be_stored_goes_to_the_origin_as_asked(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "no-store"), ("Content-Length", "2")]
    _, headers, _ = get(cache, origin, range="bytes=0-1")
    assert [environ.get("HTTP_RANGE") for environ in origin.seen] == [None, "bytes=0-1"]
    assert status_of(headers) == 'fwd=uri-miss; detail="range passed on: no-store"'
    get(cache, origin, range="bytes=0-1")  # remembered: straight to the origin
    assert [environ.get("HTTP_RANGE") for environ in origin.seen][2:] == ["bytes=0-1"]
    clock.now += 61  # forgotten: the whole is tried again
    get(cache, origin, range="bytes=0-1")
    assert [environ.get("HTTP_RANGE") for environ in origin.seen][3:] == [None, "bytes=0-1"]


def test_preconditions_for_the_origin_pass_through(cache, origin) -> None:
    get(cache, origin)
    get(cache, origin, if_match='"v1"')
    assert len(origin.seen) == 2


def test_a_generator_body_is_teed_into_the_store(cache, origin, clock) -> None:
    def generated(request: Request) -> Response:
        origin.seen.append(request.environ)
        return Response("200 OK", [("Cache-Control", "max-age=60")], (part for part in (b"a", b"b")))

    assert get(cache, generated)[2] == b"ab"  # type: ignore[arg-type]
    assert get(cache, generated)[2] == b"ab" and len(origin.seen) == 1  # type: ignore[arg-type]


def test_collapsed_forwarding_sends_one_request_for_concurrent_misses(cache, origin) -> None:
    gate = threading.Event()
    origin.on_request = lambda environ: gate.wait(5)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(get(cache, origin)[2])) for _ in range(20)]
    for t in threads:
        t.start()
    with cache.flights.changed:
        assert cache.flights.changed.wait_for(lambda: cache.flights.waiting == 19, timeout=5)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [b"v1"] * 20 and len(origin.seen) == 1


def test_a_follower_goes_itself_when_the_leaders_response_is_not_storable(cache, origin) -> None:
    origin.headers = [("Cache-Control", "no-store")]
    gate = threading.Event()
    origin.on_request = lambda environ: gate.wait(5)
    threads = [threading.Thread(target=get, args=(cache, origin)) for _ in range(2)]
    for t in threads:
        t.start()
    with cache.flights.changed:
        assert cache.flights.changed.wait_for(lambda: cache.flights.waiting == 1, timeout=5)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(origin.seen) == 2


def test_rfc9213_cdn_cache_control_rules_this_cache_and_still_reaches_the_client(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=100")]
    _, headers, _ = get(cache, origin)
    assert headers["Cache-Control"] == "no-store" and headers["CDN-Cache-Control"] == "max-age=100"
    clock.now += 99
    get(cache, origin)
    assert len(origin.seen) == 1
    origin.headers = [("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=1")]
    get(cache, origin, "/y")
    clock.now += 2
    get(cache, origin, "/y")
    assert len(origin.seen) == 3


def test_review_an_unclosed_quote_keeps_private_and_parses_in_linear_time(cache, origin) -> None:
    origin.headers = [("Cache-Control", 'max-age=60, private="Set-Cookie')]
    get(cache, origin)
    get(cache, origin)
    assert len(origin.seen) == 2
    _, headers, _ = get(cache, origin, cache_control="a" + " " * 100_000 + '"')  # once exponential
    assert len(origin.seen) == 3


def test_review_a_bad_location_after_a_post_is_ignored(cache, origin) -> None:
    origin.headers = [("Location", "http://[bad/x")]
    assert get(cache, origin, method="POST")[0].status == "200 OK"


def test_review_stale_while_revalidate_without_validators_still_refreshes(cache, origin, clock) -> None:
    origin.headers = [("Cache-Control", "max-age=10, stale-while-revalidate=100")]
    get(cache, origin)
    clock.now += 20
    refreshed = threading.Event()
    origin.on_request = lambda environ: refreshed.set()
    origin.body = b"v2"
    assert get(cache, origin)[2] == b"v1"
    assert refreshed.wait(5)
    with cache.flights.changed:
        assert cache.flights.changed.wait_for(lambda: not cache.flights._events, timeout=5)
    assert get(cache, origin)[2] == b"v2" and len(origin.seen) == 2


@pytest.mark.parametrize("fields", [{"range": "bytes=0-1"}, {"if_match": '"x"'}])
def test_review_only_if_cached_never_reaches_the_origin(cache, origin, fields) -> None:
    with pytest.raises(NotInCache):
        get(cache, origin, cache_control="only-if-cached", **fields)
    assert origin.seen == []


def test_review_vary_values_count_in_the_entry_size(cache, origin) -> None:
    origin.headers = [("Cache-Control", "max-age=60"), ("Vary", "Cookie")]
    get(cache, origin, cookie="c" * 100_000)
    assert cache.store.size > 100_000
