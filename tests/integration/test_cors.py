"""cors on real sockets: preflights answered at the edge, allow fields for allowed origins only."""

from __future__ import annotations

import base64
from typing import Any

import bcrypt
import pytest

from conftest import single_upstream
from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError

API = {"origins": ["https://app.example.com", "https://*.example.org"], "methods": ["GET", "POST", "PUT", "DELETE"],
       "headers": ["Content-Type", "X-Api-Key"], "expose": ["X-Request-Id"], "credentials": True, "max_age": "1h"}


def preflight(p: Any, origin: str, method: str = "PUT", fields: str = "content-type, x-api-key") -> Any:
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if fields:
        headers["Access-Control-Request-Headers"] = fields
    return p.request("OPTIONS", "/api/items", headers=headers)[0]


def test_an_allowed_preflight_is_answered_at_the_edge(backends, proxy) -> None:
    backend = backends()
    p = proxy({**single_upstream(backend.url), "cors": API})
    answer = preflight(p, "https://app.example.com")
    assert answer.status == 204 and backend.seen.empty()
    assert answer.getheader("Access-Control-Allow-Origin") == "https://app.example.com"
    assert answer.getheader("Access-Control-Allow-Methods") == "GET, POST, PUT, DELETE"
    assert answer.getheader("Access-Control-Allow-Headers") == "content-type, x-api-key"
    assert answer.getheader("Access-Control-Allow-Credentials") == "true"
    assert answer.getheader("Access-Control-Max-Age") == "3600"
    assert "Origin" in answer.getheader("Vary")


@pytest.mark.parametrize(("origin", "method", "fields"), [
    ("https://evil.example.com", "PUT", ""),  # not listed
    ("http://app.example.com", "PUT", ""),  # another scheme is another origin
    ("https://app.example.com:8443", "PUT", ""),  # and another port
    ("https://example.org", "PUT", ""),  # *.example.org needs a subdomain
    ("https://app.example.com", "PATCH", ""),  # method not allowed
    ("https://app.example.com", "PUT", "x-secret"),  # field not allowed
])
def test_a_refused_preflight_gets_403_without_allow_fields(backends, proxy, origin, method, fields) -> None:
    backend = backends()
    p = proxy({**single_upstream(backend.url), "cors": API})
    answer = preflight(p, origin, method, fields)
    assert answer.status == 403 and answer.getheader("Access-Control-Allow-Origin") is None and backend.seen.empty()


def test_actual_responses_carry_the_fields_for_allowed_origins_only(backends, proxy) -> None:
    backend = backends()
    p = proxy({**single_upstream(backend.url), "cors": API})
    allowed, _ = p.request("GET", "/api/items", headers={"Origin": "https://a.b.example.org"})  # wildcard subdomain
    assert allowed.status == 200 and allowed.getheader("Access-Control-Allow-Origin") == "https://a.b.example.org"
    assert allowed.getheader("Access-Control-Allow-Credentials") == "true"
    assert allowed.getheader("Access-Control-Expose-Headers") == "x-request-id"
    other, _ = p.request("GET", "/api/items", headers={"Origin": "https://evil.example"})
    assert other.status == 200 and other.getheader("Access-Control-Allow-Origin") is None  # the browser hides it
    plain, _ = p.request("GET", "/api/items")
    for answer in (allowed, other, plain):
        assert "Origin" in answer.getheader("Vary")  # what a shared cache needs to keep them apart


def test_any_origin_without_credentials_is_a_star_and_errors_carry_the_fields(backends, proxy) -> None:
    backend = backends()
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    p = proxy({**single_upstream(backend.url), "cors": {"origins": ["*"]}, "basic_auth": {"users": {"a": hashed}}})
    answer = preflight(p, "https://anyone.example", "GET", "")  # no credentials on a preflight: not a 401
    assert answer.status == 204 and answer.getheader("Access-Control-Allow-Origin") == "*"
    refused, _ = p.request("GET", "/", headers={"Origin": "https://anyone.example"})
    assert refused.status == 401 and refused.getheader("Access-Control-Allow-Origin") == "*"  # the page can read why
    login = {"Authorization": "Basic " + base64.b64encode(b"a:pw").decode(), "Origin": "https://x.example"}
    assert p.request("GET", "/", headers=login)[0].getheader("Access-Control-Allow-Origin") == "*"


def test_a_backends_own_cors_fields_are_replaced_not_doubled(raw_backend, proxy) -> None:
    def script(conn: Any) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 2\r\n\r\nok")

    backend = raw_backend(script)
    p = proxy({**single_upstream(f"http://127.0.0.1:{backend.port}"), "cors": API})
    answer, _ = p.request("GET", "/", headers={"Origin": "https://app.example.com"})
    assert answer.headers.get_all("Access-Control-Allow-Origin") == ["https://app.example.com"]


@pytest.mark.parametrize(("cors", "words"), [
    ({"origins": ["*"], "credentials": True}, 'cors.origins: "*" cannot go with credentials'),
    ({"origins": ["https://a.example/path"]}, "is not an origin"),
    ({"methods": ["GET"]}, "cors.origins: give origins"),
    ({"origins": []}, "cors.origins: give origins"),
    ({"origins": ["https://*.com"]}, "a wildcard needs a domain under it"),
    ({"origins": ["*"], "max_age": ".inf"}, "cors.max_age"),
    ({"origins": ["*", "https://a.example"]}, '"*" stands alone'),
])
def test_configuration_errors(cors, words) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"cors": cors, "routes": [{"respond": {}}]})
    assert words in str(error.value)


def test_any_origin_without_credentials_answers_star_even_without_an_origin(backends, proxy) -> None:
    backend = backends()
    p = proxy({**single_upstream(backend.url), "cors": {"origins": ["*"]}})
    answer, _ = p.request("GET", "/")  # a copy a cache keeps must serve every page's later fetch
    assert answer.getheader("Access-Control-Allow-Origin") == "*" and "Origin" not in (answer.getheader("Vary") or "")
