"""``simpleproxy route``: what a request would meet, worked out without sending it.

The request goes through the same code the proxy runs (the request reader,
the route table), so the explanation cannot drift from the behaviour; what
happens after routing is read from the route's configuration.
"""

from __future__ import annotations

import io
from urllib.parse import urlsplit

from .config import Config, RouteConfig, UpstreamConfig
from .errors import ProxyError
from .grammar import environ_key
from .request import Request, refuse_ambiguous_path
from .routing import Route, RouteTable
from .security.waf import baseline_rules, waf_filter

_SAFE = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))


def explain(config: Config, url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """-> (the status the proxy would answer with if it answers itself, else 0; the explanation)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    scheme = parts.scheme.lower()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    environ = {
        "REQUEST_METHOD": method.upper(), "REQUEST_URI": target, "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": parts.netloc, "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(), "wsgi.input_terminated": True,
    }
    for name, value in (headers or {}).items():
        environ[environ_key(name)] = value
    out = [f"{environ['REQUEST_METHOD']} {scheme}://{parts.netloc}{target}"]
    table = RouteTable(Route(route, lambda request: None) for route in config.routes)
    try:
        request = Request(environ, config.server.max_request_body)
        out.append(f"  request   host {request.host!r}, path {request.path!r}" + (f", query {request.query!r}" if request.query else ""))
        route = table.match(request.host, request.path)
        if config.server.reject_ambiguous_paths:
            refuse_ambiguous_path(request.path, route.config)
    except ProxyError as exc:
        out.append(f"  answer    {exc.status} {exc.reason}: {exc.detail} (no backend is asked)")
        return exc.status, "\n".join(out)
    r = route.config
    site = "any host" if r.host is None else ("wildcard " if r.host.startswith("*.") else "exact host ") + r.host
    out.append(f"  route     {r.key}: {site}, path prefix {r.path}")
    _rules(out, config, r)
    status = _waf(out, config, r, request)
    if status:
        return status, "\n".join(out)
    status = _tls(out, r, request)
    if status:
        return status, "\n".join(out)
    if r.respond is not None:
        out.append(f"  answer    {r.respond.status} from the route's respond: (no backend is asked)")
        return r.respond.status, "\n".join(out)
    upstream = config.upstreams[r.upstream or ""]
    _upstream(out, r, route, request, upstream)
    _cache(out, r, request)
    return 0, "\n".join(out)


def _waf(out: list[str], config: Config, r: RouteConfig, request: Request) -> int:
    """The WAF's own verdict on this request, with the rules it would run."""
    waf = waf_filter(config.waf, r.waf, baseline_rules())
    if waf is None:
        out.append("  waf       no rules")
        return 0
    action, name = waf.verdict(request)
    names = ", ".join(rule.name for rule in waf.rules)
    outcome = {"deny": f"refused by {name} (403)", "allow": f"allowed by {name}; later rules skipped"}.get(action, "passes")
    out.append(f"  waf       {len(waf.rules)} rules ({names}): {outcome}")
    return 403 if action == "deny" else 0


def _rules(out: list[str], config: Config, r: RouteConfig) -> None:
    """Access lists and rate limits, the global ones first, as the filters apply them."""
    for rules, where in ((config.access, "everywhere"), (r.access, "this route")):
        if rules is not None:
            parts = [f"allow only {', '.join(map(str, rules.allow))}"] if rules.allow else []
            parts += [f"deny {', '.join(map(str, rules.deny))}"] if rules.deny else []
            out.append(f"  access    {'; '.join(parts)} ({where})")
    limits = [limit for limit in (config.rate_limit, r.rate_limit) if limit is not None]
    for limit in limits:
        store = "" if limit.store == "memory" else f", shared in Redis (on error: {limit.on_store_error})"
        out.append(f"  limits    {limit.where}: {limit.rate_text}, burst {limit.burst}, per {'+'.join(limit.key)}"
                   f" ({limit.mode}){store}")
    if not limits:
        out.append("  limits    none")


def _tls(out: list[str], r: RouteConfig, request: Request) -> int:
    if request.scheme != "https":
        if r.redirect_https:
            out.append("  answer    308 Permanent Redirect to the same URL over https (redirect_https)")
            return 308
        if r.client_cert is not None:
            out.append("  answer    403 Forbidden: this route needs a client certificate, over https")
            return 403
        return 0
    if r.client_cert is not None:
        allowed = "any verified one" if not r.client_cert else "one of: " + "; ".join(r.client_cert)
        out.append(f"  tls       needs a client certificate, {allowed} (403 otherwise)")
    if r.hsts is not None:
        out.append(f"  tls       answers carry Strict-Transport-Security: max-age={int(r.hsts)}"
                   + ("; includeSubDomains" if r.hsts_subdomains else ""))
    return 0


def _upstream(out: list[str], r: RouteConfig, route: Route, request: Request, upstream: UpstreamConfig) -> None:
    servers = ", ".join(s.url + (f" (weight {s.weight})" if s.weight != 1 else "") for s in upstream.servers)
    policy = upstream.balance + (f" on {upstream.hash_on}" if upstream.balance == "hash" else "")
    out.append(f"  upstream  {upstream.name}: {policy} over {servers}")
    if upstream.sticky_cookie:
        has = upstream.sticky_cookie in (request.environ.get("HTTP_COOKIE") or "")
        out.append(f"  sticky    cookie {upstream.sticky_cookie}" + (" (sent: its server first)" if has else " (not sent: set on the answer)"))
    host = {"client": request.authority or "(the server's host:port)", "upstream": "the server's host:port"}.get(r.host_header, r.host_header)
    sent = route.upstream_path(request.path) + request.query
    out.append(f"  forwarded {request.method} {sent}" + (" (prefix stripped)" if sent != request.path + request.query else "")
               + f", Host: {host}, X-Forwarded-For/-Proto/-Host rebuilt")
    t = upstream.timeouts
    connect, read, total = (r.timeouts or {}).get("connect", t.connect), (r.timeouts or {}).get("read", t.read), (r.timeouts or {}).get("total", t.total)
    out.append(f"  timeouts  connect {connect:g}s, read {read:g}s" + (f", total {total:g}s" if total else ""))
    retried = request.method in upstream.retries.methods
    out.append(f"  retries   {upstream.retries.count} on other servers" + ("" if retried else f" (not for {request.method})")
               + f", within a budget of {upstream.retries.budget:.0%}")
    health = "active checks on " + upstream.health.path if upstream.health else "no active checks"
    out.append(f"  health    {health}; ejected after {upstream.passive.failures} failures in a row")


def _cache(out: list[str], r: RouteConfig, request: Request) -> None:
    cache = r.cache
    if cache is None:
        out.append("  cache     off for this route")
        return
    method = request.method
    key = f"{request.scheme}://{request.authority.lower()}{request.path}{request.query if cache.query else ''}"
    store = f"own {cache.max_size} bytes" if cache.max_size else "the shared store"
    if method not in ("GET", "HEAD"):
        effect = "not stored" + ("" if method in _SAFE else "; a 2xx or 3xx answer invalidates the URL")
        out.append(f"  cache     on ({store}); {method} is {effect}")
        return
    bypass = [name for name in ("HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE", "HTTP_IF_RANGE") if name in request.environ]
    how = "passed to the origin (a precondition for it)" if bypass else "looked up, stored when RFC 9111 allows"
    limits = [f"max_ttl {cache.max_ttl:g}s"] if cache.max_ttl else []
    if cache.default_ttl:
        limits.append(f"default_ttl {cache.default_ttl:g}s")
    out.append(f"  cache     on ({store}{', ' + ', '.join(limits) if limits else ''}); key {key}; {how}")
