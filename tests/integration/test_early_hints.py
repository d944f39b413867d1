"""A backend's 103 Early Hints reach an HTTP/1.1 client ahead of the final answer (interim.py)."""

from __future__ import annotations

import socket
import threading

from conftest import LONG_TIMEOUT, read_request, single_upstream

HINT = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"


def hinting_backend(raw_backend, seen: threading.Event | None = None, cache_control: str = "no-store"):
    """Answers 100, then a 103, then (once ``seen`` is set, when given) the 200."""
    def script(conn: socket.socket) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + HINT + b"HTTP/1.1 102 Processing\r\n\r\n")
            if seen is not None:
                seen.wait(LONG_TIMEOUT)
            conn.sendall(f"HTTP/1.1 200 OK\r\nCache-Control: {cache_control}\r\nContent-Length: 4\r\n\r\npage".encode())

    return raw_backend(script)


def exchange(port: int, request: bytes, until: bytes = b"page") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=LONG_TIMEOUT) as client:
        client.sendall(request)
        data = b""
        while not data.endswith(until):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_a_103_reaches_the_client_before_the_backend_has_answered(raw_backend, proxy) -> None:
    seen = threading.Event()
    p = proxy(single_upstream(hinting_backend(raw_backend, seen).url))
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: site\r\n\r\n")
        early = b""
        while not early.endswith(b"\r\n\r\n"):
            early += client.recv(65536)  # the backend holds its 200 until the client has this
        assert early == HINT
        seen.set()
        rest = b""
        while not rest.endswith(b"page"):
            rest += client.recv(65536)
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")  # the 100 and the 102 were the proxy's to drop


def test_an_http10_client_gets_no_interim_response(raw_backend, proxy) -> None:
    p = proxy(single_upstream(hinting_backend(raw_backend).url))
    answer = exchange(p.port, b"GET / HTTP/1.0\r\nHost: site\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and b"103" not in answer


def test_a_103_is_never_stored_with_the_response(raw_backend, proxy) -> None:
    p = proxy(single_upstream(hinting_backend(raw_backend, cache_control="max-age=60").url, cache=True))
    first = exchange(p.port, b"GET /c HTTP/1.1\r\nHost: site\r\n\r\n")
    assert first.startswith(HINT + b"HTTP/1.1 200 OK\r\n")
    p.log_lines(at_least=1)
    store = p.app.state.cache_filters["routes[0]"].store
    assert len(store) == 1
    hit = exchange(p.port, b"GET /c HTTP/1.1\r\nHost: site\r\n\r\n")
    assert hit.startswith(b"HTTP/1.1 200 OK\r\n") and b"Cache-Status: simpleproxy; hit" in hit


def test_only_the_requests_own_thread_may_write_a_hint_and_only_before_the_answer() -> None:
    from types import SimpleNamespace

    from simpleproxy.frontend.upgrade import ChannelInterim

    written: list[bytes] = []
    task = SimpleNamespace(wrote_header=False, channel=SimpleNamespace(write_soon=written.append))
    hints = ChannelInterim(task)  # type: ignore[arg-type]
    elsewhere: list[bool] = []
    other = threading.Thread(target=lambda: elsewhere.append(hints("103 Early Hints", [("Link", "</a>")])))
    other.start()
    other.join()
    assert elsewhere == [False] and written == []  # a background refresh holding a copy of the environ
    assert hints("103 Early Hints", [("Link", "</a>")]) and written == [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]
    task.wrote_header = True
    assert not hints("103 Early Hints", [("Link", "</b>")]) and len(written) == 1


def test_an_auth_services_early_hints_are_not_the_pages(raw_backend, proxy) -> None:
    def service(conn: socket.socket) -> None:  # forward_auth's service: a hint of its own, then yes
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </login.css>; rel=preload\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    auth = raw_backend(service)
    config = {**single_upstream(hinting_backend(raw_backend).url), "forward_auth": {"url": f"{auth.url}/verify"}}
    p = proxy(config)
    answer = exchange(p.port, b"GET / HTTP/1.1\r\nHost: site\r\n\r\n")
    assert answer.startswith(HINT + b"HTTP/1.1 200 OK\r\n") and b"login.css" not in answer
