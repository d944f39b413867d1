"""Bytes both ways between a client and a backend after ``101 Switching Protocols``.

One thread serves every open tunnel with a selector, so a WebSocket held open
for hours costs two sockets and two bounded buffers, not one of waitress's
worker threads. Each direction has a buffer of at most :data:`BUFFER` bytes;
while it is full its source is not read, so a slow reader slows the writer
down instead of growing memory (backpressure, as nginx's proxy_buffer does).

Half-close: when one side ends its sending (EOF), what it sent is flushed and
the other side's sending half is shut, and the tunnel stays open for the other
direction, until that ends too or the idle timeout passes. A TLS socket cannot
shut one half without ending TLS, so a tunnel with a TLS side closes whole once
either direction ends. Plain TCP sockets and ``ssl.SSLSocket`` are both
handled: a TLS socket may hold decrypted bytes the selector cannot see
(``pending()``), and a send that must be retried is retried with the same
bytes (fixed slices of :data:`SLICE`).
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Callable

log = logging.getLogger("simpleproxy.tunnel")

BUFFER = 256 * 1024  #: bytes held per direction before its source is no longer read
SLICE = 16 * 1024  #: bytes per send; a retried TLS send must pass the same bytes
_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Flow:
    """One direction: bytes read from ``src`` and not yet written to ``dst``."""

    __slots__ = ("src", "dst", "buf", "eof", "done", "count")

    def __init__(self, src: socket.socket, dst: socket.socket, first: bytes, head: bytes = b"") -> None:
        self.src, self.dst = src, dst
        self.buf = bytearray(head + first)  # the 101 head (not counted) and what came with the handshake
        self.eof = False  #: the source has ended its sending
        self.done = False  #: ... and everything it sent was written
        self.count = len(first)  #: bytes relayed this way, after the handshake


def _pending(sock: socket.socket) -> int:
    """Decrypted bytes a TLS socket holds (0 for plain sockets)."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


class Tunnel:
    """One upgraded connection: the client's socket, the backend's, and what is in between."""

    def __init__(
        self, client: socket.socket, backend: socket.socket, to_client: bytes, to_backend: bytes,
        idle_timeout: float, on_close: Callable[[Tunnel], None], label: str = "-", head: bytes = b"",
    ) -> None:
        """``head``: the 101 head for the client, sent first; ``to_client``/``to_backend``: bytes
        each side sent past its head, read before the tunnel began."""
        self.client, self.backend = client, backend
        self.down = _Flow(backend, client, to_client, head)  #: backend to client
        self.up = _Flow(client, backend, to_backend)  #: client to backend
        self.idle_timeout = idle_timeout  #: seconds without a byte either way (0: none)
        self.on_close = on_close
        self.label = label  #: the route's label, for limits and metrics
        self.started = self.last_active = time.monotonic()
        self.reason = ""  #: why it ended: closed, idle, error, shutdown
        self._masks = {client: 0, backend: 0}

    @property
    def bytes_up(self) -> int:
        return self.up.count

    @property
    def bytes_down(self) -> int:
        return self.down.count

    def _read(self, flow: _Flow) -> None:
        src = flow.src
        try:
            while len(flow.buf) < BUFFER and not flow.eof:
                data = src.recv(min(65536, BUFFER - len(flow.buf)))
                if not data:
                    flow.eof = True
                    break
                flow.buf += data
                flow.count += len(data)
                self.last_active = time.monotonic()
                if not (isinstance(src, ssl.SSLSocket) and src.pending()):
                    break  # nothing more is known to be there: back to the selector
        except _AGAIN:
            pass

    def _write(self, flow: _Flow) -> None:
        try:
            while flow.buf:
                sent = flow.dst.send(flow.buf[:SLICE])
                if not sent:
                    break
                del flow.buf[:sent]
                self.last_active = time.monotonic()
        except _AGAIN:
            pass
        if flow.eof and not flow.buf and not flow.done:
            flow.done = True
            if not isinstance(flow.dst, ssl.SSLSocket):
                try:
                    flow.dst.shutdown(socket.SHUT_WR)  # passes the EOF on; the other way stays open
                except OSError:
                    pass

    def step(self, ready: socket.socket | None = None) -> bool:
        """Move what can be moved without waiting; False once the tunnel is over.

        ``ready``: the socket the selector reported (None: try both); only it is read,
        which spares the other side a system call that would find nothing, and a TLS
        socket with decrypted bytes waiting, which the selector cannot see.
        """
        for flow in (self.up, self.down):
            if ready is None or flow.src is ready or _pending(flow.src):
                self._read(flow)
            self._write(flow)
            # A TLS record decrypted past a full buffer: once the write made room, read on,
            # or those bytes would wait for the peer's next record (or the idle timeout).
            while not flow.eof and len(flow.buf) < BUFFER and _pending(flow.src):
                before = flow.count
                self._read(flow)
                self._write(flow)
                if flow.count == before:
                    break
        if self.up.done and self.down.done:
            self.reason = "closed"
            return False
        ended = self.up if self.up.done else self.down if self.down.done else None
        if ended is not None and (isinstance(self.client, ssl.SSLSocket) or isinstance(self.backend, ssl.SSLSocket)):
            self.reason = "closed"  # no TLS half-close: end the whole tunnel
            return False
        return True

    def wanted(self, sock: socket.socket) -> int:
        """The selector events ``sock`` waits for now."""
        inbound = self.up if sock is self.client else self.down
        outbound = self.down if sock is self.client else self.up
        mask = 0
        if not inbound.eof and len(inbound.buf) < BUFFER:
            mask |= selectors.EVENT_READ
        if outbound.buf:
            mask |= selectors.EVENT_WRITE
        return mask

    def close(self) -> None:
        for sock in (self.client, self.backend):
            try:
                sock.close()
            except OSError:
                pass


class Relay:
    """The thread that moves every tunnel's bytes; started on the first tunnel."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._selector.register(self._waker_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._incoming: list[Tunnel] = []
        self._stopping = False
        self.tunnels: set[Tunnel] = set()  #: open ones; read by other threads for counts only
        self._thread = threading.Thread(target=self._run, name="simpleproxy-tunnels", daemon=True)
        self._thread.start()

    def add(self, tunnel: Tunnel) -> None:
        with self._lock:
            if self._stopping or not self._thread.is_alive():
                tunnel.reason = "shutdown"
                tunnel.close()
                tunnel.on_close(tunnel)
                return
            self._incoming.append(tunnel)
        self._wake()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every tunnel (a clean TCP close to both sides) and end the thread."""
        with self._lock:
            self._stopping = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _wake(self) -> None:
        try:
            self._waker_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        next_sweep = time.monotonic() + 1.0
        try:
            while True:
                for key, _ in self._selector.select(timeout=1.0):
                    if key.data is None:
                        self._take_incoming()
                    elif key.data in self.tunnels:
                        self._advance(key.data, key.fileobj)  # type: ignore[arg-type]
                if self._stopping:
                    break
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + 1.0
                    self._sweep(now)
        finally:
            for tunnel in list(self.tunnels):
                self._finish(tunnel, "shutdown")
            with self._lock:
                for tunnel in self._incoming:
                    tunnel.reason = "shutdown"
                    tunnel.close()
                    tunnel.on_close(tunnel)
                self._incoming.clear()
            self._selector.close()
            self._waker_r.close()
            self._waker_w.close()

    def _take_incoming(self) -> None:
        try:
            while self._waker_r.recv(4096):
                pass
        except OSError:
            pass
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for tunnel in incoming:
            for sock in (tunnel.client, tunnel.backend):
                sock.setblocking(False)
            self.tunnels.add(tunnel)
            self._advance(tunnel)  # what came with the handshake goes out at once

    def _advance(self, tunnel: Tunnel, ready: socket.socket | None = None) -> None:
        try:
            going = tunnel.step(ready)
        except OSError as exc:  # reset, broken pipe: the tunnel is over
            log.debug("tunnel %s ended: %s", tunnel.label, exc)
            self._finish(tunnel, "error")
            return
        except Exception:  # a bug: this tunnel ends, the thread serving every other one goes on
            log.exception("relaying tunnel %s", tunnel.label)
            self._finish(tunnel, "error")
            return
        if not going:
            self._finish(tunnel, tunnel.reason)
            return
        for sock in (tunnel.client, tunnel.backend):
            mask = tunnel.wanted(sock)
            had = tunnel._masks[sock]
            if mask == had:
                continue
            if not had:
                self._selector.register(sock, mask, tunnel)
            elif not mask:
                self._selector.unregister(sock)
            else:
                self._selector.modify(sock, mask, tunnel)
            tunnel._masks[sock] = mask

    def _sweep(self, now: float) -> None:
        for tunnel in list(self.tunnels):
            if tunnel.idle_timeout and now - tunnel.last_active > tunnel.idle_timeout:
                self._finish(tunnel, "idle")

    def _finish(self, tunnel: Tunnel, reason: str) -> None:
        self.tunnels.discard(tunnel)
        for sock, mask in tunnel._masks.items():
            if mask:
                try:
                    self._selector.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass
        tunnel.reason = reason
        tunnel.close()
        try:
            tunnel.on_close(tunnel)
        except Exception:  # a logging or metrics failure must not stop every other tunnel
            log.exception("after closing a tunnel")
