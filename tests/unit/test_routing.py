"""Route table: host picks the site (exact > wildcard > any), longest prefix within it."""

from __future__ import annotations

import pytest

from simpleproxy.config import config_from_dict
from simpleproxy.errors import NoRoute
from simpleproxy.routing import Route, RouteTable


def table(*routes: dict) -> RouteTable:
    config = config_from_dict({"upstreams": {"u": {"servers": ["http://127.0.0.1:1"]}},
                               "routes": [{"upstream": "u", **r} for r in routes]})
    return RouteTable(Route(rc, handler=lambda request: None) for rc in config.routes)


def key(t: RouteTable, host: str, path: str) -> str:
    return t.match(host, path).config.key


def test_exact_beats_wildcard_beats_any_host() -> None:
    t = table({"host": "api.example.com"}, {"host": "*.example.com"}, {})
    assert key(t, "api.example.com", "/") == "routes[0]"
    assert key(t, "www.example.com", "/") == "routes[1]"
    assert key(t, "deep.www.example.com", "/") == "routes[1]"
    assert key(t, "example.com", "/") == "routes[2]"  # "*.example.com" needs a label before it
    assert key(t, "other.org", "/") == "routes[2]"


def test_the_most_specific_wildcard_wins() -> None:
    t = table({"host": "*.example.com"}, {"host": "*.eu.example.com"})
    assert key(t, "a.eu.example.com", "/") == "routes[1]"
    assert key(t, "a.us.example.com", "/") == "routes[0]"


def test_longest_prefix_on_segment_boundaries() -> None:
    t = table({"path": "/"}, {"path": "/api"}, {"path": "/api/v2"})
    assert key(t, "h", "/api") == "routes[1]"
    assert key(t, "h", "/api/x") == "routes[1]"
    assert key(t, "h", "/api/v2/users") == "routes[2]"
    assert key(t, "h", "/apix") == "routes[0]"
    assert key(t, "h", "/api/v20") == "routes[1]"


def test_a_host_site_does_not_fall_through_to_other_sites() -> None:
    t = table({"host": "a.example.com", "path": "/only"}, {"path": "/"})
    with pytest.raises(NoRoute):
        t.match("a.example.com", "/other")
    assert key(t, "b.example.com", "/other") == "routes[1]"


def test_no_route_is_404() -> None:
    t = table({"host": "a.example.com"})
    with pytest.raises(NoRoute) as info:
        t.match("b.example.com", "/")
    assert info.value.status == 404


def test_strip_prefix() -> None:
    t = table({"path": "/api", "strip_prefix": True}, {"path": "/keep"})
    api = t.match("h", "/api/users")
    assert api.upstream_path("/api/users") == "/users"
    assert api.upstream_path("/api") == "/"
    assert t.match("h", "/keep/x").upstream_path("/keep/x") == "/keep/x"
