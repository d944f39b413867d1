"""Byte ranges (RFC 9110 section 14) of a whole response: from the store, or from one still arriving.

A :class:`RangePlan` is decided from the ``Range`` field and the whole
response's length alone, before any byte is read: the status (206 or 416),
the fields, and the pieces to send (one, or several as ``multipart/byteranges``).
The same plan cuts a stored body (:meth:`RangePlan.cut`) or answers from a body
still arriving from the origin (:class:`RangeBody`), which reads on past the
last piece the client asked for so the whole response is stored (a range on a
miss, as nginx answers one without its ``slice`` module).
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Iterator

from ..response import BodyStream
from .policy import parse_http_date

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")

#: byte ranges one request may ask for at once; past this the whole response is sent (as nginx's
#: max_ranges: hundreds of tiny overlapping ranges would cost more than the body)
MAX_RANGES = 16


def if_range_holds(value: str | None, etag: str | None, last_modified: str | None, date: float) -> bool:
    """RFC 9110 section 13.1.5: whether a Range goes with this If-Range (always, without one), for
    a representation with these validators and Date. An entity tag must equal ``etag`` strongly;
    a date must equal a strong Last-Modified (one at least a second older than the Date). Else
    the whole representation is sent."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return not value.startswith("W/") and etag is not None and not etag.startswith("W/") and value == etag
    since = parse_http_date(value)
    return since is not None and last_modified is not None and since == parse_http_date(last_modified) \
        and date >= since + 1


def byte_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Every range of a ``bytes=`` header resolved against ``size``: the satisfiable ones, in the
    order asked ([] when none is: 416); None when the header is not read (the whole response)."""
    unit, equals, specs = header.strip().partition("=")
    members = specs.split(",")
    if not equals or unit.strip(" \t") != "bytes" or len(members) > MAX_RANGES:
        return None
    spans = []
    for member in members:
        span = _byte_range("bytes=" + member.strip(" \t"), size)
        if span is None:
            return None
        if span[0] <= span[1]:
            spans.append(span)
    return spans


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range -> (first, last) inclusive; (1, 0) when unsatisfiable.

    None when the whole response is sent instead: an unreadable range (a
    server may ignore Range, RFC 9110 section 14.2).
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if first_text == "":  # the last N bytes
        suffix = int(last_text)
        return (max(0, size - suffix), size - 1) if suffix and size else (1, 0)
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if last_text and int(last_text) < first:
        return None  # invalid: ignored
    return (first, last) if first < size else (1, 0)


class RangePlan:
    """The answer to a range request of a whole response of ``size`` bytes, decided before reading it."""

    __slots__ = ("status", "pieces", "end", "multipart", "fields")

    def __init__(self, spans: list[tuple[int, int]], size: int, content_type: str | None) -> None:
        """``spans`` as :func:`byte_ranges` gives them: [] for a 416, one for a plain 206, more for a
        ``multipart/byteranges`` one (RFC 9110 section 14.6), one part each, in the order asked."""
        #: (bytes sent before the piece, first, last): a multipart piece's delimiter and fields
        self.pieces: list[tuple[bytes, int, int]] = []
        self.end = b""  #: bytes after the last piece: the multipart close delimiter
        self.multipart = len(spans) > 1
        if not spans:
            self.status = "416 Range Not Satisfiable"
            self.fields = [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")]
            return
        self.status = "206 Partial Content"
        if not self.multipart:
            first, last = spans[0]
            self.pieces.append((b"", first, last))
            self.fields = [("Content-Range", f"bytes {first}-{last}/{size}"), ("Content-Length", str(last - first + 1))]
            return
        boundary = secrets.token_hex(12)
        for i, (first, last) in enumerate(spans):
            head = ("\r\n" if i else "") + f"--{boundary}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "")
            self.pieces.append(((head + f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n").encode("latin-1"), first, last))
        self.end = f"\r\n--{boundary}--\r\n".encode("latin-1")
        length = sum(len(head) + last - first + 1 for head, first, last in self.pieces) + len(self.end)
        self.fields = [("Content-Type", f"multipart/byteranges; boundary={boundary}"), ("Content-Length", str(length))]

    def headers(self, whole: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The whole response's fields made this answer's: its length replaced (and its type, for a
        multipart answer); a 416 keeps none of them."""
        if not self.pieces:
            return list(self.fields)
        replaced = ("content-length", "content-type") if self.multipart else ("content-length",)
        return [(n, v) for n, v in whole if n.lower() not in replaced] + self.fields

    def cut(self, body: bytes) -> bytes:
        """The answer's body from the whole one."""
        return b"".join([head + body[first : last + 1] for head, first, last in self.pieces] + [self.end])


class RangeBody(BodyStream):
    """A range answered from a whole body as it arrives; read on to its end after the last piece.

    Bytes still to be sent are kept (only those: the pieces in ascending order
    keep no more than the current one). Reading on after the client has its
    answer lets the whole response reach the store (the inner body's sink);
    the bytes read are bounded by the object size limit, since only a response
    that will be stored is answered this way.
    """

    __slots__ = ("inner", "source", "plan", "given", "ended")

    def __init__(self, inner: Any, plan: RangePlan) -> None:
        super().__init__()
        self.inner = inner
        self.source = iter(inner)  #: one iterator, read by __iter__ and, after the answer, by close()
        self.plan = plan
        self.given = False  #: every piece went out
        self.ended = False  #: the inner body was read to its end

    def __iter__(self) -> Iterator[bytes]:
        pieces = self.plan.pieces
        count = len(pieces)
        # floor[i]: the lowest offset pieces i.. still need; bytes below it can be dropped
        floor = [min(first for _, first, _ in pieces[i:]) for i in range(count)]
        kept = bytearray()
        base = 0  # the offset of kept[0] in the whole body
        index, cursor = 0, -1  # the piece being sent, the next offset of it (-1: its head not sent)
        for data in self.source:
            if index >= count:
                continue  # every piece sent: read on, for the store
            kept += data
            end = base + len(kept)
            out = []
            while index < count:
                head, first, last = pieces[index]
                if cursor < 0:
                    if first >= end:
                        break
                    out.append(head)
                    cursor = first
                stop = min(last + 1, end)
                out.append(bytes(kept[cursor - base : stop - base]))
                cursor = stop
                if cursor <= last:
                    break
                index, cursor = index + 1, -1
            if index >= count:
                out.append(self.plan.end)
                self.given = True
                kept.clear()
                base = end
            else:
                drop = min(floor[index], cursor if cursor >= 0 else end) - base
                if drop > 0:
                    del kept[:drop]
                    base += drop
            piece = b"".join(out)
            if piece:
                self.sent += len(piece)
                yield piece
        self.given = index >= count  # (a 416 has no piece: given once read)
        self.ended = True

    def close(self) -> None:
        """Closes the inner body; once the client has everything it asked for, reads that to its end
        first (the client may leave as soon as it has its bytes: the store should not miss them)."""
        try:
            if self.given and not self.ended:
                for _ in self.source:
                    pass
                self.ended = True
        except Exception:  # the origin broke off: nothing stored, the client was answered
            pass
        finally:
            close = getattr(self.inner, "close", None)
            if close is not None:
                close()
            self.finished(self.given and not getattr(self.inner, "error", ""))
