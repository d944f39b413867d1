"""``simpleproxy route``: what a request would meet, worked out without sending it.

The explanation runs on the objects a running proxy serves with: a
:class:`~simpleproxy.app.ProxyState` built from the configuration, its reading
and admission of the request (:meth:`ProxyState.read`, :meth:`ProxyState.admit`),
and the matched route's own filters, called one by one. Access lists, the WAF
and the TLS rules decide here as they would there; rate limits and the cache,
which would spend a token or store an answer, are described by the same
objects (the limits' settings, the cache filter's key and :meth:`passed_on`)
instead of run; and the terminal handler says what it would send (its
timeouts, target and Host). A test sends the same requests to a running proxy
and compares. Nothing is sent and no socket is opened.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

from .app import ProxyState
from .cache.filter import CacheFilter
from .cache.policy import SAFE_METHODS, storable
from .compression import CompressFilter, choose
from .config import Config, UpstreamConfig
from .errors import ProxyError
from .grammar import environ_key, field_name
from .header_rules import RequestHeaderFilter, ResponseRules
from .redirect import RedirectResponder
from .static import StaticFiles, content_type
from .ratelimit.filter import RateLimitFilter
from .request import Request
from .response import FixedResponder, Response
from .routing import Route
from .security.access import AccessFilter
from .security.basic_auth import BasicAuthFilter
from .security.cors import CorsFilter
from .security.forward_auth import ForwardAuthFilter
from .security.waf import WAFFilter
from .tls.routes import TLSRouteFilter
from .upstream.forward import UpstreamHandler

#: the client address a request is explained for
CLIENT = "127.0.0.1"


class _Reached(Exception):
    """Raised by the stand-in for the rest of a route's chain: the filter passed the request on."""


def _next(request: Request) -> Response:
    raise _Reached


def explain(config: Config, url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """-> (the status the proxy would answer with if it answers itself, else 0; the explanation)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    scheme = parts.scheme.lower()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method.upper(), "REQUEST_URI": target, "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": parts.netloc, "REMOTE_ADDR": CLIENT, "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(), "wsgi.input_terminated": True,
    }
    for name, value in (headers or {}).items():
        environ[environ_key(name)] = value
    out = [f"{environ['REQUEST_METHOD']} {scheme}://{parts.netloc}{target}"]
    state = ProxyState(config)
    try:
        return _explain(state, environ, out), "\n".join(out)
    finally:
        state.close()


def _explain(state: ProxyState, environ: dict[str, Any], out: list[str]) -> int:
    request: Request | None = None
    try:
        request = state.read(environ, 0.0)
        out.append(f"  request   host {request.host!r}, path {request.path!r}" + (f", query {request.query!r}" if request.query else ""))
        route = state.admit(request)
    except ProxyError as exc:
        if request is not None:  # refused by every route's matchers, perhaps: say why
            _passed_over(out, state, request, None)
        return _answer(out, exc)
    r = route.config
    site = "any host" if r.host is None else ("wildcard " if r.host.startswith("*.") else "exact host ") + r.host
    matchers = f", {r.match.count} matcher(s) hold" if r.match is not None else ""
    out.append(f"  route     {r.key}: {site}, path prefix {r.path}{matchers}")
    _passed_over(out, state, request, route)
    _finishing(out, route)
    if not any(isinstance(f, RateLimitFilter) for f in route.filters):
        out.append("  limits    none")
    if not any(isinstance(f, WAFFilter) for f in route.filters):
        out.append("  waf       no rules")
    for filter_ in route.filters:
        status = _filter(out, filter_, request)
        if status:
            return status
    if not any(isinstance(f, CacheFilter) for f in route.filters):
        out.append("  cache     off for this route")
    terminal = route.terminal
    if isinstance(terminal, FixedResponder):
        status = int(terminal(request).status[:3])
        out.append(f"  answer    {status} from the route's respond: (no backend is asked)")
        return status
    if isinstance(terminal, RedirectResponder):
        answer = terminal(request)
        out.append(f"  answer    {answer.status} to {terminal.location(request)} (the route's redirect)")
        return int(answer.status[:3])
    if isinstance(terminal, StaticFiles):
        return _static(out, terminal, route, request)
    assert isinstance(terminal, UpstreamHandler)
    _upstream(out, terminal, route, request)
    return 0


def _passed_over(out: list[str], state: ProxyState, request: Request, chosen: Route | None) -> None:
    """The routes whose prefix took the path but whose matchers did not take the request."""
    site = state.table.site_for(request.host)
    if site is None:
        return
    for other, why in site.refused(request.path, request):
        if other is not chosen:
            out.append(f"  passed    {other.config.key} (prefix {other.prefix}): {why}")


def _finishing(out: list[str], route: Route) -> None:
    """What the route does to every answer: its response header rules, its error pages."""
    finish = route.finish
    if isinstance(finish, ResponseRules):
        said = [f"{op} {name}" for op, _, name, _ in finish.steps]
        said += ["security headers where missing"] if finish.security else []
        out.append(f"  response  {'; '.join(said)}")
    pages = route.error_pages
    if pages is not None:
        statuses = ", ".join(str(code) for code in sorted(pages.pages))
        out.append(f"  errors    pages for {statuses}" + (" (also for the backend's answers)" if pages.intercept else ""))


def _static(out: list[str], files: StaticFiles, route: Route, request: Request) -> int:
    wanted = route.upstream_path(request.path)
    kind, found = files.find(wanted)
    if kind == "directory":
        out.append(f"  answer    301 to {request.path}/ (a directory: its URL ends with a slash)")
        return 301
    if kind == "file":
        out.append(f"  static    {files.root}: serves {found} ({content_type(found)})")
        return 200
    why = f" ({found})" if found else ""
    if files.fallback is not None:
        out.append(f"  static    {files.root}: nothing at {wanted}{why}; the fallback {files.fallback} is served")
        return 200
    out.append(f"  answer    404: nothing at {wanted} under {files.root}{why}")
    return 404


def _answer(out: list[str], exc: ProxyError) -> int:
    out.append(f"  answer    {exc.status} {exc.reason}: {exc.detail} (no backend is asked)")
    return exc.status


def _filter(out: list[str], filter_: Any, request: Request) -> int:
    """One filter of the route, in the chain's order: its part of the explanation; the status
    when it answers the request itself, else 0."""
    if isinstance(filter_, RateLimitFilter):  # described: running it would spend a token
        for limiter in filter_.limiters:
            limit = limiter.config
            store = "" if limit.store == "memory" else f", shared in Redis (on error: {limit.on_store_error})"
            out.append(f"  limits    {limit.where}: {limit.rate_text}, burst {limit.burst}, per {'+'.join(limit.key)}"
                       f" ({limit.mode}){store}")
        return 0
    if isinstance(filter_, ForwardAuthFilter):  # described: running it would ask the service
        copied = f"; a 2xx lets it through with {', '.join(filter_.settings.copy_headers)}" if filter_.settings.copy_headers else ""
        out.append(f"  auth      {filter_.where}: GET {filter_.settings.url} first (not asked here){copied}; "
                   "any other answer goes to the client")
        return 0
    if isinstance(filter_, CompressFilter):  # works on the answer: described
        chosen = choose(request.environ.get("HTTP_ACCEPT_ENCODING"), filter_.encodings)
        out.append(f"  compress  {filter_.where}: {', '.join(filter_.encodings)} for text types over "
                   f"{filter_.min_size} bytes; this client gets " + (chosen or "identity (no encoding it accepts)"))
        return 0
    if isinstance(filter_, CacheFilter):  # described: running it would look up and store
        _cache(out, filter_, request)
        return 0
    if isinstance(filter_, RequestHeaderFilter):
        sent = filter_.apply(request).environ
        changes = [f"{field_name(key)}: {sent[key]}" for key in sent if sent[key] != request.environ.get(key)]
        changes += [f"no {field_name(key)}" for key in request.environ if key.startswith("HTTP_") and key not in sent]
        out.append(f"  headers   {filter_.where}: the backend gets " + ("; ".join(changes) or "the fields unchanged"))
        return 0
    if isinstance(filter_, WAFFilter):
        action, name = filter_.verdict(request)
        names = ", ".join(rule.name for rule in filter_.rules)
        outcome = {"deny": f"refused by {name} (403)", "allow": f"allowed by {name}; later rules skipped"}.get(action, "passes")
        out.append(f"  waf       {len(filter_.rules)} rules ({names}): {outcome}")
    elif isinstance(filter_, CorsFilter):
        origin = request.environ.get("HTTP_ORIGIN")
        verdict = "no Origin sent" if origin is None else f"{origin} {'allowed' if filter_.allows(origin) else 'not allowed'}"
        out.append(f"  cors      {filter_.where}: origins {', '.join(filter_.settings.origins)}; {verdict}")
    elif isinstance(filter_, BasicAuthFilter):
        out.append(f"  auth      {filter_.where}: Basic, realm {filter_.realm!r}; the backend gets X-Forwarded-User"
                   + (" and the client's Authorization" if filter_.forward_credentials else ", not the password"))
    elif isinstance(filter_, AccessFilter):
        rules = [f"allow only {', '.join(map(str, filter_.allow))}"] if filter_.allow else []
        rules += [f"deny {', '.join(map(str, filter_.deny))}"] if filter_.deny else []
        verdict = "passes" if filter_.permits(request.client_ip) else "refused"
        out.append(f"  access    {filter_.where}: {'; '.join(rules)}; client {request.client_ip} {verdict}")
    try:
        answer = filter_(request, next=_next)
    except _Reached:
        if isinstance(filter_, TLSRouteFilter):
            _tls(out, filter_, request)
        return 0
    except ProxyError as exc:
        return _answer(out, exc)
    status = int(answer.status[:3])
    location = dict(answer.headers).get("Location")
    out.append(f"  answer    {answer.status}" + (f" to {location}" if location else "") + " (no backend is asked)")
    return status


def _tls(out: list[str], tls: TLSRouteFilter, request: Request) -> None:
    """What the TLS rules add to a request they let through."""
    if request.scheme != "https":
        return
    if tls.client_cert is not None:
        allowed = "any verified one" if not tls.client_cert else "one of: " + "; ".join(tls.client_cert)
        out.append(f"  tls       needs a client certificate, {allowed} (403 otherwise)")
    if tls.hsts is not None:
        out.append(f"  tls       answers carry {tls.hsts[0]}: {tls.hsts[1]}")


def _upstream(out: list[str], handler: UpstreamHandler, route: Route, request: Request) -> None:
    upstream = handler.upstream
    config: UpstreamConfig = upstream.config
    servers = ", ".join(s.url + (f" (weight {s.weight})" if s.weight != 1 else "") for s in config.servers)
    policy = config.balance + (f" on {config.hash_on}" if config.balance == "hash" else "")
    out.append(f"  upstream  {upstream.name}: {policy} over {servers}")
    if upstream.sticky_cookie:
        pinned = upstream.sticky_server(request)
        sent = upstream.sticky_cookie in (request.environ.get("HTTP_COOKIE") or "")
        out.append(f"  sticky    cookie {upstream.sticky_cookie}" + (
            f" (names {pinned.name}: it is tried first)" if pinned is not None
            else " (sent, but names no server here: one is chosen and set on the answer)" if sent
            else " (not sent: set on the answer)"))
    target = handler.sent_target(request)
    host = handler.sent_host(request, "(the server's host:port)")
    out.append(f"  forwarded {request.method} {target}" + (" (path changed by the route)" if target != request.path + request.query else "")
               + f", Host: {host}, X-Forwarded-For/-Proto/-Host rebuilt")
    t = handler.timeouts
    out.append(f"  timeouts  connect {t.connect:g}s, read {t.read:g}s" + (f", total {t.total:g}s" if t.total else ""))
    retried = request.method in handler.retried_methods
    out.append(f"  retries   {config.retries.count} on other servers" + ("" if retried else f" (not for {request.method})")
               + f", within a budget of {config.retries.budget:.0%}")
    health = "active checks on " + config.health.path if config.health else "no active checks"
    out.append(f"  health    {health}; ejected after {config.passive.failures} failures in a row")


def _cache(out: list[str], cache: CacheFilter, request: Request) -> None:
    settings = cache.freshness
    store = "the shared store" if cache.store is cache.caches.shared else f"own {cache.store.max_size} bytes"
    passed_on = cache.passed_on(request)
    if passed_on == "method":
        effect = "not stored" + ("" if request.method in SAFE_METHODS else "; a 2xx or 3xx answer invalidates the URL")
        out.append(f"  cache     on ({store}); {request.method} is {effect}")
        return
    how = {"upgrade": "passed on (an upgrade)", "precondition": "passed to the origin (a precondition for it)"}.get(
        passed_on, "looked up, stored when RFC 9111 allows")
    if not passed_on and storable(request.method, 200, {}, {}, {}, False) == "method":  # HEAD
        how = f"looked up (a stored GET answers it); a {request.method} answer is not stored"
    limits = [f"max_ttl {settings.max_ttl:g}s"] if settings.max_ttl else []
    if settings.default_ttl:
        limits.append(f"default_ttl {settings.default_ttl:g}s")
    varies = f"; also varies on {', '.join(cache.also_vary)}" if cache.also_vary else ""
    out.append(f"  cache     on ({store}{', ' + ', '.join(limits) if limits else ''}); key {cache.key(request)}{varies}; {how}")
