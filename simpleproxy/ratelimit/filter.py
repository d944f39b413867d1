"""Rate limits as a filter: each limit keys the request, asks its store, and passes, delays or refuses.

Answers carry the IETF ``RateLimit-Policy`` and ``RateLimit`` fields
(draft-ietf-httpapi-ratelimit-headers) for the limit with the fewest tokens
left; a refusal is a 429 with ``Retry-After`` computed from the bucket.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from typing import Any, Callable

from ..config import RateLimit
from ..errors import RateLimited, StoreUnavailable, StoreUnavailableError
from ..grammar import environ_key
from ..request import Request
from ..response import Handler, Response
from .bucket import Decision

log = logging.getLogger("simpleproxy.ratelimit")



class Limiter:
    """One configured limit: how it keys requests and where its buckets live."""

    def __init__(self, config: RateLimit, store: Any, name: str) -> None:
        """``name``: what the limit's buckets are keyed under, stable when routes move
        (``global``, ``app.example.com/api``), so Redis keys and reloads keep finding them."""
        self.config = config
        self.store = store
        self.interval = 1.0 / config.rate
        self.burst = config.burst
        self.name = name
        self.max_delay = config.max_delay
        window = max(1, math.ceil(config.burst * self.interval))
        self.policy = f'"{name}";q={config.burst};w={window}'
        self._parts = [self._part(name) for name in config.key]
        self._last_error_log = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def _part(name: str) -> Callable[[Request], str]:
        if name == "client_ip":
            return lambda request: request.client_ip
        if name == "host":
            return lambda request: request.host
        if name == "route":
            return lambda request: request.route.label if request.route is not None else "-"
        key = environ_key(name[7:])
        return lambda request: request.environ.get(key, "")

    def key(self, request: Request) -> str:
        parts = self._parts
        value = parts[0](request) if len(parts) == 1 else "\x1f".join(part(request) for part in parts)
        if len(value) > 64:  # a 60 KiB header value must not become a 60 KiB key, 100,000 times over
            value = "#" + hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
        return f"{self.name}|{value}"

    def check(self, request: Request) -> Decision | None:
        """The decision; None when the store failed and ``on_store_error: allow``."""
        try:
            return self.store.hit(self.key(request), self.interval, self.burst)
        except StoreUnavailable as exc:
            now = time.monotonic()
            with self._lock:
                due = now - self._last_error_log >= 10.0
                if due:
                    self._last_error_log = now
            if due:  # once per 10 s, not once per request
                log.error("%s: store %s unavailable (%s); requests are %s meanwhile", self.config.where,
                          self.config.store.split("@")[-1], exc, "allowed" if self.config.on_store_error == "allow" else "refused")
            if self.config.on_store_error == "deny":
                raise StoreUnavailableError("the rate limit store is unavailable") from None
            return None

    def fields(self, decision: Decision) -> list[tuple[str, str]]:
        return [("RateLimit-Policy", self.policy),
                ("RateLimit", f'"{self.name}";r={decision.remaining};t={math.ceil(decision.reset)}')]


class RateLimitFilter:
    """``filter(request, next)`` applying one or more limits (the global one first)."""

    def __init__(self, limiters: list[Limiter], sleep: Callable[[float], None] = time.sleep) -> None:
        self.limiters = limiters
        self.sleep = sleep

    def __call__(self, request: Request, next: Handler) -> Response:
        tightest: tuple[Limiter, Decision] | None = None
        delay = 0.0
        for limiter in self.limiters:
            decision = limiter.check(request)
            if decision is None:
                continue
            if not decision.allowed:
                retry = max(1, math.ceil(decision.retry_after))
                raise RateLimited(
                    f"rate limit exceeded ({limiter.config.rate_text}, burst {limiter.burst})",
                    headers=(("Retry-After", str(retry)), *limiter.fields(decision)),
                )
            if limiter.config.mode == "delay":
                if decision.wait > limiter.max_delay:  # held that long, it would hold a worker thread
                    raise RateLimited(
                        f"rate limit exceeded ({limiter.config.rate_text}; the wait would pass max_delay)",
                        headers=(("Retry-After", str(max(1, math.ceil(decision.wait)))), *limiter.fields(decision)),
                    )
                delay = max(delay, decision.wait)
            if tightest is None or decision.remaining < tightest[1].remaining:
                tightest = (limiter, decision)
        if delay > 0:
            self.sleep(delay)  # nginx's burst without nodelay: spaced out at the rate
        response = next(request)
        if tightest is not None:
            response.headers.extend(tightest[0].fields(tightest[1]))
        response.limit = "delayed" if delay > 0 else "passed"
        return response
