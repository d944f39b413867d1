"""One exception tree for everything that can go wrong with a request.

Stages raise these; only :mod:`simpleproxy.app` turns them into responses, so
there is exactly one place that writes an error page. Each class carries its
HTTP status and a short, client-safe reason: never a traceback, never a secret.
"""

from __future__ import annotations


class ProxyError(Exception):
    """A request could not be served; ``status`` is what the client gets."""

    status: int = 500
    reason: str = "Internal Server Error"
    #: the upstream server (host:port) that failed, for the log line
    upstream: str = ""
    #: whether this answer counts toward a ban (bots.ban_statuses); not for what is no misdeed
    strike: bool = True

    def __init__(self, detail: str = "", *, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(detail or self.reason)
        #: Short text for the response body and the log line.
        self.detail = detail or self.reason
        #: Extra response headers (``Allow``, ``Retry-After``, ...).
        self.headers = headers


class ClientError(ProxyError):
    """The request itself is at fault; the backend never sees it."""

    status = 400
    reason = "Bad Request"


class BadRequest(ClientError):
    status = 400
    reason = "Bad Request"


class AuthRequired(ClientError):
    """401 with a ``WWW-Authenticate`` challenge: no credentials, or wrong ones (``attempted``).
    Only a wrong attempt counts toward a ban: a browser's first request never carries any."""

    status = 401
    reason = "Unauthorized"

    def __init__(self, realm: str, attempted: bool) -> None:
        super().__init__("wrong user name or password" if attempted else "credentials are needed",
                         headers=(("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"'),))
        self.strike = attempted


class Forbidden(ClientError):
    status = 403
    reason = "Forbidden"


class Banned(Forbidden):
    """A banned address asked again; not counted towards a ban once more (it would never end)."""


class WAFDenied(Forbidden):
    """A WAF rule refused the request; ``rule`` names it (logs, metrics)."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"refused by rule {rule}")
        self.rule = rule


class NoRoute(ClientError):
    status = 404
    reason = "Not Found"


class MethodNotAllowed(ClientError):
    """Every route for the path takes other methods only (``match.methods``); Allow lists them."""

    status = 405
    reason = "Method Not Allowed"


class LengthRequired(ClientError):
    status = 411
    reason = "Length Required"


class TooLarge(ClientError):
    status = 413
    reason = "Content Too Large"


class UriTooLong(ClientError):
    status = 414
    reason = "URI Too Long"


class RateLimited(ClientError):
    status = 429
    reason = "Too Many Requests"


class HeadTooLarge(ClientError):
    status = 431
    reason = "Request Header Fields Too Large"


class NotImplementedHere(ClientError):
    """A request the proxy cannot take at all (a transfer coding other than chunked)."""

    status = 501
    reason = "Not Implemented"


class Overloaded(ProxyError):
    """Too many requests wait for a worker thread (``server.max_queue``): shed at once."""

    status = 503
    reason = "Service Unavailable"


class NotInCache(ClientError):
    """``Cache-Control: only-if-cached`` and nothing usable stored (RFC 9111 section 5.2.1.7)."""

    status = 504
    reason = "Gateway Timeout"


class StoreUnavailableError(ProxyError):
    """A shared rate-limit store did not answer and the limit says ``on_store_error: deny``."""

    status = 503
    reason = "Service Unavailable"


class UpstreamError(ProxyError):
    """The backend failed us; counted against the backend, not the client."""

    status = 502
    reason = "Bad Gateway"


class UpstreamConnectError(UpstreamError):
    """Refused, reset, unreachable or unresolvable: nothing was answered."""


class UpstreamProtocolError(UpstreamError):
    """The backend answered something we will not relay (bad framing, bare CR...)."""


class NoHealthyUpstream(UpstreamError):
    status = 503
    reason = "Service Unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "Gateway Timeout"


class UpstreamClosed(ConnectionError):
    """The upstream server closed the connection; ``received`` says whether it sent anything first
    (nothing: a stale keep-alive connection, and an idempotent request may be resent)."""

    def __init__(self, received: bool) -> None:
        super().__init__("upstream closed the connection")
        self.received = received


class StoreUnavailable(Exception):
    """A shared store (Redis) did not answer; the limit's ``on_store_error`` decides what follows
    (:class:`StoreUnavailableError` is the 503 a client then gets)."""


class CertificateError(ValueError):
    """A certificate that does not load; ``key`` names the config key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class UpstreamBodyAborted(Exception):
    """Raised to the WSGI server mid-body, so it cuts the client connection.

    A clean end would let the client take a truncated body for a whole one
    (the server would write the last chunk of a chunked response).
    """


class ListenError(OSError):
    """A listening address could not be bound; says which one and the key that configured it."""

    def __init__(self, key: str, address: tuple, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.key = key
        host, port = address[0], address[1]
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def __str__(self) -> str:
        return f"{self.key}: cannot listen on {self.where}: {self.strerror}"


class WaitressMismatch(RuntimeError):
    """The installed waitress lacks something the front end uses (simpleproxy/frontend/contract.py)."""


class ConfigError(Exception):
    """A configuration file is wrong. Raised at start-up or reload only.

    ``problems`` holds every error found, each already prefixed with the key
    path it concerns (``routes[0].upstream: no upstream named 'apii'``), so a
    user fixes the whole file in one pass instead of one error per run.
    """

    def __init__(self, problems: list[str] | str, source: str = "") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))

    def __str__(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return head + self.problems[0]
        lines = [f"{head}{len(self.problems)} errors"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class TunnelRefused(ProxyError):
    """An upgrade (WebSocket) refused: the tunnel limits are reached, or the server is stopping."""

    status = 503
    reason = "Service Unavailable"
