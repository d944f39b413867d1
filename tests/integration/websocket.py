"""A small RFC 6455 WebSocket echo server and client on the standard library, for the tunnel tests.

The server answers the handshake (``Sec-WebSocket-Accept``), echoes text and
binary messages, answers ping with pong, echoes a close and closes; the text
message ``close-me`` makes it start the closing handshake itself. Upgrading to
``echo`` instead of ``websocket`` gets a raw byte echo that answers ``bye`` at
the client's EOF, for half-close. Fragmented messages are not needed here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import struct
import threading
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
TIMEOUT = 30.0


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def mask(data: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key, fast enough for 10 MiB (one big-integer operation)."""
    if not data:
        return data
    stream = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def read_head(sock: socket.socket, buf: bytes = b"") -> tuple[str, dict[str, str], bytes]:
    """-> (first line, fields by lower-case name, bytes after the head)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before the end of the head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return lines[0], fields, rest


class WebSocket:
    """Frames over a connected socket; a client masks what it sends, a server does not."""

    def __init__(self, sock: socket.socket, rest: bytes = b"", client: bool = True) -> None:
        self.sock, self.buf, self.client = sock, bytearray(rest), client

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(1024 * 1024)
            if not data:
                raise ConnectionError("closed mid-frame")
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, opcode: int, payload: bytes = b"") -> None:
        n = len(payload)
        bit = 0x80 if self.client else 0
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([bit | n])
        elif n < 65536:
            head += bytes([bit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([bit | 127]) + struct.pack("!Q", n)
        if self.client:
            key = os.urandom(4)
            head += key
            payload = mask(payload, key)
        self.sock.sendall(head + payload)

    def recv(self) -> tuple[int, bytes]:
        """-> (opcode, payload)."""
        first, second = self._take(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        key = self._take(4) if second & 0x80 else None
        data = self._take(n)
        return first & 0x0F, mask(data, key) if key else data

    def close(self, code: int = 1000) -> tuple[int, bytes]:
        """The closing handshake from this side: -> the peer's close frame."""
        self.send(CLOSE, struct.pack("!H", code))
        return self.recv()


def connect(port: int, path: str = "/ws", host: str = "127.0.0.1", extra: bytes = b"",
            context: ssl.SSLContext | None = None, server_name: str | None = None, protocol: str = "websocket",
            headers: dict[str, str] | None = None) -> tuple[WebSocket | None, str, dict[str, str], bytes]:
    """Open a connection and handshake -> (WebSocket or None if refused, status line, fields, body bytes).

    ``extra`` is sent in the same write as the handshake (a client that does not wait for 101).
    """
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=server_name or host)
    key = base64.b64encode(os.urandom(16))
    more = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: {protocol}\r\nConnection: keep-alive, Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key.decode()}\r\n{more}\r\n".encode() + extra
    )
    status, fields, rest = read_head(sock)
    if status.split()[1] != "101":
        sock.settimeout(TIMEOUT)
        while "content-length" in fields and len(rest) < int(fields["content-length"]):
            rest += sock.recv(65536)
        sock.close()
        return None, status, fields, rest
    if protocol == "websocket":
        assert fields["sec-websocket-accept"].encode() == accept_for(key)
    return WebSocket(sock, rest), status, fields, b""


class EchoServer:
    """The backend: a thread per connection, plain or TLS; records each handshake it accepts."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"{'wss' if context else 'ws'}://127.0.0.1:{self.port}"
        self.context = context
        self.handshakes: list[dict[str, Any]] = []
        self.connections: set[socket.socket] = set()
        self.closed = threading.Event()  #: set when a connection's serving thread ends
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            with self._lock:
                self.connections.add(conn)
            line, fields, rest = read_head(conn)
            with self._lock:
                self.handshakes.append({"line": line, **fields})
            protocol = fields.get("upgrade", "")
            if protocol == "echo":
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
                self._raw_echo(conn, rest)
                return
            if protocol.lower() != "websocket" or "sec-websocket-key" not in fields:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept_for(fields["sec-websocket-key"].encode()) + b"\r\n\r\n")
            ws = WebSocket(conn, rest, client=False)
            closing = False  # this side sent its close first: the client's close ends it
            while True:
                opcode, data = ws.recv()
                if opcode == PING:
                    ws.send(PONG, data)
                elif opcode == CLOSE:
                    if not closing:
                        ws.send(CLOSE, data[:2])
                    return
                elif data == b"close-me":
                    ws.send(CLOSE, struct.pack("!H", 1001))
                    closing = True
                else:
                    ws.send(opcode, data)
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()
            self.closed.set()

    @staticmethod
    def _raw_echo(conn: socket.socket, rest: bytes) -> None:
        if rest:
            conn.sendall(rest)
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.sendall(b"bye")  # after the client's EOF: the other direction still works
        conn.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self.listener.close()
        with self._lock:
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
