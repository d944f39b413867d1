"""``cors``: Cross-Origin Resource Sharing answered at the edge (the Fetch standard's CORS protocol).

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
is answered here, ``204`` with the allow fields, or ``403`` without them when
the origin, method or a requested field is not allowed; the backend never
sees it. Other requests go on as they are; their answers (errors included,
so a page can read a 401 or a 429) get the allow fields when the ``Origin`` is
allowed, and ``Vary: Origin`` always, since the fields differ by origin. The
route's CORS belongs to the proxy: ``Access-Control-*`` fields a backend sends
are replaced, never doubled.

The filter runs before ``basic_auth``: browsers send preflights without
credentials, and one refused with a 401 would fail every cross-origin call.
"""

from __future__ import annotations

import re

from ..config import CORS
from ..errors import ClientError, ProxyError
from ..request import Request
from ..response import Handler, Response

#: methods and request fields a browser may send cross-origin without asking (Fetch: CORS-safelisted)
_SAFE_METHODS = frozenset(("GET", "HEAD", "POST"))
_SAFE_FIELDS = frozenset(("accept", "accept-language", "content-language", "content-type", "range"))
#: the fields this filter writes; a backend's own are dropped
_OWN = frozenset(("access-control-allow-origin", "access-control-allow-credentials", "access-control-expose-headers",
                  "access-control-allow-methods", "access-control-allow-headers", "access-control-max-age"))


class PreflightRefused(ClientError):
    status = 403
    reason = "Forbidden"
    strike = False  # a page asking is no misdeed of the visitor's


class CorsFilter:
    """``filter(request, next)`` for routes with ``cors``."""

    def __init__(self, settings: CORS, where: str = "cors") -> None:
        self.where = where  #: the configuration key, for ``simpleproxy route``
        self.settings = settings
        self.any_origin = settings.origins == ("*",)
        self._exact = frozenset(o for o in settings.origins if "*." not in o)
        # "https://*.example.com" -> one or more labels before example.com, the same scheme and port
        self._patterns = [
            re.compile(re.escape(o.split("*.", 1)[0]) + r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\." + re.escape(o.split("*.", 1)[1]))
            for o in settings.origins if "*." in o
        ]
        self._methods = ", ".join(settings.methods)
        self._allowed_fields = frozenset(settings.headers)
        self._common = ([("Access-Control-Allow-Credentials", "true")] if settings.credentials else []) + (
            [("Access-Control-Expose-Headers", ", ".join(settings.expose))] if settings.expose else [])

    def allows(self, origin: str) -> bool:
        if self.any_origin:
            return True
        origin = origin.lower()
        return origin in self._exact or any(p.fullmatch(origin) for p in self._patterns)

    def _allow_origin(self, origin: str) -> tuple[str, str]:
        # "*" only where no credentials go along; else the origin itself, as Fetch requires
        return ("Access-Control-Allow-Origin", "*" if self.any_origin and not self.settings.credentials else origin)

    def preflight(self, request: Request) -> Response:
        """The answer to a preflight, made here; PreflightRefused when the page may not do this."""
        environ = request.environ
        origin = environ["HTTP_ORIGIN"]
        method = environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"].strip()
        asked = [f.strip().lower() for f in environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "").split(",") if f.strip()]
        if not self.allows(origin):
            raise PreflightRefused(f"CORS: the origin {origin} is not allowed here")
        if method not in _SAFE_METHODS and method not in self.settings.methods and self.settings.methods != ("*",):
            raise PreflightRefused(f"CORS: the method {method} is not allowed here")
        if self.settings.headers != ("*",):
            refused = [f for f in asked if f not in _SAFE_FIELDS and f not in self._allowed_fields]
            if refused:
                raise PreflightRefused(f"CORS: the request field {refused[0]} is not allowed here")
        headers = [self._allow_origin(origin), ("Access-Control-Allow-Methods", self._methods), *self._common,
                   ("Access-Control-Max-Age", str(int(self.settings.max_age))),
                   ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
                   ("Content-Length", "0")]
        if asked:
            headers.append(("Access-Control-Allow-Headers", ", ".join(asked)))
        return Response("204 No Content", headers, [])

    def __call__(self, request: Request, next: Handler) -> Response:
        environ = request.environ
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and request.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
            return self.preflight(request)
        if self.any_origin and not self.settings.credentials:  # the same for every page: always, no Vary
            fields = [("Access-Control-Allow-Origin", "*"), *self._common]
        else:
            fields = [self._allow_origin(origin), *self._common] if origin is not None and self.allows(origin) else []
            fields.append(("Vary", "Origin"))
        try:
            response = next(request)
        except ProxyError as exc:  # the error page carries them too: a page may read why it failed
            exc.headers = (*exc.headers, *fields)
            raise
        headers = response.headers
        if any(name.lower() in _OWN for name, _ in headers):
            headers[:] = [(name, value) for name, value in headers if name.lower() not in _OWN]
        headers.extend(fields)
        return response
