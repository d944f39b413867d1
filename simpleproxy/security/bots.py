"""Bots: user-agent lists, requests without a User-Agent or Host, and a fail2ban-style ban.

The ban counts, per client address, the answers that mark a scanner or an
abuser (4xx by default, rate-limit refusals included) in a sliding window;
past ``after`` of them the address is refused for ``duration``. Both the
counters and the ban list are bounded (least recently seen forgotten first),
so a flood of addresses cannot grow them without limit. The guard runs before
routing, so a banned client costs one dict lookup and no route, cache or
upstream work.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict, deque
from typing import Callable

from ..config import BotSettings
from ..errors import BadRequest, Banned, Forbidden

log = logging.getLogger("simpleproxy.bots")


class BanList:
    """Bad answers per address in a window, and the addresses banned until a time."""

    def __init__(self, after: int, window: float, duration: float, statuses: frozenset[int], max_tracked: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self.window = window
        self.duration = duration
        self.statuses = statuses
        self.max_tracked = max_tracked
        self.clock = clock
        self._lock = threading.Lock()
        self._strikes: OrderedDict[str, deque[float]] = OrderedDict()
        self._banned: OrderedDict[str, float] = OrderedDict()

    def banned(self, address: str) -> float:
        """Seconds of ban left for ``address`` (0: not banned)."""
        until = self._banned.get(address)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left > 0:
            return left
        with self._lock:
            self._banned.pop(address, None)
        return 0.0

    def observe(self, address: str, status: int) -> None:
        if status not in self.statuses:
            return
        now = self.clock()
        with self._lock:
            strikes = self._strikes.get(address)
            if strikes is None:
                strikes = self._strikes[address] = deque()
                if len(self._strikes) > self.max_tracked:
                    self._strikes.popitem(last=False)
            else:
                self._strikes.move_to_end(address)
            strikes.append(now)
            while strikes and strikes[0] <= now - self.window:
                strikes.popleft()
            if len(strikes) < self.after:
                return
            del self._strikes[address]
            self._banned[address] = now + self.duration
            self._banned.move_to_end(address)
            if len(self._banned) > self.max_tracked:
                self._banned.popitem(last=False)
        log.warning("banned %s for %gs: %d refused or bad requests within %gs", address, self.duration, self.after, self.window)

    def __len__(self) -> int:
        return len(self._banned)


class BotGuard:
    """The checks made before routing, and the bookkeeping made after the answer."""

    def __init__(self, settings: BotSettings, bans: BanList | None) -> None:
        self.deny = [re.compile(p) for p in settings.deny_agents]  # each may carry its own (?i)
        self.allow = [re.compile(p) for p in settings.allow_agents]
        self.require_user_agent = settings.require_user_agent
        self.require_host = settings.require_host
        self.bans = bans

    def check(self, client: str, environ: dict, host: str) -> None:
        bans = self.bans
        if bans is not None:
            left = bans.banned(client)
            if left:
                raise Banned("this address is banned for a while", headers=(("Retry-After", str(int(left) + 1)),))
        if self.require_host and not host:
            raise BadRequest("a Host header is required")
        agent = environ.get("HTTP_USER_AGENT")
        if agent is None or not agent.strip():
            if self.require_user_agent:
                raise Forbidden("a User-Agent header is required")
            return
        if any(p.search(agent) for p in self.allow):
            return
        if any(p.search(agent) for p in self.deny):
            raise Forbidden("this user agent is not allowed")

    def observe(self, client: str, status: int) -> None:
        if self.bans is not None:
            self.bans.observe(client, status)
