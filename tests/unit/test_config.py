"""Configuration: every error names its key path; the shipped default loads."""

from __future__ import annotations

import pytest

from simpleproxy.cli import shipped_config_path
from simpleproxy.config import config_from_dict, load_config, parse_config
from simpleproxy.errors import ConfigError
from simpleproxy.units import parse_address, parse_duration, parse_size

GOOD = {
    "listen": {"http": "127.0.0.1:8080"},
    "upstreams": {
        "api": {"servers": [{"url": "http://127.0.0.1:9001"}, {"url": "http://127.0.0.1:9002"}],
                "timeouts": {"connect": "2s", "read": "30s"}},
    },
    "routes": [{"host": "app.example.com", "path": "/api", "upstream": "api", "strip_prefix": True}],
}


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value.problems


def with_route(**route: object) -> dict:
    return {**GOOD, "routes": [{"upstream": "api", **route}]}


@pytest.mark.parametrize(
    "text, seconds",
    [("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), (3, 3.0), ("1.5s", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, size", [("16KiB", 16384), ("10MiB", 10485760), ("1GB", 10**9), (512, 512), ("2kb", 2000)])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["5 parsecs", "-1s", "fast", True, ""])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_addresses() -> None:
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address(":8080") == ("0.0.0.0", 8080)
    for bad in ("8080", "host:99999", "bad host:80"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_good_config_is_read_into_dataclasses() -> None:
    config = config_from_dict(GOOD)
    assert config.listen == (("127.0.0.1", 8080),)
    api = config.upstreams["api"]
    assert [s.port for s in api.servers] == [9001, 9002]
    assert api.timeouts.connect == 2.0 and api.timeouts.read == 30.0
    (route,) = config.routes
    assert (route.host, route.path, route.upstream, route.strip_prefix) == ("app.example.com", "/api", "api", True)


def test_unknown_upstream_suggests_the_close_name() -> None:
    assert problems(with_route(upstream="apii")) == ["routes[0].upstream: no upstream named 'apii' (did you mean 'api'?)"]


def test_unknown_keys_are_errors_at_every_level() -> None:
    data = {**GOOD, "lisen": {}, "routes": [{"upstream": "api", "pth": "/x"}]}
    data["upstreams"] = {"api": {"servers": [{"url": "http://a:1", "wieght": 2}], "timeouts": {"conect": "1s"}}}
    found = problems(data)
    assert "lisen: unknown key (did you mean 'listen'?)" in found
    assert "routes[0].pth: unknown key (did you mean 'path'?)" in found
    assert "upstreams.api.servers[0].wieght: unknown key (did you mean 'weight'?)" in found
    assert "upstreams.api.timeouts.conect: unknown key (did you mean 'connect'?)" in found


def test_every_error_is_reported_at_once() -> None:
    data = {
        "listen": {"http": "nowhere"},
        "upstreams": {"api": {"servers": [{"url": "ftp://x"}], "timeouts": {"read": "soon"}}},
        "routes": [{"upstream": "api", "path": "api"}],
    }
    found = problems(data)
    assert any(p.startswith("listen.http[0]: ") for p in found)
    assert any(p.startswith("upstreams.api.servers[0].url: ") and "http://" in p for p in found)
    assert any(p.startswith("upstreams.api.timeouts.read: ") for p in found)
    assert any(p.startswith("routes[0].path: ") for p in found)


@pytest.mark.parametrize(
    "url, words",
    [
        ("127.0.0.1:9001", "scheme"),
        ("http://", "no host"),
        ("http://a:1/base", "without a path"),
        ("http://user:pw@a:1", "credentials"),
        ("http://a:99999", "not a valid URL"),
    ],
)
def test_bad_server_urls(url: str, words: str) -> None:
    (found,) = problems({**GOOD, "upstreams": {"api": {"servers": [{"url": url}]}}})
    assert found.startswith("upstreams.api.servers[0].url: ") and words in found


def test_duplicate_routes_name_both_keys() -> None:
    data = {**GOOD, "routes": [{"path": "/a", "upstream": "api"}, {"path": "/b", "upstream": "api"},
                               {"path": "/a/", "upstream": "api"}]}
    assert problems(data) == ["routes[2]: same host, path as routes[0] (any host, path '/a'): it would never be reached"]


def test_route_needs_exactly_one_action() -> None:
    assert problems({**GOOD, "routes": [{"path": "/"}]}) == \
        ["routes[0]: a route needs one of 'upstream', 'respond', 'redirect' or 'static'"]
    both = problems(with_route(respond={"status": 200}))
    assert both == ["routes[0]: a route has one of upstream, respond, redirect or static; this one has upstream and respond"]


@pytest.mark.parametrize(
    "host, ok",
    [("App.Example.com", True), ("*.example.com", True), ("a.*.com", False), ("app.example.com:80", False), ("a b", False)],
)
def test_route_hosts(host: str, ok: bool) -> None:
    if ok:
        assert config_from_dict(with_route(host=host)).routes[0].host == host.lower()
    else:
        (found,) = problems(with_route(host=host))
        assert found.startswith("routes[0].host: ")


def test_route_paths_must_be_normal() -> None:
    (found,) = problems(with_route(path="/a/../b"))
    assert found == "routes[0].path: '/a/../b' is not in normal form; write '/b'"
    assert config_from_dict(with_route(path="/api/")).routes[0].path == "/api"


def test_wrong_types_are_named() -> None:
    found = problems({**GOOD, "server": {"threads": "many", "max_request_body": "huge"}, "routes": "everything"})
    assert "server.threads: expected a whole number from 1 to 1024, got 'many'" in found
    assert any(p.startswith("server.max_request_body: expected a size") for p in found)


def test_yaml_errors_give_the_position_and_duplicate_keys_fail() -> None:
    with pytest.raises(ConfigError, match=r"line 3, column 1: invalid YAML"):
        parse_config("routes:\n  - path: [unclosed\n")
    with pytest.raises(ConfigError, match="found the key 'routes' twice"):
        parse_config("routes: []\nroutes: []\n")


def test_a_missing_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.yaml")


def test_crlf_line_endings_parse(tmp_path) -> None:
    path = tmp_path / "windows.yaml"
    path.write_bytes(b"upstreams:\r\n  a:\r\n    servers: [http://127.0.0.1:1]\r\nroutes:\r\n  - upstream: a\r\n")
    assert load_config(path).routes[0].upstream == "a"


def test_the_shipped_default_configuration_loads() -> None:
    config = load_config(shipped_config_path())
    assert config.listen == (("127.0.0.1", 8080),)
    assert {route.path for route in config.routes} == {"/", "/app"}


def test_an_invalid_path_is_reported_once_not_as_a_duplicate_too() -> None:
    found = problems({**GOOD, "routes": [{"path": "/", "upstream": "api"}, {"path": "api", "upstream": "api"}]})
    assert found == ["routes[1].path: 'api': a path prefix starts with / and has no query"]


def test_a_misspelt_choice_gets_a_did_you_mean() -> None:
    found = problems({**GOOD, "upstreams": {"api": {**GOOD["upstreams"]["api"], "balance": "roundrobin"}}})
    assert found == ["upstreams.api.balance: expected one of round_robin, least_conn, random_two, first, hash, "
                     "got 'roundrobin' (did you mean 'round_robin'?)"]
