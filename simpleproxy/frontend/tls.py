"""The HTTPS front: accept, handshake, then hand the connection to waitress.

Handshakes run in waitress's own loop on non-blocking sockets, each with a
deadline (``handshake_timeout``) and at most ``max_handshakes`` at once: a
flood of half-open connections costs a slot each until its deadline, never a
thread, and past the bound new connections are closed at once while
established ones keep being served.

An established connection becomes a waitress channel like any accepted
socket (created in waitress's own loop thread), so the same app serves it in
the same thread pool. Its channel decrypts with the ``ssl`` module as it
reads and encrypts as it writes; waitress sees the real client address and
port, and a task that adds the scheme and the TLS facts to the environ. No plaintext crosses a second socket and
nothing a client sends can claim it came over TLS.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import time
from typing import Any, Callable

from waitress import wasyncore

from ..config import HTTPSListener
from .listeners import ListenError, bind_listener
from .upgrade import UpgradeTask
from ..tls.certs import Certificates

log = logging.getLogger("simpleproxy.tls")

_AGAIN = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def client_subject(cert: dict[str, Any] | None) -> str | None:
    """A verified peer certificate's subject as an RFC 4514 string (``CN=alice,O=Example``)."""
    if not cert or "subject" not in cert:
        return None
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
             "localityName": "L", "stateOrProvinceName": "ST", "emailAddress": "emailAddress",
             "domainComponent": "DC", "userId": "UID", "streetAddress": "STREET"}
    rdns = []
    for rdn in reversed(cert["subject"]):  # RFC 4514 writes the most specific part first
        rdns.append("+".join(f"{short.get(key, key)}={_escape_dn(value)}" for key, value in rdn))
    return ",".join(rdns)


def _escape_dn(value: str) -> str:
    """RFC 4514 escapes; anything outside printable ASCII as \\XX per UTF-8 byte, so the
    subject is always a safe header value."""
    out = []
    for c in value:
        if c in ',+"\\<>;=':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.extend(f"\\{b:02X}" for b in c.encode("utf-8"))
    text = "".join(out)
    if text[:1] in ("#", " "):
        text = "\\" + text
    if text.endswith(" "):
        text = text[:-1] + "\\ "
    return text


class TLSTask(UpgradeTask):
    """Marks the request https and adds what the TLS layer knows to the environ."""

    def get_environment(self) -> dict[str, Any]:
        if self.environ is not None:
            return self.environ
        environ = super().get_environment()
        facts = self.channel.tls  # type: ignore[attr-defined]
        environ["wsgi.url_scheme"] = "https"
        environ["HTTPS"] = "on"
        environ["SSL_PROTOCOL"] = facts["protocol"]
        environ["SSL_CIPHER"] = facts["cipher"]
        if facts["server_name"]:
            environ["SSL_TLS_SNI"] = facts["server_name"]
        if facts["client_subject"]:
            environ["SSL_CLIENT_S_DN"] = facts["client_subject"]  # only ever a verified one
        return environ


def tls_channel_class(base_channel: type) -> type:
    """A waitress channel class for TLS sockets, built on the plain one (its strict parser kept)."""

    class TLSChannel(base_channel):  # type: ignore[valid-type, misc]
        task_class = TLSTask

        def __init__(self, server: Any, sock: ssl.SSLSocket, addr: Any, adj: Any, map: Any = None) -> None:
            cipher = sock.cipher()
            self.tls = {
                "protocol": sock.version() or "",
                "cipher": cipher[0] if cipher else "",
                "server_name": getattr(sock, "sni", None) or "",
                "client_subject": client_subject(sock.getpeercert()),
            }
            super().__init__(server, sock, addr, adj, map)

        def handle_read(self) -> None:
            """waitress's, for a socket that may hold decrypted bytes poll() cannot see."""
            sock = self.socket
            try:
                data = sock.recv(self.adj.recv_bytes)
                while data and sock.pending():
                    data += sock.recv(sock.pending())
            except _AGAIN:
                return  # a partial TLS record: wait for the rest
            except OSError:
                self.handle_close()
                return
            if data:
                self.last_activity = time.time()
                self.received(data)
            else:
                self.connected = False

        def close_now(self) -> None:
            """Say close_notify before closing, as TLS asks (RFC 8446 6.1).

            Without it a client's OpenSSL treats the end as a truncation and marks the
            session not resumable: ``openssl s_time -reuse`` resumed none of its
            reconnections over TLS 1.2 or 1.3. One try on the non-blocking socket: the
            alert is sent if the socket takes it; the client's own close_notify is not
            waited for (SSL_shutdown's first half, as nginx does).
            """
            if self.connected and self.socket is not None:
                try:
                    self.socket.unwrap()
                except (ssl.SSLError, OSError, ValueError):
                    pass  # the peer's close_notify is not here yet (WANT_READ), or the socket is gone
            super().close_now()

        def send(self, data: bytes, do_close: bool = True) -> int:
            try:
                return self.socket.send(data)
            except _AGAIN:
                return 0  # retried with the same bytes (Python enables moving write buffers)
            except OSError:
                if do_close:
                    self.handle_close()
                return 0

    return TLSChannel


class HTTPSFront:
    """The HTTPS listener, inside waitress's loop: accepts, handshakes without blocking, then
    makes each established connection a waitress channel.

    Handshakes once ran on a thread of their own, handing each connection to the
    loop through waitress's trigger: with the process bound to one CPU that bought
    no parallelism, only two more threads to wake per connection (the trigger's
    pipe, the GIL passing back and forth), about a fifth of a new connection's CPU.
    In the loop, a handshake is one more non-blocking socket among the rest, as
    nginx runs them in its event loop.
    """

    def __init__(self, listener: HTTPSListener, address: tuple[str, int], backlog: int) -> None:
        self.listener = listener
        self.certificates = Certificates(listener)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        try:
            self.sock = bind_listener(family, address, backlog)
        except OSError as exc:
            raise ListenError("listen.https.address", address, exc) from None
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]
        self.refused = 0  #: connections closed because max_handshakes were in progress
        #: handshakes in progress: the dispatcher of each, by itself
        self.pending: dict[_Handshake, None] = {}
        self._acceptor: _Acceptor | None = None

    @property
    def handshakes(self) -> int:
        """Handshakes in progress now."""
        return len(self.pending)

    def start(self, adopt: Callable[[ssl.SSLSocket, Any], None], map: dict) -> None:
        """Serve from waitress's loop (``map``); ``adopt(ssl_socket, addr)`` makes each
        established connection a channel, called in the loop's thread."""
        self._acceptor = _Acceptor(self, adopt, map)

    def close(self) -> None:
        """Stop accepting and drop the handshakes in progress; in the loop's thread, or once it ended."""
        if self._acceptor is not None:
            self._acceptor.close()
        else:
            self.sock.close()
        for handshake in list(self.pending):
            handshake.drop()


class _Acceptor(wasyncore.dispatcher):
    """The HTTPS listening socket in waitress's loop; also watches the handshakes' deadlines
    and the certificate files, from :meth:`readable`, which the loop asks at every pass."""

    def __init__(self, front: HTTPSFront, adopt: Callable[[ssl.SSLSocket, Any], None], map: dict) -> None:
        wasyncore.dispatcher.__init__(self, front.sock, map)
        self.accepting = True
        self.front, self.adopt = front, adopt
        reload_every = front.listener.reload_interval
        self._next_reload_check = time.monotonic() + reload_every if reload_every else float("inf")

    def readable(self) -> bool:
        front = self.front
        now = time.monotonic()
        if front.pending:
            for handshake in [h for h in front.pending if h.deadline <= now]:
                log.debug("TLS handshake with %s timed out", handshake.peer[0])
                handshake.drop()
        if now >= self._next_reload_check:
            self._next_reload_check = now + front.listener.reload_interval
            front.certificates.reload_if_changed()
        return True

    def writable(self) -> bool:
        return False

    def handle_accept(self) -> None:
        front = self.front
        for _ in range(64):  # what the backlog holds, a bounded number at a time
            try:
                conn, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept a TLS connection: %s", exc.strerror)
                return
            if len(front.pending) >= front.listener.max_handshakes:
                front.refused += 1
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = front.certificates.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            except OSError:
                conn.close()
                continue
            _Handshake(front, tls, addr, self.adopt, self._map).step()

    def handle_error(self) -> None:
        log.exception("the HTTPS listener failed to accept")


class _Handshake(wasyncore.dispatcher):
    """One TLS handshake in progress: polled for what OpenSSL wants next, until it is done,
    fails, or reaches its deadline; then the socket becomes a channel (or is closed)."""

    def __init__(self, front: HTTPSFront, sock: ssl.SSLSocket, addr: Any,
                 adopt: Callable[[ssl.SSLSocket, Any], None], map: dict) -> None:
        wasyncore.dispatcher.__init__(self, sock, map)
        self.front, self.peer, self.adopt = front, addr, adopt
        self.deadline = time.monotonic() + front.listener.handshake_timeout
        self.wants_write = False
        self.done = False
        front.pending[self] = None

    def readable(self) -> bool:
        return not self.wants_write

    def writable(self) -> bool:
        return self.wants_write

    def step(self) -> None:
        if self.done:  # the loop may still report the socket for this pass: it is a channel's now
            return
        try:
            self.socket.do_handshake()
        except ssl.SSLWantReadError:
            self.wants_write = False
            return
        except ssl.SSLWantWriteError:
            self.wants_write = True
            return
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", self.peer[0], getattr(exc, "reason", None) or exc)
            self.drop()
            return
        self.done = True
        self.front.pending.pop(self, None)
        self.del_channel()  # the socket stays open: it is handed over
        try:
            self.adopt(self.socket, self.peer)
        except Exception:
            log.exception("could not hand a TLS connection to the server")
            self.socket.close()

    handle_read = handle_write = step

    def handle_close(self) -> None:
        if not self.done:
            self.drop()

    def handle_error(self) -> None:
        if not self.done:
            log.debug("TLS handshake with %s failed", self.peer[0], exc_info=True)
            self.drop()

    def drop(self) -> None:
        self.done = True
        self.front.pending.pop(self, None)
        self.close()
