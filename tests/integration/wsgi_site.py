"""A small existing WSGI site with simpleproxy in front as middleware, for WSGI servers to import.

``gunicorn wsgi_site:application`` with ``SIMPLEPROXY_CONFIG`` set: the
configuration's routes are proxied, every other request reaches :func:`site`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from simpleproxy import ProxyMiddleware


def site(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The wrapped application: says that it answered, and what it was asked."""
    body = f"site answered {environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def __getattr__(name: str) -> Any:
    if name == "application":  # built in the worker that asks, from the environment it was given
        return ProxyMiddleware(site, os.environ["SIMPLEPROXY_CONFIG"])
    raise AttributeError(name)
