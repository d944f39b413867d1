"""One line per request: client, request line, status, bytes, duration, upstream, id, route, cache.

``combined`` is nginx's format plus five fields, so existing log tools read it::

    127.0.0.1 - - [29/Nov/2026:03:22:43 +0000] "GET /api/x HTTP/1.1" 200 1024 "-" "curl/8.5" 0.0021 127.0.0.1:9001 4f1c2a9be07d routes[0] hit

``json`` writes one JSON object per line with the same facts, named.
Values that come from the client are escaped (quotes, backslashes and
control characters; JSON escapes its own), so a request cannot forge a
second log line.

Lines are queued and written by a background thread every ``flush_interval``
seconds, one write for all of them (nginx's ``access_log ... buffer= flush=``):
a write and flush per request cost as much CPU as parsing the response head.
:meth:`AccessLog.flush` writes what is queued at once; ``close`` does too.
"""

from __future__ import annotations

import atexit
import collections
import json
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, TextIO

from .. import forks

_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_ESCAPES[ord('"')] = '\\"'
_ESCAPES[ord("\\")] = "\\\\"


def _escaped(text: str) -> str:
    """``text`` with quotes, backslashes and control characters escaped; as it is when it has none
    (the usual case: str.translate looks every character up in a dictionary, isprintable does not)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return text.translate(_ESCAPES)


#: every access log that may hold queued lines, flushed when the process exits
_LOGS: weakref.WeakSet[AccessLog] = weakref.WeakSet()


def flush_all() -> None:
    """Write the lines every access log still holds: at exit (atexit), and before a SIGTERM that
    would end the process without it (wsgi.py, under hosts that leave SIGTERM to its default)."""
    for log in list(_LOGS):
        log.flush()


atexit.register(flush_all)  # also in forked workers: the registration is inherited with the logs


class AccessLog:
    """Writes access lines to a text stream; ``AccessLog(None)`` writes nothing.

    Lines are queued and written by a background thread every ``flush_interval``,
    a write per batch rather than per request; :func:`flush_all` writes what is
    left when the process exits, so a request just before a stop is not lost.
    """

    def __init__(self, stream: TextIO | None, flush_interval: float = 0.25, format: str = "combined") -> None:
        self.stream = stream
        self.json = format == "json"
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._queue: collections.deque[str] = collections.deque()
        self._second = -1
        self._stamp = ""
        self._owned = False
        self._flusher_generation = -1  # forks.generation when the flusher started
        self._closed = threading.Event()
        if stream is not None:
            _LOGS.add(self)

    @classmethod
    def to(cls, target: str, format: str = "combined") -> AccessLog:
        """``stdout``, ``stderr``, ``off`` or a file path (appended to, created if missing)."""
        if target == "off":
            return cls(None)
        if target in ("stdout", "stderr"):
            return cls(getattr(sys, target), format=format)
        log = cls(Path(target).open("a", encoding="utf-8"), format=format)
        log._owned = True
        return log

    def _timestamp(self) -> str:
        second = int(time.time())
        if second != self._second:  # strftime once a second, not once a request
            form = "%Y-%m-%dT%H:%M:%SZ" if self.json else "%d/%b/%Y:%H:%M:%S +0000"
            self._stamp = time.strftime(form, time.gmtime(second))
            self._second = second
        return self._stamp

    def log(
        self, environ: dict[str, Any], status: str, size: int, duration: float, upstream: str,
        request_id: str = "-", route: str = "-", cache: str = "-", limit: str = "-", client: str | None = None,
        tunnel: Any = None, user: str = "",
    ) -> None:
        """``client``: the address the proxy trusts (the peer's unless a trusted proxy named another).

        ``tunnel``: for an upgraded connection, logged when it closes: ``size`` is the
        bytes sent to the client, and the line adds the bytes from it and why it ended.
        """
        if self.stream is None:
            return
        get = environ.get
        target = get("REQUEST_URI") or get("PATH_INFO", "")
        client = client or get("REMOTE_ADDR", "-")
        if self.json:
            line = json.dumps({
                "time": self._timestamp(), "client": client, "method": get("REQUEST_METHOD", "-"),
                "target": target, "protocol": get("SERVER_PROTOCOL", "-"), "status": int(status[:3]),
                "bytes": size, "referer": get("HTTP_REFERER"), "user_agent": get("HTTP_USER_AGENT"),
                "duration": round(duration, 6), "upstream": upstream, "request_id": request_id, "route": route,
                "cache": cache, "limit": limit, "user": user or None,
                **({"bytes_up": tunnel.bytes_up, "tunnel_end": tunnel.reason} if tunnel is not None else {}),
            }) + "\n"
        else:
            line = (
                f'{client} - {_escaped(user) if user else "-"} [{self._timestamp()}] '
                f'"{_escaped(get("REQUEST_METHOD", "-"))} {_escaped(target)} {get("SERVER_PROTOCOL", "-")}" '
                f'{status[:3]} {size} "{_escaped(get("HTTP_REFERER", "-"))}" '
                f'"{_escaped(get("HTTP_USER_AGENT", "-"))}" {duration:.4f} {upstream} {request_id} {route} {cache} {limit}'
                + (f' up={tunnel.bytes_up} end={tunnel.reason}\n' if tunnel is not None else '\n')
            )
        self._queue.append(line)
        if self._flusher_generation != forks.generation:
            self._start_flusher()

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_generation == forks.generation:
                return
            self._flusher_generation = forks.generation
        threading.Thread(target=self._flush_loop, name="simpleproxy-accesslog", daemon=True).start()

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.flush_interval):
            self.flush()

    def flush(self) -> None:
        """Write every queued line now."""
        queue = self._queue
        with self._lock:
            stream = self.stream
            lines = []
            while queue:  # popleft is atomic: a line appended meanwhile waits for the next flush
                lines.append(queue.popleft())
            if not lines or stream is None:
                return
            try:
                stream.write("".join(lines))
                stream.flush()
            except (OSError, ValueError):  # a closed stdout must not fail requests
                pass

    def close(self) -> None:
        self._closed.set()
        self.flush()
        if self._owned and self.stream is not None:
            self.stream.close()
        self.stream = None
