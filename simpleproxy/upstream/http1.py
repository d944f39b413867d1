"""HTTP/1.1 on the upstream side: a strict response parser and body readers.

Why not ``http.client``: on a pooled keep-alive connection it costs about
190 us per request through ``urlopen`` and 87 us by itself, against ~15 us
for the socket I/O, and it silently splits a header line at a bare CR, which
lets a backend inject a field. urllib3 keeps what it is good at (the pool,
connecting, TLS, timeouts, see :mod:`simpleproxy.upstream.pool`); this module
speaks the protocol on the connected socket and refuses, rather than repairs,
anything with two possible readings (RFC 9112 sections 2-7).
"""

from __future__ import annotations

import re
import socket
from http import HTTPStatus

from ..errors import UpstreamClosed, UpstreamProtocolError
from ..grammar import HOP_BY_HOP, TCHAR, tokens

RECV_SIZE = 65536
MAX_HEAD = 64 * 1024  # nginx's proxy_buffer_size is 4-8 KiB; be generous, but bounded
MAX_CHUNK_LINE = 4096

# RFC 9112 section 4: HTTP-version SP status-code SP [ reason-phrase ]; the reason is
# HTAB / SP / VCHAR / obs-text. A missing SP before an empty reason is tolerated.
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
# RFC 9112 section 5: field-name ":" OWS field-value OWS CRLF, name a token (RFC 9110
# 5.6.2), value without controls other than HTAB, so no bare CR or LF either.
_FIELD_PATTERN = f"([{TCHAR}]+)" + r":[ \t]*((?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?)[ \t]*\r\n"
_FIELD = re.compile(_FIELD_PATTERN)

#: What the response parser does with a field, by lower-case name: framing fields are
#: consumed, hop-by-hop fields (and what ``Connection`` names) dropped, any other name relayed.
FIELD_ACTIONS = {name: "drop" for name in HOP_BY_HOP} | {
    "content-length": "content-length",
    "transfer-encoding": "transfer-encoding",
    "connection": "connection",
}

_PHRASES = {s.value: s.phrase for s in HTTPStatus}


class ResponseHead:
    """A parsed, validated status line and header section."""

    __slots__ = ("status", "reason", "headers", "length", "chunked", "keep_alive", "has_body", "upgrade")

    def __init__(self) -> None:
        self.status = 0
        self.reason = ""
        #: end-to-end fields only, as (name, value) text, in order, duplicates kept
        self.headers: list[tuple[str, str]] = []
        self.length = -1  #: Content-Length, or -1 when chunked or read-until-close
        self.chunked = False
        self.keep_alive = True
        self.has_body = True
        self.upgrade = ""  #: the Upgrade field, when the parser was asked to keep it (a 101's)

    @property
    def status_line(self) -> str:
        """The WSGI status string: "200 OK"."""
        return f"{self.status} {self.reason or _PHRASES.get(self.status, 'Unknown')}"


def read_head(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    """Receive up to the blank line ending a head: -> (head without it, bytes after it)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            return buf[:end], buf[end + 4:]
        if len(buf) > MAX_HEAD:
            raise UpstreamProtocolError("response head too large")
        data = sock.recv(RECV_SIZE)
        if not data:
            raise UpstreamClosed(bool(buf))
        buf += data


def parse_head(head: bytes, method: str, actions: dict[str, str] = FIELD_ACTIONS) -> ResponseHead:
    """Validate a response head and decide its body framing (RFC 9112 section 6.3).

    A regular expression does the character-level work in C, matched at each
    line's start in turn so that every line must be a well-formed
    ``name: value CRLF`` (token name, no whitespace before the colon, no
    obs-fold, no control character, no CR or LF except in CRLF). ``actions``
    may drop more fields than the hop-by-hop ones (``Server``, say).
    """
    text = head.decode("latin-1")
    status_line, _, fields = text.partition("\r\n")
    status = _STATUS_LINE.fullmatch(status_line)
    if status is None:
        raise UpstreamProtocolError("malformed status line")
    result = ResponseHead()
    result.status = int(status.group(2))
    result.reason = status.group(3) or ""
    http10 = status.group(1) == "0"
    if http10:
        result.keep_alive = False  # we never reuse HTTP/1.0 connections
    lengths: set[str] = set()
    transfer_encoding = ""
    connection = ""
    headers = result.headers
    if fields:
        fields += "\r\n"
        match, pos, end = _FIELD.match, 0, len(fields)
        while pos < end:
            field = match(fields, pos)  # anchored: no line may be skipped over
            if field is None:
                raise UpstreamProtocolError("malformed response header (bare CR or LF, control character, or bad name)")
            name, value = field.groups()
            pos = field.end()
            special = actions.get(name.lower())
            if special is None:
                headers.append((name, value))
            elif special == "content-length":
                lengths.update(v.strip(" \t") for v in value.split(","))
            elif special == "transfer-encoding":
                transfer_encoding += "," + value
            elif special == "connection":
                connection += "," + value
            elif special == "upgrade":
                result.upgrade += ("," if result.upgrade else "") + value
    if connection:
        named = tokens(connection)
        if named - {"close", "keep-alive"}:
            result.headers = [(n, v) for n, v in headers if n.lower() not in named]
        if "close" in named:
            result.keep_alive = False
    _decide_framing(result, method, lengths, transfer_encoding, http10)
    return result


def _decide_framing(result: ResponseHead, method: str, lengths: set[str], te: str, http10: bool) -> None:
    length = -1
    if lengths:
        if len(lengths) != 1:
            raise UpstreamProtocolError("conflicting Content-Length values")
        (text,) = lengths
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise UpstreamProtocolError("invalid Content-Length")
        length = int(text)
    status = result.status
    if method == "HEAD" or status < 200 or status in (204, 304):
        # No body, whatever the fields say; HEAD and 304 keep the length they describe.
        result.has_body = False
        if length >= 0 and status >= 200 and status != 204:
            result.headers.append(("Content-Length", str(length)))
        return
    if te:
        if http10:
            raise UpstreamProtocolError("Transfer-Encoding in an HTTP/1.0 response")  # RFC 9112 6.1
        if lengths:
            raise UpstreamProtocolError("both Content-Length and Transfer-Encoding")
        codings = [c.strip(" \t").lower() for c in te.split(",") if c.strip(" \t")]
        if codings != ["chunked"]:
            raise UpstreamProtocolError("unsupported Transfer-Encoding")
        result.chunked = True
    elif length >= 0:
        result.length = length
        result.headers.append(("Content-Length", str(length)))
    else:
        result.keep_alive = False  # delimited by close


def _chunk_size_of(line: bytes) -> int:
    size_text = line.partition(b";")[0].strip(b" \t")
    if not size_text or len(size_text) > 15 or size_text.strip(b"0123456789abcdefABCDEF"):
        raise UpstreamProtocolError("invalid chunk size")
    return int(size_text, 16)


class BodyReader:
    """Reads one response body off the socket, in pieces as they arrive.

    ``read()`` returns whatever has arrived (up to RECV_SIZE), never waiting
    to fill a buffer, so a slow or streaming response reaches the client as it
    is produced. ``complete`` tells that the body ended where its framing
    said; the connection may go back to the pool only if nothing followed
    (``buf`` empty): bytes after a response answer no request of ours.
    """

    __slots__ = ("sock", "buf", "remaining", "chunked", "complete", "_chunk_left")

    def __init__(self, sock: socket.socket, head: ResponseHead, buf: bytes) -> None:
        self.sock = sock
        self.buf = buf
        self.chunked = head.chunked
        self.remaining = head.length  # -1: until close (or chunked)
        self.complete = not head.has_body or head.length == 0
        self._chunk_left = -1  # -1: expecting a size line; -2: expecting CRLF after data

    def read(self) -> bytes:
        if self.complete:
            return b""
        if self.chunked:
            return self._read_chunked()
        data = self.buf or self.sock.recv(RECV_SIZE)
        self.buf = b""
        if self.remaining < 0:  # delimited by close
            if not data:
                self.complete = True
            return data
        if not data:
            raise UpstreamClosed(True)
        if len(data) > self.remaining:  # the body is whole; what follows is kept aside, unsent
            data, self.buf = data[: self.remaining], data[self.remaining:]
        self.remaining -= len(data)
        if self.remaining == 0:
            self.complete = True
        return data

    def _fill(self, need: int) -> None:
        while len(self.buf) < need:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                raise UpstreamClosed(True)
            self.buf += data

    def _read_chunked(self) -> bytes:
        while True:
            left = self._chunk_left
            if left > 0:
                if not self.buf:
                    self._fill(1)
                data, self.buf = self.buf[:left], self.buf[left:]
                self._chunk_left = left - len(data) or -2
                return data
            if left == -2:
                self._fill(2)
                if self.buf[:2] != b"\r\n":
                    raise UpstreamProtocolError("chunk not followed by CRLF")
                self.buf = self.buf[2:]
                self._chunk_left = -1
            size = self._chunk_size()
            if size == 0:
                self._skip_trailers()
                self.complete = True
                return b""
            self._chunk_left = size

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2:]
                if b"\r" in line or b"\n" in line:
                    raise UpstreamProtocolError("bare CR or LF in chunked framing")
                return line
            if len(self.buf) > MAX_CHUNK_LINE:
                raise UpstreamProtocolError("chunk size line too long")
            self._fill(len(self.buf) + 1)

    def _chunk_size(self) -> int:
        return _chunk_size_of(self._line())

    def check_buffered_chunk_size(self) -> None:
        """Validate a first chunk-size line that arrived with the head, without reading further,
        so that such a broken body is a 502 before any answer starts rather than a cut one."""
        end = self.buf.find(b"\r\n")
        if self.chunked and self._chunk_left == -1 and end >= 0:
            line = self.buf[:end]
            if b"\r" in line or b"\n" in line:
                raise UpstreamProtocolError("bare CR or LF in chunked framing")
            _chunk_size_of(line)

    def _skip_trailers(self) -> None:
        """Trailers cannot pass through WSGI; read and drop them (RFC 9110 6.5)."""
        total = 0
        while line := self._line():
            total += len(line)
            if total > MAX_HEAD:
                raise UpstreamProtocolError("trailer section too large")
