"""Taking an upgraded connection's client socket out of waitress.

waitress hands a request to a worker thread as soon as its head is complete;
with an upgrade, the bytes the client sent right after the head (its first
WebSocket frame, say) arrived in the same read. The strict parser
(server.py) keeps them as ``tail`` instead of parsing them as a next request,
and the channel reads nothing more while the request is in progress. The task
class below puts itself into the environ of upgrade requests only
(``simpleproxy.upgrade``), which is how the app knows the socket can be taken.

:func:`detach` then removes the channel from waitress's socket map in the
loop's own thread (waitress iterates the map there, unlocked) and gives the
socket to the caller; the task is marked so that waitress writes nothing after
the application returns.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

from waitress.task import WSGITask

from ..response_head import build_response_head

DETACH_TIMEOUT = 5.0  #: how long a worker waits for the loop thread to hand the socket over


class UpgradeTask(WSGITask):
    """waitress's WSGI task, offering its connection to the app when the request asks to upgrade."""

    # Both run for every request: plain attribute reads, and the base class called directly
    # (super() and getattr() cost more than the rest of these methods).
    def get_environment(self) -> dict[str, Any]:
        environ = self.environ
        if environ is None:
            environ = WSGITask.get_environment(self)
            if self.request.upgrade:  # StrictRequestParser's (server.py)
                environ["simpleproxy.upgrade"] = self
        return environ

    def build_response_header(self) -> bytes:
        # The bytes after the head were kept for a tunnel; an upgrade that did not happen
        # (refused, or answered without 101) cannot read on from them: close after this answer.
        if self.request.tail:
            self.set_close_on_finish()  # with "Connection: close", so the client knows
        return build_response_head(self)  # waitress's head, built for less CPU


def detach(task: WSGITask) -> tuple[socket.socket | None, bytes, Callable[[], None] | None]:
    """-> (the client socket, the bytes read past the head, what to call when it closes).

    The socket is None if the client is gone. The last item undoes the
    per-client connection count (security/floods.py), which keeps counting the
    connection while it is a tunnel; None when connections are not counted.
    Called from the worker thread serving ``task``; waitress then sends nothing
    more on the connection and forgets it.
    """
    channel = task.channel
    handed = threading.Event()
    state: dict[str, Any] = {"sock": None, "abandoned": False, "uncount": None}
    lock = threading.Lock()

    def in_loop_thread() -> None:  # never pulls the trigger itself: that would deadlock
        with lock:
            if state["abandoned"] or channel.socket is None or not channel.connected or channel.total_outbufs_len:
                if state["abandoned"] and channel.socket is not None:
                    channel.close()
                handed.set()
                return
            keep_counted = getattr(channel, "keep_counted", None)
            if keep_counted is not None:
                state["uncount"] = keep_counted()
            channel.del_channel()
            state["sock"], channel.socket = channel.socket, None
            channel.connected = False
        handed.set()

    try:
        channel.server.trigger.pull_trigger(in_loop_thread)
    except OSError:  # the loop has stopped
        return None, b"", None
    if not handed.wait(DETACH_TIMEOUT):
        with lock:
            state["abandoned"] = True
    task.wrote_header = True  # nothing more from waitress on this connection
    task.close_on_finish = True
    return state["sock"], task.request.tail or b"", state["uncount"]
