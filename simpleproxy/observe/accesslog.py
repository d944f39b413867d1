"""One line per request: client, request line, status, bytes, duration, upstream server.

The format is nginx's ``combined`` plus two fields, so existing log tools
read it::

    127.0.0.1 - - [29/Nov/2026:03:22:43 +0000] "GET /api/x HTTP/1.1" 200 1024 "-" "curl/8.5" 0.0021 127.0.0.1:9001

Values that come from the client are escaped (quotes, backslashes and
control characters), so a request cannot forge a second log line.

Lines are queued and written by a background thread every ``flush_interval``
seconds, one write for all of them (nginx's ``access_log ... buffer= flush=``):
a write and flush per request cost as much CPU as parsing the response head.
:meth:`AccessLog.flush` writes what is queued at once; ``close`` does too.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from .. import forks

_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_ESCAPES[ord('"')] = '\\"'
_ESCAPES[ord("\\")] = "\\\\"


class AccessLog:
    """Writes access lines to a text stream; ``AccessLog(None)`` writes nothing."""

    def __init__(self, stream: TextIO | None, flush_interval: float = 0.25) -> None:
        self.stream = stream
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._queue: collections.deque[str] = collections.deque()
        self._second = -1
        self._stamp = ""
        self._owned = False
        self._flusher_generation = -1  # forks.generation when the flusher started
        self._closed = threading.Event()

    @classmethod
    def to(cls, target: str) -> AccessLog:
        """``stdout``, ``stderr``, ``off`` or a file path (appended to, created if missing)."""
        if target == "off":
            return cls(None)
        if target in ("stdout", "stderr"):
            return cls(getattr(sys, target))
        log = cls(Path(target).open("a", encoding="utf-8"))
        log._owned = True
        return log

    def _timestamp(self) -> str:
        second = int(time.time())
        if second != self._second:  # strftime once a second, not once a request
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
            self._second = second
        return self._stamp

    def log(self, environ: dict[str, Any], status: str, size: int, duration: float, upstream: str) -> None:
        if self.stream is None:
            return
        get = environ.get
        esc = _ESCAPES
        target = get("REQUEST_URI") or get("PATH_INFO", "")
        self._queue.append(
            f'{get("REMOTE_ADDR", "-")} - - [{self._timestamp()}] '
            f'"{get("REQUEST_METHOD", "-").translate(esc)} {target.translate(esc)} {get("SERVER_PROTOCOL", "-")}" '
            f'{status[:3]} {size} "{get("HTTP_REFERER", "-").translate(esc)}" '
            f'"{get("HTTP_USER_AGENT", "-").translate(esc)}" {duration:.4f} {upstream}\n'
        )
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
