"""The HTTPS front listener, with trustme certificates, real clients and a real backend."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import warnings
from pathlib import Path
from typing import Any

import pytest
import trustme

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT, Proxy
from simpleproxy.app import ProxyApp
from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError
from simpleproxy.server import ProxyServer


class TLSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 whatever the name, which is sent as SNI and verified."""

    opened: list[TLSConnection] = []  # closed after each test

    def __init__(self, name: str | None, port: int, context: ssl.SSLContext) -> None:
        super().__init__(name or "127.0.0.1", port, context=context, timeout=LONG_TIMEOUT)
        self.sni = name
        self.opened.append(self)

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.sni)
        except BaseException:
            sock.close()
            raise


def refused(name: str, port: int, context: ssl.SSLContext, path: str = "/") -> BaseException | None:
    """The error a request fails with (None if it succeeds); the connection is closed either way."""
    conn = TLSConnection(name, port, context)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        return exc
    finally:
        conn.close()
    return None


@pytest.fixture(autouse=True)
def _close_connections() -> Any:
    yield
    while TLSConnection.opened:
        TLSConnection.opened.pop().close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_cert(ca: trustme.CA, directory: Path, stem: str, *names: str, **extra: Any) -> dict[str, str]:
    leaf = ca.issue_cert(*names, **extra)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return {"cert": str(cert), "key": str(key)}


def client_context(ca: trustme.CA, **kwargs: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    for name, value in kwargs.items():
        setattr(context, name, value)
    return context


def https_config(backend_url: str, certificates: list, **https: Any) -> dict[str, Any]:
    return {
        "listen": {"http": "127.0.0.1:0", "https": {"address": "127.0.0.1:0", "certificates": certificates, **https}},
        "upstreams": {"app": {"servers": [backend_url]}},
        "routes": [{"upstream": "app"}],
    }


def https_port(p: Proxy) -> int:
    return p.server.https_addresses[0][1]


def san(conn: TLSConnection) -> list[str]:
    return [value for _, value in conn.sock.getpeercert()["subjectAltName"]]


def test_names_and_a_wildcard_on_one_port_chosen_by_sni(tmp_path, ca, backends, proxy) -> None:
    certs = [write_cert(ca, tmp_path, "a", "a.example"), write_cert(ca, tmp_path, "b", "b.example"),
             write_cert(ca, tmp_path, "w", "*.w.example")]
    p = proxy(https_config(backends("A").url, certs))
    context = client_context(ca)
    for name, expected in (("a.example", "a.example"), ("b.example", "b.example"), ("x.w.example", "*.w.example")):
        conn = TLSConnection(name, https_port(p), context)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["path"] == "/"
        assert san(conn) == [expected]
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3") and conn.sock.selected_alpn_protocol() in (None, "http/1.1")
        conn.close()
    # No SNI (or a name no certificate has): the first certificate, the default.
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    conn = TLSConnection(None, https_port(p), unverified)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    assert ssl.DER_cert_to_PEM_cert(conn.sock.getpeercert(binary_form=True)) == Path(certs[0]["cert"]).read_text()
    conn.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(tmp_path, ca, backends, proxy, version) -> None:
    p = proxy(https_config(backends("A").url, [write_cert(ca, tmp_path, "a", "a.example")]))
    old = client_context(ca)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer what it is asked to
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # which is the point
        old.minimum_version = old.maximum_version = version
    error = refused("a.example", https_port(p), old)
    assert isinstance(error, ssl.SSLError) and "PROTOCOL" in str(error).upper(), error
    able = client_context(ca)
    able.set_ciphers("DEFAULT:@SECLEVEL=0")
    able.minimum_version = able.maximum_version = ssl.TLSVersion.TLSv1_2  # the same client, TLS 1.2: fine
    conn = TLSConnection("a.example", https_port(p), able)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200


def test_tls_1_3_only_when_asked(tmp_path, ca, backends, proxy) -> None:
    p = proxy(https_config(backends("A").url, [write_cert(ca, tmp_path, "a", "a.example")], min_version="1.3"))
    tls12 = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert refused("a.example", https_port(p), tls12) is not None


def _get_to_the_end(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    """One GET with Connection: close, read to the server's close, which must be a clean one."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=LONG_TIMEOUT)
    sock = context.wrap_socket(raw, server_hostname="a.example", session=session, suppress_ragged_eofs=False)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(65536):  # an end without close_notify raises SSLEOFError here
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    return sock


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_reconnecting_client_resumes_its_session(tmp_path, ca, backends, proxy, version) -> None:
    """The server ends each connection with close_notify, so the session stays resumable (TLS 1.2:
    the session ticket or cache; TLS 1.3: the tickets sent after the handshake)."""
    p = proxy(https_config(backends("A").url, [write_cert(ca, tmp_path, "a", "a.example")]))
    context = client_context(ca, minimum_version=version, maximum_version=version)
    context.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)  # as OpenSSL's own clients: a truncation
    session = None
    for attempt in range(3):
        with _get_to_the_end(https_port(p), context, session) as sock:
            assert sock.version() == ("TLSv1.3" if version == ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
            assert sock.session_reused is (attempt > 0), attempt
            session = sock.session


class CapturingApp(ProxyApp):
    environs: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.environs.append(dict(environ))
        return super().__call__(environ, start_response)


def test_the_app_and_backend_see_the_real_client_and_https_never_a_forged_one(tmp_path, ca, backends) -> None:
    backend = backends("A")
    config = config_from_dict(https_config(backend.url, [write_cert(ca, tmp_path, "a", "a.example")]))
    app = CapturingApp(config)
    server = ProxyServer(config, app=app)
    thread = server.start()
    try:
        conn = TLSConnection("a.example", server.https_addresses[0][1], client_context(ca))
        conn.request("GET", "/x", headers={"X-Forwarded-Proto": "http", "X-Forwarded-For": "6.6.6.6",
                                           "X-Client-Cert-Subject": "CN=admin"})
        response = conn.getresponse()
        headers = dict(json.loads(response.read())["headers"])
        environ = app.environs[-1]
        assert environ["wsgi.url_scheme"] == "https" and environ["HTTPS"] == "on"
        assert (environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"])) == conn.sock.getsockname()[:2]
        assert environ["SSL_TLS_SNI"] == "a.example" and "SSL_CLIENT_S_DN" not in environ
        assert headers["X-Forwarded-Proto"] == "https" and headers["X-Forwarded-For"] == "127.0.0.1"
        assert "X-Client-Cert-Subject" not in headers
        conn.close()
    finally:
        server.stop()
        thread.join(SHORT_TIMEOUT)


def test_a_reload_serves_the_new_certificate_and_keeps_open_connections(tmp_path, ca, backends, proxy) -> None:
    files = write_cert(ca, tmp_path, "a", "a.example")
    p = proxy(https_config(backends("A").url, [files], reload_interval="0s"))
    context = client_context(ca)
    kept = TLSConnection("a.example", https_port(p), context)
    kept.request("GET", "/")
    assert kept.getresponse().read()
    old_serial = kept.sock.getpeercert()["serialNumber"]
    front = p.server.front.fronts[0]
    assert not front.certificates.reload_if_changed()
    new = ca.issue_cert("a.example")
    new.cert_chain_pems[0].write_to_path(files["cert"])
    new.private_key_pem.write_to_path(files["key"])
    later = os.stat(files["cert"]).st_mtime + 10
    os.utime(files["cert"], (later, later))
    assert front.certificates.reload_if_changed()  # what the file watch does every reload_interval
    fresh = TLSConnection("a.example", https_port(p), context)
    fresh.request("GET", "/")
    assert fresh.getresponse().status == 200
    assert fresh.sock.getpeercert()["serialNumber"] != old_serial
    kept.request("GET", "/again")  # the connection opened before the reload still works
    assert kept.getresponse().status == 200 and kept.sock.getpeercert()["serialNumber"] == old_serial


def test_a_broken_certificate_on_reload_keeps_the_old_one(tmp_path, ca, backends, proxy, caplog) -> None:
    files = write_cert(ca, tmp_path, "a", "a.example")
    p = proxy(https_config(backends("A").url, [files], reload_interval="0s"))
    Path(files["key"]).write_text("not a key")
    p.server.reload_certificates()
    assert "certificates not reloaded: listen.https.certificates[0]" in caplog.text
    conn = TLSConnection("a.example", https_port(p), client_context(ca))
    conn.request("GET", "/")
    assert conn.getresponse().status == 200


@pytest.fixture
def mtls(tmp_path, ca, backends, proxy):
    client_ca = trustme.CA()
    (tmp_path / "client-ca.pem").write_bytes(client_ca.cert_pem.bytes())
    config = https_config(backends("A").url, [write_cert(ca, tmp_path, "a", "a.example")],
                          client_auth="optional", client_ca=str(tmp_path / "client-ca.pem"))
    config["routes"] = [
        {"path": "/open", "upstream": "app"},
        {"path": "/admin", "upstream": "app", "client_cert": ["CN=alice,OU=Staff,O=Example"]},
        {"path": "/any", "upstream": "app", "client_cert": True},
    ]
    return proxy(config), client_ca


def _mtls_get(p: Proxy, ca: trustme.CA, path: str, client: trustme.LeafCert | None) -> tuple[int, dict]:
    context = client_context(ca)
    if client is not None:
        client.configure_cert(context)
    conn = TLSConnection("a.example", https_port(p), context)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, dict(json.loads(body)["headers"]) if response.status == 200 else {}


def test_mtls_verified_subjects_reach_routes_and_the_backend(ca, mtls) -> None:
    p, client_ca = mtls
    alice = client_ca.issue_cert("alice@example.org", common_name="alice", organization_name="Example", organization_unit_name="Staff")
    bob = client_ca.issue_cert("bob@example.org", common_name="bob", organization_name="Example", organization_unit_name="Staff")
    status, headers = _mtls_get(p, ca, "/admin", alice)
    assert status == 200 and headers["X-Client-Cert-Subject"] == "CN=alice,OU=Staff,O=Example"
    assert _mtls_get(p, ca, "/admin", bob)[0] == 403
    assert _mtls_get(p, ca, "/any", bob)[0] == 200
    assert _mtls_get(p, ca, "/any", None)[0] == 403
    status, headers = _mtls_get(p, ca, "/open", None)
    assert status == 200 and "X-Client-Cert-Subject" not in headers


def test_mtls_a_certificate_from_another_ca_is_refused(ca, mtls) -> None:
    p, _ = mtls
    stranger = trustme.CA().issue_cert("mallory@example.org", common_name="alice", organization_name="Example", organization_unit_name="Staff")
    context = client_context(ca)
    stranger.configure_cert(context)
    assert refused("a.example", https_port(p), context, "/admin") is not None


def test_a_silent_connection_is_closed_at_the_handshake_timeout(tmp_path, ca, backends, proxy) -> None:
    p = proxy(https_config(backends("A").url, [write_cert(ca, tmp_path, "a", "a.example")],
                           handshake_timeout="300ms", max_handshakes=2))
    silent = [socket.create_connection(("127.0.0.1", https_port(p)), timeout=LONG_TIMEOUT) for _ in range(4)]
    # Two take the two handshake slots until their deadline; the others are closed at once.
    closed = sum(1 for s in silent if s.recv(1) == b"")
    assert closed == 4 and p.server.front.fronts[0].refused >= 2
    conn = TLSConnection("a.example", https_port(p), client_context(ca))  # and the listener still serves
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    for s in silent:
        s.close()


def test_redirect_to_https_keeps_the_method_and_hsts_on_https(tmp_path, ca, backends, proxy) -> None:
    config = https_config(backends("A").url, [write_cert(ca, tmp_path, "a", "a.example")])
    config["routes"] = [{"upstream": "app", "redirect_https": True, "hsts": "365d", "hsts_subdomains": True}]
    p = proxy(config)
    response, _ = p.request("POST", "/form?x=1", body=b"data", headers={"Host": "a.example"})
    assert response.status == 308
    assert response.getheader("Location") == f"https://a.example:{https_port(p)}/form?x=1"
    conn = TLSConnection("a.example", https_port(p), client_context(ca))
    conn.request("POST", "/form?x=1", body=b"data")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["body"] == "data"
    assert response.getheader("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
    p.app.reload(p.app.config)  # a reload keeps redirecting to the port the listener bound, not ":0"
    response, _ = p.request("GET", "/again", headers={"Host": "a.example"})
    assert response.getheader("Location") == f"https://a.example:{https_port(p)}/again"


def test_large_bodies_both_ways_over_tls(tmp_path, ca, backends, proxy) -> None:
    p = proxy(https_config(backends("A").url, [write_cert(ca, tmp_path, "a", "a.example")]))
    conn = TLSConnection("a.example", https_port(p), client_context(ca))
    body = os.urandom(3 * 1024 * 1024)
    conn.request("PUT", "/big", body=body)
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["body"] == body.decode("latin-1")


def test_certificate_errors_name_the_key(tmp_path, ca) -> None:
    a = write_cert(ca, tmp_path, "a", "a.example")
    b = write_cert(ca, tmp_path, "b", "b.example")
    cases = [
        ([{"cert": a["cert"], "key": b["key"]}], "listen.https.certificates[0]"),  # mismatched key
        ([{"cert": str(tmp_path / "missing.pem"), "key": a["key"]}], "listen.https.certificates[0].cert: cannot read"),
        ([{"cert": a["cert"]}], "listen.https.certificates[0]"),  # no key anywhere
        ([], "listen.https.certificates: an HTTPS listener needs at least one certificate"),
    ]
    for certificates, message in cases:
        with pytest.raises(ConfigError) as info:
            config_from_dict(https_config("http://127.0.0.1:1", certificates))
        assert any(problem.startswith(message) for problem in info.value.problems), info.value.problems
    with pytest.raises(ConfigError, match=r"listen.https.client_ca: client_auth: required needs a CA bundle"):
        config_from_dict(https_config("http://127.0.0.1:1", [a], client_auth="required"))
    with pytest.raises(ConfigError, match=r"routes\[0\]: redirect_https, hsts and client_cert need a listen.https"):
        config_from_dict({"upstreams": {"app": {"servers": ["http://127.0.0.1:1"]}},
                          "routes": [{"upstream": "app", "redirect_https": True}]})
