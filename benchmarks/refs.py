"""Reference servers for benchmarks/run.py, each on waitress with simpleproxy's own settings.

    python benchmarks/refs.py hello THREADS           # the ceiling: a WSGI app answering from memory
    python benchmarks/refs.py werkzeug THREADS URL    # werkzeug's ProxyMiddleware in front of URL

Prints the bound port on stdout, then serves until killed.
"""

from __future__ import annotations

import logging
import sys

from waitress.server import create_server
from werkzeug.middleware.http_proxy import ProxyMiddleware

from simpleproxy.config import config_from_dict
from simpleproxy.frontend import waitress_settings

MIB = 1024 * 1024
BODIES = {"1k": b"x" * 1024, "10m": b"x" * (10 * MIB)}


def hello(environ, start_response):  # type: ignore[no-untyped-def]
    body = BODIES.get(environ["PATH_INFO"].rpartition("/")[2], b"")
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def not_found(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


def main(argv: list[str]) -> None:
    kind, threads = argv[0], int(argv[1])
    app = hello if kind == "hello" else ProxyMiddleware(not_found, {"/bench": {"target": argv[2]}})
    # The same waitress settings simpleproxy runs with, so the comparison is fair.
    config = config_from_dict({
        "listen": {"http": "127.0.0.1:0"}, "server": {"threads": threads},
        "routes": [{"respond": {}}], "log": {"access": "off"},
    })
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # as simpleproxy does
    # waitress_settings leaves the sockets out (simpleproxy binds its own): name the address here
    server = create_server(app, listen="127.0.0.1:0", **waitress_settings(config))
    print(server.effective_port, flush=True)
    server.run()


if __name__ == "__main__":
    main(sys.argv[1:])
