"""The cache as a filter in a route's chain: look up, reuse, revalidate, store, invalidate.

Only routes with ``cache:`` have this filter, so other routes never pay for
it. A response is teed into the store while it streams to the client and
stored only once it arrived whole and within the object size limit.
Concurrent misses for one URL wait for the first (nginx's
``proxy_cache_lock``), bounded by ``lock_timeout``. Every answer says what the
cache did in a ``Cache-Status`` field (RFC 9211).
"""

from __future__ import annotations

import fnmatch
import io
import logging
import re
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urljoin, urlsplit

from ..config import CacheKey
from ..errors import NotInCache, UpstreamError
from ..memo import Memo
from ..request import Request, normalize_path
from ..response import BodyStream, Handler, Response
from ..upgrade import UPGRADE
from .policy import (
    FRESH,
    NOT_MODIFIED_FIELDS,
    SAFE_METHODS,
    STALE_REVALIDATING,
    VALIDATE,
    RequestDirectives,
    fields_of,
    not_modified,
    response_directives,
    reuse,
    stale_if_error,
    storable,
)
from .ranges import RangeBody, RangePlan, byte_ranges, if_range_holds
from .store import Caches, Entry, Freshness, Store

log = logging.getLogger("simpleproxy.cache")


_CONDITIONAL = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")
#: what a validation request leaves out of the client's: it validates the whole stored response
_NOT_VALIDATING = frozenset(_CONDITIONAL + ("CONTENT_LENGTH", "HTTP_RANGE", "HTTP_IF_RANGE"))
#: how long a URL whose whole response would not be stored has its ranges passed on unasked
_PASS_RANGES_FOR = 60.0
_NAME = "simpleproxy"
_NO_DIRECTIVES = RequestDirectives(None)
#: Background revalidations (stale-while-revalidate) running at once, per route.
_REFRESH_SLOTS = 4


class Flights:
    """Requests in flight by URL key, so that one miss goes upstream and the others wait."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        #: notified whenever ``waiting`` changes
        self.changed = threading.Condition(threading.Lock())
        self.waiting = 0  #: requests waiting for another's response right now

    def join(self, key: str) -> tuple[threading.Event, bool]:
        """-> (the flight's event, whether the caller leads it and must :meth:`land` it)."""
        with self.changed:
            event = self._events.get(key)
            if event is not None:
                return event, False
            event = self._events[key] = threading.Event()
            return event, True

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait for a leader to land; False when ``timeout`` ran out first."""
        with self.changed:
            self.waiting += 1
            self.changed.notify_all()
        try:
            return event.wait(timeout)
        finally:
            with self.changed:
                self.waiting -= 1
                self.changed.notify_all()

    def land(self, key: str, event: threading.Event) -> None:
        with self.changed:
            if self._events.get(key) is event:
                del self._events[key]
        event.set()


class _Fill:
    """Collects a streaming body for the store; gives up past the object size limit."""

    __slots__ = ("entry", "chunks", "size", "limit", "done")

    def __init__(self, entry: Entry, limit: int, done: Callable[[Entry | None], None]) -> None:
        self.entry = entry
        self.chunks: list[bytes] | None = []
        self.size = 0
        self.limit = limit
        self.done = done

    def write(self, data: bytes) -> None:
        if self.chunks is not None:
            self.size += len(data)
            if self.size > self.limit:
                self.chunks = None
            else:
                self.chunks.append(data)

    def finish(self, complete: bool) -> None:
        if complete and self.chunks is not None:
            self.entry.set_body(b"".join(self.chunks))
            self.done(self.entry)
        else:
            self.done(None)


class CacheFilter:
    """One route's cache: ``filter(request, next) -> Response``."""

    def __init__(
        self,
        store: Store,
        caches: Caches,
        freshness: Freshness,
        key_query: bool = True,
        lock_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        key_rules: CacheKey = CacheKey(),
        tag_fields: tuple[str, ...] = ("cache-tag", "surrogate-key"),
        pass_tags: bool = False,
    ) -> None:
        """``key_rules``: the route's cache.key (query parameters left out or sorted; fields and
        cookies that make variants, kept as the response's Vary is)."""
        self.store = store
        self.caches = caches
        self.freshness = freshness
        self.key_query = key_query
        self.key_rules = key_rules
        self._ignored = re.compile("|".join(fnmatch.translate(glob) for glob in key_rules.ignore_query)) \
            if key_rules.ignore_query else None
        self.also_vary = key_rules.fields
        self.tag_fields = frozenset(tag_fields)  #: response fields naming tags to purge by
        self.pass_tags = pass_tags  #: else those fields never reach a client (nor the store)
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.flights = Flights()
        self._refresh_slots = threading.BoundedSemaphore(_REFRESH_SLOTS)
        #: URLs whose ranges go to the origin as asked, until when and why (their whole response
        #: was not storable when last fetched for a range)
        self._passed_ranges: Memo[str, tuple[float, str]] = Memo(None, 1024)

    def key(self, request: Request) -> str:
        """The primary cache key: the effective request URI (section 2), its query as the route's
        cache.key says (fields and cookies it names vary the stored answers, as Vary does)."""
        query = request.query if self.key_query else ""
        if query and (self._ignored is not None or self.key_rules.sort_query):
            query = self._query(query)
        return f"{request.scheme}://{request.authority.lower()}{request.path}{query}"

    def _query(self, query: str) -> str:
        """``?utm_source=x&b=1&a=2`` -> ``?a=2&b=1`` (with ``ignore_query: [utm_*]`` and ``sort_query``)."""
        ignored = self._ignored
        pairs = [pair for pair in query[1:].split("&") if pair
                 and (ignored is None or not ignored.match(unquote(pair.partition("=")[0])))]
        if self.key_rules.sort_query:
            pairs.sort()
        return "?" + "&".join(pairs) if pairs else ""

    @staticmethod
    def passed_on(request: Request) -> str:
        """Why a request goes to the origin without a lookup ("" when it is looked up):
        ``method`` (only GET and HEAD are; an unsafe one invalidates), ``upgrade`` (a WebSocket
        handshake is never answered from store), ``precondition`` (If-Match and
        If-Unmodified-Since are for the origin to evaluate, section 4.3.2; If-Range is evaluated
        here, against the stored response, when a range is served from it)."""
        method = request.method
        if method != "GET" and method != "HEAD":
            return "method"
        environ = request.environ
        if UPGRADE in environ:
            return "upgrade"
        if "HTTP_IF_MATCH" in environ or "HTTP_IF_UNMODIFIED_SINCE" in environ:
            return "precondition"
        return ""

    def __call__(self, request: Request, next: Handler) -> Response:
        response = self._answer(request, next)
        if response.cache != "hit" and not self.pass_tags and self.tag_fields:  # a hit's were never stored
            headers = response.headers
            if any(name.lower() in self.tag_fields for name, _ in headers):
                headers[:] = [(name, value) for name, value in headers if name.lower() not in self.tag_fields]
        return response

    def _tags(self, headers: list[tuple[str, str]]) -> frozenset[str]:
        """The tags a response names: Cache-Tag lists them by commas, Surrogate-Key by spaces."""
        return frozenset(tag for name, value in headers if name.lower() in self.tag_fields
                         for tag in value.replace(",", " ").split())

    def _answer(self, request: Request, next: Handler) -> Response:
        passed_on = self.passed_on(request)
        if passed_on:
            if passed_on == "method":
                response = next(request)
                if request.method not in SAFE_METHODS and _status(response) < 400:
                    self._invalidate(request, response)
                return _tag(response, "fwd=method")
            if passed_on == "upgrade":
                return next(request)
            return _tag(self._bypass(request, next), "fwd=bypass")
        method = request.method
        environ = request.environ
        cache_control = environ.get("HTTP_CACHE_CONTROL")
        directives = _NO_DIRECTIVES if cache_control is None else RequestDirectives(cache_control)
        key = self.key(request)
        entry, known = self.store.lookup(key, environ)
        if "HTTP_RANGE" in environ:
            # Served from a stored whole response (revalidated first if need be); else see _range_miss.
            if entry is not None:
                return self._reuse(request, next, entry, directives)
            if directives.only_if_cached:
                raise NotInCache("the range is not in the cache (only-if-cached)")
            if method == "HEAD" or directives.no_store or _conditional(environ):
                return _tag(next(request), "fwd=bypass")
            return self._range_miss(request, next, directives, key, "vary-miss" if known else "uri-miss")
        if entry is not None:
            if cache_control is None and not _conditional(environ):
                # The common hit, inline: what reuse() and _serve() decide for a request without
                # directives or conditions (fresh, no response no-cache) without their calls.
                age = entry.age(self.clock())
                if age < entry.lifetime and "no-cache" not in entry.cc:
                    headers = entry.headers + [
                        ("Age", str(int(age))), ("Cache-Status", f"{_NAME}; hit; ttl={int(entry.lifetime - age)}")
                    ]
                    response = Response(entry.status_line, headers,
                                        [entry.body] if method == "GET" and entry.body else [])
                    response.cache = "hit"
                    return response
            return self._reuse(request, next, entry, directives)
        if directives.only_if_cached:
            raise NotInCache("not in the cache (only-if-cached)")
        fwd = "vary-miss" if known else "uri-miss"
        if method == "HEAD" or directives.no_store or _conditional(environ):
            return self._forward(request, next, directives, fwd)
        event, leader = self.flights.join(key)
        if leader:
            return self._forward(request, next, directives, fwd, lambda: self.flights.land(key, event))
        entry = self._follow(event, key, environ)
        if entry is not None:
            return self._reuse(request, next, entry, directives, collapsed=True)
        return self._forward(request, next, directives, fwd + "; collapsed=?0")

    def _follow(self, event: threading.Event, key: str, environ: dict[str, Any]) -> Entry | None:
        """Collapsed forwarding: wait for the request fetching ``key`` to store it; what it stored."""
        if not self.flights.wait(event, self.lock_timeout):
            log.info("waited %.1fs for another request to fetch %s; fetching it too", self.lock_timeout, key)
        return self.store.lookup(key, environ)[0]

    @staticmethod
    def _bypass(request: Request, next: Handler) -> Response:
        cache_control = request.environ.get("HTTP_CACHE_CONTROL")
        if cache_control is not None and RequestDirectives(cache_control).only_if_cached:
            raise NotInCache("a conditional request the cache does not answer (only-if-cached)")
        return next(request)

    # ------------------------------------------------------------------ reuse and revalidation

    def _reuse(
        self, request: Request, next: Handler, entry: Entry, directives: RequestDirectives, collapsed: bool = False
    ) -> Response:
        age = entry.age(self.clock())
        verdict = reuse(age, entry.lifetime, entry.cc, directives)
        if verdict == VALIDATE:
            if directives.only_if_cached:
                raise NotInCache("only a stale response is stored (only-if-cached)")
            return self._revalidate(request, next, entry, directives)
        if verdict == STALE_REVALIDATING and not directives.only_if_cached:
            self._refresh_in_background(request, next, entry)
        ttl = int(entry.lifetime - age)
        status = f"fwd=uri-miss; collapsed; ttl={ttl}" if collapsed else f"hit; ttl={ttl}"
        if verdict != FRESH:
            status += f'; detail="{verdict}"'
        return self._serve(request, entry, age, status, "hit" if verdict == FRESH else "stale")

    def _serve(self, request: Request, entry: Entry, age: float, status: str, kind: str) -> Response:
        """A stored response; 304 when the client's own condition matches it (section 4.3.2),
        206 for a single satisfiable byte range of a stored 200 (RFC 9110 section 14)."""
        extra = [("Age", str(int(age))), ("Cache-Status", f"{_NAME}; {status}")]
        environ = request.environ
        if _conditional(environ) and 200 <= entry.status < 300:
            if not_modified(environ, entry.etag, entry.modified):
                kept = NOT_MODIFIED_FIELDS if entry.etag else NOT_MODIFIED_FIELDS | {"last-modified"}
                headers = [(n, v) for n, v in entry.headers if n.lower() in kept]
                return _kind(Response("304 Not Modified", headers + extra, []), kind)
        if entry.status == 200 and "HTTP_RANGE" in environ:
            plan = _plan(environ, entry, len(entry.body))
            if plan is not None:
                body = [] if request.method == "HEAD" or not plan.pieces else [plan.cut(entry.body)]
                return _kind(Response(plan.status, plan.headers(entry.headers) + extra, body), kind)
        body = [] if request.method == "HEAD" or not entry.body else [entry.body]
        return _kind(Response(entry.status_line, entry.headers + extra, body), kind)

    def _revalidate(self, request: Request, next: Handler, entry: Entry, directives: RequestDirectives) -> Response:
        """Section 4.3: ask the origin whether the stored response is still good.

        Without a validator the request is unconditional; either way a failing
        origin may be answered with the stale response (section 4.2.4).
        """
        sub = self._validation_request(request, entry)
        request_time = self.clock()
        try:
            response = next(sub)
        except UpstreamError as exc:
            return self._stale_or_raise(request, entry, directives, exc)
        response_time = self.clock()
        status = _status(response)
        if status == 304:
            _close(response)
            fields = fields_of(response.headers)
            if not entry.validated_by(fields):
                return self._forward(request, next, directives, "stale")
            fresh = entry.freshened(response.headers, request_time, response_time, self.freshness)
            self.store.put(fresh)
            return self._serve(request, fresh, fresh.age(self.clock()), "fwd=stale; fwd-status=304", "revalidated")
        if status in (500, 502, 503, 504):
            age = entry.age(self.clock())
            if stale_if_error(age, entry.lifetime, entry.cc, directives, self.freshness.stale_on_error):
                _close(response)
                return self._serve(request, entry, age, f'fwd=stale; fwd-status={status}; detail="stale-if-error"', "stale")
        return self._admit(request, response, directives, request_time, response_time, "stale")

    def _head_seen(self, request: Request, response: Response, fields: dict[str, str], request_time: float,
                   response_time: float) -> None:
        """Section 4.3.5: a HEAD's 200 freshens the stored GET it identifies by a validator, and
        invalidates a stored GET it does not (the representation changed)."""
        key = self.key(request)
        entry, _ = self.store.lookup(key, request.environ)
        if entry is None:
            return
        if ("etag" in fields or "last-modified" in fields) and entry.validated_by(fields):
            self.store.put(entry.freshened(response.headers, request_time, response_time, self.freshness))
        else:
            self.store.remove(key)

    def _stale_or_raise(
        self, request: Request, entry: Entry, directives: RequestDirectives, exc: UpstreamError
    ) -> Response:
        """Section 4.2.4: a disconnected cache may serve stale, unless the response forbids it."""
        age = entry.age(self.clock())
        if stale_if_error(age, entry.lifetime, entry.cc, directives, self.freshness.stale_on_error):
            log.warning("serving %s stale: %s", entry.key, exc.detail)
            return self._serve(request, entry, age, f'fwd=stale; detail="{exc.detail}"', "stale")
        raise exc

    def _validation_request(self, request: Request, entry: Entry) -> Request:
        """The request as the cache sends it to validate ``entry``: its validators, not the client's
        (whose 304 could not refresh the stored response, nor answer a client that sent none)."""
        environ = {k: v for k, v in request.environ.items() if k not in _NOT_VALIDATING}
        environ["wsgi.input"] = io.BytesIO()
        if entry.etag is not None:
            environ["HTTP_IF_NONE_MATCH"] = entry.etag
        if entry.last_modified is not None:
            environ["HTTP_IF_MODIFIED_SINCE"] = entry.last_modified
        return request.derive(environ)

    def _refresh_in_background(self, request: Request, next: Handler, entry: Entry) -> None:
        """RFC 5861 stale-while-revalidate: one revalidation per URL at a time, on its own thread."""
        if not self._refresh_slots.acquire(blocking=False):
            return
        event, leader = self.flights.join(entry.key)
        if not leader:
            self._refresh_slots.release()
            return
        sub = self._validation_request(request, entry)  # its 103s: refused off the request's thread (interim.py)
        thread = threading.Thread(
            target=self._refresh, args=(sub, next, entry, event), name="simpleproxy-cache-refresh", daemon=True
        )
        try:
            thread.start()
        except BaseException:  # no thread to be had: leave nothing held
            self._refresh_slots.release()
            self.flights.land(entry.key, event)
            raise

    def _refresh(self, sub: Request, next: Handler, entry: Entry, event: threading.Event) -> None:
        try:
            response = self._revalidate(sub, next, entry, _NO_DIRECTIVES)
            try:
                for _ in response.body:  # a full response is stored as it is read
                    pass
            finally:
                _close(response)
        except Exception as exc:  # nobody is waiting for this answer: log it, keep serving stale
            log.info("background revalidation of %s failed: %s", entry.key, exc)
        finally:
            self._refresh_slots.release()
            self.flights.land(entry.key, event)

    # ------------------------------------------------------------------ forwarding and storing

    def _forward(
        self,
        request: Request,
        next: Handler,
        directives: RequestDirectives,
        fwd: str,
        landed: Callable[[], None] | None = None,
    ) -> Response:
        response, request_time, response_time = self._fetch(request, next, landed)
        return self._admit(request, response, directives, request_time, response_time, fwd, landed)

    def _fetch(
        self, request: Request, next: Handler, landed: Callable[[], None] | None
    ) -> tuple[Response, float, float]:
        """The origin's response and when it was asked and answered; a failure lands the flight."""
        request_time = self.clock()
        try:
            response = next(request)
        except BaseException:
            if landed is not None:
                landed()
            raise
        return response, request_time, self.clock()

    def _range_miss(
        self, request: Request, next: Handler, directives: RequestDirectives, key: str, fwd: str
    ) -> Response:
        """A range of something not stored: the whole response is fetched (one request, however many
        clients ask at once) and the range answered from it as it arrives, when it will be stored;
        else the range goes to the origin as asked (remembered for a while, so the next range of a
        too-large object goes there directly). Cache-Status says which."""
        environ = request.environ
        passed = self._passed_ranges.get(key)
        if passed is not None and passed[0] > self.clock():
            return _tag(next(request), f'fwd={fwd}; detail="range passed on: {passed[1]}"')
        event, leader = self.flights.join(key)
        if not leader:
            entry = self._follow(event, key, environ)
            if entry is not None:
                return self._reuse(request, next, entry, directives, collapsed=True)
            return _tag(next(request), f"fwd={fwd}; collapsed=?0")
        landed = lambda: self.flights.land(key, event)  # noqa: E731
        whole = request.derive({k: v for k, v in environ.items() if k not in ("HTTP_RANGE", "HTTP_IF_RANGE")})
        response, request_time, response_time = self._fetch(whole, next, landed)
        entry, reason = self._entry(whole, response, directives, request_time, response_time)
        if _status(response) != 200:
            return self._store(response, entry, reason, fwd, landed)
        if entry is None:
            _close(response)
            landed()
            self._passed_ranges.add(key, (self.clock() + _PASS_RANGES_FOR, reason))
            return _tag(next(request), f'fwd={fwd}; detail="range passed on: {reason}"')
        length = fields_of(response.headers).get("content-length", "")
        plan = _plan(environ, entry, int(length)) if length.isdigit() else None
        if plan is None:  # the whole response is the answer (RFC 9110 section 14.2 allows it)
            why = "range of unknown length: the whole" if not length.isdigit() else "range not taken: the whole"
            return self._store(response, entry, reason, fwd, landed, why)
        response = self._store(response, entry, reason, fwd, landed, "range of the whole")
        body = response.body
        if type(body) is list:  # in hand, and stored already
            response.body = [plan.cut(b"".join(body))] if plan.pieces else []
        else:
            response.body = RangeBody(body, plan)
        response.status = plan.status
        response.headers = plan.headers(response.headers)
        return response

    def _admit(
        self,
        request: Request,
        response: Response,
        directives: RequestDirectives,
        request_time: float,
        response_time: float,
        fwd: str,
        landed: Callable[[], None] | None = None,
    ) -> Response:
        """Store the response as it streams, if RFC 9111 and the size limit allow."""
        entry, reason = self._entry(request, response, directives, request_time, response_time)
        return self._store(response, entry, reason, fwd, landed)

    def _entry(
        self, request: Request, response: Response, directives: RequestDirectives, request_time: float,
        response_time: float,
    ) -> tuple[Entry | None, str]:
        """The entry ``response`` will be stored as (its body still to come), or None and why not."""
        status = _status(response)
        fields = fields_of(response.headers)
        environ = request.environ
        if status == 200 and request.method == "HEAD":
            self._head_seen(request, response, fields, request_time, response_time)
        response_cc, targeted = response_directives(fields)
        if targeted:
            fields.pop("expires", None)
        credentials = "HTTP_AUTHORIZATION" in environ or request.authenticated  # basic_auth may have taken the field
        reason = storable(request.method, status, directives.directives, response_cc, fields, credentials)
        entry = None
        if reason is None:
            length = fields.get("content-length", "")
            if length.isdigit() and int(length) > self.store.max_object:
                reason = "too large"
            else:
                headers = response.headers
                if not self.pass_tags:
                    headers = [(name, value) for name, value in headers if name.lower() not in self.tag_fields]
                entry = Entry(
                    self.key(request), response.status, headers, b"", environ,
                    request_time, response_time, self.freshness, self.also_vary, self._tags(response.headers),
                )
                if entry.lifetime <= 0 and not entry.has_validator():
                    reason, entry = "no freshness and no validator", None
        return entry, reason or ""

    def _store(
        self, response: Response, entry: Entry | None, reason: str, fwd: str, landed: Callable[[], None] | None,
        detail: str = "",
    ) -> Response:
        """Say what the cache did in Cache-Status; tee the body into ``entry`` (when there is one)."""
        said = "; stored" + (f'; detail="{detail}"' if detail else "") if entry else f'; detail="{reason}"'
        response.headers.append(("Cache-Status", f"{_NAME}; fwd={fwd}; fwd-status={_status(response)}{said}"))
        response.cache = "miss"
        if entry is None:
            if landed is not None:
                landed()
            return response
        self._tee(response, entry, landed)
        return response

    def _tee(self, response: Response, entry: Entry, landed: Callable[[], None] | None) -> None:
        store = self.store

        def done(whole: Entry | None) -> None:
            if whole is not None and store.put(whole):
                log.debug("stored %s (%d bytes)", whole.key, len(whole.body))
            if landed is not None:
                landed()

        body = response.body
        if type(body) is list:
            fill = _Fill(entry, store.max_object, done)
            for chunk in body:
                fill.write(chunk)
            fill.finish(True)
        elif isinstance(body, BodyStream):  # from upstream, or encoded on its way (compression.py)
            body.sink = _Fill(entry, store.max_object, done)
        else:
            response.body = _TeeBody(body, _Fill(entry, store.max_object, done))

    def _invalidate(self, request: Request, response: Response) -> None:
        """Section 4.4: an unsafe method that succeeded invalidates its URI and Location/Content-Location."""
        key = self.key(request)
        keys = {key, key.partition("?")[0] + (request.query if request.query else "")}
        origin = f"{request.scheme}://{request.authority.lower()}"
        for name, value in response.headers:
            if name.lower() in ("location", "content-location"):
                try:
                    target = urlsplit(urljoin(key, value.strip()))
                    path = normalize_path(target.path or "/")
                except ValueError:
                    continue  # not a URL: nothing to invalidate
                if f"{target.scheme}://{target.netloc.lower()}" != origin:
                    continue  # another host: must not be invalidated from here
                keys.add(origin + path + (f"?{target.query}" if target.query else ""))
                keys.add(origin + path)
        removed = self.caches.invalidate(keys)
        if removed:
            log.debug("invalidated %d stored responses after %s %s", removed, request.method, key)


class _TeeBody:
    """A body iterable of another kind, teed into a fill."""

    def __init__(self, body: Iterable[bytes], fill: _Fill) -> None:
        self.body = body
        self.fill = fill
        self.complete = False

    def __iter__(self) -> Any:
        for chunk in self.body:
            self.fill.write(chunk)
            yield chunk
        self.complete = True

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()
        self.fill.finish(self.complete)


def _plan(environ: dict[str, Any], entry: Entry, size: int) -> RangePlan | None:
    """The answer to the request's Range from ``entry`` (its body ``size`` bytes long), or None when
    the whole response is sent instead (If-Range does not hold, or the range is not read)."""
    if not if_range_holds(environ.get("HTTP_IF_RANGE"), entry.etag, entry.last_modified, entry.date):
        return None
    spans = byte_ranges(environ["HTTP_RANGE"], size)
    if spans is None:
        return None
    content_type = next((v for n, v in entry.headers if n.lower() == "content-type"), None)
    return RangePlan(spans, size, content_type)


def _conditional(environ: dict[str, Any]) -> bool:
    return "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ


def _status(response: Response) -> int:
    return int(response.status[:3])


def _tag(response: Response, status: str) -> Response:
    response.headers.append(("Cache-Status", f"{_NAME}; {status}"))
    response.cache = "bypass"
    return response


def _kind(response: Response, kind: str) -> Response:
    response.cache = kind
    return response


def _close(response: Response) -> None:
    close = getattr(response.body, "close", None)
    if close is not None:
        close()
