"""``simpleproxy route``: the explanation follows the proxy's own reading of a request."""

from __future__ import annotations

import pytest

from simpleproxy.config import config_from_dict
from simpleproxy.explain import explain

CONFIG = config_from_dict({
    "upstreams": {
        "app": {"servers": ["http://127.0.0.1:9001", {"url": "http://127.0.0.1:9002", "weight": 2}],
                "balance": "hash", "hash_on": "header:X-User"},
        "web": {"servers": ["http://127.0.0.1:9003"], "sticky": {"cookie": "sp"}, "timeouts": {"read": "30s"}},
    },
    "routes": [
        {"host": "app.example.com", "path": "/api", "upstream": "app", "strip_prefix": True,
         "cache": {"max_ttl": "1h", "query": False}, "timeouts": {"total": "5s"}},
        {"host": "*.example.com", "upstream": "web"},
        {"path": "/", "respond": {"status": 204}},
    ],
})


def test_a_forwarded_request_shows_route_upstream_path_and_cache() -> None:
    status, text = explain(CONFIG, "http://App.Example.com/api/users/../v2?id=1", "GET", {"X-User": "u1"})
    assert status == 0
    assert "request   host 'app.example.com', path '/api/v2', query '?id=1'" in text
    assert "route     routes[0]: exact host app.example.com, path prefix /api" in text
    assert "upstream  app: hash on header:X-User over http://127.0.0.1:9001, http://127.0.0.1:9002 (weight 2)" in text
    assert "forwarded GET /v2?id=1 (path changed by the route), Host: App.Example.com" in text
    assert "timeouts  connect 5s, read 60s, total 5s" in text
    assert "key http://app.example.com/api/v2;" in text  # query: false


def test_unsafe_methods_show_invalidation_and_retry_rules() -> None:
    _, text = explain(CONFIG, "http://app.example.com/api/x", "POST")
    assert "POST is not stored; a 2xx or 3xx answer invalidates the URL" in text
    assert "retries   2 on other servers (not for POST)" in text


def test_wildcards_sticky_cookies_and_local_answers() -> None:
    _, text = explain(CONFIG, "http://shop.example.com/cart", "GET", {"Cookie": "sp=abc"})
    assert "route     routes[1]: wildcard *.example.com" in text and "cookie sp (sent, but names no server here" in text
    assert "cache     off for this route" in text
    assert explain(CONFIG, "http://elsewhere/", "GET")[0] == 204


@pytest.mark.parametrize(("url", "status", "words"), [
    ("http://app.example.com/api/%zz", 400, "malformed percent-escape"),
    ("http://bad host/", 400, "invalid Host header"),
])
def test_requests_the_proxy_would_refuse(url, status, words) -> None:
    got, text = explain(CONFIG, url)
    assert got == status and words in text and "no backend is asked" in text


def test_the_waf_verdict_is_the_filters_own() -> None:
    config = config_from_dict({"upstreams": {"app": {"servers": ["http://127.0.0.1:9"]}},
                               "routes": [{"upstream": "app", "waf": {"baseline": True}}]})
    status, text = explain(config, "http://h/.git/config")
    assert status == 403 and "refused by baseline-scanners (403)" in text
    assert "waf       5 rules (baseline-path-traversal" in explain(config, "http://h/ok")[1]


def test_the_cache_key_shown_is_the_routes_own() -> None:
    config = config_from_dict({"upstreams": {"app": {"servers": ["http://127.0.0.1:9"]}}, "routes": [
        {"upstream": "app", "cache": {"key": {"ignore_query": ["utm_*"], "sort_query": True,
                                              "include_headers": ["X-Tenant"], "include_cookies": ["lang"]}}}]})
    text = explain(config, "http://h/p?z=1&utm_medium=x&a=2")[1]
    assert "key http://h/p?a=2&z=1; also varies on x-tenant, cookie:lang;" in text
