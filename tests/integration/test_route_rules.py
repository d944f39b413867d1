"""Route rules through the real proxy in front of an echo backend: matchers, header rules, redirects,
rewrites and error pages (config_routes.py and the modules it feeds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError


def upstream(url: str, *routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"upstreams": {"app": {"servers": [url]}}, "routes": list(routes), **top}


def echoed(body: bytes) -> dict[str, Any]:
    seen = json.loads(body)
    seen["fields"] = {name.lower(): value for name, value in seen["headers"]}
    return seen


# --------------------------------------------------------------------------- matchers


def test_a_post_only_route_beside_a_get_one_on_the_same_prefix(backends, proxy) -> None:
    writes, reads = backends("writes"), backends("reads")
    config = {
        "upstreams": {"w": {"servers": [writes.url]}, "r": {"servers": [reads.url]}},
        "routes": [{"path": "/api", "upstream": "r"},
                   {"path": "/api", "upstream": "w", "match": {"methods": ["POST", "PUT"]}}],
    }
    p = proxy(config)
    assert echoed(p.request("POST", "/api/x", body=b"1")[1])["name"] == "writes"  # more matchers: tried first
    assert echoed(p.request("GET", "/api/x")[1])["name"] == "reads"


def test_a_header_matcher_sends_the_canary_elsewhere(backends, proxy) -> None:
    stable, canary = backends("stable"), backends("canary")
    config = {
        "upstreams": {"s": {"servers": [stable.url]}, "c": {"servers": [canary.url]}},
        "routes": [{"path": "/", "upstream": "c", "match": {"headers": {"X-Canary": "1"}}},
                   {"path": "/", "upstream": "s", "match": {"headers": {"Cookie": "~(^|; )beta=yes(;|$)"}}},
                   {"path": "/", "upstream": "s"}],
    }
    p = proxy(config)
    assert echoed(p.request("GET", "/", headers={"X-Canary": "1"})[1])["name"] == "canary"
    assert echoed(p.request("GET", "/", headers={"X-Canary": "2"})[1])["name"] == "stable"
    assert echoed(p.request("GET", "/")[1])["name"] == "stable"


def test_query_clients_and_path_regex_matchers_and_a_405_when_only_methods_refuse(backends, proxy) -> None:
    v2, local = backends("v2"), backends("local")
    config = {
        "upstreams": {"v2": {"servers": [v2.url]}, "local": {"servers": [local.url]}},
        "routes": [{"path": "/q", "upstream": "v2", "match": {"query": {"v": "2"}}},
                   {"path": "/q", "upstream": "local", "match": {"clients": ["10.0.0.0/8"]}},
                   {"path": "/u", "upstream": "local", "match": {"path_regex": "^/u/[0-9]+$"}},
                   {"path": "/admin", "upstream": "local", "match": {"methods": ["GET"]}}],
    }
    p = proxy(config)
    assert echoed(p.request("GET", "/q?a=1&v=2")[1])["name"] == "v2"
    assert p.request("GET", "/q?v=3")[0].status == 404  # 127.0.0.1 is not in 10.0.0.0/8 either
    assert echoed(p.request("GET", "/u/42")[1])["name"] == "local"
    assert p.request("GET", "/u/me")[0].status == 404
    refused, _ = p.request("DELETE", "/admin")
    assert refused.status == 405 and refused.getheader("Allow") == "GET"


def test_config_errors_name_the_matcher_key() -> None:
    config = upstream("http://127.0.0.1:9", {"path": "/", "upstream": "app", "match": {
        "methods": ["GE T"], "headers": {"X-A": "~(unclosed"}, "clients": ["10.0.0.300/8"], "path_regex": "["}})
    with pytest.raises(ConfigError) as caught:
        config_from_dict(config)
    text = str(caught.value)
    for key in ("match.methods[0]", "match.headers.X-A", "match.clients[0]", "match.path_regex"):
        assert f"routes[0].{key}" in text


# --------------------------------------------------------------------------- header rules


def test_request_and_response_header_rules_with_every_placeholder(backends, proxy) -> None:
    backend = backends("A")
    route = {
        "path": "/", "upstream": "app",
        "request_headers": {
            "set": {"X-Client": "{client_ip}", "X-Seen": "{method} {scheme}://{host}{path}{query} at {route}"},
            "add": {"X-Trace": "{request_id}"}, "remove": ["Cookie"],
        },
        "response_headers": {"set": {"X-Served-By": "{upstream} {status}"}, "remove": ["Set-Cookie"],
                             "add": {"X-Route": "{route}"}},
    }
    p = proxy(upstream(backend.url, route, request_headers={"set": {"X-Env": "prod"}},
                       response_headers={"add": {"X-Top": "1"}}))
    answer, body = p.request("GET", "/a/b?x=1", headers={"Cookie": "session=secret", "X-Trace": "upstream-1"})
    fields = echoed(body)["fields"]
    assert "cookie" not in fields and fields["x-client"] == "127.0.0.1" and fields["x-env"] == "prod"
    assert fields["x-seen"] == f"GET http://127.0.0.1/a/b?x=1 at */"
    assert fields["x-trace"] == f"upstream-1, {answer.getheader('X-Request-Id')}"
    assert answer.getheader("Set-Cookie") is None and answer.getheader("X-Top") == "1"
    assert answer.getheader("X-Served-By") == f"127.0.0.1:{backend.server_address[1]} 200"
    assert answer.getheader("X-Route") == "*/"


def test_security_headers_are_added_unless_the_backend_set_them(raw_backend, proxy) -> None:
    from conftest import read_request

    def script(conn) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Frame-Options: DENY\r\nContent-Length: 2\r\n\r\nok")

    p = proxy(upstream(raw_backend(script).url, {"path": "/", "upstream": "app"}, security_headers=True))
    answer, _ = p.request("GET", "/")
    assert answer.getheader("X-Frame-Options") == "DENY"
    assert answer.getheader("X-Content-Type-Options") == "nosniff"
    assert answer.getheader("Referrer-Policy") == "strict-origin-when-cross-origin"


@pytest.mark.parametrize(("rules", "message"), [
    ({"set": {"Host": "x"}}, "host_header sets it"),
    ({"set": {"X-Forwarded-For": "1.2.3.4"}}, "the proxy builds it"),
    ({"remove": ["Connection"]}, "hop-by-hop"),
    ({"set": {"X-A": "{nope}"}}, "unknown placeholder {nope}"),
    ({"set": {"X-A": "{upstream}"}}, "unknown placeholder {upstream}"),
])
def test_header_rules_that_would_forge_or_break_a_field_are_config_errors(rules, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(upstream("http://127.0.0.1:9", {"path": "/", "upstream": "app", "request_headers": rules}))


# --------------------------------------------------------------------------- redirects and rewrites


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_each_redirect_status_with_captures_and_the_query_kept(proxy, status) -> None:
    config = {"routes": [{"path": "/u", "match": {"path_regex": "^/u/(?P<id>[0-9]+)/(.*)$"},
                          "redirect": {"to": "https://new.example.com/users/${id}/$2{query}", "status": status}}]}
    p = proxy(config)
    answer, body = p.request("GET", "/u/42/posts?page=2&sort=new")
    assert answer.status == status and body == b""
    assert answer.getheader("Location") == "https://new.example.com/users/42/posts?page=2&sort=new"


def test_a_www_canonicalisation_redirect_keeps_path_and_query(proxy) -> None:
    p = proxy({"routes": [{"host": "www.example.com", "path": "/",
                           "redirect": {"to": "https://example.com{path}{query}", "status": 301}}]})
    answer, _ = p.request("GET", "/a/$1/{host}?b=1", headers={"Host": "www.example.com"})
    assert answer.getheader("Location") == "https://example.com/a/$1/{host}?b=1"  # what the path holds is kept as it is


def test_a_rewrite_after_strip_prefix_then_add_prefix(backends, proxy) -> None:
    backend = backends("A")
    route = {"path": "/shop", "upstream": "app", "strip_prefix": True,
             "rewrite": {"regex": "^/v1/(.*)$", "replace": "/api/v1/$1"}, "add_prefix": "/store"}
    p = proxy(upstream(backend.url, route))
    assert echoed(p.request("GET", "/shop/v1/items?id=3")[1])["path"] == "/store/api/v1/items?id=3"
    assert echoed(p.request("GET", "/shop/other")[1])["path"] == "/store/other"
    assert echoed(p.request("GET", "/shop")[1])["path"] == "/store/"


def test_a_rewrite_that_makes_no_path_is_a_400_and_bad_templates_are_config_errors(backends, proxy) -> None:
    backend = backends("A")
    route = {"path": "/", "upstream": "app", "rewrite": {"regex": "^/(x.*)$", "replace": "$1"}}
    p = proxy(upstream(backend.url, route))
    assert p.request("GET", "/xyz")[0].status == 400 and backend.seen.empty()
    for rewrite, message in (({"regex": "^/(a)$", "replace": "/b/$2"}, "no such group"),
                             ({"regex": "^/a$", "replace": "/b?c=1"}, "without query")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict(upstream(backend.url, {"path": "/", "upstream": "app", "rewrite": rewrite}))
    with pytest.raises(ConfigError, match="has no match.path_regex"):
        config_from_dict({"routes": [{"path": "/", "redirect": {"to": "/x/$1"}}]})


# --------------------------------------------------------------------------- error pages


def test_custom_error_pages_for_404_502_and_an_intercepted_503(tmp_path: Path, raw_backend, proxy) -> None:
    from conftest import read_request

    (tmp_path / "404.html").write_text("<h1>Lost</h1><style>p { color: red }</style>{request_id}")
    (tmp_path / "down.html").write_text("<h1>{status} {reason}</h1>id {request_id}")

    def script(conn) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 5\r\n\r\nbusy!")

    busy = raw_backend(script)
    config = {
        "upstreams": {"busy": {"servers": [busy.url]}, "dead": {"servers": ["http://127.0.0.1:9"]}},
        "errors": {404: str(tmp_path / "404.html")},
        "routes": [
            {"path": "/busy", "upstream": "busy", "errors": {"502-504": str(tmp_path / "down.html"), "intercept": True}},
            {"path": "/dead", "upstream": "dead", "errors": {"502-504": str(tmp_path / "down.html")}},
        ],
    }
    p = proxy(config)
    lost, body = p.request("GET", "/nowhere")
    rid = lost.getheader("X-Request-Id")
    assert lost.status == 404 and body.decode() == f"<h1>Lost</h1><style>p {{ color: red }}</style>{rid}"
    assert lost.getheader("Content-Type") == "text/html; charset=utf-8"
    dead, body = p.request("GET", "/dead")
    assert dead.status == 502 and body.decode() == f"<h1>502 Bad Gateway</h1>id {dead.getheader('X-Request-Id')}"
    busy_answer, body = p.request("GET", "/busy")
    assert busy_answer.status == 503 and body.startswith(b"<h1>503 Service Unavailable</h1>")
    assert busy_answer.getheader("Retry-After") == "7"
    as_json, body = p.request("GET", "/dead", headers={"Accept": "application/json"})
    assert json.loads(body) == {"status": 502, "error": "Bad Gateway", "detail": "upstream refused the connection",
                                "request_id": as_json.getheader("X-Request-Id")}


def test_redirects_static_answers_and_error_pages_are_counted_by_route(tmp_path: Path, proxy) -> None:
    (tmp_path / "404.html").write_text("lost")
    (tmp_path / "a.txt").write_text("a")
    config = {"admin": {"listen": "127.0.0.1:0"}, "errors": {404: str(tmp_path / "404.html")},
              "routes": [{"path": "/old", "redirect": {"to": "/new"}},
                         {"path": "/files", "static": {"root": str(tmp_path)}, "strip_prefix": True}]}
    p = proxy(config)
    for target in ("/old", "/old", "/files/a.txt", "/nothing"):
        p.request("GET", target)
    p.log_lines(at_least=4)
    assert p.app.stats.answers_snapshot() == {("*/old", "redirect"): 2, ("*/files", "static"): 1,
                                              ("-", "error_page"): 1}


def test_error_page_problems_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(upstream("http://127.0.0.1:9", {"path": "/", "upstream": "app", "errors": {
            404: str(tmp_path / "missing.html"), "302": str(tmp_path / "x.html"), "6xx": "x"}}))
    text = str(caught.value)
    assert "routes[0].errors.404: cannot read" in text and "routes[0].errors.302: error pages are for 4xx" in text
    assert "routes[0].errors.6xx: expected status codes" in text
