"""A connection's output buffer that keeps the pieces it is given instead of copying them.

waitress's ``OverflowableBuffer`` copies every write into a ``BytesIO`` and
every send out of it again (``get`` reads up to the send size), and frees the
whole ``BytesIO`` at the end: for a response that waits for a slow client,
three copies of each byte and one large ``free`` (a ``munmap``) per
connection, all holding the GIL. Under slowhttptest's slow-read attack (300
new 1 MiB responses a second) those were a third of the loop thread's
samples, and the loop thread had four fifths of the process's.

:class:`ChunkBuffer` keeps the bytes objects the upstream reads produced:
appending costs nothing, a send takes a large piece as it is (a memoryview
past what was sent), small pieces (a response head, chunk-size lines) are
joined so that a small answer still goes out in one ``send()``, and past
``overflow`` bytes everything moves to waitress's temporary-file buffer, as
``OverflowableBuffer`` does.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from waitress.buffers import TempfileBasedBuffer

#: a piece at least this long is sent on its own, uncopied; shorter ones are joined up to it
JOIN_BELOW = 32 * 1024


class ChunkBuffer:
    """waitress's output-buffer interface (append, get, skip, prune, close, len) over a deque of pieces."""

    __slots__ = ("overflow", "pieces", "offset", "size", "spilled")

    def __init__(self, overflow: int) -> None:
        self.overflow = overflow  #: bytes kept in memory; past them, a temporary file
        self.pieces: deque[bytes] = deque()
        self.offset = 0  #: bytes of pieces[0] already sent
        self.size = 0  #: bytes held and not yet sent
        self.spilled: TempfileBasedBuffer | None = None

    def __len__(self) -> int:
        return self.spilled.__len__() if self.spilled is not None else self.size

    def __bool__(self) -> bool:
        return self.__len__() > 0

    def append(self, data: bytes) -> None:
        if self.spilled is not None:
            self.spilled.append(data)
            return
        if self.size + len(data) > self.overflow:
            self._spill().append(data)
            return
        self.pieces.append(data if type(data) is bytes else bytes(data))
        self.size += len(data)

    def _spill(self) -> Any:
        """Everything held moves to a temporary file, and later appends go there too."""
        spilled = TempfileBasedBuffer()
        pieces = self.pieces
        if pieces:
            spilled.append(pieces[0][self.offset:])
            for i in range(1, len(pieces)):
                spilled.append(pieces[i])
        pieces.clear()
        self.offset = self.size = 0
        self.spilled = spilled
        return spilled

    def get(self, numbytes: int = -1, skip: bool = False) -> Any:
        """Up to ``numbytes`` (all: -1) from the front: a large piece as it is, small ones joined."""
        if self.spilled is not None:
            return self.spilled.get(numbytes, skip)
        pieces = self.pieces
        if not pieces:
            return b""
        if numbytes < 0:
            numbytes = self.size
        first = pieces[0]
        offset = self.offset
        left = len(first) - offset
        if left >= JOIN_BELOW or left >= numbytes or len(pieces) == 1:
            if left > numbytes:
                out: Any = memoryview(first)[offset:offset + numbytes]
            else:
                out = first if not offset else memoryview(first)[offset:]
        else:  # small pieces: one send for all of them (a head and its body, chunk framing)
            parts = [memoryview(first)[offset:]]
            total = left
            for i in range(1, len(pieces)):
                piece = pieces[i]
                if total >= JOIN_BELOW or total + len(piece) > numbytes:
                    break
                parts.append(piece)  # type: ignore[arg-type]
                total += len(piece)
            out = b"".join(parts)
        if skip:
            self.skip(len(out))
        return out

    def skip(self, numbytes: int, allow_prune: bool = False) -> None:
        if self.spilled is not None:
            self.spilled.skip(numbytes, allow_prune)
            return
        self.size -= numbytes
        pieces = self.pieces
        offset = self.offset + numbytes
        while pieces and offset >= len(pieces[0]):
            offset -= len(pieces.popleft())
        self.offset = offset

    def prune(self) -> None:
        if self.spilled is not None:
            self.spilled.prune()

    def close(self) -> None:
        if self.spilled is not None:
            self.spilled.close()
        self.pieces.clear()
        self.offset = self.size = 0
