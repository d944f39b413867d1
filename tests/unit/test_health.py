"""Breaker, active-check thresholds and retry budget under an injected clock."""

from __future__ import annotations

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
