"""CIDR allow and deny lists, global and per route, on the client address the proxy trusts."""

from __future__ import annotations

import ipaddress

from ..config import AccessRules
from ..errors import Forbidden
from ..memo import Memo
from ..request import Request
from ..response import Handler, Response


class AccessFilter:
    """403 unless the client is in ``allow`` (when given) and not in ``deny``; answers memoised per address."""

    def __init__(self, rules: AccessRules, where: str = "access") -> None:
        """``where``: the configuration key the rules come from (``access``, ``routes[2].access``)."""
        self.where = where
        self.allow = rules.allow
        self.deny = rules.deny
        self._known: Memo[str, bool] = Memo(self._decide)

    def permits(self, address: str) -> bool:
        return self._known[address]

    def _decide(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return not self.allow  # not an address (a UNIX socket peer): only an allow list refuses it
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        return (not self.allow or any(ip in net for net in self.allow)) and not any(ip in net for net in self.deny)

    def __call__(self, request: Request, next: Handler) -> Response:
        if not self.permits(request.client_ip):
            raise Forbidden("access denied for this client address")
        return next(request)
