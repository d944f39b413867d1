"""waitress's loop pass, in proportion to what changed once there are many connections.

waitress's ``poll2`` asks every socket in its map ``readable()`` and
``writable()`` (two Python calls each) and registers it in a new ``poll``
object, at every pass; a pass happens for every burst of events. With 1,500
connections open (slowhttptest's slow read) a pass cost 1-4 ms before any
event was handled, and the loop thread, saturated, held up everything.

Above :data:`SMALL` sockets, :class:`ChangedOnly` keeps one ``poll`` object
and asks again only the sockets whose answer may have changed since it last
asked: those that had events in the last pass (the loop thread changed them
in their handlers), connections with a request in progress (a worker may
change them; it wakes the loop when it is done), new connections (the
channel reports itself when made), and the listeners and other objects that
are not connections. Closed sockets are found by comparing the map's keys
with the registered ones (a set difference, in C). Every :data:`FULL_EVERY`
seconds, and whenever the map is small, every socket is asked again: what
the maintenance pass changes (a connection cut for being too slow) is picked
up then, and a change nobody reported waits at most that long.
"""

from __future__ import annotations

import select
import sys
import time
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel

#: up to this many sockets the loop makes waitress's own pass (every socket asked every time)
SMALL = 200
#: seconds between passes that ask every socket
FULL_EVERY = 0.25
if sys.platform != "win32":
    _READ, _WRITE = select.POLLIN | select.POLLPRI, select.POLLOUT

    def _poller() -> Any:
        return select.poll()
else:  # Windows: select() only, no poll(); the front end keeps waitress's own loop there (server.py)
    _READ = _WRITE = 0

    def _poller() -> Any:
        raise OSError("no poll() on this platform")


class ChangedOnly:
    """The loop's ``poll_fun``: ``pass_(timeout, map)``, as waitress's loop calls ``poll2``."""

    def __init__(self) -> None:
        self._poller: Any = None
        self._flags: dict[int, int] = {}  #: fd -> the flags last asked for (0: not registered)
        self._objects: dict[int, Any] = {}  #: fd -> the object those flags are for
        self._touched: set[int] = set()  #: fds that had events in the last pass
        self._busy: set[int] = set()  #: connections with a request in progress
        self._others: set[int] = set()  #: listeners, the wake-up pipe, TLS handshakes: asked every pass
        self.born: set[int] = set()  #: fds of connections made since the last pass (ProxyChannel adds)
        self._next_full = 0.0

    def pass_(self, timeout: float, map: dict[int, Any]) -> None:
        if len(map) <= SMALL:
            if self._poller is not None:
                self._forget()
            wasyncore.poll2(timeout, map)
            return
        if self._poller is None:
            self._poller = _poller()
        now = time.monotonic()
        flags = self._flags
        for fd in flags.keys() - map.keys():  # closed, or handed over (a tunnel)
            self._drop(fd)
        if now >= self._next_full:
            self._next_full = now + FULL_EVERY
            asked = list(map.items())
            self.born.clear()
        else:
            born, self.born = self.born, set()
            fds = self._touched | self._busy | self._others | born | (map.keys() - flags.keys())
            asked = [(fd, map[fd]) for fd in fds if fd in map]
        for fd, obj in asked:
            self._ask(fd, obj)
        try:
            events = self._poller.poll(None if timeout is None else int(timeout * 1000))
        except InterruptedError:
            events = []
        touched = self._touched = set()
        for fd, happened in events:
            obj = map.get(fd)
            if obj is None:  # closed since it was registered
                self._drop(fd)
                continue
            touched.add(fd)
            wasyncore.readwrite(obj, happened)

    def _ask(self, fd: int, obj: Any) -> None:
        wanted = 0
        if obj.readable():
            wanted |= _READ
        if obj.writable() and not obj.accepting:
            wanted |= _WRITE
        if isinstance(obj, HTTPChannel):
            if obj.requests:
                self._busy.add(fd)
            else:
                self._busy.discard(fd)
        else:
            self._others.add(fd)
        before = self._flags.get(fd)
        if before == wanted and self._objects.get(fd) is obj:
            return
        poller = self._poller
        if wanted:
            if before:
                poller.modify(fd, wanted)
            else:
                poller.register(fd, wanted)
        elif before:
            poller.unregister(fd)
        self._flags[fd] = wanted
        self._objects[fd] = obj

    def _drop(self, fd: int) -> None:
        if self._flags.pop(fd, 0):
            try:
                self._poller.unregister(fd)
            except KeyError:
                pass
        self._objects.pop(fd, None)
        self._busy.discard(fd)
        self._others.discard(fd)
        self._touched.discard(fd)

    def _forget(self) -> None:
        """Back to waitress's pass (the map got small): no registration is kept."""
        self._poller = None
        self._flags.clear()
        self._objects.clear()
        self._busy.clear()
        self._others.clear()
        self._touched = set()
        self.born.clear()
        self._next_full = 0.0
