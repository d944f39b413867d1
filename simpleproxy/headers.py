"""Which fields cross the proxy, and what it says about the client.

Hop-by-hop fields (RFC 9110 section 7.6.1) and every field a ``Connection``
header names are dropped in both directions. ``X-Forwarded-For``,
``-Proto``, ``-Host`` and ``Forwarded`` are rebuilt: a client's own values are
kept (and appended to) only when the direct peer is a configured trusted
proxy, otherwise a client could claim any address or scheme.

The request head is built as one string per request from the WSGI environ;
the environ-key to field-name translation is cached, since header names
repeat from one request to the next.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .config import HeaderSettings
from .grammar import HOP_BY_HOP, connection_keys, environ_key, field_name
from .memo import Memo
from .upstream.http1 import FIELD_ACTIONS

#: Request fields the proxy rebuilds or must not pass on, as WSGI environ keys.
_REBUILT = frozenset(
    (
        "HTTP_HOST", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
        "HTTP_FORWARDED", "HTTP_VIA",
        # set by the proxy from a verified client certificate, never taken from a client
        "HTTP_X_CLIENT_CERT_SUBJECT",
        # the proxy's own request id (a trusted proxy's, kept) is sent instead
        "HTTP_X_REQUEST_ID",
        # the user basic_auth verified, or none: a client cannot name itself
        "HTTP_X_FORWARDED_USER",
        # waitress already answered "100 Continue" and holds the whole body.
        "HTTP_EXPECT",
        # httpoxy: a "Proxy" field becomes HTTP_PROXY in CGI-style environments.
        "HTTP_PROXY",
    )
) | frozenset(f"HTTP_{name}" for name in ("X_REAL_IP", "TRUE_CLIENT_IP", "X_CLIENT_IP", "CF_CONNECTING_IP"))
#: Fields that name the client and that backends (and their frameworks) often believe: passed on
#: only from a trusted proxy, which wrote them; from anyone else a client could claim any address.
_CLIENT_FIELDS = (
    ("HTTP_TRUE_CLIENT_IP", "True-Client-IP"), ("HTTP_X_CLIENT_IP", "X-Client-IP"),
    ("HTTP_CF_CONNECTING_IP", "CF-Connecting-IP"),
)
_SKIP = _REBUILT | {environ_key(name) for name in HOP_BY_HOP}


def _forwarded_name(key: str) -> str | None:
    """``HTTP_X_API_KEY`` -> ``X-Api-Key``; None for keys that are not forwarded (Content-Length:
    the proxy frames the body it sends)."""
    if key.startswith("HTTP_") and key not in _SKIP and not key.startswith("HTTP_PROXY_"):
        return field_name(key)
    return "Content-Type" if key == "CONTENT_TYPE" else None


_names: Memo[str, str | None] = Memo(_forwarded_name)
# A server builds environs with the same keys in the same order for the same kind of
# request, so the list of forwarded (key, field name) pairs is memoised by key order.
_plans: Memo[tuple[str, ...], tuple[tuple[str, str], ...]] = Memo(
    lambda shape: tuple((key, name) for key in shape if (name := _names[key]) is not None), limit=1024
)


def _forwarded_for(element: str) -> str:
    """RFC 7239 ``for=`` of one element, without quotes ("" if none)."""
    for pair in element.split(";"):
        name, _, value = pair.strip().partition("=")
        if name.lower() == "for":
            return value.strip().strip('"')
    return ""


def _without_port(hop: str) -> str:
    """``1.2.3.4:5678`` and ``[2001:db8::1]:5678`` (as some balancers write them) -> the address."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    return hop.partition(":")[0] if hop.count(":") == 1 else hop


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ForwardingHeaders:
    """The per-configuration part of header handling: trust and options."""

    def __init__(self, settings: HeaderSettings) -> None:
        self.settings = settings
        self._trusted = settings.trusted_proxies
        #: how the response parser treats fields: ``Server`` dropped unless passed
        # A backend's X-Request-Id is dropped: the proxy sends the client its own, the same one
        # the backend received.
        fields = FIELD_ACTIONS | {"x-request-id": "drop"}
        self.response_fields = fields if settings.pass_server else fields | {"server": "drop"}
        self._trust_cache: Memo[str, bool] = Memo(self._trusts)

    def is_trusted(self, address: str) -> bool:
        return bool(self._trusted) and self._trust_cache[address]

    def _trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def client_ip(self, environ: dict[str, Any], peer: str) -> str:
        """The client's address: the peer's, or, when the peer is a trusted proxy, the first
        address in ``X-Forwarded-For`` (else in ``Forwarded``'s ``for=``), read from the right,
        that is not itself trusted."""
        if not self._trusted or not self.is_trusted(peer):
            return peer
        # One header only, the one the trusted proxies write: reading the other too would let a
        # client forge it through a proxy that passes it on untouched.
        if self.settings.client_ip_header == "forwarded":
            forwarded = environ.get("HTTP_FORWARDED")
            hops = [_forwarded_for(element) for element in forwarded.split(",")] if forwarded else []
        else:
            xff = environ.get("HTTP_X_FORWARDED_FOR")
            hops = xff.split(",") if xff else []
        client = peer
        for hop in reversed(hops):
            hop = _without_port(hop.strip())
            if not _is_address(hop):
                break  # garbage in the chain: trust nothing left of it
            client = hop
            if not self.is_trusted(hop):
                break  # the first address no trusted proxy vouches for is the client
        return client

    def request_head(
        self, environ: dict[str, Any], method: str, target: str, host: str, client: str,
        scheme: str, authority: str, body_length: int, request_id: str = "", client_ip: str = "", user: str = "",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        """The request line and fields sent upstream, ending with the blank line.

        ``client`` is the direct peer; ``client_ip`` the client the proxy trusts (the peer,
        or who a trusted proxy names), sent as ``X-Real-IP``.
        """
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
        if request_id:
            lines.append(f"X-Request-Id: {request_id}\r\n")
        if user:
            lines.append(f"X-Forwarded-User: {user}\r\n")
        for field, text in extra:
            lines.append(f"{field}: {text}\r\n")
        connection_named = environ.get("HTTP_CONNECTION")
        named = connection_keys(connection_named) if connection_named else ()
        for key, name in _plans[tuple(environ)]:
            if key not in named:
                lines.append(f"{name}: {environ[key]}\r\n")

        trusted = self.is_trusted(client)
        real_ip = (trusted and environ.get("HTTP_X_REAL_IP")) or client_ip or client
        lines.append(f"X-Real-IP: {real_ip}\r\n")
        if trusted:
            for key, name in _CLIENT_FIELDS:
                value = environ.get(key)
                if value is not None:
                    lines.append(f"{name}: {value}\r\n")
        prior_for = environ.get("HTTP_X_FORWARDED_FOR") if trusted else None
        lines.append(f"X-Forwarded-For: {prior_for}, {client}\r\n" if prior_for else f"X-Forwarded-For: {client}\r\n")
        lines.append(f"X-Forwarded-Proto: {(trusted and environ.get('HTTP_X_FORWARDED_PROTO')) or scheme}\r\n")
        if authority:
            lines.append(f"X-Forwarded-Host: {(trusted and environ.get('HTTP_X_FORWARDED_HOST')) or authority}\r\n")
        settings = self.settings
        if settings.forwarded:
            lines.append(f"Forwarded: {self._forwarded(environ, trusted, client, scheme, authority)}\r\n")
        subject = environ.get("SSL_CLIENT_S_DN")
        if subject is not None:
            lines.append(f"X-Client-Cert-Subject: {subject}\r\n")
        if settings.via:
            prior_via = environ.get("HTTP_VIA")
            ours = f"{environ.get('SERVER_PROTOCOL', 'HTTP/1.1')[5:]} simpleproxy"
            lines.append(f"Via: {prior_via}, {ours}\r\n" if prior_via else f"Via: {ours}\r\n")
        if body_length > 0 or environ.get("CONTENT_LENGTH"):
            lines.append(f"Content-Length: {max(body_length, 0)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    @staticmethod
    def _forwarded(environ: dict[str, Any], trusted: bool, client: str, scheme: str, authority: str) -> str:
        """RFC 7239: ``for=`` (IPv6 quoted and bracketed), ``proto=``, ``host=``."""
        node = f'"[{client}]"' if ":" in client else client or "unknown"
        element = f"for={node};proto={scheme}"
        if authority:
            element += f';host="{authority}"' if ":" in authority else f";host={authority}"
        prior = environ.get("HTTP_FORWARDED") if trusted else None
        return f"{prior}, {element}" if prior else element

    def response_headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Add ``Via`` to a response's end-to-end fields if configured."""
        if self.settings.via:
            headers.append(("Via", "1.1 simpleproxy"))
        return headers
