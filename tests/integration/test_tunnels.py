"""WebSocket and other upgraded connections through the proxy, with a real echo backend and client.

The backend and client are tests/integration/websocket.py (RFC 6455 on the
standard library). Everything waits on sockets and events: a closed tunnel is
seen as the client's EOF, never by sleeping.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import trustme
import yaml

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT, Proxy, read_request
from simpleproxy.config import load_config
from simpleproxy.server import ProxyServer
from websocket import BINARY, CLOSE, PING, PONG, TEXT, EchoServer, connect, mask


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def ws_config(url: str, **route: Any) -> dict[str, Any]:
    return {
        "upstreams": {"ws": {"servers": [{"url": url}], "timeouts": {"connect": "2s", "read": "5s"}}},
        "routes": [{"path": "/", "upstream": "ws", **route}],
    }


def wait_closed(sock: socket.socket) -> bytes:
    """Everything until the proxy closes the connection (the tunnel ended)."""
    sock.settimeout(LONG_TIMEOUT)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def wait_for(condition: Any, what: str) -> None:
    """For state another thread changes right after a socket event: re-checked on a short event wait."""
    done = threading.Event()
    for _ in range(int(LONG_TIMEOUT / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_text_binary_ping_and_a_close_from_the_client(echo, proxy) -> None:
    p = proxy(ws_config(echo.url))
    ws, status, fields, _ = connect(p.port, "/chat/room?x=1")
    assert ws is not None and status == "HTTP/1.1 101 Switching Protocols"
    assert fields["upgrade"] == "websocket" and fields["connection"] == "Upgrade" and fields["x-request-id"]
    ws.send(TEXT, "héllo".encode())
    assert ws.recv() == (TEXT, "héllo".encode())
    payload = os.urandom(70_000)
    ws.send(BINARY, payload)
    assert ws.recv() == (BINARY, payload)
    ws.send(PING, b"are you there")
    assert ws.recv() == (PONG, b"are you there")
    assert ws.close(1000) == (CLOSE, b"\x03\xe8")
    assert wait_closed(ws.sock) == b""  # the backend closed; the proxy passed its EOF on
    ws.sock.close()
    (handshake,) = echo.handshakes
    assert handshake["line"] == "GET /chat/room?x=1 HTTP/1.1" and handshake["x-forwarded-for"] == "127.0.0.1"
    assert handshake["connection"] == "Upgrade" and handshake["upgrade"] == "websocket"
    wait_for(lambda: p.log_lines(), "the tunnel's access-log line")
    (line,) = p.log_lines()
    assert '"GET /chat/room?x=1 HTTP/1.1" 101 ' in line and line.endswith("end=closed")
    down, up = int(line.split('" 101 ')[1].split()[0]), int(line.split(" up=")[1].split()[0])
    assert down >= 70_000 and up >= 70_000
    assert p.app.state.tunnels.open == 0


def test_a_10_mib_message_each_way(echo, proxy) -> None:
    p = proxy(ws_config(echo.url))
    ws, *_ = connect(p.port)
    assert ws is not None
    message = os.urandom(10 * 1024 * 1024)
    sender = threading.Thread(target=ws.send, args=(BINARY, message))  # both ways at once: backpressure
    sender.start()
    assert ws.recv() == (BINARY, message)
    sender.join(LONG_TIMEOUT)
    ws.close()
    ws.sock.close()


def test_the_backend_closes_first(echo, proxy) -> None:
    p = proxy(ws_config(echo.url))
    ws, *_ = connect(p.port)
    assert ws is not None
    ws.send(TEXT, b"close-me")
    assert ws.recv() == (CLOSE, b"\x03\xe9")  # 1001 going away, from the backend
    ws.send(CLOSE, b"\x03\xe9")
    assert wait_closed(ws.sock) == b""
    ws.sock.close()


def test_bytes_sent_with_the_handshake_reach_the_backend(echo, proxy) -> None:
    """A client that does not wait for the 101: its first frame arrives in the same read as the head."""
    p = proxy(ws_config(echo.url))
    early = b"\x81\x85abcd" + mask(b"early", b"abcd")  # a masked text frame
    ws, *_ = connect(p.port, extra=early)
    assert ws is not None and ws.recv() == (TEXT, b"early")
    ws.close()
    ws.sock.close()


def test_half_close_passes_each_end_on(echo, proxy) -> None:
    """Another upgrade token (a raw echo): the client's EOF reaches the backend, whose answer still comes back."""
    p = proxy(ws_config(echo.url, upgrade=["websocket", "echo"]))
    ws, *_ = connect(p.port, protocol="echo")
    assert ws is not None
    ws.sock.sendall(b"ping-pong")
    ws.sock.shutdown(socket.SHUT_WR)
    assert wait_closed(ws.sock) == b"ping-pongbye"
    ws.sock.close()


def test_an_upgrade_the_route_does_not_allow_is_an_ordinary_request(echo, proxy) -> None:
    p = proxy(ws_config(echo.url, upgrade=False))
    ws, status, _, _ = connect(p.port)
    assert ws is None and status.startswith("HTTP/1.1 400")  # the backend saw no Upgrade and said so
    assert "upgrade" not in echo.handshakes[0] and p.app.state.tunnels.opened == 0


def test_an_access_rule_refuses_the_handshake_before_the_backend(echo, proxy) -> None:
    p = proxy(ws_config(echo.url, access={"deny": ["127.0.0.0/8"]}))
    ws, status, _, body = connect(p.port)
    assert ws is None and status.startswith("HTTP/1.1 403") and b"request id" in body
    assert echo.handshakes == []


def test_a_rate_limit_counts_handshakes_like_any_request(echo, proxy) -> None:
    p = proxy(ws_config(echo.url, rate_limit={"rate": "1/h", "burst": 1}))
    first, *_ = connect(p.port)
    limited, status, fields, _ = connect(p.port)
    assert first is not None and limited is None
    assert status.startswith("HTTP/1.1 429") and "retry-after" in fields and len(echo.handshakes) == 1
    first.close()
    first.sock.close()


def test_the_tunnel_limits_answer_503_and_free_up_when_a_tunnel_closes(echo, proxy) -> None:
    p = proxy({**ws_config(echo.url, max_tunnels=2), "server": {"max_tunnels": 3}})
    first, *_ = connect(p.port)
    second, *_ = connect(p.port)
    refused, status, fields, body = connect(p.port)
    assert refused is None and status.startswith("HTTP/1.1 503") and fields["retry-after"] == "1"
    assert b"too many upgraded connections" in body and len(echo.handshakes) == 2
    assert first is not None and second is not None
    first.close()
    first.sock.close()
    wait_for(lambda: p.app.state.tunnels.open == 1, "the closed tunnel to be counted out")
    third, *_ = connect(p.port)
    assert third is not None
    third.send(TEXT, b"room again")
    assert third.recv() == (TEXT, b"room again")
    for ws in (second, third):
        ws.close()
        ws.sock.close()
    assert p.app.state.tunnels.snapshot()["refused"] == {"limit": 1, "draining": 0}


def test_a_server_wide_bound_counts_every_route(echo, proxy) -> None:
    config = ws_config(echo.url)
    config["routes"].append({"path": "/other", "upstream": "ws"})
    p = proxy({**config, "server": {"max_tunnels": 1}})
    held, *_ = connect(p.port, "/")
    refused, status, *_ = connect(p.port, "/other")
    assert held is not None and refused is None and status.startswith("HTTP/1.1 503")
    held.close()
    held.sock.close()


def test_an_idle_tunnel_is_closed(echo, proxy) -> None:
    p = proxy(ws_config(echo.url, tunnel_idle_timeout="1s"))  # ample for the first echo on a loaded machine
    ws, *_ = connect(p.port)
    assert ws is not None
    ws.send(TEXT, b"one message, then silence")
    assert ws.recv()[0] == TEXT
    assert wait_closed(ws.sock) == b""  # the relay's next sweep after a second of silence
    ws.sock.close()
    wait_for(lambda: p.log_lines(), "the tunnel's access-log line")
    assert p.log_lines()[0].endswith("end=idle")


def test_a_hundred_tunnels_while_ordinary_requests_are_answered(echo, backends, proxy) -> None:
    backend = backends("plain")
    config = ws_config(echo.url)
    config["upstreams"]["plain"] = {"servers": [{"url": backend.url}]}
    config["routes"].append({"path": "/plain", "upstream": "plain"})
    p = proxy({**config, "server": {"threads": 4}})  # far fewer threads than tunnels
    sockets = []
    try:
        for _ in range(100):
            ws, *_ = connect(p.port)
            assert ws is not None
            sockets.append(ws)
        for i in range(20):
            response, _ = p.request("GET", f"/plain/{i}")
            assert response.status == 200
        assert p.app.state.tunnels.open == 100
        for i, ws in enumerate(sockets):
            ws.send(TEXT, b"tunnel %d" % i)
        for i, ws in enumerate(sockets):
            assert ws.recv() == (TEXT, b"tunnel %d" % i)
    finally:
        for ws in sockets:
            ws.sock.close()
    wait_for(lambda: p.app.state.tunnels.open == 0, "every tunnel to close")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_wss_through_the_tls_listener_to_a_wss_backend(tmp_path, ca, proxy) -> None:
    """TLS on both sides of the tunnel: the front listener's SSL socket and the backend's."""
    backend_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(backend_context)
    backend = EchoServer(backend_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("chat.example")
    cert, key = tmp_path / "chat.pem", tmp_path / "chat.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    config = ws_config(backend.url)
    config["upstreams"]["ws"]["tls"] = {"ca": str(ca_file)}
    p = proxy({**config, "listen": {"http": "127.0.0.1:0", "https": {
        "address": "127.0.0.1:0", "certificates": [{"cert": str(cert), "key": str(key)}]}}})
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    try:
        ws, status, *_ = connect(p.server.https_addresses[0][1], host="chat.example", context=client_context)
        assert ws is not None, status
        message = os.urandom(3 * 1024 * 1024)
        sender = threading.Thread(target=ws.send, args=(BINARY, message))
        sender.start()
        assert ws.recv() == (BINARY, message)
        sender.join(LONG_TIMEOUT)
        assert ws.close() == (CLOSE, b"\x03\xe8")
        ws.sock.close()
        assert backend.handshakes[0]["x-forwarded-proto"] == "https"
        wait_for(lambda: p.app.state.tunnels.open == 0, "the TLS tunnel to close")
    finally:
        backend.stop()


def write_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump({"listen": {"http": "127.0.0.1:0"}, "log": {"access": "off"}, **config}))


def test_a_tunnel_survives_a_reload(tmp_path, echo) -> None:
    path = tmp_path / "proxy.yaml"
    write_config(path, ws_config(echo.url))
    server = ProxyServer(load_config(path), config_path=str(path))
    thread = server.start()
    try:
        port = server.addresses[0][1]
        ws, *_ = connect(port)
        assert ws is not None
        config = ws_config(echo.url)
        config["routes"].insert(0, {"path": "/new", "respond": {"status": 200, "body": "new"}})
        write_config(path, config)
        assert server.reload() == []
        ws.send(TEXT, b"still here")
        assert ws.recv() == (TEXT, b"still here")
        assert server.app.state.tunnels.open == 1  # counted by the new state too
        ws.close()
        ws.sock.close()
    finally:
        server.stop()
        thread.join(SHORT_TIMEOUT)


def test_a_graceful_stop_closes_tunnels_after_the_drain_time(tmp_path, echo) -> None:
    path = tmp_path / "proxy.yaml"
    write_config(path, ws_config(echo.url))
    server = ProxyServer(load_config(path), config_path=str(path))
    thread = server.start()
    port = server.addresses[0][1]
    ws, *_ = connect(port)
    assert ws is not None
    server.drain(2.0)
    ws.send(TEXT, b"during the drain")  # still relayed until the drain time is over
    assert ws.recv() == (TEXT, b"during the drain")
    assert wait_closed(ws.sock) == b""  # then a clean TCP close
    ws.sock.close()
    thread.join(LONG_TIMEOUT)
    assert not thread.is_alive()


def test_a_dead_backend_gets_502_and_counts_nothing(proxy) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}"
    p = proxy(ws_config(dead))
    ws, status, _, body = connect(p.port)
    assert ws is None and status.startswith("HTTP/1.1 502") and b"request id" in body
    assert p.app.state.tunnels.open == 0


def test_server_sent_events_flow_past_the_read_timeout(raw_backend, proxy) -> None:
    """A quiet spell longer than the read timeout does not end an event stream; the stream timeout would."""
    quiet = threading.Event()

    def events(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"d\r\ndata: first\n\n\r\n")
        quiet.wait(1.6)  # three read timeouts without a byte
        conn.sendall(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")

    backend = raw_backend(events)
    p: Proxy = proxy({
        "upstreams": {"app": {"servers": [{"url": backend.url}], "timeouts": {"connect": "1s", "read": "500ms"}}},
        "routes": [{"path": "/", "upstream": "app", "stream_timeout": "10s"}],
    })
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=LONG_TIMEOUT)
    conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    assert response.read1(100) == b"data: first\n\n"
    assert response.read() == b"data: second\n\n"
    conn.close()


def test_tunnel_metrics(echo, proxy) -> None:
    pytest.importorskip("prometheus_client")
    import urllib.request

    p = proxy({**ws_config(echo.url, max_tunnels=1), "admin": {"listen": "127.0.0.1:0"}})
    ws, *_ = connect(p.port)
    refused, *_ = connect(p.port)
    assert ws is not None and refused is None
    admin = p.server.admin_address

    def metrics() -> str:
        with urllib.request.urlopen(f"http://{admin[0]}:{admin[1]}/metrics", timeout=LONG_TIMEOUT) as answer:
            return answer.read().decode()

    text = metrics()
    assert 'simpleproxy_tunnels_open{route="*/"} 1.0' in text
    assert 'simpleproxy_tunnels_refused_total{reason="limit"} 1.0' in text
    ws.send(TEXT, b"x" * 1000)
    ws.recv()
    ws.close()
    ws.sock.close()
    wait_for(lambda: p.app.state.tunnels.open == 0, "the tunnel to close")
    text = metrics()
    assert "simpleproxy_tunnels_opened_total 1.0" in text
    up = next(line for line in text.splitlines() if line.startswith('simpleproxy_tunnel_bytes_total{direction="up"}'))
    assert float(up.split()[-1]) >= 1000


# What a review found: each of these failed before its fix.

def test_a_101_without_the_protocol_or_the_accept_key_is_refused(raw_backend, proxy) -> None:
    """A backend that answers a bare 101 (say, one that echoes statuses) must not open a raw tunnel
    past the per-request filters: 502, and the client never gets a 101."""
    def bare_101(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        read_request(conn)  # what a smuggled request would be
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")

    def wrong_accept(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n")

    for script in (bare_101, wrong_accept):
        p = proxy(ws_config(raw_backend(script).url))
        ws, status, _, body = connect(p.port)
        assert ws is None and status.startswith("HTTP/1.1 502"), status
        assert b"101 with" in body and p.app.state.tunnels.open == 0


def test_a_tunnel_stays_counted_as_its_clients_connection(echo, proxy) -> None:
    p = proxy({**ws_config(echo.url), "server": {"max_connections_per_client": 2}})
    first, *_ = connect(p.port)
    second, *_ = connect(p.port)
    assert first is not None and second is not None
    third, status, *_ = connect(p.port)
    assert third is None and status.startswith("HTTP/1.1 503")  # the per-client bound, tunnels included
    first.close()
    first.sock.close()
    counts = p.server.front.open_per_client
    wait_for(lambda: counts.get("127.0.0.1") == 1, "the closed tunnel's connection to be counted out")
    second.close()
    second.sock.close()


def test_tunnels_leave_max_connections_to_ordinary_requests(echo, proxy) -> None:
    config = ws_config(echo.url)
    config["upstreams"]["ws"]["max_connections"] = 2
    config["routes"].insert(0, {"path": "/plain", "respond": {"status": 200, "body": "local"}})
    p = proxy(config)
    held = [connect(p.port)[0] for _ in range(3)]
    assert all(ws is not None for ws in held)  # more tunnels than max_connections: they are not requests
    ws, status, fields, _ = connect(p.port, protocol="not-a-protocol")  # an ordinary request to the upstream
    assert status.startswith("HTTP/1.1 400")  # reached the backend (which refuses non-WebSocket)
    for ws in held:
        ws.sock.close()  # type: ignore[union-attr]


def test_handshakes_follow_the_sticky_cookie_and_are_retried_on_another_server(echo, proxy) -> None:
    second = EchoServer()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}"
    try:
        config = ws_config(echo.url)
        config["upstreams"]["ws"]["servers"] = [{"url": dead}, {"url": echo.url}, {"url": second.url}]
        config["upstreams"]["ws"]["sticky"] = {"cookie": "sp"}
        config["upstreams"]["ws"]["retries"] = {"count": 2}
        p = proxy(config)
        held = []
        for _ in range(4):  # the dead server's turns are retried elsewhere, before any answer
            ws, status, *_ = connect(p.port)
            assert ws is not None, status
            held.append(ws)
        pinned = p.app.state.upstreams["ws"].servers[2].sticky_id
        before = len(second.handshakes)
        for _ in range(3):
            ws, status, *_ = connect(p.port, headers={"Cookie": f"sp={pinned}"})
            assert ws is not None, status
            held.append(ws)
        assert len(second.handshakes) == before + 3
        for ws in held:
            ws.sock.close()
    finally:
        second.stop()


def test_a_declined_upgrade_with_bytes_after_its_head_says_connection_close(echo, proxy) -> None:
    p = proxy(ws_config(echo.url, upgrade=False))
    with socket.create_connection(("127.0.0.1", p.port), timeout=LONG_TIMEOUT) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                  b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = wait_closed(s)
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 400") and b"connection: close" in head


def test_tls_bytes_decrypted_past_a_full_buffer_are_not_stranded(ca) -> None:
    """The relay stops reading at a full buffer; a TLS record already decrypted beyond it waits in
    pending(), which the selector cannot see. Once the buffer drains, those bytes must follow."""
    from simpleproxy.tunnels.relay import BUFFER, Relay, Tunnel

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    listener = socket.create_server(("127.0.0.1", 0))
    made: dict[str, ssl.SSLSocket] = {}
    connector = threading.Thread(target=lambda: made.setdefault("client", client_context.wrap_socket(
        socket.create_connection(listener.getsockname()), server_hostname="127.0.0.1")))
    connector.start()
    raw, _ = listener.accept()
    proxy_side = server_context.wrap_socket(raw, server_side=True)
    connector.join(LONG_TIMEOUT)
    listener.close()
    client = made["client"]
    backend_side, backend = socket.socketpair()
    backend_side.setblocking(False)
    stuffed = 0
    try:  # the backend reads nothing yet: the relay's buffer towards it fills
        while True:
            stuffed += backend_side.send(b"\0" * 65536)
    except BlockingIOError:
        pass
    closed = threading.Event()
    tunnel = Tunnel(proxy_side, backend_side, b"", b"", 0, on_close=lambda t: closed.set())
    relay = Relay()
    try:
        relay.add(tunnel)
        records = 27  # 27 records of 10,000 bytes: the 27th straddles the buffer's end
        for i in range(records):
            client.sendall(bytes([65 + i % 26]) * 10_000)
        wait_for(lambda: len(tunnel.up.buf) >= BUFFER, "the relay's buffer to fill")
        backend.settimeout(LONG_TIMEOUT)
        received = 0
        while received < stuffed + records * 10_000:
            chunk = backend.recv(1 << 20)
            assert chunk
            received += len(chunk)
        assert received == stuffed + records * 10_000
    finally:
        relay.stop()
        for sock in (client, backend):
            sock.close()
