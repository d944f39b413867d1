"""Breaker, active-check thresholds and retry budget under an injected clock."""

from __future__ import annotations

import pytest

from simpleproxy.config import HealthCheck, PassiveHealth, RetryPolicy
from simpleproxy.upstream.health import ActiveCheck, Breaker, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_ejects_after_consecutive_failures_and_grows_the_period() -> None:
    clock = Clock()
    breaker = Breaker("s", PassiveHealth(failures=3, ejection=10, max_ejection=25), clock)
    breaker.failure("refused")
    breaker.success()  # a success in between resets the count
    breaker.failure("refused")
    breaker.failure("refused")
    assert breaker.state() == "closed" and breaker.available()
    breaker.failure("refused")
    assert breaker.state() == "open" and not breaker.available() and not breaker.claim()
    clock.now += 9.9
    assert breaker.state() == "open"
    clock.now += 0.1
    assert breaker.state() == "half-open" and breaker.available()
    assert breaker.claim()  # the one trial
    assert not breaker.available() and not breaker.claim()  # nobody else meanwhile
    breaker.failure("refused")  # the trial failed: open again, twice as long
    clock.now += 19.9
    assert breaker.state() == "open"
    clock.now += 0.1
    assert breaker.claim()
    breaker.failure("refused")
    clock.now += 24.9  # capped at max_ejection (25), not 40
    assert breaker.state() == "open"
    clock.now += 0.1
    assert breaker.claim()
    breaker.success()  # the trial succeeded: closed, and the period starts over
    assert breaker.state() == "closed" and breaker.ejections == 0


def test_active_check_thresholds() -> None:
    check = ActiveCheck("s", HealthCheck(healthy_threshold=2, unhealthy_threshold=3))
    assert check.healthy
    for ok in (False, False, True, False, False):  # a good answer breaks the streak
        check.result(ok, "")
    assert check.healthy
    check.result(False, "")
    assert not check.healthy
    check.result(True, "")
    assert not check.healthy
    check.result(True, "")
    assert check.healthy
    assert not ActiveCheck("s", HealthCheck(start_healthy=False)).healthy
    assert ActiveCheck("s", None).healthy  # no checks configured: trusted


def test_retry_budget_is_a_share_of_recent_requests() -> None:
    clock = Clock()
    budget = RetryBudget(RetryPolicy(budget=0.2, min_retries=3, window=10), clock)
    assert [budget.allow() for _ in range(4)] == [True, True, True, False]  # the floor at low traffic
    for _ in range(100):
        budget.request()
    allowed = sum(budget.allow() for _ in range(100))
    assert allowed == 20 - 3  # 20% of 100 requests, three already spent
    clock.now += 10  # the window slid past all of it
    assert [budget.allow() for _ in range(4)] == [True, True, True, False]


def test_every_server_ejected_means_panic_routing_least_recently_failed_first() -> None:
    from simpleproxy.config import config_from_dict
    from simpleproxy.errors import NoHealthyUpstream
    from simpleproxy.upstream.pool import Upstream

    clock = Clock()
    config = config_from_dict({
        "upstreams": {"app": {"servers": ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"],
                              "passive": {"failures": 1, "ejection": "10s"}}},
        "routes": [{"upstream": "app"}],
    })
    upstream = Upstream(config.upstreams["app"], clock)
    a, b, c = upstream.servers
    for server in (b, a):  # b fails first, then a; c keeps serving
        clock.now += 1
        server.breaker.failure("refused")
    assert not upstream.in_panic() and upstream.pick({}) is c
    c.unclaim()
    clock.now += 1
    c.breaker.failure("refused")
    assert upstream.in_panic()
    picked = upstream.pick({})
    assert picked is b and upstream.panicked == 1  # the least recently failed
    picked.unclaim()
    assert upstream.pick({}, exclude=[b]) is a  # a retry goes to the next one
    a.unclaim()
    c.check.healthy = False  # active checks hold c down; a and b are still ejected
    assert upstream.in_panic()
    with pytest.raises(NoHealthyUpstream):  # a retry that has tried both: nothing left
        upstream.pick({}, exclude=[b, a])
    for server in (a, b):
        server.check.healthy = False
    assert not upstream.in_panic()
    with pytest.raises(NoHealthyUpstream):  # active checks holding every server down: a 503, not panic
        upstream.pick({})
    upstream.close()
