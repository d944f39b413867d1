"""Readers of the edge sections: ``basic_auth``, ``forward_auth``, ``cors`` and ``compress`` (at the
top, or on a route instead of the top's, or ``false`` on a route for none).

A users file is read here, at load and at every reload, so a wrong line is a
configuration error naming the file, the line and what to do, and the running
proxy never meets a hash it cannot check.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from typing import Callable, TypeVar
from urllib.parse import urlsplit

from .config import CORS, BasicAuth, Compress, ForwardAuth, RetryPolicy, Timeouts, UpstreamConfig
from .config_sections import parse_server_url
from .config_walk import Section, to_bool, to_text, token_list
from .grammar import HOP_BY_HOP
from .units import parse_duration, parse_size

#: a bcrypt hash as htpasswd -B and bcrypt write it: $2a$, $2b$ or $2y$, cost, 53 characters
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
T = TypeVar("T")
#: a user name: visible ASCII without a colon (it goes upstream in X-Forwarded-User, a Latin-1 field)
_USER = re.compile(r"[!-9;-~]{1,256}")


def _hash_problem(value: str) -> str:
    """Why a stored password is refused ("" for a bcrypt hash)."""
    if _BCRYPT.fullmatch(value):
        return ""
    if value.startswith("$apr1$"):
        return "is an MD5 (apr1) hash, which a GPU guesses by the billion a second: re-create it with " \
               "'htpasswd -B' or 'simpleproxy hash-password'"
    if value.startswith("{SHA}") or value.startswith("$1$") or value.startswith("$5$") or value.startswith("$6$"):
        return "is not a bcrypt hash (only bcrypt is accepted): re-create it with 'htpasswd -B' or " \
               "'simpleproxy hash-password'"
    return "is not a bcrypt hash (a plain-text or crypt() password?): re-create it with 'htpasswd -B' or " \
           "'simpleproxy hash-password'"


def read_users_file(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """An Apache htpasswd file -> ((name, hash) pairs, problems by line)."""
    users: list[tuple[str, str]] = []
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"]
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not _USER.fullmatch(name):
            problems.append(f"{path} line {number}: not 'name:hash'")
            continue
        why = _hash_problem(stored)
        if why:
            problems.append(f"{path} line {number}: the password of {name!r} {why}")
            continue
        users.append((name, stored))
    return users, problems


def read_on_route(route: Section, key: str, reader: Callable[[Section], T], off: T) -> T | None:
    """A route's edge section: its own (``reader``), ``false`` (``off``: none here, whatever the
    top says), or None when absent (the top's applies)."""
    if route.data.get(key) is False:
        route.taken.add(key)
        return off
    return route.optional(key, reader)


def read_basic_auth(s: Section) -> BasicAuth:
    users: dict[str, str] = {}
    problems_before = len(s.walker.problems)
    if s.has("users") and not isinstance(s.data["users"], dict):
        s.taken.add("users")
        s.walker.error(s.key("users"), "give users as a mapping of name: bcrypt hash")
    elif s.has("users"):
        given = s.section("users")
        for name in list(given.data):
            given.taken.add(name)
            stored = to_text(given.data[name]) if isinstance(given.data[name], str) else ""
            if not _USER.fullmatch(str(name)):
                s.walker.error(given.key(str(name)), "a user name is visible ASCII without a colon")
            elif why := _hash_problem(stored):
                s.walker.error(given.key(str(name)), f"the password {why}")
            else:
                users[str(name)] = stored
        given.done()
    users_file = s.get("users_file", to_text, None)
    if users_file is not None:
        path = Path(users_file)
        if not path.is_absolute():
            path = s.walker.base_dir / path
        found, problems = read_users_file(path)
        for problem in problems:
            s.walker.error(s.key("users_file"), problem)
        for name, stored in found:
            if name in users:
                s.walker.error(s.key("users_file"), f"{name!r} is also in users: give each user once")
            users[name] = stored
    if not users and len(s.walker.problems) == problems_before:
        s.walker.error(s.path, "no users: give users (name: bcrypt hash) or users_file (an htpasswd file)")
    if importlib.util.find_spec("bcrypt") is None:
        s.walker.error(s.path, "basic_auth needs the bcrypt package: pip install 'simpleproxy[auth]'")
    realm = s.get("realm", to_text, "restricted")
    if not re.fullmatch(r"[ !#-\[\]-~]{1,200}", realm):
        s.walker.error(s.key("realm"), "a realm is printable ASCII without quotes or backslashes")
    settings = BasicAuth(
        realm=realm, users=tuple(users.items()), users_file=users_file,
        forward_credentials=s.get("forward_credentials", to_bool, False),
    )
    s.done()
    return settings


#: an origin a cors rule names: scheme://host[:port], the host perhaps "*." and a domain
_ORIGIN = re.compile(r"(https?)://(\*\.)?([a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


def read_cors(s: Section) -> CORS:
    problems_before = len(s.walker.problems)
    origins = []
    for where, value in s.items("origins"):
        text = str(value).strip().lower()
        if text != "*" and not _ORIGIN.fullmatch(text):
            s.walker.error(where, f"{value!r} is not an origin: scheme://host[:port], https://*.example.com, or *")
            continue
        if "*." in text and "." not in text.split("*.", 1)[1]:
            s.walker.error(where, f"{value!r}: a wildcard needs a domain under it (https://*.example.com)")
            continue
        origins.append(text)
    if not origins and not s.walker.problems[problems_before:]:
        s.walker.error(s.key("origins"), "give origins: the sites whose pages may call these routes (or \"*\")")
    if "*" in origins and len(origins) > 1:
        s.walker.error(s.key("origins"), '"*" stands alone')
    credentials = s.get("credentials", to_bool, False)
    headers = token_list(s, "headers", "a field name", star=True)
    expose = token_list(s, "expose", "a field name", star=True)
    if credentials:
        for key, given in (("origins", tuple(origins)), ("headers", headers), ("expose", expose)):
            if given == ("*",):  # Fetch: with credentials, "*" is no wildcard (and any origin may not read)
                s.walker.error(s.key(key), f'"*" cannot go with credentials: true; list the {key}')
    settings = CORS(
        origins=tuple(origins),
        methods=token_list(s, "methods", "a method", str.upper, star=True) if s.has("methods") else CORS.methods,
        headers=headers, expose=expose, credentials=credentials,
        max_age=s.get("max_age", parse_duration, CORS.max_age),
    )
    if not 0 <= settings.max_age <= 86400:
        s.walker.error(s.key("max_age"), "from 0 to a day (browsers cap it lower still)")
    s.done()
    return settings


#: fields the proxy frames or rebuilds itself: never copied from a verdict
_NOT_COPIED = HOP_BY_HOP | {"host", "content-length", "content-type", "x-forwarded-for", "x-forwarded-proto",
                            "x-forwarded-host", "x-forwarded-user", "x-real-ip", "x-request-id"}


def read_forward_auth(s: Section) -> ForwardAuth:
    url = s.get("url", to_text, "")
    timeout = s.get("timeout", parse_duration, 2.0)
    if not 0 < timeout < 3600:
        s.walker.error(s.key("timeout"), "a duration over 0 and under an hour")
        timeout = 2.0
    upstream, target = None, "/"
    if not url:
        s.walker.error(s.path, "give url: the auth service's verify endpoint, e.g. http://127.0.0.1:9091/api/verify")
    else:
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise ValueError("the scheme must be http:// or https://")
            server = parse_server_url(f"{parts.scheme}://{parts.netloc}")
            if re.search(r"[\x00-\x20\x7f#]", parts.path + parts.query) or parts.fragment:
                raise ValueError("the path and query must be visible ASCII, without a fragment")
        except ValueError as exc:
            s.walker.error(s.key("url"), f"{url!r}: {exc}".replace(f"{url!r}: {url!r}: ", f"{url!r}: "))
        else:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            # One server, no retries (a verdict is asked once), the timeout for each phase.
            upstream = UpstreamConfig(name=f"{s.path} ({server.name})", servers=(server,),
                                      timeouts=Timeouts(connect=timeout, read=timeout, total=timeout),
                                      retries=RetryPolicy(count=0))
    copy = token_list(s, "copy_headers", "a field name")
    for name in set(copy) & _NOT_COPIED:
        s.walker.error(s.key("copy_headers"), f"{name} is the proxy's to set, not the auth service's")
    settings = ForwardAuth(url=url, target=target, upstream=upstream, copy_headers=copy, timeout=timeout)
    s.done()
    return settings


_MEDIA = re.compile(r"[a-z0-9!#$&^_.+-]+/(\*|\*\+[a-z0-9!#$&^_.+-]+|[a-z0-9!#$&^_.+-]+)")


def read_compress_key(s: Section) -> Compress | None:
    """``compress`` in ``s`` (the top or a route): absent (None), ``true`` (the defaults), ``false``
    (none here, whatever the top says), or a mapping."""
    value = s.data.get("compress")
    if isinstance(value, bool):
        s.taken.add("compress")
        return read_compress(Section(s.walker, {}, s.key("compress"))) if value else Compress(enabled=False)
    return s.optional("compress", read_compress)


def read_compress(s: Section) -> Compress:
    from .compression import LEVELS, available

    defaults = Compress()
    if s.has("encodings"):
        encodings = []
        for where, value in s.items("encodings"):
            name = str(value).strip().lower()
            if name not in LEVELS:
                s.walker.error(where, f"{value!r}: the encodings are zstd, br and gzip")
            elif not available(name):
                s.walker.error(where, f"{name} needs pip install 'simpleproxy[compress]'")
            else:
                encodings.append(name)
        if not encodings and s.has("encodings"):
            s.walker.error(s.key("encodings"), "give at least one encoding")
    else:  # the defaults that this installation has (gzip always)
        encodings = [name for name in defaults.encodings if available(name)]
    types = defaults.types
    if s.has("types"):
        found = []
        for where, value in s.items("types"):
            text = str(value).strip().lower()
            if not _MEDIA.fullmatch(text):
                s.walker.error(where, f"{value!r} is not a media type (text/html, text/*, application/*+json)")
            found.append(text)
        types = tuple(found)
    levels = dict(defaults.levels)
    if s.has("level"):
        level = s.data["level"]
        s.taken.add("level")
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
            s.walker.error(s.key("level"), "a level from 1 (fastest) to 9 (smallest), for every encoding")
        else:
            levels = {name: level for name in levels}
    settings = Compress(encodings=tuple(encodings), min_size=s.get("min_size", parse_size, defaults.min_size),
                        types=types, levels=tuple(levels.items()))
    s.done()
    return settings
