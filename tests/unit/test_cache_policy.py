"""RFC 9111 rules one by one (section numbers in the names), as pure functions."""

from __future__ import annotations

import calendar

import pytest

from simpleproxy.cache.policy import (
    CONFLICT,
    FRESH,
    MAX_DELTA,
    STALE_ALLOWED,
    STALE_REVALIDATING,
    VALIDATE,
    RequestDirectives,
    delta_seconds,
    etag_matches,
    fields_of,
    freshness_lifetime,
    initial_age,
    not_modified,
    parse_age,
    parse_directives,
    parse_http_date,
    reuse,
    secondary_key,
    stale_if_error,
    storable,
    vary_fields,
)
from simpleproxy.grammar import split_list

T0 = float(calendar.timegm((2026, 11, 29, 12, 0, 0)))
T0_TEXT = "Sun, 29 Nov 2026 12:00:00 GMT"


# --------------------------------------------------------------------------- 5.2 parsing


def test_5_2_directive_names_are_case_insensitive_and_arguments_may_be_quoted() -> None:
    assert parse_directives('MaX-AgE=60, No-Cache, s-maxage="30"') == {"max-age": "60", "no-cache": None, "s-maxage": "30"}


def test_5_2_a_comma_inside_a_quoted_argument_does_not_split() -> None:
    cc = parse_directives('extension="max-age=3600, public", max-age=1')
    assert cc == {"extension": "max-age=3600, public", "max-age": "1"}
    assert split_list('a, "b, c", d') == ["a", '"b, c"', "d"]


def test_5_2_malformed_members_are_ignored() -> None:
    assert parse_directives("max-age = 60, max-age2= 5, ,, @bad, public") == {"public": None}


def test_4_2_1_a_directive_twice_with_different_values_is_a_conflict() -> None:
    assert parse_directives("max-age=60, max-age=120")["max-age"] == CONFLICT
    assert parse_directives("max-age=60, max-age=60")["max-age"] == "60"
    assert delta_seconds(CONFLICT) is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0), ("003600", 3600), (str(2**31 + 5), MAX_DELTA), ("99999999999", MAX_DELTA),
    ("-1", None), ("3600.5", None), ("'3600'", None), ("a1", None), ("", None), (None, None),
])
def test_1_2_2_delta_seconds(text, seconds) -> None:
    assert delta_seconds(text) == seconds


@pytest.mark.parametrize("text", [
    T0_TEXT, "Sunday, 29-Nov-26 12:00:00 GMT", "Sun Nov 29 12:00:00 2026", "sun, 29 nov 2026 12:00:00 gmt",
])
def test_rfc9110_5_6_7_all_three_date_forms_parse(text) -> None:
    assert parse_http_date(text) == T0


@pytest.mark.parametrize("text", [
    "0", "Sun, 29 Nov 2026 12:00:00 UTC", "Sun, 29 Nov 26 12:00:00 GMT", "Sun 29 Nov 2026 12:00:00 GMT",
    "Sun,  29 Nov 2026 12:00:00 GMT", "Sun, 29 Nov 2026 2:00:00 GMT", "29-Nov-2026", "Xyz, 29 Nov 2026 12:00:00 GMT",
    "Sun, 29 Foo 2026 12:00:00 GMT", "Sun, 32 Nov 2026 12:00:00 GMT", T0_TEXT + ", " + T0_TEXT,
])
def test_rfc9110_5_6_7_anything_else_is_not_a_date(text) -> None:
    assert parse_http_date(text) is None


@pytest.mark.parametrize(("text", "age"), [
    ("60", 60), ("7200, 0", 7200), ("0, 7200", 0), ("abc", 0), ("-7200", 0), ("7200.0", 0),
    (str(2**31 + 1), MAX_DELTA), (None, 0),
])
def test_5_1_age_uses_the_first_member_and_ignores_an_invalid_value(text, age) -> None:
    assert parse_age(text) == age


def test_5_1_two_age_lines_join_and_the_first_counts() -> None:
    assert parse_age(fields_of([("Age", "7200"), ("age", "0")])["age"]) == 7200


# --------------------------------------------------------------------------- 3 storing


def _storable(status=200, cc="max-age=60", method="GET", request_cc=None, authorization=False, **fields):
    headers = {"cache-control": cc} if cc is not None else {}
    headers.update({k.replace("_", "-"): v for k, v in fields.items()})
    return storable(method, status, parse_directives(request_cc), parse_directives(cc), headers, authorization)


def test_3_a_fresh_get_response_is_storable() -> None:
    assert _storable() is None


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "OPTIONS"])
def test_3_only_get_responses_are_stored(method) -> None:
    assert _storable(method=method) == "method"


@pytest.mark.parametrize("status", [100, 206, 304])
def test_3_interim_partial_and_not_modified_responses_are_not_stored_as_such(status) -> None:
    assert _storable(status=status) == "status"


@pytest.mark.parametrize("status", [200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 599])
def test_3_any_final_status_with_explicit_freshness_is_storable(status) -> None:
    assert _storable(status=status) is None


@pytest.mark.parametrize(("status", "expected"), [(200, None), (404, None), (410, None), (501, None),
                                                  (201, "status"), (302, "status"), (403, "status"), (503, "status")])
def test_3_without_explicit_freshness_only_heuristically_cacheable_statuses(status, expected) -> None:
    assert _storable(status=status, cc=None, last_modified=T0_TEXT) == expected


def test_3_public_makes_any_status_storable() -> None:
    assert _storable(status=599, cc="public") is None


def test_5_2_2_5_no_store_and_5_2_1_5_request_no_store() -> None:
    assert _storable(cc="max-age=60, No-Store") == "no-store"
    assert _storable(request_cc="no-store") == "request no-store"


def test_5_2_2_3_must_understand_overrides_no_store_only_for_understood_statuses() -> None:
    assert _storable(cc="max-age=60, no-store, must-understand") is None
    assert _storable(status=599, cc="max-age=60, no-store, must-understand") == "must-understand"


@pytest.mark.parametrize("cc", ["private, max-age=60", 'private="set-cookie", max-age=60'])
def test_5_2_2_7_private_is_never_stored_by_a_shared_cache(cc) -> None:
    assert _storable(cc=cc) == "private"


@pytest.mark.parametrize(("cc", "expected"), [
    ("max-age=60", "authorization"), ("public, max-age=60", None), ("s-maxage=60", None),
    ("must-revalidate, max-age=60", None),
])
def test_3_5_authorization_needs_public_s_maxage_or_must_revalidate(cc, expected) -> None:
    assert _storable(cc=cc, authorization=True) == expected


@pytest.mark.parametrize("vary", ["*", "Accept, *", " , *"])
def test_4_1_vary_star_is_not_stored(vary) -> None:
    assert _storable(vary=vary) == "vary *"


def test_set_cookie_is_stored_only_under_explicit_freshness() -> None:
    assert _storable(set_cookie="a=b") is None
    assert _storable(cc=None, set_cookie="a=b", last_modified=T0_TEXT) == "set-cookie without explicit freshness"


# --------------------------------------------------------------------------- 4.2 freshness


def _lifetime(cc=None, status=200, date=T0, **fields):
    headers = {k.replace("_", "-"): v for k, v in fields.items()}
    return freshness_lifetime(status, parse_directives(cc), headers, date, default_ttl=0.0, max_heuristic=86400)


def test_4_2_1_s_maxage_beats_max_age_beats_expires() -> None:
    expires = "Sun, 29 Nov 2026 13:00:00 GMT"
    assert _lifetime("max-age=60, s-maxage=10", expires=expires) == 10
    assert _lifetime("max-age=60", expires=expires) == 60
    assert _lifetime(None, expires=expires) == 3600


def test_4_2_1_an_invalid_value_makes_the_response_stale_not_a_fallback() -> None:
    assert _lifetime("max-age=abc", expires="Sun, 29 Nov 2026 13:00:00 GMT") == 0
    assert _lifetime("max-age=60, max-age=120") == 0
    assert _lifetime(None, expires="0") == 0
    assert _lifetime(None, expires="Sun, 29 Nov 2026 11:00:00 GMT") == 0  # in the past


def test_4_2_2_heuristic_is_a_tenth_of_the_time_since_last_modified_capped() -> None:
    assert _lifetime(None, last_modified="Sun, 29 Nov 2026 02:00:00 GMT") == 3600
    assert _lifetime(None, last_modified="Sun, 01 Jan 2006 00:00:00 GMT") == 86400
    assert _lifetime(None, status=403, last_modified="Sun, 29 Nov 2026 02:00:00 GMT") == 0


def test_4_2_2_without_last_modified_the_route_default_applies() -> None:
    assert freshness_lifetime(200, {}, {}, T0, default_ttl=30) == 30
    assert freshness_lifetime(200, {"max-age": "5"}, {}, T0, default_ttl=30) == 5


def test_4_2_3_age_takes_the_larger_of_apparent_and_corrected_age() -> None:
    # The origin's clock is 100 s slow: the Date says the response is 100 s old.
    assert initial_age(date=T0 - 100, age=0, request_time=T0 - 1, response_time=T0) == 100
    # A received Age of 30 plus 2 s of response delay.
    assert initial_age(date=T0, age=30, request_time=T0 - 2, response_time=T0) == 32
    # A Date in the future counts as no age at all.
    assert initial_age(date=T0 + 50, age=0, request_time=T0, response_time=T0) == 0


# --------------------------------------------------------------------------- 4 reuse


def _reuse(age, lifetime=60, cc="", request=None):
    return reuse(age, lifetime, parse_directives(cc), RequestDirectives(request))


def test_4_2_fresh_while_age_is_below_the_lifetime() -> None:
    assert _reuse(59.9) == FRESH
    assert _reuse(60) == VALIDATE


def test_5_2_2_4_response_no_cache_always_validates() -> None:
    assert _reuse(0, cc="max-age=60, no-cache") == VALIDATE
    assert _reuse(0, cc='no-cache="set-cookie"') == VALIDATE


@pytest.mark.parametrize(("request_cc", "age", "verdict"), [
    ("no-cache", 0, VALIDATE), ("max-age=10", 11, VALIDATE), ("max-age=10", 9, FRESH), ("max-age=0", 0.5, VALIDATE),
    ("min-fresh=20", 45, VALIDATE), ("min-fresh=20", 30, FRESH), ("max-stale", 1000, STALE_ALLOWED),
    ("max-stale=10", 69, STALE_ALLOWED), ("max-stale=10", 71, VALIDATE),
])
def test_5_2_1_request_directives(request_cc, age, verdict) -> None:
    assert _reuse(age, request=request_cc) == verdict


@pytest.mark.parametrize("cc", ["max-age=60, must-revalidate", "max-age=60, proxy-revalidate", "s-maxage=60"])
def test_5_2_2_2_must_revalidate_beats_max_stale_and_swr(cc) -> None:
    assert _reuse(70, cc=cc + ", stale-while-revalidate=100", request="max-stale") == VALIDATE


def test_rfc5861_3_stale_while_revalidate_only_within_its_window() -> None:
    assert _reuse(70, cc="max-age=60, stale-while-revalidate=30") == STALE_REVALIDATING
    assert _reuse(91, cc="max-age=60, stale-while-revalidate=30") == VALIDATE


def test_rfc5861_4_stale_if_error_windows() -> None:
    directives = RequestDirectives(None)
    assert stale_if_error(70, 60, parse_directives("stale-if-error=20"), directives)
    assert not stale_if_error(90, 60, parse_directives("stale-if-error=20"), directives)
    assert stale_if_error(90, 60, {}, RequestDirectives("stale-if-error=40"))
    assert stale_if_error(90, 60, {}, directives, default_window=60)
    assert not stale_if_error(61, 60, parse_directives("must-revalidate, stale-if-error=99"), directives)
    assert not stale_if_error(61, 60, {"no-cache": None}, directives, default_window=60)


def test_5_4_pragma_is_not_read() -> None:
    assert not RequestDirectives(None).no_cache


# --------------------------------------------------------------------------- 4.3 conditionals


@pytest.mark.parametrize(("header", "etag", "match"), [
    ('"a"', '"a"', True), ('W/"a"', '"a"', True), ('"a"', 'W/"a"', True), ('"x", "a", "y"', '"a"', True),
    ("*", '"a"', True), ('"b"', '"a"', False), ('"a"', None, False), ("*", None, True),
])
def test_rfc9110_13_1_2_if_none_match_compares_weakly(header, etag, match) -> None:
    assert etag_matches(header, etag) is match


def test_4_3_2_if_none_match_wins_over_if_modified_since() -> None:
    environ = {"HTTP_IF_NONE_MATCH": '"b"', "HTTP_IF_MODIFIED_SINCE": T0_TEXT}
    assert not not_modified(environ, '"a"', T0 - 100)


def test_4_3_2_if_modified_since_compares_with_the_stored_modification_time() -> None:
    assert not_modified({"HTTP_IF_MODIFIED_SINCE": T0_TEXT}, None, T0)
    assert not_modified({"HTTP_IF_MODIFIED_SINCE": "Sunday, 29-Nov-26 12:00:00 GMT"}, None, T0 - 1)
    assert not not_modified({"HTTP_IF_MODIFIED_SINCE": T0_TEXT}, None, T0 + 1)
    assert not not_modified({"HTTP_IF_MODIFIED_SINCE": "yesterday"}, None, T0 - 1)


# --------------------------------------------------------------------------- 4.1 Vary


def test_4_1_vary_names_are_case_insensitive_and_deduplicated() -> None:
    assert vary_fields("Accept-Encoding, accept-encoding,  User-Agent") == ("accept-encoding", "user-agent")


def test_4_1_values_are_compared_after_joining_lines_and_trimming_members() -> None:
    names = ("accept-encoding", "foo")
    assert secondary_key(names, {"HTTP_ACCEPT_ENCODING": " gzip ,br ", "HTTP_FOO": "1, 2"}) == ("br,gzip", "1,2")  # codings normalised (sorted)
    assert secondary_key(names, {}) == (None, None)
    assert secondary_key(names, {"HTTP_FOO": ""}) == (None, "")


# --------------------------------------------------------------------------- RFC 9213 CDN-Cache-Control


@pytest.mark.parametrize(("value", "directives"), [
    ("max-age=10", {"max-age": "10"}), ("no-store", {"no-store": None}), ("max-age=10;x=1, private", {"max-age": "10", "private": None}),
    ("max-age=10, no-store=?0", {"max-age": "10"}), ('max-age="10"', {"max-age": '"10"'}),
    ("Max-Age=10", None), ("max-age = 10", None), ("max-age=10, @", None), ("", None), (None, None),
])
def test_rfc9213_cdn_cache_control_is_a_structured_dictionary_or_ignored(value, directives) -> None:
    from simpleproxy.cache.policy import parse_targeted

    assert parse_targeted(value) == directives


def test_rfc9213_2_1_a_valid_cdn_cache_control_replaces_cache_control_and_expires() -> None:
    from simpleproxy.cache.policy import response_directives

    fields = {"cache-control": "no-store", "cdn-cache-control": "max-age=600", "expires": "0"}
    assert response_directives(fields) == ({"max-age": "600"}, True)
    assert response_directives({"cache-control": "max-age=5", "cdn-cache-control": "Bad"}) == ({"max-age": "5"}, False)


@pytest.mark.parametrize(("name", "a", "b", "same"), [
    ("accept-encoding", "gzip, deflate, br", "br,deflate;q=0.5,gzip", True),
    ("accept-encoding", "gzip, x-gzip", "gzip", True),
    ("accept-encoding", "*", "br, compress, deflate, gzip, zstd", True),
    ("accept-encoding", "gzip, br;q=0", "gzip", True),  # refused codings are not accepted ones
    ("accept-encoding", "gzip, br", "gzip", False),
    ("accept-language", "en-US, en;q=0.9", "en-us,en;q=0.900", True),
    ("accept-language", "de;q=0.5, fr", "fr, de;q=0.5", True),  # q decides the order, not the writing
    ("accept-language", "fr, en", "en, fr", False),  # a different first choice
    ("x-tenant", "a, b", "a,b", True),
    ("x-tenant", "A", "a", False),  # other fields: trimmed, case kept
])
def test_vary_normalises_equivalent_requests_together(name, a, b, same) -> None:
    from simpleproxy.cache.policy import normalize_field

    assert (normalize_field(a, name) == normalize_field(b, name)) is same
