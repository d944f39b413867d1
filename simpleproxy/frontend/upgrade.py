"""The upgrade contract (simpleproxy/upgrade.py) kept by waitress: a client socket taken out of its loop;
and the interim-response one (simpleproxy/interim.py): a 103 written ahead of the final answer.

waitress hands a request to a worker thread as soon as its head is complete;
with an upgrade, the bytes the client sent right after the head (its first
WebSocket frame, say) arrived in the same read. The strict parser
(parser.py) keeps them as ``tail`` instead of parsing them as a next request,
and the channel reads nothing more while the request is in progress. The task
class below offers the connection (:class:`ChannelUpgrade`) in the environ of
upgrade requests only.

:meth:`ChannelUpgrade.detach` removes the channel from waitress's socket map in
the loop's own thread (waitress iterates the map there, unlocked) and gives the
socket to the caller; the task is marked so that waitress writes nothing after
the application returns.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from waitress.task import WSGITask

from ..interim import INTERIM
from ..upgrade import UPGRADE, DetachedConnection
from .response_head import build_response_head

DETACH_TIMEOUT = 5.0  #: how long a worker waits for the loop thread to hand the socket over


class UpgradeTask(WSGITask):
    """waitress's WSGI task, offering its connection to the app when the request asks to upgrade."""

    # Both run for every request: plain attribute reads, and the base class called directly
    # (super() and getattr() cost more than the rest of these methods).
    def get_environment(self) -> dict[str, Any]:
        environ = self.environ
        if environ is None:
            environ = WSGITask.get_environment(self)
            if self.request.upgrade:  # StrictRequestParser's (parser.py)
                environ[UPGRADE] = ChannelUpgrade(self)
            if self.version == "1.1":
                environ[INTERIM] = ChannelInterim(self)
        return environ

    def build_response_header(self) -> bytes:
        # The bytes after the head were kept for a tunnel; an upgrade that did not happen
        # (refused, or answered without 101) cannot read on from them: close after this answer.
        if self.request.tail:
            self.set_close_on_finish()  # with "Connection: close", so the client knows
        return build_response_head(self)  # waitress's head, built for less CPU

    def write(self, data: bytes) -> None:
        """waitress's, with the head and the first body bytes in one send(): waitress writes them one
        after the other, and each write sends at once (channel.py), two system calls for a small
        answer. The head's write only appends when body bytes follow in this same call."""
        if not self.wrote_header and data and self.has_body:
            self.channel.hold_next = True
        try:
            WSGITask.write(self, data)
        finally:
            self.channel.hold_next = False  # whatever happened, a later write sends


class ChannelUpgrade:
    """The :class:`~simpleproxy.upgrade.UpgradeOffer` of one request on a waitress channel."""

    def __init__(self, task: WSGITask) -> None:
        self._task = task

    def detach(self) -> DetachedConnection | None:
        """The client socket, the bytes read past the head, and what to call when it closes.

        The release undoes the per-client connection count (guards.py), which
        keeps counting the connection while it is a tunnel. Called from the
        worker thread serving the task; waitress then sends nothing more on the
        connection and forgets it.
        """
        task = self._task
        channel = task.channel
        handed = threading.Event()
        state: dict[str, Any] = {"sock": None, "abandoned": False, "release": None}
        lock = threading.Lock()

        def in_loop_thread() -> None:  # never pulls the trigger itself: that would deadlock
            with lock:
                if state["abandoned"] or channel.socket is None or not channel.connected or channel.total_outbufs_len:
                    if state["abandoned"] and channel.socket is not None:
                        channel.close()
                    handed.set()
                    return
                state["release"] = channel.keep_counted()
                channel.del_channel()
                state["sock"], channel.socket = channel.socket, None
                channel.connected = False
            handed.set()

        try:
            channel.server.trigger.pull_trigger(in_loop_thread)
        except OSError:  # the loop has stopped
            return None
        if not handed.wait(DETACH_TIMEOUT):
            with lock:
                state["abandoned"] = True
        task.wrote_header = True  # nothing more from waitress on this connection
        task.close_on_finish = True
        if state["sock"] is None:
            return None
        release: Callable[[], None] = state["release"]
        return DetachedConnection(state["sock"], task.request.tail or b"", release)


class ChannelInterim:
    """The :class:`~simpleproxy.interim.InterimWriter` of one HTTP/1.1 request on a waitress channel.

    Only the worker thread serving the request may write (anything else, a
    background cache refresh holding a copy of the environ, could put a 1xx
    after the final response); and only until waitress has written the final
    head, which that same thread does later, so the order on the wire holds.
    """

    __slots__ = ("_task", "_thread")

    def __init__(self, task: WSGITask) -> None:
        self._task = task
        self._thread = threading.get_ident()

    def __call__(self, status: str, headers: list[tuple[str, str]]) -> bool:
        task = self._task
        if task.wrote_header or threading.get_ident() != self._thread:
            return False
        head = f"HTTP/1.1 {status}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        task.channel.write_soon(head.encode("latin-1"))
        return True
