"""The least a Python server on the standard library's ``ssl`` pays per connection, for benchmarks/tls.py.

    python benchmarks/ssl_floor.py CERT KEY

One thread, one ``selectors`` loop, non-blocking sockets: accept, handshake,
read a request head, answer 1 KiB from memory, say close_notify, close. No
proxying, no parsing, no thread hand-off: what is left is OpenSSL's work, the
kernel's, and the few Python calls around them, the floor under any Python
design (simpleproxy's handshakes run the same way, in its loop). Prints its
HTTPS port, then its plain-HTTP port (the same answer without TLS), then
serves until killed. Loopback only.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import sys

ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 1024\r\nContent-Type: application/octet-stream\r\n\r\n" + b"x" * 1024
_AGAIN = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)


def _listener(selector: selectors.BaseSelector, context: ssl.SSLContext | None) -> int:
    """A listening socket in the loop; its key's data says what to wrap accepted sockets with."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ, ("listener", context))
    return sock.getsockname()[1]


def _step(selector: selectors.BaseSelector, conn: socket.socket, handshaking: set[socket.socket]) -> None:
    """Move one connection on: finish its handshake, or read its request and answer it."""
    try:
        if conn in handshaking:
            conn.do_handshake()  # type: ignore[attr-defined]
            handshaking.discard(conn)
        data = conn.recv(65536)
        if data and b"\r\n\r\n" not in data:
            return  # the rest of the head is on its way (the floor reads one piece; a real server more)
        if data:
            conn.send(ANSWER)
            if isinstance(conn, ssl.SSLSocket):
                try:
                    conn.unwrap()
                except (ssl.SSLError, OSError):
                    pass  # the client's own close_notify is not waited for (as nginx)
    except _AGAIN:
        return
    except OSError:
        pass
    selector.unregister(conn)
    handshaking.discard(conn)
    conn.close()


def main(cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    selector = selectors.DefaultSelector()
    https, http = _listener(selector, context), _listener(selector, None)
    print(https, flush=True)
    print(http, flush=True)
    handshaking: set[socket.socket] = set()
    while True:
        for key_, _ in selector.select():
            if key_.data is None:  # a connection
                _step(selector, key_.fileobj, handshaking)  # type: ignore[arg-type]
                continue
            try:
                conn, _ = key_.fileobj.accept()  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            conn.setblocking(False)
            context_ = key_.data[1]
            if context_ is not None:
                conn = context_.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                handshaking.add(conn)
            selector.register(conn, selectors.EVENT_READ, None)
            _step(selector, conn, handshaking)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
