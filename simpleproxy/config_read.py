"""The configuration schema: one reader per section, building the dataclasses of :mod:`.config`."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from .config import (
    CORS,
    DEFAULT_LISTEN,
    BasicAuth,
    Config,
    ForwardAuth,
    HeaderSettings,
    HealthCheck,
    HTTPSListener,
    LogSettings,
    PassiveHealth,
    Respond,
    RetryPolicy,
    RouteCache,
    RouteConfig,
    ServerSettings,
    Timeouts,
    UpstreamConfig,
    UpstreamServer,
    UpstreamTLS,
)
from .config_sections import (
    check_cache_shares,
    check_tls_routes,
    parse_server_url,
    read_access,
    read_admin,
    read_bots,
    read_cache,
    read_https,
    read_rate_limit,
    read_route_cache,
    read_waf,
)
from .config_walk import (
    Section,
    Walker,
    did_you_mean,
    network_list,
    int_between,
    one_of,
    read_addresses,
    to_access_target,
    to_bool,
    to_positive_duration,
    to_readable_file,
    to_statuses,
    to_text,
)
from .config_routes import (
    read_error_pages,
    read_header_rules,
    read_match,
    read_redirect,
    read_rewrite,
    read_static,
    to_prefix,
)
from .config_edge import (
    read_basic_auth,
    read_compress_key,
    read_cors,
    read_forward_auth,
    read_on_route,
)
from .errors import CertificateError, ConfigError
from .grammar import TCHAR, is_token
from .request import normalize_path
from .units import is_valid_host, parse_duration, parse_share, parse_size
from .upstream.balance import POLICIES

#: an Upgrade protocol name (RFC 9110 section 7.8: a token, optionally /version)
_PROTOCOL = re.compile(f"[{TCHAR}]+(/[{TCHAR}]+)?")


def read_config(data: object, source: str) -> Config:
    """Validate a parsed mapping; raise :class:`ConfigError` listing every problem."""
    where = Path(source)
    walker = Walker(where.parent if where.is_file() else None)  # relative file names: beside the file
    config = _read_config(Section(walker, data, ""), source)
    if walker.problems:
        raise ConfigError(walker.problems, source)
    return config


def _read_config(root: Section, source: str) -> Config:
    listen, https = _read_listen(root.section("listen"))
    server = _read_server(root.section("server"))
    headers = _read_headers(root.section("headers"))
    log = _read_log(root.section("log"))
    cache = read_cache(root.section("cache"))
    admin = read_admin(root.section("admin"))
    rate_limit = root.optional("rate_limit", read_rate_limit)
    access = root.optional("access", read_access)
    waf = root.optional("waf", read_waf)
    bots = root.optional("bots", read_bots)
    basic_auth = root.optional("basic_auth", read_basic_auth)
    cors = root.optional("cors", read_cors)
    forward_auth = root.optional("forward_auth", read_forward_auth)
    compress = read_compress_key(root)
    if compress is not None and not compress.enabled:
        compress = None
    request_headers = root.optional("request_headers", lambda sub: read_header_rules(sub, "request"))
    response_headers = root.optional("response_headers", lambda sub: read_header_rules(sub, "response"))
    security_headers = root.get("security_headers", to_bool, False)
    errors = root.optional("errors", read_error_pages)
    if errors is not None and errors.intercept:
        root.walker.error("errors.intercept", "is a route's choice (it applies to its backend's answers)")
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
    check_cache_shares(root.walker, cache, routes)
    check_tls_routes(root.walker, https, routes)
    root.done()
    return Config(
        listen=listen, https=https, server=server, headers=headers, log=log, cache=cache, admin=admin,
        rate_limit=rate_limit, access=access, waf=waf, bots=bots, basic_auth=basic_auth, cors=cors,
        forward_auth=forward_auth, compress=compress, request_headers=request_headers,
        response_headers=response_headers, security_headers=security_headers, errors=errors,
        upstreams=upstreams, routes=routes, source=source,
    )




def _read_listen(section: Section) -> tuple[tuple[tuple[str, int], ...], HTTPSListener | None]:
    addresses = read_addresses(section, "http")
    https = read_https(section.section("https")) if section.has("https") else None
    section.taken.add("https")
    if https is not None and {a for a in https.addresses if a[1]} & set(addresses or [DEFAULT_LISTEN]):
        section.walker.error(section.key("https.address"), "is also a plain HTTP address")
    section.done()
    return tuple(addresses) or (DEFAULT_LISTEN,), https


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
        max_buffered_response=s.get("max_buffered_response", parse_size, d.max_buffered_response),
        max_buffered_total=s.get("max_buffered_total", parse_size, d.max_buffered_total),
        min_request_rate=s.get("min_request_rate", _rate, d.min_request_rate),
        min_response_rate=s.get("min_response_rate", _rate, d.min_response_rate),
        min_rate_grace=s.get("min_rate_grace", to_positive_duration, d.min_rate_grace),
        drain_time=s.get("drain_time", parse_duration, d.drain_time),
        watch_config=s.get("watch_config", to_bool, d.watch_config),
        max_tunnels=s.get("max_tunnels", int_between(0, 1_000_000), d.max_tunnels),
        cpu_affinity=s.get("cpu_affinity", _cpu_affinity, d.cpu_affinity),
        reject_ambiguous_paths=s.get("reject_ambiguous_paths", to_bool, d.reject_ambiguous_paths),
    )
    if s.has("outbuf_high_watermark"):  # a key of earlier releases: say what took its place
        s.taken.add("outbuf_high_watermark")
        s.walker.error(s.key("outbuf_high_watermark"),
                       "replaced by server.max_buffered_response (what a response may buffer for a slow client)")
    s.done()
    return settings


def _rate(value: object) -> int:
    """``1KiB/s``, ``512B/s``, a size or a bare number of bytes per second; 0 switches the minimum off."""
    text = value[:-2] if isinstance(value, str) and value.endswith("/s") else value
    return parse_size(text)


def _cpu_affinity(value: object) -> str | int:
    """``auto``, ``none`` (YAML's ``false``/``off`` too) or a CPU number."""
    if value is False or value == "none":
        return "none"
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 4096):
        return value  # type: ignore[return-value]
    raise ValueError(f"expected auto, none or a CPU number (0, 1, ...), got {value!r}")


def _read_headers(s: Section) -> HeaderSettings:
    settings = HeaderSettings(
        trusted_proxies=network_list(s, "trusted_proxies"),
        forwarded=s.get("forwarded", to_bool, False),
        via=s.get("via", to_bool, False),
        pass_server=s.get("pass_server", to_bool, False),
        client_ip_header=s.get("client_ip_header", one_of("x-forwarded-for", "forwarded"), "x-forwarded-for"),
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
                server = parse_server_url(url, weight)
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
    if not is_token(text):
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


def _read_tls(s: Section) -> UpstreamTLS:
    tls = UpstreamTLS(
        ca=s.get("ca", to_readable_file, None),
        server_name=s.get("server_name", to_text, None),
        cert=s.get("cert", to_readable_file, None),
        key=s.get("key", to_readable_file, None),
        verify=s.get("verify", to_bool, True),
        password=s.get("password", to_text, None),
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
    if tls.cert:
        from .tls.certs import load_key_pair

        try:
            load_key_pair(context, tls.cert, tls.key, tls.password, s.path)
        except CertificateError as exc:
            s.walker.error(exc.key, str(exc))
    s.done()
    return tls


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
        statuses=s.get("statuses", to_statuses, d.statuses),
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
        statuses=s.get("statuses", to_statuses, d.statuses),
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
        statuses=s.get("statuses", to_statuses, d.statuses),
        budget=s.get("budget", parse_share, d.budget),
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
    match = s.optional("match", read_match)
    path_regex = match.path_regex if match is not None else None
    redirect = read_redirect(s.section("redirect"), path_regex) if s.has("redirect") else None
    s.taken.add("redirect")
    static = s.optional("static", read_static)
    answers = [key for key in ("upstream", "respond", "redirect", "static") if s.has(key)]
    if len(answers) > 1:
        s.walker.error(s.path, f"a route has one of upstream, respond, redirect or static; this one has {' and '.join(answers)}")
    elif not answers:
        s.walker.error(s.path, "a route needs one of 'upstream', 'respond', 'redirect' or 'static'")
    rewrite = read_rewrite(s.section("rewrite"), path_regex) if s.has("rewrite") else None
    s.taken.add("rewrite")
    add_prefix = s.get("add_prefix", to_prefix, "")
    for key in ("rewrite", "add_prefix", "strip_prefix"):
        if s.has(key) and (respond is not None or redirect is not None):
            s.walker.error(s.key(key), "changes the path a backend or the files get; this route answers by itself")
    request_headers = s.optional("request_headers", lambda sub: read_header_rules(sub, "request"))
    if request_headers is not None and upstream is None:
        s.walker.error(s.key("request_headers"), "are what a backend receives: this route has no upstream")
    response_headers = s.optional("response_headers", lambda sub: read_header_rules(sub, "response"))
    security_headers = s.get("security_headers", to_bool, None)
    errors = s.optional("errors", read_error_pages)
    if errors is not None and errors.intercept and upstream is None:
        s.walker.error(s.key("errors.intercept"), "intercepts a backend's answers: this route has no upstream")
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
            cache = read_route_cache(s.section("cache"))
        if cache is not None and (respond is not None or redirect is not None or static is not None):
            s.walker.error(s.key("cache"), "only a route with an upstream has something to cache")
    s.taken.add("cache")
    rate_limit = s.optional("rate_limit", read_rate_limit)
    access = s.optional("access", read_access)
    waf = s.optional("waf", read_waf)
    basic_auth = read_on_route(s, "basic_auth", read_basic_auth, BasicAuth(enabled=False))
    cors = read_on_route(s, "cors", read_cors, CORS(enabled=False))
    forward_auth = read_on_route(s, "forward_auth", read_forward_auth, ForwardAuth(enabled=False))
    compress = read_compress_key(s)
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
        basic_auth=basic_auth,
        cors=cors,
        forward_auth=forward_auth,
        compress=compress,
        upgrade=s.get("upgrade", _upgrade_tokens, ("websocket",)),
        max_tunnels=s.get("max_tunnels", int_between(0, 1_000_000), 0),
        tunnel_idle_timeout=s.get("tunnel_idle_timeout", parse_duration, 60.0),
        stream_timeout=s.get("stream_timeout", parse_duration, 600.0),
        early_hints=s.get("early_hints", to_bool, True),
        allow_encoded_slashes=s.get("allow_encoded_slashes", to_bool, False),
        match=match,
        request_headers=request_headers,
        response_headers=response_headers,
        security_headers=security_headers,
        redirect=redirect,
        static=static,
        rewrite=rewrite,
        add_prefix=add_prefix,
        errors=errors,
    )
    s.done()
    return route


def _upgrade_tokens(value: object) -> tuple[str, ...]:
    """``[websocket]``, ``[]`` or ``false`` (none): the protocols a route tunnels."""
    if value is False:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and _PROTOCOL.fullmatch(v) for v in value):
        raise ValueError(f"expected a list of protocol names such as [websocket], or false; got {value!r}")
    return tuple(v.lower() for v in value)


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
    """Two routes with the same host, path and matchers: the second could never be reached. (With
    different matchers both are; a later one with none is the fallback for the prefix.)"""
    seen: dict[tuple[str | None, str, object], str] = {}
    refused = {problem.partition(":")[0] for problem in walker.problems}
    for route in routes:
        if f"{route.key}.host" in refused or f"{route.key}.path" in refused:
            continue  # read as the default after its own error: no second, false one
        earlier = seen.setdefault((route.host, route.path, route.match), route.key)
        if earlier != route.key:
            where = f"host {route.host!r}" if route.host else "any host"
            same = "and matchers " if route.match is not None else ""
            walker.error(route.key, f"same host, path {same}as {earlier} ({where}, path {route.path!r}): "
                                    "it would never be reached")
