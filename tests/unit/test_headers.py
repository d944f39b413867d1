"""What crosses the proxy upstream, and what it says about the client."""

from __future__ import annotations

from simpleproxy.config import HeaderSettings
from simpleproxy.headers import ForwardingHeaders
from simpleproxy.units import parse_network
from simpleproxy.upstream.http1 import parse_head


def head(settings: HeaderSettings = HeaderSettings(), client: str = "192.0.2.9", **environ: str) -> dict[str, list[str]]:
    env = {"SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_METHOD": "GET", "HTTP_HOST": "site.example", **environ}
    raw = ForwardingHeaders(settings).request_head(
        env, "GET", "/p?q", "site.example", client, "http", env["HTTP_HOST"], 0
    ).decode("latin-1")
    lines = raw.split("\r\n")
    assert lines[0] == "GET /p?q HTTP/1.1" and raw.endswith("\r\n\r\n")
    fields: dict[str, list[str]] = {}
    for line in lines[1:-2]:
        name, _, value = line.partition(": ")
        fields.setdefault(name, []).append(value)
    return fields


def test_hop_by_hop_fields_and_those_connection_names_are_removed() -> None:
    fields = head(
        HTTP_CONNECTION="keep-alive, X-Internal", HTTP_X_INTERNAL="secret", HTTP_KEEP_ALIVE="300",
        HTTP_TE="trailers", HTTP_UPGRADE="websocket", HTTP_PROXY_AUTHORIZATION="Basic x",
        HTTP_PROXY_CONNECTION="keep-alive", HTTP_PROXY="http://evil", HTTP_EXPECT="100-continue",
        HTTP_X_KEPT="yes", CONTENT_TYPE="text/plain",
    )
    for gone in ("Connection", "X-Internal", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization",
                 "Proxy-Connection", "Proxy", "Expect"):
        assert gone not in fields, gone
    assert fields["X-Kept"] == ["yes"]
    assert fields["Content-Type"] == ["text/plain"]
    assert fields["Host"] == ["site.example"]


def test_an_untrusted_client_cannot_forge_forwarding_fields() -> None:
    fields = head(HTTP_X_FORWARDED_FOR="10.0.0.1", HTTP_X_FORWARDED_PROTO="https",
                  HTTP_X_FORWARDED_HOST="evil.example", HTTP_FORWARDED="for=10.0.0.1")
    assert fields["X-Forwarded-For"] == ["192.0.2.9"]
    assert fields["X-Forwarded-Proto"] == ["http"]
    assert fields["X-Forwarded-Host"] == ["site.example"]
    assert "Forwarded" not in fields


def test_a_trusted_proxy_chain_is_extended() -> None:
    settings = HeaderSettings(trusted_proxies=(parse_network("192.0.2.0/24"),), forwarded=True, via=True)
    fields = head(settings, HTTP_X_FORWARDED_FOR="203.0.113.5", HTTP_X_FORWARDED_PROTO="https",
                  HTTP_FORWARDED="for=203.0.113.5;proto=https", HTTP_VIA="1.1 edge")
    assert fields["X-Forwarded-For"] == ["203.0.113.5, 192.0.2.9"]
    assert fields["X-Forwarded-Proto"] == ["https"]
    assert fields["Forwarded"] == ["for=203.0.113.5;proto=https, for=192.0.2.9;proto=http;host=site.example"]
    assert fields["Via"] == ["1.1 edge, 1.1 simpleproxy"]


def test_forwarded_quotes_ipv6_and_ports() -> None:
    fields = head(HeaderSettings(forwarded=True), client="2001:db8::1", HTTP_HOST="site.example:8443")
    assert fields["Forwarded"] == ['for="[2001:db8::1]";proto=http;host="site.example:8443"']


def test_response_server_field_is_replaced_unless_passed() -> None:
    raw = b"HTTP/1.1 200 OK\r\nServer: gunicorn/21\r\nX-A: 1"
    default = ForwardingHeaders(HeaderSettings())
    head = parse_head(raw, "GET", default.response_fields)
    assert default.response_headers(head.headers) == [("X-A", "1")]
    passing = ForwardingHeaders(HeaderSettings(pass_server=True, via=True))
    head = parse_head(raw, "GET", passing.response_fields)
    assert passing.response_headers(head.headers) == [("Server", "gunicorn/21"), ("X-A", "1"), ("Via", "1.1 simpleproxy")]


def test_the_client_is_read_through_trusted_proxies_only() -> None:
    import ipaddress

    from simpleproxy.config import HeaderSettings
    from simpleproxy.headers import ForwardingHeaders

    h = ForwardingHeaders(HeaderSettings(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)))
    assert h.client_ip({"HTTP_X_FORWARDED_FOR": "1.1.1.1"}, "192.0.2.9") == "192.0.2.9"  # not trusted
    assert h.client_ip({"HTTP_X_FORWARDED_FOR": "6.6.6.6, 1.1.1.1, 10.0.0.2"}, "10.0.0.1") == "1.1.1.1"
    assert h.client_ip({"HTTP_X_FORWARDED_FOR": "10.0.0.3"}, "10.0.0.1") == "10.0.0.3"  # all trusted: the leftmost
    assert h.client_ip({"HTTP_X_FORWARDED_FOR": "1.1.1.1, garbage, 10.0.0.2"}, "10.0.0.1") == "10.0.0.2"
    assert h.client_ip({"HTTP_X_FORWARDED_FOR": "1.2.3.4:5678, [2001:db8::7]:80"}, "10.0.0.1") == "2001:db8::7"
    # X-Forwarded-For is the one read by default: a Forwarded a client sent through is not.
    assert h.client_ip({"HTTP_FORWARDED": "for=6.6.6.6"}, "10.0.0.1") == "10.0.0.1"
    f = ForwardingHeaders(HeaderSettings(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),),
                                         client_ip_header="forwarded"))
    assert f.client_ip({"HTTP_FORWARDED": 'for="[2001:db8::1]:4711";proto=https, for=10.0.0.2'}, "10.0.0.1") == "2001:db8::1"
    assert f.client_ip({"HTTP_FORWARDED": "for=192.0.2.60:8080;by=10.0.0.1"}, "10.0.0.1") == "192.0.2.60"
    assert f.client_ip({"HTTP_FORWARDED": "for=unknown"}, "10.0.0.1") == "10.0.0.1"
    assert f.client_ip({"HTTP_X_FORWARDED_FOR": "6.6.6.6"}, "10.0.0.1") == "10.0.0.1"
