"""RFC 9111 rules as pure functions: what may be stored, for how long, and when it may be reused.

Nothing here touches a socket, a lock or a clock: every function takes the
times it needs, so each rule is tested exactly under a fake clock. Section
numbers refer to RFC 9111 (HTTP Caching) unless RFC 9110 is named.
"""

from __future__ import annotations

import calendar
import re
import time
from typing import Mapping

from werkzeug.http import http_date

from ..grammar import HOP_BY_HOP, cookie_value, environ_key, is_token, split_list, unquote, weighted

#: RFC 9110 section 15.1: statuses a cache may store with heuristic freshness.
HEURISTIC_STATUSES = frozenset((200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501))
#: Statuses this cache implements the semantics of (section 5.2.2.3, must-understand).
UNDERSTOOD_STATUSES = HEURISTIC_STATUSES | {302, 303, 307, 400, 403, 500, 502, 503, 504}
#: RFC 9110 section 9.2.1; any other method invalidates (section 4.4).
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
#: Section 1.2.2: a delta-seconds too large to represent is this.
MAX_DELTA = 2**31
#: Two copies of a directive with different values; never a valid delta-seconds.
CONFLICT = "\x00conflict"
#: Section 3.1 and RFC 9110 section 7.6.1: never stored with a response (hop-by-hop fields, what
#: a proxy answers for itself, and what the cache computes anew for each use).
UNSTORED_FIELDS = HOP_BY_HOP | {"proxy-authentication-info", "age", "cache-status"}
#: Section 3.2: a 304 does not replace these in the stored response.
NOT_UPDATED_FIELDS = UNSTORED_FIELDS | {"content-length"}
#: RFC 9110 section 15.4.5: what a 304 carries (Last-Modified too when there is no ETag).
NOT_MODIFIED_FIELDS = frozenset(("cache-control", "content-location", "date", "etag", "expires", "vary"))

_DELTA = re.compile(r"[0-9]+")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# RFC 9110 section 5.6.7: IMF-fixdate, then the two obsolete forms a recipient must accept.
# Names are matched without regard to case (senders get it wrong; the meaning is plain).
_IMF_FIXDATE = re.compile(r"([a-z]{3}), (\d{2}) ([a-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT", re.I | re.A)
_RFC850_DATE = re.compile(r"([a-z]{6,9}), (\d{2})-([a-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT", re.I | re.A)
_ASCTIME_DATE = re.compile(r"([a-z]{3}) ([a-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})", re.I | re.A)


def parse_directives(value: str | None) -> dict[str, str | None]:
    """``Cache-Control`` -> {lower-case name: argument or None} (section 5.2).

    Names are case-insensitive; quoted arguments are unquoted (recipients
    accept both forms); a malformed member is ignored; a directive given twice with different
    arguments holds :data:`CONFLICT`, which no rule reads as valid.
    """
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for member in split_list(value):
        name, eq, arg = member.partition("=")
        # The grammar has no space around "=": "max-age = 60" is not a max-age.
        if not is_token(name) or arg[:1].isspace():
            continue
        name = name.lower()
        argument: str | None = None
        if eq:
            argument = arg
            argument = unquote(arg)
        if name in directives and directives[name] != argument:
            argument = CONFLICT
        directives[name] = argument
    return directives


# RFC 8941 (Structured Fields) dictionary members, for RFC 9213's CDN-Cache-Control.
_SF_KEY = r"[a-z*][a-z0-9_\-.*]*"
_SF_BARE = (r'-?\d{1,15}(?:\.\d{1,3})?|"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"'
            r"|[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*|\?[01]|:[A-Za-z0-9+/=]*:")
_SF_MEMBER = re.compile(rf"({_SF_KEY})(?:=({_SF_BARE}))?(?:;\s*{_SF_KEY}(?:=(?:{_SF_BARE}))?)*")


def parse_targeted(value: str | None) -> dict[str, str | None] | None:
    """RFC 9213: ``CDN-Cache-Control`` as directives; None when absent, empty or not a valid
    Structured Fields dictionary (then it is ignored as a whole)."""
    if not value:
        return None
    directives: dict[str, str | None] = {}
    for member in split_list(value):
        match = _SF_MEMBER.fullmatch(member)
        if match is None:
            return None
        name, item = match.groups()
        if item == "?0":
            directives.pop(name, None)  # a false boolean: the directive is absent
        elif item is None or item == "?1":
            directives[name] = None
        else:
            directives[name] = item  # a string stays quoted: max-age="10" is not an integer here
    return directives or None


def response_directives(fields: Mapping[str, str]) -> tuple[dict[str, str | None], bool]:
    """-> (the directives this cache obeys, whether ``Expires`` is to be ignored).

    This cache sits in front of its origins as a CDN does, so a valid
    ``CDN-Cache-Control`` replaces ``Cache-Control`` and ``Expires`` for it
    (RFC 9213 section 2.1); the field still reaches the client unchanged.
    """
    targeted = parse_targeted(fields.get("cdn-cache-control"))
    if targeted is not None:
        return targeted, True
    return parse_directives(fields.get("cache-control")), False


def delta_seconds(argument: str | None) -> int | None:
    """Section 1.2.2: a non-negative integer, capped at 2**31; None when invalid."""
    if argument is None or not _DELTA.fullmatch(argument):
        return None
    return min(int(argument), MAX_DELTA)


def parse_http_date(value: str | None) -> float | None:
    """RFC 9110 section 5.6.7: an HTTP-date in any of its three forms -> seconds since the epoch."""
    if not value:
        return None
    value = value.strip()
    match = _IMF_FIXDATE.fullmatch(value)
    if match:
        weekday, day, month, year, hh, mm, ss = match.groups()
        if weekday.title() not in _DAYS:
            return None
    elif (match := _RFC850_DATE.fullmatch(value)) is not None:
        weekday, day, month, yy, hh, mm, ss = match.groups()
        if weekday.title() not in _LONG_DAYS:
            return None
        # RFC 9110: a two-digit year more than 50 years in the future is in the past century.
        year = str(2000 + int(yy) if 2000 + int(yy) <= _this_year() + 50 else 1900 + int(yy))
    elif (match := _ASCTIME_DATE.fullmatch(value)) is not None:
        weekday, month, day, hh, mm, ss, year = match.groups()
        if weekday.title() not in _DAYS:
            return None
    else:
        return None
    month_number = _MONTHS.get(month.title())
    if month_number is None:
        return None
    try:
        fields = (int(year), month_number, int(day), int(hh), int(mm), int(ss))
        if not (1 <= fields[2] <= calendar.monthrange(fields[0], month_number)[1]  # no 30 February
                and fields[3] < 24 and fields[4] < 60 and fields[5] < 61):
            return None
        return float(calendar.timegm(fields + (0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def _this_year() -> int:
    return time.gmtime().tm_year


def format_http_date(seconds: float) -> str:
    """IMF-fixdate, as every generated Date is written (werkzeug's, which is this exactly)."""
    return http_date(seconds)


def parse_age(value: str | None) -> int:
    """Section 5.1: the first member of ``Age``; an invalid value is ignored (0)."""
    if not value:
        return 0
    first = value.split(",", 1)[0].strip()
    seconds = delta_seconds(first)
    return seconds if seconds is not None else 0


def fields_of(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Response fields by lower-case name, repeated lines joined as one list (RFC 9110 section 5.3)."""
    fields: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        fields[key] = f"{fields[key]}, {value}" if key in fields else value
    return fields


# --------------------------------------------------------------------------- storing (section 3)


def storable(
    method: str,
    status: int,
    request_cc: Mapping[str, str | None],
    response_cc: Mapping[str, str | None],
    fields: Mapping[str, str],
    has_authorization: bool,
) -> str | None:
    """Why a shared cache must not store this response (None: it may).

    The reason becomes the ``detail`` of the ``Cache-Status`` field.
    """
    if method != "GET":
        return "method"
    if status < 200 or status in (206, 304):
        return "status"  # partial and not-modified responses only update stored ones
    if "no-store" in request_cc:
        return "request no-store"
    if "must-understand" in response_cc:
        if status not in UNDERSTOOD_STATUSES:
            return "must-understand"  # section 5.2.2.3: a status we do not implement
    elif "no-store" in response_cc:
        return "no-store"
    if "private" in response_cc:
        return "private"  # qualified or not: the cautious reading of section 5.2.2.7
    if has_authorization and not ({"public", "s-maxage", "must-revalidate"} & response_cc.keys()):
        return "authorization"  # section 3.5
    if "*" in (name.strip() for name in fields.get("vary", "").split(",")):
        return "vary *"  # section 4.1: it would never match
    explicit = {"public", "max-age", "s-maxage"} & response_cc.keys() or "expires" in fields
    if not explicit:
        if status not in HEURISTIC_STATUSES:
            return "status"
        # A cookie is one client's; it is shared only when the origin said the response is.
        if "set-cookie" in fields:
            return "set-cookie without explicit freshness"
    return None


def freshness_lifetime(
    status: int,
    response_cc: Mapping[str, str | None],
    fields: Mapping[str, str],
    date: float,
    default_ttl: float = 0.0,
    max_heuristic: float = 86400.0,
    heuristic: float = 0.1,
) -> float:
    """Section 4.2.1: s-maxage, then max-age, then Expires, then a heuristic (4.2.2).

    An invalid or conflicting value makes the response stale at once (the
    RFC's recommendation), never falls through to a weaker source. A
    heuristic is the share ``heuristic`` of the time since Last-Modified (a
    tenth by default; at most ``max_heuristic``; 0: none), or ``default_ttl``
    when there is no Last-Modified.
    """
    for name in ("s-maxage", "max-age"):
        if name in response_cc:
            return float(delta_seconds(response_cc[name]) or 0)
    if "expires" in fields:
        expires = parse_http_date(fields["expires"])
        return max(0.0, expires - date) if expires is not None else 0.0
    if status not in HEURISTIC_STATUSES and "public" not in response_cc:
        return 0.0
    last_modified = parse_http_date(fields.get("last-modified"))
    if last_modified is not None and heuristic > 0:
        return min(max(0.0, date - last_modified) * heuristic, max_heuristic)
    return default_ttl


def initial_age(date: float, age: int, request_time: float, response_time: float) -> float:
    """Section 4.2.3: the age a response already had when it arrived."""
    apparent_age = max(0.0, response_time - date)
    response_delay = response_time - request_time
    return max(apparent_age, age + response_delay)


def must_revalidate_when_stale(response_cc: Mapping[str, str | None]) -> bool:
    """Sections 5.2.2.2, 5.2.2.8 and 5.2.2.10: a shared cache never serves these stale."""
    return bool({"must-revalidate", "proxy-revalidate", "s-maxage"} & response_cc.keys())


# --------------------------------------------------------------------------- reusing (section 4)


class RequestDirectives:
    """The request's ``Cache-Control``, read once.

    ``Pragma`` is not read: RFC 9111 section 5.4 deprecates it, and clients
    that send ``Pragma: no-cache`` also send ``Cache-Control: no-cache``.
    """

    __slots__ = ("no_cache", "no_store", "only_if_cached", "max_age", "min_fresh", "max_stale", "stale_if_error")

    def __init__(self, cache_control: str | None) -> None:
        cc = parse_directives(cache_control)
        self.no_cache = "no-cache" in cc
        self.no_store = "no-store" in cc
        self.only_if_cached = "only-if-cached" in cc
        #: None: not given. An invalid max-age asks for a fresh answer (0).
        self.max_age = _request_delta(cc, "max-age")
        self.min_fresh = _request_delta(cc, "min-fresh")
        #: -1: any staleness (``max-stale`` without a value); None: not given
        self.max_stale: int | None = None
        if "max-stale" in cc:
            self.max_stale = -1 if cc["max-stale"] is None else delta_seconds(cc["max-stale"])
        self.stale_if_error = _request_delta(cc, "stale-if-error")

    @property
    def directives(self) -> dict[str, None]:
        """The fields set, for storable()'s ``request_cc`` argument."""
        return {"no-store": None} if self.no_store else {}


def _request_delta(cc: Mapping[str, str | None], name: str) -> int | None:
    if name not in cc:
        return None
    return delta_seconds(cc[name]) or 0


FRESH = "fresh"  #: reuse as it is
STALE_ALLOWED = "stale"  #: reuse stale, the client said it may (max-stale)
STALE_REVALIDATING = "stale-while-revalidate"  #: reuse stale, revalidate in the background
VALIDATE = "validate"  #: ask the origin first


def reuse(
    age: float,
    lifetime: float,
    response_cc: Mapping[str, str | None],
    request: RequestDirectives,
) -> str:
    """Section 4: may this stored response answer the request without asking the origin?"""
    if request.no_cache or "no-cache" in response_cc:
        return VALIDATE  # sections 5.2.1.4 and 5.2.2.4 (qualified no-cache read as unqualified)
    if request.max_age is not None and age > request.max_age:
        return VALIDATE
    if request.min_fresh is not None and lifetime - age < request.min_fresh:
        return VALIDATE
    if age < lifetime:
        return FRESH
    if must_revalidate_when_stale(response_cc):
        return VALIDATE
    staleness = age - lifetime
    if request.max_stale is not None and (request.max_stale < 0 or staleness <= request.max_stale):
        return STALE_ALLOWED
    window = delta_seconds(response_cc.get("stale-while-revalidate"))  # RFC 5861 section 3
    if window is not None and staleness <= window:
        return STALE_REVALIDATING
    return VALIDATE


def stale_if_error(
    age: float,
    lifetime: float,
    response_cc: Mapping[str, str | None],
    request: RequestDirectives,
    default_window: float = 0.0,
) -> bool:
    """May a stale response stand in for an unreachable or failing origin?

    Section 4.2.4 allows it when the cache is disconnected, RFC 5861 section
    4 when ``stale-if-error`` says so; ``default_window`` is the route's own
    bound for the first case. Never for a response that must be revalidated.
    """
    if must_revalidate_when_stale(response_cc) or "no-cache" in response_cc:
        return False
    staleness = age - lifetime
    windows = (delta_seconds(response_cc.get("stale-if-error")), request.stale_if_error, default_window)
    return any(window is not None and staleness <= window for window in windows)


# --------------------------------------------------------------------------- conditional requests


def etag_matches(if_none_match: str, etag: str | None) -> bool:
    """RFC 9110 section 13.1.2: ``*`` or any listed tag, compared weakly."""
    if if_none_match.strip() == "*":
        return True
    if not etag:
        return False
    ours = _opaque(etag)
    return any(_opaque(tag) == ours for tag in split_list(if_none_match))


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def not_modified(environ: Mapping[str, object], etag: str | None, modified: float) -> bool:
    """Section 4.3.2: does the client's conditional GET/HEAD match this stored response?

    ``If-None-Match`` decides when present; otherwise ``If-Modified-Since``
    against ``modified`` (Last-Modified, else Date, else the time the stored
    response arrived).
    """
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if isinstance(if_none_match, str):
        return etag_matches(if_none_match, etag)
    since = environ.get("HTTP_IF_MODIFIED_SINCE")
    since_time = parse_http_date(since) if isinstance(since, str) else None
    return since_time is not None and modified <= since_time


# --------------------------------------------------------------------------- Vary (section 4.1)


def vary_fields(vary: str | None, also: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The request fields a response varies on, lower-cased, sorted, without repeats; ``also``:
    what the route's key adds (field names, ``cookie:NAME``)."""
    if not vary and not also:
        return ()
    return tuple(sorted({name.strip().lower() for name in (vary or "").split(",") if name.strip()} | set(also)))


#: content codings Accept-Encoding may name that a cache tells apart
_CODINGS = ("br", "compress", "deflate", "gzip", "zstd")


def normalize_field(value: object, name: str = "") -> str | None:
    """A request field value as Vary compares it (section 4.1): list members trimmed, case kept;
    ``Accept-Encoding`` and ``Accept-Language`` normalised so that equivalent requests share a
    stored variant (see the two functions below)."""
    if not isinstance(value, str):
        return None
    if name == "accept-encoding":
        return _codings_accepted(value)
    if name == "accept-language":
        return _languages_in_order(value)
    return ",".join(member.strip() for member in value.split(","))


def _codings_accepted(value: str) -> str:
    """The codings an ``Accept-Encoding`` accepts (q > 0, ``*`` and ``x-gzip`` read), sorted. Two
    requests accepting the same codings can decode the same answers, whatever their order or
    q-values: an answer stored for one fits the other (``gzip, deflate, br`` = ``br,gzip;q=0.8,deflate``)."""
    q_of = weighted(value)
    star = q_of.get("*", 0.0)
    return ",".join(coding for coding in _CODINGS
                    if q_of.get(coding, q_of.get("x-gzip", star) if coding == "gzip" else star) > 0)


def _languages_in_order(value: str) -> str:
    """An ``Accept-Language`` lower-cased, spaced and weighted one way, in the client's order of
    preference (``en-US, en;q=0.90`` = ``en-us,en;q=0.9``). Not sorted by name: ``fr, en`` and
    ``en, fr`` ask for different answers, and sharing one would give a French page to someone
    who asked for English first."""
    ranked = sorted(weighted(value).items(), key=lambda item: -item[1])  # stable: ties keep their order
    return ",".join(tag if q == 1.0 else f"{tag};q={q:.3f}".rstrip("0").rstrip(".") for tag, q in ranked if q > 0)


def secondary_key(names: tuple[str, ...], environ: Mapping[str, object]) -> tuple[str | None, ...]:
    """The request's values for a response's Vary fields, in the order of ``names`` (lower case;
    ``cookie:NAME``: that cookie's value, from a route's cache.key)."""
    return tuple(_cookie(environ, name[7:]) if name.startswith("cookie:")
                 else normalize_field(environ.get(environ_key(name)), name) for name in names)


def _cookie(environ: Mapping[str, object], name: str) -> str | None:
    cookies = environ.get("HTTP_COOKIE")
    return cookie_value(cookies, name) if isinstance(cookies, str) else None
