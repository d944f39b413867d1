"""Stored responses: an entry per response, an LRU bounded in bytes, and the stores of a config.

A key (the URL) holds the variants stored for it, one per combination of the
request fields its ``Vary`` names. The LRU counts each entry's body and fields
plus a fixed estimate of its Python objects, so the byte budget bounds memory,
not just payload. Every operation takes one lock for O(1) work (purging a
prefix is the exception, and is an operator's action).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterable, Mapping

from .policy import (
    NOT_UPDATED_FIELDS,
    UNSTORED_FIELDS,
    fields_of,
    format_http_date,
    freshness_lifetime,
    initial_age,
    parse_age,
    parse_http_date,
    response_directives,
    secondary_key,
    vary_fields,
)

#: Bytes an entry costs beyond its body and fields (objects, dict and LRU links), measured
#: with benchmarks/cache.py; per field line, the tuple and two strings.
ENTRY_OVERHEAD = 1200
FIELD_OVERHEAD = 120


class Freshness:
    """One route's own rules on freshness: heuristics, a cap on lifetimes, stale on error."""

    __slots__ = ("default_ttl", "max_ttl", "max_heuristic", "stale_on_error", "heuristic")

    def __init__(
        self,
        default_ttl: float = 0.0,
        max_ttl: float | None = None,
        max_heuristic: float = 86400.0,
        stale_on_error: float = 0.0,
        heuristic: float = 0.1,
    ) -> None:
        self.heuristic = heuristic  #: the share of the time since Last-Modified a response stays fresh
        self.default_ttl = default_ttl  #: lifetime when a cacheable status carries no hint at all
        self.max_ttl = max_ttl  #: no response stays fresh longer
        self.max_heuristic = max_heuristic  #: cap on the Last-Modified heuristic
        #: how stale a response may be served when the origin cannot be reached
        self.stale_on_error = stale_on_error

    def lifetime(self, status: int, cc: Mapping[str, str | None], fields: Mapping[str, str], date: float) -> float:
        lifetime = freshness_lifetime(status, cc, fields, date, self.default_ttl, self.max_heuristic, self.heuristic)
        return lifetime if self.max_ttl is None else min(lifetime, self.max_ttl)


class Entry:
    """One stored response with what reusing it needs, computed once when stored."""

    __slots__ = (
        "key", "status", "status_line", "headers", "body", "vary", "variant", "cc", "etag",
        "last_modified", "modified", "date", "response_time", "base_age", "lifetime", "size", "tags",
    )

    def __init__(
        self,
        key: str,
        status_line: str,
        headers: list[tuple[str, str]],
        body: bytes,
        request_environ: Mapping[str, object],
        request_time: float,
        response_time: float,
        freshness: Freshness,
        also_vary: tuple[str, ...] = (),
        tags: frozenset[str] = frozenset(),
    ) -> None:
        """``also_vary``: what the route's cache.key adds to the response's Vary (fields, ``cookie:NAME``);
        ``tags``: what the response was tagged with (Cache-Tag, Surrogate-Key), to purge by."""
        self.key = key
        self.tags = tags
        self.status_line = status_line
        self.status = int(status_line[:3])
        self.body = body
        headers = [(n, v) for n, v in headers if n.lower() not in UNSTORED_FIELDS or n.lower() == "age"]
        fields = fields_of(headers)
        self.vary = vary_fields(fields.get("vary"), also_vary)
        self.variant = secondary_key(self.vary, request_environ)
        self._set_fields(headers, fields, request_time, response_time, freshness)

    def _set_fields(
        self,
        headers: list[tuple[str, str]],
        fields: dict[str, str],
        request_time: float,
        response_time: float,
        freshness: Freshness,
    ) -> None:
        """Everything derived from the header fields and the exchange's times (section 4.2)."""
        date = parse_http_date(fields.get("date"))
        if date is None:  # RFC 9110 section 6.6.1: a cache adds the Date it lacked
            date = response_time
            fields["date"] = format_http_date(date)
            headers = [(n, v) for n, v in headers if n.lower() != "date"] + [("Date", fields["date"])]
        age = parse_age(fields.get("age"))
        self.headers = [(n, v) for n, v in headers if n.lower() != "age"]
        self.cc, targeted = response_directives(fields)
        if targeted:
            fields = {name: value for name, value in fields.items() if name != "expires"}
        self.etag = fields.get("etag")
        self.last_modified = fields.get("last-modified")
        self.modified = parse_http_date(self.last_modified) or date
        self.date = date
        self.response_time = response_time
        self.base_age = initial_age(date, age, request_time, response_time)
        self.lifetime = freshness.lifetime(self.status, self.cc, fields, date)
        self.set_body(self.body)

    def set_body(self, body: bytes) -> None:
        """The body, once it arrived whole: its exact Content-Length and the entry's size."""
        self.body = body
        if self.status != 204:
            self.headers = [(n, v) for n, v in self.headers if n.lower() != "content-length"]
            self.headers.append(("Content-Length", str(len(body))))
        self.size = (
            ENTRY_OVERHEAD + len(body) + len(self.key)
            + sum(len(n) + len(v) + FIELD_OVERHEAD for n, v in self.headers)
            + sum(len(value) for value in self.variant if value)  # a Vary: Cookie key can be large
        )

    def age(self, now: float) -> float:
        """Section 4.2.3: current_age = corrected_initial_age + resident_time."""
        return self.base_age + max(0.0, now - self.response_time)

    def has_validator(self) -> bool:
        return self.etag is not None or self.last_modified is not None

    def matches(self, environ: Mapping[str, object]) -> bool:
        """Section 4.1: the request carries the same values for every field in Vary."""
        return not self.vary or secondary_key(self.vary, environ) == self.variant

    def validated_by(self, fields: Mapping[str, str]) -> bool:
        """Section 4.3.4: does this 304 identify this stored response?

        A strong ETag must equal ours, a weak one compare weakly; without an
        ETag a Last-Modified must equal ours. A 304 with no validator answers
        the conditional request we sent for exactly this response.
        """
        etag = fields.get("etag")
        if etag is not None:
            if self.etag is None:
                return False
            if etag.startswith("W/") or self.etag.startswith("W/"):
                return etag.removeprefix("W/") == self.etag.removeprefix("W/")
            return etag == self.etag
        last_modified = fields.get("last-modified")
        if last_modified is not None:
            return last_modified == self.last_modified
        return True

    def freshened(
        self, headers_304: list[tuple[str, str]], request_time: float, response_time: float, freshness: Freshness
    ) -> Entry:
        """Section 3.2 and 4.3.4: a copy with the 304's fields replacing the stored ones."""
        update = [(n, v) for n, v in headers_304 if n.lower() not in NOT_UPDATED_FIELDS or n.lower() == "age"]
        # A 304 without Date is dated on arrival, not by the stored response's Date.
        replaced = {n.lower() for n, _ in update} | {"date"}
        headers = [(n, v) for n, v in self.headers if n.lower() not in replaced] + update
        entry = Entry.__new__(Entry)
        entry.key, entry.status, entry.status_line, entry.body = self.key, self.status, self.status_line, self.body
        entry.vary, entry.variant, entry.tags = self.vary, self.variant, self.tags
        entry._set_fields(headers, fields_of(headers), request_time, response_time, freshness)
        return entry


class Store:
    """A thread-safe LRU of entries by URL key, bounded by total bytes and by object size."""

    def __init__(self, max_size: int, max_object: int) -> None:
        self.max_size = max_size
        self.max_object = min(max_object, max_size)
        self.size = 0
        self.evictions = 0
        self._keys: OrderedDict[str, list[Entry]] = OrderedDict()
        #: tag -> the keys with a variant so tagged (a key stays until none of its variants is left)
        self._tags: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(variants) for variants in self._keys.values())

    def lookup(self, key: str, environ: Mapping[str, object]) -> tuple[Entry | None, bool]:
        """-> (the variant matching the request; whether the key had any variant).

        At most one matches: variants share one Vary list (a response with
        another replaces them all) and each holds distinct values for it.
        """
        with self._lock:
            variants = self._keys.get(key)
            if variants is None:
                return None, False
            self._keys.move_to_end(key)
        for entry in variants:  # a list never changed once stored: put() builds a new one
            if entry.matches(environ):
                return entry, True
        return None, True

    def put(self, entry: Entry) -> bool:
        """Store an entry, replacing the variant it supersedes; False if it is too large."""
        if entry.size > self.max_object:
            return False
        with self._lock:
            variants = self._keys.pop(entry.key, [])
            kept = [v for v in variants if v.vary == entry.vary and v.variant != entry.variant]
            self.size += entry.size - sum(v.size for v in variants) + sum(v.size for v in kept)
            replaced = [v for v in variants if not any(v is k for k in kept)]
            self._untag(entry.key, replaced, keep={tag for v in kept for tag in v.tags} | entry.tags)
            kept.append(entry)
            self._keys[entry.key] = kept
            for tag in entry.tags:
                self._tags.setdefault(tag, set()).add(entry.key)
            while self.size > self.max_size:
                key, evicted = self._keys.popitem(last=False)
                self.size -= sum(v.size for v in evicted)
                self.evictions += len(evicted)
                self._untag(key, evicted)
        return True

    def _untag(self, key: str, gone: list[Entry], keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Under the lock: variants of ``key`` are gone; forget the key under their tags, but those
        its remaining variants (``keep``) still carry."""
        for tag in {tag for entry in gone for tag in entry.tags} - keep:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

    def remove_tag(self, tag: str) -> int:
        """Drop every variant tagged ``tag``; the number dropped."""
        dropped = 0
        with self._lock:
            for key in self._tags.pop(tag, ()):
                variants = self._keys.get(key)
                if not variants:
                    continue
                kept = [v for v in variants if tag not in v.tags]
                gone = [v for v in variants if tag in v.tags]
                self.size -= sum(v.size for v in gone)
                dropped += len(gone)
                if kept:
                    self._keys[key] = kept
                else:
                    del self._keys[key]
                    self._untag(key, gone)
        return dropped

    def remove(self, key: str) -> int:
        """Drop every variant of a URL key; the number dropped."""
        with self._lock:
            variants = self._keys.pop(key, None)
            if not variants:
                return 0
            self.size -= sum(v.size for v in variants)
            self._untag(key, variants)
            return len(variants)

    def remove_prefix(self, prefix: str) -> int:
        with self._lock:
            keys = [key for key in self._keys if key.startswith(prefix)]
        return sum(self.remove(key) for key in keys)


class Caches:
    """The stores of one configuration: each route's own share, and one shared by the rest."""

    def __init__(self, stores: Iterable[Store]) -> None:
        self.stores = list(stores)
        self.shared: Store | None = None  #: the store of the routes without their own max_size
        self.own: dict[tuple[str | None, str], Store] = {}  #: by (host, path), routes with their own

    def invalidate(self, keys: Iterable[str]) -> int:
        """Section 4.4: forget these URL keys in every store."""
        keys = list(keys)
        return sum(store.remove(key) for store in self.stores for key in keys)

    def purge(self, url: str) -> int:
        """Drop what is stored for a URL (``http://host/path?query``); the number of responses."""
        url = _lower_origin(url)
        keys = {url, url.partition("?")[0]}
        return self.invalidate(keys)

    def purge_prefix(self, prefix: str) -> int:
        """Drop every stored URL that starts with ``prefix`` (``http://host/static/``)."""
        prefix = _lower_origin(prefix)
        return sum(store.remove_prefix(prefix) for store in self.stores)

    def purge_tag(self, tag: str) -> int:
        """Drop every stored response tagged ``tag`` (Cache-Tag, Surrogate-Key), in every route's store."""
        return sum(store.remove_tag(tag) for store in self.stores)


def _lower_origin(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"{url!r}: give a full URL, like http://host/path")
    authority, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{authority.lower()}{slash}{path}"
