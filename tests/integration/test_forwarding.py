"""The proxy on a real port in front of real backends: routing, forwarding, streaming."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT, read_request, single_upstream


def test_host_path_routing_strip_prefix_and_round_robin(backends, proxy) -> None:
    a, b, c = backends("A"), backends("B"), backends("C")
    p = proxy({
        "upstreams": {
            "ab": {"servers": [{"url": a.url}, {"url": b.url}]},
            "c": {"servers": [c.url]},
        },
        "routes": [
            {"host": "c.example.com", "upstream": "c"},
            {"host": "*.example.com", "path": "/api", "upstream": "c", "strip_prefix": True},
            {"path": "/", "upstream": "ab"},
        ],
    })
    names = [json.loads(p.request("GET", "/x")[1])["name"] for _ in range(4)]
    assert names == ["A", "B", "A", "B"]
    echo = json.loads(p.request("GET", "/api/users?id=7", headers={"Host": "www.Example.com:8080"})[1])
    assert (echo["name"], echo["path"]) == ("C", "/users?id=7")
    assert ["Host", "www.Example.com:8080"] in echo["headers"]  # Host kept by default
    # The wildcard site's only route is /api: /apix is not under it, and does not fall
    # through to the any-host routes.
    response, body = p.request("GET", "/apix", headers={"Host": "www.example.com"})
    assert response.status == 404 and b"request id:" in body


def test_dot_segments_cannot_climb_into_another_route(backends, proxy) -> None:
    public, admin = backends("public"), backends("admin")
    p = proxy({
        "upstreams": {"public": {"servers": [public.url]}, "admin": {"servers": [admin.url]}},
        "routes": [{"path": "/public", "upstream": "public"}, {"path": "/admin", "upstream": "admin"}],
    })
    for target in ("/public/../admin/x", "/public/%2e%2e/admin/x"):
        echo = json.loads(p.raw(f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()).split(b"\r\n\r\n", 1)[1])
        assert (echo["name"], echo["path"]) == ("admin", "/admin/x")  # matched and forwarded alike
    answer = p.raw(b"GET /public/..%2fadmin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"encoded slash" in answer  # server.reject_ambiguous_paths
    p = proxy({
        "upstreams": {"public": {"servers": [public.url]}, "admin": {"servers": [admin.url]}},
        "routes": [{"path": "/public", "upstream": "public", "allow_encoded_slashes": True}, {"path": "/admin", "upstream": "admin"}],
    })
    echo = json.loads(p.raw(b"GET /public/..%2fadmin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").split(b"\r\n\r\n", 1)[1])
    assert (echo["name"], echo["path"]) == ("public", "/public/..%2Fadmin")  # an escaped slash separates nothing here


def test_bodies_any_method_and_duplicate_response_fields(backends, proxy) -> None:
    p = proxy(single_upstream(backends().url))
    for method in ("POST", "PUT", "PATCH", "DELETE", "PURGE"):
        response, body = p.request(method, "/submit", body=b"x=1&y=2", headers={"Content-Type": "application/x-www-form-urlencoded"})
        echo = json.loads(body)
        assert (echo["method"], echo["body"]) == (method, "x=1&y=2")
        assert ["Content-Length", "7"] in echo["headers"]
        assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    big = bytes(range(256)) * 1024  # 256 KiB: streamed upstream rather than sent with the head
    echo = json.loads(p.request("POST", "/big", body=big)[1])
    assert echo["body"].encode("latin-1") == big


def test_forwarding_headers_and_hop_by_hop_removal(backends, proxy) -> None:
    p = proxy(single_upstream(backends().url))
    echo = json.loads(p.request("GET", "/", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "Connection": "X-Hop", "X-Hop": "1",
        "Keep-Alive": "timeout=5",
    })[1])
    headers = dict(echo["headers"])
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert "X-Hop" not in headers and "Keep-Alive" not in headers


FORGED = {"X-Real-IP": "6.6.6.6", "True-Client-IP": "6.6.6.7", "X-Client-IP": "6.6.6.8", "CF-Connecting-IP": "6.6.6.9"}


def test_a_client_cannot_forge_the_fields_backends_take_for_its_address(backends, proxy) -> None:
    p = proxy(single_upstream(backends().url))
    headers = dict(json.loads(p.request("GET", "/", headers=FORGED)[1])["headers"])
    assert headers["X-Real-IP"] == "127.0.0.1"  # the real client, not the one claimed
    assert not {"True-Client-IP", "X-Client-IP", "CF-Connecting-IP"} & set(headers), headers


def test_a_trusted_proxy_names_the_client_in_them(backends, proxy) -> None:
    p = proxy({**single_upstream(backends().url), "headers": {"trusted_proxies": ["127.0.0.0/8"]}})
    headers = dict(json.loads(p.request("GET", "/", headers=FORGED)[1])["headers"])
    assert {name: headers[name] for name in FORGED} == FORGED  # written by a proxy we trust: kept
    headers = dict(json.loads(p.request("GET", "/", headers={"X-Forwarded-For": "203.0.113.9"})[1])["headers"])
    assert headers["X-Real-IP"] == "203.0.113.9"  # the client that proxy names


def test_trusted_proxies_may_extend_the_chain(backends, proxy) -> None:
    p = proxy({**single_upstream(backends().url), "headers": {"trusted_proxies": ["127.0.0.0/8"], "forwarded": True}})
    headers = dict(json.loads(p.request("GET", "/", headers={"X-Forwarded-For": "203.0.113.9"})[1])["headers"])
    assert headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert headers["Forwarded"].startswith("for=127.0.0.1;proto=http;host=")


def test_upstream_connections_are_kept_alive_and_reused(backends, proxy) -> None:
    backend = backends()
    p = proxy(single_upstream(backend.url))
    for _ in range(5):
        assert p.request("GET", "/")[0].status == 200
    assert len(backend.connections) == 1


def test_response_streams_before_the_backend_finishes(raw_backend, proxy) -> None:
    first_sent = threading.Event()

    def slow(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        first_sent.set()
        backend.release.wait(LONG_TIMEOUT)  # hold the rest until the client saw the first part
        conn.sendall(b"4\r\nlast\r\n0\r\n\r\n")

    backend = raw_backend(slow)
    p = proxy(single_upstream(backend.url))
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)
    conn.request("GET", "/events")
    response = conn.getresponse()
    assert response.read1(100) == b"first"  # arrived while the backend still holds the rest
    backend.release.set()
    assert response.read() == b"last"
    conn.close()


def test_content_encoding_is_relayed_untouched(raw_backend, proxy) -> None:
    payload = gzip.compress(b"hello " * 1000)

    def gzipped(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)

    p = proxy(single_upstream(raw_backend(gzipped).url))
    response, body = p.request("GET", "/", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip" and body == payload


def test_head_and_no_content_responses(backends, raw_backend, proxy) -> None:
    p = proxy(single_upstream(backends().url))
    response, body = p.request("HEAD", "/")
    assert response.status == 200 and body == b"" and int(response.headers["Content-Length"]) > 0

    def no_content(conn: socket.socket) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")

    p2 = proxy(single_upstream(raw_backend(no_content).url))
    for _ in range(2):  # the connection stays usable: nothing was left unread
        response, body = p2.request("DELETE", "/thing")
        assert (response.status, body, response.headers["X-A"]) == (204, b"", "1")


def test_a_large_response_streams_through(raw_backend, proxy) -> None:
    size = 20 * 1024 * 1024
    block = b"z" * 65536

    def large(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            conn.sendall(block)

    p = proxy(single_upstream(raw_backend(large).url))
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)
    conn.request("GET", "/big")
    response = conn.getresponse()
    total = 0
    while data := response.read(1024 * 1024):
        total += len(data)
    assert total == size
    conn.close()


def test_access_log_line_per_request(backends, proxy) -> None:
    backend = backends()
    p = proxy(single_upstream(backend.url))
    response, _ = p.request("GET", "/logged?q=1", headers={"User-Agent": "tester/1"})
    (line,) = p.log_lines(at_least=1)
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /logged?q=1 HTTP/1.1" 200 ' in line
    upstream, request_id, route, cache, limit = line.split()[-5:]
    assert upstream == backend.url.removeprefix("http://") and (route, cache, limit) == ("routes[0]", "-", "-")
    assert request_id == response.getheader("X-Request-Id")
    assert '"tester/1"' in line


def test_request_ids_go_upstream_and_back_and_only_trusted_ones_are_kept(backends, proxy) -> None:
    backend = backends()
    p = proxy(single_upstream(backend.url))
    response, body = p.request("GET", "/", headers={"X-Request-Id": "forged-by-client"})
    sent = dict(json.loads(body)["headers"])
    assert response.getheader("X-Request-Id") == sent["X-Request-Id"] != "forged-by-client"
    assert len(sent["X-Request-Id"]) == 12 and response.getheaders().count(("X-Request-Id", sent["X-Request-Id"])) == 1
    trusting = proxy({**single_upstream(backend.url), "headers": {"trusted_proxies": ["127.0.0.1"]}})
    response, body = trusting.request("GET", "/", headers={"X-Request-Id": "lb-7f3a"})
    assert response.getheader("X-Request-Id") == dict(json.loads(body)["headers"])["X-Request-Id"] == "lb-7f3a"
    response, body = trusting.request("GET", "/", headers={"X-Request-Id": "bad id\twith tab"})
    assert response.getheader("X-Request-Id") != "bad id\twith tab"
    refused, page = p.request("GET", "/%zz")  # an error page names the id its header carries
    assert refused.status == 400 and f"request id: {refused.getheader('X-Request-Id')}".encode() in page


def test_json_access_log(backends, proxy) -> None:
    p = proxy({**single_upstream(backends().url), "log": {"format": "json"}})
    response, _ = p.request("GET", '/j?x="1"', headers={"User-Agent": 'say "hi"'})
    (line,) = p.log_lines(at_least=1)
    entry = json.loads(line)
    assert entry["target"] == '/j?x="1"' and entry["status"] == 200 and entry["route"] == "routes[0]"
    assert entry["user_agent"] == 'say "hi"' and entry["cache"] == "-"
    assert entry["request_id"] == response.getheader("X-Request-Id") and entry["time"].endswith("Z")


def test_shutdown_is_clean_with_idle_keepalive_clients(backends, proxy) -> None:
    p = proxy(single_upstream(backends().url))
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=SHORT_TIMEOUT)
    conn.request("GET", "/")
    conn.getresponse().read()
    p.stop()  # with a keep-alive client still connected
    assert not p._thread.is_alive()
    conn.close()


def test_host_header_per_route(backends, proxy) -> None:
    backend = backends()
    host_port = backend.url.removeprefix("http://")
    p = proxy({
        "upstreams": {"app": {"servers": [backend.url]}},
        "routes": [
            {"path": "/client", "upstream": "app"},
            {"path": "/upstream", "upstream": "app", "host_header": "upstream"},
            {"path": "/literal", "upstream": "app", "host_header": "internal.example"},
        ],
    })

    def host_seen(path: str) -> str:
        return dict(json.loads(p.request("GET", path, headers={"Host": "public.example"})[1])["headers"])["Host"]

    assert host_seen("/client") == "public.example"
    assert host_seen("/upstream") == host_port
    assert host_seen("/literal") == "internal.example"


def test_stop_works_even_when_the_loop_cannot_be_woken(backends, proxy) -> None:
    p = proxy(single_upstream(backends().url))
    assert p.request("GET", "/")[0].status == 200
    p.server.front._listeners[0].trigger.close()  # as waitress does after a poll error on its pipe
    p.stop()  # falls back to closing the sockets from here; the loop ends at its next poll timeout
    assert not p._thread.is_alive()
