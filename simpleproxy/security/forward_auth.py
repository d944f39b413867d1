"""``forward_auth``: ask an auth service about each request first (nginx ``auth_request``, Caddy
``forward_auth``, Traefik ForwardAuth), as Authelia, Authentik and oauth2-proxy expect.

The question is a ``GET`` of the service's verify URL carrying the client's
fields (its cookies and ``Authorization`` included) and, in ``X-Forwarded-Method``,
``-Proto``, ``-Host``, ``-Uri`` and ``-For``, what the client asked for: built
by the same code as any forwarded request and sent through an upstream pool
of its own (keep-alive connections, the passive circuit breaker, its figures
on the status page and in metrics). A 2xx lets the request through with the
``copy_headers`` of the answer copied into it; the client's own copies of those
fields are removed first, so they cannot be forged. Any other answer goes to
the client as the service sent it (a 302 to a login page, a 401 with its
challenge). A service that is down, slow or broken is a 502, 503 or 504: never
an open door.
"""

from __future__ import annotations

import io
from typing import Any

from ..config import ForwardAuth, RouteConfig
from ..grammar import capitalized, environ_key
from ..interim import INTERIM
from ..headers import ForwardingHeaders
from ..request import Request
from ..response import Handler, Response
from ..routing import Route
from ..upstream.forward import UpstreamHandler
from ..upstream.pool import Upstream

#: request fields the question does not carry: the body's, and the client's Connection
#: (and the auth service's Early Hints are not the page's: they never reach the client)
_NOT_ASKED = frozenset(("CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_TRANSFER_ENCODING", "HTTP_EXPECT", "HTTP_CONNECTION",
                        INTERIM))
#: the client's claims about the request's destination (X-Forwarded-For/-Proto/-Host are rebuilt by
#: headers.py, which keeps a trusted proxy's); the proxy sends its own
_CLAIMS = ("HTTP_X_ORIGINAL_", "HTTP_X_FORWARDED_METHOD", "HTTP_X_FORWARDED_URI", "HTTP_X_FORWARDED_PREFIX",
           "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_SERVER", "HTTP_X_FORWARDED_SSL")


class ForwardAuthFilter:
    """``filter(request, next)``: a request goes on only if the auth service says 2xx."""

    def __init__(self, settings: ForwardAuth, upstream: Upstream, headers: ForwardingHeaders,
                 where: str = "forward_auth") -> None:
        self.where = where  #: the configuration key, for ``simpleproxy route``
        self.settings = settings
        # The service's own Host (its host:port); the client's host goes in X-Forwarded-Host.
        route = RouteConfig(key=where, host=None, path="/", upstream=upstream.name, host_header="upstream")
        self._route = Route(route, handler=lambda request: None)
        self._ask = UpstreamHandler(route, upstream, headers, max_body=0)
        self._copied = [(environ_key(name), name) for name in settings.copy_headers]
        path, mark, query = settings.target.partition("?")
        self._path, self._query = path, mark + query

    def question(self, request: Request) -> Request:
        """The request sent to the auth service for ``request``.

        The client's own claims about where the request goes (``X-Original-*``, ``X-Forwarded-*``
        other than the For/Proto/Host chain the proxy rebuilds) are dropped, and so is its
        ``Connection``, which could otherwise name the proxy's fields away; the proxy's are sent
        as fields of its own, after the client's.
        """
        environ = {key: value for key, value in request.environ.items()
                   if key not in _NOT_ASKED and not key.startswith(_CLAIMS)}
        environ["REQUEST_METHOD"] = "GET"
        environ["wsgi.input"] = io.BytesIO()
        asked = request.derive(environ)
        asked.method, asked.path, asked.query = "GET", self._path, self._query
        asked.route, asked.content_length = self._route, 0
        target = request.path + request.query
        asked.fields = (
            ("X-Forwarded-Method", request.method), ("X-Forwarded-Uri", target),
            ("X-Original-Method", request.method), ("X-Original-URL", f"{request.scheme}://{request.authority}{target}"),
        )
        return asked

    def __call__(self, request: Request, next: Handler) -> Response:
        verdict = self._ask(self.question(request))  # with the client's fields as they came
        environ = request.environ
        for key, _ in self._copied:  # only the service may set these
            environ.pop(key, None)
        if not 200 <= int(verdict.status[:3]) < 300:
            return verdict  # as the service sent it: a redirect to its login page, a 401, a 403
        fields = {name.lower(): value for name, value in verdict.headers}
        _discard(verdict.body)
        copied = tuple((capitalized(name), fields[name]) for _, name in self._copied if name in fields)
        request.fields = (*request.fields, *copied)
        request.authenticated = True
        return next(request)


#: what of a 2xx verdict's body is read so its connection can be kept; past it, the connection goes
_DRAINED = 64 * 1024


def _discard(body: Any) -> None:
    """Read the rest of a verdict's body (usually nothing), so its connection is kept."""
    try:
        read = 0
        for chunk in body:
            read += len(chunk)
            if read > _DRAINED:
                break
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
