"""waitress wiring: settings, the stricter request parser, start and stop.

waitress is the front end the design card names; a few of its defaults are
wrong for a proxy and are set here from the ``server:`` section (see
:class:`simpleproxy.config.ServerSettings`). Its channels
(:class:`simpleproxy.channel.ProxyChannel`) parse request heads with
:class:`simpleproxy.parser.StrictRequestParser`, which refuses ambiguous
framing before any application code runs.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress import wasyncore

from .app import ProxyApp
from .channel import IN_MEMORY, OutputBudget, ProxyChannel
from .config import Config, load_config
from .errors import ConfigError
from .listeners import bind_all
from .security.floods import Shedder, guarded_channel_class, install_guards
from .tls.front import HTTPSFront, tls_channel_class
from .upstream.forward import UpstreamBodyAborted

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


class ProxyServer:
    """A ProxyApp served by waitress on the configured addresses."""

    def __init__(self, config: Config, app: ProxyApp | None = None, config_path: str | None = None) -> None:
        """``config_path``: the file :meth:`reload` reads again (None: reloads only certificates)."""
        self.app = app if app is not None else ProxyApp(config)
        self.config_path = config_path
        raise_open_file_limit(config)
        self._reload_lock = threading.Lock()
        logging.getLogger("waitress").addFilter(_QuietAbort())
        # waitress warns "Task queue depth is N" whenever every thread is busy: under
        # load that is every request, and the logging alone costs measurable CPU.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        try:
            sockets = bind_all(config.listen, config.server.backlog)
            self._server = create_server(self.app, sockets=sockets, **waitress_settings(config))
        except BaseException:
            self.app.close()
            raise
        self._map: dict = getattr(self._server, "map", None) or self._server._map
        self.servers = [o for o in self._map.values() if isinstance(o, BaseWSGIServer)]
        settings = config.server
        channel_class = guarded_channel_class(ProxyChannel, settings.max_connections_per_client)
        self.shedder = Shedder(settings.max_queue) if settings.max_queue else None
        #: all connections' response bytes waiting for their clients (server.max_buffered_total)
        self.output_budget = OutputBudget(settings.max_buffered_total)
        for server in self.servers:
            server.channel_class = channel_class
            install_guards(server, settings, self.output_budget)
            if self.shedder is not None:
                self.shedder.install(server)
        self._stopped = threading.Event()
        self._draining = threading.Event()
        #: set once a drain has closed the listening sockets
        self.listeners_closed = threading.Event()
        self.fronts: list[HTTPSFront] = []
        if config.https is not None:
            try:
                for address in config.https.addresses:
                    self.fronts.append(HTTPSFront(config.https, address, config.server.backlog))
            except BaseException:
                self._abandon()
                raise
            self.app.state.https_port = self.fronts[0].address[1]
            self._tls_channel = tls_channel_class(channel_class)
        self.admin: Any = None
        if config.admin.listen is not None:
            from .admin import AdminApp

            try:
                self.admin = create_server(
                    AdminApp(self, config.admin), sockets=bind_all([config.admin.listen], config.server.backlog, "admin.listen"),
                    threads=2, ident="simpleproxy-admin", expose_tracebacks=False,
                )
            except BaseException:
                self._abandon()
                raise

    def _abandon(self) -> None:
        """Undo a half-built server: its sockets and pools, after a failure to bind."""
        for front in self.fronts:
            front.sock.close()
        self._server.close()
        self.app.close()

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return (self.admin.effective_host, int(self.admin.effective_port)) if self.admin is not None else None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs; ports are real even when configured as 0."""
        return [(s.effective_host, int(s.effective_port)) for s in self.servers]

    @property
    def https_addresses(self) -> list[tuple[str, int]]:
        return [front.address for front in self.fronts]

    def _adopt(self, sock: Any, addr: Any) -> None:
        """In the loop's thread: make a connection whose TLS handshake is done a waitress channel."""
        server = self.servers[0]
        if len(self._map) >= server.adj.connection_limit:
            sock.close()  # as waitress stops accepting at its connection limit
            return
        self._tls_channel(server, sock, addr, server.adj, map=self._map)

    def open_connections(self) -> int:
        return len(self._channels())

    def busy_threads(self) -> int:
        return self._server.task_dispatcher.active_count

    def queue_depth(self) -> int:
        return len(self._server.task_dispatcher.queue)

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def drain(self, timeout: float) -> None:
        """Stop accepting, let requests in flight finish (for at most ``timeout``), then stop.

        Returns at once; :meth:`serve_forever` returns when the drain is over.
        Idle keep-alive connections are closed as soon as they are idle.
        """
        if self._draining.is_set():
            return
        self._draining.set()
        self.app.state.tunnels.draining = True  # new upgrades get 503; open tunnels get the drain time

        def close_listeners() -> None:
            for server in self.servers:  # the listening socket only; the loop's trigger stays
                wasyncore.dispatcher.close(server)
            for front in self.fronts:
                front.close()
            self._close_idle()
            self.listeners_closed.set()

        self.servers[0].trigger.pull_trigger(close_listeners)
        threading.Thread(target=self._drain, args=(timeout,), name="simpleproxy-drain", daemon=True).start()

    def in_flight(self) -> int:
        """Requests being served or waiting for a thread (waitress's busy threads and queue)."""
        dispatcher = self._server.task_dispatcher
        return dispatcher.active_count + len(dispatcher.queue)

    def _channels(self) -> list[HTTPChannel]:
        return [c for c in list(self._map.values()) if isinstance(c, HTTPChannel)]

    def _close_idle(self) -> None:
        for channel in self._channels():
            if not channel.requests and channel.request is None and not channel.total_outbufs_len:
                channel.close()

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        trigger = self.servers[0].trigger
        while time.monotonic() < deadline:
            if not self.in_flight() and not self.app.state.tunnels.open and not any(
                c.requests or c.total_outbufs_len for c in self._channels()
            ):
                break
            try:
                trigger.pull_trigger(self._close_idle)
            except OSError:
                break
            self._stopped.wait(0.05)
        else:
            log.warning("drain time over with %d requests in flight and %d tunnels open: closing them",
                        self.in_flight(), self.app.state.tunnels.open)
        self.stop(timeout=0)

    def reload_certificates(self) -> None:
        """Load every listener's certificates again; open connections keep theirs."""
        for front in self.fronts:
            front.certificates.reload()

    def _watch(self) -> None:
        """Reload when the file's modification time or size changes; a stat a second."""
        path = str(self.config_path)

        def signature() -> tuple[float, int]:
            try:
                info = os.stat(path)
            except OSError:
                return (0.0, -1)
            return (info.st_mtime, info.st_size)

        seen = signature()
        while not self._stopped.wait(1.0):
            now = signature()
            if now != seen and now[1] >= 0:
                seen = now
                log.info("%s changed: reloading", path)
                try:
                    self.reload()
                except Exception:  # keep watching whatever one reload did
                    log.exception("reload after a change of %s failed", path)

    def reload(self) -> list[str]:
        """Read the configuration file again and serve it; -> the problems, empty on success.

        An invalid file changes nothing (its problems are logged by key). A valid
        one serves new requests while those in flight finish on the old one;
        upstreams and cache stores that did not change are kept. Listening
        addresses and ``server:`` settings need a restart (a warning says so).
        """
        with self._reload_lock:
            if self.config_path is None:
                self.reload_certificates()
                return []
            try:
                config = load_config(self.config_path)
            except ConfigError as exc:
                log.error("reload refused, the running configuration stays:\n%s", exc)
                return exc.problems
            running = self.app.config
            https_moved = (config.https.addresses if config.https else ()) != (running.https.addresses if running.https else ())
            if config.listen != running.listen or config.server != running.server or https_moved:
                log.warning("listen and server settings changed: they take effect at the next restart")
            try:
                self.app.reload(config)
            except Exception as exc:  # a store or pool that cannot be built: the running state stays
                log.exception("reload failed, the running configuration stays")
                return [f"the new configuration could not be put in place: {exc}"]
            for front in self.fronts:
                if config.https is not None:
                    front.certificates.listener = config.https
                front.certificates.reload()
            log.info("configuration reloaded from %s", self.config_path)
            return []

    def serve_forever(self) -> None:
        """Serve until :meth:`stop`, Ctrl-C or SIGTERM; then close the pools."""
        for front in self.fronts:
            front.start(self._adopt, self._map)
        if self.app.config.server.watch_config and self.config_path is not None:
            threading.Thread(target=self._watch, name="simpleproxy-watch", daemon=True).start()
        if self.admin is not None:
            threading.Thread(target=self.admin.run, name="simpleproxy-admin", daemon=True).start()
        try:
            self._server.run()
        finally:
            for front in self.fronts:
                front.close()
            if self.admin is not None:
                admin = self.admin
                try:  # closed from its own loop's thread, as stop() does for the main one
                    admin.trigger.pull_trigger(lambda: wasyncore.close_all(admin._map))
                except OSError:
                    pass
                admin.task_dispatcher.shutdown(timeout=1)
            self._server.task_dispatcher.shutdown()
            if self.shedder is not None:
                self.shedder.close()
            self.app.close()
            self._stopped.set()

    def start(self) -> threading.Thread:
        """Serve in a background thread (tests, ``demo``)."""
        thread = threading.Thread(target=self.serve_forever, name="simpleproxy-server", daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float = 10.0) -> None:
        """Close every socket from inside the loop's thread; the loop then ends."""
        if not self._stopped.is_set():
            try:
                self.servers[0].trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            except OSError:
                # The loop's wake-up pipe is already closed (waitress closes it on a
                # poll error): close the sockets from here; the loop ends at its next
                # poll timeout, when it finds nothing left to watch.
                wasyncore.close_all(self._map, ignore_all=True)
        self._stopped.wait(timeout)


def install_reload_signal(server: ProxyServer) -> None:
    """SIGHUP reloads the configuration and certificates (POSIX; Windows: ``simpleproxy reload``)."""
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return

    def reload(signum: int, frame: Any) -> None:
        threading.Thread(target=server.reload, name="simpleproxy-reload", daemon=True).start()

    signal.signal(sighup, reload)


def install_stop_signals(server: ProxyServer, drain_time: float) -> None:
    """SIGTERM, Ctrl-C (SIGINT) and Ctrl-Break (Windows) drain, then stop; a second one stops at once."""

    def stop(signum: int, frame: Any) -> None:
        if server.draining:
            log.info("stopping now")
            server.stop(timeout=0)
        else:
            log.info("draining: no new connections; requests in flight get up to %gs", drain_time)
            server.drain(drain_time)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if sys.platform == "win32" and hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, stop)
