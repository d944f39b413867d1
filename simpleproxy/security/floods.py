"""Floods and slow clients, at the connection level, before any request reaches the app.

waitress resets a connection's inactivity timer with every byte, so a client
sending its request head one byte a second (slowloris) is never cut off, and
its own connection limit is global, so one client may hold every slot. Here:

- a deadline for the whole request head (``server.header_timeout``), counted
  from its first byte, checked by waitress's maintenance pass (every second);
- at most ``server.max_connections_per_client`` open connections per peer
  address; the next one gets a 503 and is closed;
- load shedding: when more than ``server.max_queue`` requests wait for a
  worker thread, a new one is answered 503 at once by a thread of its own,
  which never waits on a backend, instead of joining the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Any, Callable

from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error

log = logging.getLogger("simpleproxy.floods")

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\nContent-Length: 40\r\n\r\ntoo many connections from this address\r\n"
)


class Overloaded(Error):
    code = 503
    reason = "Service Unavailable"


def guarded_channel_class(base: type, per_client: int) -> type:
    """``base`` counting open connections per peer address, refusing those past ``per_client`` (0: no limit)."""
    if not per_client:
        return base
    counts: dict[str, int] = {}
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

    GuardedChannel.open_per_client = counts  # type: ignore[attr-defined]
    return GuardedChannel


def install_head_deadline(server: Any, timeout: float) -> None:
    """Close connections whose current request head is not complete ``timeout`` after its first byte."""
    original = server.maintenance

    def maintenance(now: float) -> None:
        original(now)
        monotonic = time.monotonic()
        cutoff = monotonic - timeout
        for channel in list(server.active_channels.values()):
            if channel.lingering_until and channel.lingering_until < monotonic:  # channel.py's lingering close
                channel.will_close = True
                continue
            request = channel.request
            started = getattr(request, "started", None)
            # Not while an earlier request of the same connection is served: cutting would cut its answer.
            if (started is not None and not request.headers_finished and started < cutoff
                    and not channel.will_close and not channel.requests):
                log.info("closed a connection from %s: request head not complete after %gs", channel.addr[0], timeout)
                channel.will_close = True

    server.maintenance = maintenance


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
                channel.requests[0].error = Overloaded("the proxy is overloaded; retry in a moment")
                self.shed += 1
                self._dispatcher.add_task(channel)
            else:
                original(channel)

        server.add_task = add_task

    def close(self) -> None:
        self._dispatcher.shutdown(timeout=1)
