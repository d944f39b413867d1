"""Header rules: what a route adds to, sets in and removes from requests and answers.

``request_headers`` change what the backend receives and nothing else: the
rules run last before the upstream handler, on a copy of the request's fields,
so the filters before them (the cache's key and Vary, compression's choice,
the access log) see what the client sent (as nginx's ``proxy_set_header``).
``response_headers`` and ``security_headers`` run on every answer of the
route once it is made, error pages and cache hits included (as Caddy's
``header``), and never on what the cache stores. The top level's rules run
first, then the route's.

Values are templates: ``{client_ip}``, ``{host}``, ``{scheme}``, ``{path}``,
``{query}`` (with its ``?``, or nothing), ``{request_id}``, ``{route}``,
``{method}``, and on answers ``{upstream}`` and ``{status}``. What they insert
was validated when the request was read (no line breaks can come of them).
"""

from __future__ import annotations

from typing import Any, Callable

from .config_routes import PLACEHOLDER, SECURITY_HEADERS, HeaderRules
from .grammar import environ_key
from .request import Request
from .response import Handler, Response

#: what each placeholder reads
PLACEHOLDER_VALUES: dict[str, Callable[[Request, Any], str]] = {
    "client_ip": lambda request, response: request.client_ip,
    "host": lambda request, response: request.host,
    "scheme": lambda request, response: request.scheme,
    "path": lambda request, response: request.path,
    "query": lambda request, response: request.query,
    "request_id": lambda request, response: request.get_request_id(),
    "route": lambda request, response: request.route.label if request.route is not None else "-",
    "method": lambda request, response: request.method,
    "upstream": lambda request, response: response.upstream if response is not None else "-",
    "status": lambda request, response: response.status[:3] if response is not None else "-",
}


class Template:
    """A value with placeholders, split once: ``render`` joins literal parts and looked-up values."""

    __slots__ = ("text", "parts", "constant")

    def __init__(self, text: str) -> None:
        self.text = text
        pieces = PLACEHOLDER.split(text)  # literal, name, literal, name, ..., literal
        self.parts: list[str | Callable[[Request, Any], str]] = [
            piece if i % 2 == 0 else PLACEHOLDER_VALUES[piece] for i, piece in enumerate(pieces) if piece or i % 2
        ]
        self.constant = text if len(pieces) == 1 else None

    def render(self, request: Request, response: Any = None) -> str:
        if self.constant is not None:
            return self.constant
        return "".join(part if isinstance(part, str) else part(request, response) for part in self.parts)


def _steps(rule_sets: list[HeaderRules]) -> list[tuple[str, str, Template | None]]:
    """(operation, field name, value) in the order they apply: each set's removals, sets, additions."""
    steps: list[tuple[str, str, Template | None]] = []
    for rules in rule_sets:
        steps += [("remove", name, None) for name in rules.remove]
        steps += [("set", name, Template(value)) for name, value in rules.set]
        steps += [("add", name, Template(value)) for name, value in rules.add]
    return steps


class RequestHeaderFilter:
    """``request_headers`` as a filter, the innermost of a route: ``filter(request, next)``."""

    def __init__(self, rule_sets: list[HeaderRules], where: str = "request_headers") -> None:
        self.where = where  #: the configuration key, for ``simpleproxy route``
        self.steps = [(op, environ_key(name), template) for op, name, template in _steps(rule_sets)]

    def __call__(self, request: Request, next: Handler) -> Response:
        return next(self.apply(request))

    def apply(self, request: Request) -> Request:
        """The request as the backend gets it (a copy: the client's fields stay as they came)."""
        environ = dict(request.environ)
        for op, key, template in self.steps:
            if op == "remove":
                environ.pop(key, None)
                continue
            value = template.render(request)  # type: ignore[union-attr]
            old = environ.get(key)
            environ[key] = f"{old}, {value}" if op == "add" and old else value
        return request.derive(environ)


class ResponseRules:
    """``response_headers`` and ``security_headers`` for one route: ``rules(request, response)``."""

    def __init__(self, rule_sets: list[HeaderRules], security_headers: bool) -> None:
        self.steps = [(op, name.lower(), name, template) for op, name, template in _steps(rule_sets)]
        self.security = SECURITY_HEADERS if security_headers else ()

    def __call__(self, request: Request, response: Response) -> Response:
        headers = response.headers
        for op, lower, name, template in self.steps:
            if op != "add":
                headers[:] = [(n, v) for n, v in headers if n.lower() != lower]
                if op == "remove":
                    continue
            headers.append((name, template.render(request, response)))  # type: ignore[union-attr]
        if self.security:
            present = {n.lower() for n, _ in headers}
            headers.extend((n, v) for n, v in self.security if n.lower() not in present)
        return response
