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

from typing import Any

from waitress.channel import HTTPChannel

from .parser import StrictRequestParser
from .tunnels.takeover import UpgradeTask


class ProxyChannel(HTTPChannel):
    parser_class = StrictRequestParser
    task_class = UpgradeTask
    #: a worker left output it could not send; the loop thread sends it as the client reads
    loop_flushes = False

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
