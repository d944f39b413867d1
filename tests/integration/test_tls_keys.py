"""Certificate keys: an encrypted key never makes OpenSSL prompt, and each problem is named by its key.

Without a password OpenSSL asks on the terminal ("Enter PEM pass phrase:"), so
a service hangs or fails with "Invalid argument"; a wrong password or a key
file without a key said "[SSL] PEM lib". Each now reads as what it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A certificate, its key plain and encrypted ("secret"), another key, and a file with no key."""
    where = tmp_path_factory.mktemp("keys")
    leaf = trustme.CA().issue_cert("a.example", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(where / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(where / "key.pem"))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    (where / "encrypted.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"secret")))
    trustme.CA().issue_cert("b.example").private_key_pem.write_to_path(str(where / "other.pem"))
    return {name: str(where / f"{name}.pem") for name in ("cert", "key", "encrypted", "other")}


def https(certificate: dict) -> dict:
    return {"listen": {"http": "127.0.0.1:0", "https": {"address": "127.0.0.1:0", "certificates": [certificate]}},
            "routes": [{"respond": {}}]}


def problems(config: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(config)
    return info.value.problems


def test_each_key_problem_is_named(files) -> None:
    at = "listen.https.certificates[0]"
    cert, encrypted = files["cert"], files["encrypted"]
    assert problems(https({"cert": cert, "key": encrypted})) == [
        f"{at}.password: the key in {encrypted} is encrypted: set password"]
    assert problems(https({"cert": cert, "key": encrypted, "password": "wrong"})) == [
        f"{at}.password: wrong password for the key in {encrypted}"]
    assert problems(https({"cert": cert, "key": cert})) == [f"{at}.key: no private key in {cert}"]
    assert problems(https({"cert": cert})) == [f"{at}.cert: no private key in {cert}"]
    assert problems(https({"cert": cert, "key": files["other"]})) == [f"{at}.key: the private key is not the certificate's"]
    config_from_dict(https({"cert": cert, "key": encrypted, "password": "secret"}))  # loads


def test_upstream_client_keys_take_a_password_too(files) -> None:
    def upstream(**tls: str) -> dict:
        return {"upstreams": {"app": {"servers": ["https://127.0.0.1:1"], "tls": tls}}, "routes": [{"upstream": "app"}]}

    assert problems(upstream(cert=files["cert"], key=files["encrypted"])) == [
        f"upstreams.app.tls.password: the key in {files['encrypted']} is encrypted: set password"]
    assert problems(upstream(cert=files["cert"], key=files["encrypted"], password="nope")) == [
        f"upstreams.app.tls.password: wrong password for the key in {files['encrypted']}"]
    config = config_from_dict(upstream(cert=files["cert"], key=files["encrypted"], password="secret"))
    assert "secret" not in repr(config)


def test_check_never_prompts_for_a_pass_phrase(files, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"listen:\n  https:\n    address: 127.0.0.1:0\n    certificates:\n"
                    f"      - {{cert: '{files['cert']}', key: '{files['encrypted']}'}}\nroutes: [{{respond: {{}}}}]\n")
    done = subprocess.run([sys.executable, "-m", "simpleproxy", "check", "--config", str(path)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          start_new_session=True)  # no controlling terminal to prompt on
    assert done.returncode == 1
    assert "listen.https.certificates[0].password: the key in" in done.stderr and "set password" in done.stderr
    assert "pass phrase" not in done.stdout + done.stderr


def test_an_encrypted_client_key_with_its_password_presents_the_certificate(tmp_path, backends, proxy) -> None:
    import ssl

    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(context)
    client_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    backend = backends("mtls", context)
    client = client_ca.issue_cert("proxy.example")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), None)
    (tmp_path / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    p = proxy({"upstreams": {"app": {"servers": [backend.url], "tls": {
        "ca": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "client.pem"), "key": str(tmp_path / "client.key"),
        "password": "pw"}}}, "routes": [{"upstream": "app"}]})
    assert p.request("GET", "/")[0].status == 200
