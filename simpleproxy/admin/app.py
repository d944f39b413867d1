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
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from ..config import AdminSettings, Config
from ..observe.metrics import Collector, RequestStats, exposition, store_names

_SECRETS = frozenset(("password", "token"))
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


class AdminApp:
    """``AdminApp(server)``: the admin endpoints for a :class:`~simpleproxy.server.ProxyServer`."""

    def __init__(self, server: Any, settings: AdminSettings) -> None:
        self.server = server
        self.token = settings.token.encode() if settings.token else None
        self.local_names = {"localhost", "127.0.0.1", "::1"} | ({settings.listen[0].lower()} if settings.listen else set())
        self.started = time.time()
        if server.app.stats is None:  # an app built without an admin listener in its config
            server.app.stats = RequestStats()
        self.collector = Collector(server.app.stats, lambda: server.app.state, lambda: server)
        self.routes: dict[tuple[str, str], Callable[[dict[str, Any]], tuple[str, list, bytes]]] = {
            ("GET", "/health"): lambda env: _text("200 OK", "ok\n"),
            ("GET", "/ready"): self._ready,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/config"): lambda env: _json("200 OK", redacted(self.server.app.config)),
            ("GET", "/status.json"): lambda env: _json("200 OK", self.status()),
            ("POST", "/reload"): self._reload,
            ("POST", "/cache/purge"): self._purge,
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if method == "GET" and path == "/":
            status, headers, body = _page()
        else:
            status, headers, body = self._guarded(environ, method, path)
        headers = [*headers, ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                   ("X-Content-Type-Options", "nosniff")]
        start_response(status, headers)
        return [b"" if method == "HEAD" else body]

    def _guarded(self, environ: dict[str, Any], method: str, path: str) -> tuple[str, list, bytes]:
        refusal = self._refusal(environ)
        if refusal is not None:
            return refusal
        handler = self.routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in self.routes):
                return _text("405 Method Not Allowed", f"{path} takes " + " or ".join(m for m, p in self.routes if p == path) + "\n")
            return _text("404 Not Found", "no such admin endpoint\n")
        if method == "POST" and environ.get("HTTP_X_SIMPLEPROXY_ADMIN") != "1":
            return _text("403 Forbidden", "admin POSTs need the header X-Simpleproxy-Admin: 1\n")
        return handler(environ)

    def _refusal(self, environ: dict[str, Any]) -> tuple[str, list, bytes] | None:
        if self.token is not None:
            given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, b"Bearer " + self.token):
                status, headers, body = _text("401 Unauthorized", "a bearer token is needed\n")
                return status, [*headers, ("WWW-Authenticate", 'Bearer realm="simpleproxy admin"')], body
            return None
        try:
            local = ipaddress.ip_address(environ.get("REMOTE_ADDR", "")).is_loopback
        except ValueError:
            local = False
        if not local:
            return _text("403 Forbidden", "the admin listener serves local clients only (or set admin.token)\n")
        # DNS rebinding: a web page whose name now points at 127.0.0.1 would be same-origin with
        # this listener; its requests carry that name in Host, so only loopback names are served.
        host = environ.get("HTTP_HOST", "")
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        if host.lower() not in self.local_names:
            return _text("403 Forbidden", "the Host must be localhost or a loopback address (or set admin.token)\n")
        return None

    def _ready(self, environ: dict[str, Any]) -> tuple[str, list, bytes]:
        if self.server.draining:
            return _text("503 Service Unavailable", "draining\n")
        return _text("200 OK", "ready\n")

    def _metrics(self, environ: dict[str, Any]) -> tuple[str, list, bytes]:
        try:
            body, content_type = exposition(self.collector)
        except ImportError:
            return _text("501 Not Implemented", "metrics need prometheus_client: pip install 'simpleproxy[metrics]'\n")
        return "200 OK", [("Content-Type", content_type)], body

    def _reload(self, environ: dict[str, Any]) -> tuple[str, list, bytes]:
        problems = self.server.reload()
        if problems:
            return _json("422 Unprocessable Content", {"reloaded": False, "problems": problems})
        return _json("200 OK", {"reloaded": True})

    def _purge(self, environ: dict[str, Any]) -> tuple[str, list, bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        url = (query.get("url") or [""])[0]
        prefix = (query.get("prefix") or ["0"])[0] in ("1", "true", "yes")
        try:
            purged = self.server.app.purge(url, prefix=prefix)
        except ValueError as exc:
            return _json("400 Bad Request", {"error": str(exc)})
        return _json("200 OK", {"purged": purged, "url": url, "prefix": prefix})

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


def _text(status: str, text: str) -> tuple[str, list, bytes]:
    return status, [("Content-Type", "text/plain; charset=utf-8")], text.encode("utf-8")


def _json(status: str, data: Any) -> tuple[str, list, bytes]:
    return status, [("Content-Type", "application/json")], (json.dumps(data, indent=1) + "\n").encode("utf-8")


_PAGE: bytes | None = None


def _page() -> tuple[str, list, bytes]:
    global _PAGE
    if _PAGE is None:
        _PAGE = importlib.resources.files(__package__).joinpath("status.html").read_bytes()
    return "200 OK", [("Content-Type", "text/html; charset=utf-8"),
                      ("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")], _PAGE
