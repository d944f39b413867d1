"""Balancing policies: which server of an upstream takes the next request.

Each policy is a small class with one method, ``pick(servers, key)``, over a
list of candidates that have ``weight`` and ``in_flight`` attributes (a
:class:`~simpleproxy.upstream.pool.ServerPool`, or anything shaped like it in
tests). Policies keep no per-request state beyond what their algorithm needs,
and never block.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
import threading
from typing import Protocol, Sequence


class Candidate(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> int: ...

    @property
    def in_flight(self) -> int: ...


class Policy(Protocol):
    #: what the policy hashes on: None, "client_ip", "header:NAME" or "cookie:NAME"
    key_source: str | None

    def pick(self, servers: Sequence[Candidate], key: str = "") -> Candidate: ...


class RoundRobin:
    """Each server in turn; with weights, nginx's smooth weighted round robin.

    Smooth: weights 5, 1, 1 give a a b a c a a rather than a a a a a b c, so a
    heavy server never takes a burst.
    """

    key_source: str | None = None

    def __init__(self, servers: Sequence[Candidate]) -> None:
        self._weighted = len({s.weight for s in servers}) > 1
        self._turns = itertools.count()  # next() is atomic under the GIL
        self._current = [0] * len(servers)
        self._lock = threading.Lock()

    def pick(self, servers: Sequence[Candidate], key: str = "") -> Candidate:
        if not self._weighted:
            return servers[next(self._turns) % len(servers)]
        with self._lock:
            total = 0
            best = 0
            current = self._current
            for i, server in enumerate(servers):
                current[i] += server.weight
                total += server.weight
                if current[i] > current[best]:
                    best = i
            current[best] -= total
            return servers[best]


class LeastConn:
    """Fewest requests in flight relative to weight; ties broken in turn."""

    key_source: str | None = None

    def __init__(self, servers: Sequence[Candidate]) -> None:
        self._turns = itertools.count()

    def pick(self, servers: Sequence[Candidate], key: str = "") -> Candidate:
        start = next(self._turns) % len(servers)
        best = servers[start]
        for offset in range(1, len(servers)):
            server = servers[(start + offset) % len(servers)]
            # a/wa < b/wb without division
            if server.in_flight * best.weight < best.in_flight * server.weight:
                best = server
        return best


class RandomTwo:
    """Power of two choices: two servers at random, the less loaded one wins."""

    key_source: str | None = None

    def __init__(self, servers: Sequence[Candidate], rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, servers: Sequence[Candidate], key: str = "") -> Candidate:
        if len(servers) == 1:
            return servers[0]
        a, b = self._rng.sample(servers, 2) if not _weighted(servers) else self._weighted_two(servers)
        return a if a.in_flight * b.weight <= b.in_flight * a.weight else b

    def _weighted_two(self, servers: Sequence[Candidate]) -> list[Candidate]:
        first = self._rng.choices(servers, weights=[s.weight for s in servers])[0]
        rest = [s for s in servers if s is not first]
        return [first, self._rng.choices(rest, weights=[s.weight for s in rest])[0]]


class First:
    """Ordered failover: always the first server given (the next healthy one later)."""

    key_source: str | None = None

    def __init__(self, servers: Sequence[Candidate]) -> None:
        pass

    def pick(self, servers: Sequence[Candidate], key: str = "") -> Candidate:
        return servers[0]


class ConsistentHash:
    """A hash ring: the same key reaches the same server; removing one of N moves ~1/N of keys.

    Each server owns ``VNODES x weight`` points on the ring (ketama-style), so
    keys spread evenly and a server's share follows its weight.
    """

    VNODES = 160

    def __init__(self, servers: Sequence[Candidate], key_source: str = "client_ip") -> None:
        self.key_source: str | None = key_source
        self._ring: list[tuple[int, str]] = sorted(
            (_hash(f"{server.name}#{i}"), server.name)
            for server in servers
            for i in range(self.VNODES * max(1, server.weight))
        )
        self._points = [point for point, _ in self._ring]

    def pick(self, servers: Sequence[Candidate], key: str = "") -> Candidate:
        by_name = {server.name: server for server in servers}
        if not self._ring:
            return servers[0]
        start = bisect.bisect(self._points, _hash(key)) % len(self._ring)
        # Walk clockwise past servers not among the candidates (ejected, full).
        for offset in range(len(self._ring)):
            name = self._ring[(start + offset) % len(self._ring)][1]
            if name in by_name:
                return by_name[name]
        return servers[0]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _weighted(servers: Sequence[Candidate]) -> bool:
    return len({s.weight for s in servers}) > 1


POLICIES = ("round_robin", "least_conn", "random_two", "first", "hash")


def make_policy(name: str, servers: Sequence[Candidate], hash_on: str = "client_ip") -> Policy:
    """The policy named in the configuration, built over the upstream's servers."""
    if name == "round_robin":
        return RoundRobin(servers)
    if name == "least_conn":
        return LeastConn(servers)
    if name == "random_two":
        return RandomTwo(servers)
    if name == "first":
        return First(servers)
    if name == "hash":
        return ConsistentHash(servers, hash_on)
    raise ValueError(f"unknown balancing policy {name!r}")
