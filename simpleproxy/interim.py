"""The interim-response contract: how a backend's ``103 Early Hints`` reaches the client first.

WSGI has one response per request, so a server speaking WSGI cannot be asked
to send an informational (1xx) response before it. The front end
(simpleproxy/frontend/) puts a :class:`InterimWriter` into the environ of each
HTTP/1.1 request under :data:`INTERIM`; the upstream handler calls it for each
``103`` a backend sends before its final answer, and the front end writes it
on the client's connection at once (RFC 9110 section 15.2, RFC 8297). The
browser can start fetching the hinted styles and scripts while the backend is
still building the page.

Interim answers are never stored by the cache (they are not responses to
keep), ``100 Continue`` is the front end's own to send (it answers a client's
``Expect`` itself; the proxy never forwards ``Expect``), and other 1xx from a
backend are dropped. HTTP/1.0 clients, which cannot read a 1xx, get no writer;
under another WSGI server the key is absent and the hints are dropped.
"""

from __future__ import annotations

from typing import Protocol

#: the environ key of an :class:`InterimWriter`
INTERIM = "simpleproxy.interim"


class InterimWriter(Protocol):
    def __call__(self, status: str, headers: list[tuple[str, str]]) -> bool:
        """Write an interim response (``"103 Early Hints"``) to the client now; False when it can no
        longer go (the final response has started, or the call is not from the request's thread)."""
        ...
