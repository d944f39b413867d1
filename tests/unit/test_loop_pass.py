"""Past loop.SMALL sockets a pass asks again only what may have changed (frontend/loop.py)."""

from __future__ import annotations

import socket

from waitress.channel import HTTPChannel

from simpleproxy.frontend import loop
from simpleproxy.frontend.loop import SMALL, ChangedOnly


class Connection(HTTPChannel):
    """A connection as the pass sees it: its answers to readable()/writable(), counted; real sockets."""

    def __init__(self, sock: socket.socket) -> None:  # waitress's channel needs none of its machinery here
        self.sock, self.requests, self.asked, self.reads = sock, [], 0, 0
        self.wants_read = True

    def readable(self) -> bool:
        self.asked += 1
        return self.wants_read

    def writable(self) -> bool:
        return False

    def handle_read_event(self) -> None:  # a request arrived: a worker now serves it
        self.reads += 1
        if self.sock.recv(100) == b"request":
            self.requests.append("in progress")


def test_a_pass_asks_only_the_touched_the_busy_and_the_new(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
    pairs = [socket.socketpair() for _ in range(SMALL + 50)]
    try:
        conns = {ours.fileno(): Connection(ours) for ours, _ in pairs}
        changed = ChangedOnly()
        changed.pass_(0, conns)  # the first pass asks every socket
        assert all(c.asked == 1 for c in conns.values())
        first, second = list(conns.values())[:2]
        pairs[0][1].send(b"x")  # an event on the first
        pairs[1][1].send(b"request")  # a request on the second: a worker serves it
        changed.pass_(0, conns)  # hears both
        changed.pass_(0, conns)  # asks both again (they had events); the second is busy
        changed.pass_(0, conns)  # asks the second again (a worker may change it), not the first
        assert first.reads == second.reads == 1 and first.asked == 2 and second.asked == 3
        assert sum(c.asked for c in conns.values()) == len(conns) + 1 + 2  # the idle ones were not asked again
        second.requests.clear()  # its worker is done: asked once more, then left alone
        changed.pass_(0, conns)
        changed.pass_(0, conns)
        assert second.asked == 4
        clock[0] += loop.FULL_EVERY  # every so often, everyone
        changed.pass_(0, conns)
        assert all(c.asked >= 2 for c in conns.values())
        gone = list(conns)[5]
        del conns[gone]  # a closed connection is forgotten; a new one with its fd is asked
        changed.pass_(0, conns)
        assert gone not in changed._flags
    finally:
        for a, b in pairs:
            a.close()
            b.close()
