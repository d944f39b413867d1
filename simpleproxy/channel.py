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
from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from .errors import BadRequest, HeadTooLarge, NotImplementedHere, Overloaded, ProxyError, TooLarge
from .parser import StrictRequestParser
from .tunnels.takeover import UpgradeTask


#: how long, and how much, a closing connection reads and discards after an error answer
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


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
    #: close lingering (nginx's lingering_close): the answer refused a request the client may still send
    linger = False
    #: while lingering, when to give up reading (time.monotonic()); 0 when not lingering
    lingering_until = 0.0

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
        HTTPChannel.handle_close(self)

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
            HTTPChannel.handle_close(self)

    def writable(self) -> Any:
        if self.will_close or self.close_when_flushed:
            return True
        return self.total_outbufs_len and (self.loop_flushes or not self.requests)

    def write_soon(self, data: Any) -> int:
        written = HTTPChannel.write_soon(self, data)
        if self.total_outbufs_len:  # the client's socket is full: hand the rest to the loop
            with self.outbuf_lock:
                if self.total_outbufs_len:
                    self.loop_flushes = True
            self.server.pull_trigger()
        return written

    def _flush_some(self, do_close: bool = True) -> bool:
        """waitress's, clearing :attr:`loop_flushes` once everything is sent.

        Called with ``outbuf_lock`` held, or by the loop thread when no request
        is being served (no worker then touches the channel).
        """
        sent = HTTPChannel._flush_some(self, do_close)
        if not self.total_outbufs_len:
            self.loop_flushes = False
        return sent
