"""https:// upstreams: verified by default, with a CA bundle, a server_name, mTLS, or not at all."""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import pytest
import trustme

from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_config(url: str, **tls: object) -> dict:
    return {"upstreams": {"app": {"servers": [url], "tls": tls, "passive": {"failures": 100}}},
            "routes": [{"upstream": "app"}]}


def test_verified_against_a_ca_bundle(ca, tmp_path: Path, backends, proxy) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    backend = backends("secure", server_context(ca, "127.0.0.1"))
    p = proxy(tls_config(backend.url, ca=str(tmp_path / "ca.pem")))
    response, body = p.request("GET", "/x")
    assert response.status == 200 and json.loads(body)["name"] == "secure"


def test_unknown_ca_and_wrong_name_are_refused_with_502(ca, tmp_path: Path, backends, proxy) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    wrong_name = backends("wrong", server_context(ca, "other.example"))
    response, body = proxy(tls_config(wrong_name.url, ca=str(tmp_path / "ca.pem"))).request("GET", "/")
    assert response.status == 502 and b"TLS handshake failed" in body
    unknown_ca = backends("unknown", server_context(trustme.CA(), "127.0.0.1"))
    response, body = proxy(tls_config(unknown_ca.url, ca=str(tmp_path / "ca.pem"))).request("GET", "/")
    assert response.status == 502 and b"TLS handshake failed" in body


def test_server_name_sets_sni_and_the_verified_name(ca, tmp_path: Path, backends, proxy) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    backend = backends("internal", server_context(ca, "api.internal"))
    p = proxy(tls_config(backend.url, ca=str(tmp_path / "ca.pem"), server_name="api.internal"))
    assert p.request("GET", "/")[0].status == 200


def test_verify_false_works_and_is_warned_about(ca, backends, proxy, caplog) -> None:
    caplog.set_level(logging.WARNING)
    backend = backends("lax", server_context(ca, "other.example"))
    p = proxy(tls_config(backend.url, verify=False))
    assert p.request("GET", "/")[0].status == 200
    assert any("upstreams.app.tls.verify: false" in r.getMessage() for r in caplog.records)


def test_mutual_tls(ca, tmp_path: Path, backends, proxy) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client_ca = trustme.CA()
    client = client_ca.issue_cert("proxy.example")
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    backend = backends("mtls", server_context(ca, "127.0.0.1", client_ca=client_ca))
    with_cert = proxy(tls_config(backend.url, ca=str(tmp_path / "ca.pem"), cert=str(tmp_path / "client.pem")))
    assert with_cert.request("GET", "/")[0].status == 200
    without = proxy(tls_config(backend.url, ca=str(tmp_path / "ca.pem")))
    assert without.request("GET", "/")[0].status == 502


def test_tls_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError) as info:
        config_from_dict(tls_config("https://127.0.0.1:1", ca=str(tmp_path / "junk.pem"), key=str(tmp_path / "junk.pem"),
                                    cert=str(tmp_path / "absent.pem")))
    problems = info.value.problems
    assert any(p.startswith("upstreams.app.tls.ca: not a PEM CA bundle") for p in problems)
    assert any(p.startswith("upstreams.app.tls.cert: cannot read") for p in problems)
    assert any(p.startswith("upstreams.app.tls.key: needs upstreams.app.tls.cert") for p in problems)
    with pytest.raises(ConfigError, match=r"upstreams.app.tls: no server of this upstream uses https://"):
        config_from_dict(tls_config("http://127.0.0.1:1", verify=False))
