"""What a route may say beyond host, path and upstream: matchers, header rules, redirects,
rewrites, static files and error pages; their settings and their readers.

Everything a request will meet is checked here, at load, with the key path:
a regular expression that does not compile, a capture a redirect names that
the route's ``path_regex`` lacks, a header rule that would forge a field the
proxy writes itself, a static root that is not a directory, an error page
that cannot be read. The running proxy never finds out about a mistake by
meeting a request.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config_walk import Section, network_list, to_bool, to_statuses, to_text, token_list
from .grammar import HOP_BY_HOP, is_token

#: the values a template may name: ``{client_ip}`` and so on (``{upstream}`` on the response side only)
PLACEHOLDERS = ("client_ip", "host", "scheme", "path", "query", "request_id", "route", "method")
RESPONSE_PLACEHOLDERS = PLACEHOLDERS + ("upstream", "status")
#: ``{client_ip}``: one of the names above in a template (not ``${name}``, a capture)
PLACEHOLDER = re.compile(r"(?<!\$)\{([a-z_]+)\}")
#: ``$1`` or ``${name}``: a capture of the route's path_regex in a redirect or rewrite
CAPTURE = re.compile(r"\$(?:([0-9])|\{([A-Za-z_][A-Za-z0-9_]*)\})")
#: fields the proxy writes to backends itself (headers.py); a rule setting one would be overwritten
#: or, worse, believed: named in the error with the setting that does the job
_PROXY_WRITES = {
    "host": "the route's host_header sets it",
    "x-forwarded-for": "the proxy builds it (headers.trusted_proxies decides what it keeps)",
    "x-forwarded-proto": "the proxy builds it (headers.trusted_proxies decides what it keeps)",
    "x-forwarded-host": "the proxy builds it (headers.trusted_proxies decides what it keeps)",
    "forwarded": "the proxy builds it (headers.forwarded)",
    "x-real-ip": "the proxy sets it to the client's address",
    "via": "the proxy writes it (headers.via)",
    "x-request-id": "the proxy sends its own request id",
    "x-forwarded-user": "basic_auth sets it to the verified user",
    "x-client-cert-subject": "the proxy sets it from a verified client certificate",
    "content-length": "the proxy frames the body itself",
}
#: the redirect statuses (RFC 9110 section 15.4)
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: what ``security_headers: true`` adds to a response that lacks them
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "SAMEORIGIN"),
)
#: an error page is kept in memory: bounded
MAX_ERROR_PAGE = 1024 * 1024
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


@dataclass(frozen=True)
class Match:
    """Request matchers beside host and path; every one given must hold."""

    methods: tuple[str, ...] = ()  #: upper case
    headers: tuple[tuple[str, str], ...] = ()  #: (field name, exact value or ``~regex``)
    query: tuple[tuple[str, str], ...] = ()  #: (parameter, exact value or ``~regex``)
    clients: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    path_regex: str | None = None

    @property
    def count(self) -> int:
        """How many matchers there are: among routes with one prefix, more are tried first."""
        return (bool(self.methods) + len(self.headers) + len(self.query) + bool(self.clients)
                + (self.path_regex is not None))


@dataclass(frozen=True)
class HeaderRules:
    """``{set: {...}, add: {...}, remove: [...]}``: values are templates (``{client_ip}``)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()  #: lower case

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True)
class Redirect:
    to: str  #: a template, with ``$1`` / ``${name}`` captures of the route's path_regex
    status: int = 308


@dataclass(frozen=True)
class Rewrite:
    regex: str
    replace: str


@dataclass(frozen=True)
class Static:
    root: Path  #: absolute
    index: tuple[str, ...] = ("index.html",)
    precompressed: tuple[str, ...] = ()  #: codings whose files (``.br``, ``.gz``) sit beside the originals
    cache_control: str | None = None
    fallback: str | None = None  #: a file under root answered for a path that names nothing (``/index.html``)
    follow_symlinks: bool = False


@dataclass(frozen=True)
class ErrorPage:
    content: str  #: the page, with ``{request_id}``, ``{status}``, ``{reason}`` still in it
    content_type: str
    source: str  #: the file it was read from, for ``simpleproxy check``


@dataclass(frozen=True)
class ErrorPages:
    pages: tuple[tuple[int, ErrorPage], ...] = field(default=())
    intercept: bool = False  #: also for a backend's answers of those statuses (nginx proxy_intercept_errors)


def _scalar(value: object) -> str | None:
    """A YAML scalar as the text of a value (``1`` is ``"1"``); None for a mapping, a list or a boolean."""
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


def _field(value: object, where: str) -> str:
    name = str(value).strip()
    if not is_token(name):
        raise ValueError(f"{value!r} is not a field name")
    lower = name.lower()
    if lower in HOP_BY_HOP or lower == "transfer-encoding":
        raise ValueError(f"{name} is hop-by-hop: it describes one connection and is never forwarded")
    if where == "request" and lower in _PROXY_WRITES:
        raise ValueError(f"{name} cannot be set by a rule: {_PROXY_WRITES[lower]}")
    if where == "response" and lower == "content-length":
        raise ValueError("Content-Length cannot be set by a rule: the body decides it")
    return name


def template_problem(text: str, allowed: tuple[str, ...]) -> str:
    """Why a template is refused ("" when it is not): an unknown ``{placeholder}``."""
    for name in PLACEHOLDER.findall(text):
        if name not in allowed:
            return f"unknown placeholder {{{name}}}; known: " + ", ".join(f"{{{n}}}" for n in allowed)
    return ""


def read_header_rules(s: Section, where: str) -> HeaderRules:
    """``where``: "request" or "response" (what may be set differs, and so do the placeholders)."""
    allowed = PLACEHOLDERS if where == "request" else RESPONSE_PLACEHOLDERS
    found: dict[str, list[tuple[str, str]]] = {"set": [], "add": []}
    for kind, pairs in found.items():
        sub = s.section(kind)
        for name, value in sub.data.items():
            sub.taken.add(name)
            try:
                field_ = _field(name, where)
                text = _scalar(value)
                if text is None or not _VALUE.fullmatch(text):
                    raise ValueError(f"expected a field value (text without line breaks), got {value!r}")
                problem = template_problem(text, allowed)
                if problem:
                    raise ValueError(problem)
            except ValueError as exc:
                s.walker.error(sub.key(str(name)), str(exc))
                continue
            pairs.append((field_, text))
    removed = [name.lower() for name in s.each("remove", lambda value: _field(value, where))]
    s.done()
    return HeaderRules(tuple(found["set"]), tuple(found["add"]), tuple(removed))


def _index_name(value: object) -> str:
    name = str(value)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{value!r}: a file name in the directory asked for")
    return name


def _precompressed(value: object) -> str:
    if value not in ("br", "zstd", "gzip"):
        raise ValueError(f"expected br, zstd or gzip, got {value!r}")
    return str(value)


def _pattern(value: object) -> str:
    text = to_text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} does not compile ({exc})") from None
    return text


def _values(s: Section, key: str, name_check: bool) -> tuple[tuple[str, str], ...]:
    sub = s.section(key)
    pairs = []
    for name, value in sub.data.items():
        sub.taken.add(name)
        where = sub.key(str(name))
        if name_check and not is_token(str(name)):
            s.walker.error(where, f"{name!r} is not a field name")
            continue
        text = _scalar(value)
        if text is None:
            s.walker.error(where, f"expected a value, or ~ and a regular expression, got {value!r}")
            continue
        if text.startswith("~"):
            try:
                _pattern(text[1:])
            except ValueError as exc:
                s.walker.error(where, str(exc))
                continue
        pairs.append((str(name), text))
    return tuple(pairs)


def read_match(s: Section) -> Match:
    methods = token_list(s, "methods", "a method", case=str.upper)
    clients = network_list(s, "clients")
    path_regex = s.get("path_regex", _pattern, None)
    match = Match(methods, _values(s, "headers", True), _values(s, "query", False), clients, path_regex)
    s.done()
    if not match.count:
        s.walker.error(s.path, "give at least one of methods, headers, query, clients, path_regex")
    return match


def _captures(text: str, path_regex: str | None) -> str:
    """Why ``$1`` / ``${name}`` in ``text`` name nothing the route's path_regex captures ("" if fine)."""
    found = CAPTURE.findall(text)
    if not found:
        return ""
    if path_regex is None:
        return "uses captures ($1, ${name}) but the route has no match.path_regex"
    compiled = re.compile(path_regex)
    for number, name in found:
        if number and int(number) > compiled.groups:
            return f"${number}: match.path_regex has {compiled.groups} group(s)"
        if name and name not in compiled.groupindex:
            return f"${{{name}}}: match.path_regex has no group of that name"
    return ""


def read_redirect(s: Section, path_regex: str | None) -> Redirect:
    to = s.get("to", to_text, "")
    if not s.has("to"):
        s.walker.error(s.key("to"), "a redirect needs 'to', a URL or a path (placeholders like {path} allowed)")
    problem = template_problem(to, PLACEHOLDERS) or _captures(to, path_regex)
    if problem:
        s.walker.error(s.key("to"), problem)
    if any(c in to for c in "\r\n\x00 "):
        s.walker.error(s.key("to"), "a URL has no spaces or line breaks")
    status = s.get("status", _redirect_status, 308)
    s.done()
    return Redirect(to, status)


def _redirect_status(value: object) -> int:
    if value not in REDIRECT_STATUSES:
        raise ValueError(f"expected one of {', '.join(map(str, REDIRECT_STATUSES))}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def read_rewrite(s: Section, path_regex: str | None) -> Rewrite:
    regex = s.get("regex", _pattern, "")
    replace = s.get("replace", _origin_form_template, "/")
    if not s.has("regex") or not s.has("replace"):
        s.walker.error(s.path, "a rewrite needs 'regex' and 'replace' (replace: \"/api/$1\")")
    elif regex:
        groups = re.compile(regex)
        for number, name in CAPTURE.findall(replace):
            if (number and int(number) > groups.groups) or (name and name not in groups.groupindex):
                s.walker.error(s.key("replace"), f"${number or '{' + name + '}'}: the rewrite's regex has no such group")
    s.done()
    return Rewrite(regex, replace)


def _origin_form_template(value: object) -> str:
    text = to_text(value)
    if not text.startswith("/") and not text.startswith("$"):
        raise ValueError(f"{text!r}: the result is a path and starts with /")
    if "?" in text or "#" in text or any(c in text for c in " \r\n\x00"):
        raise ValueError(f"{text!r}: a path, without query, fragment or spaces")
    return text


def to_prefix(value: object) -> str:
    """``add_prefix: /api``: a path of its own, added before what the backend receives."""
    text = to_text(value)
    if not text.startswith("/") or text.endswith("/") or "?" in text or "#" in text or "//" in text \
            or "/./" in text + "/" or "/../" in text + "/" or any(c in text for c in " \r\n\x00\\"):
        raise ValueError(f"{text!r}: a path like /api (no trailing slash, query or dot segments)")
    return text


def read_static(s: Section) -> Static:
    root = Path(s.get("root", to_text, "."))
    if not s.has("root"):
        s.walker.error(s.key("root"), "a static route needs 'root', the directory it serves")
    if not root.is_absolute():
        root = s.walker.base_dir / root
    if s.has("root") and not root.is_dir():
        s.walker.error(s.key("root"), f"{str(root)!r} is not a directory")
    index = s.each("index", _index_name) if s.has("index") else ["index.html"]
    precompressed = s.each("precompressed", _precompressed)
    cache_control = s.get("cache_control", to_text, None)
    fallback = s.get("fallback", to_text, None)
    if fallback is not None and not fallback.startswith("/"):
        s.walker.error(s.key("fallback"), f"{fallback!r}: a path under root, starting with / (/index.html)")
    elif fallback is not None and root.is_dir() and not (root / fallback.lstrip("/")).is_file():
        s.walker.error(s.key("fallback"), f"{fallback!r} is not a file under {str(root)!r}")
    follow = s.get("follow_symlinks", to_bool, False)
    s.done()
    return Static(root.resolve() if root.is_dir() else root, tuple(index), tuple(precompressed), cache_control,
                  fallback, follow)


def read_error_pages(s: Section) -> ErrorPages:
    pages: list[tuple[int, ErrorPage]] = []
    seen: set[int] = set()
    intercept = s.get("intercept", to_bool, False)
    for name, value in s.data.items():
        if name == "intercept":
            continue
        s.taken.add(name)
        where = s.key(str(name))
        try:
            statuses = to_statuses(name)
        except ValueError as exc:
            s.walker.error(where, str(exc))
            continue
        if any(code < 400 for code in statuses):
            s.walker.error(where, "error pages are for 4xx and 5xx answers")
            continue
        page = _read_page(s, where, value)
        if page is None:
            continue
        for code in statuses:
            if code in seen:
                s.walker.error(where, f"{code} has a page already")
            seen.add(code)
            pages.append((code, page))
    s.done()
    return ErrorPages(tuple(sorted(pages, key=lambda pair: pair[0])), intercept)


def _read_page(s: Section, where: str, value: object) -> ErrorPage | None:
    if not isinstance(value, str) or not value:
        s.walker.error(where, f"expected the path of a page (./errors/404.html), got {value!r}")
        return None
    path = Path(value)
    if not path.is_absolute():
        path = s.walker.base_dir / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        s.walker.error(where, f"cannot read {str(path)!r}: {exc.strerror or exc}")
        return None
    if len(data) > MAX_ERROR_PAGE:
        s.walker.error(where, f"{str(path)!r} is over {MAX_ERROR_PAGE // 1024} KiB: an error page is kept in memory")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        s.walker.error(where, f"{str(path)!r} is not UTF-8 text")
        return None
    suffix = path.suffix.lower()
    content_type = {".html": "text/html", ".htm": "text/html", ".json": "application/json"}.get(suffix, "text/plain")
    return ErrorPage(text, content_type + "; charset=utf-8", str(path))
