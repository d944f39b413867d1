"""One bounded memo for the pure functions the request path calls again and again.

Request targets, Host values, field names, environ key orders and client
addresses repeat from one request to the next, and reading them is a pure
function; a memo saves the work. Clients choose these values, so a memo must
be bounded. Before this module there were ten memos with two rules: "stop
adding when full" (a flood of invented values fills it once and the real ones
are never memoised again) and "clear when full" (every flood forgets everything).

:class:`Memo` evicts the oldest half by insertion order when full, so values in
steady use come back after a flood, at the cost of one computation each. It
is not an LRU on purpose: an LRU must record every hit, which costs a Python
call per lookup, while a hit here is a plain ``dict`` lookup in C (a memo read
on every request must cost less than what it saves; cachetools' LRUCache costs
about 0.5 us a hit).
"""

from __future__ import annotations

import threading
from itertools import islice
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(dict, Generic[K, V]):  # type: ignore[type-arg]
    """``memo[key]`` is ``compute(key)``, computed once while the key stays (at most ``limit`` keys).

    Safe from many threads: hits take no lock (a lookup never changes the dict);
    every change (an insertion, an eviction) is made under one lock, because
    listing the oldest keys while another thread inserts fails ("dictionary
    changed size during iteration": the listing can be interrupted, by a garbage
    collection for one). Two threads missing the same key both compute it; the
    function is pure, so either value is right.
    """

    def __init__(self, compute: Callable[[K], V] | None, limit: int = 4096) -> None:
        """``compute``: None for a bounded map filled by :meth:`add` only (``memo.get(key)``
        then answers None for what is not there)."""
        super().__init__()
        self.compute = compute
        self.limit = limit
        self._lock = threading.Lock()

    def __missing__(self, key: K) -> V:
        if self.compute is None:
            raise KeyError(key)
        value = self.compute(key)
        self.add(key, value)
        return value

    def add(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key``, making room first when full."""
        with self._lock:
            if len(self) >= self.limit:
                for old in list(islice(self, max(1, self.limit // 2))):  # dicts keep insertion order
                    del self[old]
            self[key] = value
