"""Custom error pages (``errors:``), for the proxy's own answers and, with ``intercept``, a backend's.

A page is read at load (a reload reads it again) and kept in memory; at an
answer ``{status}``, ``{reason}`` and ``{request_id}`` are replaced in it, and
nothing else (an HTML page's CSS braces stay as they are). A client that
prefers JSON (``Accept: application/json`` above ``text/html``) gets a JSON
body with the same facts instead. An intercepted backend answer keeps its
status and the fields that carry meaning for it (``Retry-After``,
``WWW-Authenticate``, ``Allow``); its body is dropped (the upstream
connection is closed rather than read to the end), as nginx's
``proxy_intercept_errors`` does.
"""

from __future__ import annotations

import json
from typing import Any

from .config_routes import ErrorPages
from .grammar import weighted
from .request import Request
from .response import Response

#: what an intercepted answer keeps of the backend's fields
_KEPT = frozenset(("retry-after", "www-authenticate", "allow", "content-range"))


def wants_json(environ: dict[str, Any]) -> bool:
    accept = environ.get("HTTP_ACCEPT")
    if not accept or "json" not in accept:
        return False
    q = weighted(accept)
    json_q = q.get("application/json", 0.0)
    return json_q > 0 and json_q > max(q.get("text/html", 0.0), q.get("*/*", 0.0) if "text/html" not in q else 0.0)


class ErrorPageMaker:
    """One route's (or the top level's) pages."""

    def __init__(self, pages: ErrorPages) -> None:
        self.pages = dict(pages.pages)
        self.intercept = pages.intercept

    def make(self, status: int, reason: str, detail: str, request_id: str, environ: dict[str, Any]
             ) -> tuple[str, bytes] | None:
        """(content type, body) of the page for ``status``; None when it has none."""
        page = self.pages.get(status)
        if page is None:
            return None
        if wants_json(environ):
            body = json.dumps({"status": status, "error": reason, "detail": detail, "request_id": request_id})
            return "application/json", (body + "\n").encode("utf-8")
        text = page.content.replace("{status}", str(status)).replace("{reason}", reason)
        return page.content_type, text.replace("{request_id}", request_id).encode("utf-8")

    def intercepted(self, request: Request, response: Response) -> Response:
        """A backend's answer replaced by the page for its status, when there is one."""
        status = int(response.status[:3])
        if not self.intercept or status not in self.pages:
            return response
        made = self.make(status, response.status[4:], "from the backend", request.get_request_id(), request.environ)
        if made is None:
            return response
        content_type, body = made
        close = getattr(response.body, "close", None)
        if close is not None:
            close()
        kept = [(n, v) for n, v in response.headers if n.lower() in _KEPT]
        page = Response(response.status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *kept],
                        [] if request.method == "HEAD" else [body], response.upstream)
        page.cache, page.limit, page.answer = response.cache, response.limit, "error_page"
        page.own_headers = response.own_headers
        return page
