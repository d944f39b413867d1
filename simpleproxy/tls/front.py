"""The HTTPS front: accept, handshake, then hand the connection to waitress.

Handshakes run on one thread of their own with non-blocking sockets and a
selector, each with a deadline (``handshake_timeout``) and at most
``max_handshakes`` at once: a flood of half-open connections costs a slot
each until its deadline, never a thread, and past the bound new connections
are closed at once while established ones keep being served.

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
import selectors
import socket
import ssl
import threading
import time
from typing import Any


from ..config import HTTPSListener
from ..listeners import ListenError, bind_listener
from ..tunnels.takeover import UpgradeTask
from .certs import Certificates

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
    """Accepts and handshakes TLS connections on one thread, then gives them to waitress."""

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
        self.handshakes = 0  #: in progress now
        self.refused = 0  #: connections closed because max_handshakes were in progress
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.sock, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._selector.register(self._waker_r, selectors.EVENT_READ, "wake")
        self._handoff: Any = None

    def start(self, handoff: Any) -> threading.Thread:
        """Serve on a thread; ``handoff(ssl_socket, addr)`` receives each established connection."""
        self._handoff = handoff
        thread = threading.Thread(target=self._run, name="simpleproxy-tls", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        try:
            self._waker_w.send(b"x")
        except OSError:
            pass

    # ------------------------------------------------------------------ the handshake loop

    def _run(self) -> None:
        pending: dict[ssl.SSLSocket, tuple[Any, float]] = {}  # socket -> (client address, deadline)
        timeout = self.listener.handshake_timeout
        reload_every = self.listener.reload_interval
        next_check = time.monotonic() + reload_every if reload_every else float("inf")
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wait = min([deadline for _, deadline in pending.values()] + [next_check]) - now
                for key, _ in self._selector.select(max(0.0, min(wait, 1.0))):
                    if key.data == "wake":
                        self._waker_r.recv(64)
                    elif key.data is None:
                        self._accept(pending, timeout)
                    else:
                        self._step(key.fileobj, pending)  # type: ignore[arg-type]
                now = time.monotonic()
                for sock, (_, deadline) in list(pending.items()):
                    if deadline <= now:
                        log.debug("TLS handshake with %s timed out", pending[sock][0][0])
                        self._drop(sock, pending)
                if now >= next_check:
                    next_check = now + reload_every
                    self.certificates.reload_if_changed()
        finally:
            for sock in list(pending):
                self._drop(sock, pending)
            self._selector.close()
            self.sock.close()
            self._waker_r.close()
            self._waker_w.close()

    def _accept(self, pending: dict, timeout: float) -> None:
        for _ in range(64):  # drain the backlog a little at a time
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept a TLS connection: %s", exc.strerror)
                return
            if len(pending) >= self.listener.max_handshakes:
                self.refused += 1
                conn.close()
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls = self.certificates.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            except OSError:
                conn.close()
                continue
            pending[tls] = (addr, time.monotonic() + timeout)
            self.handshakes = len(pending)
            self._selector.register(tls, selectors.EVENT_READ, "tls")
            self._step(tls, pending)

    def _step(self, sock: ssl.SSLSocket, pending: dict) -> None:
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(sock, selectors.EVENT_READ, "tls")
            return
        except ssl.SSLWantWriteError:
            self._selector.modify(sock, selectors.EVENT_WRITE, "tls")
            return
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", pending[sock][0][0], getattr(exc, "reason", None) or exc)
            self._drop(sock, pending)
            return
        addr, _ = pending.pop(sock)
        self.handshakes = len(pending)
        self._selector.unregister(sock)
        try:
            self._handoff(sock, addr)
        except Exception:
            log.exception("could not hand a TLS connection to the server")
            sock.close()

    def _drop(self, sock: ssl.SSLSocket, pending: dict) -> None:
        pending.pop(sock, None)
        self.handshakes = len(pending)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
