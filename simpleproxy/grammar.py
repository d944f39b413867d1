"""HTTP's field grammar (RFC 9110 section 5), written once: tokens, lists, quoted strings,
field names as WSGI environ keys and back, and the hop-by-hop fields.

Everything here is a pure function or a constant. The request head parser
(frontend/parser.py) uses narrower classes built from :data:`TCHAR` for its
fast path; the cache's structured-field parsing (RFC 8941 tokens) is not HTTP
token grammar and stays in cache/policy.py.
"""

from __future__ import annotations

import re

#: RFC 9110 section 5.6.2 ``tchar``, as the inside of a regular-expression character class
TCHAR = r"!#$%&'*+.^_`|~0-9A-Za-z-"
#: a whole ``token``
TOKEN = re.compile(f"[{TCHAR}]+")

#: RFC 9110 section 7.6.1 (and RFC 2616's ``Keep-Alive``, ``Proxy-Connection``, ``Trailers``):
#: fields for one connection, never forwarded; lower-case
HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
     "te", "trailer", "trailers", "transfer-encoding", "upgrade")
)

#: the two request fields CGI and WSGI give without the ``HTTP_`` prefix
_UNPREFIXED = frozenset(("CONTENT_TYPE", "CONTENT_LENGTH"))
#: RFC 9110 section 5.6.3: optional whitespace is spaces and tabs, nothing else (``str.strip()``
#: would also take a no-break space, and ``Transfer-Encoding: chunked\xa0`` must not read as chunked)
OWS = " \t"


def is_token(text: str) -> bool:
    return TOKEN.fullmatch(text) is not None


def environ_key(field: str) -> str:
    """A request field name -> its WSGI environ key: ``X-Api-Key`` -> ``HTTP_X_API_KEY``,
    ``Content-Type`` -> ``CONTENT_TYPE``."""
    key = field.upper().replace("-", "_")
    return key if key in _UNPREFIXED else "HTTP_" + key


def capitalized(field: str) -> str:
    """``x-request-id`` -> ``X-Request-Id``: every dash-separated part capitalised, as waitress
    writes field names (and as backends usually see them)."""
    return "-".join([part.capitalize() for part in field.split("-")])


def field_name(key: str) -> str | None:
    """A WSGI environ key -> its field name (``HTTP_X_API_KEY`` -> ``X-Api-Key``); None if it is
    not a request field."""
    if key.startswith("HTTP_"):
        return capitalized(key[5:].replace("_", "-"))
    if key in _UNPREFIXED:
        return capitalized(key.replace("_", "-"))
    return None


def split_list(value: str) -> list[str]:
    """An RFC 9110 section 5.6.1 list: members split on commas outside quoted strings, trimmed
    of OWS, empties dropped. Quoted members keep their quotes (:func:`unquote` them)."""
    if '"' not in value:
        return [item for part in value.split(",") if (item := part.strip(OWS))]
    # One pass, linear in the length; an unclosed quote runs to the end, so a
    # broken 'private="x' still reads as private rather than vanishing.
    members, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == ",":
            members.append(value[start:i])
            start = i + 1
    members.append(value[start:])
    return [item for member in members if (item := member.strip(OWS))]


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


def unquote(text: str) -> str:
    """A ``quoted-string``'s content, its quoted pairs undone (RFC 9110 section 5.6.4); anything
    else as it is. An unclosed quote runs to the end."""
    if not text.startswith('"'):
        return text
    inner = _QUOTED.match(text).group(1)  # type: ignore[union-attr]  # always matches a '"'
    return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner


def tokens(value: str) -> frozenset[str]:
    """The members of a comma list of tokens (``Connection``, ``TE``, ``Transfer-Encoding``),
    lower-cased and trimmed, empties dropped. Fast: a token list has no quoted strings."""
    return frozenset(member for part in value.lower().split(",") if (member := part.strip(OWS)))


def connection_keys(connection: str) -> frozenset[str]:
    """The environ keys of the request fields a ``Connection`` header names: they are for this
    hop only (RFC 9110 section 7.6.1). Never the body's ``Content-Type`` or ``Content-Length``,
    which frame and describe what is forwarded, whatever a client names."""
    return frozenset(key for name in tokens(connection) if (key := environ_key(name)) not in _UNPREFIXED)


def weighted(value: str) -> dict[str, float]:
    """A list of tokens with quality values (RFC 9110 section 12.4.2: ``Accept-Encoding``,
    ``Accept-Language``) -> {lower-case token: q}; the first mention of a token counts, and a member
    with an unreadable q-value is left out."""
    found: dict[str, float] = {}
    for member in split_list(value):
        token, _, parameters = member.partition(";")
        q = 1.0
        for parameter in parameters.split(";"):
            name, _, text = parameter.strip(OWS).partition("=")
            if name.strip(OWS).lower() == "q":
                try:
                    q = float(text.strip(OWS))
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            found.setdefault(token.strip(OWS).lower(), q)
    return found


def cookie_value(cookies: str, name: str) -> str | None:
    """One cookie's value in a ``Cookie`` field (RFC 6265 section 5.4); None when it is not there."""
    for pair in cookies.split(";"):
        key, eq, value = pair.strip(OWS).partition("=")
        if eq and key == name:
            return value
    return None
