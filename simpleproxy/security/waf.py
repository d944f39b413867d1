"""WAF rules: conditions on the request compiled once into closures, actions deny / allow / log.

A rule is ``{name, match, action}``. ``match`` is one condition: a field with
a matcher (``path: {prefix: /admin}``), or ``all`` / ``any`` / ``not`` over
conditions. Fields:

- ``method``, ``path`` (normalised, as routed), ``query`` (as sent),
  ``args`` (the query percent-decoded twice, ``+`` as space: what an injection
  looks like after the evasions a backend will undo), ``target`` (the raw
  request target, decoded the same way), ``user_agent``, ``header:NAME``
  (an absent header matches nothing but ``{absent: true}``), ``body_size``.
- Matchers: ``exact``, ``prefix``, ``contains``, ``regex`` (compiled at load;
  a bad one is a config error naming its key), ``absent: true``, and for
  ``body_size`` ``over: 10MiB``. Text matchers may add ``ignore_case: true``.

Rules run in order, the global ones first: the first ``deny`` answers 403, an
``allow`` ends the evaluation (later rules, the baseline included, are
skipped), ``log`` logs and goes on. The baseline set (:data:`BASELINE`) runs
after the configured rules when switched on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import unquote_plus

from ..errors import WAFDenied
from ..grammar import environ_key
from ..request import Request
from ..response import Handler, Response

log = logging.getLogger("simpleproxy.waf")

Condition = Callable[["Facts"], bool]


class Facts:
    """What rules look at, each computed on first use only."""

    __slots__ = ("request", "_args", "_target")

    def __init__(self, request: Request) -> None:
        self.request = request
        self._args: str | None = None
        self._target: str | None = None

    @property
    def args(self) -> str:
        if self._args is None:
            self._args = _decoded(self.request.query[1:])
        return self._args

    @property
    def target(self) -> str:
        if self._target is None:
            self._target = _decoded(self.request.environ.get("REQUEST_URI", "") or self.request.path)
        return self._target


def _decoded(text: str) -> str:
    """Percent-decoded twice (double-encoding evasion), ``+`` as space, NULs made visible."""
    once = unquote_plus(text, errors="replace")
    return unquote_plus(once, errors="replace").replace("\x00", "\\0")


def field_reader(name: str) -> Callable[[Facts], str | None]:
    if name == "method":
        return lambda facts: facts.request.method
    if name == "path":
        return lambda facts: facts.request.path
    if name == "query":
        return lambda facts: facts.request.query[1:]
    if name == "args":
        return lambda facts: facts.args
    if name == "target":
        return lambda facts: facts.target
    if name == "user_agent":
        return lambda facts: facts.request.environ.get("HTTP_USER_AGENT")
    if name.startswith("header:"):
        key = environ_key(name[7:])
        return lambda facts: facts.request.environ.get(key)
    raise ValueError(f"unknown field {name!r}: use method, path, query, args, target, user_agent, header:NAME or body_size")


def compile_condition(spec: Any, where: str) -> Condition:
    """A condition mapping -> a predicate; ``ValueError`` names the key at fault."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"{where}: a condition is one key: a field, or all / any / not")
    (name, value), = spec.items()
    if name in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise ValueError(f"{where}.{name}: expected a list of conditions")
        parts = [compile_condition(item, f"{where}.{name}[{i}]") for i, item in enumerate(value)]
        return (lambda facts: all(p(facts) for p in parts)) if name == "all" else (lambda facts: any(p(facts) for p in parts))
    if name == "not":
        inner = compile_condition(value, f"{where}.not")
        return lambda facts: not inner(facts)
    if name == "body_size":
        return _body_size(value, f"{where}.body_size")
    try:
        read = field_reader(str(name))
    except ValueError as exc:
        raise ValueError(f"{where}.{name}: {exc}") from None
    return _matcher(read, value, f"{where}.{name}")


def _body_size(value: Any, where: str) -> Condition:
    from ..units import parse_size

    if not isinstance(value, dict) or set(value) != {"over"}:
        raise ValueError(f"{where}: expected {{over: SIZE}}")
    try:
        limit = parse_size(value["over"])
    except ValueError as exc:
        raise ValueError(f"{where}.over: {exc}") from None
    return lambda facts: facts.request.content_length > limit


def _matcher(read: Callable[[Facts], str | None], spec: Any, where: str) -> Condition:
    if isinstance(spec, str):
        spec = {"exact": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a matcher like {{prefix: /admin}} or {{regex: ...}}")
    spec = dict(spec)
    ignore_case = spec.pop("ignore_case", False)
    if spec == {"absent": True}:
        return lambda facts: read(facts) is None
    if len(spec) != 1:
        raise ValueError(f"{where}: give one of exact, prefix, contains, regex, absent")
    (kind, text), = spec.items()
    if kind not in ("exact", "prefix", "contains", "regex") or not isinstance(text, str):
        raise ValueError(f"{where}.{kind}: expected exact, prefix, contains or regex with text")
    if kind == "regex":
        try:
            pattern = re.compile(text, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            raise ValueError(f"{where}.regex: does not compile ({exc})") from None
        return lambda facts: (value := read(facts)) is not None and pattern.search(value) is not None
    needle = text.lower() if ignore_case else text

    def fold(facts: Facts) -> str | None:
        value = read(facts)
        return value.lower() if ignore_case and value is not None else value

    if kind == "exact":
        return lambda facts: fold(facts) == needle
    if kind == "prefix":
        return lambda facts: (value := fold(facts)) is not None and value.startswith(needle)
    return lambda facts: (value := fold(facts)) is not None and needle in value


@dataclass(frozen=True)
class Rule:
    name: str
    test: Condition
    action: str  #: deny, allow or log


class WAFFilter:
    """``filter(request, next)`` over an ordered rule list."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    def verdict(self, request: Request) -> tuple[str, str]:
        """-> (deny / allow / pass, the deciding rule's name)."""
        facts = Facts(request)
        for rule in self.rules:
            if rule.test(facts):
                if rule.action == "log":
                    log.warning("waf rule %s matched %s %s (client %s, request id %s)", rule.name, request.method,
                                request.path, request.client_ip, request.get_request_id())
                    continue
                return rule.action, rule.name
        return "pass", ""

    def __call__(self, request: Request, next: Handler) -> Response:
        action, name = self.verdict(request)
        if action == "deny":
            log.warning("waf rule %s denied %s %s (client %s, request id %s)", name, request.method, request.path,
                        request.client_ip, request.get_request_id())
            raise WAFDenied(name)
        return next(request)


# --------------------------------------------------------------------------- the baseline

_I = "(?i)"
#: The baseline rule set: the obvious attacks, in the spirit of the OWASP Core Rule Set's first
#: paranoia level, tuned not to refuse ordinary traffic (tests/unit/test_waf.py holds both sides).
BASELINE: list[tuple[str, dict]] = [
    ("baseline-path-traversal", {"any": [
        {"args": {"regex": r"(?:^|[=/\\&;])\.\.(?:[/\\]|$)|%2e%2e|\.\.%2f"}},
        {"target": {"regex": r"(?:^|[/\\])\.\.(?:[/\\]|$)"}},
        {"args": {"regex": _I + r"(?:/etc/(?:passwd|shadow|hosts)|c:\\+windows\\+|/proc/self/|\\0)"}},
    ]}),
    ("baseline-sql-injection", {"any": [
        # Every repetition is bounded or cannot overlap its neighbour: these run on attacker input
        # under the GIL, so a pattern that backtracks badly would stall the whole process.
        {"args": {"regex": _I + r"\bunion(?:\s|/\*[^*]{0,40}\*/|\(){1,20}(?:all(?:\s|/\*[^*]{0,40}\*/){1,20})?select\b"}},
        {"args": {"regex": _I + r"['\"`]\s{0,20}(?:or|and)\b\s{0,20}['\"`]?\w{1,60}['\"`]?\s{0,20}(?:=|<|>|\blike\b)"}},
        {"args": {"regex": _I + r";\s{0,20}(?:drop\s+(?:table|database|schema|view|index)|delete\s+from|insert\s+into|"
                                r"update\s+\w{1,64}\s+set|alter\s+table|truncate\s+table|create\s+(?:table|user|database)|"
                                r"exec(?:ute)?\s+\w)\b"}},
        {"args": {"regex": _I + r"\b(?:sleep|benchmark|pg_sleep)\s{0,20}\(\s{0,20}\d|\bwaitfor\s+delay\b"}},
        {"args": {"regex": _I + r"\b(?:information_schema|pg_catalog|sysobjects|mysql\.user)\b"}},
        {"args": {"regex": _I + r"['\"`]\s{0,20}(?:--|#|/\*)"}},
    ]}),
    ("baseline-script-injection", {"any": [
        {field: {"regex": _I + r"<\s{0,20}(?:script|iframe|object|embed)\b|javascript\s{0,20}:"
                          r"|<[^<>]{0,256}\bon(?:error|load|click|mouseover|focus|toggle|\w{2,20})\s{0,20}="
                          r"|['\"]\s{0,20}on(?:error|load|click|mouseover|focus|toggle)\s{0,20}="}}
        for field in ("args", "header:Referer")
    ]}),
    ("baseline-command-injection", {"any": [
        # A separator, then a command that is not a common word (or cat/id with what follows them
        # in an attack), and not a parameter name (``&&id=2``).
        {"args": {"regex": _I + r"(?:;|&&|\|\|?)\s{0,20}(?:wget|curl|bash|sh|zsh|nc|ncat|netcat|python[23]?|perl|"
                                r"php|ruby|uname|whoami|chmod|rm\s+-)\b(?!\s{0,20}=)"
                                r"|(?:;|&&|\|\|?)\s{0,20}cat\s{1,20}[/~.$]"
                                r"|(?:;|&&|\|\|?)\s{0,20}id\s{0,20}(?:$|[;|&`])"
                                r"|`[^`]{0,100}\b(?:id|whoami|uname|cat|curl|wget|nc)\b|\$\(\s{0,20}\w"}},
        {"header:User-Agent": {"regex": r"\(\)\s{0,20}\{\s{0,20}:;\s{0,20}\}"}},  # Shellshock
    ]}),
    ("baseline-scanners", {"any": [
        {"user_agent": {"regex": _I + r"\b(?:sqlmap|nikto|nmap|masscan|acunetix|nessus|wpscan|dirbuster|gobuster|nuclei|zgrab|openvas|w3af)\b"}},
        # On the decoded target: /.git%2Fconfig is /.git/config to a backend that decodes %2F.
        {"target": {"regex": _I + r"^[^?]*(?:(?:^|/)(?:\.env|\.git|\.svn|\.hg|\.aws|\.ssh|\.htpasswd|\.DS_Store)(?:/|$|\?)"
                                  r"|/(?:wp-login\.php|xmlrpc\.php|phpmyadmin|phpinfo\.php)(?:/|$|\?)|\.(?:bak|sql|swp|old)(?:$|\?))"}},
    ]}),
]


def baseline_rules() -> list[Rule]:
    return [Rule(name, compile_condition(spec, name), "deny") for name, spec in BASELINE]


def waf_filter(overall: Any, route: Any, baseline: list[Rule]) -> WAFFilter | None:
    """The filter for a route: the global rules, the route's, then the baseline if either asks for it."""
    rules: list[Rule] = []
    for settings in (overall, route):
        if settings is not None:
            rules += [Rule(r.name, compile_condition(r.match, r.name), r.action) for r in settings.rules]
    if any(settings is not None and settings.baseline for settings in (overall, route)):
        rules += baseline
    return WAFFilter(rules) if rules else None
