"""Upstream servers and their connection pools.

Each server gets one urllib3 ``HTTPConnectionPool`` (``HTTPSConnectionPool``
for https), which owns what urllib3 does well: opening connections with the
connect timeout, TLS, and keeping a bounded LIFO of idle keep-alive
connections. The request itself is spoken on the connected socket by
:mod:`.http1`; this module lends and takes back connections, and checks that
nothing arrived on an idle one before lending it again (:func:`idle_and_clean`).

urllib3 is asked through ``_new_conn``/``_put_conn`` and its idle queue, what
its own ``_get_conn`` and ``urlopen`` use: its only API that hands out a
connection without also running http.client, which would cost more CPU than
the rest of a proxied request together.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import itertools
import queue
import select
import socket
import ssl
import struct
import sys
import threading
import time
from functools import partial
from typing import Any, Callable, cast

import urllib3
import urllib3.exceptions
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from .. import forks
from ..config import UpstreamConfig, UpstreamServer, UpstreamTLS
from ..errors import NoHealthyUpstream, ProxyError, UpstreamConnectError, UpstreamTimeout
from ..grammar import cookie_value, environ_key
from .balance import make_policy
from .health import ActiveCheck, Breaker, Clock, HealthChecker, RetryBudget

log = logging.getLogger("simpleproxy.upstream")


class IdleConnections:
    """The queue of idle connections inside each urllib3 pool (its ``QueueCls``).

    urllib3's default, ``queue.LifoQueue``, takes two Python-level locks per
    get and per put so that a blocking pool can wait for a connection. Our pools
    never block (concurrency is bounded by the server's threads), and a deque's
    append and pop are atomic, so this LIFO needs no lock at all.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: collections.deque[Any] = collections.deque()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        try:
            return self.queue.pop()
        except IndexError:
            raise queue.Empty from None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if len(self.queue) >= self.maxsize:
            raise queue.Full
        self.queue.append(item)

    def qsize(self) -> int:
        return len(self.queue)

    def empty(self) -> bool:
        return not self.queue

    def full(self) -> bool:
        return len(self.queue) >= self.maxsize


#: what a receive or send on a backend connection raises when its timeout passes: socket.timeout
#: (Python's timeouts, and Windows' kernel ones), BlockingIOError (EAGAIN: the kernel's, on POSIX)
TIMED_OUT = (socket.timeout, BlockingIOError)


def set_timeout(conn: Any, seconds: float | None) -> None:
    """How long each receive and each send on ``conn`` may wait (None: for ever).

    On a plain TCP socket the kernel keeps the timeout (SO_RCVTIMEO and
    SO_SNDTIMEO on a blocking socket): Python's own timeouts put a poll()
    before every recv() and send(), a system call and a hand-off of the GIL
    each, twice per proxied request at least. A timeout then raises one of
    :data:`TIMED_OUT`. TLS sockets, and any platform that refuses the
    options, keep Python's timeouts. Unchanged settings cost no system call.
    """
    sock = conn.sock
    kept = conn.__dict__.get("_simpleproxy_timeout")
    if kept is not None and kept[0] is sock and kept[1] == seconds and sock.gettimeout() is None:
        return  # as set, and nobody (urllib3's health probes) switched it to Python's timeouts
    if seconds is not None and (isinstance(sock, ssl.SSLSocket) or not _kernel_timeouts(sock, seconds)):
        conn.__dict__.pop("_simpleproxy_timeout", None)
        if sock.gettimeout() != seconds:
            sock.settimeout(seconds)
        return
    if sock.gettimeout() is not None:
        sock.settimeout(None)  # blocking: the kernel's timeouts apply (FIONBIO, once per connection)
    if seconds is None:
        _kernel_timeouts(sock, 0.0)  # 0: no timeout
    conn._simpleproxy_timeout = (sock, seconds)


def _kernel_timeouts(sock: socket.socket, seconds: float) -> bool:
    """Set SO_RCVTIMEO and SO_SNDTIMEO; False where the platform refuses them."""
    if sys.platform == "win32":
        value = struct.pack("L", max(1, round(seconds * 1000)) if seconds else 0)  # a DWORD of milliseconds
    else:
        whole = int(seconds)
        value = struct.pack("ll", whole, max(1, round((seconds - whole) * 1e6)) if seconds else 0)  # a timeval
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except OSError:
        return False
    return True


def idle_and_clean(conn: Any, sock: socket.socket) -> bool:
    """True when nothing arrived on an idle connection: no bytes, no end of file, no error.

    One readiness check that does not wait: poll() with a zero timeout on a
    poll object kept with the connection (about 0.5 us; urllib3's own check
    builds one each time), select() where there is no poll() (Windows, where
    select() has no limit on descriptor numbers). A TLS connection also counts
    bytes its TLS layer decrypted but nobody read.
    """
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    return _nothing_to_read(conn, sock)


if sys.platform != "win32":  # every other platform has poll(); Windows' select() has no descriptor limit
    _POLLIN = select.POLLIN  # end of file, errors and hang-ups are reported without asking

    def _nothing_to_read(conn: Any, sock: socket.socket) -> bool:
        kept = conn.__dict__.get("_simpleproxy_poll")
        if kept is None or kept[0] is not sock:  # a new connection, or one connected again
            kept = (sock, select.poll())
            kept[1].register(sock, _POLLIN)
            conn._simpleproxy_poll = kept
        return not kept[1].poll(0)
else:
    def _nothing_to_read(conn: Any, sock: socket.socket) -> bool:
        return not select.select([sock], [], [], 0)[0]


class _HTTPPool(urllib3.HTTPConnectionPool):
    QueueCls = IdleConnections  # type: ignore[assignment]


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    QueueCls = IdleConnections  # type: ignore[assignment]


class ServerPool:
    """One upstream server and its idle keep-alive connections."""

    def __init__(self, server: UpstreamServer, config: UpstreamConfig, clock: Clock = time.monotonic) -> None:
        self.server = server
        self.name = server.name
        self.weight = server.weight
        #: what a sticky-session cookie holds for this server: stable, and not its address
        self.sticky_id = hashlib.blake2b(server.url.encode(), digest_size=6).hexdigest()
        self.max_connections = config.max_connections
        # Requests in flight as two monotonic counters: next() on itertools.count is
        # atomic, so no lock is needed unless max_connections must be exact.
        self._claims, self._releases = itertools.count(1), itertools.count(1)
        self._claimed = self._released = 0
        self._limit_lock = threading.Lock()  # only for an exact max_connections
        self.breaker = Breaker(self.name, config.passive, clock)
        self.check = ActiveCheck(self.name, config.health)
        common: dict[str, Any] = {
            "maxsize": max(1, config.keepalive),
            "block": False,  # concurrency is bounded by the server's threads, not here
            "timeout": urllib3.Timeout(connect=config.timeouts.connect, read=config.timeouts.read),
            "retries": False,
        }
        self._pool: urllib3.HTTPConnectionPool
        if server.scheme == "https":
            self._pool = _HTTPSPool(server.host, server.port, **common, **_tls_options(config.tls))
        else:
            self._pool = _HTTPPool(server.host, server.port, **common)
        self._idle = cast(IdleConnections, self._pool.pool)
        self._keepalive = config.keepalive

    def acquire(self, connect: float, read: float) -> tuple[HTTPConnection, bool]:
        """A connected connection, its read timeout set, and whether it was reused.

        An idle connection is reused only if nothing arrived on it while it sat
        in the pool: bytes waiting there would be read as the next request's
        answer (a late or unsolicited response poisons the next client), and an
        end of file means the server closed it. See :func:`idle_and_clean`.
        """
        try:
            conn: Any = self._idle.queue.pop()
        except IndexError:
            conn = None
        if conn is None:  # the pool's empty slot, or none left: a new connection
            conn = self._pool._new_conn()  # noqa: SLF001 - see the module docstring
        sock: socket.socket | None = conn.sock
        if sock is not None:
            if idle_and_clean(conn, sock):
                set_timeout(conn, read)
                return conn, True
            conn.close()  # then connect again below, as urllib3 does with a dropped connection
        conn.timeout = connect  # what urllib3's connect() gives create_connection
        try:
            conn.connect()
        except BaseException as exc:
            self.discard(conn)
            raise connect_error(exc, self.name) from None
        set_timeout(conn, read)  # connected now
        return conn, False

    def release(self, conn: HTTPConnection) -> None:
        """Give back a connection whose last response was read to its exact end."""
        if len(self._idle.queue) < self._keepalive:
            self._pool._put_conn(conn)  # noqa: SLF001
        else:
            conn.close()  # the pool is full: urllib3 would do the same, with a warning

    def discard(self, conn: HTTPConnection) -> None:
        """Close a connection in an unknown state; its pool slot is freed."""
        conn.close()
        if len(self._idle.queue) < self._keepalive:
            self._pool._put_conn(None)  # noqa: SLF001 - as urllib3's urlopen does on error

    def available(self) -> bool:
        """Healthy by the active checks, not ejected, and below max_connections."""
        return (
            self.check.healthy
            and self.breaker.available()
            and not (self.max_connections and self.in_flight >= self.max_connections)
        )

    @property
    def in_flight(self) -> int:
        """Requests being served by this server now (least_conn, random_two, max_connections)."""
        return self._claimed - self._released

    def claim(self, panic: bool = False) -> bool:
        """Count a request in; False when full or when another request holds the trial.

        ``panic``: past the breaker, which has ejected every server (see Upstream.pick).
        """
        if not self.max_connections:
            if not panic and not self.breaker.claim():
                return False
            self._claimed = next(self._claims)
            return True
        with self._limit_lock:
            if self.in_flight >= self.max_connections or not (panic or self.breaker.claim()):
                return False
            self._claimed = next(self._claims)
            return True

    def unclaim(self) -> None:
        self._released = next(self._releases)

    def probe(self, path: str, timeout: float, statuses: tuple[int, ...]) -> tuple[bool, str]:
        """One active check on its own connection: -> (healthy, what was seen)."""
        try:
            response = self._pool.urlopen(
                "GET", path, timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False,
                release_conn=True, headers={"User-Agent": "simpleproxy-health"},
            )
        except Exception as exc:  # every failure is just "unhealthy", with its name
            return False, type(exc).__name__
        return response.status in statuses, f"status {response.status}"

    def close(self) -> None:
        self._pool.close()


def _tls_options(tls: UpstreamTLS) -> dict[str, Any]:
    """urllib3's HTTPSConnectionPool arguments for an upstream's ``tls:`` section."""
    if not tls.verify:
        return {"cert_reqs": "CERT_NONE", "assert_hostname": False, "cert_file": tls.cert, "key_file": tls.key,
                "key_password": tls.password}
    return {
        "cert_reqs": "CERT_REQUIRED",
        "ca_certs": tls.ca,  # None: the system trust store
        "server_hostname": tls.server_name,  # SNI
        "assert_hostname": tls.server_name,  # and the name the certificate must carry
        "cert_file": tls.cert,
        "key_file": tls.key,
        "key_password": tls.password,
    }


def connect_error(exc: BaseException, server: str) -> BaseException:
    """Translate a failure to connect. Refused is 502, only a timeout is 504.

    ``NewConnectionError`` subclasses ``ConnectTimeoutError`` in urllib3, so
    the order of these checks matters.
    """
    if isinstance(exc, NameResolutionError):
        error: ProxyError = UpstreamConnectError("cannot resolve the upstream host")
    elif isinstance(exc, NewConnectionError):
        refused = isinstance(exc.__cause__, ConnectionRefusedError)
        error = UpstreamConnectError("upstream refused the connection" if refused else "cannot connect to upstream")
    elif isinstance(exc, (ConnectTimeoutError, socket.timeout)):
        error = UpstreamTimeout("upstream connect timed out")
    elif isinstance(exc, (ssl.SSLError, ssl.CertificateError, urllib3.exceptions.SSLError)):
        reason = getattr(exc, "reason", None) or getattr(exc, "verify_message", None) or type(exc).__name__
        error = UpstreamConnectError(f"upstream TLS handshake failed ({reason})")
    elif isinstance(exc, Exception):
        error = UpstreamConnectError(f"cannot connect to upstream ({type(exc).__name__})")
    else:
        return exc  # KeyboardInterrupt and friends pass through
    error.upstream = server
    return error


class Upstream:
    """A named group of servers, the policy that picks among them, and their health."""

    def __init__(self, config: UpstreamConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.name = config.name
        self.servers = [ServerPool(server, config, clock) for server in config.servers]
        self.policy = make_policy(config.balance, self.servers, config.hash_on)
        self._single = self.servers[0] if len(self.servers) == 1 else None
        self.sticky_cookie = config.sticky_cookie
        self._sticky = _key_reader(f"cookie:{config.sticky_cookie}") if config.sticky_cookie else None
        self._by_sticky_id = {server.sticky_id: server for server in self.servers}
        self._key = _key_reader(self.policy.key_source)
        self.retries = config.retries
        if not config.tls.verify:
            log.warning("upstream %r: TLS certificates are not verified (upstreams.%s.tls.verify: false)", self.name, self.name)
        self.budget = RetryBudget(config.retries, clock)
        self.retried = 0  #: requests resent to another server, for metrics
        self.panicked = 0  #: requests sent to ejected servers because every server was ejected
        self._retried_lock = threading.Lock()  # and the panic count's
        self.checker: HealthChecker | None = None
        self._checker_generation = -1  # forks.generation when the checks started
        health = config.health
        if health is not None:
            self.checker = HealthChecker(
                [(s.check, partial(s.probe, health.path, health.timeout, health.statuses)) for s in self.servers],
                health.interval,
            )

    def sticky_server(self, request: Any) -> ServerPool | None:
        """The server a sticky-session cookie names, if it names one of ours."""
        if self._sticky is None:
            return None
        return self._by_sticky_id.get(self._sticky(request))

    def pick(
        self, request: Any, exclude: list[ServerPool] | tuple = (), prefer: ServerPool | None = None
    ) -> ServerPool:
        """A server for this request (a :class:`simpleproxy.request.Request`: the client it names is the
        one the proxy trusts), counted in (``unclaim`` it when done); 503 if none."""
        if self.checker is not None and self._checker_generation != forks.generation:
            self._start_checks()  # lazily, once per process: pre-forking servers work
        if prefer is not None and prefer not in exclude and prefer.available() and prefer.claim():
            return prefer
        if self._single is not None:  # one server: no policy to ask
            if not exclude and self._single.available() and self._single.claim():
                return self._single
            candidates = []
        else:
            candidates = [s for s in self.servers if s.available() and s not in exclude]
        key = self._key(request) if self._key is not None and candidates else ""
        while candidates:
            server: ServerPool = self.policy.pick(candidates, key)  # type: ignore[assignment]
            if server.claim():
                return server
            candidates.remove(server)  # filled up or taken meanwhile
        last_resort = self._panic(exclude)
        if last_resort is not None:
            return last_resort
        raise NoHealthyUpstream(
            f"no available server in upstream {self.name!r}", headers=(("Retry-After", "1"),)
        )

    def in_panic(self) -> bool:
        """Every server that active checks allow is ejected by the passive breaker (see :meth:`_panic`)."""
        allowed = [s for s in self.servers if s.check.healthy]
        return bool(allowed) and all(s.breaker.ejected() for s in allowed)

    def _panic(self, exclude: list[ServerPool] | tuple) -> ServerPool | None:
        """When the passive breaker has ejected every server that active checks allow, send the
        request to them anyway, least recently failed first, rather than answer 503 (Envoy's
        panic routing; nginx never marks a lone server down): a restart or a burst of resets
        must not become an outage for the whole ejection period. A request that succeeds
        closes its server's breaker. Servers that active checks hold down stay out."""
        if not self.in_panic():
            return None
        for server in sorted(self.servers, key=lambda s: s.breaker.last_failure):
            if server.check.healthy and server not in exclude and server.claim(panic=True):
                with self._retried_lock:
                    self.panicked += 1
                return server
        return None

    def _start_checks(self) -> None:
        self._checker_generation = forks.generation
        assert self.checker is not None
        self.checker.start()

    def count_retry(self) -> None:
        with self._retried_lock:
            self.retried += 1

    def close(self) -> None:
        if self.checker is not None:
            self.checker.stop()
        for server in self.servers:
            server.close()


def _key_reader(source: str | None) -> Callable[[Any], str] | None:
    """What a hashing policy hashes, read from the request: the client the proxy trusts (behind a
    trusted load balancer, the one it names, as rate limits and the access log see it), a header
    or a cookie."""
    if source is None:
        return None
    if source == "client_ip":
        return lambda request: request.client_ip
    kind, _, name = source.partition(":")
    if kind == "header":
        key = environ_key(name)
        return lambda request: request.environ.get(key, "")
    return lambda request: cookie_value(request.environ.get("HTTP_COOKIE", ""), name) or ""
