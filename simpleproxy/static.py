"""A route's ``static``: files from a directory, as nginx's ``root`` and Caddy's ``file_server``.

What the client asks for becomes a file name only through a check that
refuses, on every platform alike, anything that could name a file outside
the root or another file than it seems to: encoded slashes and backslashes,
NUL and other controls, ``:`` (Windows drive letters and ``::$DATA``
streams), Windows device names (``con``, ``nul.txt``...), names ending in a
dot or a space (Windows drops those), and dot-files (``.git``, ``.env``; only
``.well-known`` is served). Dot segments are gone already (request.py). A
symbolic link (or a Windows junction) whose target leaves the root is refused
unless ``follow_symlinks``: each segment below the root is looked at with
``lstat`` as the path is walked (one system call a segment; the root itself
was resolved at load), and only a link is resolved. A refused name is
answered 404, as a missing file is; directories are never listed.

Answers carry ``ETag`` (modification time and size) and ``Last-Modified``,
and honour ``If-None-Match``, ``If-Modified-Since``, ``If-Match``,
``If-Unmodified-Since``, ``Range`` (one or several, cut as the cache cuts
them) with ``If-Range``. A file is sent through the WSGI server's
``wsgi.file_wrapper`` where it has one (waitress sends from the file without a
Python loop), else in 256 KiB reads.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from typing import IO, Any, Iterator
from urllib.parse import unquote

from werkzeug.http import http_date

from .cache.policy import not_modified, parse_http_date
from .cache.ranges import RangePlan, byte_ranges, if_range_holds
from .compression import choose
from .config_routes import Static
from .errors import MethodNotAllowed, NoRoute
from .grammar import split_list
from .memo import Memo
from .request import Request
from .response import BodyStream, Response

BLOCK = 256 * 1024
#: the file beside an original that holds it encoded
SUFFIXES = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}
#: Windows device names: opening one there reads a device, whatever the directory
_DEVICE = re.compile(r"(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)(\..*)?", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: the web's types, fixed here: the platform's tables differ (Windows' registry has served .js as text/plain)
TYPES = {
    ".html": "text/html", ".htm": "text/html", ".css": "text/css", ".js": "text/javascript",
    ".mjs": "text/javascript", ".json": "application/json", ".map": "application/json",
    ".webmanifest": "application/manifest+json", ".txt": "text/plain", ".xml": "application/xml",
    ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".gif": "image/gif", ".webp": "image/webp", ".avif": "image/avif", ".ico": "image/x-icon",
    ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf",
    ".wasm": "application/wasm", ".pdf": "application/pdf", ".mp4": "video/mp4", ".webm": "video/webm",
    ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".wav": "audio/wav", ".zip": "application/zip",
    ".gz": "application/gzip", ".csv": "text/csv", ".md": "text/markdown",
}
_TEXT = ("text/", "application/json", "application/manifest+json", "application/xml", "image/svg+xml")


def _type_of(suffix: str) -> str:
    kind = TYPES.get(suffix) or mimetypes.guess_type("file" + suffix, strict=False)[0] or "application/octet-stream"
    return kind + "; charset=utf-8" if kind.startswith(_TEXT) else kind


_types: Memo[str, str] = Memo(_type_of, 1024)


def content_type(name: str) -> str:
    """The Content-Type of a file by its name's suffix."""
    return _types[os.path.splitext(name)[1].lower()]


def refused_segment(segment: str) -> str:
    """Why a decoded path segment names no file here ("" when it may)."""
    if not segment:
        return ""
    if "/" in segment or "\\" in segment:
        return "an encoded slash or a backslash"
    if _CONTROL.search(segment):
        return "a control character"
    if ":" in segment:
        return "a colon (a drive letter or a stream name on Windows)"
    if segment.startswith(".") and segment != ".well-known":
        return "a dot-file"
    if segment.endswith(".") or segment.endswith(" "):
        return "a name ending in a dot or a space"
    if _DEVICE.fullmatch(segment):
        return "a Windows device name"
    return ""


class StaticFiles:
    """The terminal of a route with ``static:``."""

    def __init__(self, static: Static, where: str = "static") -> None:
        self.where = where
        self.root = static.root
        self._root = str(static.root)  #: resolved at load (config_routes.read_static)
        self.index = static.index
        self.precompressed = static.precompressed
        self.cache_control = static.cache_control
        self.fallback = static.fallback
        self.follow_symlinks = static.follow_symlinks

    def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("files are read with GET or HEAD", headers=(("Allow", "GET, HEAD"),))
        wanted = request.route.upstream_path(request.path) if request.route is not None else request.path
        kind, found = self.find(wanted)
        if kind == "directory":  # the client's URL without its slash: relative links need it
            location = request.path + "/" + request.query
            response = Response("301 Moved Permanently", [("Location", location), ("Content-Length", "0")], [])
            response.answer = "static"
            return response
        if kind != "file":
            if self.fallback is None:
                raise NoRoute("no such file" if kind == "missing" else f"no such file ({found})")
            kind, found = self.find(self.fallback)
            if kind != "file":
                raise NoRoute("no such file (and the fallback is gone)")
        return self.answer(request, found)

    def find(self, wanted: str) -> tuple[str, str]:
        """What a URL path names: ("file", its path), ("directory", its path) when it names one
        without the trailing slash, ("refused", why), or ("missing", "")."""
        path = self._root
        info = None
        for raw in wanted.split("/"):
            if not raw:
                continue
            try:
                segment = unquote(raw, errors="strict")
            except UnicodeDecodeError:
                return "refused", "not UTF-8"
            why = refused_segment(segment)
            if why:
                return "refused", why
            path += os.sep + segment
            info = self._look(path)
            if info is None:
                return "missing", ""
        if info is None:  # the root itself
            info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            if not wanted.endswith("/"):
                return "directory", path
            for name in self.index:
                candidate = path + os.sep + name
                found = self._look(candidate)
                if found is not None and stat.S_ISREG(found.st_mode):
                    return "file", candidate
            return "missing", ""  # no listings
        return ("file", path) if stat.S_ISREG(info.st_mode) else ("missing", "")

    def _look(self, path: str) -> os.stat_result | None:
        """``path``'s status (its link followed), or None when it is not there, or is a link that
        leaves the root while links may not."""
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode) or getattr(info, "st_reparse_tag", None):  # a link, a junction
                if not self.follow_symlinks:
                    real = os.path.realpath(path)
                    if os.path.commonpath((real, self._root)) != self._root:
                        return None
                info = os.stat(path)
            return info
        except (OSError, ValueError):  # not there, a loop, a name the platform refuses
            return None

    def answer(self, request: Request, path: str) -> Response:
        environ = request.environ
        headers = [("Content-Type", content_type(path)), ("Accept-Ranges", "bytes")]
        if self.precompressed:
            headers.append(("Vary", "Accept-Encoding"))
            coding = choose(environ.get("HTTP_ACCEPT_ENCODING"), self.precompressed)
            if coding is not None:
                encoded = path + SUFFIXES[coding]
                found = self._look(encoded)
                if found is not None and stat.S_ISREG(found.st_mode):
                    path = encoded
                    headers.append(("Content-Encoding", coding))
        try:
            file: IO[bytes] | None = open(path, "rb") if request.method == "GET" else None
            info = os.fstat(file.fileno()) if file is not None else os.stat(path)
        except OSError:
            raise NoRoute("no such file") from None
        size = info.st_size
        etag = f'"{info.st_mtime_ns:x}-{size:x}"'
        modified = _http_dates[int(info.st_mtime)]
        headers += [("ETag", etag), ("Last-Modified", modified)]
        if self.cache_control:
            headers.append(("Cache-Control", self.cache_control))
        status = "200 OK"
        plan = None
        refusal = _precondition(environ, etag, info.st_mtime)
        if refusal is not None:
            status = refusal
        elif "HTTP_RANGE" in environ and if_range_holds(environ.get("HTTP_IF_RANGE"), etag, modified, info.st_mtime + 1):
            spans = byte_ranges(environ["HTTP_RANGE"], size)
            if spans is not None:
                plan = RangePlan(spans, size, headers[0][1])
                status = plan.status
        if refusal is not None:  # 304, 412: fields only
            if file is not None:
                file.close()
            keep = ("etag", "last-modified", "cache-control", "vary") if status[0] == "3" else ()
            response = Response(status, [(n, v) for n, v in headers if n.lower() in keep] if keep else
                                [("Content-Length", "0")], [])
        elif plan is not None:
            ranges: Any = [] if file is None else FileBody(file, plan.pieces, plan.end)
            response = Response(status, plan.headers(headers), ranges)
            if plan.status[0] == "4" and file is not None:
                file.close()
                response.body = []
        else:
            headers.append(("Content-Length", str(size)))
            body: Any = []
            if file is not None:
                wrapper = environ.get("wsgi.file_wrapper")
                body = wrapper(file, BLOCK) if wrapper is not None else FileBody(file, [(b"", 0, size - 1)])
            response = Response(status, headers, body)
        response.answer = "static"
        return response


#: Last-Modified by modification time (whole seconds): files keep theirs, so the text is made once
_http_dates: Memo[int, str] = Memo(http_date, 4096)


def _precondition(environ: dict[str, Any], etag: str, mtime: float) -> str | None:
    """The status a conditional request gets instead of the file: 412 (RFC 9110 section 13.2.2
    order: If-Match, If-Unmodified-Since), 304; None to send it."""
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if if_match.strip() != "*" and etag not in [tag.strip() for tag in split_list(if_match)]:  # strongly
            return "412 Precondition Failed"
    else:
        since = parse_http_date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))
        if since is not None and int(mtime) > since:
            return "412 Precondition Failed"
    if not_modified(environ, etag, int(mtime)):
        return "304 Not Modified"
    return None


class FileBody(BodyStream):
    """Pieces of a file read a block at a time as they are sent, each after the bytes that go before it
    (a multipart range's delimiter and fields), then ``end``: the whole file for WSGI servers without
    ``wsgi.file_wrapper``, or a range answer (its RangePlan's pieces)."""

    __slots__ = ("file", "pieces", "end", "done")

    def __init__(self, file: IO[bytes], pieces: list[tuple[bytes, int, int]], end: bytes = b"") -> None:
        super().__init__()
        self.file, self.pieces, self.end, self.done = file, pieces, end, False

    def __iter__(self) -> Iterator[bytes]:
        for head, first, last in self.pieces:
            if head:
                self.sent += len(head)
                yield head
            self.file.seek(first)
            left = last - first + 1
            while left > 0:
                data = self.file.read(min(BLOCK, left))
                if not data:
                    return  # the file shrank: the server sees the body end short, and closes
                left -= len(data)
                self.sent += len(data)
                yield data
        if self.end:
            self.sent += len(self.end)
            yield self.end
        self.done = True

    def close(self) -> None:
        self.file.close()
        self.finished(self.done)
