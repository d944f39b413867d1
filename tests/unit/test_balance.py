"""Balancing policies: one contract run against every policy, then each one's own promise."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError
from simpleproxy.upstream.balance import POLICIES, ConsistentHash, LeastConn, RandomTwo, RoundRobin, make_policy


@dataclass
class Fake:
    name: str
    weight: int = 1
    in_flight: int = 0


def farm(*weights: int) -> list[Fake]:
    return [Fake(f"s{i}", w) for i, w in enumerate(weights)]


@pytest.mark.parametrize("name", POLICIES)
def test_every_policy_picks_only_among_the_candidates(name: str) -> None:
    servers = farm(1, 2, 3)
    policy = make_policy(name, servers)
    for i in range(300):
        assert policy.pick(servers, key=f"k{i}") in servers
    survivors = servers[1:]  # one left (ejected or full): the others still answer
    for i in range(100):
        assert policy.pick(survivors, key=f"k{i}") in survivors


@pytest.mark.parametrize("weights", [(1, 1, 1), (5, 1, 1), (3, 2, 1)])
def test_round_robin_follows_weights_exactly(weights: tuple[int, ...]) -> None:
    servers = farm(*weights)
    policy = RoundRobin(servers)
    picks = Counter(policy.pick(servers).name for _ in range(sum(weights) * 100))
    assert [picks[s.name] for s in servers] == [w * 100 for w in weights]


def test_smooth_weighted_round_robin_interleaves() -> None:
    servers = farm(5, 1, 1)
    policy = RoundRobin(servers)
    order = "".join(policy.pick(servers).name[1] for _ in range(7))
    assert order == "0010200"  # nginx's a a b a c a a: never five in a row


def test_least_conn_prefers_the_idle_and_respects_weights() -> None:
    servers = farm(1, 1, 2)
    servers[0].in_flight, servers[1].in_flight, servers[2].in_flight = 3, 0, 1
    assert LeastConn(servers).pick(servers).name == "s1"
    servers[1].in_flight = 2  # s2 carries 1 of weight 2: 0.5 per weight, the least
    assert LeastConn(servers).pick(servers).name == "s2"


def test_least_conn_breaks_ties_in_turn() -> None:
    servers = farm(1, 1, 1)
    policy = LeastConn(servers)
    assert {policy.pick(servers).name for _ in range(3)} == {"s0", "s1", "s2"}


def test_random_two_never_picks_the_busier_of_its_pair() -> None:
    servers = farm(1, 1, 1, 1)
    servers[0].in_flight = 100
    policy = RandomTwo(servers, rng=random.Random(7))
    picks = Counter(policy.pick(servers).name for _ in range(2000))
    assert picks["s0"] == 0
    assert all(400 < picks[f"s{i}"] < 930 for i in (1, 2, 3))


def test_consistent_hash_is_sticky_and_moves_about_one_nth_when_a_server_leaves() -> None:
    servers = farm(1, 1, 1, 1, 1)
    ring = ConsistentHash(servers)
    keys = [f"10.0.{i // 256}.{i % 256}" for i in range(5000)]
    before = {key: ring.pick(servers, key).name for key in keys}
    assert all(ring.pick(servers, key).name == before[key] for key in keys[:500])
    shares = Counter(before.values())
    assert all(800 < shares[s.name] < 1200 for s in servers)  # even spread
    survivors = [s for s in servers if s.name != "s2"]
    after = {key: ring.pick(survivors, key).name for key in keys}
    moved = [key for key in keys if after[key] != before[key]]
    assert all(before[key] == "s2" for key in moved)  # only the departed server's keys move
    assert 0.15 < len(moved) / len(keys) < 0.25  # about 1/N


def test_config_keys_for_balancing() -> None:
    config = config_from_dict({
        "upstreams": {"u": {"servers": [{"url": "http://a:1", "weight": 3}, "http://b:1"],
                            "balance": "hash", "hash_on": "cookie:session"}},
        "routes": [{"upstream": "u"}],
    })
    upstream = config.upstreams["u"]
    assert (upstream.balance, upstream.hash_on, [s.weight for s in upstream.servers]) == ("hash", "cookie:session", [3, 1])
    with pytest.raises(ConfigError) as info:
        config_from_dict({
            "upstreams": {"u": {"servers": [{"url": "http://a:1", "weight": 0}], "balance": "fastest",
                                "hash_on": "ip"}},
            "routes": [{"upstream": "u"}],
        })
    problems = info.value.problems
    assert any(p.startswith("upstreams.u.servers[0].weight: ") for p in problems)
    assert any(p.startswith("upstreams.u.balance: expected one of round_robin") for p in problems)
    assert any(p.startswith("upstreams.u.hash_on: ") for p in problems)


def test_round_robin_stays_even_when_candidates_shrink() -> None:
    servers = farm(1, 1, 1)
    policy = RoundRobin(servers)
    survivors = [servers[0], servers[2]]  # the middle one ejected
    picks = Counter(policy.pick(survivors).name for _ in range(1000))
    assert picks == Counter({"s0": 500, "s2": 500})
