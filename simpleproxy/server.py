"""The running proxy: its app, its front end and admin listener, and what happens over its life.

:class:`ProxyServer` joins the WSGI app (:class:`~simpleproxy.app.ProxyApp`)
to the front end that serves it (:class:`~simpleproxy.frontend.Front`, the
only part of the proxy that knows waitress) and adds what a long-running
proxy does: a graceful drain on SIGTERM, reloads of the configuration and
the certificates (SIGHUP, the admin API, a file watch), and the admin listener.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from .app import ProxyApp
from .config import Config, load_config
from .errors import ConfigError
from .frontend import Front, SmallServer

log = logging.getLogger("simpleproxy")


class ProxyServer:
    """A :class:`ProxyApp` served by the front end on the configured addresses, and its admin listener."""

    def __init__(self, config: Config, app: ProxyApp | None = None, config_path: str | None = None) -> None:
        """``config_path``: the file :meth:`reload` reads again (None: reloads only certificates)."""
        self.app = app if app is not None else ProxyApp(config)
        try:
            self.front = Front(self.app, config)
        except BaseException:
            self.app.close()
            raise
        if self.front.fronts:
            self.app.state.https_port = self.front.https_addresses[0][1]
        self.admin: SmallServer | None = None
        if config.admin.listen is not None:
            from .admin import AdminApp

            try:
                self.admin = SmallServer(AdminApp(self, config.admin), [config.admin.listen], config.server.backlog,
                                         "admin.listen", "simpleproxy-admin")
            except BaseException:
                self.front.close()
                self.app.close()
                raise
        self.reloader = Reloader(self, config_path)
        self._stopped = threading.Event()
        self._serving = threading.Event()  #: serve_forever has begun: its loop closes what stop() asks
        self._draining = threading.Event()
        #: set once a drain has closed the listening sockets
        self.listeners_closed = threading.Event()

    @property
    def admin_address(self) -> tuple[str, int] | None:
        return self.admin.address if self.admin is not None else None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs; ports are real even when configured as 0."""
        return self.front.addresses

    @property
    def https_addresses(self) -> list[tuple[str, int]]:
        return self.front.https_addresses

    # What the admin status and the metrics show of the front end.
    def open_connections(self) -> int:
        return self.front.open_connections()

    def busy_threads(self) -> int:
        return self.front.busy_threads()

    def queue_depth(self) -> int:
        return self.front.queue_depth()

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
        self.front.stop_accepting(then=self.listeners_closed.set)
        threading.Thread(target=self._drain, args=(timeout,), name="simpleproxy-drain", daemon=True).start()

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        front = self.front
        while time.monotonic() < deadline:
            if not front.in_flight() and not self.app.state.tunnels.open and not front.answers_pending():
                break
            try:
                front.call_in_loop(front.close_idle)
            except OSError:
                break
            self._stopped.wait(0.05)
        else:
            log.warning("drain time over with %d requests in flight and %d tunnels open: closing them",
                        front.in_flight(), self.app.state.tunnels.open)
        self.stop(timeout=0)

    def reload(self) -> list[str]:
        """Read the configuration file again and serve it; -> the problems, empty on success (see :class:`Reloader`)."""
        return self.reloader.reload()

    def reload_certificates(self) -> None:
        """Load every HTTPS listener's certificates again; open connections keep theirs."""
        for front in self.front.fronts:
            front.certificates.reload()

    def serve_forever(self) -> None:
        """Serve until :meth:`stop`, Ctrl-C or SIGTERM; then close the pools."""
        self._serving.set()
        if self.app.config.server.watch_config:
            self.reloader.watch(self._stopped)
        if self.admin is not None:
            self.admin.start()
        try:
            self.front.run()
        finally:
            if self.admin is not None:
                self.admin.close()
            self.app.close()
            self._stopped.set()

    def start(self) -> threading.Thread:
        """Serve in a background thread (tests, ``demo``)."""
        thread = threading.Thread(target=self.serve_forever, name="simpleproxy-server", daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and listener; :meth:`serve_forever` then returns."""
        if not self._stopped.is_set():
            if self._serving.is_set():
                self.front.stop()
            else:  # never served: no loop will close anything, so close it all here
                self.front.close()
                if self.admin is not None:
                    self.admin.close(started=False)
                self.app.close()
                self._stopped.set()
        self._stopped.wait(timeout)


class Reloader:
    """A server's configuration reloads: on request (SIGHUP, the admin API) or when its file changes."""

    def __init__(self, server: ProxyServer, config_path: str | None) -> None:
        self.server = server
        self.config_path = config_path
        self._lock = threading.Lock()

    def watch(self, stopped: threading.Event) -> None:
        """Reload whenever the file's modification time or size changes (a stat a second), until ``stopped``."""
        if self.config_path is not None:
            threading.Thread(target=self._watch, args=(stopped,), name="simpleproxy-watch", daemon=True).start()

    def _watch(self, stopped: threading.Event) -> None:
        path = str(self.config_path)

        def signature() -> tuple[float, int]:
            try:
                info = os.stat(path)
            except OSError:
                return (0.0, -1)
            return (info.st_mtime, info.st_size)

        seen = signature()
        while not stopped.wait(1.0):
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
        server = self.server
        with self._lock:
            if self.config_path is None:
                server.reload_certificates()
                return []
            try:
                config = load_config(self.config_path)
            except ConfigError as exc:
                log.error("reload refused, the running configuration stays:\n%s", exc)
                return exc.problems
            running = server.app.config
            https_moved = (config.https.addresses if config.https else ()) != (running.https.addresses if running.https else ())
            if config.listen != running.listen or config.server != running.server or https_moved:
                log.warning("listen and server settings changed: they take effect at the next restart")
            try:
                server.app.reload(config)
            except Exception as exc:  # a store or pool that cannot be built: the running state stays
                log.exception("reload failed, the running configuration stays")
                return [f"the new configuration could not be put in place: {exc}"]
            for front in server.front.fronts:
                if config.https is not None:
                    front.certificates.listener = config.https
                front.certificates.reload()
            log.info("configuration reloaded from %s", self.config_path)
            return []


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
