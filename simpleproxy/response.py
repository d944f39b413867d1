"""What a handler returns (a WSGI status, fields and body, plus what the log needs), and the
two shapes of the request path: a :data:`Handler` answers a request, a :class:`Filter` wraps one."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Callable, Iterable, Protocol

from .config import Respond
from .request import Request


#: answers a request: a route's terminal (upstream.forward.UpstreamHandler, FixedResponder), or a
#: terminal wrapped in filters (app.compose)
Handler = Callable[[Request], "Response"]


class Filter(Protocol):
    """Wraps a handler: answers itself (a 403, a cached response) or calls ``next``, and may change
    what comes back. Access lists, the WAF, rate limits, TLS rules and the cache are filters."""

    def __call__(self, request: Request, next: Handler) -> Response: ...


class BodyStream:
    """A body still being produced, the WSGI iterable of a streamed answer.

    ``sent`` counts the bytes it gave out; ``sink`` (the cache's fill, when the
    answer is being stored) gets each of them and, at the end, whether they were
    the whole body; ``on_close`` (the app's count and log line) is called once it
    is closed. Subclasses call :meth:`finished` from ``close()``.
    """

    __slots__ = ("sent", "sink", "on_close")

    def __init__(self) -> None:
        self.sent = 0
        self.sink: Any = None
        self.on_close: Callable[[Any], None] | None = None

    def _stored(self) -> None:
        """The body is whole: the sink (the cache) keeps it now, before the client can have read the
        last of it, so the client's next request finds it stored (not only once the server closes)."""
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.finish(True)

    def finished(self, whole: bool) -> None:
        """The body is closed: ``whole`` if every byte of it was given out. Tells each once."""
        sink, self.sink = self.sink, None
        on_close, self.on_close = self.on_close, None
        try:
            if sink is not None:
                sink.finish(whole)
        finally:
            if on_close is not None:  # the count and the log line, whatever storing did
                on_close(self)


class Response:
    __slots__ = ("status", "headers", "body", "upstream", "own_headers", "cache", "limit", "answer")

    def __init__(
        self, status: str, headers: list[tuple[str, str]], body: Iterable[bytes], upstream: str = "-"
    ) -> None:
        self.status = status  #: "200 OK"
        self.headers = headers
        #: fields the proxy adds for this client alone (a sticky-session cookie): sent after
        #: ``headers``, and never stored by the cache with the response
        self.own_headers: list[tuple[str, str]] | None = None
        #: what the cache did, for the access log: hit, miss, stale, revalidated, bypass; "-" for none
        self.cache = "-"
        #: what the rate limits did: passed, delayed, rejected; "-" for none
        self.limit = "-"
        #: which route rule made the answer, for metrics: redirect, static, error_page; "-" for none
        self.answer = "-"
        #: a list when the whole body is known, else an iterable with ``close()``
        self.body = body
        self.upstream = upstream  #: the server that answered, "-" for a local answer


class FixedResponder:
    """A route's ``respond:``: the same local answer every time, built once."""

    def __init__(self, respond: Respond) -> None:
        try:
            phrase = HTTPStatus(respond.status).phrase
        except ValueError:
            phrase = "Unknown"
        self._status = f"{respond.status} {phrase}"
        self._body = respond.body.encode("utf-8")
        self._headers = [("Content-Type", respond.content_type), ("Content-Length", str(len(self._body)))]

    def __call__(self, request: Any) -> Response:
        body = [] if request.method == "HEAD" else [self._body]
        return Response(self._status, list(self._headers), body)


class TunnelResponse(Response):
    """A backend's ``101 Switching Protocols``: the app takes the client socket and starts a tunnel."""

    __slots__ = ("backend", "rest", "label", "server", "idle_timeout", "finish")

    def __init__(
        self, status: str, headers: list[tuple[str, str]], upstream: str, backend: Any, rest: bytes, label: str,
        idle_timeout: float, finish: Callable[[], None],
    ) -> None:
        super().__init__(status, headers, [], upstream)
        self.backend = backend  #: the backend's socket, out of its pool
        self.rest = rest  #: backend bytes read past the 101 head
        self.label = label  #: the route's label, as the tunnel limits count it
        self.idle_timeout = idle_timeout
        #: counts the tunnel out (limits, the server's in-flight count); called once, when it ends
        self.finish = finish
