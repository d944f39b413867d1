"""Paths a lenient backend could read outside their route are refused (server.reject_ambiguous_paths).

The proxy routes ``/api/..%2Fsecret`` to the ``/api`` backend, and a backend that
decodes ``%2F`` (or takes ``\\`` for ``/``, accepts overlong UTF-8, strips ``;``
parameters before dot segments) serves ``/secret``. These get 400 and reach no
backend, unless a route allows encoded slashes or the check is switched off.
"""

from __future__ import annotations

import json
import socket

import pytest

from conftest import LONG_TIMEOUT
from simpleproxy.request import ambiguous_path, normalize_path

AMBIGUOUS = [
    (b"/api/..%2Fsecret", "an encoded slash (%2F)"),
    (b"/api/..%2fsecret", "an encoded slash (%2F)"),
    (b"/api/..\\secret", "a backslash"),
    (b"/api/..%5Csecret", "a backslash"),
    (b"/api/%C0%AE%C0%AE/secret", "an overlong or invalid UTF-8 sequence"),
    (b"/api/%ff", "an overlong or invalid UTF-8 sequence"),
    (b"/api/..;/secret", "a ';' parameter on a dot segment"),
    (b"/api/.;x/secret", "a ';' parameter on a dot segment"),
    (b"/api/%2e%2e;/secret", "a ';' parameter on a dot segment"),
    (b"/api/..%3B/secret", "a ';' parameter on a dot segment"),
]
PLAIN = [b"/api/items/42", b"/api/caf%C3%A9", b"/api/a;b=c/x", b"/api/..x/y", b"/api/%41%42"]


def status_and_body(port: int, target: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=LONG_TIMEOUT) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def routes(backend_url: str, **api: object) -> dict:
    return {"upstreams": {"app": {"servers": [backend_url]}},
            "routes": [{"path": "/api", "upstream": "app", **api}, {"path": "/", "respond": {"body": "site"}}]}


@pytest.mark.parametrize(("target", "reason"), AMBIGUOUS, ids=[t.decode("latin-1") for t, _ in AMBIGUOUS])
def test_an_ambiguous_path_is_a_400_that_reaches_no_backend(backends, proxy, target, reason) -> None:
    backend = backends("A")
    p = proxy(routes(backend.url))
    status, body = status_and_body(p.port, target)
    assert status == 400 and f"ambiguous path: {reason}".encode() in body
    assert backend.seen.empty()


@pytest.mark.parametrize("target", PLAIN, ids=[t.decode() for t in PLAIN])
def test_ordinary_paths_pass(backends, proxy, target) -> None:
    p = proxy(routes(backends("A").url))
    assert status_and_body(p.port, target)[0] == 200


def test_a_route_may_allow_encoded_slashes_and_the_check_may_be_switched_off(backends, proxy) -> None:
    backend = backends("A")
    p = proxy(routes(backend.url, allow_encoded_slashes=True))
    status, body = status_and_body(p.port, b"/api/group%2Fproject")
    assert status == 200 and json.loads(body)["path"] == "/api/group%2Fproject"  # passed on as written
    assert status_and_body(p.port, b"/api/..;/secret")[0] == 400  # the rest stays refused
    off = proxy({**routes(backend.url), "server": {"reject_ambiguous_paths": False}})
    assert status_and_body(off.port, b"/api/..;/secret")[0] == 200


def test_the_check_reads_the_normalised_path() -> None:
    for target, reason in AMBIGUOUS:
        assert ambiguous_path(normalize_path(target.decode("latin-1"))) == reason, target
    for target in PLAIN:
        assert ambiguous_path(normalize_path(target.decode())) is None, target
