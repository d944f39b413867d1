"""The incoming request: read once from the WSGI environ, validated, normalised.

Routing matches on the normalised path and the upstream receives that same
path, so what the proxy decided on and what the backend acts on never differ
(``/public/../admin`` is ``/admin`` to both). Everything that would let the two
differ, or that frames the body ambiguously, is refused here with 400 before
any backend is chosen.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from . import forks
from .errors import BadRequest, LengthRequired, TooLarge
from .memo import Memo

# RFC 3986 section 2.3: only these may be decoded without changing meaning.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# Controls, space, DEL and '#' never belong in a request target (RFC 9112 section 3.2).
_BAD_TARGET_CHAR = re.compile(r"[\x00-\x20\x7f#]")
# RFC 9110 section 7.2: uri-host [ ":" port ]; reg-name kept to what DNS allows.
_HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=-]*)(?::(\d{0,5}))?")
_id_counter = itertools.count()
_id_prefix = ""
_id_generation = -1


def normalize_path(path: str) -> str:
    """RFC 3986 normalisation of an absolute path, as routing and upstream both see it.

    Percent-escapes of unreserved characters are decoded (so ``%2e%2e`` is
    ``..``), other escapes are upper-cased and kept (``%2F`` stays an escaped
    slash: it never separates segments, so it cannot climb out of one), then dot
    segments are removed (section 5.2.4). Raises ``ValueError`` on a malformed
    escape or an escaped NUL.
    """
    if "%" in path:
        path = _normalize_escapes(path)
    if "/." not in path:
        return path
    return _remove_dot_segments(path)


def _normalize_escapes(path: str) -> str:
    pieces = path.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        code = piece[:2]
        if len(code) != 2 or code[0] not in _HEX or code[1] not in _HEX:
            raise ValueError(f"malformed percent-escape %{code}")
        char = chr(int(code, 16))
        if char == "\x00":
            raise ValueError("an escaped NUL (%00) is not allowed in a path")
        out.append((char if char in _UNRESERVED else "%" + code.upper()) + piece[2:])
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")  # "/a/b/.." is "/a/": the directory, not the file
    return "/" + "/".join(kept)


def ambiguous_path(path: str, allow_encoded_slashes: bool = False) -> str | None:
    """What in a normalised path a lenient backend could read as another path, or None.

    Routing and upstream agree on the path (see :func:`normalize_path`), but
    backends differ in what they decode afterwards: many decode ``%2F`` and
    ``%5C`` into separators, take ``\\`` for ``/`` (Windows servers), accept
    overlong UTF-8 (``%C0%AE`` for ``.``), or strip ``;`` parameters before
    removing dot segments (Tomcat reads ``/api/..;/secret`` as ``/secret``). Any
    of these lets a request routed to ``/api/`` be served from outside it.
    ``allow_encoded_slashes`` lets ``%2F`` and ``%5C`` through, for backends
    that need them (GitLab's project paths); the rest never have a use.
    """
    if "%" not in path and "\\" not in path and ";" not in path:
        return None  # the common path: nothing to look at
    if not allow_encoded_slashes:
        if "%2F" in path:
            return "an encoded slash (%2F)"
        if "%5C" in path or "\\" in path:
            return "a backslash"
    if ";" in path or "%3B" in path:
        for segment in path.split("/"):
            if segment.replace("%3B", ";").partition(";")[0] in (".", "..") and segment not in (".", ".."):
                return "a ';' parameter on a dot segment"
    try:
        unquote_to_bytes(path.encode("latin-1")).decode("utf-8")
    except UnicodeDecodeError:
        return "an overlong or invalid UTF-8 sequence"
    return None


def refuse_ambiguous_path(path: str, route: Any) -> None:
    """BadRequest for a path :func:`ambiguous_path` finds (``server.reject_ambiguous_paths``)."""
    reason = ambiguous_path(path, route.allow_encoded_slashes)
    if reason is not None:
        raise BadRequest(f"ambiguous path: {reason}, which a backend could read outside the route")


def split_host(value: str) -> tuple[str, str] | None:
    """A Host field -> (lower-case name without port or trailing dot, the field as given).

    Returns None when the field is not ``host[:port]`` (a list of hosts, a
    userinfo, a path...), which the caller answers with 400.
    """
    match = _HOST_HEADER.fullmatch(value)
    if match is None or not match.group(1) or (match.group(2) is not None and not match.group(2)):
        return None
    return match.group(1).lower().rstrip("."), value


class Request:
    """What the filters and the upstream handler need to know about one request."""

    __slots__ = (
        "environ", "method", "host", "authority", "path", "query", "client", "client_ip", "scheme",
        "content_length", "started", "request_id", "route", "user", "authenticated", "fields",
    )

    def __init__(self, environ: dict[str, Any], max_body: int, started: float = 0.0) -> None:
        self.environ = environ
        self.started = started or time.perf_counter()
        self.request_id = ""
        self.route: Any = None
        #: the user basic_auth verified ("" without): sent upstream as X-Forwarded-User, logged
        self.user = ""
        #: basic_auth or forward_auth let it through: the cache treats it as a request with credentials
        self.authenticated = False
        #: fields the proxy itself adds to what it sends upstream (forward_auth's), after the client's
        #: and whatever the client's Connection field names
        self.fields: tuple[tuple[str, str], ...] = ()
        self.method: str = environ["REQUEST_METHOD"]
        self.client: str = environ.get("REMOTE_ADDR", "")  #: the direct peer
        #: the client as the proxy trusts it: the peer, or what trusted proxies say (the app sets it)
        self.client_ip: str = self.client
        self.scheme: str = environ.get("wsgi.url_scheme", "http")
        self.path, self.query, self.host, self.authority = locate(environ)
        self.content_length = _content_length(environ, max_body)

    def derive(self, environ: dict[str, Any]) -> Request:
        """The same request with other fields, as the cache sends it to revalidate."""
        other = Request.__new__(Request)
        for name in Request.__slots__:
            setattr(other, name, getattr(self, name))
        other.environ = environ
        other.started = time.perf_counter()
        return other

    def get_request_id(self) -> str:
        """A short id for this request, made only when something needs it."""
        if not self.request_id:
            self.request_id = self.new_id()
        return self.request_id

    @staticmethod
    def new_id() -> str:
        """12 hex digits: a random prefix drawn once per process, then a counter.

        Unique rather than secret (it is logged and returned); a system call
        per request for os.urandom cost as much as reading the request target.
        """
        global _id_generation, _id_prefix
        if _id_generation != forks.generation:  # a forked child draws its own prefix
            _id_prefix, _id_generation = os.urandom(3).hex(), forks.generation
        return f"{_id_prefix}{next(_id_counter) & 0xFFFFFF:06x}"


#: Targets and Host fields repeat from one request to the next (memo.py; the parsers are below)
_targets: Memo[str, tuple[str, str, str | None]] = Memo(lambda target: _split_target(target))
_hosts: Memo[str, tuple[str, str] | None] = Memo(lambda authority: split_host(authority))


def locate(environ: dict[str, Any]) -> tuple[str, str, str, str]:
    """-> (normalised path, "?query" or "", host, authority) of a request; BadRequest if malformed.

    Both parses are memoised: a busy proxy sees the same targets and Host values
    again and again.
    """
    # waitress, uWSGI and mod_wsgi pass the raw target as REQUEST_URI, gunicorn as RAW_URI;
    # PATH_INFO is already percent-decoded, so it is only the last resort.
    target = environ.get("REQUEST_URI") or environ.get("RAW_URI") or _target_from_cgi(environ)
    path, query, authority = _targets[target]
    if authority is None:
        authority = environ.get("HTTP_HOST")
    if authority is None:
        if environ.get("SERVER_PROTOCOL") == "HTTP/1.1":
            raise BadRequest("missing Host header")  # RFC 9112 section 3.2
        return path, query, "", ""
    parsed = _hosts[authority]
    if parsed is None:
        raise BadRequest("invalid Host header")
    host, authority = parsed  # type: ignore[misc]
    return path, query, host, authority


def _target_from_cgi(environ: dict[str, Any]) -> str:
    """Rebuild a target for servers that do not pass the raw one (no REQUEST_URI)."""
    raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = quote(raw.encode("latin-1"), safe="/;=,:@!$&'()*+~") or "/"
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def _split_target(target: str) -> tuple[str, str, str | None]:
    """-> (normalised path, "?query" or "", authority from absolute-form or None)."""
    if _BAD_TARGET_CHAR.search(target):
        raise BadRequest("invalid character in request target")
    authority = None
    if not target.startswith("/"):
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise BadRequest("request target must be a path or an http(s) URL")
        authority, slash, rest = rest.partition("/")
        target = slash + rest if slash else "/" + rest
        if not target.startswith("/"):  # "http://host?q" has an empty path
            target = "/" + target
    path, mark, query = target.partition("?")
    try:
        path = normalize_path(path)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return path, mark + query, authority


def _content_length(environ: dict[str, Any], max_body: int) -> int:
    """The body's length; refuses every framing a backend could read differently.

    waitress de-chunks bodies itself and drops Transfer-Encoding, so a
    Transfer-Encoding here comes from another WSGI server (or HTTP/1.0).
    """
    length_text = environ.get("CONTENT_LENGTH") or ""
    if "HTTP_TRANSFER_ENCODING" in environ:
        if length_text:
            raise BadRequest("both Content-Length and Transfer-Encoding")  # RFC 9112 6.1
        if environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if not environ.get("wsgi.input_terminated"):
            raise LengthRequired("chunked request body without a length")
        return -1  # length unknown: read to the end (bounded by max_body)
    if not length_text:
        return 0
    if not (length_text.isascii() and length_text.isdigit()):
        raise BadRequest("invalid Content-Length")
    length = int(length_text)
    if length > max_body:
        raise TooLarge(f"request body over {max_body} bytes")
    return length
