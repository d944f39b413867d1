"""The terminal handler: send one request to an upstream server and relay its answer.

The request head is built in one piece and sent with the body in as few
writes as possible; the response head is parsed strictly (:mod:`.http1`) and
the body streams to the client as it arrives. A connection goes back to its
pool only when the response ended exactly where its framing said; anything
else (a client that left, a backend that broke off, more bytes than promised)
closes it, so no later request can read the leftovers of this one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import socket
import time
from functools import partial
from typing import Any, Callable

from ..config import RouteConfig
from ..errors import (
    BadRequest,
    ProxyError,
    TooLarge,
    UpstreamBodyAborted,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ..headers import ForwardingHeaders
from ..interim import INTERIM
from ..request import Request
from ..observe.metrics import route_label
from ..response import BodyStream, Response, TunnelResponse
from ..tunnels import Tunnels
from ..upgrade import UPGRADE
from .http1 import RECV_SIZE, BodyReader, ResponseHead, parse_head, read_head
from .pool import TIMED_OUT, ServerPool, Upstream, set_timeout

log = logging.getLogger("simpleproxy.upstream")

#: RFC 9110 section 9.2.2; only these are resent after a stale keep-alive connection.
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
_SMALL_BODY = 64 * 1024
MAX_INTERIM = 8  # 1xx responses skipped before the final one, at most
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


class UpstreamHandler:
    """Forwards requests of one route to one upstream."""

    def __init__(
        self, route: RouteConfig, upstream: Upstream, headers: ForwardingHeaders, max_body: int,
        tunnels: Tunnels | None = None,
    ) -> None:
        self.route = route
        #: where upgraded connections are counted; None: upgrades are ordinary requests
        self.tunnels = tunnels if route.upgrade else None
        self._label = route_label(route.host, route.path)
        self.upstream = upstream
        self.headers = headers
        self.max_body = max_body
        self._host_header = route.host_header
        #: the upstream's timeouts with the route's overrides
        self.timeouts = dataclasses.replace(upstream.config.timeouts, **(route.timeouts or {}))
        self._failing_statuses = frozenset(upstream.config.passive.statuses)
        self._retried_statuses = frozenset(upstream.config.retries.statuses)
        #: the methods resent to another server after a failure (when the body is in hand)
        self.retried_methods = upstream.config.retries.methods
        #: for an upgrade's answer: the backend's Upgrade field is kept aside, to be checked
        self._upgrade_fields = {**headers.response_fields, "upgrade": "upgrade"}

    def __call__(self, request: Request, protocol: str | None = None) -> Response:
        """``protocol``: an Upgrade being tried (from :meth:`_upgrade`); None for ordinary requests."""
        if protocol is None and self.tunnels is not None and UPGRADE in request.environ:
            offered = self._protocol(request.environ.get("HTTP_UPGRADE", ""))
            if offered is not None:
                return self._upgrade(request, offered)
        upstream = self.upstream
        upstream.budget.request()
        body = _read_body(request, self.max_body)
        # Resent only when idempotent and its body is in hand; never once a byte of
        # the answer left (nothing has: retries happen before a Response exists).
        may_retry = request.method in self.retried_methods and body is not None
        tried: list[ServerPool] = []
        sticky = upstream.sticky_server(request) if upstream.sticky_cookie else None
        while True:
            server = upstream.pick(request, tried, sticky)  # claims the server: unclaimed on any failure
            try:
                head = self._head(request, server, body)
                if protocol is not None:
                    head = head[:-2] + f"Connection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n".encode("latin-1")
                conn, response, rest = self._exchange(server, request, head, body, protocol is not None)
            except UpstreamError as exc:
                server.unclaim()
                server.breaker.failure(exc.detail)
                if may_retry and self._retry(server, tried, exc.detail):
                    continue
                raise
            except BaseException:
                server.unclaim()
                raise
            status = response.status
            if status in self._failing_statuses:
                server.breaker.failure(f"status {status}")
            else:
                server.breaker.success()
            if status in self._retried_statuses and may_retry and self._retry(server, tried, f"status {status}"):
                server.discard(conn)
                server.unclaim()
                continue
            relayed: Response
            if status == 101:  # only ever accepted for an upgrade
                relayed = self._switch(server, conn, response, rest, request, protocol)  # type: ignore[arg-type]
            else:
                relayed = self._relay(server, conn, response, rest, request.started)
            if upstream.sticky_cookie and server is not sticky:
                relayed.own_headers = [
                    ("Set-Cookie", f"{upstream.sticky_cookie}={server.sticky_id}; Path=/; HttpOnly; SameSite=Lax")
                ]
            return relayed

    def _protocol(self, offered: str) -> str | None:
        """The first protocol the client offers that this route tunnels (RFC 9110 7.8), as it was written."""
        for item in offered.split(","):
            protocol = item.strip()
            if protocol.lower() in self.route.upgrade or protocol.lower().partition("/")[0] in self.route.upgrade:
                return protocol
        return None

    def _upgrade(self, request: Request, protocol: str) -> Response:
        """An upgrade: counted against the tunnel limits, then forwarded as any request is (balancing,
        stickiness, retries before an answer); a 101 becomes a :class:`TunnelResponse`."""
        tunnels = self.tunnels
        assert tunnels is not None
        tunnels.reserve(self._label, self.route.max_tunnels)  # 503 before any backend is asked
        response = None
        try:
            response = self(request, protocol)
            return response
        finally:
            if not isinstance(response, TunnelResponse):  # the backend declined, or failed
                tunnels.release(self._label)

    def _switch(
        self, server: ServerPool, conn: Any, response: ResponseHead, rest: bytes, request: Request, protocol: str
    ) -> TunnelResponse:
        """A 101, checked, and its connection taken out of the pool for the tunnel.

        The backend must name the protocol asked for and, for WebSocket, prove that it
        read the handshake (``Sec-WebSocket-Accept``, RFC 6455 section 4.2.2); a 101
        without those is refused, or a backend that echoes statuses could open a raw
        tunnel past every per-request filter (WebSocket smuggling).
        """
        switched = response.upgrade.partition(",")[0].strip()
        problem = None
        if switched.lower() != protocol.lower():
            problem = f"101 with Upgrade {switched!r}, not {protocol!r}"
        elif protocol.lower() == "websocket":
            key = request.environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
            expected = base64.b64encode(hashlib.sha1((key + _WEBSOCKET_GUID).encode("latin-1")).digest()).decode()
            if not key or dict((n.lower(), v) for n, v in response.headers).get("sec-websocket-accept") != expected:
                problem = "101 without the Sec-WebSocket-Accept the handshake calls for"
        if problem is not None:
            server.discard(conn)
            server.unclaim()
            raise _with_server(UpstreamProtocolError(problem), server)
        set_timeout(conn, None)  # a tunnel waits as long as its idle timeout says, not the read timeout
        sock, conn.sock = conn.sock, None  # out of urllib3's hands; the pool slot is freed
        server.discard(conn)
        server.unclaim()  # a tunnel is not a request in flight: max_connections stays for requests
        headers = self.headers.response_headers(response.headers)
        headers += [("Connection", "Upgrade"), ("Upgrade", switched)]
        tunnels, label = self.tunnels, self._label
        assert tunnels is not None
        return TunnelResponse(response.status_line, headers, server.name, sock, rest, label,
                              self.route.tunnel_idle_timeout, partial(tunnels.release, label))

    def _retry(self, server: ServerPool, tried: list[ServerPool], reason: str) -> bool:
        """Another try on another server, if the count, the servers and the budget allow."""
        upstream = self.upstream
        tried.append(server)
        if len(tried) > upstream.retries.count or len(tried) >= len(upstream.servers):
            return False
        if not upstream.budget.allow():
            log.warning("not retrying after %s from %s: retry budget spent", reason, server.name)
            return False
        log.warning("retrying on another server after %s from %s", reason, server.name)
        upstream.count_retry()
        return True

    def sent_host(self, request: Request, server: str) -> str:
        """The ``Host`` the backend ``server`` (its host:port) receives (the route's ``host_header``)."""
        host = self._host_header
        if host == "client":
            return request.authority or server
        return server if host == "upstream" else host

    def sent_target(self, request: Request) -> str:
        """The request target the backend receives (the route's strip_prefix, rewrite and add_prefix applied)."""
        return request.route.upstream_path(request.path) + request.query

    def _head(self, request: Request, server: ServerPool, body: bytes | None) -> bytes:
        return self.headers.request_head(
            request.environ, request.method, self.sent_target(request), self.sent_host(request, server.name),
            request.client, request.scheme, request.authority,
            request.content_length if body is None else len(body), request.request_id, request.client_ip,
            request.user, request.fields,
        )

    def _relay(self, server: ServerPool, conn: Any, response: ResponseHead, rest: bytes, request_started: float) -> Response:
        headers = self.headers.response_headers(response.headers)
        if not response.has_body:
            data, clean = b"", not rest
        elif 0 <= response.length <= len(rest):
            data, clean = rest[: response.length], len(rest) == response.length
        else:
            reader = BodyReader(conn.sock, response, rest)
            try:
                reader.check_buffered_chunk_size()
            except UpstreamProtocolError as exc:
                server.discard(conn)
                server.unclaim()
                raise _with_server(exc, server) from None
            body_iter = StreamingBody(reader, server, conn, response.keep_alive)
            if response.length < 0 and _is_event_stream(response.headers):
                # Server-sent events: long quiet spells are normal; the route's stream timeout
                # replaces the read timeout, and no total deadline applies.
                set_timeout(conn, self.route.stream_timeout or None)
            elif self.timeouts.total:
                body_iter.deadline = (request_started + self.timeouts.total, self.timeouts.read)
            return Response(response.status_line, headers, body_iter, server.name)
        # The whole body is already here: hand the connection back before relaying it.
        if response.keep_alive and clean:
            server.release(conn)
        else:
            server.discard(conn)
        server.unclaim()
        return Response(response.status_line, headers, [data] if data else [], server.name)

    def _exchange(
        self, server: ServerPool, request: Request, head: bytes, body: bytes | None, upgrade: bool = False
    ) -> tuple[Any, ResponseHead, bytes]:
        """Send the request, read the final response head; one retry on a stale connection."""
        timeouts = self.timeouts
        deadline = request.started + timeouts.total if timeouts.total else 0.0
        resendable = request.method in IDEMPOTENT and body is not None
        for attempt in (1, 2):
            read = _limit(timeouts.read, deadline)
            conn, reused = server.acquire(timeouts.connect, read)
            try:
                _send(conn.sock, head, body, request)
                rest = b""
                for _ in range(MAX_INTERIM):
                    raw, rest = read_head(conn.sock, rest)
                    response = parse_head(raw, request.method, self._upgrade_fields if upgrade else self.headers.response_fields)
                    if response.status >= 200 or (upgrade and response.status == 101):
                        return conn, response, rest
                    if response.status == 101:
                        raise UpstreamProtocolError("unexpected 101 Switching Protocols")
                    if response.status == 103:  # Early Hints: to the client now, where the front end can
                        hints = request.environ.get(INTERIM)
                        if hints is not None and self.route.early_hints:
                            hints(response.status_line, response.headers)
                    # else 100 Continue (the front end answered the client's Expect itself) or another
                    # 1xx: dropped (interim.py)
                raise UpstreamProtocolError("too many informational (1xx) responses")
            except (UpstreamClosed, ConnectionResetError, BrokenPipeError) as exc:
                server.discard(conn)
                closed = isinstance(exc, UpstreamClosed)
                # A reused connection that the server closed between the pool's check and our
                # send: nothing was processed, so an idempotent request with its body in hand
                # is resent.
                stale = reused and attempt == 1 and not (closed and getattr(exc, "received", False))
                if stale and resendable:
                    log.debug("retrying on a new connection to %s: stale keep-alive", server.name)
                    continue
                reason = "upstream closed the connection" if closed else "upstream reset the connection"
                raise _with_server(UpstreamConnectError(reason), server) from None
            except TIMED_OUT:
                server.discard(conn)
                what = "total deadline exceeded" if read < timeouts.read else "read timed out"
                raise _with_server(UpstreamTimeout(f"upstream {what}"), server) from None
            except ProxyError as exc:
                server.discard(conn)
                raise _with_server(exc, server) from None
            except OSError as exc:
                server.discard(conn)
                raise _with_server(UpstreamConnectError(f"upstream I/O error ({exc.strerror or type(exc).__name__})"), server) from None
            except BaseException:
                server.discard(conn)
                raise
        raise AssertionError("unreachable")  # pragma: no cover


def _is_event_stream(headers: list[tuple[str, str]]) -> bool:
    for name, value in headers:
        if name.lower() == "content-type":
            return value.partition(";")[0].strip().lower() == "text/event-stream"
    return False


def _limit(read: float, deadline: float) -> float:
    """The read timeout, shortened to what is left before a total deadline (0: none)."""
    if not deadline:
        return read
    left = deadline - time.perf_counter()
    if left <= 0:
        raise UpstreamTimeout("upstream total deadline exceeded")
    return min(read, left)


def _with_server(exc: ProxyError, server: ServerPool) -> ProxyError:
    exc.upstream = server.name
    return exc


def _read_body(request: Request, max_body: int) -> bytes | None:
    """Small bodies are read now (sent with the head, and resendable); large ones stream."""
    length = request.content_length
    stream = request.environ["wsgi.input"]
    if length < 0:  # no length: another WSGI server's de-chunked input; bounded read
        data = stream.read(max_body + 1)
        if len(data) > max_body:
            raise TooLarge(f"request body over {max_body} bytes")
        return data
    if length > _SMALL_BODY:
        return None
    data = stream.read(length) if length else b""
    if len(data) != length:
        raise BadRequest("request body shorter than its Content-Length")
    return data


def _send(sock: socket.socket, head: bytes, body: bytes | None, request: Request) -> None:
    if body is not None:
        sock.sendall(head + body if body else head)
        return
    sock.sendall(head)
    stream = request.environ["wsgi.input"]
    left = request.content_length
    while left:
        data = stream.read(min(left, RECV_SIZE))
        if not data:
            raise BadRequest("request body shorter than its Content-Length")
        sock.sendall(data)
        left -= len(data)


class StreamingBody(BodyStream):
    """The WSGI iterable for a body still arriving from upstream; releases the connection on close."""

    __slots__ = ("reader", "server", "conn", "keep_alive", "error", "deadline")

    def __init__(self, reader: BodyReader, server: ServerPool, conn: Any, keep_alive: bool) -> None:
        super().__init__()
        self.reader = reader
        self.server = server
        self.conn = conn
        self.keep_alive = keep_alive
        self.error = ""
        #: (total deadline, read timeout) when the route has a total deadline
        self.deadline: tuple[float, float] | None = None

    def __iter__(self) -> StreamingBody:
        return self

    def __next__(self) -> bytes:
        try:
            if self.deadline is not None:
                set_timeout(self.conn, _limit(self.deadline[1], self.deadline[0]))
            data = self.reader.read()
        except TIMED_OUT:
            self.error = "upstream read timed out mid-body"
        except UpstreamClosed:
            self.error = "upstream closed mid-body"
        except UpstreamError as exc:
            self.error = exc.detail + (" mid-body" if isinstance(exc, UpstreamTimeout) else "")
        except OSError as exc:
            self.error = f"upstream I/O error mid-body ({exc.strerror or type(exc).__name__})"
        else:
            if data:
                self.sent += len(data)
                if self.sink is not None:
                    self.sink.write(data)
                    if self.reader.complete:
                        self._stored()
                return data
            if self.sink is not None and self.reader.complete:
                self._stored()
            raise StopIteration
        log.warning("%s from %s after %d bytes", self.error, self.server.name, self.sent)
        raise UpstreamBodyAborted(self.error)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            if self.reader.complete and self.keep_alive and not self.reader.buf:
                self.server.release(conn)
            else:  # the client left, the backend broke off or sent more than the response: never reuse
                self.server.discard(conn)
            self.server.unclaim()
        self.finished(self.reader.complete and not self.error)
