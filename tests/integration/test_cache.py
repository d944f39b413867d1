"""The cache through the real proxy, in front of a real origin that counts what it is asked.

Time is a fake clock handed to the proxy, so freshness is exact and instant.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from simpleproxy.cache.policy import format_http_date
from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError

from conftest import FakeClock, LONG_TIMEOUT, Proxy, SHORT_TIMEOUT

T0 = 1_800_000_000.0


class OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.sockets.append(self.connection)  # type: ignore[attr-defined]

    def _answer(self) -> None:
        origin: Origin = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with origin.lock:
            origin.count[self.path] = origin.count.get(self.path, 0) + 1
            origin.requests.append((self.command, self.path, dict(self.headers)))
        if origin.gate is not None:
            origin.gate.wait(LONG_TIMEOUT)
        origin.clock.now += origin.delay  # the origin takes its time (on the proxy's clock)
        status, headers, body = origin.answers.get(self.path, (200, {"Cache-Control": "max-age=60"}, b"hello"))
        etag = headers.get("ETag")
        if etag and self.headers.get("If-None-Match") == etag:
            status, body = 304, b""
        self.send_response_only(status)
        self.send_header("Date", format_http_date(origin.clock()))
        for name, value in headers.items():
            self.send_header(name, value)
        if origin.chunked and status == 200:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status != 304:
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class Origin(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(("127.0.0.1", 0), OriginHandler)
        self.clock = clock
        self.lock = threading.Lock()
        self.count: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.gate: threading.Event | None = None
        self.chunked = False
        self.delay = 0.0  #: seconds the origin "takes" to answer, added to the shared clock
        self.sockets: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop as a crashed origin would: no new connections, open ones cut."""
        if self.gate is not None:
            self.gate.set()
        self.shutdown()
        self.server_close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def origin(clock) -> Iterator[Origin]:
    server = Origin(clock)
    yield server
    server.stop()


def cached_config(url: str, route_cache: Any = True, **top: Any) -> dict[str, Any]:
    return {
        "upstreams": {"app": {"servers": [url], "timeouts": {"connect": "2s", "read": "10s"}}},
        "routes": [{"path": "/", "upstream": "app", "cache": route_cache}, {"path": "/nocache", "upstream": "app"}],
        **top,
    }


def until_stored(p: Any, count: int) -> None:
    """Wait (bounded) until the route's store holds ``count`` responses."""
    store = p.app.state.cache_filters["routes[0]"].store
    deadline = time.monotonic() + LONG_TIMEOUT
    while len(store) < count and time.monotonic() < deadline:
        time.sleep(0.002)  # a ready-check's poll
    assert len(store) >= count


def test_hits_save_the_origin_and_say_so(proxy, origin, clock) -> None:
    p = proxy(cached_config(origin.url), clock=clock)
    first, body = p.request("GET", "/page")
    assert first.getheader("Cache-Status") == "simpleproxy; fwd=uri-miss; fwd-status=200; stored"
    until_stored(p, 1)  # a streamed body is stored when the server closes it, maybe after the client read it
    clock.now += 12
    for _ in range(5):
        response, again = p.request("GET", "/page")
        assert again == body == b"hello" and response.getheader("Age") == "12"
        assert response.getheader("Cache-Status") == "simpleproxy; hit; ttl=48"
    assert origin.count["/page"] == 1


def test_a_route_without_cache_never_touches_it(proxy, origin, clock) -> None:
    p = proxy(cached_config(origin.url), clock=clock)
    for _ in range(3):
        response, _ = p.request("GET", "/nocache")
        assert response.getheader("Cache-Status") is None
    assert origin.count["/nocache"] == 3
    assert list(p.app.state.cache_filters) == ["routes[0]"]


def test_a_streamed_chunked_body_is_stored_whole(proxy, origin, clock) -> None:
    origin.chunked = True
    big = bytes(range(256)) * 8192  # 2 MiB
    origin.answers["/big"] = (200, {"Cache-Control": "max-age=60"}, big)
    p = proxy(cached_config(origin.url), clock=clock)
    assert p.request("GET", "/big")[1] == big
    response, body = p.request("GET", "/big")
    assert body == big and response.getheader("Content-Length") == str(len(big))
    assert origin.count["/big"] == 1


def test_an_object_over_the_limit_is_relayed_whole_and_not_stored(proxy, origin, clock) -> None:
    origin.chunked = True
    big = b"x" * (300 * 1024)
    origin.answers["/big"] = (200, {"Cache-Control": "max-age=60"}, big)
    p = proxy(cached_config(origin.url, cache={"max_size": "4MiB", "max_object": "256KiB"}), clock=clock)
    for _ in range(2):
        assert p.request("GET", "/big")[1] == big
    assert origin.count["/big"] == 2


def test_a_body_the_client_abandoned_is_not_stored(proxy, origin, clock) -> None:
    origin.chunked = True
    big = b"y" * (4 * 1024 * 1024)
    origin.answers["/big"] = (200, {"Cache-Control": "max-age=60"}, big)
    p = proxy(cached_config(origin.url), clock=clock)
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536)  # the head and a first piece, then leave
    response, body = p.request("GET", "/big")
    assert body == big
    assert origin.count["/big"] == 2  # the abandoned copy was never stored


def test_revalidation_through_a_real_origin(proxy, origin, clock) -> None:
    origin.answers["/r"] = (200, {"Cache-Control": "max-age=10", "ETag": '"v1"'}, b"body")
    p = proxy(cached_config(origin.url), clock=clock)
    p.request("GET", "/r")
    clock.now += 11
    response, body = p.request("GET", "/r")
    assert response.status == 200 and body == b"body"
    assert response.getheader("Cache-Status") == "simpleproxy; fwd=stale; fwd-status=304"
    assert origin.requests[-1][2]["If-None-Match"] == '"v1"'
    response, _ = p.request("GET", "/r", headers={"If-None-Match": '"v1"'})
    assert response.status == 304 and response.getheader("ETag") == '"v1"'
    assert origin.count["/r"] == 2


def test_fifty_concurrent_misses_send_one_request_upstream(proxy, origin, clock) -> None:
    origin.gate = threading.Event()
    p = proxy({**cached_config(origin.url), "server": {"threads": 64}}, clock=clock)
    flights = p.app.state.cache_filters["routes[0]"].flights
    results: list[tuple[int, bytes]] = []

    def fetch() -> None:
        response, body = p.request("GET", "/hot")
        results.append((response.status, body))

    threads = [threading.Thread(target=fetch) for _ in range(50)]
    for t in threads:
        t.start()
    with flights.changed:  # every follower is waiting on the leader's flight
        assert flights.changed.wait_for(lambda: flights.waiting == 49, timeout=LONG_TIMEOUT)
    origin.gate.set()
    for t in threads:
        t.join(LONG_TIMEOUT)
    assert results == [(200, b"hello")] * 50
    assert origin.count["/hot"] == 1


def test_unsafe_methods_invalidate_through_the_proxy(proxy, origin, clock) -> None:
    p = proxy(cached_config(origin.url), clock=clock)
    p.request("GET", "/item")
    p.request("GET", "/item")
    assert p.request("PUT", "/item", body=b"new")[0].getheader("Cache-Status") == "simpleproxy; fwd=method"
    p.request("GET", "/item")
    assert origin.count["/item"] == 3  # GET, PUT, GET again


def test_purge_by_url_and_prefix(proxy, origin, clock) -> None:
    p = proxy(cached_config(origin.url), clock=clock)
    for path in ("/a", "/static/1", "/static/2"):
        p.request("GET", path)
    host = f"127.0.0.1:{p.port}"
    assert p.app.purge(f"http://{host}/a") == 1
    assert p.app.purge(f"http://{host}/static/", prefix=True) == 2
    for path in ("/a", "/static/1"):
        p.request("GET", path)
    assert origin.count == {"/a": 2, "/static/1": 2, "/static/2": 1}


def test_a_dead_origin_gets_the_stale_copy_for_the_routes_grace(proxy, clock) -> None:
    origin = Origin(clock)
    p = proxy(cached_config(origin.url, route_cache={"stale_if_error": "30s"}), clock=clock)
    p.request("GET", "/page")
    origin.stop()
    clock.now += 80  # 20 s stale
    response, body = p.request("GET", "/page")
    assert response.status == 200 and body == b"hello"
    assert "fwd=stale" in response.getheader("Cache-Status")
    clock.now += 20  # 40 s stale: past the grace
    assert p.request("GET", "/page")[0].status == 502


def test_only_if_cached_is_a_504_without_reaching_the_origin(proxy, origin, clock) -> None:
    p = proxy(cached_config(origin.url), clock=clock)
    response, body = p.request("GET", "/none", headers={"Cache-Control": "only-if-cached"})
    assert response.status == 504 and b"only-if-cached" in body
    assert "/none" not in origin.count


def test_head_from_a_stored_get_keeps_the_length(proxy, origin, clock) -> None:
    p = proxy(cached_config(origin.url), clock=clock)
    p.request("GET", "/h")
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=SHORT_TIMEOUT)
    conn.request("HEAD", "/h")
    response = conn.getresponse()
    assert response.read() == b"" and response.getheader("Content-Length") == "5"
    conn.close()
    assert origin.count["/h"] == 1


@pytest.mark.parametrize(("cache", "top", "message"), [
    ({"max_sise": "1MiB"}, {}, "routes[0].cache.max_sise: unknown key (did you mean 'max_size'?)"),
    ({"max_size": "2MiB"}, {"cache": {"max_size": "1MiB", "max_object": "1KiB"}},
     "routes[0].cache.max_size: the routes' shares add up to more than cache.max_size"),
    ({"max_ttl": "0s"}, {}, "routes[0].cache.max_ttl: must be more than zero"),
    (True, {"cache": {"max_size": "1MiB", "max_object": "2MiB"}}, "cache.max_object: is larger than cache.max_size"),
    ("yes", {}, "routes[0].cache: expected a mapping of keys, got text"),
])
def test_cache_config_errors_name_the_key(cache, top, message) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(cached_config("http://127.0.0.1:1", route_cache=cache, **top))
    assert any(problem.startswith(message) for problem in info.value.problems), info.value.problems


def test_respond_routes_cannot_cache() -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\].cache: only a route with an upstream has something to cache"):
        config_from_dict({"routes": [{"respond": {"body": "hi"}, "cache": True}]})


def test_proxy_helper_without_a_clock_uses_real_time(origin) -> None:
    p = Proxy(cached_config(origin.url))
    try:
        assert p.request("GET", "/t")[0].status == 200
        assert p.request("GET", "/t")[0].getheader("Cache-Status").startswith("simpleproxy; hit")
    finally:
        p.stop()


def test_a_sticky_session_cookie_is_never_stored_for_others(proxy, origin, clock) -> None:
    config = cached_config(origin.url)
    config["upstreams"]["app"]["sticky"] = {"cookie": "sp_server"}
    p = proxy(config, clock=clock)
    first, _ = p.request("GET", "/s")
    assert "sp_server=" in (first.getheader("Set-Cookie") or "")
    second, _ = p.request("GET", "/s")
    assert second.getheader("Cache-Status").startswith("simpleproxy; hit")
    assert second.getheader("Set-Cookie") is None


def test_the_access_log_says_what_the_cache_did(proxy, origin, clock) -> None:
    origin.answers["/r"] = (200, {"Cache-Control": "max-age=10", "ETag": '"v1"'}, b"body")
    p = proxy(cached_config(origin.url), clock=clock)
    p.request("GET", "/r")
    p.request("GET", "/r")
    clock.now += 11
    p.request("GET", "/r")
    p.request("POST", "/r", body=b"x")
    assert [line.split()[-2] for line in p.log_lines(at_least=4)] == ["miss", "hit", "revalidated", "bypass"]


def test_equivalent_accept_encoding_and_accept_language_share_a_stored_variant(proxy, origin, clock) -> None:
    origin.answers["/v"] = (200, {"Cache-Control": "max-age=60", "Vary": "Accept-Encoding, Accept-Language"}, b"body")
    p = proxy(cached_config(origin.url), clock=clock)

    def result(encoding: str, language: str) -> str:
        answer, _ = p.request("GET", "/v", headers={"Accept-Encoding": encoding, "Accept-Language": language})
        return answer.getheader("Cache-Status").split(";")[1].strip()

    assert result("gzip, deflate, br", "en-US, en;q=0.9") == "fwd=uri-miss"
    assert result("br;q=1.0, gzip;q=0.8, deflate", "en-us,en;q=0.90") == "hit"  # the same codings, the same order
    assert result("gzip", "en-US, en;q=0.9") == "fwd=vary-miss"  # fewer codings: maybe not the same answer
    assert result("gzip, deflate, br", "en;q=0.9, en-US") == "hit"  # the same preference, written otherwise
    assert result("gzip, deflate, br", "en, en-US;q=0.9") == "fwd=vary-miss"  # another first choice
    assert len(origin.requests) == 3


def test_the_routes_key_leaves_out_tracking_parameters_sorts_and_varies_on_named_fields(proxy, origin, clock) -> None:
    origin.answers["/k"] = (200, {"Cache-Control": "max-age=60"}, b"body")
    key = {"ignore_query": ["utm_*", "fbclid"], "sort_query": True, "include_headers": ["X-Tenant"],
           "include_cookies": ["lang"]}
    p = proxy(cached_config(origin.url, {"key": key}), clock=clock)

    def result(target: str, **fields: str) -> str:
        return p.request("GET", target, headers=fields)[0].getheader("Cache-Status").split(";")[1].strip()

    tenant_fr = {"X-Tenant": "t1", "Cookie": "session=1; lang=fr"}
    assert result("/k?b=1&a=2&utm_source=mail", **tenant_fr) == "fwd=uri-miss"
    assert result("/k?a=2&fbclid=x1&b=1", **{**tenant_fr, "Cookie": "lang=fr; session=2"}) == "hit"
    assert result("/k?a=2&b=1", **{**tenant_fr, "X-Tenant": "t2"}) == "fwd=vary-miss"
    assert result("/k?a=2&b=1", **{**tenant_fr, "Cookie": "lang=en"}) == "fwd=vary-miss"
    assert result("/k?a=2&b=1&c=3", **tenant_fr) == "fwd=uri-miss"  # other parameters still count
    assert len(origin.requests) == 4


def test_age_counts_the_time_the_response_took_to_arrive(proxy, origin, clock) -> None:
    origin.answers["/slow"] = (200, {"Cache-Control": "max-age=60"}, b"late")
    origin.delay = 2.0  # RFC 9111 4.2.3: response_delay, though the origin's Date says "now"
    p = proxy(cached_config(origin.url), clock=clock)
    p.request("GET", "/slow")
    hit, _ = p.request("GET", "/slow")
    assert "hit" in hit.getheader("Cache-Status") and hit.getheader("Age") == "2"
    clock.now += 10
    assert p.request("GET", "/slow")[0].getheader("Age") == "12"


@pytest.mark.parametrize(("share", "cap", "fresh_for"), [("50%", "5m", 300), ("10%", "1d", 100), ("0%", "1d", 0)])
def test_heuristic_freshness_is_a_share_of_the_age_capped(proxy, origin, clock, share, cap, fresh_for) -> None:
    origin.answers["/h"] = (200, {"Last-Modified": format_http_date(clock() - 1000)}, b"doc")  # no explicit freshness
    p = proxy(cached_config(origin.url, {"heuristic": share, "max_heuristic": cap}), clock=clock)
    p.request("GET", "/h")
    if fresh_for:
        clock.now += fresh_for - 1
        assert "hit" in p.request("GET", "/h")[0].getheader("Cache-Status")
    clock.now += 2
    assert "hit" not in p.request("GET", "/h")[0].getheader("Cache-Status")  # stale: asked again


def test_purge_by_tag_reaches_every_routes_store_and_clients_never_see_the_tags(proxy, origin, clock) -> None:
    from werkzeug.test import Client

    from simpleproxy.admin import AdminApp
    from simpleproxy.config import AdminSettings

    origin.answers["/shop/p42"] = (200, {"Cache-Control": "max-age=60", "Cache-Tag": "product-42, shop"}, b"a")
    origin.answers["/api/p42"] = (200, {"Cache-Control": "max-age=60", "Surrogate-Key": "product-42 api"}, b"b")
    origin.answers["/shop/p7"] = (200, {"Cache-Control": "max-age=60", "Cache-Tag": "product-7,shop"}, b"c")
    config = cached_config(origin.url)
    config["routes"] = [{"path": "/shop", "upstream": "app", "cache": {"max_size": "1MiB"}},  # a store of its own
                        {"path": "/api", "upstream": "app", "cache": True}]  # the shared one
    p = proxy(config, clock=clock)
    for path in ("/shop/p42", "/api/p42", "/shop/p7"):
        answer, _ = p.request("GET", path)
        assert answer.getheader("Cache-Tag") is None and answer.getheader("Surrogate-Key") is None
        hit, _ = p.request("GET", path)
        assert "hit" in hit.getheader("Cache-Status") and hit.getheader("Cache-Tag") is None
    admin = Client(AdminApp(p.server, AdminSettings(("127.0.0.1", 0))))
    local = {"headers": {"X-Simpleproxy-Admin": "1"}, "environ_base": {"REMOTE_ADDR": "127.0.0.1"}}
    purged = admin.post("/cache/purge?tag=product-42", **local)
    assert purged.status_code == 200 and purged.json == {"purged": 2, "tag": "product-42"}
    assert "hit" not in p.request("GET", "/shop/p42")[0].getheader("Cache-Status")
    assert "hit" not in p.request("GET", "/api/p42")[0].getheader("Cache-Status")
    assert "hit" in p.request("GET", "/shop/p7")[0].getheader("Cache-Status")  # another tag: kept
    assert admin.post("/cache/purge?tag=shop", **local).json["purged"] == 2  # /shop/p42 (stored again) and /shop/p7


def test_tags_pass_to_clients_when_asked(proxy, origin, clock) -> None:
    origin.answers["/t"] = (200, {"Cache-Control": "max-age=60", "Cache-Tag": "a"}, b"x")
    p = proxy(cached_config(origin.url, cache={"pass_tags": True}), clock=clock)
    assert p.request("GET", "/t")[0].getheader("Cache-Tag") == "a"
    assert p.request("GET", "/t")[0].getheader("Cache-Tag") == "a"  # from the store too


def test_a_head_is_answered_from_a_stored_get_and_refreshes_or_invalidates_it(proxy, origin, clock) -> None:
    origin.answers["/doc"] = (200, {"Cache-Control": "max-age=10", "ETag": '"v1"'}, b"version one")
    p = proxy(cached_config(origin.url), clock=clock)
    p.request("GET", "/doc")
    head, body = p.request("HEAD", "/doc")
    assert "hit" in head.getheader("Cache-Status") and body == b"" and head.getheader("Content-Length") == "11"
    assert origin.count["/doc"] == 1
    clock.now += 11  # stale: a HEAD revalidates it, and the stored GET is fresh again
    head, _ = p.request("HEAD", "/doc")
    assert origin.requests[-1][0] == "HEAD" and origin.requests[-1][2]["If-None-Match"] == '"v1"'
    assert "hit" in p.request("GET", "/doc")[0].getheader("Cache-Status") and origin.count["/doc"] == 2
    clock.now += 11
    origin.answers["/doc"] = (200, {"Cache-Control": "max-age=10", "ETag": '"v2"'}, b"version two!")
    head, _ = p.request("HEAD", "/doc")  # a 200 with another validator: the stored GET is not it any more
    assert head.status == 200 and head.getheader("ETag") == '"v2"'
    got, body = p.request("GET", "/doc")
    assert body == b"version two!" and "uri-miss" in got.getheader("Cache-Status")


def test_if_range_is_evaluated_against_the_stored_response(proxy, origin, clock) -> None:
    modified = format_http_date(clock() - 3600)
    origin.answers["/file"] = (200, {"Cache-Control": "max-age=60", "ETag": '"v1"', "Last-Modified": modified},
                               b"0123456789")
    p = proxy(cached_config(origin.url), clock=clock)
    p.request("GET", "/file")

    def ranged(if_range: str) -> tuple[int, bytes]:
        answer, body = p.request("GET", "/file", headers={"Range": "bytes=2-5", "If-Range": if_range})
        assert "hit" in answer.getheader("Cache-Status")
        return answer.status, body

    assert ranged('"v1"') == (206, b"2345")  # the same representation: the range
    assert ranged('"v0"') == (200, b"0123456789")  # another one: the whole, from the store
    assert ranged('W/"v1"') == (200, b"0123456789")  # a weak tag never validates a range
    assert ranged(modified) == (206, b"2345")  # a strong Last-Modified (an hour before its Date)
    assert ranged(format_http_date(clock() - 7200)) == (200, b"0123456789")
    assert origin.count["/file"] == 1


def test_several_ranges_from_the_store_are_a_multipart_answer(proxy, origin, clock) -> None:
    import email.parser

    origin.answers["/r10"] = (200, {"Cache-Control": "max-age=60", "Content-Type": "text/plain"}, b"0123456789")
    p = proxy(cached_config(origin.url), clock=clock)
    p.request("GET", "/r10")
    until_stored(p, 1)

    def ranged(spec: str) -> tuple[Any, bytes]:
        return p.request("GET", "/r10", headers={"Range": spec})

    answer, body = ranged("bytes=0-1, 5-6, -2")
    assert answer.status == 206 and answer.getheader("Content-Type").startswith("multipart/byteranges; boundary=")
    message = email.parser.BytesParser().parsebytes(b"Content-Type: " + answer.getheader("Content-Type").encode()
                                                    + b"\r\n\r\n" + body)
    parts = [(part["Content-Range"], part.get_payload(decode=True)) for part in message.get_payload()]
    assert parts == [("bytes 0-1/10", b"01"), ("bytes 5-6/10", b"56"), ("bytes 8-9/10", b"89")]
    assert all(part.get_content_type() == "text/plain" for part in message.get_payload())
    single, body = ranged("bytes=0-1, 20-30")  # one satisfiable: a plain 206
    assert single.status == 206 and single.getheader("Content-Range") == "bytes 0-1/10" and body == b"01"
    none, _ = ranged("bytes=20-30, 40-")
    assert none.status == 416 and none.getheader("Content-Range") == "bytes */10"
    whole, body = ranged("bytes=" + ",".join(f"{i}-{i}" for i in range(17)))  # past MAX_RANGES: all of it
    assert whole.status == 200 and body == b"0123456789"
    assert origin.count["/r10"] == 1


def test_a_range_on_a_miss_streams_from_the_whole_response_and_stores_it(proxy, origin, clock) -> None:
    import email.parser

    big = bytes(range(256)) * 4096  # 1 MiB, arriving in many reads
    origin.answers["/video"] = (200, {"Cache-Control": "max-age=60", "Content-Type": "video/mp4"}, big)
    p = proxy(cached_config(origin.url), clock=clock)
    answer, body = p.request("GET", "/video", headers={"Range": "bytes=700000-700009"})
    assert answer.status == 206 and body == big[700000:700010]
    assert answer.getheader("Content-Range") == f"bytes 700000-700009/{len(big)}"
    assert answer.getheader("Cache-Status") == \
        'simpleproxy; fwd=uri-miss; fwd-status=200; stored; detail="range of the whole"'
    assert "Range" not in origin.requests[0][2]
    until_stored(p, 1)
    # several ranges, out of order and overlapping, from the store now
    answer, body = p.request("GET", "/video", headers={"Range": "bytes=900000-900003, 5-9, -3, 6-7"})
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + answer.getheader("Content-Type").encode() + b"\r\n\r\n" + body)
    parts = [part.get_payload(decode=True) for part in message.get_payload()]
    assert answer.status == 206 and parts == [big[900000:900004], big[5:10], big[-3:], big[6:8]]
    assert origin.count["/video"] == 1


def test_several_ranges_on_a_miss_are_one_multipart_answer_cut_as_the_body_arrives(proxy, origin, clock) -> None:
    import email.parser

    big = bytes(range(256)) * 4096
    origin.answers["/m"] = (200, {"Cache-Control": "max-age=60", "Content-Type": "application/octet-stream"}, big)
    p = proxy(cached_config(origin.url), clock=clock)
    answer, body = p.request("GET", "/m", headers={"Range": "bytes=1000000-1000001, 0-2, 500000-"})
    assert answer.status == 206 and int(answer.getheader("Content-Length")) == len(body)
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + answer.getheader("Content-Type").encode() + b"\r\n\r\n" + body)
    got = [(part["Content-Range"], part.get_payload(decode=True)) for part in message.get_payload()]
    size = len(big)
    assert got == [(f"bytes 1000000-1000001/{size}", big[1000000:1000002]), (f"bytes 0-2/{size}", big[:3]),
                   (f"bytes 500000-{size - 1}/{size}", big[500000:])]
    until_stored(p, 1)
    none, _ = p.request("GET", "/m", headers={"Range": f"bytes={size}-"})
    assert none.status == 416 and origin.count["/m"] == 1


def test_concurrent_ranges_of_one_missing_object_fetch_it_once(proxy, origin, clock) -> None:
    big = bytes(range(256)) * 2048
    origin.answers["/seek"] = (200, {"Cache-Control": "max-age=60"}, big)
    origin.gate = threading.Event()
    p = proxy(cached_config(origin.url), clock=clock)
    results: list[bytes] = []

    def fetch(i: int) -> None:
        results.append(p.request("GET", "/seek", headers={"Range": f"bytes={i * 1000}-{i * 1000 + 99}"})[1])

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    cache = p.app.state.cache_filters["routes[0]"]
    with cache.flights.changed:  # every other request waits for the one that went
        assert cache.flights.changed.wait_for(lambda: cache.flights.waiting == 7, timeout=LONG_TIMEOUT)
    origin.gate.set()
    for thread in threads:
        thread.join(LONG_TIMEOUT)
    assert sorted(results) == sorted(big[i * 1000 : i * 1000 + 100] for i in range(8))
    assert origin.count["/seek"] == 1


def test_a_range_of_an_object_too_large_to_store_goes_to_the_origin(proxy, origin, clock) -> None:
    class Ranged(OriginHandler):
        def _answer(self) -> None:  # an origin that honours Range itself
            origin = self.server
            with origin.lock:  # type: ignore[attr-defined]
                origin.requests.append((self.command, self.path, dict(self.headers)))  # type: ignore[attr-defined]
            body = b"x" * (300 * 1024)
            wanted = self.headers.get("Range")
            self.send_response_only(206 if wanted else 200)
            self.send_header("Cache-Control", "max-age=60")
            if wanted:
                self.send_header("Content-Range", f"bytes 0-9/{len(body)}")
                body = body[:10]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer

    origin.RequestHandlerClass = Ranged
    p = proxy(cached_config(origin.url, cache={"max_size": "4MiB", "max_object": "256KiB"}), clock=clock)
    for _ in range(2):
        answer, body = p.request("GET", "/huge", headers={"Range": "bytes=0-9"})
        assert answer.status == 206 and body == b"x" * 10
        assert answer.getheader("Cache-Status") == 'simpleproxy; fwd=uri-miss; detail="range passed on: too large"'
    # the first tried the whole (and stopped at its head), then asked the range; the second asked it at once
    assert [fields.get("Range") for _, _, fields in origin.requests] == [None, "bytes=0-9", "bytes=0-9"]
