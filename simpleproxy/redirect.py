"""A route's ``redirect``: a Location made from the request, with the route's path_regex captures.

``to`` may hold the header rules' placeholders (``{host}``, ``{path}``,
``{query}``...) and ``$1`` / ``${name}`` for what ``match.path_regex``
captured; both are filled in one pass over the template, so a request path
that happens to contain ``$1`` or ``{host}`` is inserted as it is, never
expanded again. The answer has no body (as Caddy's ``redir``).
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from .config_routes import CAPTURE, PLACEHOLDER, Redirect
from .header_rules import PLACEHOLDER_VALUES
from .request import Request
from .response import Response

#: a placeholder (group 1) or a capture (``$1``: group 2, ``${name}``: group 3)
_PIECE = re.compile(f"{PLACEHOLDER.pattern}|{CAPTURE.pattern}")


class RedirectResponder:
    """The terminal of a route with ``redirect:``."""

    def __init__(self, redirect: Redirect, path_regex: str | None) -> None:
        self.to = redirect.to
        self.status = f"{redirect.status} {HTTPStatus(redirect.status).phrase}"
        self.path_regex = re.compile(path_regex) if path_regex is not None else None
        self.constant = _PIECE.search(redirect.to) is None

    def location(self, request: Request) -> str:
        if self.constant:
            return self.to
        found = self.path_regex.search(request.path) if self.path_regex is not None else None

        def piece(match: re.Match[str]) -> str:
            name, number, group = match.groups()
            if name is not None:
                return PLACEHOLDER_VALUES[name](request, None)
            if found is None:
                return ""
            return found.group(int(number) if number is not None else group) or ""

        return _PIECE.sub(piece, self.to)

    def __call__(self, request: Any) -> Response:
        response = Response(self.status, [("Location", self.location(request)), ("Content-Length", "0")], [])
        response.answer = "redirect"
        return response
