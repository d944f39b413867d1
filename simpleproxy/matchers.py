"""A route's request matchers (``match:``): methods, fields, query parameters, clients, a path regex.

Compiled once per configuration. A route whose matchers refuse a request is
passed over, and the next route with a matching prefix is tried (routing.py).
:meth:`Matcher.refusal` says which matcher refused and why, for ``simpleproxy
route``; :meth:`Matcher.__call__` answers the same question with less work.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable
from urllib.parse import parse_qsl

from .config_routes import Match
from .grammar import environ_key


def _value_test(expected: str) -> Callable[[str], bool]:
    """An exact value, or ``~regex`` searched for in the value."""
    if expected.startswith("~"):
        search = re.compile(expected[1:]).search
        return lambda value: search(value) is not None
    return lambda value: value == expected


class Matcher:
    """``matcher(request) -> bool`` for one route's ``match:``."""

    __slots__ = ("match", "methods", "fields", "params", "clients", "path_regex")

    def __init__(self, match: Match) -> None:
        self.match = match
        self.methods = frozenset(match.methods)
        #: (environ key, field name, test)
        self.fields = tuple((environ_key(name), name, _value_test(value)) for name, value in match.headers)
        self.params = tuple((name, _value_test(value)) for name, value in match.query)
        self.clients = match.clients
        self.path_regex = re.compile(match.path_regex) if match.path_regex is not None else None

    def __call__(self, request: Any) -> bool:
        return not self.refusal(request)

    def refusal(self, request: Any, methods: bool = True) -> str:
        """Why the request is not this route's ("" when it is), naming the matcher; ``methods``
        False: leaving the method aside (would another method have been taken?)."""
        if methods and self.methods and request.method not in self.methods:
            return f"method {request.method} is not one of {', '.join(sorted(self.methods))}"
        environ = request.environ
        for key, name, test in self.fields:
            value = environ.get(key)
            if value is None:
                return f"no {name} field"
            if not test(value):
                return f"{name} is {value!r}"
        if self.params:
            pairs = parse_qsl(request.query[1:], keep_blank_values=True)
            for name, test in self.params:
                values = [value for key, value in pairs if key == name]
                if not values:
                    return f"no {name} query parameter"
                if not any(test(value) for value in values):
                    return f"query {name}={values[0]!r}"
        if self.clients:
            try:
                address = ipaddress.ip_address(request.client_ip)
            except ValueError:
                return f"client {request.client_ip!r} is not an address"
            if not any(address in network for network in self.clients):
                return f"client {request.client_ip} is not in {', '.join(map(str, self.clients))}"
        if self.path_regex is not None and self.path_regex.search(request.path) is None:
            return f"path does not match {self.path_regex.pattern!r}"
        return ""
