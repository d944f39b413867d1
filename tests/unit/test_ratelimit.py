"""Token buckets: the arithmetic, each store against one contract, the filter's answers."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from conftest import FakeClock

from simpleproxy.config import RateLimit
from simpleproxy.errors import RateLimited, StoreUnavailableError
from simpleproxy.ratelimit.bucket import decide, parse_rate
from simpleproxy.ratelimit.filter import Limiter, RateLimitFilter
from simpleproxy.errors import StoreUnavailable
from simpleproxy.ratelimit.store import MemoryStore, RedisStore
from simpleproxy.request import Request
from simpleproxy.response import Response


@pytest.mark.parametrize(("text", "per_second"), [("100/s", 100), ("6000/min", 100), ("30/m", 0.5), ("36/h", 0.01), ("1/d", 1 / 86400)])
def test_rates_parse(text, per_second) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "0/s", "-1/s", "10/week", "x/s", "100/ s /"])
def test_bad_rates_are_refused(text) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_gcra_passes_the_burst_at_once_then_one_per_interval() -> None:
    tat, now, results = 0.0, 100.0, []
    for _ in range(5):
        tat, decision = decide(tat, now, 0.1, 3)
        results.append((decision.allowed, decision.remaining))
    assert results == [(True, 2), (True, 1), (True, 0), (False, 0), (False, 0)]
    refused = decide(tat, now, 0.1, 3)[1]
    assert refused.retry_after == pytest.approx(0.1)
    assert decide(tat, now + 0.1, 0.1, 3)[1].allowed  # one interval later: one token back


def test_gcra_reports_the_wait_that_keeps_exactly_to_the_rate() -> None:
    tat, waits = 0.0, []
    for _ in range(3):
        tat, decision = decide(tat, 50.0, 0.5, 3)
        waits.append(decision.wait)
    assert waits == [0.0, 0.5, 1.0]


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryStore(clock=FakeClock(1000.0))  # frozen: exactness does not lean on slow refills
    else:
        redis_server = request.getfixturevalue("redis_server")
        store = RedisStore(redis_server.url)
        store.client.flushdb()
        yield store
        store.close()


def test_contract_exact_under_concurrency(store) -> None:
    """200 threads released together on one bucket of 50 (refilling once an hour): exactly 50 pass."""
    barrier, admitted = threading.Barrier(200), []

    def hit() -> None:
        barrier.wait()
        admitted.append(store.hit("k|one", 3600.0, 50).allowed)

    threads = [threading.Thread(target=hit) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert admitted.count(True) == 50 and len(admitted) == 200


def test_contract_keys_are_separate_and_refusals_say_when(store) -> None:
    assert [store.hit("k|a", 60.0, 2).allowed for _ in range(3)] == [True, True, False]
    refused = store.hit("k|a", 60.0, 2)
    assert not refused.allowed and 59 < refused.retry_after <= 60  # one interval, less the time spent
    assert store.hit("k|b", 60.0, 2).allowed and store.hit("k|b", 60.0, 2).remaining == 0


def test_memory_store_refills_exactly_with_its_clock() -> None:
    clock = FakeClock(1000.0)
    store = MemoryStore(clock=clock)
    assert [store.hit("k", 1.0, 2).allowed for _ in range(3)] == [True, True, False]
    clock.now += 0.999
    assert not store.hit("k", 1.0, 2).allowed
    clock.now += 0.001
    assert store.hit("k", 1.0, 2).allowed


def test_memory_store_bounds_its_keys_oldest_first() -> None:
    store = MemoryStore(max_keys=100)
    for i in range(1000):
        store.hit(f"k{i}", 1.0, 1)
    assert len(store) == 100 and store.evicted == 900


def test_an_unreachable_redis_is_store_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreUnavailable):
        RedisStore(f"redis://127.0.0.1:{port}/0").hit("k", 1.0, 1)


def request(path: str = "/", **headers: str) -> Request:
    environ = {"REQUEST_METHOD": "GET", "REQUEST_URI": path, "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "h",
               "REMOTE_ADDR": "10.0.0.1", "wsgi.input": io.BytesIO()}
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return Request(environ, 1000)


def ok(request: Request) -> Response:
    return Response("200 OK", [], [b"ok"])


def limit(**settings) -> RateLimit:
    settings.setdefault("rate", 10.0)
    return RateLimit("routes[0].rate_limit", rate_text="10/s", **settings)


def test_refusals_are_429_with_retry_after_and_ietf_fields() -> None:
    f = RateLimitFilter([Limiter(limit(burst=2), MemoryStore(clock=FakeClock(1000.0)), "routes[0].rate_limit")])
    first = f(request(), next=ok)
    assert dict(first.headers) == {"RateLimit-Policy": '"routes[0].rate_limit";q=2;w=1',
                                   "RateLimit": '"routes[0].rate_limit";r=1;t=1'} and first.limit == "passed"
    f(request(), next=ok)
    with pytest.raises(RateLimited) as info:
        f(request(), next=ok)
    fields = dict(info.value.headers)
    assert fields["Retry-After"] == "1" and fields["RateLimit"] == '"routes[0].rate_limit";r=0;t=1'


def test_keys_by_header_and_several_parts() -> None:
    f = RateLimitFilter([Limiter(limit(key=("header:X-Api-Key", "client_ip")), MemoryStore(clock=FakeClock(1000.0)), "r")])
    f(request(x_api_key="a"), next=ok)
    f(request(x_api_key="b"), next=ok)
    with pytest.raises(RateLimited):
        f(request(x_api_key="a"), next=ok)


def test_delay_mode_spaces_a_burst_out_at_the_rate_up_to_max_delay() -> None:
    slept: list[float] = []
    f = RateLimitFilter([Limiter(limit(burst=5, mode="delay", max_delay=0.25), MemoryStore(clock=FakeClock(1000.0)),
                                 "routes[0].rate_limit")], sleep=slept.append)
    for _ in range(3):
        assert f(request(), next=ok).limit in ("passed", "delayed")
    assert slept == pytest.approx([0.1, 0.2])
    with pytest.raises(RateLimited, match="max_delay"):  # a 0.3 s wait: past max_delay, refused
        f(request(), next=ok)


def test_long_key_values_are_hashed() -> None:
    store = MemoryStore(clock=FakeClock(1000.0))
    f = RateLimitFilter([Limiter(limit(key=("header:X-Api-Key",)), store, "r")])
    f(request(x_api_key="k" * 60000), next=ok)
    (key,) = store._tats
    assert len(key) < 40 and key.startswith("r|#")


class _Down:
    def hit(self, key: str, interval: float, burst: int):
        raise StoreUnavailable("ConnectionError: refused")


def test_a_store_error_allows_or_denies_as_configured_and_logs_once(caplog) -> None:
    caplog.set_level(logging.ERROR)
    allow = RateLimitFilter([Limiter(limit(on_store_error="allow"), _Down(), "r")])
    for _ in range(5):
        assert allow(request(), next=ok).status == "200 OK"
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    deny = RateLimitFilter([Limiter(limit(on_store_error="deny"), _Down(), "r")])
    with pytest.raises(StoreUnavailableError):
        deny(request(), next=ok)
