"""The admin WSGI app, served by its own small waitress server on its own address.

Who may use it: with ``admin.token`` set, any client presenting
``Authorization: Bearer <token>``; without one, loopback clients only. The
status page's HTML shell is public (it holds no data; it asks
``status.json`` with the token from the page's ``#token=`` fragment).
State-changing requests (reload, purge) must be POSTs carrying
``X-Simpleproxy-Admin: 1``, a header a browser will not send cross-site
without a CORS preflight this app never approves, so a web page cannot make
a visitor's browser reload or purge a local proxy.
"""

from __future__ import annotations

import dataclasses
import hmac
import importlib.resources
import ipaddress
import json
import re
import time
from http import HTTPStatus
from typing import Any, Callable, Iterable

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ..config import AdminSettings, Config
from ..observe.metrics import Collector, RequestStats, exposition, store_names

_SECRETS = frozenset(("password", "token", "users"))  # users: basic_auth's bcrypt hashes
_URL_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.I)


def redacted(config: Config) -> dict[str, Any]:
    """The configuration as plain data, every secret replaced."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: "[redacted]" if k in _SECRETS and v is not None else clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (frozenset, set)):
            return sorted(clean(v) for v in value)
        if isinstance(value, str):
            return _URL_USERINFO.sub(r"\1[redacted]@", value)  # redis://:secret@host -> redis://[redacted]@host
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        return str(value)

    return clean(dataclasses.asdict(config))


#: the endpoints; a GET also answers HEAD. Errors are the app's own plain-text lines.
URLS = Map([
    Rule("/", endpoint="page", methods=["GET"]),
    Rule("/health", endpoint="health", methods=["GET"]),
    Rule("/ready", endpoint="ready", methods=["GET"]),
    Rule("/metrics", endpoint="metrics", methods=["GET"]),
    Rule("/config", endpoint="config", methods=["GET"]),
    Rule("/status.json", endpoint="status_json", methods=["GET"]),
    Rule("/reload", endpoint="reload", methods=["POST"]),
    Rule("/cache/purge", endpoint="purge", methods=["POST"]),
], merge_slashes=False)


class AdminApp:
    """``AdminApp(server)``: the admin endpoints for a :class:`~simpleproxy.server.ProxyServer`,
    a werkzeug application (its routing, request and response objects, HTTP exceptions)."""

    def __init__(self, server: Any, settings: AdminSettings) -> None:
        self.server = server
        self.token = settings.token.encode() if settings.token else None
        self.local_names = {"localhost", "127.0.0.1", "::1"} | ({settings.listen[0].lower()} if settings.listen else set())
        self.started = time.time()
        if server.app.stats is None:  # an app built without an admin listener in its config
            server.app.stats = RequestStats()
        self.collector = Collector(server.app.stats, lambda: server.app.state, lambda: server)
        self._urls = URLS.bind("admin")  # matched by path and method only: no environ's host or scheme needed

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HTTPException as exc:
            response = exc.get_response(environ)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response(environ, start_response)  # a HEAD gets the fields, Content-Length included, no body

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        if path != "/":  # the page's HTML shell is public; it asks status.json with the token
            self._guard(request)
        try:
            endpoint, _ = self._urls.match(path, request.method)
        except MethodNotAllowed as exc:
            allowed = [m for m in exc.valid_methods or () if m != "HEAD"]
            raise _refused(405, f"{path} takes {' or '.join(allowed)}\n", [("Allow", ", ".join(exc.valid_methods or ()))])
        except NotFound:
            raise _refused(404, "no such admin endpoint\n") from None
        if request.method == "POST" and request.headers.get("X-Simpleproxy-Admin") != "1":
            raise _refused(403, "admin POSTs need the header X-Simpleproxy-Admin: 1\n")
        handler: Callable[[Request], Response] = getattr(self, "_" + endpoint)
        return handler(request)

    def _guard(self, request: Request) -> None:
        """With a token: the bearer token, compared in constant time; without: loopback clients
        calling the listener by a loopback name only."""
        if self.token is not None:
            authorization = request.authorization  # the scheme in any case (RFC 9110 section 11.1)
            given = (authorization.token or "") if authorization is not None and authorization.type == "bearer" else ""
            if not hmac.compare_digest(given.encode("latin-1", "replace"), self.token):
                raise _refused(401, "a bearer token is needed\n", [("WWW-Authenticate", 'Bearer realm="simpleproxy admin"')])
            return
        try:
            local = ipaddress.ip_address(request.remote_addr or "").is_loopback
        except ValueError:
            local = False
        if not local:
            raise _refused(403, "the admin listener serves local clients only (or set admin.token)\n")
        # DNS rebinding: a web page whose name now points at 127.0.0.1 would be same-origin with
        # this listener; its requests carry that name in Host, so only loopback names are served.
        host = request.environ.get("HTTP_HOST", "")
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        if host.lower() not in self.local_names:
            raise _refused(403, "the Host must be localhost or a loopback address (or set admin.token)\n")

    def _page(self, request: Request) -> Response:
        global _PAGE
        if _PAGE is None:
            _PAGE = importlib.resources.files(__package__).joinpath("status.html").read_bytes()
        response = Response(_PAGE, content_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
        return response

    def _health(self, request: Request) -> Response:
        return _text(200, "ok\n")

    def _ready(self, request: Request) -> Response:
        return _text(503, "draining\n") if self.server.draining else _text(200, "ready\n")

    def _metrics(self, request: Request) -> Response:
        try:
            body, content_type = exposition(self.collector)
        except ImportError:
            return _text(501, "metrics need prometheus_client: pip install 'simpleproxy[metrics]'\n")
        return Response(body, content_type=content_type)

    def _config(self, request: Request) -> Response:
        return _json(200, redacted(self.server.app.config))

    def _status_json(self, request: Request) -> Response:
        return _json(200, self.status())

    def _reload(self, request: Request) -> Response:
        problems = self.server.reload()
        if problems:
            return _json(422, {"reloaded": False, "problems": problems})
        return _json(200, {"reloaded": True})

    def _purge(self, request: Request) -> Response:
        tag = request.args.get("tag")
        if tag is not None:
            if not tag.strip():
                return _json(400, {"error": "give a tag: /cache/purge?tag=NAME"})
            return _json(200, {"purged": self.server.app.purge_tag(tag.strip()), "tag": tag.strip()})
        url = request.args.get("url", "")
        prefix = request.args.get("prefix", "0") in ("1", "true", "yes")
        try:
            purged = self.server.app.purge(url, prefix=prefix)
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, {"purged": purged, "url": url, "prefix": prefix})

    def status(self) -> dict[str, Any]:
        """What the status page shows: routes, servers with health and load, caches, traffic."""
        state = self.server.app.state
        stats = self.server.app.stats
        requests, _, cache_results = stats.snapshot()
        limit_results, waf_denials = stats.limit_snapshot(), stats.waf_snapshot()
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), count in requests.items():
            by_route.setdefault(route, {})[status] = count
        routes = []
        for route in state.table.routes:
            config = route.config
            target = f"upstream {config.upstream}" if config.upstream else f"respond {config.respond.status}"  # type: ignore[union-attr]
            hits = {k[1]: v for k, v in cache_results.items() if k[0] == route.label}
            limits = {k[1]: v for k, v in limit_results.items() if k[0] == route.label}
            limits.update({f"waf {k[1]}": v for k, v in waf_denials.items() if k[0] == route.label})
            routes.append({"route": route.label, "key": config.key, "to": target, "cache": config.cache is not None,
                           "statuses": by_route.get(route.label, {}), "cache_results": hits, "limits": limits})
        upstreams = []
        for name, upstream in sorted(state.upstreams.items()):
            servers = [{"server": s.name, "up": s.available(), "breaker": s.breaker.state(), "healthy": s.check.healthy,
                        "in_flight": s.in_flight, "weight": s.weight} for s in upstream.servers]
            upstreams.append({"upstream": name, "balance": upstream.config.balance, "retried": upstream.retried,
                              "panic": upstream.in_panic(), "panicked": upstream.panicked, "servers": servers})
        caches = [{"store": name, "bytes": store.size, "max_bytes": store.max_size, "entries": len(store),
                   "evictions": store.evictions} for name, store in store_names(state.caches)]
        server = self.server
        return {
            "uptime": round(time.time() - self.started, 1), "draining": server.draining,
            "connections": server.open_connections(), "busy_threads": server.busy_threads(),
            "queue_depth": server.queue_depth(), "routes": routes, "upstreams": upstreams, "caches": caches,
        }


def _status(code: int) -> str:
    """``404 Not Found`` (werkzeug would write ``404 NOT FOUND``)."""
    return f"{code} {HTTPStatus(code).phrase}"


def _text(code: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(text, status=_status(code), headers=list(headers), content_type="text/plain; charset=utf-8")


def _json(code: int, data: Any) -> Response:
    return Response(json.dumps(data, indent=1) + "\n", status=_status(code), content_type="application/json")


def _refused(code: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> HTTPException:
    """An error answer as an exception (werkzeug's), carrying our plain-text response."""
    return HTTPException(response=_text(code, text, headers))


_PAGE: bytes | None = None
