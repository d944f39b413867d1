"""compress on real sockets: each encoding round-trips, the skip cases, streaming in flat memory, the cache."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import brotli
import pytest
import zstandard

from conftest import LONG_TIMEOUT, read_request, single_upstream
from simpleproxy import compression

TEXT = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b", "c"]} for i in range(400)]).encode()
DECODE = {"gzip": gzip.decompress, "br": brotli.decompress,
          "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)}


class TextBackend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Answers)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Answers(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests += 1  # type: ignore[attr-defined]
        name = self.path.rpartition("/")[2]
        fields = {"json": ("application/json", TEXT, {"ETag": '"v1"'}),
                  "cached": ("application/json", TEXT, {"Cache-Control": "max-age=60"}),
                  "small": ("text/plain", b"tiny", {}),
                  "png": ("image/png", TEXT, {}),
                  "encoded": ("text/plain", gzip.compress(TEXT), {"Content-Encoding": "gzip"}),
                  "keep": ("text/plain", TEXT, {"Cache-Control": "no-transform"})}
        if name == "empty":
            self.send_response(204)
            self.end_headers()
            return
        if name == "stream":  # chunked, no length: pieces as they come
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(50):
                piece = f"data: event {i} {'x' * 100}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        content_type, body, extra = fields[name]
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def text_backend() -> Any:
    made = TextBackend()
    yield made
    made.shutdown()
    made.server_close()


def get(p: Any, path: str, encoding: str | None = "gzip, deflate, br, zstd", method: str = "GET",
        **fields: str) -> tuple[Any, bytes]:
    headers = {**({"Accept-Encoding": encoding} if encoding is not None else {}), **fields}
    return p.request(method, path, headers=headers)


@pytest.mark.parametrize("encoding", ["zstd", "br", "gzip"])
def test_each_encoding_decodes_to_the_original(text_backend, proxy, encoding) -> None:
    p = proxy({**single_upstream(text_backend.url), "compress": True})
    answer, body = get(p, "/json", f"{encoding}, identity;q=0.1")
    assert answer.getheader("Content-Encoding") == encoding and DECODE[encoding](body) == TEXT
    assert answer.getheader("Content-Length") in (None, str(len(body))) and len(body) < len(TEXT) / 4  # chunked if streamed
    assert answer.getheader("Vary") == "Accept-Encoding" and answer.getheader("ETag") == 'W/"v1"'


def test_q_values_and_identity(text_backend, proxy) -> None:
    p = proxy({**single_upstream(text_backend.url), "compress": {"encodings": ["gzip", "br"], "level": 6}})
    assert get(p, "/json", "gzip;q=0.5, br;q=0.9")[0].getheader("Content-Encoding") == "br"
    assert get(p, "/json", "zstd")[0].getheader("Content-Encoding") is None  # not offered here
    plain, body = get(p, "/json", "identity")
    assert plain.getheader("Content-Encoding") is None and body == TEXT
    assert plain.getheader("Vary") == "Accept-Encoding" and plain.getheader("ETag") == '"v1"'  # a variant, untouched


@pytest.mark.parametrize(("path", "method", "fields"), [
    ("/json", "HEAD", {}), ("/empty", "GET", {}), ("/small", "GET", {}), ("/png", "GET", {}),
    ("/encoded", "GET", {}), ("/keep", "GET", {}), ("/json", "GET", {"Range": "bytes=0-9"}),
], ids=["HEAD", "204", "under min_size", "a type not listed", "encoded already", "no-transform", "a range"])
def test_what_is_left_as_it_is(text_backend, proxy, path, method, fields) -> None:
    p = proxy({**single_upstream(text_backend.url), "compress": True})
    answer, body = get(p, path, method=method, **fields)
    assert answer.getheader("Content-Encoding") == ("gzip" if path == "/encoded" else None)
    if path == "/encoded":
        assert gzip.decompress(body) == TEXT  # passed through, not encoded twice


def test_a_streamed_body_is_encoded_piece_by_piece(text_backend, proxy) -> None:
    p = proxy({**single_upstream(text_backend.url), "compress": True})
    answer, body = get(p, "/stream", "gzip")
    assert answer.getheader("Content-Encoding") == "gzip" and answer.getheader("Content-Length") is None
    assert gzip.decompress(body) == b"".join(f"data: event {i} {'x' * 100}\n\n".encode() for i in range(50))


def test_a_cached_variant_is_served_without_encoding_again(text_backend, proxy, monkeypatch) -> None:
    made = []
    real = compression._Encoder
    monkeypatch.setattr(compression, "_Encoder", lambda *args: made.append(args) or real(*args))
    p = proxy({**single_upstream(text_backend.url, cache=True), "compress": True})
    first, body = get(p, "/cached", "gzip")
    second, again = get(p, "/cached", "gzip")
    assert gzip.decompress(body) == gzip.decompress(again) == TEXT
    assert "hit" in second.getheader("Cache-Status") and second.getheader("Content-Encoding") == "gzip"
    assert len(made) == 1 and text_backend.requests == 1
    other, plain = get(p, "/cached", "identity")  # another Accept-Encoding: another variant (Vary)
    assert other.getheader("Content-Encoding") is None and plain == TEXT and text_backend.requests == 2


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc (Linux)")
def test_fifty_mebibytes_stream_through_in_flat_memory(raw_backend, run_process) -> None:
    size = 50 * 1024 * 1024
    line = b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % i for i in range(1000))

    def script(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        while sent < size:
            piece = line[: size - sent]
            conn.sendall(piece)
            sent += len(piece)

    backend = raw_backend(script)
    proc = run_process(f"upstreams: {{app: {{servers: ['{backend.url}']}}}}\nroutes: [{{upstream: app}}]\n"
                       "compress: true\nlog: {access: 'off'}\n")
    assert proc.started, "".join(proc.said)
    before = _peak_rss_kib(proc.proc.pid)
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=LONG_TIMEOUT)
    conn.request("GET", "/big", headers={"Accept-Encoding": "gzip"})
    answer = conn.getresponse()
    assert answer.getheader("Content-Encoding") == "gzip"
    decoder, total = zlib.decompressobj(31), 0
    while chunk := answer.read(65536):
        total += len(decoder.decompress(chunk))
    conn.close()
    assert total == size
    grown = _peak_rss_kib(proc.proc.pid) - before
    assert grown < 20 * 1024, f"the proxy's peak RSS grew by {grown} KiB for a {size >> 20} MiB body"
    print(f"peak RSS grew {grown} KiB while 50 MiB went through gzip", file=sys.stderr)


def test_a_body_held_whole_is_encoded_at_once_with_its_length(proxy) -> None:
    p = proxy({"routes": [{"respond": {"status": 200, "body": TEXT.decode(), "content_type": "application/json"}}],
               "compress": {"encodings": ["gzip"]}})
    answer, body = get(p, "/", "gzip")
    assert answer.getheader("Content-Encoding") == "gzip" and int(answer.getheader("Content-Length")) == len(body)
    assert gzip.decompress(body) == TEXT


def test_identity_is_replaced_and_a_304_keeps_the_tag_weak(raw_backend, proxy) -> None:
    def script(conn: socket.socket) -> None:
        while head := read_request(conn):
            if b"if-none-match" in head.lower():
                conn.sendall(b'HTTP/1.1 304 Not Modified\r\nETag: "abc"\r\n\r\n')
            else:
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: identity\r\n'
                             b'ETag: "abc"\r\nContent-Length: %d\r\n\r\n%s' % (len(TEXT), TEXT))

    backend = raw_backend(script)
    p = proxy({**single_upstream(backend.url), "compress": {"encodings": ["gzip"]}})
    answer, body = get(p, "/", "gzip")
    assert answer.headers.get_all("Content-Encoding") == ["gzip"] and gzip.decompress(body) == TEXT
    assert answer.getheader("ETag") == 'W/"abc"'
    again, _ = get(p, "/", "gzip", **{"If-None-Match": 'W/"abc"'})
    assert again.status == 304 and again.getheader("ETag") == 'W/"abc"'  # as the variant it may refresh
