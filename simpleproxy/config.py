"""The configuration: frozen dataclasses, and reading them from YAML.

Each field documents its default and unit. The file is read with a safe
loader that also rejects duplicate keys (PyYAML would silently keep the last
one); :mod:`.config_read` then walks the tree, converting each value and
naming every problem by its key path (``routes[0].upstream: no upstream named
'apii'``). Nothing here runs per request: the result is consumed once by
:class:`simpleproxy.app.ProxyApp`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_routes import ErrorPages, HeaderRules, Match, Redirect, Rewrite, Static
from .errors import ConfigError

DEFAULT_LISTEN = ("127.0.0.1", 8080)


@dataclass(frozen=True)
class Certificate:
    """One server certificate for ``listen.https``; the names it serves are read from it."""

    cert: str  #: PEM file: the certificate (and its chain, and the key, if they are in it)
    key: str | None = None  #: PEM private key, if not in ``cert``
    chain: str | None = None  #: PEM intermediates, if not in ``cert``
    password: str | None = field(default=None, repr=False)  #: for an encrypted key; never printed


@dataclass(frozen=True)
class HTTPSListener:
    """``listen.https``: TLS terminated by the front listener, handed to the same app."""

    addresses: tuple[tuple[str, int], ...]
    certificates: tuple[Certificate, ...]  #: the first is the default (no SNI, or no name matches)
    min_version: str = "1.2"  #: "1.2" (Mozilla intermediate) or "1.3" (modern)
    handshake_timeout: float = 10.0  #: a connection that has not finished its handshake by then is closed
    max_handshakes: int = 256  #: handshakes in progress at once; more connections are closed at once
    client_auth: str = "off"  #: "off", "optional" or "required": client certificates (mTLS)
    client_ca: str | None = None  #: CA bundle that client certificates must chain to
    reload_interval: float = 10.0  #: seconds between checks of the certificate files (0: only on reload)


@dataclass(frozen=True)
class Timeouts:
    """Upstream timeouts in seconds (urllib3's ``Timeout(connect=, read=)``)."""

    connect: float = 5.0  #: to open a TCP (and TLS) connection to a server
    read: float = 60.0  #: between two reads from the server, not for the whole response
    total: float | None = None  #: for the whole exchange, body included; none by default


@dataclass(frozen=True)
class UpstreamServer:
    """One backend: ``url`` as written, split into its parts."""

    url: str
    scheme: str
    host: str
    port: int
    weight: int = 1  #: share of requests relative to the upstream's other servers

    @property
    def name(self) -> str:
        """``host:port``, as logged and as the default ``Host`` for ``host_header: upstream``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class HealthCheck:
    """Active checks: ``GET path`` on every server, every ``interval``."""

    path: str = "/"
    interval: float = 5.0  #: seconds between two rounds of checks
    timeout: float = 2.0  #: for one check (connect and read)
    statuses: tuple[int, ...] = tuple(range(200, 400))  #: answers that count as healthy
    healthy_threshold: int = 2  #: good checks in a row to come back
    unhealthy_threshold: int = 3  #: failed checks in a row to be taken out
    start_healthy: bool = True


@dataclass(frozen=True)
class PassiveHealth:
    """Outlier ejection from real traffic (nginx's max_fails/fail_timeout, Envoy's outlier detection)."""

    failures: int = 3  #: consecutive failures (connect errors, timeouts, ``statuses``) that eject
    statuses: tuple[int, ...] = ()  #: answers that count as failures too
    ejection: float = 10.0  #: the first ejection; doubles while the server keeps failing
    max_ejection: float = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    """Resending a failed request to another server."""

    count: int = 2  #: retries after the first try, each to a server not tried yet
    methods: frozenset[str] = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE"))
    statuses: tuple[int, ...] = ()  #: answers retried too (connect errors and timeouts always are)
    budget: float = 0.2  #: retries at most this share of requests over ``window``
    min_retries: int = 3  #: per window, so that retries work at low traffic
    window: float = 10.0


@dataclass(frozen=True)
class UpstreamTLS:
    """How https:// servers are verified and what this proxy presents to them."""

    ca: str | None = None  #: CA bundle file; the system trust store when unset
    server_name: str | None = None  #: SNI and the name verified, instead of the URL's host
    cert: str | None = None  #: client certificate (PEM, may hold the key) for mutual TLS
    key: str | None = None  #: its private key, if not in ``cert``
    verify: bool = True  #: false skips verification entirely (warned at start-up)
    password: str | None = field(default=None, repr=False)  #: for an encrypted key; never printed


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    servers: tuple[UpstreamServer, ...]
    timeouts: Timeouts = Timeouts()
    #: idle keep-alive connections kept per server (nginx's ``keepalive``); busy
    #: connections are bounded by ``server.threads``, since each thread holds one.
    keepalive: int = 32
    #: round_robin, least_conn, random_two, first or hash (see upstream/balance.py)
    balance: str = "round_robin"
    #: what ``hash`` hashes: client_ip, header:NAME or cookie:NAME
    hash_on: str = "client_ip"
    max_connections: int = 0  #: requests in flight per server; 0 is no limit
    health: HealthCheck | None = None
    passive: PassiveHealth = PassiveHealth()
    retries: RetryPolicy = RetryPolicy()
    tls: UpstreamTLS = UpstreamTLS()
    #: a cookie the proxy sets to keep a client on one server (sticky sessions)
    sticky_cookie: str | None = None


@dataclass(frozen=True)
class Respond:
    """A fixed local answer (nginx ``return``, Caddy ``respond``)."""

    status: int = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class CacheSettings:
    """The top-level ``cache:``: the memory all routes' caches share."""

    max_size: int = 64 * 1024**2  #: bytes for every stored response together (estimated objects included)
    max_object: int = 8 * 1024**2  #: a larger response is relayed, not stored
    #: how long concurrent misses for one URL wait for the first (nginx's proxy_cache_lock_timeout)
    lock_timeout: float = 5.0
    #: response fields naming tags to purge by (POST /cache/purge?tag=), lower case
    tag_fields: tuple[str, ...] = ("cache-tag", "surrogate-key")
    pass_tags: bool = False  #: let clients see the tag fields (they are the backend's words to the cache)


@dataclass(frozen=True)
class CacheKey:
    """``routes[i].cache.key``: what of a request tells its stored answers apart."""

    ignore_query: tuple[str, ...] = ()  #: query parameters left out of the key (globs: ``utm_*``)
    sort_query: bool = False  #: ``?b=1&a=2`` and ``?a=2&b=1`` share an entry
    include_headers: tuple[str, ...] = ()  #: request fields that make variants, as if in Vary (lower case)
    include_cookies: tuple[str, ...] = ()  #: cookies that make variants (``lang``)

    @property
    def fields(self) -> tuple[str, ...]:
        """What the store varies on besides the response's Vary: field names and ``cookie:NAME``."""
        return self.include_headers + tuple(f"cookie:{name}" for name in self.include_cookies)


@dataclass(frozen=True)
class RouteCache:
    """A route's ``cache:``; a route without one never touches the cache."""

    max_size: int | None = None  #: this route's own share of ``cache.max_size``; None shares the rest
    max_ttl: float | None = None  #: no response stays fresh longer than this
    default_ttl: float = 0.0  #: lifetime for cacheable statuses that carry no freshness hint at all
    query: bool = True  #: the query string is part of the key
    #: how stale a response may be served while the origin is down or answers 5xx (0: never)
    stale_if_error: float = 60.0
    key: CacheKey = CacheKey()
    #: RFC 9111 4.2.2: how long a response without explicit freshness but with Last-Modified stays
    #: fresh, as a share of its age at arrival (0: never by heuristic), capped at max_heuristic
    heuristic: float = 0.1
    max_heuristic: float = 86400.0


@dataclass(frozen=True)
class RateLimit:
    """``rate_limit:`` at the top (every request) or on a route: a token bucket per key."""

    where: str  #: "rate_limit" or "routes[2].rate_limit": names the limit in logs and Redis keys
    rate: float  #: tokens per second
    rate_text: str  #: as written ("100/s"), for headers and explanations
    burst: int = 1  #: the bucket: requests that may pass at once (1: strictly at the rate)
    #: what a bucket is per: client_ip, host, route, header:NAME, or several of them
    key: tuple[str, ...] = ("client_ip",)
    mode: str = "reject"  #: reject (429 past the burst) or delay (space a burst out at the rate)
    max_delay: float = 1.0  #: delay mode: a request that would wait longer is refused instead
    store: str = "memory"  #: memory, or redis://host:port/db shared by every instance
    on_store_error: str = "allow"  #: when Redis does not answer: allow or deny (503)
    max_keys: int = 100_000  #: buckets the memory store keeps; the least recently used go first


@dataclass(frozen=True)
class BasicAuth:
    """``basic_auth:`` at the top (every route) or on a route (instead of the top's; ``false``: none)."""

    realm: str = "restricted"  #: named in the browser's prompt
    #: user name -> bcrypt hash, from ``users`` and the ``users_file`` (read at load and reload)
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    users_file: str | None = None
    #: pass the client's Authorization on to the backend (off: the backend gets X-Forwarded-User only)
    forward_credentials: bool = False
    enabled: bool = True  #: False for a route's ``basic_auth: false``


@dataclass(frozen=True)
class ForwardAuth:
    """``forward_auth:`` at the top (every route) or on a route (instead of the top's; ``false``: none):
    each request is first asked of an auth service (Authelia, Authentik, oauth2-proxy)."""

    url: str = ""  #: the service's verify endpoint, as given
    target: str = "/"  #: its path and query, as sent
    #: the service as an upstream of one server: its pool, the timeouts (``timeout`` for each), no retries
    upstream: UpstreamConfig | None = None
    copy_headers: tuple[str, ...] = ()  #: fields of a 2xx answer copied into the request (client copies removed)
    timeout: float = 2.0
    enabled: bool = True  #: False for a route's ``forward_auth: false``


#: what ``compress`` encodes by default: text, and the text formats under other names
COMPRESSED_TYPES = (
    "text/*", "application/json", "application/*+json", "application/javascript", "application/xml",
    "application/*+xml", "image/svg+xml", "application/wasm",
)


@dataclass(frozen=True)
class Compress:
    """``compress:`` at the top (every route) or on a route (instead of the top's; ``false``: none)."""

    encodings: tuple[str, ...] = ("zstd", "br", "gzip")  #: the server's preference, for ties in q-values
    min_size: int = 1024  #: bodies known to be smaller go as they are
    types: tuple[str, ...] = COMPRESSED_TYPES
    levels: tuple[tuple[str, int], ...] = (("zstd", 3), ("br", 4), ("gzip", 5))
    enabled: bool = True  #: False for a route's ``compress: false``


@dataclass(frozen=True)
class CORS:
    """``cors:`` at the top (every route) or on a route (instead of the top's; ``false``: none)."""

    #: exact origins (``https://app.example.com``), ``https://*.example.com`` for any subdomain, or ``*``
    origins: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("GET", "HEAD", "POST")  #: what a preflight may ask for
    headers: tuple[str, ...] = ()  #: request fields a preflight may ask for (lower case), or ``*``
    expose: tuple[str, ...] = ()  #: response fields a page may read beyond the safelisted ones
    credentials: bool = False  #: Access-Control-Allow-Credentials: cookies and Authorization go along
    max_age: float = 600.0  #: how long a browser may keep a preflight's answer
    enabled: bool = True  #: False for a route's ``cors: false``


@dataclass(frozen=True)
class AccessRules:
    """``access:`` at the top or on a route: CIDR allow and deny lists (IPv4 and IPv6)."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  #: if given, only these
    deny: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  #: never these


@dataclass(frozen=True)
class BotSettings:
    """``bots:``: checked before routing, for every request."""

    deny_agents: tuple[str, ...] = ()  #: regular expressions; a matching User-Agent gets 403
    allow_agents: tuple[str, ...] = ()  #: regular expressions that pass whatever deny_agents say
    require_user_agent: bool = False  #: 403 for a request without (or with an empty) User-Agent
    require_host: bool = True  #: 400 for an HTTP/1.0 request without Host (HTTP/1.1 always needs one)
    #: the fail2ban-style ban: after this many answers in ``ban_statuses`` within ``ban_window``,
    #: the address is refused for ``ban_for`` (0: no bans)
    ban_after: int = 0
    ban_window: float = 60.0
    ban_for: float = 600.0
    ban_statuses: tuple[int, ...] = (400, 401, 403, 404, 405, 429)
    max_tracked: int = 100_000  #: addresses counted and banned at most; the least recent go first


@dataclass(frozen=True)
class WAFRule:
    """One rule of ``waf.rules``; ``match`` is kept as written and compiled by security/waf.py."""

    name: str
    match: Any
    action: str = "deny"  #: deny (403), allow (skip the rules after it), log


@dataclass(frozen=True)
class WAFSettings:
    """``waf:`` at the top (every request) or on a route."""

    rules: tuple[WAFRule, ...] = ()
    baseline: bool = False  #: also run the built-in rule set (security/waf.py BASELINE)


@dataclass(frozen=True)
class RouteConfig:
    key: str  #: ``routes[3]``, for messages
    host: str | None  #: lower-case exact name, ``*.suffix``, or None for any host
    path: str  #: normalised prefix without a trailing slash ("/" for everything)
    upstream: str | None = None
    respond: Respond | None = None
    strip_prefix: bool = False
    #: ``client`` keeps the client's Host, ``upstream`` sends the server's
    #: host:port, anything else is sent literally.
    host_header: str = "client"
    #: keys given here override the upstream's timeouts (None: the upstream's as they are)
    timeouts: dict[str, float] | None = None
    cache: RouteCache | None = None  #: None: this route does not cache
    redirect_https: bool = False  #: plain-HTTP requests get a 308 to the same URL on https
    hsts: float | None = None  #: Strict-Transport-Security max-age on HTTPS answers
    hsts_subdomains: bool = False  #: ... with includeSubDomains
    #: None: no client certificate needed; () any verified one; else the subjects allowed
    client_cert: tuple[str, ...] | None = None
    rate_limit: RateLimit | None = None
    access: AccessRules | None = None
    waf: WAFSettings | None = None
    basic_auth: BasicAuth | None = None  #: None: the top's, if any
    cors: CORS | None = None  #: None: the top's, if any
    forward_auth: ForwardAuth | None = None  #: None: the top's, if any
    compress: Compress | None = None  #: None: the top's, if any
    #: Upgrade protocols tunnelled to the backend (lower case); others are ordinary requests
    upgrade: tuple[str, ...] = ("websocket",)
    max_tunnels: int = 0  #: open tunnels on this route at once; 0: only the server's bound
    tunnel_idle_timeout: float = 60.0  #: a tunnel without a byte either way this long is closed (0: never)
    #: a text/event-stream response may go this long without a byte (instead of the read timeout)
    stream_timeout: float = 600.0
    #: a backend's 103 Early Hints are written to HTTP/1.1 clients ahead of its answer (interim.py)
    early_hints: bool = True
    #: let %2F and %5C in paths through to this route's backend (server.reject_ambiguous_paths)
    allow_encoded_slashes: bool = False
    match: Match | None = None  #: matchers beside host and path (config_routes.py)
    request_headers: HeaderRules | None = None  #: applied after the top's
    response_headers: HeaderRules | None = None  #: applied after the top's
    security_headers: bool | None = None  #: None: the top's
    redirect: Redirect | None = None  #: the route answers with a redirect
    static: Static | None = None  #: the route serves files
    rewrite: Rewrite | None = None  #: the path the backend (or the file lookup) gets, after strip_prefix
    add_prefix: str = ""  #: ... and before it, after the rewrite
    errors: ErrorPages | None = None  #: None: the top's


@dataclass(frozen=True)
class ServerSettings:
    """The waitress front end. Defaults differ from waitress's where a proxy needs it."""

    #: concurrent requests in flight (each holds one upstream connection): 64 pass 1,280 requests/s
    #: to a backend that takes 50 ms, where 16 capped it at 320 (README, server.threads)
    threads: int = 64
    #: open client connections (waitress: 100, too few); at the limit the oldest idle ones or those
    #: still sending a head are closed to let a new one in. Capped at 500 where there is no poll().
    connection_limit: int = 10_000
    channel_timeout: float = 60.0  #: seconds an idle client connection is kept
    backlog: int = 1024  #: listen(2) queue
    max_request_body: int = 16 * 1024**2  #: larger bodies get 413 before any backend sees them
    max_request_header: int = 64 * 1024  #: larger heads get 431 from waitress
    max_uri: int = 8 * 1024  #: a longer request target gets 414
    #: a request head not complete this long after its first byte closes the connection (slowloris)
    header_timeout: float = 10.0
    max_connections_per_client: int = 0  #: open connections per peer address; 0 is no limit
    #: requests waiting for a worker thread past which new ones get a quick 503; 0 is no bound
    max_queue: int = 500
    #: on SIGTERM or Ctrl-C, how long requests in flight may take to finish before they are cut
    drain_time: float = 30.0
    watch_config: bool = False  #: reload when the configuration file changes (checked every second)
    max_tunnels: int = 1000  #: upgraded connections (WebSocket) open at once, all routes together
    #: response bytes that may wait for a slow client, per connection, so that the worker thread
    #: and the upstream connection are free at the backend's speed; past 1 MiB they wait in a
    #: temporary file, not in memory. Past this, the worker waits for the client.
    max_buffered_response: int = 64 * 1024**2
    #: all connections' waiting response bytes together; past it the connections reading the slowest
    #: are closed (checked every second; no worker waits for a slow client because of it)
    max_buffered_total: int = 256 * 1024**2
    #: bytes per second a request (head and body) must arrive at, after ``min_rate_grace``; 0: no minimum
    min_request_rate: int = 1024
    #: bytes per second a client must read a waiting response at, measured over ``min_rate_grace``
    min_response_rate: int = 1024
    min_rate_grace: float = 5.0  #: seconds before, and over which, the minimum rates are measured
    #: ``auto`` (the last CPU this process may use), ``none``, or a CPU number: the CPU that
    #: ``simpleproxy run`` binds its process to (see affinity.py for why one CPU)
    cpu_affinity: str | int = "auto"
    #: 400 for paths a lenient backend could read outside their route: %2F, %5C or a backslash,
    #: overlong or invalid UTF-8, a ';' on a dot segment (request.ambiguous_path)
    reject_ambiguous_paths: bool = True


@dataclass(frozen=True)
class HeaderSettings:
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    forwarded: bool = False  #: add an RFC 7239 ``Forwarded`` field upstream
    via: bool = False  #: add ``Via: 1.1 simpleproxy`` both ways
    #: relay the backend's ``Server`` field (nginx hides it and sends its own)
    pass_server: bool = False
    #: where trusted proxies name the client: x-forwarded-for or forwarded (RFC 7239); one, not both
    client_ip_header: str = "x-forwarded-for"


@dataclass(frozen=True)
class LogSettings:
    access: str = "stdout"  #: ``stdout``, ``stderr``, ``off`` or a file path
    format: str = "combined"  #: ``combined`` (nginx's, plus fields) or ``json``
    level: str = "info"


@dataclass(frozen=True)
class AdminSettings:
    """``admin:``: a second listener for health, metrics, reloads and the status page."""

    listen: tuple[str, int] | None = None  #: None: no admin listener
    #: when set, every admin request needs ``Authorization: Bearer <token>``; without one only
    #: loopback clients are served
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Config:
    listen: tuple[tuple[str, int], ...] = (DEFAULT_LISTEN,)
    https: HTTPSListener | None = None
    server: ServerSettings = ServerSettings()
    headers: HeaderSettings = HeaderSettings()
    log: LogSettings = LogSettings()
    cache: CacheSettings = CacheSettings()
    admin: AdminSettings = AdminSettings()
    rate_limit: RateLimit | None = None  #: applies to every request, before a route's own
    access: AccessRules | None = None  #: applies to every request, before a route's own
    waf: WAFSettings | None = None  #: rules for every request, before a route's own
    bots: BotSettings | None = None
    basic_auth: BasicAuth | None = None  #: for every route without its own
    cors: CORS | None = None  #: for every route without its own
    forward_auth: ForwardAuth | None = None  #: for every route without its own
    compress: Compress | None = None  #: for every route without its own
    request_headers: HeaderRules | None = None  #: for every route, before the route's own
    response_headers: HeaderRules | None = None  #: for every route, before the route's own
    security_headers: bool = False  #: for every route that does not say otherwise
    errors: ErrorPages | None = None  #: for every route without its own
    upstreams: dict[str, UpstreamConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    source: str = "<memory>"


# --------------------------------------------------------------------------- reading YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found the key {key!r} twice", key_node.start_mark,
            )
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", str(path)) from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<memory>") -> Config:
    """Parse YAML text; the same rules as :func:`load_config`."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}invalid YAML: {problem}", source) from None
    return config_from_dict(data if data is not None else {}, source=source)


def config_from_dict(data: object, source: str = "<memory>") -> Config:
    """Validate an already-parsed mapping (what ``yaml.safe_load`` returns)."""
    from .config_read import read_config  # the readers build these dataclasses

    return read_config(data, source)
