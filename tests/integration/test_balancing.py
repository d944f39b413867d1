"""Balancing through the proxy, against real backends on loopback."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections import Counter

from conftest import LONG_TIMEOUT, read_request


def names(port: int, count: int, headers: dict[str, str] | None = None) -> Counter:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LONG_TIMEOUT)
    seen: Counter = Counter()
    for _ in range(count):
        conn.request("GET", "/", headers=headers or {})
        seen[json.loads(conn.getresponse().read())["name"]] += 1
    conn.close()
    return seen


def test_weighted_round_robin_over_3000_requests(backends, proxy) -> None:
    a, b, c = backends("A"), backends("B"), backends("C")
    p = proxy({
        "upstreams": {"app": {"servers": [{"url": a.url, "weight": 3}, {"url": b.url, "weight": 2}, c.url]}},
        "routes": [{"upstream": "app"}],
    })
    seen = names(p.port, 3000)
    for name, expected in (("A", 1500), ("B", 1000), ("C", 500)):
        assert abs(seen[name] - expected) <= expected * 0.05, seen


def test_hash_on_a_header_is_sticky(backends, proxy) -> None:
    servers = [backends(name) for name in "ABC"]
    p = proxy({
        "upstreams": {"app": {"servers": [s.url for s in servers], "balance": "hash", "hash_on": "header:X-User"}},
        "routes": [{"upstream": "app"}],
    })
    homes = {}
    for user in (f"user{i}" for i in range(30)):
        seen = names(p.port, 5, {"X-User": user})
        assert len(seen) == 1, seen  # every request of a user reaches one server
        homes[user] = next(iter(seen))
    assert len(set(homes.values())) == 3  # and users spread over all of them


def test_hash_on_client_ip_hashes_the_client_a_trusted_proxy_names(backends, proxy) -> None:
    servers = [backends(name) for name in "ABC"]
    p = proxy({
        "headers": {"trusted_proxies": ["127.0.0.1/32"]},  # a load balancer in front, on this machine
        "upstreams": {"app": {"servers": [s.url for s in servers], "balance": "hash", "hash_on": "client_ip"}},
        "routes": [{"upstream": "app"}],
    })
    homes = {}
    for client in (f"203.0.113.{i}" for i in range(1, 31)):
        seen = names(p.port, 3, {"X-Forwarded-For": client})
        assert len(seen) == 1, seen
        homes[client] = next(iter(seen))
    assert len(set(homes.values())) == 3  # not all on the server the load balancer's own address hashes to


def test_least_conn_avoids_a_busy_server(backends, raw_backend, proxy) -> None:
    held = threading.Event()

    def slow(conn: socket.socket) -> None:
        read_request(conn)
        held.set()
        slow_backend.release.wait(LONG_TIMEOUT)
        body = b'{"name": "slow"}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    slow_backend = raw_backend(slow)
    fast = backends("fast")
    p = proxy({
        "upstreams": {"app": {"servers": [slow_backend.url, fast.url], "balance": "least_conn"}},
        "routes": [{"upstream": "app"}],
    })
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(names(p.port, 1)))
    thread.start()  # all idle: the first server in turn, the slow one, takes it
    assert held.wait(LONG_TIMEOUT)
    assert names(p.port, 20) == Counter({"fast": 20})  # while it is busy, nothing else goes there
    slow_backend.release.set()
    thread.join(LONG_TIMEOUT)
    assert first == {"slow": 1}


def test_sticky_sessions_by_a_cookie_the_proxy_sets(backends, proxy) -> None:
    a, b = backends("A"), backends("B")
    p = proxy({"upstreams": {"app": {"servers": [a.url, b.url], "sticky": {"cookie": "sp_server"}}},
               "routes": [{"upstream": "app"}]})
    def ours(response: http.client.HTTPResponse) -> list[str]:
        return [c for c in response.headers.get_all("Set-Cookie") or [] if c.startswith("sp_server=")]

    response, body = p.request("GET", "/")
    (cookie,) = ours(response)
    assert "HttpOnly" in cookie and "Path=/" in cookie
    home = json.loads(body)["name"]
    value = cookie.split(";")[0]
    for _ in range(6):  # round robin would alternate; the cookie holds the client
        response, body = p.request("GET", "/", headers={"Cookie": f"theme=dark; {value}"})
        assert json.loads(body)["name"] == home and ours(response) == []
    (a if home == "A" else b).kill()
    response, body = p.request("GET", "/", headers={"Cookie": value})
    assert response.status == 200 and json.loads(body)["name"] != home  # moved, and told so
    assert ours(response)[0].split(";")[0] != value


def test_hash_moves_only_the_departed_servers_keys(backends, proxy) -> None:
    servers = [backends(name) for name in "ABCDE"]
    p = proxy({
        "upstreams": {"app": {"servers": [s.url for s in servers], "balance": "hash", "hash_on": "header:X-User",
                              "passive": {"failures": 1}}},
        "routes": [{"upstream": "app"}],
    })
    users = [f"user{i}" for i in range(300)]
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)

    def homes() -> dict[str, str]:
        found = {}
        for user in users:
            conn.request("GET", "/", headers={"X-User": user})
            found[user] = json.loads(conn.getresponse().read())["name"]
        return found

    before = homes()
    servers[2].kill()  # "C" leaves: its users are retried elsewhere, then it is ejected
    after = homes()
    conn.close()
    moved = [user for user in users if after[user] != before[user]]
    assert all(before[user] == "C" for user in moved) and "C" not in after.values()
    assert 0.1 < len(moved) / len(users) < 0.3  # about 1/5
