"""Rate limits, client identity and CIDR rules through the real proxy; the backend counts what got through."""

from __future__ import annotations

import socket
import threading

import pytest

from conftest import FakeClock, Proxy, single_upstream
from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError


def seen(backend) -> int:
    return backend.seen.qsize()


def test_a_route_limit_refuses_past_the_burst_and_refills_at_the_rate(backends, proxy) -> None:
    backend, clock = backends(), FakeClock(5000.0)
    p = proxy(single_upstream(backend.url, rate_limit={"rate": "2/s", "burst": 3}), clock=clock)
    statuses = [p.request("GET", "/")[0].status for _ in range(4)]
    assert statuses == [200, 200, 200, 429] and seen(backend) == 3
    response, body = p.request("GET", "/")
    assert response.status == 429 and response.getheader("Retry-After") == "1" and b"rate limit exceeded" in body
    assert response.getheader("RateLimit-Policy") == '"*/";q=3;w=2'
    clock.now += 0.5  # one token back
    ok, _ = p.request("GET", "/")
    assert ok.status == 200 and ok.getheader("RateLimit") == '"*/";r=0;t=2'
    lines = p.log_lines(at_least=6)
    assert lines[-2].endswith(" rejected") and lines[-1].endswith(" passed")


def test_the_global_limit_applies_to_every_route_before_its_own(backends, proxy) -> None:
    backend = backends()
    config = single_upstream(backend.url)
    config["routes"].append({"path": "/b", "upstream": "app", "rate_limit": {"rate": "1/h", "burst": 5}})
    config["rate_limit"] = {"rate": "1/h", "burst": 3}
    p = proxy(config, clock=FakeClock(5000.0))
    assert [p.request("GET", path)[0].status for path in ("/", "/b", "/", "/b")] == [200, 200, 200, 429]


def test_only_a_trusted_proxy_names_the_client(backends, proxy) -> None:
    backend = backends()
    limited = single_upstream(backend.url, rate_limit={"rate": "1/h", "burst": 1})
    untrusting = proxy(limited, clock=FakeClock(5000.0))
    assert untrusting.request("GET", "/", headers={"X-Forwarded-For": "1.1.1.1"})[0].status == 200
    assert untrusting.request("GET", "/", headers={"X-Forwarded-For": "2.2.2.2"})[0].status == 429  # same peer
    trusting = proxy({**limited, "headers": {"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]}}, clock=FakeClock(5000.0))
    assert trusting.request("GET", "/", headers={"X-Forwarded-For": "1.1.1.1, 10.0.0.7"})[0].status == 200
    assert trusting.request("GET", "/", headers={"X-Forwarded-For": "2.2.2.2"})[0].status == 200  # another client
    assert trusting.request("GET", "/", headers={"X-Forwarded-For": "9.9.9.9, 1.1.1.1"})[0].status == 429
    assert trusting.log_lines(at_least=3)[-1].startswith("1.1.1.1 - - [")  # and the log names it


def test_cidr_rules_global_and_per_route_ipv4_and_ipv6(backends, proxy) -> None:
    backend = backends()
    config = single_upstream(backend.url, access={"deny": ["127.0.0.0/8"]})
    config["routes"].append({"path": "/open", "upstream": "app", "access": {"allow": ["::1", "127.0.0.1"]}})
    p = proxy(config)
    assert p.request("GET", "/x")[0].status == 403 and seen(backend) == 0
    assert p.request("GET", "/open")[0].status == 200
    everyone_but_v6 = proxy({**single_upstream(backend.url), "access": {"deny": ["::/0"], "allow": ["0.0.0.0/0"]}})
    assert everyone_but_v6.request("GET", "/")[0].status == 200


def test_limit_and_access_config_errors_name_the_key() -> None:
    cases = [
        ({"rate_limit": {"rate": "fast"}}, "routes[0].rate_limit.rate: expected a rate like 100/s"),
        ({"rate_limit": {"rate": "1/s", "key": "cookie:x"}}, "routes[0].rate_limit.key: expected client_ip, host"),
        ({"rate_limit": {"rate": "1/s", "store": "memcached://x"}}, "routes[0].rate_limit.store: expected memory or redis://"),
        ({"rate_limit": {"burst": 3}}, "routes[0].rate_limit.rate: a rate limit needs a rate"),
        ({"access": {"allow": ["10.0.0.0/33"]}}, "routes[0].access.allow[0]:"),
        ({"access": {}}, "routes[0].access: give allow, deny or both"),
    ]
    for route, message in cases:
        with pytest.raises(ConfigError) as info:
            config_from_dict(single_upstream("http://127.0.0.1:1", **route))
        assert any(problem.startswith(message) for problem in info.value.problems), info.value.problems


def test_two_proxies_sharing_redis_enforce_one_limit(backends, proxy, redis_server) -> None:
    backend = backends()
    shared = {"rate": "1/h", "burst": 6, "store": redis_server.url, "key": "route"}
    config = {**single_upstream(backend.url), "rate_limit": shared}
    first, second = proxy(config), proxy(config)
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    statuses = [p.request("GET", "/")[0].status for p in (first, second) * 5]
    assert statuses.count(200) == 6 and statuses.count(429) == 4 and seen(backend) == 6


def test_a_dead_redis_allows_or_denies_as_told(backends, proxy, caplog) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    backend = backends()
    allow = proxy(single_upstream(backend.url, rate_limit={"rate": "1/h", "store": dead}))
    assert [allow.request("GET", "/")[0].status for _ in range(3)] == [200, 200, 200]
    deny = proxy(single_upstream(backend.url, rate_limit={"rate": "1/h", "store": dead, "on_store_error": "deny"}))
    response, body = deny.request("GET", "/")
    assert response.status == 503 and b"rate limit store is unavailable" in body
    assert "unavailable" in caplog.text


def test_concurrent_requests_on_one_bucket_admit_exactly_the_burst(backends) -> None:
    backend = backends()
    p = Proxy({**single_upstream(backend.url, rate_limit={"rate": "1/h", "burst": 10}), "server": {"threads": 32}})
    try:
        barrier, statuses = threading.Barrier(30), []

        def hit() -> None:
            barrier.wait()
            statuses.append(p.request("GET", "/")[0].status)

        threads = [threading.Thread(target=hit) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert statuses.count(200) == 10 and statuses.count(429) == 20 and seen(backend) == 10
    finally:
        p.stop()


def test_explain_names_the_limits_and_access_rules() -> None:
    from simpleproxy.explain import explain

    config = config_from_dict({**single_upstream("http://127.0.0.1:1", rate_limit={"rate": "10/s", "burst": 5}),
                               "access": {"deny": ["10.0.0.0/8"]}})
    text = explain(config, "http://h/x")[1]
    assert "limits    rate_limit" not in text  # the global one is absent: only the route's
    assert "routes[0].rate_limit: 10/s, burst 5, per client_ip (reject)" in text
    assert "access    access: deny 10.0.0.0/8; client 127.0.0.1 passes" in text


def test_waf_rules_global_then_route_then_baseline_and_the_backend_sees_nothing_refused(backends, proxy) -> None:
    backend = backends()
    config = single_upstream(backend.url, waf={"baseline": True, "rules": [
        {"name": "ops-tool", "match": {"header:X-Ops": {"exact": "1"}}, "action": "allow"}]})
    config["waf"] = {"rules": [{"name": "no-admin", "match": {"path": {"prefix": "/admin"}}}]}
    p = proxy(config)
    assert p.request("GET", "/admin", headers={"X-Ops": "1"})[0].status == 403  # the global rule came first
    response, body = p.request("GET", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert response.status == 403 and b"refused by rule baseline-script-injection" in body
    assert p.request("GET", "/.env", headers={"X-Ops": "1"})[0].status == 200  # allowed before the baseline
    assert p.request("GET", "/search?q=O%27Reilly")[0].status == 200
    assert [path for _, path in backend.seen.queue] == ["/.env", "/search?q=O%27Reilly"]


def test_a_scanner_gets_banned_before_routing(backends, proxy) -> None:
    backend = backends()
    p = proxy({**single_upstream(backend.url, path="/app"), "bots": {"deny_agents": ["(?i)sqlmap"],
                                                                     "ban": {"after": 3, "window": "1m", "for": "10m"}}})
    assert p.request("GET", "/app/x", headers={"User-Agent": "sqlmap/1.7"})[0].status == 403
    for _ in range(2):
        assert p.request("GET", "/nothing-here")[0].status == 404  # a probe for paths no route has
    response, body = p.request("GET", "/app/x")
    assert response.status == 403 and b"banned" in body and int(response.getheader("Retry-After")) > 590
    assert backend.seen.qsize() == 0
    for _ in range(5):  # asking again while banned does not renew the ban
        p.request("GET", "/app/x")
    bans = p.app.state.bots.bans
    assert 590 < bans.banned("127.0.0.1") <= 600 and "127.0.0.1" not in bans._strikes
