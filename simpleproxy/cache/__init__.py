"""The HTTP cache (RFC 9111): rules in :mod:`.policy`, memory in :mod:`.store`, the filter in :mod:`.filter`."""

from __future__ import annotations

import time
from typing import Callable

from ..config import Config
from .filter import CacheFilter
from .store import Caches, Freshness, Store

__all__ = ["CacheFilter", "Caches", "Store", "build_caches"]


def build_caches(config: Config, clock: Callable[[], float] = time.time) -> tuple[Caches, dict[str, CacheFilter]]:
    """The stores of a configuration and a filter for each route with ``cache:``, by route key.

    A route with its own ``max_size`` gets a store of that size; the others
    share one store holding what is left of ``cache.max_size``.
    """
    settings = config.cache
    cached = [route for route in config.routes if route.cache is not None]
    own = sum(route.cache.max_size or 0 for route in cached if route.cache is not None)
    shared: Store | None = None
    caches = Caches(())
    filters: dict[str, CacheFilter] = {}
    for route in cached:
        rules = route.cache
        assert rules is not None
        if rules.max_size:
            store = Store(rules.max_size, settings.max_object)
            caches.stores.append(store)
        else:
            if shared is None:
                shared = Store(settings.max_size - own, settings.max_object)
                caches.stores.append(shared)
            store = shared
        freshness = Freshness(rules.default_ttl, rules.max_ttl, stale_on_error=rules.stale_if_error)
        filters[route.key] = CacheFilter(store, caches, freshness, rules.query, settings.lock_timeout, clock)
    return caches, filters
