"""waitress wiring: settings, a stricter request parser, start and stop.

waitress is the front end the design card names; a few of its defaults are
wrong for a proxy and are set here from the ``server:`` section (see
:class:`simpleproxy.config.ServerSettings`). Its parser also accepts a
request carrying both Content-Length and Transfer-Encoding (chunked wins, and
the app cannot tell), the classic request-smuggling shape: a subclass refuses
it with 400 before any application code runs.
"""

from __future__ import annotations

import logging
import select
import signal
import sys
import threading
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer, create_server
from waitress import wasyncore

from .app import ProxyApp
from .config import Config
from .tls.front import HTTPSFront, tls_channel_class
from .upstream.forward import UpstreamBodyAborted

log = logging.getLogger("simpleproxy")


class StrictRequestParser(HTTPRequestParser):
    """waitress's parser, refusing ambiguous body framing (RFC 9112 section 6.1)."""

    def parse_header(self, header_plus: bytes) -> None:
        lowered = header_plus.lower()
        if b"\ntransfer-encoding:" in lowered:
            if b"\ncontent-length:" in lowered:
                raise ParsingError("both Content-Length and Transfer-Encoding")
            if header_plus.split(b"\n", 1)[0].rstrip().endswith(b"HTTP/1.0"):
                raise ParsingError("Transfer-Encoding in an HTTP/1.0 request")
        super().parse_header(header_plus)


class StrictChannel(HTTPChannel):
    parser_class = StrictRequestParser


class _QuietAbort(logging.Filter):
    """Drop waitress's traceback for a body we cut on purpose; forward.py logged why."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, UpstreamBodyAborted)


def waitress_settings(config: Config) -> dict[str, Any]:
    """The waitress ``Adjustments`` for a configuration."""
    s = config.server
    # Without poll() (Windows), waitress uses select(), which CPython builds for 512
    # sockets there: stay below it rather than fail under load.
    connection_limit = s.connection_limit if hasattr(select, "poll") else min(s.connection_limit, 500)
    return {
        "listen": " ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in config.listen),
        "threads": s.threads,
        "connection_limit": connection_limit,
        "channel_timeout": s.channel_timeout,
        "backlog": s.backlog,
        "max_request_body_size": s.max_request_body,
        "max_request_header_size": s.max_request_header,
        "outbuf_high_watermark": s.outbuf_high_watermark,
        # Spool output to disk only well past the point where the app thread waits.
        "outbuf_overflow": max(2 * s.outbuf_high_watermark, 1024**2),
        "ident": "simpleproxy",
        # select() stops at 1024 descriptors on Linux; Windows has no poll().
        "asyncore_use_poll": hasattr(select, "poll"),
        "expose_tracebacks": False,
        "clear_untrusted_proxy_headers": False,  # headers.py decides, by trusted_proxies
    }


class ProxyServer:
    """A ProxyApp served by waitress on the configured addresses."""

    def __init__(self, config: Config, app: ProxyApp | None = None) -> None:
        self.app = app if app is not None else ProxyApp(config)
        logging.getLogger("waitress").addFilter(_QuietAbort())
        # waitress warns "Task queue depth is N" whenever every thread is busy: under
        # load that is every request, and the logging alone costs measurable CPU.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        try:
            self._server = create_server(self.app, **waitress_settings(config))
        except BaseException:
            self.app.close()
            raise
        self._map: dict = getattr(self._server, "map", None) or self._server._map
        self.servers = [o for o in self._map.values() if isinstance(o, BaseWSGIServer)]
        for server in self.servers:
            server.channel_class = StrictChannel
        self._stopped = threading.Event()
        self.fronts: list[HTTPSFront] = []
        if config.https is not None:
            try:
                for address in config.https.addresses:
                    self.fronts.append(HTTPSFront(config.https, address, config.server.backlog))
            except BaseException:
                for front in self.fronts:
                    front.sock.close()
                self._server.close()
                self.app.close()
                raise
            self.app.state.https_port = self.fronts[0].address[1]
            self._tls_channel = tls_channel_class(StrictChannel)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs; ports are real even when configured as 0."""
        return [(s.effective_host, int(s.effective_port)) for s in self.servers]

    @property
    def https_addresses(self) -> list[tuple[str, int]]:
        return [front.address for front in self.fronts]

    def _adopt(self, sock: Any, addr: Any) -> None:
        """From the TLS thread: make an established connection a waitress channel, in the loop's thread."""
        server = self.servers[0]

        def create() -> None:
            if len(self._map) >= server.adj.connection_limit:
                sock.close()  # as waitress stops accepting at its connection limit
                return
            self._tls_channel(server, sock, addr, server.adj, map=self._map)

        server.trigger.pull_trigger(create)

    def reload_certificates(self) -> None:
        """Load every listener's certificates again (SIGHUP); open connections keep theirs."""
        for front in self.fronts:
            front.certificates.reload()

    def serve_forever(self) -> None:
        """Serve until :meth:`stop`, Ctrl-C or SIGTERM; then close the pools."""
        for front in self.fronts:
            front.start(self._adopt)
        try:
            self._server.run()
        finally:
            for front in self.fronts:
                front.stop()
            self._server.task_dispatcher.shutdown()
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
    """SIGHUP reloads the certificates (POSIX; on Windows the files are watched instead)."""
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None or not server.fronts:
        return

    def reload(signum: int, frame: Any) -> None:
        threading.Thread(target=server.reload_certificates, name="simpleproxy-reload", daemon=True).start()

    signal.signal(sighup, reload)


def install_stop_signals() -> None:
    """SIGTERM (and Ctrl-Break on Windows) stop like Ctrl-C: waitress ends its loop on SystemExit."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    if sys.platform == "win32" and hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, stop)
