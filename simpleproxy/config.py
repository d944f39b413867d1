"""YAML configuration -> frozen dataclasses, with every error named by its key path.

The file is read with a safe loader that also rejects duplicate keys (PyYAML
would silently keep the last one). One walk over the tree converts each value,
records every problem as ``key.path[i].name: what is wrong`` and rejects keys
it does not know, suggesting the closest known one. Nothing here runs per
request: the result is consumed once by :class:`simpleproxy.app.ProxyApp`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError
from .request import normalize_path
from .upstream.balance import POLICIES
from .units import is_valid_host, parse_address, parse_duration, parse_network, parse_size

T = TypeVar("T")

DEFAULT_LISTEN = ("127.0.0.1", 8080)


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


@dataclass(frozen=True)
class ServerSettings:
    """The waitress front end. Defaults differ from waitress's where a proxy needs it."""

    threads: int = 16  #: concurrent requests in flight (each holds one upstream connection)
    connection_limit: int = 1000  #: open client connections (waitress: 100, too few)
    channel_timeout: float = 60.0  #: seconds an idle client connection is kept
    backlog: int = 1024  #: listen(2) queue
    max_request_body: int = 16 * 1024**2  #: larger bodies get 413 before any backend sees them
    max_request_header: int = 64 * 1024  #: larger heads get 431/400 from waitress
    #: output buffered per connection before the app thread waits for the client;
    #: keeps memory flat under many slow readers (waitress: 16 MiB).
    outbuf_high_watermark: int = 1024**2


@dataclass(frozen=True)
class HeaderSettings:
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    forwarded: bool = False  #: add an RFC 7239 ``Forwarded`` field upstream
    via: bool = False  #: add ``Via: 1.1 simpleproxy`` both ways
    #: relay the backend's ``Server`` field (nginx hides it and sends its own)
    pass_server: bool = False


@dataclass(frozen=True)
class LogSettings:
    access: str = "stdout"  #: ``stdout``, ``stderr``, ``off`` or a file path
    level: str = "info"


@dataclass(frozen=True)
class Config:
    listen: tuple[tuple[str, int], ...] = (DEFAULT_LISTEN,)
    server: ServerSettings = ServerSettings()
    headers: HeaderSettings = HeaderSettings()
    log: LogSettings = LogSettings()
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
    walker = _Walker()
    config = _read_config(_Section(walker, data, ""), source)
    if walker.problems:
        raise ConfigError(walker.problems, source)
    return config


# --------------------------------------------------------------------------- the walker


class _Walker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)


class _Section:
    """One mapping being read. Keys that are never asked for are reported as unknown."""

    def __init__(self, walker: _Walker, data: object, path: str) -> None:
        self.walker = walker
        self.path = path
        self.taken: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            walker.error(path, f"expected a mapping of keys, got {_kind(data)}")
            data = {}
        self.data: dict = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, convert: Callable[[Any], T], default: T) -> T:
        self.taken.add(name)
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except ValueError as exc:
            self.walker.error(self.key(name), str(exc))
            return default

    def section(self, name: str) -> _Section:
        self.taken.add(name)
        return _Section(self.walker, self.data.get(name), self.key(name))

    def items(self, name: str) -> Iterator[tuple[str, object]]:
        """``(key path, value)`` for each element of a list (a lone value counts as one)."""
        self.taken.add(name)
        value = self.data.get(name)
        if value is None:
            return
        if not isinstance(value, list):
            value = [value]
        for i, item in enumerate(value):
            yield f"{self.key(name)}[{i}]", item

    def done(self) -> None:
        for unknown in sorted(set(self.data) - self.taken, key=str):
            hint = _did_you_mean(str(unknown), self.taken)
            self.walker.error(self.key(str(unknown)), f"unknown key{hint}")


def _did_you_mean(word: str, choices: object) -> str:
    names = sorted(str(c) for c in choices)  # type: ignore[attr-defined]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    close = close or [n for n in names if len(word) >= 3 and (n.startswith(word) or word.startswith(n))][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _integer(low: int, high: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
        return value

    return convert


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected text, got {_kind(value)}")
    return value


def _access_target(value: object) -> str:
    """``stdout``, ``stderr``, ``off`` or a path; YAML reads a bare ``off`` as false."""
    return "off" if value is False else _text(value)


def _choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return convert


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return seconds


# --------------------------------------------------------------------------- the schema


def _read_config(root: _Section, source: str) -> Config:
    listen = _read_listen(root.section("listen"))
    server = _read_server(root.section("server"))
    headers = _read_headers(root.section("headers"))
    log = _read_log(root.section("log"))
    upstreams: dict[str, UpstreamConfig] = {}
    ups = root.section("upstreams")
    for name in ups.data:
        ups.taken.add(name)
        upstream = _read_upstream(_Section(root.walker, ups.data[name], ups.key(str(name))), str(name))
        if upstream is not None:
            upstreams[str(name)] = upstream
    ups.done()
    routes = tuple(
        route
        for key, item in root.items("routes")
        if (route := _read_route(_Section(root.walker, item, key), ups.data)) is not None
    )
    if not root.has("routes"):
        root.walker.error("routes", "at least one route is needed")
    _check_duplicate_routes(root.walker, routes)
    root.done()
    return Config(listen, server, headers, log, upstreams, routes, source)


def _read_listen(section: _Section) -> tuple[tuple[str, int], ...]:
    addresses = []
    for key, value in section.items("http"):
        try:
            addresses.append(parse_address(value))
        except ValueError as exc:
            section.walker.error(key, str(exc))
    if section.data.get("http") == []:
        section.walker.error(section.key("http"), "give at least one host:port")
    if len(set(addresses)) != len(addresses):
        section.walker.error(section.key("http"), "the same address is listed twice")
    section.done()
    return tuple(addresses) or (DEFAULT_LISTEN,)


def _read_server(s: _Section) -> ServerSettings:
    d = ServerSettings()
    settings = ServerSettings(
        threads=s.get("threads", _integer(1, 1024), d.threads),
        connection_limit=s.get("connection_limit", _integer(1, 1_000_000), d.connection_limit),
        channel_timeout=s.get("channel_timeout", _positive_duration, d.channel_timeout),
        backlog=s.get("backlog", _integer(1, 65535), d.backlog),
        max_request_body=s.get("max_request_body", parse_size, d.max_request_body),
        max_request_header=s.get("max_request_header", parse_size, d.max_request_header),
        outbuf_high_watermark=s.get("outbuf_high_watermark", parse_size, d.outbuf_high_watermark),
    )
    s.done()
    return settings


def _read_headers(s: _Section) -> HeaderSettings:
    proxies = []
    for key, value in s.items("trusted_proxies"):
        try:
            proxies.append(parse_network(value))
        except ValueError as exc:
            s.walker.error(key, str(exc))
    settings = HeaderSettings(
        trusted_proxies=tuple(proxies),
        forwarded=s.get("forwarded", _boolean, False),
        via=s.get("via", _boolean, False),
        pass_server=s.get("pass_server", _boolean, False),
    )
    s.done()
    return settings


def _read_log(s: _Section) -> LogSettings:
    settings = LogSettings(
        access=s.get("access", _access_target, "stdout"),
        level=s.get("level", _choice("debug", "info", "warning", "error"), "info"),
    )
    s.done()
    return settings


def _read_upstream(s: _Section, name: str) -> UpstreamConfig | None:
    servers: list[UpstreamServer] = []
    for key, item in s.items("servers"):
        entry = _Section(s.walker, item if not isinstance(item, str) else {"url": item}, key)
        url = entry.get("url", _text, "")
        weight = entry.get("weight", _integer(1, 1000), 1)
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
    keepalive = s.get("keepalive", _integer(0, 10_000), 32)
    balance = s.get("balance", _choice(*POLICIES), "round_robin")
    hash_on = s.get("hash_on", _hash_source, "client_ip")
    if s.has("hash_on") and balance != "hash":
        s.walker.error(s.key("hash_on"), f"only used with 'balance: hash' ({s.key('balance')} is {balance!r})")
    max_connections = s.get("max_connections", _integer(0, 1_000_000), 0)
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
    text = _text(value)
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", text):
        raise ValueError(f"{value!r} is not a cookie name (a token)")
    return text


def _read_timeouts(t: _Section, base: Timeouts) -> Timeouts:
    """A ``timeouts:`` mapping over ``base`` (the upstream's, for a route's override)."""
    timeouts = Timeouts(
        connect=t.get("connect", _positive_duration, base.connect),
        read=t.get("read", _positive_duration, base.read),
        total=t.get("total", _positive_duration, base.total),
    )
    t.done()
    return timeouts


def _readable_file(value: object) -> str:
    path = Path(_text(value))
    try:
        path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return str(path)


def _read_tls(s: _Section) -> UpstreamTLS:
    tls = UpstreamTLS(
        ca=s.get("ca", _readable_file, None),
        server_name=s.get("server_name", _text, None),
        cert=s.get("cert", _readable_file, None),
        key=s.get("key", _readable_file, None),
        verify=s.get("verify", _boolean, True),
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


def _read_health(s: _Section) -> HealthCheck:
    d = HealthCheck()
    path = s.get("path", _text, d.path)
    if not path.startswith("/"):
        s.walker.error(s.key("path"), f"a check path starts with /, got {path!r}")
    check = HealthCheck(
        path=path,
        interval=s.get("interval", _positive_duration, d.interval),
        timeout=s.get("timeout", _positive_duration, d.timeout),
        statuses=s.get("statuses", _statuses, d.statuses),
        healthy_threshold=s.get("healthy_threshold", _integer(1, 100), d.healthy_threshold),
        unhealthy_threshold=s.get("unhealthy_threshold", _integer(1, 100), d.unhealthy_threshold),
        start_healthy=s.get("start", _choice("healthy", "unhealthy"), "healthy") == "healthy",
    )
    s.done()
    return check


def _read_passive(s: _Section) -> PassiveHealth:
    d = PassiveHealth()
    passive = PassiveHealth(
        failures=s.get("failures", _integer(1, 1000), d.failures),
        statuses=s.get("statuses", _statuses, d.statuses),
        ejection=s.get("ejection", _positive_duration, d.ejection),
        max_ejection=s.get("max_ejection", _positive_duration, d.max_ejection),
    )
    if passive.max_ejection < passive.ejection:
        s.walker.error(s.key("max_ejection"), f"is shorter than {s.key('ejection')}")
    s.done()
    return passive


def _read_retries(s: _Section) -> RetryPolicy:
    d = RetryPolicy()
    retries = RetryPolicy(
        count=s.get("count", _integer(0, 10), d.count),
        methods=s.get("methods", _methods, d.methods),
        statuses=s.get("statuses", _statuses, d.statuses),
        budget=s.get("budget", _share, d.budget),
        min_retries=s.get("min_retries", _integer(0, 1000), d.min_retries),
        window=s.get("window", _positive_duration, d.window),
    )
    s.done()
    return retries


def _hash_source(value: object) -> str:
    text = _text(value)
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
    host = _text(value).lower().rstrip(".")
    bare = host[2:] if host.startswith("*.") else host
    if ":" in bare and not bare.startswith("["):
        raise ValueError(f"{value!r}: give the host without a port (ports are ignored when matching)")
    if "*" in bare or not is_valid_host(bare):
        raise ValueError(f"{value!r} is not a host name, '*.domain' or an IP address")
    return host


def _route_path(value: object) -> str:
    text = _text(value)
    if not text.startswith("/") or "?" in text or "#" in text:
        raise ValueError(f"{value!r}: a path prefix starts with / and has no query")
    normal = normalize_path(text)
    if normal != text:
        raise ValueError(f"{value!r} is not in normal form; write {normal!r}")
    return text.rstrip("/") or "/"


def _read_route(s: _Section, upstream_names: dict) -> RouteConfig | None:
    host = s.get("host", _route_host, None)
    path = s.get("path", _route_path, "/")
    upstream = s.get("upstream", _text, None)
    respond = _read_respond(s.section("respond")) if s.has("respond") else None
    s.taken.add("respond")
    if upstream is not None and upstream not in upstream_names:
        hint = _did_you_mean(upstream, upstream_names)
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
    route = RouteConfig(
        key=s.path,
        host=host,
        path=path,
        upstream=upstream,
        respond=respond,
        strip_prefix=s.get("strip_prefix", _boolean, False),
        host_header=host_header,
        timeouts=timeouts,
    )
    s.done()
    return route


def _host_header(value: object) -> str:
    text = _text(value)
    if text not in ("client", "upstream") and not is_valid_host(text.rpartition(":")[0] or text):
        raise ValueError(f"expected client, upstream or a host name, got {value!r}")
    return text


def _read_respond(s: _Section) -> Respond:
    respond = Respond(
        status=s.get("status", _integer(200, 599), 200),
        body=s.get("body", str, ""),
        content_type=s.get("content_type", _text, Respond.content_type),
    )
    s.done()
    return respond


def _check_duplicate_routes(walker: _Walker, routes: tuple[RouteConfig, ...]) -> None:
    seen: dict[tuple[str | None, str], str] = {}
    for route in routes:
        earlier = seen.setdefault((route.host, route.path), route.key)
        if earlier != route.key:
            where = f"host {route.host!r}" if route.host else "any host"
            walker.error(route.key, f"same host and path as {earlier} ({where}, path {route.path!r})")
