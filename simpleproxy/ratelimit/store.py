"""Where buckets live: in this process (bounded), or in Redis (shared by every instance).

Both answer ``hit(key, interval, burst) -> Decision`` atomically. The memory
store keeps at most ``max_keys`` buckets and forgets the least recently used
first, so a flood of addresses cannot exhaust memory (a forgotten bucket is a
full one: the worst case is a fresh burst for a key idle long enough to be
the oldest). The Redis store runs :func:`bucket.decide` as a Lua script, one
round trip per decision, on Redis's own clock, so N proxies enforce one limit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Protocol

from ..errors import StoreUnavailable
from .bucket import Decision, decide


class BucketStore(Protocol):
    def hit(self, key: str, interval: float, burst: int) -> Decision: ...

    def close(self) -> None: ...


class MemoryStore:
    """Buckets in a dict under one lock; LRU-bounded."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._tats)

    def hit(self, key: str, interval: float, burst: int) -> Decision:
        with self._lock:
            now = self.clock()
            tats = self._tats
            tat, decision = decide(tats.get(key, 0.0), now, interval, burst)
            if decision.allowed:
                tats[key] = tat
                tats.move_to_end(key)
                if len(tats) > self.max_keys:
                    tats.popitem(last=False)
                    self.evicted += 1
            return decision

    def close(self) -> None:
        pass


# bucket.decide in Lua: KEYS[1]; ARGV = interval, burst. Redis's TIME is the one clock.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
local wait = start - now
if wait > tolerance + 1e-9 then
  return {0, tostring(wait), tostring(wait)}
end
local new_tat = start + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, tostring(wait), tostring(new_tat - now)}
"""


class RedisStore:
    """Buckets in Redis (``redis://host:port/db``), one Lua call per decision."""

    def __init__(self, url: str, timeout: float = 0.25, prefix: str = "simpleproxy:rl:") -> None:
        import redis  # the 'redis' extra

        self.url = url
        self.prefix = prefix
        # A bounded pool that makes a thread wait (briefly) for a connection rather than fail:
        # as many connections as requests run at once, at most 64.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=1.0, socket_timeout=timeout, socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self.client = redis.Redis(connection_pool=pool)
        self._script = self.client.register_script(_SCRIPT)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def hit(self, key: str, interval: float, burst: int) -> Decision:
        try:
            allowed, wait_text, debt_text = self._script(keys=[self.prefix + key], args=[repr(interval), burst])
        except self._errors as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        wait, debt = float(wait_text), float(debt_text)
        tolerance = (burst - 1) * interval
        if not allowed:
            return Decision(False, wait, wait - tolerance, 0, wait)
        remaining = max(0, int((burst * interval - debt) / interval + 1e-9))
        return Decision(True, wait, 0.0, remaining, debt)

    def close(self) -> None:
        self.client.close()


def make_store(spec: str, max_keys: int, clock: Callable[[], float] = time.monotonic) -> Any:
    """``memory`` or ``redis://...`` (``rediss://`` for TLS)."""
    if spec == "memory":
        return MemoryStore(max_keys, clock)
    return RedisStore(spec)
