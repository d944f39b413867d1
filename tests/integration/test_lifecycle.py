"""Stopping well: a drain lets requests in flight finish, refuses new ones, and ends."""

from __future__ import annotations

import http.client
import signal
import socket
import sys
import threading
import time

import pytest

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT, held_backend, single_upstream


def slow_backend(raw_backend):
    """A backend that answers only when the test releases it."""
    return held_backend(raw_backend, b"slow and whole")


def fetch(port: int, results: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LONG_TIMEOUT)
    try:
        conn.request("GET", "/slow")
        response = conn.getresponse()
        results.append((response.status, response.read()))
    except (OSError, http.client.HTTPException) as exc:
        results.append(exc)
    finally:
        conn.close()


def test_a_drain_finishes_the_request_in_flight_and_refuses_new_ones(raw_backend, proxy) -> None:
    backend, arrived = slow_backend(raw_backend)
    p = proxy(single_upstream(backend.url))
    idle = http.client.HTTPConnection("127.0.0.1", p.port, timeout=SHORT_TIMEOUT)
    idle.request("GET", "/warm")  # a keep-alive client that will sit idle
    backend.release.set()
    idle.getresponse().read()
    assert arrived.get(timeout=SHORT_TIMEOUT)  # (the warm-up's arrival)
    backend.release.clear()
    results: list = []
    client = threading.Thread(target=fetch, args=(p.port, results))
    client.start()
    assert arrived.get(timeout=SHORT_TIMEOUT)  # in flight at the backend
    p.server.drain(LONG_TIMEOUT)
    assert p.server.listeners_closed.wait(SHORT_TIMEOUT)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), timeout=SHORT_TIMEOUT)
    backend.release.set()
    client.join(LONG_TIMEOUT)
    assert results == [(200, b"slow and whole")]
    assert p._thread.join(SHORT_TIMEOUT) is None and not p._thread.is_alive()  # the server ended by itself
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        idle.request("GET", "/again")  # the idle keep-alive connection was closed
        idle.getresponse()
    idle.close()


def test_a_drain_cuts_what_outlives_the_drain_time(raw_backend, proxy) -> None:
    backend, arrived = slow_backend(raw_backend)
    p = proxy(single_upstream(backend.url))
    results: list = []
    client = threading.Thread(target=fetch, args=(p.port, results))
    client.start()
    assert arrived.get(timeout=SHORT_TIMEOUT)
    p.server.drain(0.2)
    p._thread.join(LONG_TIMEOUT)
    assert not p._thread.is_alive()
    client.join(LONG_TIMEOUT)
    assert isinstance(results[0], Exception)  # cut, never a complete-looking answer


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals; Windows uses Ctrl-Break")
def test_sigterm_drains_then_exits_0(raw_backend, run_process) -> None:
    backend, arrived = slow_backend(raw_backend)
    proxy = run_process(f"upstreams: {{app: {{servers: ['{backend.url}']}}}}\nroutes: [{{upstream: app}}]\n"
                        "server: {drain_time: 20s}\nlog: {access: 'off'}\n")
    assert proxy.started, "".join(proxy.said)
    results: list = []
    client = threading.Thread(target=fetch, args=(proxy.port, results))
    client.start()
    assert arrived.get(timeout=LONG_TIMEOUT)
    proxy.proc.send_signal(signal.SIGTERM)
    for line in proxy.proc.stderr:  # type: ignore[union-attr]
        if "draining" in line:
            break
    backend.release.set()
    client.join(LONG_TIMEOUT)
    assert results == [(200, b"slow and whole")]
    assert proxy.proc.wait(LONG_TIMEOUT) == 0


def test_a_server_stopped_before_it_served_closes_everything_at_once(backends) -> None:
    from simpleproxy.config import config_from_dict
    from simpleproxy.server import ProxyServer

    config = config_from_dict({**single_upstream(backends().url), "listen": {"http": "127.0.0.1:0"},
                               "admin": {"listen": "127.0.0.1:0"}})
    server = ProxyServer(config)
    addresses = [server.addresses[0], server.admin_address]
    started = time.monotonic()
    server.stop(timeout=5)
    assert time.monotonic() - started < 1.0
    for address in addresses:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=SHORT_TIMEOUT).close()
