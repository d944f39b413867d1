"""The waitress channel the proxy serves on: the strict parser, the upgrade task, and a loop that sleeps.

waitress's worker thread sends its own output (``send_bytes`` is 1): each
``write_soon`` appends to the channel's buffer and flushes it at once, holding
the channel's ``outbuf_lock`` across the ``send()``. waitress's ``writable()``
is true whenever the buffer holds bytes, so during that ``send()`` the loop
thread's ``poll()`` reports the socket writable, ``handle_write`` finds the
lock taken and does nothing, and the loop polls again at once: a spin, for as
long as the worker is inside ``send()``. The spin holds the GIL between polls,
so the worker, back from its system call, waits for it (up to the 5 ms switch
interval): on two CPUs this was about 18 polls per request and most of the
loop thread's CPU (issue 21).

Here the loop takes a channel's output only when it can act on it: when no
request is being served (what is left after the response), when closing, or
when a worker could not send everything (the client reads slowly) and said
so by setting :attr:`ProxyChannel.loop_flushes` under the lock; whoever
empties the buffer clears it, under the same lock. Both changes of the flag
happen with the buffer length in view, so a worker waiting at
``outbuf_high_watermark`` always has the loop draining for it (the flag was
set by the write that left the bytes behind, and nothing has emptied them).
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Callable

from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.task import ErrorTask

from ..errors import BadRequest, HeadTooLarge, NotImplementedHere, Overloaded, ProxyError, TooLarge
from .buffers import ChunkBuffer
from .listeners import NOTSENT_LOWAT, UNSENT_LOWAT, unbound_unsent
from .parser import StrictRequestParser
from .upgrade import UpgradeTask


#: how long, and how much, a closing connection reads and discards after an error answer
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
#: response bytes a connection keeps in memory; past them, waitress's buffers move to a temporary
#: file. nginx keeps 64 KiB in its proxy_buffers, but a Python proxy pays for every byte written
#: to a file and read back: spilling past 64 KiB halved what 16 clients reading 10 MiB at full
#: speed got (1.05 GB/s before slow-client buffering, 0.60 after); past 1 MiB (what waitress's
#: worker used to buffer before it waited) they get 0.80.
IN_MEMORY = 1024 * 1024
#: the most offered to one send(); waitress offers the whole send buffer's size
SEND_CHUNK = 256 * 1024
#: once the kernel took this much, at least UNSENT_LOWAT of it has left for the client (acknowledged or
#: in flight; a reader with a tiny window cannot get there without reading): the connection's send
#: queue gets the system's default size back (listeners.py)
LIFT_AFTER = 2 * UNSENT_LOWAT


def _nothing() -> None:
    """The release of a connection nobody counts."""


class OutputBudget:
    """All connections' response bytes waiting for their clients (``server.max_buffered_total``).

    Summed over the channels by each server's maintenance pass, every second
    (guards.py), so writing a response costs no shared counter; the
    bound is kept to within a second's worth of writes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: dict[int, int] = {}  #: each waitress server's (listener's) share, by id()

    def count(self, server: Any, channels: Any) -> int:
        """Record what ``server``'s channels hold; the total over all servers."""
        self._parts[id(server)] = sum(channel.total_outbufs_len for channel in channels)
        return sum(self._parts.values())


def proxy_error(error: Any, adj: Any) -> ProxyError:
    """waitress's error for a request it refused -> ours, naming our settings, not waitress's."""
    code = error.code
    if code == 400:
        return BadRequest(error.body)
    if code == 413:
        return TooLarge(f"request body over server.max_request_body ({adj.max_request_body_size} bytes)")
    if code == 431:
        return HeadTooLarge(f"request head over server.max_request_header ({adj.max_request_header_size} bytes)")
    if code == 501:
        return NotImplementedHere(error.body)
    if code == 503:
        return Overloaded(error.body, headers=(("Retry-After", "1"),))
    return ProxyError("internal error")


class FrontErrorTask(ErrorTask):
    """A request the front end refused before the app saw it (a malformed head, a head or body
    too large, an overload, a bug), answered like every other error: the app's one error page
    with a request id, in the request's HTTP version, and a line in the access log."""

    def execute(self) -> None:
        request = self.request
        headers = request.headers
        environ = {
            "REMOTE_ADDR": self.channel.addr[0], "REQUEST_METHOD": request.command or "-",
            "REQUEST_URI": request.request_uri or "-", "SERVER_PROTOCOL": f"HTTP/{self.version}",
            "HTTP_USER_AGENT": headers.get("USER_AGENT", "-"), "HTTP_REFERER": headers.get("REFERER", "-"),
        }
        status, fields, body = self.channel.server.application.front_error(
            environ, proxy_error(request.error, self.channel.adj)
        )
        self.status = status
        self.response_headers.extend(fields)
        self.set_close_on_finish()  # the rest of what the client sent cannot be framed
        self.channel.linger = True  # but it may still be arriving: read it away before closing
        self.content_length = len(body)
        self.write(body)


class ProxyChannel(HTTPChannel):
    parser_class = StrictRequestParser
    task_class = UpgradeTask
    error_task_class = FrontErrorTask
    #: a worker left output it could not send; the loop thread sends it as the client reads
    loop_flushes = False
    #: the next write only appends: the task writes the response head and its first body bytes
    #: back to back, and the second write sends both (upgrade.UpgradeTask.write)
    hold_next = False
    #: close lingering (nginx's lingering_close): the answer refused a request the client may still send
    linger = False
    #: while lingering, when to give up reading (time.monotonic()); 0 when not lingering
    lingering_until = 0.0
    #: response bytes sent to the client so far (the minimum response rate is measured on it)
    bytes_sent = 0
    #: (time.monotonic(), bytes_sent) when the rate is next measured from; None without waiting output
    rate_mark: tuple[float, int] | None = None
    #: the kernel still holds at most UNSENT_LOWAT unsent bytes for this client (listeners.py)
    paced = NOTSENT_LOWAT is not None

    def keep_counted(self) -> Callable[[], None]:
        """For a connection leaving as a tunnel (upgrade.py): what ends its count once it closes.
        Nothing here; guards.py counts connections per client and overrides this."""
        return _nothing

    def close(self) -> None:
        """Every other way to close (close_all at a stop, waitress's own calls) ends as handle_close does:
        the output buffers closed with the socket (a spilled one holds a temporary file) and a worker
        waiting for this client woken."""
        self.close_now()

    def close_now(self) -> None:
        """waitress's close: buffers closed, a waiting worker woken, the socket closed (TLS: tls.py)."""
        HTTPChannel.handle_close(self)

    def handle_close(self) -> None:
        """Closing after an error answer: first end our side and read what the client still sends.

        Closing a socket with unread bytes makes the kernel send a reset, and the
        client's kernel may then drop our answer (a 431 or 413) before the client
        reads it. So the socket is shut for writing (our answer, then our FIN) and
        kept in the loop, discarding input until the client's own end of file, for
        at most LINGER_SECONDS and LINGER_BYTES; plain sockets only (a TLS
        connection would need close_notify first).
        """
        if (self.linger and not self.lingering_until and self.socket is not None and not self.total_outbufs_len
                and not isinstance(self.socket, ssl.SSLSocket)):
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                self.lingering_until = time.monotonic() + LINGER_SECONDS
                self._lingered = 0
                self.will_close = self.close_when_flushed = False
                return
        self.close_now()

    def handle_read(self) -> None:
        if not self.lingering_until:
            HTTPChannel.handle_read(self)
            return
        try:
            data = self.socket.recv(65536)
        except OSError:
            data = b""
        self._lingered += len(data)
        if not data or self._lingered > LINGER_BYTES or time.monotonic() > self.lingering_until:
            self.close_now()

    def writable(self) -> Any:
        if self.will_close or self.close_when_flushed:
            return True
        return self.total_outbufs_len and (self.loop_flushes or not self.requests)

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        HTTPChannel.__init__(self, server, sock, addr, adj, map)
        self.outbufs = [ChunkBuffer(adj.outbuf_overflow)]  # waitress's copies every byte in and out (buffers.py)
        births = getattr(server, "loop_births", None)  # a loop that asks only what changed (loop.py)
        if births is not None:
            births.add(self._fileno)
        # waitress offers send() as much as the socket's send buffer holds (4 MiB on Linux loopback),
        # read from the output buffer (a file, once spilled) at every try: for a slow reader that
        # takes a few hundred bytes, most of a response read again at each try.
        self.sendbuf_len: int = min(int(self.sendbuf_len), SEND_CHUNK)

    def write_soon(self, data: Any) -> int:
        """waitress's, but once the client's socket was full the loop sends the rest as it drains.

        waitress's worker sends at once after every write; for a slow reader each such try
        reads the waiting output back (from its file) to send nothing. Once a write leaves
        bytes behind, :attr:`loop_flushes` is set under the lock and later writes only
        append: the loop, which polls the socket, sends them when it can take them.
        """
        if not self.connected:
            raise ClientDisconnected
        if not data:
            return 0
        with self.outbuf_lock:
            self._flush_outbufs_below_high_watermark()
            if not self.connected:
                raise ClientDisconnected
            size = len(data)
            if isinstance(data, ReadOnlyFileBasedBuffer):  # wsgi.file_wrapper
                self.outbufs.append(data)
                self.outbufs.append(ChunkBuffer(self.adj.outbuf_overflow))
                self.current_outbuf_count = 0
            else:
                if self.current_outbuf_count >= self.adj.outbuf_high_watermark:  # a new buffer now and then
                    self.outbufs.append(ChunkBuffer(self.adj.outbuf_overflow))
                    self.current_outbuf_count = 0
                self.outbufs[-1].append(data)
                self.current_outbuf_count += size
            self.total_outbufs_len += size
            if self.loop_flushes:
                return size  # the loop is sending as the client takes it
            if self.hold_next:
                self.hold_next = False
                return size  # the head: sent with the body bytes written next
            _, failed = self._flush_exception(self._flush_some, do_close=False)
            if failed or self.total_outbufs_len:  # the client's socket is full: hand the rest to the loop
                self.loop_flushes = True
                self.server.pull_trigger()
        return size

    def _flush_some(self, do_close: bool = True) -> bool:
        """waitress's, clearing :attr:`loop_flushes` once everything is sent and counting what was.

        Called with ``outbuf_lock`` held, or by the loop thread when no request
        is being served (no worker then touches the channel). A client that has
        taken a few hundred KiB is no 512-byte-window slow reader: its send queue
        is unbounded again, so a fast download wakes the loop for every few MiB,
        not for every 128 KiB (a bounded queue cost a quarter of 16 clients' 10 MiB
        throughput).
        """
        waiting = self.total_outbufs_len
        sent = HTTPChannel._flush_some(self, do_close)
        if not self.connected:  # the send failed and closed the channel, emptying its buffers
            self.loop_flushes = False
            return sent
        self.bytes_sent += waiting - self.total_outbufs_len
        if self.paced and self.bytes_sent >= LIFT_AFTER:
            self.paced = False
            unbound_unsent(self.socket)
        if not self.total_outbufs_len:
            self.loop_flushes = False
        return sent

    def _flush_outbufs_below_high_watermark(self) -> None:
        """waitress's wait for a slow client, only past ``server.max_buffered_response``.

        A response may wait for its client up to ``server.max_buffered_response``
        (waitress's ``outbuf_high_watermark``), in memory up to IN_MEMORY and in a
        temporary file past it, so the worker thread goes back to the pool at the
        backend's speed however slowly the client reads. All connections' waiting
        output (``server.max_buffered_total``) is kept in bounds by closing the
        slowest readers (guards.py), never by making workers wait: waiting
        at 1 MiB while over the budget let 64 slow readers hold every thread, and an
        ordinary client failed under slowhttptest's slow-read attack.
        """
        limit = self.adj.outbuf_high_watermark
        if self.total_outbufs_len <= limit:
            return
        with self.outbuf_lock:
            _, failed = self._flush_exception(self._flush_some, do_close=False)
            if failed:  # the loop decides what to do (close, most likely); wait for it
                self.server.pull_trigger()
                self.outbuf_lock.wait()
                return
            while self.connected and self.total_outbufs_len > limit:
                self.server.pull_trigger()
                self.outbuf_lock.wait()
