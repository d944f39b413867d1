"""waitress, wired for a proxy: its settings, its loop and threads, the HTTPS listeners, the guards.

waitress is the front end the design card names; a few of its defaults are
wrong for a proxy and are set here from the ``server:`` section (see
:class:`simpleproxy.config.ServerSettings`). Its channels
(:class:`.channel.ProxyChannel`) parse request heads with
:class:`.parser.StrictRequestParser`, which refuses ambiguous framing before
any application code runs. :class:`Front` is all the rest of the proxy sees of
waitress: addresses, counts, and start and stop.
"""

from __future__ import annotations

import logging
import select
import sys
import threading
from typing import Any, Callable, Iterable

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

from ..config import Config
from ..errors import UpstreamBodyAborted
from . import contract
from .channel import IN_MEMORY, OutputBudget, ProxyChannel
from .guards import Shedder, guarded_channel_class, install_guards
from .listeners import bind_all
from .loop import ChangedOnly
from .tls import HTTPSFront, tls_channel_class

log = logging.getLogger("simpleproxy")


class _QuietAbort(logging.Filter):
    """Drop waitress's traceback for a body we cut on purpose; forward.py logged why."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, UpstreamBodyAborted)


def raise_open_file_limit(config: Config) -> int:
    """Raise this process's soft limit on open files to what the configuration can use, as HAProxy does.

    Client connections, two sockets per tunnel, and room for upstream pools and
    files: ``connection_limit + 2 * max_tunnels + 256``. Many systems start a
    process at 1024, which 1000 connections would exhaust. Never above the hard
    limit; a warning says so when that is too low. Returns the soft limit now in
    force (0 where there is no such limit: Windows, where select() bounds sockets).
    """
    if sys.platform == "win32":
        return 0
    try:
        import resource
    except ImportError:  # a POSIX system without it (some minimal builds)
        return 0
    wanted = config.server.connection_limit + 2 * config.server.max_tunnels + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft < wanted:
        log.warning("open files are limited to %d (hard limit %s); server.connection_limit and server.max_tunnels "
                    "may need %d: raise the limit (ulimit -n, LimitNOFILE=)", soft, hard, wanted)
    return soft


def waitress_settings(config: Config) -> dict[str, Any]:
    """The waitress ``Adjustments`` for a configuration, but its sockets (see listeners.py)."""
    s = config.server
    # Without poll() (Windows), waitress uses select(), which CPython builds for 512
    # sockets there: stay below it rather than fail under load.
    connection_limit = s.connection_limit if hasattr(select, "poll") else min(s.connection_limit, 500)
    return {
        "threads": s.threads,
        "connection_limit": connection_limit,
        "channel_timeout": s.channel_timeout,
        "backlog": s.backlog,
        "max_request_body_size": s.max_request_body,
        "max_request_header_size": s.max_request_header,
        # What a response may buffer for a slow client before its worker waits (channel.py)...
        "outbuf_high_watermark": s.max_buffered_response,
        # ...and what of it stays in memory: the rest waits in a temporary file.
        "outbuf_overflow": IN_MEMORY,
        "ident": "simpleproxy",
        # The maintenance pass (idle connections, the request-head deadline) runs every second.
        "cleanup_interval": 1,
        # select() stops at 1024 descriptors on Linux; Windows has no poll().
        "asyncore_use_poll": hasattr(select, "poll"),
        "expose_tracebacks": False,
        "clear_untrusted_proxy_headers": False,  # headers.py decides, by trusted_proxies
    }


class _LoopWith:
    """What waitress's server runs its loop with (its ``asyncore``): wasyncore's loop, with our pass."""

    def __init__(self, changed_only: ChangedOnly) -> None:
        self._pass = changed_only

    def loop(self, timeout: float = 30.0, use_poll: bool = False, map: Any = None, count: Any = None) -> None:
        if not use_poll:
            wasyncore.loop(timeout=timeout, use_poll=False, map=map, count=count)
            return
        while map:
            self._pass.pass_(timeout, map)


class Front:
    """The proxy's client side: waitress's loop and worker threads serving ``app`` on the
    configured addresses, the HTTPS listeners in the same loop, and the connection guards.

    Built in the caller's thread (sockets bound, nothing served); :meth:`run` serves
    until :meth:`stop`. Every method but :meth:`run` may be called from any thread.
    """

    def __init__(self, app: Any, config: Config) -> None:
        contract.check()  # a waitress without what this package relies on fails here, by name
        raise_open_file_limit(config)
        logging.getLogger("waitress").addFilter(_QuietAbort())
        # waitress warns "Task queue depth is N" whenever every thread is busy: under
        # load that is every request, and the logging alone costs measurable CPU.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        settings = config.server
        self._map: dict[int, Any] = {}  #: waitress's socket map: every listener and connection
        sockets = bind_all(config.listen, settings.backlog)
        try:
            self._server = create_server(app, map=self._map, sockets=sockets, **waitress_settings(config))
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        self._listeners = [o for o in self._map.values() if isinstance(o, BaseWSGIServer)]
        self._dispatcher = self._listeners[0].task_dispatcher
        #: connections open per client address (counted only with server.max_connections_per_client)
        self.open_per_client: dict[str, int] = {}
        channel_class = guarded_channel_class(ProxyChannel, settings.max_connections_per_client, self.open_per_client)
        self.shedder = Shedder(settings.max_queue) if settings.max_queue else None
        #: all connections' response bytes waiting for their clients (server.max_buffered_total)
        self.output_budget = OutputBudget(settings.max_buffered_total)
        #: the loop's pass on poll(): waitress's below loop.SMALL sockets, only what changed above
        self._pass = ChangedOnly() if hasattr(select, "poll") else None
        if self._pass is not None:
            self._server.asyncore = _LoopWith(self._pass)
        for listener in self._listeners:
            listener.channel_class = channel_class
            if self._pass is not None:
                listener.loop_births = self._pass.born
            install_guards(listener, settings, self.output_budget)
            if self.shedder is not None:
                self.shedder.install(listener)
        self.fronts: list[HTTPSFront] = []  #: the HTTPS listeners
        if config.https is not None:
            try:
                for address in config.https.addresses:
                    self.fronts.append(HTTPSFront(config.https, address, settings.backlog))
            except BaseException:
                self.close()
                raise
            self._tls_channel = tls_channel_class(channel_class)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs; ports are real even when configured as 0."""
        return [(s.effective_host, int(s.effective_port)) for s in self._listeners]

    @property
    def https_addresses(self) -> list[tuple[str, int]]:
        return [front.address for front in self.fronts]

    def _connections(self) -> list[HTTPChannel]:
        return [c for c in list(self._map.values()) if isinstance(c, HTTPChannel)]

    def open_connections(self) -> int:
        return len(self._connections())

    def busy_threads(self) -> int:
        return self._dispatcher.active_count

    def queue_depth(self) -> int:
        return len(self._dispatcher.queue)

    def in_flight(self) -> int:
        """Requests being served or waiting for a thread."""
        return self._dispatcher.active_count + len(self._dispatcher.queue)

    def waiting_output(self) -> int:
        """Response bytes the connections hold for their clients (what ``server.max_buffered_total`` bounds)."""
        return sum(c.total_outbufs_len for c in self._connections())

    def answers_pending(self) -> bool:
        """Whether a connection has a request in progress or output its client has not read yet."""
        return any(c.requests or c.total_outbufs_len for c in self._connections())

    def call_in_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` in the loop's thread, at its next pass (OSError: the loop has stopped)."""
        self._listeners[0].trigger.pull_trigger(action)

    def stop_accepting(self, then: Callable[[], None]) -> None:
        """Close the listening sockets (the loop's wake-up stays) and idle connections, in the
        loop's thread; then call ``then`` there."""

        def close_listeners() -> None:
            for listener in self._listeners:
                wasyncore.dispatcher.close(listener)
            for front in self.fronts:
                front.close()
            self.close_idle()
            then()

        self.call_in_loop(close_listeners)

    def close_idle(self) -> None:
        """Close the connections idle between requests (in the loop's thread)."""
        for channel in self._connections():
            if not channel.requests and channel.request is None and not channel.total_outbufs_len:
                channel.close()

    def _adopt(self, sock: Any, addr: Any) -> None:
        """In the loop's thread: make a connection whose TLS handshake is done a waitress channel."""
        listener = self._listeners[0]
        if len(self._map) >= listener.adj.connection_limit:
            sock.close()  # as waitress stops accepting at its connection limit
            return
        self._tls_channel(listener, sock, addr, listener.adj, map=self._map)

    def run(self) -> None:
        """Serve in this thread until :meth:`stop`; then end the worker threads."""
        for front in self.fronts:
            front.start(self._adopt, self._map)
        try:
            self._server.run()
        finally:
            for front in self.fronts:
                front.close()
            self._dispatcher.shutdown()
            if self.shedder is not None:
                self.shedder.close()

    def stop(self) -> None:
        """Close every socket from inside the loop's thread; the loop then ends."""
        try:
            self.call_in_loop(lambda: wasyncore.close_all(self._map))
        except OSError:
            # The loop's wake-up pipe is already closed (waitress closes it on a
            # poll error): close the sockets from here; the loop ends at its next
            # poll timeout, when it finds nothing left to watch.
            wasyncore.close_all(self._map, ignore_all=True)

    def close(self) -> None:
        """Undo a front that never ran: its sockets and worker threads (after a failure to bind the
        next listener, or a stop before :meth:`run`)."""
        for front in self.fronts:
            front.sock.close()
        wasyncore.close_all(self._map, ignore_all=True)
        self._dispatcher.shutdown(timeout=1)
        if self.shedder is not None:
            self.shedder.close()


class SmallServer:
    """A second, small waitress server beside the proxy (the admin app): its own loop and threads."""

    def __init__(self, app: Any, addresses: Iterable[tuple[str, int]], backlog: int, key: str, ident: str) -> None:
        self._map: dict[int, Any] = {}
        self._server = create_server(app, map=self._map, sockets=bind_all(addresses, backlog, key, bound_unsent=False),
                                     threads=2, ident=ident, expose_tracebacks=False)
        self._listener = next(o for o in self._map.values() if isinstance(o, BaseWSGIServer))

    @property
    def address(self) -> tuple[str, int]:
        return (self._listener.effective_host, int(self._listener.effective_port))

    def start(self) -> None:
        threading.Thread(target=self._server.run, name=f"{self._listener.adj.ident}", daemon=True).start()

    def close(self, started: bool = True) -> None:
        """Close it from its own loop's thread (as :meth:`Front.stop` does), or at once if it never
        ``started``; then its threads."""
        if started:
            try:
                self._listener.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            except OSError:
                pass
        else:
            wasyncore.close_all(self._map, ignore_all=True)
        self._listener.task_dispatcher.shutdown(timeout=1)
