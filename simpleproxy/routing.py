"""The route table: host first (like nginx's server blocks), then the longest path prefix,
then the route's matchers.

A request's host picks one *site*: an exact name beats the most specific
``*.suffix`` wildcard, which beats the routes given without a host. Within
that site the longest matching path prefix wins, on segment boundaries
(``/api`` matches ``/api`` and ``/api/x``, never ``/apix``). Among routes with
the same prefix, the one with more matchers (``match:``) is tried first, in
file order otherwise; a route whose matchers refuse the request is passed
over for the next (a ``POST``-only route beside a plain one). A site that has
no route for the request answers 404, or 405 when only methods refused it; the
request does not fall through to another site, so adding a host never changes
what other hosts reach.

Everything is built once per configuration; a match is a dict lookup per host
label plus a scan of one site's prefixes, longest first.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Sequence

from .config import RouteConfig
from .config_routes import CAPTURE
from .errors import BadRequest, MethodNotAllowed, NoRoute
from .matchers import Matcher
from .observe.metrics import route_label
from .request import normalize_path


def python_template(template: str) -> str:
    """``/api/$1`` and ``${name}`` (the configuration's captures) -> ``re``'s ``\\1``, ``\\g<name>``."""
    escaped = template.replace("\\", "\\\\")
    return CAPTURE.sub(lambda m: f"\\g<{m.group(1) or m.group(2)}>", escaped)


class Route:
    """A configured route and the handler chain that serves it."""

    __slots__ = ("config", "prefix", "_prefix_slash", "handler", "filters", "terminal", "label", "matcher",
                 "_rewrite", "_replace", "_moves_path", "finish", "error_pages")

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
        self.matcher = Matcher(config.match) if config.match is not None else None
        rewrite = config.rewrite
        self._rewrite = re.compile(rewrite.regex) if rewrite is not None else None
        self._replace = python_template(rewrite.replace) if rewrite is not None else ""
        self._moves_path = bool((config.strip_prefix and self.prefix != "/") or rewrite or config.add_prefix)
        #: what is done to every answer of this route once it is made (response header rules, the
        #: security headers, error pages): set by the app; None for nothing
        self.finish: Callable[[Any, Any], Any] | None = None
        #: the route's error pages (its own or the top's; app.ErrorPageMaker), None for the plain ones
        self.error_pages: Any = None

    @property
    def matchers(self) -> int:
        return self.config.match.count if self.config.match is not None else 0

    def matches(self, path: str) -> bool:
        return path.startswith(self._prefix_slash) or path == self.prefix

    def upstream_path(self, path: str) -> str:
        """The path the backend (or the file lookup) gets: the request's, minus the prefix if stripped,
        rewritten, with a prefix added. A rewrite whose result is no path is refused (400)."""
        if not self._moves_path:
            return path
        config = self.config
        if config.strip_prefix and self.prefix != "/":
            path = path[len(self.prefix):] or "/"
        if self._rewrite is not None:
            rewritten = self._rewrite.sub(self._replace, path, count=1)
            if rewritten != path:
                try:
                    if not rewritten.startswith("/"):
                        raise ValueError("not a path")
                    path = normalize_path(rewritten)
                except ValueError:
                    raise BadRequest("the route's rewrite made no valid path of this one") from None
        if config.add_prefix:
            path = config.add_prefix + path if path != "/" else config.add_prefix + "/"
        return path

    def __repr__(self) -> str:
        return f"Route({self.config.key}: {self.config.host or '*'} {self.prefix})"


class _Site:
    """The routes of one host pattern, longest prefix first."""

    __slots__ = ("routes",)

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, route: Route) -> None:
        self.routes.append(route)
        # longest prefix first; for one prefix, more matchers first; file order otherwise (a stable sort)
        self.routes.sort(key=lambda r: (len(r.prefix), r.matchers), reverse=True)

    def match(self, path: str, request: Any = None) -> Route | None:
        """The first route whose prefix and matchers take the request (``request`` None: prefixes only)."""
        for route in self.routes:
            if route.matches(path) and (route.matcher is None or request is None or route.matcher(request)):
                return route
        return None

    def refused(self, path: str, request: Any) -> list[tuple[Route, str]]:
        """The routes whose prefix takes the path but whose matchers refused the request, and why."""
        return [(route, route.matcher.refusal(request)) for route in self.routes
                if route.matches(path) and route.matcher is not None and route.matcher.refusal(request)]


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

    def match(self, host: str, path: str, request: Any = None) -> Route:
        """The route for a normalised lower-case host (no port) and path, and the request its
        matchers look at; NoRoute if none, MethodNotAllowed if only the method kept it from one."""
        site = self.site_for(host)
        route = site.match(path, request) if site is not None else None
        if route is None:
            if site is not None and request is not None:
                _refuse_method(site, path, request)
            raise NoRoute("no route for this host and path")
        return route


def _refuse_method(site: _Site, path: str, request: Any) -> None:
    """405 with Allow when every route that takes the path refused the request for its method alone."""
    allowed: set[str] = set()
    for route in site.routes:
        if not route.matches(path):
            continue
        matcher = route.matcher
        if matcher is None or not matcher.methods or matcher.refusal(request, methods=False):
            return  # something besides the method stands in the way
        allowed |= matcher.methods
    if allowed:
        raise MethodNotAllowed(f"{request.method} is not allowed here", headers=(("Allow", ", ".join(sorted(allowed))),))
