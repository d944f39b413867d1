"""The client-side request-head parser: waitress's, stricter, with a fast path for common heads.

waitress's ``HTTPRequestParser`` accepts a request carrying both
Content-Length and Transfer-Encoding (chunked wins, and the app cannot tell),
the classic request-smuggling shape, and waits forever on a head whose lines
end in a bare LF. :class:`StrictRequestParser` refuses both with 400 before
any application code runs.

It is also the largest single cost of a request in waitress (about a tenth of
a proxied request's CPU): a Python loop over the header lines, a regular
expression and a caught ``KeyError`` per field, ``urlsplit`` on the target.
Most heads have one shape: an upper-case method, an origin-form target of
visible ASCII, HTTP/1.0 or 1.1, well-formed fields without an underscore in
their names, no Transfer-Encoding. One regular expression checks that whole
shape in C; such a head is then read into the same parser state waitress
would set. Anything else, including everything malformed, takes waitress's
own path, so the two can only differ on heads both accept, and a test feeds
both parsers the same heads to show they do not.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from waitress.buffers import OverflowableBuffer
from waitress.parser import HTTPRequestParser, ParsingError, TransferEncodingNotImplemented
from waitress.receiver import FixedStreamReceiver
from waitress.utilities import BadRequest as BadRequestError

from ..grammar import TCHAR, tokens
from ..memo import Memo

_TCHAR = TCHAR.encode("ascii")
# RFC 9112 section 3: method SP request-target SP HTTP-version; only HTTP/1.x is spoken here.
# Matched at the head's start: the whole first line, up to its CRLF (or the head's end).
_REQUEST_LINE = re.compile(rb"[" + _TCHAR + rb"]+ [^ \r\n]+ HTTP/1\.[01](?:\r\n|\Z)")
_BARE_LF = re.compile(rb"(?<!\r)\n")
#: a request line read leniently, for the error page and the log line of a head that failed
_LINE_PARTS = re.compile(rb"\s*([" + _TCHAR + rb"]+) ([^ \r\n]+) HTTP/1\.([01])\r?\n")

# The common shape (module docstring), up to the blank line waitress leaves on the head. Field
# lines: a token without "_" (waitress drops such fields), a colon, a value of visible characters,
# spaces and tabs (RFC 9110 section 5.5). The method is a token in upper case (waitress refuses
# others). The target's second character cannot be a "/" (waitress reads "//x" apart).
_FIELD_LINE = rb"\r\n[" + _TCHAR.replace(b"_", b"") + rb"]+:[\t\x20-\x7e\x80-\xff]*"
_COMMON_HEAD = re.compile(
    rb"([" + _TCHAR.replace(b"a-z", b"") + rb"]+) (/(?:[\x21-\x2e\x30-\x7e][\x21-\x7e]*)?) HTTP/1\.([01])((?:" + _FIELD_LINE + rb")*)\r\n\r\n"
)
_FIELD = re.compile(rb"\r\n([^:]+):([^\r]*)")
_FIELD_NAME = re.compile(rb"\r\n([^:\r\n]*):")
#: fields a request may carry once (RFC 9112 section 3.2, RFC 9110 section 8.6 and 8.3): two of
#: them leave a proxy and the backend free to read different ones. waitress refuses them too
#: since its 3.0.2 (in the parser our fast path skips), with the same words.
_SINGLETONS = frozenset(("HOST", "CONTENT_LENGTH", "CONTENT_TYPE"))
_DIGITS = re.compile(rb"[0-9]+")
#: field name -> waitress's header key ("X-Api-Key" -> "X_API_KEY": its environ key without
#: ``HTTP_``, as waitress's parser makes it), memoised: names repeat
_KEYS: Memo[bytes, str] = Memo(lambda name: name.upper().replace(b"-", b"_").decode("latin-1"))


class StrictRequestParser(HTTPRequestParser):
    """waitress's parser, refusing ambiguous framing (RFC 9112 section 6.1), faster on common heads.

    A parser is made when a request's first byte arrives; ``started`` is that
    moment, for the request-head deadline (guards.py).
    """

    #: an HTTP/1.1 request with ``Upgrade`` and ``Connection: upgrade``: a tunnel may follow
    upgrade = False
    #: with ``upgrade``, the bytes that came after the head (None until the head is complete)
    tail: bytes | None = None
    #: read common heads without waitress's parser (off: every head takes waitress's path)
    fast = True
    #: what a head that failed before its request line was read leaves (waitress sets none of them)
    command = request_uri = path = ""

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.started = time.monotonic()
        self._last = b""

    def received(self, data: bytes) -> int:
        """Refuse a head that ends its lines with a bare LF (waitress would wait for CRLF forever).

        An upgrade request claims every byte after its head (``tail``): they belong
        to the tunnel, not to a next request.
        """
        if not self.headers_finished and not self.completed:  # type: ignore[has-type]
            if data.count(b"\n") == data.count(b"\r\n"):  # every LF has its CR: the usual case, in C
                self._last = data[-3:]
            else:
                window = self._last + data  # the bytes before, so a CRLF split across reads is seen whole
                end = window.find(b"\r\n\r\n")
                # The new bytes only (the look-behind still sees the old), and the head only, never the body.
                if _BARE_LF.search(window if end < 0 else window[: end + 2], len(self._last)):
                    self.error = BadRequestError("bare LF in the request head")
                    self.note_request_line(self.header_plus + data)
                    self.completed = True
                    return len(data)
                self._last = window[-3:]
        used = HTTPRequestParser.received(self, data)
        if self.error is not None:
            # Refused already (a body over max_request_body, say): no "100 Continue" invites
            # the body; the error goes out at once and the connection closes after it.
            self.expect_continue = False
            if self.error.code == 431:  # waitress parsed a stand-in line; the real one came first
                self.note_request_line(self.header_plus + data)
        if self.upgrade and self.completed and self.tail is None and not self.error:
            self.tail = data[used:]
            return len(data)
        return used

    def parse_header(self, header_plus: bytes) -> None:
        common = _COMMON_HEAD.fullmatch(header_plus) if self.fast else None
        try:
            try:
                if common is None or not self._read_common(header_plus, common):
                    self._parse_strictly(header_plus)
            except ValueError:  # int() refuses a Content-Length of over 4300 digits; waitress lets it escape
                raise ParsingError("Content-Length is invalid") from None
        except (ParsingError, TransferEncodingNotImplemented):
            self.note_request_line(header_plus)
            raise
        headers = self.headers
        if "UPGRADE" in headers and self.version == "1.1":  # RFC 9110 7.8: not in HTTP/1.0
            self.upgrade = "upgrade" in tokens(headers.get("CONNECTION", ""))

    def note_request_line(self, head: bytes) -> None:
        """For a head refused whole: its method, target and version if its first line has them,
        so that the error answers in the request's HTTP version and the log line names it."""
        line = _LINE_PARTS.match(head)
        if line is not None:
            self.command, self.request_uri = line.group(1).decode("latin-1"), line.group(2).decode("latin-1")
            self.version = "1.1" if line.group(3) == b"1" else "1.0"

    def _parse_strictly(self, header_plus: bytes) -> None:
        """Our checks, then waitress's parser; every check is one scan in C."""
        if _REQUEST_LINE.match(header_plus) is None:
            raise ParsingError("the request line is not METHOD TARGET HTTP/1.0 or HTTP/1.1")
        if b"\r\n " in header_plus or b"\r\n\t" in header_plus:
            raise ParsingError("obsolete line folding in the request head")  # RFC 9112 section 5.2
        lowered = header_plus.lower()
        if b"\ntransfer-encoding:" in lowered:
            if b"\ncontent-length:" in lowered:
                raise ParsingError("both Content-Length and Transfer-Encoding")
            if header_plus.split(b"\n", 1)[0].rstrip().endswith(b"HTTP/1.0"):
                raise ParsingError("Transfer-Encoding in an HTTP/1.0 request")
        seen = set()
        for name in _FIELD_NAME.findall(header_plus):
            if b"_" not in name:  # waitress drops such fields
                key = _KEYS[name]
                if key in _SINGLETONS:
                    if key in seen:
                        raise ParsingError(f"Duplicate header: {name.decode('latin-1')}")
                    seen.add(key)
        HTTPRequestParser.parse_header(self, header_plus)

    def _read_common(self, header_plus: bytes, common: re.Match[bytes]) -> bool:
        """Set what waitress's ``parse_header`` sets, for a head of the common shape.

        False (with nothing kept) for a head carrying Transfer-Encoding: waitress's
        path and our framing checks handle those.
        """
        method, target, minor, fields = common.groups()
        headers = self.headers
        keys = _KEYS
        for name, value in _FIELD.findall(fields):
            key = keys[name]
            text = value.strip(b" \t").decode("latin-1")
            if key in headers:
                if key in _SINGLETONS:
                    headers.clear()
                    raise ParsingError(f"Duplicate header: {name.decode('latin-1')}")
                headers[key] += ", " + text  # as waitress joins repeated fields
            else:
                headers[key] = text
        if "TRANSFER_ENCODING" in headers:
            headers.clear()
            return False
        self.first_line = header_plus[: common.end(3)]
        self.request_uri = target.decode("latin-1")
        self.command = method.decode("latin-1")
        self.version = version = "1.1" if minor == b"1" else "1.0"
        path, _, fragment = target.partition(b"#")
        path, _, query = path.partition(b"?")
        self.proxy_scheme = self.proxy_netloc = ""
        self.path = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
        self.query = query.decode("latin-1")
        self.fragment = fragment.decode("latin-1")
        self.url_scheme = self.adj.url_scheme
        connection = headers.get("CONNECTION", "").lower()
        if version == "1.0":
            self.connection_close = connection != "keep-alive"
        else:
            self.expect_continue = headers.get("EXPECT", "").lower() == "100-continue"
            self.connection_close = connection == "close"
        length = headers.get("CONTENT_LENGTH", "0")
        if _DIGITS.fullmatch(length.encode("latin-1")) is None:
            raise ParsingError("Content-Length is invalid")
        self.content_length = int(length)
        if self.content_length > 0:
            self.body_rcv = FixedStreamReceiver(self.content_length, OverflowableBuffer(self.adj.inbuf_overflow))
        return True
