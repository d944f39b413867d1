"""The HTTP cache (RFC 9111): rules in :mod:`.policy`, memory in :mod:`.store`, the filter in :mod:`.filter`."""

from __future__ import annotations

import time
from typing import Callable

from ..config import CacheSettings, Config
from .filter import CacheFilter
from .store import Caches, Freshness, Store

__all__ = ["CacheFilter", "Caches", "Store", "build_caches"]


def build_caches(
    config: Config, clock: Callable[[], float] = time.time, previous: Caches | None = None
) -> tuple[Caches, dict[str, CacheFilter]]:
    """The stores of a configuration and a filter for each route with ``cache:``, by route key.

    A route with its own ``max_size`` gets a store of that size; the others
    share one store holding what is left of ``cache.max_size``. On a reload
    (``previous``), a route (known by host and path) keeps its stored
    responses when its store keeps its size, and so does the shared store.
    """
    settings = config.cache
    cached = [route for route in config.routes if route.cache is not None]
    own = sum(route.cache.max_size or 0 for route in cached if route.cache is not None)
    caches = Caches(())
    filters: dict[str, CacheFilter] = {}
    for route in cached:
        rules = route.cache
        assert rules is not None
        if rules.max_size:
            store = _reused(previous.own.get((route.host, route.path)) if previous else None, rules.max_size, settings)
            caches.own[(route.host, route.path)] = store
            caches.stores.append(store)
        else:
            if caches.shared is None:
                caches.shared = _reused(previous.shared if previous else None, settings.max_size - own, settings)
                caches.stores.append(caches.shared)
            store = caches.shared
        freshness = Freshness(rules.default_ttl, rules.max_ttl, rules.max_heuristic, rules.stale_if_error,
                              rules.heuristic)
        filters[route.key] = CacheFilter(store, caches, freshness, rules.query, settings.lock_timeout, clock, rules.key,
                                         settings.tag_fields, settings.pass_tags)
    return caches, filters


def _reused(store: Store | None, size: int, settings: CacheSettings) -> Store:
    if store is not None and store.max_size == size and store.max_object == min(settings.max_object, size):
        return store
    return Store(size, settings.max_object)
