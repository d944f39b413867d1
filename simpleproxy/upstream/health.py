"""Server health: passive outlier ejection (a circuit breaker), active checks, a retry budget.

Passive: consecutive failures (connect errors, timeouts, configured statuses)
open the breaker and eject the server for a period that doubles each time it
is ejected again, up to a maximum. When the period ends the breaker is
half-open: exactly one trial request is let through; its success closes the
breaker, its failure re-opens it for longer (Envoy's outlier detection,
HAProxy's observe + on-error).

Active: one background thread per upstream requests each server's check path
at an interval; a server becomes unhealthy after ``unhealthy_threshold``
failed checks in a row and healthy again after ``healthy_threshold`` good ones.

Every clock is injected, so tests drive the state machines exactly.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..config import HealthCheck, PassiveHealth, RetryPolicy

log = logging.getLogger("simpleproxy.health")

Clock = Callable[[], float]


class Breaker:
    """One server's passive health: closed, open (ejected) or half-open (one trial out)."""

    def __init__(self, name: str, policy: PassiveHealth, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.policy = policy
        self.clock = clock
        self._lock = threading.Lock()
        self.failures = 0  #: consecutive failures while closed
        self.ejections = 0  #: ejections in a row, for the growing period
        self.ejected_until = 0.0  #: 0 when closed
        self.trial_out = False  #: half-open and the trial request is in flight
        self.last_failure = 0.0  #: clock reading of the last failure (panic picks the oldest first)

    def state(self) -> str:
        if not self.ejected_until:
            return "closed"
        return "open" if self.clock() < self.ejected_until else "half-open"

    def ejected(self) -> bool:
        """Kept out by this breaker now: open, or half-open with its trial request out."""
        return bool(self.ejected_until) and not self.available()

    def available(self) -> bool:
        """May take a request (no side effect: see :meth:`claim`)."""
        if not self.ejected_until:
            return True  # closed: the common case, without a clock read
        state = self.state()
        return state == "closed" or (state == "half-open" and not self.trial_out)

    def claim(self) -> bool:
        """Called for the picked server: takes the trial slot when half-open."""
        if not self.ejected_until:
            return True
        with self._lock:
            state = self.state()
            if state == "closed":
                return True
            if state == "half-open" and not self.trial_out:
                self.trial_out = True
                return True
            return False

    def success(self) -> None:
        if not self.failures and not self.ejected_until:
            return  # nothing to reset: no lock on the hot path
        with self._lock:
            self.failures = 0
            if self.ejected_until:
                log.warning("upstream server %s recovered: trial request succeeded", self.name)
                self.ejected_until, self.ejections, self.trial_out = 0.0, 0, False

    def failure(self, reason: str) -> None:
        with self._lock:
            self.last_failure = self.clock()
            if self.ejected_until:  # a failed trial (or a straggler of the open period)
                if self.trial_out:
                    self.trial_out = False
                    self._eject(reason)
                return
            self.failures += 1
            if self.failures >= self.policy.failures:
                self._eject(reason)

    def _eject(self, reason: str) -> None:
        self.ejections += 1
        period = min(self.policy.ejection * 2 ** (self.ejections - 1), self.policy.max_ejection)
        self.ejected_until = self.clock() + period
        self.failures = 0
        log.warning("upstream server %s ejected for %.1fs: %s", self.name, period, reason)


class ActiveCheck:
    """The verdict of active checks for one server, with thresholds."""

    def __init__(self, name: str, policy: HealthCheck | None) -> None:
        self.name = name
        self.policy = policy
        self.healthy = policy is None or policy.start_healthy
        self._streak = 0  # consecutive results contradicting the current verdict

    def result(self, ok: bool, detail: str) -> None:
        policy = self.policy
        assert policy is not None
        if ok == self.healthy:
            self._streak = 0
            return
        self._streak += 1
        if self._streak >= (policy.healthy_threshold if ok else policy.unhealthy_threshold):
            self.healthy, self._streak = ok, 0
            log.warning("upstream server %s is now %s (%s)", self.name, "healthy" if ok else "unhealthy", detail)


class HealthChecker:
    """One thread per upstream that checks every server in turn, every interval."""

    def __init__(self, checks: list[tuple[ActiveCheck, Callable[[], tuple[bool, str]]]], interval: float) -> None:
        self.checks = checks
        self.interval = interval
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="simpleproxy-health", daemon=True)
        self.thread.start()

    def run_once(self) -> None:
        for check, probe in self.checks:
            ok, detail = probe()
            check.result(ok, detail)

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.run_once()
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()


class RetryBudget:
    """Retries allowed as a share of recent requests, so an outage does not multiply load.

    Counts live in one-second buckets over a sliding window; ``min_retries``
    per window keeps retries possible at low traffic (Envoy's retry budget).
    """

    def __init__(self, policy: RetryPolicy, clock: Clock = time.monotonic) -> None:
        self.ratio = policy.budget
        self.min_retries = policy.min_retries
        self.window = max(1, int(policy.window))
        self.clock = clock
        self._lock = threading.Lock()
        self._requests = [0] * self.window
        self._retries = [0] * self.window
        self._second = [0] * self.window

    def _slot(self) -> int:
        second = int(self.clock())
        slot = second % self.window
        if self._second[slot] != second:
            self._second[slot], self._requests[slot], self._retries[slot] = second, 0, 0
        return slot

    def _live(self, counts: list[int]) -> int:
        now = int(self.clock())
        return sum(c for c, s in zip(counts, self._second, strict=True) if now - s < self.window)

    def request(self) -> None:
        # No lock: a lost increment under a race only makes the budget a little stricter.
        self._requests[self._slot()] += 1

    def allow(self) -> bool:
        """True (and counted) when one more retry fits in the budget."""
        with self._lock:
            slot = self._slot()
            allowed = max(self.min_retries, self.ratio * self._live(self._requests))
            if self._live(self._retries) >= allowed:
                return False
            self._retries[slot] += 1
            return True
