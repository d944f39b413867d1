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
from ..grammar import environ_key
from ..headers import ForwardingHeaders
from ..request import Request
from ..response import Handler, Response
from ..routing import Route
from ..upstream.forward import UpstreamHandler
from ..upstream.pool import Upstream

#: request fields a body-less question does not carry
_BODY_FIELDS = ("CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_TRANSFER_ENCODING", "HTTP_EXPECT")


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
        """The request sent to the auth service for ``request``."""
        environ = dict(request.environ)
        for key in _BODY_FIELDS:
            environ.pop(key, None)
        environ["REQUEST_METHOD"] = "GET"
        environ["wsgi.input"] = io.BytesIO()
        environ["HTTP_X_FORWARDED_METHOD"] = request.method  # set here: a client's own never passes
        environ["HTTP_X_FORWARDED_URI"] = request.path + request.query
        asked = request.derive(environ)
        asked.method, asked.path, asked.query = "GET", self._path, self._query
        asked.route, asked.content_length = self._route, 0
        return asked

    def __call__(self, request: Request, next: Handler) -> Response:
        environ = request.environ
        for key, _ in self._copied:  # only the service may set these
            environ.pop(key, None)
        verdict = self._ask(self.question(request))
        if not 200 <= int(verdict.status[:3]) < 300:
            return verdict  # as the service sent it: a redirect to its login page, a 401, a 403
        fields = {name.lower(): value for name, value in verdict.headers}
        _discard(verdict.body)
        for key, name in self._copied:
            if name in fields:
                environ[key] = fields[name]
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
