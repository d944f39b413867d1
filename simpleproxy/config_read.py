"""The configuration schema: one reader per section, building the dataclasses of :mod:`.config`."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from .config import (
    DEFAULT_LISTEN,
    AccessRules,
    AdminSettings,
    BotSettings,
    CacheSettings,
    Certificate,
    Config,
    HeaderSettings,
    HealthCheck,
    HTTPSListener,
    LogSettings,
    PassiveHealth,
    Respond,
    RateLimit,
    RetryPolicy,
    RouteCache,
    RouteConfig,
    ServerSettings,
    WAFRule,
    WAFSettings,
    Timeouts,
    UpstreamConfig,
    UpstreamServer,
    UpstreamTLS,
)
from .config_walk import (
    Section,
    Walker,
    did_you_mean,
    int_between,
    one_of,
    to_access_target,
    to_bool,
    to_positive_duration,
    to_text,
)
from .errors import ConfigError
from .ratelimit.bucket import parse_rate
from .request import normalize_path
from .units import is_valid_host, parse_address, parse_duration, parse_network, parse_size
from .upstream.balance import POLICIES


def read_config(data: object, source: str) -> Config:
    """Validate a parsed mapping; raise :class:`ConfigError` listing every problem."""
    walker = Walker()
    config = _read_config(Section(walker, data, ""), source)
    if walker.problems:
        raise ConfigError(walker.problems, source)
    return config



def _read_config(root: Section, source: str) -> Config:
    listen, https = _read_listen(root.section("listen"))
    server = _read_server(root.section("server"))
    headers = _read_headers(root.section("headers"))
    log = _read_log(root.section("log"))
    cache = _read_cache(root.section("cache"))
    admin = _read_admin(root.section("admin"))
    rate_limit = _read_rate_limit(root.section("rate_limit")) if root.has("rate_limit") else None
    root.taken.add("rate_limit")
    access = _read_access(root.section("access")) if root.has("access") else None
    root.taken.add("access")
    waf = _read_waf(root.section("waf")) if root.has("waf") else None
    root.taken.add("waf")
    bots = _read_bots(root.section("bots")) if root.has("bots") else None
    root.taken.add("bots")
    upstreams: dict[str, UpstreamConfig] = {}
    ups = root.section("upstreams")
    for name in ups.data:
        ups.taken.add(name)
        upstream = _read_upstream(Section(root.walker, ups.data[name], ups.key(str(name))), str(name))
        if upstream is not None:
            upstreams[str(name)] = upstream
    ups.done()
    routes = tuple(
        route
        for key, item in root.items("routes")
        if (route := _read_route(Section(root.walker, item, key), ups.data)) is not None
    )
    if not root.has("routes"):
        root.walker.error("routes", "at least one route is needed")
    _check_duplicate_routes(root.walker, routes)
    _check_cache_shares(root.walker, cache, routes)
    _check_tls_routes(root.walker, https, routes)
    root.done()
    return Config(
        listen=listen, https=https, server=server, headers=headers, log=log, cache=cache, admin=admin,
        rate_limit=rate_limit, access=access, waf=waf, bots=bots, upstreams=upstreams,
        routes=routes, source=source,
    )


def _addresses(section: Section, name: str) -> list[tuple[str, int]]:
    addresses = []
    for key, value in section.items(name):
        try:
            addresses.append(parse_address(value))
        except ValueError as exc:
            section.walker.error(key, str(exc))
    if section.data.get(name) == []:
        section.walker.error(section.key(name), "give at least one host:port")
    if len(set(addresses)) != len(addresses):
        section.walker.error(section.key(name), "the same address is listed twice")
    return addresses


def _read_listen(section: Section) -> tuple[tuple[tuple[str, int], ...], HTTPSListener | None]:
    addresses = _addresses(section, "http")
    https = _read_https(section.section("https")) if section.has("https") else None
    section.taken.add("https")
    if https is not None and {a for a in https.addresses if a[1]} & set(addresses or [DEFAULT_LISTEN]):
        section.walker.error(section.key("https.address"), "is also a plain HTTP address")
    section.done()
    return tuple(addresses) or (DEFAULT_LISTEN,), https


def _read_https(s: Section) -> HTTPSListener | None:
    addresses = _addresses(s, "address")
    if not s.has("address"):
        s.walker.error(s.key("address"), "an HTTPS listener needs an address (host:port)")
    certificates = []
    for key, item in s.items("certificates"):
        c = Section(s.walker, item, key)
        certificates.append(Certificate(
            cert=c.get("cert", _readable_file, ""),
            key=c.get("key", _readable_file, None),
            chain=c.get("chain", _readable_file, None),
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
        client_ca=s.get("client_ca", _readable_file, None),
        reload_interval=s.get("reload_interval", parse_duration, d.reload_interval),
    )
    if listener.client_auth != "off" and not listener.client_ca:
        s.walker.error(s.key("client_ca"), f"client_auth: {listener.client_auth} needs a CA bundle to verify against")
    if listener.client_ca and listener.client_auth == "off":
        s.walker.error(s.key("client_auth"), "client_ca is given: say optional or required")
    s.done()
    if not addresses or not certificates or any(not c.cert for c in certificates):
        return None
    from .tls.certs import CertificateError, load_certificate  # loads now: a bad file names its key

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


def _check_tls_routes(walker: Walker, https: HTTPSListener | None, routes: tuple[RouteConfig, ...]) -> None:
    for route in routes:
        if https is None and (route.redirect_https or route.hsts is not None or route.client_cert is not None):
            walker.error(route.key, "redirect_https, hsts and client_cert need a listen.https listener")
        elif route.client_cert is not None and https is not None and https.client_auth == "off":
            walker.error(f"{route.key}.client_cert", "needs listen.https.client_auth: optional or required")


def _read_server(s: Section) -> ServerSettings:
    d = ServerSettings()
    settings = ServerSettings(
        threads=s.get("threads", int_between(1, 1024), d.threads),
        connection_limit=s.get("connection_limit", int_between(1, 1_000_000), d.connection_limit),
        channel_timeout=s.get("channel_timeout", to_positive_duration, d.channel_timeout),
        backlog=s.get("backlog", int_between(1, 65535), d.backlog),
        max_request_body=s.get("max_request_body", parse_size, d.max_request_body),
        max_request_header=s.get("max_request_header", parse_size, d.max_request_header),
        max_uri=s.get("max_uri", parse_size, d.max_uri),
        header_timeout=s.get("header_timeout", to_positive_duration, d.header_timeout),
        max_connections_per_client=s.get("max_connections_per_client", int_between(0, 1_000_000), d.max_connections_per_client),
        max_queue=s.get("max_queue", int_between(0, 1_000_000), d.max_queue),
        outbuf_high_watermark=s.get("outbuf_high_watermark", parse_size, d.outbuf_high_watermark),
        drain_time=s.get("drain_time", parse_duration, d.drain_time),
    )
    s.done()
    return settings


def _read_headers(s: Section) -> HeaderSettings:
    proxies = []
    for key, value in s.items("trusted_proxies"):
        try:
            proxies.append(parse_network(value))
        except ValueError as exc:
            s.walker.error(key, str(exc))
    settings = HeaderSettings(
        trusted_proxies=tuple(proxies),
        forwarded=s.get("forwarded", to_bool, False),
        via=s.get("via", to_bool, False),
        pass_server=s.get("pass_server", to_bool, False),
    )
    s.done()
    return settings


def _read_log(s: Section) -> LogSettings:
    settings = LogSettings(
        access=s.get("access", to_access_target, "stdout"),
        format=s.get("format", one_of("combined", "json"), "combined"),
        level=s.get("level", one_of("debug", "info", "warning", "error"), "info"),
    )
    s.done()
    return settings


def _read_rate_limit(s: Section) -> RateLimit | None:
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
        store=store,
        on_store_error=s.get("on_store_error", one_of("allow", "deny"), d.on_store_error),
        max_keys=s.get("max_keys", int_between(100, 100_000_000), d.max_keys),
    )
    if rate and limit.mode == "delay" and (limit.burst - 1) / rate > 60:
        s.walker.error(s.key("burst"), "delay mode would hold a request for more than a minute; lower burst")
    s.done()
    return limit if rate else None


def _limit_store(value: object) -> str:
    text = to_text(value)
    if text == "memory":
        return text
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"expected memory or redis://host:port/db, got {value!r}")
    try:
        import redis  # noqa: F401  (the 'redis' extra)
    except ImportError:
        raise ValueError("a Redis store needs the redis extra: pip install 'simpleproxy[redis]'") from None
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


def _read_access(s: Section) -> AccessRules:
    lists: dict[str, list] = {"allow": [], "deny": []}
    for name, found in lists.items():
        for key, value in s.items(name):
            try:
                found.append(parse_network(value))
            except ValueError as exc:
                s.walker.error(key, str(exc))
    if not s.has("allow") and not s.has("deny"):
        s.walker.error(s.path, "give allow, deny or both (lists of addresses or CIDR networks)")
    s.done()
    return AccessRules(tuple(lists["allow"]), tuple(lists["deny"]))


def _patterns(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        try:
            re.compile(to_text(item))
        except re.error as exc:
            raise ValueError(f"{item!r} does not compile ({exc})") from None
    return tuple(str(item) for item in items)


def _read_bots(s: Section) -> BotSettings:
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
        ban_statuses=ban.get("statuses", _statuses, d.ban_statuses),
        max_tracked=ban.get("max_tracked", int_between(100, 100_000_000), d.max_tracked),
    )
    if s.has("ban") and not ban.has("after"):
        s.walker.error(ban.key("after"), "a ban needs a count: after how many bad answers")
    ban.done()
    s.done()
    return settings


def _read_waf(s: Section) -> WAFSettings:
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


def _read_admin(s: Section) -> AdminSettings:
    listen = s.get("listen", parse_address, None)
    token = s.get("token", to_text, None)
    if token is not None and len(token) < 16:
        s.walker.error(s.key("token"), "use at least 16 characters (a random one: python -c 'import secrets; print(secrets.token_urlsafe())')")
    if s.has("token") and listen is None and not s.has("listen"):
        s.walker.error(s.key("listen"), "a token needs an admin listener address")
    s.done()
    return AdminSettings(listen, token)


def _read_cache(s: Section) -> CacheSettings:
    d = CacheSettings()
    settings = CacheSettings(
        max_size=s.get("max_size", parse_size, d.max_size),
        max_object=s.get("max_object", parse_size, d.max_object),
        lock_timeout=s.get("lock_timeout", to_positive_duration, d.lock_timeout),
    )
    if settings.max_object > settings.max_size:
        s.walker.error(s.key("max_object"), f"is larger than {s.key('max_size')}")
    s.done()
    return settings


def _read_route_cache(s: Section) -> RouteCache | None:
    """A route's ``cache:`` mapping, which may say ``enabled: false``."""
    d = RouteCache()
    enabled = s.get("enabled", to_bool, True)
    cache = RouteCache(
        max_size=s.get("max_size", parse_size, d.max_size),
        max_ttl=s.get("max_ttl", to_positive_duration, d.max_ttl),
        default_ttl=s.get("default_ttl", parse_duration, d.default_ttl),
        query=s.get("query", to_bool, d.query),
        stale_if_error=s.get("stale_if_error", parse_duration, d.stale_if_error),
    )
    s.done()
    return cache if enabled else None


def _check_cache_shares(walker: Walker, cache: CacheSettings, routes: tuple[RouteConfig, ...]) -> None:
    shares = [(route.key, route.cache.max_size) for route in routes if route.cache and route.cache.max_size]
    total = sum(size for _, size in shares)
    if total > cache.max_size:
        walker.error(f"{shares[-1][0]}.cache.max_size", f"the routes' shares add up to more than cache.max_size ({cache.max_size} bytes)")
    elif total == cache.max_size and any(route.cache and not route.cache.max_size for route in routes):
        walker.error("cache.max_size", "the routes' own shares leave nothing for the routes that share the rest")


def _read_upstream(s: Section, name: str) -> UpstreamConfig | None:
    servers: list[UpstreamServer] = []
    for key, item in s.items("servers"):
        entry = Section(s.walker, item if not isinstance(item, str) else {"url": item}, key)
        url = entry.get("url", to_text, "")
        weight = entry.get("weight", int_between(1, 1000), 1)
        if not entry.has("url"):
            s.walker.error(entry.key("url"), "each server needs a url")
        elif url:
            try:
                server = _parse_server_url(url, weight)
            except ValueError as exc:
                s.walker.error(entry.key("url"), str(exc))
            else:
                if any(other.name == server.name and other.scheme == server.scheme for other in servers):
                    s.walker.error(entry.key("url"), f"{url} is listed twice in this upstream")
                servers.append(server)
        entry.done()
    if not s.has("servers"):
        s.walker.error(s.key("servers"), "an upstream needs at least one server")
    timeouts = _read_timeouts(s.section("timeouts"), Timeouts())
    keepalive = s.get("keepalive", int_between(0, 10_000), 32)
    balance = s.get("balance", one_of(*POLICIES), "round_robin")
    hash_on = s.get("hash_on", _hash_source, "client_ip")
    if s.has("hash_on") and balance != "hash":
        s.walker.error(s.key("hash_on"), f"only used with 'balance: hash' ({s.key('balance')} is {balance!r})")
    max_connections = s.get("max_connections", int_between(0, 1_000_000), 0)
    health = _read_health(s.section("health")) if s.has("health") else None
    s.taken.add("health")
    passive = _read_passive(s.section("passive"))
    retries = _read_retries(s.section("retries"))
    tls = _read_tls(s.section("tls"))
    sticky = s.section("sticky")
    sticky_cookie = sticky.get("cookie", _cookie_name, None)
    if s.has("sticky") and sticky_cookie is None and not sticky.has("cookie"):
        s.walker.error(sticky.key("cookie"), "sticky sessions need a cookie name")
    sticky.done()
    if s.has("tls") and not any(server.scheme == "https" for server in servers):
        s.walker.error(s.key("tls"), "no server of this upstream uses https://")
    s.done()
    if not servers:
        return None
    return UpstreamConfig(
        name, tuple(servers), timeouts, keepalive, balance, hash_on, max_connections, health, passive, retries, tls,
        sticky_cookie,
    )


def _cookie_name(value: object) -> str:
    text = to_text(value)
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", text):
        raise ValueError(f"{value!r} is not a cookie name (a token)")
    return text


def _read_timeouts(t: Section, base: Timeouts) -> Timeouts:
    """A ``timeouts:`` mapping over ``base`` (the upstream's, for a route's override)."""
    timeouts = Timeouts(
        connect=t.get("connect", to_positive_duration, base.connect),
        read=t.get("read", to_positive_duration, base.read),
        total=t.get("total", to_positive_duration, base.total),
    )
    t.done()
    return timeouts


def _readable_file(value: object) -> str:
    path = Path(to_text(value))
    try:
        path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return str(path)


def _read_tls(s: Section) -> UpstreamTLS:
    tls = UpstreamTLS(
        ca=s.get("ca", _readable_file, None),
        server_name=s.get("server_name", to_text, None),
        cert=s.get("cert", _readable_file, None),
        key=s.get("key", _readable_file, None),
        verify=s.get("verify", to_bool, True),
    )
    if tls.server_name is not None and not is_valid_host(tls.server_name):
        s.walker.error(s.key("server_name"), f"{tls.server_name!r} is not a host name")
    if tls.key and not tls.cert:
        s.walker.error(s.key("key"), f"needs {s.key('cert')}")
    context = ssl.create_default_context()
    try:  # load now, so that a bad file is a config error naming its key
        if tls.ca:
            context.load_verify_locations(cafile=tls.ca)
    except (ssl.SSLError, ValueError) as exc:
        s.walker.error(s.key("ca"), f"not a PEM CA bundle ({getattr(exc, 'reason', None) or exc})")
    try:
        if tls.cert:
            context.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, ValueError) as exc:
        s.walker.error(s.key("cert"), f"certificate and key do not load or do not match ({getattr(exc, 'reason', None) or exc})")
    s.done()
    return tls


def _statuses(value: object) -> tuple[int, ...]:
    """``[502, 503]``, ``"500-599"`` or a list mixing both -> sorted status codes."""
    items = value if isinstance(value, list) else [value]
    codes: set[int] = set()
    for item in items:
        low, _, high = str(item).partition("-")
        if not low.strip().isdigit() or (high and not high.strip().isdigit()):
            raise ValueError(f"expected status codes like 502 or 500-599, got {item!r}")
        first, last = int(low), int(high or low)
        if not 100 <= first <= last <= 599:
            raise ValueError(f"status codes run from 100 to 599, got {item!r}")
        codes.update(range(first, last + 1))
    return tuple(sorted(codes))


def _share(value: object) -> float:
    """``20%`` or ``0.2`` -> 0.2."""
    text = str(value).strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"expected a share like 20% or 0.2, got {value!r}") from None
    if not 0 <= share <= 1:
        raise ValueError(f"a share is between 0% and 100%, got {value!r}")
    return share


def _methods(value: object) -> frozenset[str]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(m, str) and re.fullmatch(r"[A-Z]+", m) for m in items):
        raise ValueError(f"expected a list of methods in capitals like [GET, HEAD], got {value!r}")
    return frozenset(items)  # type: ignore[arg-type]


def _read_health(s: Section) -> HealthCheck:
    d = HealthCheck()
    path = s.get("path", to_text, d.path)
    if not path.startswith("/"):
        s.walker.error(s.key("path"), f"a check path starts with /, got {path!r}")
    check = HealthCheck(
        path=path,
        interval=s.get("interval", to_positive_duration, d.interval),
        timeout=s.get("timeout", to_positive_duration, d.timeout),
        statuses=s.get("statuses", _statuses, d.statuses),
        healthy_threshold=s.get("healthy_threshold", int_between(1, 100), d.healthy_threshold),
        unhealthy_threshold=s.get("unhealthy_threshold", int_between(1, 100), d.unhealthy_threshold),
        start_healthy=s.get("start", one_of("healthy", "unhealthy"), "healthy") == "healthy",
    )
    s.done()
    return check


def _read_passive(s: Section) -> PassiveHealth:
    d = PassiveHealth()
    passive = PassiveHealth(
        failures=s.get("failures", int_between(1, 1000), d.failures),
        statuses=s.get("statuses", _statuses, d.statuses),
        ejection=s.get("ejection", to_positive_duration, d.ejection),
        max_ejection=s.get("max_ejection", to_positive_duration, d.max_ejection),
    )
    if passive.max_ejection < passive.ejection:
        s.walker.error(s.key("max_ejection"), f"is shorter than {s.key('ejection')}")
    s.done()
    return passive


def _read_retries(s: Section) -> RetryPolicy:
    d = RetryPolicy()
    retries = RetryPolicy(
        count=s.get("count", int_between(0, 10), d.count),
        methods=s.get("methods", _methods, d.methods),
        statuses=s.get("statuses", _statuses, d.statuses),
        budget=s.get("budget", _share, d.budget),
        min_retries=s.get("min_retries", int_between(0, 1000), d.min_retries),
        window=s.get("window", to_positive_duration, d.window),
    )
    s.done()
    return retries


def _hash_source(value: object) -> str:
    text = to_text(value)
    if text == "client_ip" or re.fullmatch(r"(header|cookie):[A-Za-z0-9_.-]+", text):
        return text
    raise ValueError(f"expected client_ip, header:NAME or cookie:NAME, got {value!r}")


def _parse_server_url(url: str, weight: int = 1) -> UpstreamServer:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the scheme must be http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    if parts.username or parts.password:
        raise ValueError(f"{url!r}: credentials in a server URL are not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a server URL is scheme://host:port only, without a path")
    host = parts.hostname
    if not is_valid_host(f"[{host}]" if ":" in host else host):
        raise ValueError(f"{url!r}: {host!r} is not a host name or IP address")
    return UpstreamServer(url, parts.scheme, host, port or (443 if parts.scheme == "https" else 80), weight)


def _route_host(value: object) -> str:
    host = to_text(value).lower().rstrip(".")
    bare = host[2:] if host.startswith("*.") else host
    if ":" in bare and not bare.startswith("["):
        raise ValueError(f"{value!r}: give the host without a port (ports are ignored when matching)")
    if "*" in bare or not is_valid_host(bare):
        raise ValueError(f"{value!r} is not a host name, '*.domain' or an IP address")
    return host


def _route_path(value: object) -> str:
    text = to_text(value)
    if not text.startswith("/") or "?" in text or "#" in text:
        raise ValueError(f"{value!r}: a path prefix starts with / and has no query")
    normal = normalize_path(text)
    if normal != text:
        raise ValueError(f"{value!r} is not in normal form; write {normal!r}")
    return text.rstrip("/") or "/"


def _read_route(s: Section, upstream_names: dict) -> RouteConfig | None:
    host = s.get("host", _route_host, None)
    path = s.get("path", _route_path, "/")
    upstream = s.get("upstream", to_text, None)
    respond = _read_respond(s.section("respond")) if s.has("respond") else None
    s.taken.add("respond")
    if upstream is not None and upstream not in upstream_names:
        hint = did_you_mean(upstream, upstream_names)
        s.walker.error(s.key("upstream"), f"no upstream named {upstream!r}{hint}")
    if s.has("upstream") and s.has("respond"):
        s.walker.error(s.path, "a route has 'upstream' or 'respond', not both")
    elif not s.has("upstream") and not s.has("respond"):
        s.walker.error(s.path, "a route needs either 'upstream' or 'respond'")
    host_header = s.get("host_header", _host_header, "client")
    timeouts = None
    if s.has("timeouts"):
        given = _read_timeouts(s.section("timeouts"), Timeouts(connect=-1, read=-1, total=None))
        timeouts = {k: v for k, v in vars(given).items() if v is not None and v != -1}
    s.taken.add("timeouts")
    cache = None
    if s.has("cache"):
        value = s.data["cache"]
        if isinstance(value, bool):  # "cache: true" is the defaults
            cache = RouteCache() if value else None
        else:
            cache = _read_route_cache(s.section("cache"))
        if cache is not None and respond is not None:
            s.walker.error(s.key("cache"), "a route with 'respond' has nothing to cache")
    s.taken.add("cache")
    rate_limit = _read_rate_limit(s.section("rate_limit")) if s.has("rate_limit") else None
    s.taken.add("rate_limit")
    access = _read_access(s.section("access")) if s.has("access") else None
    s.taken.add("access")
    waf = _read_waf(s.section("waf")) if s.has("waf") else None
    s.taken.add("waf")
    client_cert = None
    if s.has("client_cert"):
        value = s.data["client_cert"]
        if value is True:
            client_cert = ()
        elif isinstance(value, list) and value and all(isinstance(v, str) and "=" in v for v in value):
            client_cert = tuple(value)
        elif value is not False:
            s.walker.error(s.key("client_cert"), f"expected true or a list of subjects like 'CN=alice,O=Example', got {value!r}")
    s.taken.add("client_cert")
    route = RouteConfig(
        key=s.path,
        host=host,
        path=path,
        upstream=upstream,
        respond=respond,
        strip_prefix=s.get("strip_prefix", to_bool, False),
        host_header=host_header,
        timeouts=timeouts,
        cache=cache,
        redirect_https=s.get("redirect_https", to_bool, False),
        hsts=s.get("hsts", to_positive_duration, None),
        hsts_subdomains=s.get("hsts_subdomains", to_bool, False),
        client_cert=client_cert,
        rate_limit=rate_limit,
        access=access,
        waf=waf,
    )
    s.done()
    return route


def _host_header(value: object) -> str:
    text = to_text(value)
    if text not in ("client", "upstream") and not is_valid_host(text.rpartition(":")[0] or text):
        raise ValueError(f"expected client, upstream or a host name, got {value!r}")
    return text


def _read_respond(s: Section) -> Respond:
    respond = Respond(
        status=s.get("status", int_between(200, 599), 200),
        body=s.get("body", str, ""),
        content_type=s.get("content_type", to_text, Respond.content_type),
    )
    s.done()
    return respond


def _check_duplicate_routes(walker: Walker, routes: tuple[RouteConfig, ...]) -> None:
    seen: dict[tuple[str | None, str], str] = {}
    for route in routes:
        earlier = seen.setdefault((route.host, route.path), route.key)
        if earlier != route.key:
            where = f"host {route.host!r}" if route.host else "any host"
            walker.error(route.key, f"same host and path as {earlier} ({where}, path {route.path!r})")
