"""What a route says about TLS: redirect plain HTTP, send HSTS, require a client certificate."""

from __future__ import annotations

from typing import Callable

from ..config import RouteConfig
from ..errors import Forbidden
from ..request import Request
from ..response import Handler, Response



class TLSRouteFilter:
    """``filter(request, next)`` for routes with ``redirect_https``, ``hsts`` or ``client_cert``.

    ``https_port`` is read when a redirect is made, so a listener bound to
    port 0 (tests) redirects to the port it really got.
    """

    def __init__(self, route: RouteConfig, https_port: Callable[[], int]) -> None:
        self.redirect = route.redirect_https
        self.https_port = https_port
        self.hsts = None
        if route.hsts is not None:
            self.hsts = ("Strict-Transport-Security", f"max-age={int(route.hsts)}"
                         + ("; includeSubDomains" if route.hsts_subdomains else ""))
        self.client_cert = route.client_cert

    def __call__(self, request: Request, next: Handler) -> Response:
        if request.scheme != "https":
            if self.redirect:
                return self._redirect(request)
            if self.client_cert is not None:
                raise Forbidden("a client certificate is required (use https)")
            return next(request)
        if self.client_cert is not None:
            subject = request.environ.get("SSL_CLIENT_S_DN")
            if subject is None:
                raise Forbidden("a verified client certificate is required")
            if self.client_cert and subject not in self.client_cert:
                raise Forbidden("this client certificate is not allowed here")
        response = next(request)
        if self.hsts is not None:
            response.headers.append(self.hsts)
        return response

    def _redirect(self, request: Request) -> Response:
        """308 keeps the method and body (RFC 9110 section 15.4.9), unlike 301."""
        host = request.host or "localhost"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = self.https_port()
        location = f"https://{host}{'' if port == 443 else f':{port}'}{request.path}{request.query}"
        body = f"308 Permanent Redirect: {location}\n".encode()
        headers = [("Location", location), ("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body)))]
        return Response("308 Permanent Redirect", headers, [] if request.method == "HEAD" else [body])


def needs_filter(route: RouteConfig) -> bool:
    return route.redirect_https or route.hsts is not None or route.client_cert is not None
