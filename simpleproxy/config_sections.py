"""Readers for the optional sections: the HTTPS listener, admin, cache, rate limits, access, WAF, bots.

Each takes a :class:`~simpleproxy.config_walk.Section` and returns its
dataclass, naming every problem by key path; :mod:`.config_read` calls them.
"""

from __future__ import annotations

import re
import ssl
from urllib.parse import urlsplit

from .config import (
    AccessRules,
    AdminSettings,
    BotSettings,
    CacheKey,
    CacheSettings,
    Certificate,
    HTTPSListener,
    RateLimit,
    RouteCache,
    RouteConfig,
    UpstreamServer,
    WAFRule,
    WAFSettings,
)
from .config_walk import (
    Section,
    Walker,
    int_between,
    network_list,
    one_of,
    read_addresses,
    to_bool,
    to_positive_duration,
    to_readable_file,
    to_statuses,
    to_text,
    token_list,
)
from .errors import CertificateError
from .ratelimit.bucket import parse_rate
from .units import is_valid_host, parse_address, parse_duration, parse_share, parse_size


def read_https(s: Section) -> HTTPSListener | None:
    addresses = read_addresses(s, "address")
    if not s.has("address"):
        s.walker.error(s.key("address"), "an HTTPS listener needs an address (host:port)")
    certificates = []
    for key, item in s.items("certificates"):
        c = Section(s.walker, item, key)
        certificates.append(Certificate(
            cert=c.get("cert", to_readable_file, ""),
            key=c.get("key", to_readable_file, None),
            chain=c.get("chain", to_readable_file, None),
            password=c.get("password", str, None),
        ))
        if not c.has("cert"):
            s.walker.error(c.key("cert"), "each certificate needs a cert file")
        c.done()
    if not certificates:
        s.walker.error(s.key("certificates"), "an HTTPS listener needs at least one certificate")
    d = HTTPSListener((), ())
    listener = HTTPSListener(
        addresses=tuple(addresses),
        certificates=tuple(certificates),
        min_version=s.get("min_version", _tls_version, d.min_version),
        handshake_timeout=s.get("handshake_timeout", to_positive_duration, d.handshake_timeout),
        max_handshakes=s.get("max_handshakes", int_between(1, 100_000), d.max_handshakes),
        client_auth=s.get("client_auth", one_of("off", "optional", "required"), d.client_auth),
        client_ca=s.get("client_ca", to_readable_file, None),
        reload_interval=s.get("reload_interval", parse_duration, d.reload_interval),
    )
    if listener.client_auth != "off" and not listener.client_ca:
        s.walker.error(s.key("client_ca"), f"client_auth: {listener.client_auth} needs a CA bundle to verify against")
    if listener.client_ca and listener.client_auth == "off":
        s.walker.error(s.key("client_auth"), "client_ca is given: say optional or required")
    s.done()
    if not addresses or not certificates or any(not c.cert for c in certificates):
        return None
    from .tls.certs import load_certificate  # loads now: a bad file names its key

    for i, cert in enumerate(certificates):
        try:
            load_certificate(listener, cert, s.key(f"certificates[{i}]"))
        except CertificateError as exc:
            s.walker.error(exc.key, str(exc))
        except ssl.SSLError as exc:  # the client CA bundle
            s.walker.error(s.key("client_ca"), f"not a PEM CA bundle ({getattr(exc, 'reason', None) or exc})")
            break
    return listener


def _tls_version(value: object) -> str:
    text = str(value)
    if text not in ("1.2", "1.3"):
        raise ValueError(f"expected 1.2 or 1.3, got {value!r}")
    return text


def check_tls_routes(walker: Walker, https: HTTPSListener | None, routes: tuple[RouteConfig, ...]) -> None:
    for route in routes:
        if https is None and (route.redirect_https or route.hsts is not None or route.client_cert is not None):
            walker.error(route.key, "redirect_https, hsts and client_cert need a listen.https listener")
        elif route.client_cert is not None and https is not None and https.client_auth == "off":
            walker.error(f"{route.key}.client_cert", "needs listen.https.client_auth: optional or required")


def read_rate_limit(s: Section) -> RateLimit | None:
    d = RateLimit("", 1.0, "")
    rate_text = s.get("rate", to_text, "")
    rate = 0.0
    if not s.has("rate"):
        s.walker.error(s.key("rate"), "a rate limit needs a rate, like 100/s or 6000/min")
    elif rate_text:
        try:
            rate = parse_rate(rate_text)
        except ValueError as exc:
            s.walker.error(s.key("rate"), str(exc))
    store = s.get("store", _limit_store, d.store)
    limit = RateLimit(
        where=s.path,
        rate=rate,
        rate_text=rate_text,
        burst=s.get("burst", int_between(1, 10_000_000), d.burst),
        key=s.get("key", _limit_key, d.key),
        mode=s.get("mode", one_of("reject", "delay"), d.mode),
        max_delay=s.get("max_delay", to_positive_duration, d.max_delay),
        store=store,
        on_store_error=s.get("on_store_error", one_of("allow", "deny"), d.on_store_error),
        max_keys=s.get("max_keys", int_between(100, 100_000_000), d.max_keys),
    )
    if limit.max_delay > 60:
        s.walker.error(s.key("max_delay"), "a request held for more than a minute holds a worker thread that long")
    s.done()
    return limit if rate else None


def _limit_store(value: object) -> str:
    text = to_text(value)
    if text == "memory":
        return text
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"expected memory or redis://host:port/db, got {value!r}")
    try:
        from redis.connection import parse_url  # the 'redis' extra
    except ImportError:
        raise ValueError("a Redis store needs the redis extra: pip install 'simpleproxy[redis]'") from None
    try:
        parse_url(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a Redis URL ({exc})") from None
    return text


def _limit_key(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    parts = []
    for item in items:
        text = to_text(item)
        if text not in ("client_ip", "host", "route") and not re.fullmatch(r"header:[A-Za-z0-9_-]+", text):
            raise ValueError(f"expected client_ip, host, route, header:NAME or a list of them, got {item!r}")
        parts.append(text)
    return tuple(parts)


def read_access(s: Section) -> AccessRules:
    allow, deny = network_list(s, "allow"), network_list(s, "deny")
    if not s.has("allow") and not s.has("deny"):
        s.walker.error(s.path, "give allow, deny or both (lists of addresses or CIDR networks)")
    s.done()
    return AccessRules(allow, deny)


def _patterns(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        try:
            re.compile(to_text(item))
        except re.error as exc:
            raise ValueError(f"{item!r} does not compile ({exc})") from None
    return tuple(str(item) for item in items)


def read_bots(s: Section) -> BotSettings:
    d = BotSettings()
    ban = s.section("ban")
    settings = BotSettings(
        deny_agents=s.get("deny_agents", _patterns, d.deny_agents),
        allow_agents=s.get("allow_agents", _patterns, d.allow_agents),
        require_user_agent=s.get("require_user_agent", to_bool, d.require_user_agent),
        require_host=s.get("require_host", to_bool, d.require_host),
        ban_after=ban.get("after", int_between(1, 1_000_000), d.ban_after),
        ban_window=ban.get("window", to_positive_duration, d.ban_window),
        ban_for=ban.get("for", to_positive_duration, d.ban_for),
        ban_statuses=ban.get("statuses", to_statuses, d.ban_statuses),
        max_tracked=ban.get("max_tracked", int_between(100, 100_000_000), d.max_tracked),
    )
    if s.has("ban") and not ban.has("after"):
        s.walker.error(ban.key("after"), "a ban needs a count: after how many bad answers")
    ban.done()
    s.done()
    return settings


def read_waf(s: Section) -> WAFSettings:
    from .security.waf import compile_condition  # compiled now so that a bad rule names its key

    rules = []
    names: set[str] = set()
    for key, item in s.items("rules"):
        r = Section(s.walker, item, key)
        name = r.get("name", to_text, "")
        if not r.has("name"):
            s.walker.error(r.key("name"), "each rule needs a name (it is logged when the rule acts)")
        elif name in names:
            s.walker.error(r.key("name"), f"{name!r} names two rules")
        names.add(name)
        action = r.get("action", one_of("deny", "allow", "log"), "deny")
        r.taken.add("match")
        if not r.has("match"):
            s.walker.error(r.key("match"), "each rule needs a match condition")
        else:
            try:
                compile_condition(r.data["match"], r.key("match"))
            except ValueError as exc:
                s.walker.error("", str(exc))
            else:
                rules.append(WAFRule(name, r.data["match"], action))
        r.done()
    settings = WAFSettings(tuple(rules), s.get("baseline", to_bool, False))
    s.done()
    return settings


def read_admin(s: Section) -> AdminSettings:
    listen = s.get("listen", parse_address, None)
    token = s.get("token", to_text, None)
    if token is not None and len(token) < 16:
        s.walker.error(s.key("token"), "use at least 16 characters (a random one: python -c 'import secrets; print(secrets.token_urlsafe())')")
    if s.has("token") and listen is None and not s.has("listen"):
        s.walker.error(s.key("listen"), "a token needs an admin listener address")
    s.done()
    return AdminSettings(listen, token)


def read_cache(s: Section) -> CacheSettings:
    d = CacheSettings()
    settings = CacheSettings(
        max_size=s.get("max_size", parse_size, d.max_size),
        max_object=s.get("max_object", parse_size, d.max_object),
        lock_timeout=s.get("lock_timeout", to_positive_duration, d.lock_timeout),
        tag_fields=token_list(s, "tag_fields", "a field name") if s.has("tag_fields") else d.tag_fields,
        pass_tags=s.get("pass_tags", to_bool, d.pass_tags),
    )
    if settings.max_object > settings.max_size:
        s.walker.error(s.key("max_object"), f"is larger than {s.key('max_size')}")
    s.done()
    return settings


def read_route_cache(s: Section) -> RouteCache | None:
    """A route's ``cache:`` mapping, which may say ``enabled: false``."""
    d = RouteCache()
    enabled = s.get("enabled", to_bool, True)
    cache = RouteCache(
        max_size=s.get("max_size", parse_size, d.max_size),
        max_ttl=s.get("max_ttl", to_positive_duration, d.max_ttl),
        default_ttl=s.get("default_ttl", parse_duration, d.default_ttl),
        query=s.get("query", to_bool, d.query),
        stale_if_error=s.get("stale_if_error", parse_duration, d.stale_if_error),
        key=_read_cache_key(s.section("key")) if s.has("key") else d.key,
        heuristic=s.get("heuristic", parse_share, d.heuristic),
        max_heuristic=s.get("max_heuristic", parse_duration, d.max_heuristic),
    )
    s.done()
    return cache if enabled else None


def _read_cache_key(s: Section) -> CacheKey:
    globs = tuple(str(value) for _, value in s.items("ignore_query"))
    key = CacheKey(ignore_query=globs, sort_query=s.get("sort_query", to_bool, False),
                   include_headers=token_list(s, "include_headers", "a field name"),
                   include_cookies=token_list(s, "include_cookies", "a cookie name", str))
    s.done()
    return key


def check_cache_shares(walker: Walker, cache: CacheSettings, routes: tuple[RouteConfig, ...]) -> None:
    shares = [(route.key, route.cache.max_size) for route in routes if route.cache and route.cache.max_size]
    total = sum(size for _, size in shares)
    if total > cache.max_size:
        walker.error(f"{shares[-1][0]}.cache.max_size", f"the routes' shares add up to more than cache.max_size ({cache.max_size} bytes)")
    elif total == cache.max_size and any(route.cache and not route.cache.max_size for route in routes):
        walker.error("cache.max_size", "the routes' own shares leave nothing for the routes that share the rest")


def parse_server_url(url: str, weight: int = 1) -> UpstreamServer:
    """``scheme://host:port`` of one upstream server (ws:// and wss:// name the same servers)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL ({exc})") from None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)  # the same servers, named for WebSocket
    if scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the scheme must be http://, https://, ws:// or wss://")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.username or parts.password:
        raise ValueError(f"{url!r}: credentials in a server URL are not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a server URL is scheme://host:port only, without a path")
    host = parts.hostname
    if not is_valid_host(f"[{host}]" if ":" in host else host):
        raise ValueError(f"{url!r}: {host!r} is not a host name or IP address")
    return UpstreamServer(url, scheme, host, port or (443 if scheme == "https" else 80), weight)
