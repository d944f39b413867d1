"""A fast keep-alive HTTP/1.1 backend for benchmarks (asyncio, one thread).

GET .../1k    1 KiB body
GET .../1m    1 MiB body
GET .../10m   10 MiB body
GET .../300m  300 MiB body, streamed in 1 MiB writes with flow control
GET .../50ms  1 KiB body after 50 ms (any number of milliseconds): a backend that does some work
GET .../json  100 KiB of JSON (an API's list of records), for compression

Only the last path segment counts, so every proxy can be measured on /bench/...

Prints its port on stdout, then serves until killed. Loopback only.
"""

from __future__ import annotations

import asyncio
import sys

MIB = 1024 * 1024
_CHUNK = b"x" * MIB
SIZES = {b"1k": 1024, b"1m": MIB, b"10m": 10 * MIB, b"300m": 300 * MIB}


def _head(size: int) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {size}\r\nServer: bench\r\n\r\n"
    ).encode()


_SMALL = {path: _head(size) + b"x" * size for path, size in SIZES.items() if size <= 10 * MIB}


def _json() -> bytes:
    """100 KiB of records as an API returns them: repeated keys, varied values."""
    import json
    import random

    rng = random.Random(7)
    records, body = [], b""
    while len(body) < 100 * 1024:
        n = len(records)
        records.append({"id": n, "name": f"customer {rng.randrange(10**6)}", "email": f"user{n}@example.com",
                        "active": rng.random() < 0.8, "balance": round(rng.uniform(-500, 5000), 2),
                        "tags": rng.sample(["new", "vip", "trial", "eu", "us", "churn", "b2b"], 3)})
        body = json.dumps(records).encode()
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Server: bench\r\n\r\n").encode() + body


_SMALL[b"json"] = _json()


class Backend(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.busy = False

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._serve()

    def _serve(self) -> None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            path = head.split(b" ", 2)[1].partition(b"?")[0].rpartition(b"/")[2]  # the query is not the name
            if path in _SMALL:
                self.transport.write(_SMALL[path])  # type: ignore[attr-defined]
                if b"\r\nconnection: close" in head.lower():
                    # Close first, so TIME_WAIT stays here rather than using up the client's ports.
                    self.transport.close()  # type: ignore[attr-defined]
                    return
            elif path.endswith(b"ms") and path[:-2].isdigit():
                # Answers in order on one connection (HTTP/1.1 has no other way), each after the delay.
                self.busy = True
                asyncio.ensure_future(self._later(int(path[:-2]) / 1000))
                return
            elif path in SIZES:
                self.busy = True
                asyncio.ensure_future(self._stream(SIZES[path]))
                return
            else:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")  # type: ignore[attr-defined]

    async def _later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.write(_SMALL[b"1k"])  # type: ignore[attr-defined]
        self.busy = False
        self._serve()

    async def _stream(self, size: int) -> None:
        self.transport.write(_head(size))  # type: ignore[attr-defined]
        for _ in range(size // MIB):
            await self.can_write.wait()
            if self.transport.is_closing():  # type: ignore[attr-defined]
                return
            self.transport.write(_CHUNK)  # type: ignore[attr-defined]
        self.busy = False
        self._serve()


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Backend, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
