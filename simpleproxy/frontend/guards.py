"""Floods and slow clients, at the connection level, before any request reaches the app.

waitress resets a connection's inactivity timer with every byte, so a client
sending its request head one byte a second (slowloris), or its body (slow
body), is never cut off; a worker waits for a client that reads slowly (slow
read); and at its connection limit waitress stops accepting until a connection
times out, so idle or slow ones lock new clients out. Here:

- slow-client guards run by waitress's maintenance pass (every second,
  :func:`install_guards`): a deadline for the whole request head
  (``server.header_timeout``), minimum request and response rates, the output
  budget, and room made at the connection limit (channel.py keeps slow readers
  from holding worker threads at all);
- at most ``server.max_connections_per_client`` open connections per peer
  address; the next one gets a 503 and is closed;
- load shedding: when more than ``server.max_queue`` requests wait for a
  worker thread, a new one is answered 503 at once by a thread of its own,
  which never waits on a backend, instead of joining the queue.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from functools import partial
from typing import Any, Callable

from waitress.task import ThreadedTaskDispatcher

from waitress.utilities import Error

log = logging.getLogger("simpleproxy.floods")

#: connections accepted at most per pass of waitress's loop
ACCEPT_BATCH = 64

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\nContent-Length: 40\r\n\r\ntoo many connections from this address\r\n"
)


class QueueFull(Error):
    """waitress's form of an error for a request refused before a thread took it (not an exception:
    waitress's error task answers it, and channel.proxy_error makes it errors.Overloaded)."""

    code = 503
    reason = "Service Unavailable"


def guarded_channel_class(base: type, per_client: int, counts: dict[str, int]) -> type:
    """``base`` counting open connections per peer address in ``counts``, refusing those past
    ``per_client`` (0: no limit, nothing counted)."""
    if not per_client:
        return base
    lock = threading.Lock()

    class GuardedChannel(base):  # type: ignore[valid-type, misc]
        _counted = False

        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
            super().__init__(server, sock, addr, adj, map)
            peer = addr[0] if isinstance(addr, tuple) else str(addr)
            with lock:
                counts[peer] = counts.get(peer, 0) + 1
                over = counts[peer] > per_client
            self._peer, self._counted = peer, True
            if over:
                log.info("refused a connection from %s: over %d open connections", peer, per_client)
                with self.outbuf_lock:  # as waitress queues its own "100 Continue"
                    self.outbufs[-1].append(_REFUSED)
                    self.current_outbuf_count += len(_REFUSED)
                    self.total_outbufs_len += len(_REFUSED)
                self.close_when_flushed = True

        def del_channel(self, map: Any = None) -> None:
            """Every way a waitress channel closes ends here (``close`` is not always called)."""
            if self._counted:
                self._counted = False
                uncount(self._peer)
            super().del_channel(map)

        def keep_counted(self) -> Callable[[], None]:
            """For a connection leaving waitress as a tunnel: counted until the returned function runs."""
            if not self._counted:
                return lambda: None
            self._counted = False
            return partial(uncount, self._peer)

    def uncount(peer: str) -> None:
        with lock:
            left = counts.get(peer, 1) - 1
            if left:
                counts[peer] = left
            else:
                counts.pop(peer, None)

    return GuardedChannel


def install_guards(server: Any, settings: Any, budget: Any) -> None:
    """The slow-client defences on a waitress server, run by its maintenance pass every second.

    - a request head not complete ``header_timeout`` after its first byte is cut (slowloris);
    - a request (head and body) arriving slower than ``min_request_rate`` after
      ``min_rate_grace`` is cut: the idle timer alone restarts with every byte, so a
      body trickled a byte every few seconds would hold its connection for ever;
    - a client reading a waiting response slower than ``min_response_rate``, measured
      over ``min_rate_grace``, is cut (slow read): its worker was freed long ago
      (channel.py buffers the response), but the connection and the buffer were not;
    - the output budget is summed (``max_buffered_total``, channel.OutputBudget);
    - at ``connection_limit``, the oldest connections that sit idle between requests or
      have not sent a whole request head are closed, so that a new client gets in
      (waitress alone stops accepting until one times out).
    """
    original_maintenance, original_readable, original_accept = server.maintenance, server.readable, server.handle_accept
    head_timeout, grace = settings.header_timeout, settings.min_rate_grace
    request_rate, response_rate = settings.min_request_rate, settings.min_response_rate
    limit = server.adj.connection_limit
    evict_at_once = max(1, limit // 100)

    def maintenance(now: float) -> None:
        original_maintenance(now)
        monotonic = time.monotonic()
        channels = list(server.active_channels.values())
        waiting = budget.count(server, channels)
        for channel in channels:
            if channel.will_close:
                continue
            if channel.lingering_until:  # channel.py's lingering close
                if channel.lingering_until < monotonic:
                    channel.will_close = True
                continue
            why = _too_slow(channel, monotonic, head_timeout, grace, request_rate, response_rate)
            if why:
                log.info("closed a connection from %s: %s", channel.addr[0], why)
                _cut(channel)
        if waiting > budget.limit:
            _shed_slowest_readers(channels, waiting - budget.limit * 9 // 10, budget.limit, monotonic)

    def readable() -> bool:
        if len(server._map) >= limit:  # waitress would stop accepting: make room first
            _evict(server, evict_at_once)
        return bool(original_readable())

    def handle_accept() -> None:
        # waitress accepts one connection per pass of its loop, and each pass costs a call per
        # open connection: a burst of N new ones cost N passes. Take what the backlog holds.
        for _ in range(ACCEPT_BATCH):
            before = len(server._map)
            original_accept()
            if len(server._map) <= before or len(server._map) >= limit:
                return

    server.maintenance = maintenance
    server.readable = readable
    server.handle_accept = handle_accept


def _too_slow(channel: Any, now: float, head_timeout: float, grace: float, request_rate: int,
              response_rate: int) -> str:
    """Why a connection is too slow to keep ("" if it is not); updates its response-rate mark."""
    request = channel.request
    if request is not None and not channel.requests:  # a request arriving, none in progress before it
        elapsed = now - request.started
        if not request.headers_finished and elapsed > head_timeout:
            return f"request head not complete after {head_timeout:g}s"
        received = request.header_bytes_received + request.body_bytes_received
        if request_rate and elapsed > grace and received < request_rate * elapsed:
            return f"request arriving at {received / elapsed:.0f} bytes/s, under server.min_request_rate"
    if not channel.total_outbufs_len:
        channel.rate_mark = None
        return ""
    mark = channel.rate_mark
    if mark is None:
        channel.rate_mark = (now, channel.bytes_sent)
    elif now - mark[0] >= grace:
        rate = _read_rate(channel, now)
        if response_rate and rate < response_rate:
            return f"response read at {rate:.0f} bytes/s, under server.min_response_rate"
        channel.rate_mark = (now, channel.bytes_sent)
    return ""


def _read_rate(channel: Any, now: float) -> float:
    """Bytes a second the client has taken its waiting output at since its rate mark (inf without one)."""
    mark = channel.rate_mark
    return (channel.bytes_sent - mark[1]) / max(now - mark[0], 1e-3) if mark else float("inf")


def _shed_slowest_readers(channels: list, excess: int, limit: int, now: float) -> None:
    """Over ``max_buffered_total`` (``limit``): close the connections reading their waiting output
    the slowest until ``excess`` bytes are gone (what waits is back under nine tenths of the
    budget). Their workers are long gone; what they hold is memory and disk."""
    waiting = sorted((c for c in channels if c.total_outbufs_len and not c.will_close),
                     key=lambda channel: _read_rate(channel, now))
    shed = 0
    for channel in waiting:
        if excess <= 0:
            break
        excess -= channel.total_outbufs_len
        shed += 1
        _cut(channel)
    if shed:
        log.warning("waiting responses over server.max_buffered_total (%d bytes): closed the %d connections "
                    "reading the slowest", limit, shed)


def _cut(channel: Any) -> None:
    """Close a connection from the maintenance pass, whether or not its socket can take more output.

    waitress closes a ``will_close`` channel when the loop finds it writable, which
    a slow reader's full socket never becomes; shutting the socket down both ways
    makes it report a hang-up at once, and the loop closes it in its next pass (the
    descriptor stays the channel's until then, so no event can reach another one).
    """
    channel.will_close = True
    try:
        channel.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _evict(server: Any, count: int) -> None:
    """Close the ``count`` oldest connections that are idle between requests or still sending a head."""
    candidates = [
        channel for channel in list(server.active_channels.values())
        if not channel.will_close and not channel.requests and not channel.total_outbufs_len
        and (channel.request is None or not channel.request.headers_finished)
    ]
    if not candidates:
        return
    candidates.sort(key=lambda channel: channel.last_activity)
    for channel in candidates[:count]:
        channel.will_close = True  # closed by the loop in this same pass (writable, then handle_write)
    log.warning("connection limit (%d) reached: closing %d idle connections or unfinished request heads, "
                "oldest first", server.adj.connection_limit, min(count, len(candidates)))


class Shedder:
    """Answers 503 on its own thread for requests that arrive while the worker queue is too deep."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.shed = 0  #: requests answered 503 this way
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(1)

    def install(self, server: Any) -> None:
        queue = server.task_dispatcher.queue
        original = server.add_task

        def add_task(channel: Any) -> None:
            if len(queue) >= self.bound and channel.requests:
                channel.requests[0].error = QueueFull("the proxy is overloaded; retry in a moment")
                self.shed += 1
                self._dispatcher.add_task(channel)
            else:
                original(channel)

        server.add_task = add_task

    def close(self) -> None:
        self._dispatcher.shutdown(timeout=1)
