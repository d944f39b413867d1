"""``simpleproxy demo``: two small backends and a proxy in front, on this machine only.

It needs nothing but the package: the backends are standard-library HTTP
servers on ephemeral 127.0.0.1 ports, each answering with its name and what
it received, so the curl lines printed at start show host routing, path
routing (with the prefix stripped) and round robin.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .config import Config, config_from_dict
from .units import parse_address

log = logging.getLogger("simpleproxy")


def _handler(name: str) -> type[BaseHTTPRequestHandler]:
    class DemoHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"demo-{name}"
        wbufsize = 65536  # one write per response: no Nagle / delayed-ACK stall
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body_in = self.rfile.read(length) if length else b""
            lines = [
                f"backend {name} answered",
                f"  {self.command} {self.path}",
                f"  Host: {self.headers.get('Host')}",
                f"  X-Forwarded-For: {self.headers.get('X-Forwarded-For')}",
                f"  X-Forwarded-Proto: {self.headers.get('X-Forwarded-Proto')}",
                f"  body: {len(body_in)} bytes",
            ]
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:  # the proxy logs requests
            pass

    return DemoHandler


def start_backends() -> tuple[list[ThreadingHTTPServer], list[str]]:
    """Start backends A and B on free ports; -> (servers, their URLs)."""
    servers, urls = [], []
    for name in ("A", "B"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(name))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name=f"demo-{name}", daemon=True).start()
        servers.append(server)
        urls.append(f"http://127.0.0.1:{server.server_address[1]}")
    return servers, urls


def demo_config(listen: str, url_a: str, url_b: str) -> Config:
    return config_from_dict(
        {
            "listen": {"http": listen},
            "upstreams": {
                "alpha": {"servers": [{"url": url_a}]},
                "beta": {"servers": [{"url": url_b}]},
                "both": {"servers": [{"url": url_a}, {"url": url_b}]},
            },
            "routes": [
                {"host": "a.localhost", "upstream": "alpha"},
                {"path": "/b", "upstream": "beta", "strip_prefix": True},
                {"path": "/", "upstream": "both"},
            ],
        },
        source="<demo>",
    )


def run_demo(listen: str) -> int:
    from .cli import serve

    parse_address(listen)  # a bad --listen fails here, with its own message
    servers, (url_a, url_b) = start_backends()
    config = demo_config(listen, url_a, url_b)
    proxy = f"http://{listen}"
    print(
        f"""simpleproxy demo: backend A on {url_a}, backend B on {url_b}, proxy on {proxy}
Try, in another terminal:
  curl {proxy}/                          # round robin: run it twice, A then B
  curl {proxy}/b/hello                   # path routing: B receives /hello (prefix stripped)
  curl -H 'Host: a.localhost' {proxy}/   # host routing: always A
  curl -X POST -d 'x=1' {proxy}/b/form   # bodies and any method pass through
Ctrl-C stops.""",
        flush=True,
    )
    try:
        return serve(config, "demo")
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
