"""Request figures kept cheaply on the hot path, exposed in the Prometheus text format at scrape time.

A request costs one lock and a few dict increments here; everything else
(upstream health and load, cache sizes, connections, the worker queue) is
read from the live objects when ``/metrics`` is scraped. The exposition
format is written by ``prometheus_client`` (the ``metrics`` extra), which
does that job better than code we would keep.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, Callable, Iterator

#: seconds; Prometheus's default buckets, which suit a proxy's range from cache hits to slow backends
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def route_label(host: str | None, path: str) -> str:
    """A route's name in metrics: ``app.example.com/api``, ``*/`` (stable when routes move)."""
    return f"{host or '*'}{path}"


class _Shard:
    """One thread's counts: only its own thread writes them, so no lock is taken per request."""

    __slots__ = ("requests", "latency", "cache", "limits", "waf", "answers")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.latency: dict[str, list[float]] = {}  #: route -> bucket counts, then +Inf, then the sum
        self.cache: dict[tuple[str, str], int] = {}
        self.limits: dict[tuple[str, str], int] = {}
        self.waf: dict[tuple[str, str], int] = {}  #: (route, rule) -> denials
        self.answers: dict[tuple[str, str], int] = {}  #: (route, what made it: redirect, static, error_page)


class RequestStats:
    """Counts by (route, status), a latency histogram by route, cache, limit and WAF outcomes.

    Each thread counts in a shard of its own; a scrape adds the shards up
    (reading another thread's dict is safe under the GIL, and a count landing
    during a scrape is seen at the next one).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shards: list[_Shard] = []
        self._local = threading.local()

    def _shard(self) -> _Shard:
        shard = getattr(self._local, "shard", None)
        if shard is None:
            shard = self._local.shard = _Shard()
            with self._lock:
                self._shards.append(shard)
        return shard

    def record(self, route: str, status: str, seconds: float, cache: str, limit: str = "-") -> None:
        shard = self._shard()
        key = (route, status)
        requests = shard.requests
        requests[key] = requests.get(key, 0) + 1
        buckets = shard.latency.get(route)
        if buckets is None:
            buckets = shard.latency[route] = [0.0] * (len(BUCKETS) + 2)
        buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        buckets[-1] += seconds
        if cache != "-":
            shard.cache[(route, cache)] = shard.cache.get((route, cache), 0) + 1
        if limit != "-":
            shard.limits[(route, limit)] = shard.limits.get((route, limit), 0) + 1

    def count_waf(self, route: str, rule: str) -> None:
        waf = self._shard().waf
        waf[(route, rule)] = waf.get((route, rule), 0) + 1

    def count_answer(self, route: str, made_by: str) -> None:
        answers = self._shard().answers
        answers[(route, made_by)] = answers.get((route, made_by), 0) + 1

    def answers_snapshot(self) -> dict[tuple[str, str], int]:
        return self._sum("answers")

    def _sum(self, field: str) -> dict:
        total: dict = {}
        with self._lock:
            shards = list(self._shards)
        for shard in shards:
            for key, value in list(getattr(shard, field).items()):
                total[key] = total.get(key, 0) + value
        return total

    def snapshot(self) -> tuple[dict, dict, dict]:
        latency: dict[str, list[float]] = {}
        with self._lock:
            shards = list(self._shards)
        for shard in shards:
            for route, buckets in list(shard.latency.items()):
                into = latency.setdefault(route, [0.0] * len(buckets))
                for i, value in enumerate(list(buckets)):
                    into[i] += value
        return self._sum("requests"), latency, self._sum("cache")

    def limit_snapshot(self) -> dict[tuple[str, str], int]:
        return self._sum("limits")

    def waf_snapshot(self) -> dict[tuple[str, str], int]:
        return self._sum("waf")


class Collector:
    """A ``prometheus_client`` collector over the stats and the live server state."""

    def __init__(self, stats: RequestStats, state: Callable[[], Any], server: Callable[[], Any]) -> None:
        self.stats = stats
        self.state = state  #: the current ProxyState (it changes on reload)
        self.server = server  #: the ProxyServer, or None when embedded

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        requests, latency, cache = self.stats.snapshot()
        counted = CounterMetricFamily("simpleproxy_requests", "Requests answered, by route and status", labels=["route", "status"])
        for (route, status), count in sorted(requests.items()):
            counted.add_metric([route, status], count)
        yield counted
        timed = HistogramMetricFamily("simpleproxy_request_duration_seconds", "Time to the end of the answer", labels=["route"])
        for route, counts in sorted(latency.items()):
            cumulative, running = [], 0.0
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts[:-1], strict=True):
                running += count
                cumulative.append((bound, running))
            timed.add_metric([route], cumulative, counts[-1])
        yield timed
        cached = CounterMetricFamily("simpleproxy_cache_results", "What the cache did, by route", labels=["route", "result"])
        for (route, result), count in sorted(cache.items()):
            cached.add_metric([route, result], count)
        yield cached
        limited = CounterMetricFamily("simpleproxy_rate_limit_results", "What the rate limits did: passed, delayed, rejected",
                                      labels=["route", "result"])
        for (route, result), count in sorted(self.stats.limit_snapshot().items()):
            limited.add_metric([route, result], count)
        yield limited
        denied = CounterMetricFamily("simpleproxy_waf_denials", "Requests refused by a WAF rule", labels=["route", "rule"])
        for (route, rule), count in sorted(self.stats.waf_snapshot().items()):
            denied.add_metric([route, rule], count)
        yield denied
        answers = CounterMetricFamily("simpleproxy_route_answers", "Answers a route rule made: redirect, static, "
                                      "error_page", labels=["route", "by"])
        for (route, by), count in sorted(self.stats.answers_snapshot().items()):
            answers.add_metric([route, by], count)
        yield answers
        yield from self._upstreams()
        yield from self._caches()
        yield from self._tunnels()
        yield from self._server()

    def _tunnels(self) -> Iterator[Any]:
        """Upgraded connections: open now (by route), opened and refused, bytes each way once closed."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        tunnels = self.state().tunnels
        counts = tunnels.snapshot()
        open_now = GaugeMetricFamily("simpleproxy_tunnels_open", "Upgraded connections open, by route", labels=["route"])
        for route, count in sorted(tunnels.by_route().items()):
            open_now.add_metric([route], count)
        yield open_now
        yield CounterMetricFamily("simpleproxy_tunnels_opened", "Upgraded connections opened", value=counts["opened"])
        refused = CounterMetricFamily("simpleproxy_tunnels_refused", "Upgrades refused with 503", labels=["reason"])
        for reason, count in sorted(counts["refused"].items()):
            refused.add_metric([reason], count)
        yield refused
        relayed = CounterMetricFamily("simpleproxy_tunnel_bytes", "Bytes relayed by closed tunnels: up is from the client",
                                      labels=["direction"])
        for direction, count in sorted(counts["bytes"].items()):
            relayed.add_metric([direction], count)
        yield relayed

    def _upstreams(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("simpleproxy_upstream_server_up", "1 when a server may take requests", labels=["upstream", "server"])
        flight = GaugeMetricFamily("simpleproxy_upstream_in_flight", "Requests in flight per server", labels=["upstream", "server"])
        retries = CounterMetricFamily("simpleproxy_upstream_retries", "Requests resent to another server", labels=["upstream"])
        panic = GaugeMetricFamily("simpleproxy_upstream_panic",
                                  "1 while every server is ejected by the passive breaker and requests go to them anyway",
                                  labels=["upstream"])
        panicked = CounterMetricFamily("simpleproxy_upstream_panic_requests",
                                       "Requests sent to ejected servers because every server was ejected", labels=["upstream"])
        for name, upstream in sorted(self.state().upstreams.items()):
            for server in upstream.servers:
                up.add_metric([name, server.name], 1 if server.available() else 0)
                flight.add_metric([name, server.name], server.in_flight)
            retries.add_metric([name], upstream.retried)
            panic.add_metric([name], 1 if upstream.in_panic() else 0)
            panicked.add_metric([name], upstream.panicked)
        yield from (up, flight, retries, panic, panicked)

    def _caches(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        size = GaugeMetricFamily("simpleproxy_cache_bytes", "Bytes counted in each cache store", labels=["store"])
        limit = GaugeMetricFamily("simpleproxy_cache_max_bytes", "Each store's budget", labels=["store"])
        entries = GaugeMetricFamily("simpleproxy_cache_entries", "Stored responses", labels=["store"])
        evictions = CounterMetricFamily("simpleproxy_cache_evictions", "Responses evicted to make room", labels=["store"])
        for name, store in store_names(self.state().caches):
            size.add_metric([name], store.size)
            limit.add_metric([name], store.max_size)
            entries.add_metric([name], len(store))
            evictions.add_metric([name], store.evictions)
        yield from (size, limit, entries, evictions)

    def _server(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        server = self.server()
        if server is None:
            return
        yield GaugeMetricFamily("simpleproxy_open_connections", "Client connections open", value=server.open_connections())
        yield GaugeMetricFamily("simpleproxy_busy_threads", "Worker threads serving a request", value=server.busy_threads())
        yield GaugeMetricFamily("simpleproxy_queue_depth", "Requests waiting for a worker thread", value=server.queue_depth())
        yield GaugeMetricFamily("simpleproxy_draining", "1 while stopping", value=1 if server.draining else 0)


def store_names(caches: Any) -> list[tuple[str, Any]]:
    """Each cache store with a name for it: ``shared``, or the host/path of the route that owns it."""
    named = [("shared", caches.shared)] if caches.shared is not None else []
    named += [(route_label(host, path), store) for (host, path), store in caches.own.items()]
    return named


def exposition(collector: Collector) -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type; ImportError without the extra."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
