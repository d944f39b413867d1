"""Token-bucket rate limits: the arithmetic (:mod:`.bucket`), where buckets live (:mod:`.store`),
and the filter (:mod:`.filter`)."""

from __future__ import annotations

from typing import Any, Callable

from ..config import Config, RateLimit
from .filter import Limiter, RateLimitFilter
from ..observe.metrics import route_label
from .store import make_store

__all__ = ["Limiter", "RateLimitFilter", "build_limiters"]


def build_limiters(
    config: Config, clock: Callable[[], float], previous: dict[Any, Any] | None = None
) -> tuple[dict[str, RateLimitFilter], dict[Any, Any]]:
    """A filter for each route that any limit applies to (the global one first, then the route's),
    and the stores by limit, so that a reload keeps the buckets of limits that did not change."""
    previous = previous or {}
    stores: dict[Any, Any] = {}

    def limiter(where: Any, limit: RateLimit) -> Limiter:
        identity = (where, limit.store, limit.max_keys)
        store = previous.get(identity) or stores.get(identity) or make_store(limit.store, limit.max_keys, clock)
        stores[identity] = store
        name = where if isinstance(where, str) else route_label(*where)
        return Limiter(limit, store, name)

    overall = limiter("global", config.rate_limit) if config.rate_limit is not None else None
    filters: dict[str, RateLimitFilter] = {}
    for route in config.routes:
        limiters = [overall] if overall is not None else []
        if route.rate_limit is not None:
            limiters.append(limiter((route.host, route.path), route.rate_limit))
        if limiters:
            filters[route.key] = RateLimitFilter(limiters)
    for identity, store in previous.items():  # limits that went away: close their stores
        if identity not in stores:
            store.close()
    return filters, stores
