"""The WSGI application: match a route, run its handler chain, render errors.

Everything a request needs (route table, handler chains, upstream pools) is
built once per configuration into a :class:`ProxyState`; a request reads
``self.state`` once at its start, so a later swap to a new state never
changes the rules under a request in flight.

A handler chain is a list of filters around a terminal handler. A filter is
any callable ``filter(request, next) -> Response`` that may answer by itself
(403, 429, a cache hit) or call ``next(request)``; the terminal handler
forwards upstream or answers locally. This module is the only place where an
exception becomes an error response.
"""

from __future__ import annotations

import logging
import re
import select
import time
from functools import partial
from typing import Any, Callable, Iterable, Sequence

from .cache import Caches, build_caches
from .compression import CompressFilter
from .config import Config, ForwardAuth, UpstreamConfig
from .error_pages import ErrorPageMaker
from .errors import Banned, ClientError, ProxyError, RateLimited, UriTooLong, WAFDenied
from .header_rules import RequestHeaderFilter, ResponseRules
from .headers import ForwardingHeaders
from .observe.accesslog import AccessLog
from .observe.metrics import RequestStats
from .request import Request, refuse_ambiguous_path
from .response import BodyStream, Filter, FixedResponder, Handler, Response, TunnelResponse
from .ratelimit import build_limiters
from .redirect import RedirectResponder
from .routing import Route, RouteTable
from .security.access import AccessFilter
from .security.basic_auth import BasicAuthFilter
from .security.bots import BanList, BotGuard
from .security.cors import CorsFilter
from .security.forward_auth import ForwardAuthFilter
from .security.waf import baseline_rules, waf_filter
from .static import StaticFiles
from .tls.routes import TLSRouteFilter
from .tls.routes import needs_filter as needs_tls_filter
from .tunnels import Tunnel, Tunnels
from .upstream.forward import UpstreamHandler
from .upstream.pool import Upstream
from .upgrade import UPGRADE, UpgradeOffer

log = logging.getLogger("simpleproxy")

#: what an X-Request-Id from a trusted proxy may look like (UUIDs, hex, base64, ...)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def compose(filters: Sequence[Filter], terminal: Handler) -> Handler:
    """Wrap ``terminal`` in ``filters``, the first filter outermost. Built once per config."""
    handler = terminal
    for filter_ in reversed(filters):
        handler = partial(filter_, next=handler)  # type: ignore[call-arg]
    return handler


class ProxyState:
    """Route table, upstream pools and header policy for one configuration."""

    def __init__(
        self, config: Config, clock: Callable[[], float] | None = None, previous: ProxyState | None = None
    ) -> None:
        """``clock``: seconds, for the cache and the limits (real time when None; tests pass a fake).
        ``previous``: the state this one replaces on a reload; what did not change is taken
        over (upstream pools with their connections and health, stored responses, buckets)."""
        self.config = config
        self.max_body = config.server.max_request_body
        self.max_uri = config.server.max_uri
        self.reject_ambiguous_paths = config.server.reject_ambiguous_paths
        self.trusts_proxies = bool(config.headers.trusted_proxies)
        self.headers = ForwardingHeaders(config.headers)
        #: open WebSocket (upgraded) connections: carried over reloads, so they survive them
        self.tunnels: Tunnels = previous.tunnels if previous is not None else Tunnels(_max_tunnels(config))
        old: dict[str, Upstream] = previous.upstreams if previous is not None else {}
        #: the configured upstreams, and each forward_auth's service (named after its key)
        self.upstreams: dict[str, Upstream] = {
            name: old[name] if name in old and old[name].config == cfg else Upstream(cfg)
            for name, cfg in {**config.upstreams, **_auth_services(config)}.items()
        }
        self.caches: Caches
        self.caches, cache_filters = build_caches(
            config, clock or time.time, previous.caches if previous is not None else None
        )
        self.limit_stores: dict[Any, Any]
        limit_filters, self.limit_stores = build_limiters(
            config, clock or time.monotonic, previous.limit_stores if previous is not None else None
        )
        self.limit_filters = limit_filters  #: by route key
        global_access = AccessFilter(config.access) if config.access is not None else None
        #: one for every route without its own, so a user verified on one is verified on all
        global_auth = BasicAuthFilter(config.basic_auth) if config.basic_auth is not None else None
        global_cors = CorsFilter(config.cors) if config.cors is not None else None
        global_forward_auth = self._forward_auth(config.forward_auth, "forward_auth")
        #: checked before routing (user agents, bans); None without ``bots:``
        self.bots = _bot_guard(config, clock, previous)
        baseline = baseline_rules()
        self.cache_filters = cache_filters  #: by route key, for routes with ``cache:``
        #: where redirect_https sends clients: the port the server bound (set by ProxyServer, real even
        #: for ``:0``), kept over reloads since listeners change only at a restart
        self.https_port: int = previous.https_port if previous is not None else (
            config.https.addresses[0][1] if config.https else 443)
        #: the top level's error pages, for answers no route made (404 for no route, a refused head)
        self.error_pages = ErrorPageMaker(config.errors) if config.errors is not None else None
        routes = []
        for route_config in config.routes:
            terminal: Handler
            if route_config.respond is not None:
                terminal = FixedResponder(route_config.respond)
            elif route_config.redirect is not None:
                match = route_config.match
                terminal = RedirectResponder(route_config.redirect, match.path_regex if match is not None else None)
            elif route_config.static is not None:
                terminal = StaticFiles(route_config.static, f"{route_config.key}.static")
            else:
                upstream = self.upstreams[route_config.upstream]  # type: ignore[index]
                terminal = UpstreamHandler(route_config, upstream, self.headers, self.max_body, self.tunnels)
            filters: list[Filter] = []
            if global_access is not None:
                filters.append(global_access)
            if route_config.access is not None:
                filters.append(AccessFilter(route_config.access, f"{route_config.key}.access"))
            waf = waf_filter(config.waf, route_config.waf, baseline)
            if waf is not None:
                filters.append(waf)
            if route_config.key in limit_filters:
                filters.append(limit_filters[route_config.key])
            if needs_tls_filter(route_config):  # before credentials: a redirect to https comes first
                filters.append(TLSRouteFilter(route_config, lambda: self.https_port))
            cors = route_config.cors  # before credentials: browsers send preflights without any
            if cors is None and global_cors is not None:
                filters.append(global_cors)
            elif cors is not None and cors.enabled:
                filters.append(CorsFilter(cors, f"{route_config.key}.cors"))
            auth = route_config.basic_auth
            if auth is None and global_auth is not None:
                filters.append(global_auth)
            elif auth is not None and auth.enabled:
                filters.append(BasicAuthFilter(auth, f"{route_config.key}.basic_auth"))
            forward_auth = route_config.forward_auth
            if forward_auth is None and global_forward_auth is not None:
                filters.append(global_forward_auth)
            elif forward_auth is not None:
                own = self._forward_auth(forward_auth, f"{route_config.key}.forward_auth")
                if own is not None:
                    filters.append(own)
            if route_config.key in cache_filters:  # after credentials: nothing stored reaches anyone without them
                filters.append(cache_filters[route_config.key])
            compress = route_config.compress if route_config.compress is not None else config.compress
            if compress is not None and compress.enabled:  # under the cache: it stores encoded variants
                filters.append(CompressFilter(compress, f"{route_config.key}.compress"))
            rules = [r for r in (config.request_headers, route_config.request_headers) if r]
            if rules and route_config.upstream is not None:  # last: only the backend sees what they change
                filters.append(RequestHeaderFilter(rules, f"{route_config.key}.request_headers"))
            route = Route(route_config, compose(filters, terminal), filters, terminal)
            self._finishing(route)
            routes.append(route)
        self.table = RouteTable(routes)

    def _finishing(self, route: Route) -> None:
        """What every answer of ``route`` goes through once made: its error pages (and the
        interception of a backend's errors), then the response header rules."""
        config, top = route.config, self.config
        errors = config.errors if config.errors is not None else top.errors
        route.error_pages = ErrorPageMaker(errors) if errors is not None else None
        rules = [r for r in (top.response_headers, config.response_headers) if r]
        security = config.security_headers if config.security_headers is not None else top.security_headers
        if rules or security:
            route.finish = ResponseRules(rules, security)

    def _forward_auth(self, settings: ForwardAuth | None, where: str) -> ForwardAuthFilter | None:
        if settings is None or not settings.enabled or settings.upstream is None:
            return None
        return ForwardAuthFilter(settings, self.upstreams[settings.upstream.name], self.headers, where)

    def read(self, environ: dict[str, Any], started: float) -> Request:
        """The request as the proxy reads it; a target over ``server.max_uri`` or a malformed
        request raises the answer (414, 400, 411, 413)."""
        if len(environ.get("REQUEST_URI") or "") > self.max_uri:
            raise UriTooLong(f"request target over {self.max_uri} bytes")
        return Request(environ, self.max_body, started)

    def admit(self, request: Request) -> Route:
        """What a request meets before its route's filters: the client's id and address (from a
        trusted proxy's fields only), the bot checks, the route, the ambiguous-path check.
        Raises the answer when one of them refuses it; ``simpleproxy route`` calls the same."""
        environ = request.environ
        if self.trusts_proxies:  # only then may the client's id and address come from headers
            request.request_id = self.request_id(environ, request.client)
            request.client_ip = self.headers.client_ip(environ, request.client)
        else:
            request.request_id = Request.new_id()
        if self.bots is not None:
            self.bots.check(request.client_ip, environ, request.host)
        route = self.table.match(request.host, request.path, request)
        request.route = route
        if self.reject_ambiguous_paths:
            refuse_ambiguous_path(request.path, route.config)
        return route

    def request_id(self, environ: dict[str, Any], client: str) -> str:
        """A trusted proxy's ``X-Request-Id`` (if it looks like one), else a new id."""
        incoming = environ.get("HTTP_X_REQUEST_ID")
        if incoming is not None and _REQUEST_ID.fullmatch(incoming) and self.headers.is_trusted(client):
            return incoming
        return Request.new_id()

    def close(self, successor: ProxyState | None = None) -> None:
        """Close the upstream pools ``successor`` does not take over (all without one).

        Requests still in flight on a closed pool finish on the connection they hold.
        """
        kept = successor.upstreams.values() if successor is not None else ()
        for upstream in self.upstreams.values():
            if not any(upstream is other for other in kept):
                upstream.close()
        if successor is None:  # on a reload the successor closed the stores it did not keep
            for store in self.limit_stores.values():
                store.close()


def _declared_length(headers: list[tuple[str, str]]) -> int:
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return 0


def _auth_services(config: Config) -> dict[str, UpstreamConfig]:
    """The upstream of every forward_auth, by its name (its configuration key and server)."""
    found = [config.forward_auth, *(route.forward_auth for route in config.routes)]
    return {auth.upstream.name: auth.upstream for auth in found if auth is not None and auth.upstream is not None}


def _max_tunnels(config: Config) -> int:
    """The server's tunnel bound; on Windows select() watches at most 512 sockets, two per tunnel."""
    bound = config.server.max_tunnels
    return bound if hasattr(select, "poll") else min(bound or 200, 200)


def _bot_guard(config: Config, clock: Callable[[], float] | None, previous: ProxyState | None) -> BotGuard | None:
    """The bot checks; the ban list carries over a reload when its settings did not change."""
    settings = config.bots
    if settings is None:
        return None
    bans = None
    if settings.ban_after:
        old = previous.bots.bans if previous is not None and previous.bots is not None else None
        same = previous is not None and previous.config.bots is not None and _ban_terms(previous.config.bots) == _ban_terms(settings)
        bans = old if same and old is not None else BanList(
            settings.ban_after, settings.ban_window, settings.ban_for, frozenset(settings.ban_statuses),
            settings.max_tracked, clock or time.monotonic,
        )
    return BotGuard(settings, bans)


def _ban_terms(settings: Any) -> tuple:
    return (settings.ban_after, settings.ban_window, settings.ban_for, settings.ban_statuses, settings.max_tracked)


class ProxyApp:
    """``ProxyApp(config)`` is a WSGI application that proxies by the config's routes."""

    def __init__(
        self, config: Config, access_log: AccessLog | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        """``clock`` (seconds since the epoch) is what the cache reads; tests pass a fake one."""
        self.clock = clock
        self.state = ProxyState(config, clock)
        #: request counts and latencies for /metrics, kept across reloads; only counted when an admin
        #: listener can show them (a request pays about a microsecond and a half for them)
        self.stats: RequestStats | None = RequestStats() if config.admin.listen is not None else None
        self.access_log = access_log if access_log is not None else AccessLog.to(config.log.access, config.log.format)

    @property
    def config(self) -> Config:
        return self.state.config

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        state = self.state
        started = time.perf_counter()
        request = None
        strike = True  #: the answer counts toward a ban (bots)
        try:
            request = state.read(environ, started)
            route = state.admit(request)
            response = route.handler(request)
            if route.error_pages is not None and route.error_pages.intercept:
                response = route.error_pages.intercepted(request, response)
        except ProxyError as exc:
            response = self._error_response(exc, environ, request)
            strike = exc.strike and not isinstance(exc, Banned)
            if isinstance(exc, RateLimited):
                response.limit = "rejected"
            elif isinstance(exc, WAFDenied) and self.stats is not None:
                self.stats.count_waf(request.route.label if request and request.route else "-", exc.rule)
        except Exception:  # a bug: log it whole, tell the client little
            rid = request.get_request_id() if request else ""
            log.exception("internal error serving %s (request id %s)", environ.get("REQUEST_URI", ""), rid)
            response = self._error_response(ProxyError("internal error"), environ, request)
        if request is not None and request.route is not None and request.route.finish is not None:
            response = request.route.finish(request, response)
        if state.bots is not None and strike:
            state.bots.observe(request.client_ip if request is not None else environ.get("REMOTE_ADDR", ""),
                               int(response.status[:3]))
        headers = response.headers  # a list of this response's own: added to in place
        if request is not None:  # else the error response carries the id it made
            headers.append(("X-Request-Id", request.get_request_id()))
        if response.own_headers is not None:
            headers.extend(response.own_headers)
        if response.__class__ is TunnelResponse:
            return self._open_tunnel(environ, request, response, started)  # type: ignore[arg-type]
        start_response(response.status, headers)
        body = response.body
        if environ["REQUEST_METHOD"] == "HEAD" and body:  # the fields only, whoever made the answer
            close = getattr(body, "close", None)  # (an error page, an auth service's GET verdict)
            if close is not None:
                close()
            body = []
        if type(body) is list:
            self._done(environ, request, response, sum(map(len, body)), started)
            return body
        if isinstance(body, BodyStream):
            body.on_close = partial(self._done_streaming, environ, request, response, started)
        else:  # the server's own file wrapper (static.py): counted at its length now, as a list is
            self._done(environ, request, response, _declared_length(headers), started)
        return body

    def front_error(self, environ: dict[str, Any], exc: ProxyError) -> tuple[str, list[tuple[str, str]], bytes]:
        """The answer to a request the front end refused before calling the app (frontend/channel.py), made
        and logged as every error is: -> (status, fields, body)."""
        started = time.perf_counter()
        response = self._error_response(exc, environ, None)
        state = self.state
        if state.bots is not None:  # a malformed request counts towards a ban as a 400 from the app does
            state.bots.observe(environ["REMOTE_ADDR"], exc.status)
        body = response.body[0]  # type: ignore[index]
        self._done(environ, None, response, len(body), started)
        return response.status, response.headers + (response.own_headers or []), body

    def claims(self, environ: dict[str, Any]) -> bool:
        """Whether a request is this proxy's to answer: a route matches it, or it is malformed (400)."""
        state = self.state
        try:
            request = state.read(environ, 0.0)
        except ProxyError:
            return True
        if state.trusts_proxies:
            request.client_ip = state.headers.client_ip(environ, request.client)
        site = state.table.site_for(request.host)
        return site is not None and site.match(request.path, request) is not None

    def _open_tunnel(
        self, environ: dict[str, Any], request: Request, response: TunnelResponse, started: float
    ) -> Iterable[bytes]:
        """Take the client's socket from the front end and relay it with the backend's; nothing else is sent.

        The handshake is counted now (its latency is the time to the 101); the access-log
        line is written when the tunnel closes, with its duration and bytes.
        """
        offer: UpgradeOffer = environ[UPGRADE]
        connection = offer.detach()
        if self.stats is not None:
            self.stats.record(request.route.label, "101", time.perf_counter() - started, "-", response.limit)
        if connection is None:  # the client left meanwhile
            response.backend.close()
            response.finish()
            if self.access_log.stream is not None:
                self._log(environ, request, response, 0, time.perf_counter() - started)
            return []
        finish = response.finish

        def release() -> None:  # the client's connection stays counted by the front end until the tunnel ends
            finish()
            connection.release()

        response.finish = release
        tunnel = Tunnel(
            connection.sock, response.backend, response.rest, connection.buffered, response.idle_timeout,
            label=response.label,
            on_close=partial(self._tunnel_closed, environ, request, response, started),
            head="".join(
                [f"HTTP/1.1 {response.status}\r\n", *(f"{k}: {v}\r\n" for k, v in response.headers), "\r\n"]
            ).encode("latin-1"),
        )
        try:
            self.state.tunnels.start(tunnel)
        except Exception:  # no relay could be started: nothing may stay counted or open
            log.exception("could not start a tunnel (request id %s)", request.request_id)
            tunnel.reason = "error"
            tunnel.close()
            self._tunnel_closed(environ, request, response, started, tunnel)
        return []

    def _tunnel_closed(
        self, environ: dict[str, Any], request: Request, response: TunnelResponse, started: float, tunnel: Tunnel
    ) -> None:
        self.state.tunnels.ended(tunnel)
        response.finish()
        if self.access_log.stream is not None:
            self._log(environ, request, response, tunnel.bytes_down, time.perf_counter() - started, tunnel)

    def _done(self, environ: dict[str, Any], request: Request | None, response: Response, size: int, started: float) -> None:
        """The answer has gone out (or its body ended): count it, log it."""
        seconds = time.perf_counter() - started
        route = request.route if request is not None else None
        if self.stats is not None:
            label = route.label if route is not None else "-"
            self.stats.record(label, response.status[:3], seconds, response.cache, response.limit)
            if response.answer != "-":
                self.stats.count_answer(label, response.answer)
        if self.access_log.stream is not None:
            self._log(environ, request, response, size, seconds)

    def _log(
        self, environ: dict[str, Any], request: Request | None, response: Response, size: int, seconds: float,
        tunnel: Tunnel | None = None,
    ) -> None:
        route = request.route if request is not None else None
        key = route.config.key if route is not None else "-"
        if request is not None:
            rid = request.request_id
        else:  # an error answered without a request: its response carries the id
            rid = next((value for name, value in response.own_headers or () if name == "X-Request-Id"), "-")
        client = request.client_ip if request is not None else environ.get("REMOTE_ADDR", "-")
        self.access_log.log(environ, response.status, size, seconds, response.upstream, rid, key, response.cache,
                            response.limit, client, tunnel, request.user if request is not None else "")

    def _done_streaming(
        self, environ: dict[str, Any], request: Request | None, response: Response, started: float, body: BodyStream
    ) -> None:
        self._done(environ, request, response, body.sent, started)

    def _error_response(self, exc: ProxyError, environ: dict[str, Any], request: Request | None) -> Response:
        """The one place that writes an error page: short, plain, with a request id; or the page the
        route (else the top level) has for the status (error_pages.py)."""
        rid = request.get_request_id() if request is not None else Request.new_id()
        if not isinstance(exc, ClientError):
            where = f" from {exc.upstream}" if exc.upstream else ""
            log.warning(
                "%d %s%s for %s %s (request id %s)",
                exc.status, exc.detail, where, environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI", ""), rid,
            )
        route = request.route if request is not None else None
        pages = route.error_pages if route is not None else self.state.error_pages
        made = pages.make(exc.status, exc.reason, exc.detail, rid, environ) if pages is not None else None
        if made is not None:
            content_type, body = made
        else:
            content_type = "text/plain; charset=utf-8"
            body = f"{exc.status} {exc.reason}: {exc.detail}\nrequest id: {rid}\n".encode("utf-8")
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *exc.headers]
        response = Response(f"{exc.status} {exc.reason}", headers, [body], exc.upstream or "-")
        if made is not None:
            response.answer = "error_page"
        if request is None:  # no request to carry the id: the response does
            response.own_headers = [("X-Request-Id", rid)]
        return response

    def reload(self, config: Config) -> None:
        """Serve ``config`` from the next request on; requests in flight finish on the old one."""
        old = self.state
        self.state = ProxyState(config, self.clock, previous=old)
        if config.log != old.config.log:
            log_before, self.access_log = self.access_log, AccessLog.to(config.log.access, config.log.format)
            log_before.close()
        old.close(successor=self.state)

    def purge(self, url: str, prefix: bool = False) -> int:
        """Drop stored responses for a URL (``http://host/path``), or every URL under a prefix."""
        caches = self.state.caches
        return caches.purge_prefix(url) if prefix else caches.purge(url)

    def purge_tag(self, tag: str) -> int:
        """Drop the stored responses a backend tagged ``tag`` (Cache-Tag, Surrogate-Key), on every route."""
        return self.state.caches.purge_tag(tag)

    def close(self) -> None:
        """Close tunnels, upstream pools and an owned access log file."""
        self.state.tunnels.close()
        self.state.close()
        self.access_log.close()
