"""``compress``: text responses encoded for the client, as nginx ``gzip``, Caddy ``encode`` and
Traefik Compress do: zstd, brotli or gzip, whichever the client accepts best.

The encoding is chosen by the client's ``Accept-Encoding`` q-values (RFC 9110
section 12.5.3; ``*`` and ``identity;q=0`` read too), ties going to the order
of ``encodings`` (the server's preference). A body the proxy holds whole is
encoded at once (and kept as it is when encoding would not make it smaller);
a body still arriving is encoded as it arrives, each piece flushed so the
client gets what the backend sent (server-sent events stay live), and never
held whole: memory stays flat whatever the size.

Left as they are: HEAD, 1xx, 204, 206 and 304 answers, requests with
``Range``, bodies already encoded, ``Cache-Control: no-transform``, types not in
``types``, and bodies known to be under ``min_size``. An answer that could be
encoded carries ``Vary: Accept-Encoding`` whatever this client accepts; an
encoded one loses ``Content-Length`` when it streams and its strong ``ETag``
becomes weak (the bytes differ from the identity ones). The filter runs
inside the cache, so a stored answer is the encoded variant and a hit sends
it without encoding again.

gzip is the standard library's; brotli and zstd need ``pip install
'simpleproxy[compress]'`` (the ``brotli`` and ``zstandard`` packages).
"""

from __future__ import annotations

import importlib.util
import zlib
from typing import Any, Callable, Iterator

from .config import Compress
from .grammar import OWS, weighted
from .request import Request
from .response import BodyStream, Handler, Response

#: what each encoding needs installed (None: the standard library)
PACKAGES = {"zstd": "zstandard", "br": "brotli", "gzip": None}
#: each encoding's levels
LEVELS = {"zstd": range(1, 23), "br": range(0, 12), "gzip": range(1, 10)}


def available(encoding: str) -> bool:
    package = PACKAGES[encoding]
    return package is None or importlib.util.find_spec(package) is not None


class _Encoder:
    """One body's compressor: ``piece(data)`` encodes and flushes; ``end()`` the last bytes."""

    def __init__(self, encoding: str, level: int) -> None:
        if encoding == "gzip":
            gzip = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: the gzip wrapper (RFC 1952)
            self._compress: Callable[[bytes], bytes] = gzip.compress
            self._flush: Callable[[], bytes] = lambda: gzip.flush(zlib.Z_SYNC_FLUSH)
            self._finish: Callable[[], bytes] = gzip.flush
        elif encoding == "br":
            import brotli

            br = brotli.Compressor(quality=level)
            self._compress, self._flush, self._finish = br.process, br.flush, br.finish
        else:
            import zstandard

            zstd = zstandard.ZstdCompressor(level=level).compressobj()
            self._compress, self._finish = zstd.compress, zstd.flush
            self._flush = lambda: zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def piece(self, data: bytes) -> bytes:
        return self._compress(data) + self._flush()

    def whole(self, data: bytes) -> bytes:
        return self._compress(data) + self._finish()

    def end(self) -> bytes:
        return self._finish()


def choose(value: str | None, offered: tuple[str, ...]) -> str | None:
    """The encoding to send (None: identity): the highest q among ``offered``, the first on a tie.
    Without ``Accept-Encoding`` the answer goes as it is, as browsers always send one."""
    if not value:
        return None
    q_of = weighted(value)
    star = q_of.get("*", 0.0)
    best, best_q = None, 0.0
    for encoding in offered:
        q = q_of.get(encoding, q_of.get("x-gzip", star) if encoding == "gzip" else star)
        if q > best_q:
            best, best_q = encoding, q
    return best


class _Types:
    """Media types to encode: exact (``application/json``), ``text/*``, ``application/*+json``."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.exact = frozenset(p for p in patterns if "*" not in p)
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("/*"))
        self.suffixes = tuple((p.split("*", 1)[0], p.split("*", 1)[1]) for p in patterns if "*+" in p)

    def __contains__(self, content_type: str) -> bool:
        media = content_type.partition(";")[0].strip(OWS).lower()
        return (media in self.exact or media.startswith(self.prefixes)
                or any(media.startswith(head) and media.endswith(tail) for head, tail in self.suffixes))


class CompressedBody(BodyStream):
    """A body still arriving, encoded piece by piece as it is read."""

    __slots__ = ("inner", "encoder", "ended")

    def __init__(self, inner: Any, encoder: _Encoder) -> None:
        super().__init__()
        self.inner, self.encoder, self.ended = inner, encoder, False

    def __iter__(self) -> Iterator[bytes]:
        for data in self.inner:
            out = self.encoder.piece(data)
            if out:
                yield self._give(out)
        self.ended = True
        last = self._give(self.encoder.end())
        if not getattr(self.inner, "error", ""):
            self._stored()  # before the client has the last bytes (see BodyStream._stored)
        yield last

    def _give(self, out: bytes) -> bytes:
        self.sent += len(out)
        if self.sink is not None:
            self.sink.write(out)
        return out

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
        error = getattr(self.inner, "error", "")
        self.finished(self.ended and not error)


class CompressFilter:
    """``filter(request, next)`` for routes with ``compress``; the innermost filter, under the cache."""

    def __init__(self, settings: Compress, where: str = "compress") -> None:
        self.where = where  #: the configuration key, for ``simpleproxy route``
        self.encodings = settings.encodings
        self.levels = dict(settings.levels)
        self.min_size = settings.min_size
        self.types = _Types(settings.types)

    def __call__(self, request: Request, next: Handler) -> Response:
        response = next(request)
        status = response.status
        if status[:3] == "304":  # it may refresh a stored encoded variant (cache/store.py): keep its tag weak
            if choose(request.environ.get("HTTP_ACCEPT_ENCODING"), self.encodings) is not None:
                _weaken(response.headers)
            return response
        if request.method == "HEAD" or status[0] == "1" or status[:3] in ("204", "206"):
            return response
        headers = response.headers
        content_type = length = identity = None
        vary = ""
        for i, (name, value) in enumerate(headers):
            lower = name.lower()
            if lower == "content-type":
                content_type = value
            elif lower == "content-encoding":
                if value.strip(OWS).lower() != "identity":
                    return response  # encoded already
                identity = i
            elif lower == "content-length":
                length = i
            elif lower == "cache-control" and "no-transform" in value.lower():
                return response  # RFC 9111 section 5.2.2.6
            elif lower == "vary":
                vary += value.lower()
        if content_type is None or content_type not in self.types:
            return response
        if length is not None and int(headers[length][1]) < self.min_size:
            return response
        if "accept-encoding" not in vary:
            headers.append(("Vary", "Accept-Encoding"))  # this URL has variants, whoever asks now
        encoding = choose(request.environ.get("HTTP_ACCEPT_ENCODING"), self.encodings)
        if encoding is None or "HTTP_RANGE" in request.environ:
            return response
        encoder = _Encoder(encoding, self.levels[encoding])
        body = response.body
        if type(body) is list:
            data = b"".join(body)
            if len(data) < self.min_size:
                return response
            encoded = encoder.whole(data)
            if len(encoded) >= len(data):
                return response  # nothing gained: the identity bytes, as they are
            response.body = [encoded]
            if length is not None:
                headers[length] = ("Content-Length", str(len(encoded)))
        _weaken(headers)
        if identity is not None:
            headers[identity] = ("Content-Encoding", encoding)
        else:
            headers.append(("Content-Encoding", encoding))
        if type(body) is not list:
            response.body = CompressedBody(body, encoder)
            if length is not None:
                del headers[length]  # unknown until the end: the server sends it chunked
        return response


def _weaken(headers: list[tuple[str, str]]) -> None:
    """A strong ETag made weak: the encoded bytes are not the identity ones (RFC 9110 section 8.8.1)."""
    for i, (name, value) in enumerate(headers):
        if name.lower() == "etag" and not value.lstrip().startswith("W/"):
            headers[i] = (name, "W/" + value.strip(OWS))
