"""The route table: host first (like nginx's server blocks), then the longest path prefix.

A request's host picks one *site*: an exact name beats the most specific
``*.suffix`` wildcard, which beats the routes given without a host. Within
that site the longest matching path prefix wins, on segment boundaries
(``/api`` matches ``/api`` and ``/api/x``, never ``/apix``). A site that has no
matching prefix answers 404; the request does not fall through to another
site, so adding a host never changes what other hosts reach.

Everything is built once per configuration; a match is a dict lookup per host
label plus a scan of one site's prefixes, longest first.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from .config import RouteConfig
from .errors import NoRoute
from .observe.metrics import route_label


class Route:
    """A configured route and the handler chain that serves it."""

    __slots__ = ("config", "prefix", "_prefix_slash", "handler", "filters", "terminal", "label")

    def __init__(self, config: RouteConfig, handler: Callable[[Any], Any], filters: Sequence[Any] = (),
                 terminal: Callable[[Any], Any] | None = None) -> None:
        """``handler``: what serves a request: ``terminal`` wrapped in ``filters`` (app.compose),
        both kept for ``simpleproxy route`` (explain.py), which walks them one by one."""
        self.config = config
        self.prefix = config.path
        self._prefix_slash = config.path if config.path.endswith("/") else config.path + "/"
        self.handler = handler
        self.filters = tuple(filters)
        self.terminal = terminal if terminal is not None else handler
        #: the route's name in metrics and on the status page: ``app.example.com/api``, ``*/``
        self.label = route_label(config.host, config.path)

    def matches(self, path: str) -> bool:
        return path.startswith(self._prefix_slash) or path == self.prefix

    def upstream_path(self, path: str) -> str:
        """The path the backend receives: the request's, minus the prefix if stripped."""
        if not self.config.strip_prefix or self.prefix == "/":
            return path
        return path[len(self.prefix):] or "/"

    def __repr__(self) -> str:
        return f"Route({self.config.key}: {self.config.host or '*'} {self.prefix})"


class _Site:
    """The routes of one host pattern, longest prefix first."""

    __slots__ = ("routes",)

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, route: Route) -> None:
        self.routes.append(route)
        self.routes.sort(key=lambda r: len(r.prefix), reverse=True)

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(path):
                return route
        return None


class RouteTable:
    """Maps (host, path) to a :class:`Route`."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._exact: dict[str, _Site] = {}
        self._wildcard: dict[str, _Site] = {}  # "example.com" for "*.example.com"
        self._any: _Site | None = None
        self.routes: list[Route] = []
        for route in routes:
            self.routes.append(route)
            host = route.config.host
            if host is None:
                self._any = self._any or _Site()
                self._any.add(route)
            elif host.startswith("*."):
                self._wildcard.setdefault(host[2:], _Site()).add(route)
            else:
                self._exact.setdefault(host, _Site()).add(route)

    def site_for(self, host: str) -> _Site | None:
        site = self._exact.get(host)
        if site is not None:
            return site
        if self._wildcard:
            dot = host.find(".")
            while dot >= 0:  # longest suffix first: a.b.example.com, then b.example.com...
                site = self._wildcard.get(host[dot + 1:])
                if site is not None:
                    return site
                dot = host.find(".", dot + 1)
        return self._any

    def match(self, host: str, path: str) -> Route:
        """The route for a normalised lower-case host (no port) and path; NoRoute if none."""
        site = self.site_for(host)
        route = site.match(path) if site is not None else None
        if route is None:
            raise NoRoute("no route for this host and path")
        return route
