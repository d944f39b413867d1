"""basic_auth on real sockets: who gets in, what the backend and the log see, bans, files, reloads."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from conftest import LONG_TIMEOUT, single_upstream
from simpleproxy.config import config_from_dict, load_config
from simpleproxy.errors import ConfigError
from simpleproxy.security.basic_auth import BasicAuthFilter
from simpleproxy.server import ProxyServer

# Cost 4, the least bcrypt takes: the tests check behaviour, not bcrypt's strength.
ALICE = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).decode()
BOB = bcrypt.hashpw("s\u00e9same".encode(), bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def auth_config(url: str, **extra: Any) -> dict[str, Any]:
    return {**single_upstream(url), "basic_auth": {"realm": "staff", "users": {"alice": ALICE, "bob": BOB}}, **extra}


def echoed(body: bytes) -> dict[str, str]:
    return dict(json.loads(body)["headers"])


def test_the_right_password_passes_and_the_backend_gets_the_user_not_the_password(backends, proxy) -> None:
    backend = backends()
    p = proxy(auth_config(backend.url))
    answer, body = p.request("GET", "/x", headers={**basic("alice", "wonderland"), "X-Forwarded-User": "root"})
    assert answer.status == 200
    seen = echoed(body)
    assert seen["X-Forwarded-User"] == "alice" and "Authorization" not in seen  # the client's copy is replaced
    assert p.request("GET", "/", headers=basic("bob", "s\u00e9same"))[0].status == 200  # UTF-8 passwords (RFC 7617)
    assert p.log_lines(at_least=2)[0].split()[2] == "alice"  # the log's user field


@pytest.mark.parametrize("headers", [
    {}, basic("alice", "wrong"), basic("mallory", "wonderland"), {"Authorization": "Basic !!!notbase64"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, {"Authorization": "Bearer abc"},
], ids=["missing", "wrong password", "wrong user", "malformed", "no colon", "other scheme"])
def test_anything_else_gets_a_401_challenge_and_the_backend_sees_nothing(backends, proxy, headers) -> None:
    backend = backends()
    p = proxy(auth_config(backend.url))
    answer, _ = p.request("GET", "/x", headers=headers)
    assert answer.status == 401 and answer.getheader("WWW-Authenticate") == 'Basic realm="staff", charset="UTF-8"'
    assert backend.seen.empty()


def test_wrong_attempts_are_banned_and_challenges_are_not_counted(backends, proxy) -> None:
    backend = backends()
    p = proxy(auth_config(backend.url, bots={"ban": {"after": 3, "window": "1m", "for": "10m"}}))
    for _ in range(5):  # a browser's first request carries no credentials: no misdeed
        assert p.request("GET", "/")[0].status == 401
    assert p.request("GET", "/", headers=basic("alice", "wonderland"))[0].status == 200
    for _ in range(3):
        assert p.request("GET", "/", headers=basic("alice", "guess"))[0].status == 401
    assert p.request("GET", "/", headers=basic("alice", "wonderland"))[0].status == 403  # banned, right password or not


def test_credentials_forwarded_when_asked_and_routes_may_opt_out(backends, proxy) -> None:
    backend = backends()
    config = auth_config(backend.url)
    config["basic_auth"]["forward_credentials"] = True
    config["routes"] = [{"path": "/public", "upstream": "app", "basic_auth": False}, {"path": "/", "upstream": "app"}]
    p = proxy(config)
    answer, body = p.request("GET", "/", headers=basic("alice", "wonderland"))
    assert answer.status == 200 and echoed(body)["Authorization"] == basic("alice", "wonderland")["Authorization"]
    answer, body = p.request("GET", "/public/x", headers={"X-Forwarded-User": "alice"})
    assert answer.status == 200 and "X-Forwarded-User" not in echoed(body)  # never taken from a client


def test_a_users_file_beside_the_configuration_is_read_again_on_reload(tmp_path: Path, backends) -> None:
    backend = backends()
    users = tmp_path / "htpasswd"
    users.write_text(f"# staff\nalice:{ALICE}\n")
    config = tmp_path / "proxy.yaml"
    config.write_text(f"listen: {{http: '127.0.0.1:0'}}\nupstreams: {{app: {{servers: ['{backend.url}']}}}}\n"
                      "basic_auth: {realm: staff, users_file: ./htpasswd}\nroutes: [{upstream: app}]\n")
    server = ProxyServer(load_config(config), config_path=str(config))
    thread = server.start()
    try:
        port = server.addresses[0][1]

        def status(headers: dict[str, str]) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LONG_TIMEOUT)
            conn.request("GET", "/", headers=headers)
            code = conn.getresponse().status
            conn.close()
            return code

        assert status(basic("alice", "wonderland")) == 200
        users.write_text(f"bob:{BOB}\n")
        assert server.reload() == []
        assert status(basic("alice", "wonderland")) == 401  # gone from the file, and from the verified memo
        assert status(basic("bob", "s\u00e9same")) == 200
    finally:
        server.stop()
        thread.join(LONG_TIMEOUT)


def test_weak_hashes_and_missing_users_are_configuration_errors(tmp_path: Path) -> None:
    users = tmp_path / "htpasswd"
    users.write_text("carol:$apr1$abcdefgh$0123456789abcdefghijkl\ndave:plaintext\nbad line\n")
    with pytest.raises(ConfigError) as error:
        config_from_dict({"basic_auth": {"users_file": str(users), "users": {"eve": "{SHA}abc="}},
                          "routes": [{"respond": {}, "basic_auth": {"realm": "x"}}]})
    text = str(error.value)
    assert f"{users} line 1: the password of 'carol' is an MD5 (apr1) hash" in text
    assert f"{users} line 2: the password of 'dave' is not a bcrypt hash" in text
    assert f"{users} line 3: not 'name:hash'" in text
    assert "basic_auth.users.eve: the password is not a bcrypt hash" in text
    assert "routes[0].basic_auth: no users" in text


def test_one_bcrypt_check_per_new_header_and_the_same_work_for_a_wrong_user() -> None:
    config = config_from_dict({"basic_auth": {"users": {"alice": ALICE}}, "routes": [{"respond": {}}]})
    assert config.basic_auth is not None
    auth = BasicAuthFilter(config.basic_auth)
    checks: list[bytes] = []
    real = auth._checkpw
    auth._checkpw = lambda password, stored: checks.append(stored) or real(password, stored)  # type: ignore[method-assign]
    header = basic("alice", "wonderland")["Authorization"]
    assert [auth.user(header) for _ in range(100)] == ["alice"] * 100 and len(checks) == 1
    checks.clear()
    assert auth.user(basic("nobody", "x")["Authorization"]) is None and checks == [ALICE.encode()]  # a real hash
    assert auth.user(basic("alice", "x")["Authorization"]) is None and len(checks) == 2


def test_hash_password_reads_standard_input_and_prints_an_htpasswd_line() -> None:
    result = subprocess.run([sys.executable, "-m", "simpleproxy", "hash-password", "--rounds", "10", "alice"],
                            input="correct horse\n", capture_output=True, text=True, timeout=LONG_TIMEOUT)
    assert result.returncode == 0, result.stderr
    name, _, hashed = result.stdout.strip().partition(":")
    assert name == "alice" and hashed.startswith("$2b$10$") and bcrypt.checkpw(b"correct horse", hashed.encode())


def test_a_user_name_or_realm_a_header_cannot_carry_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"basic_auth": {"realm": "Zone \u0142", "users": {"\u0141ukasz": ALICE}}, "routes": [{"respond": {}}]})
    assert "a user name is visible ASCII" in str(error.value) and "a realm is printable ASCII" in str(error.value)


def test_a_head_gets_the_fields_of_an_error_page_and_no_body(backends, proxy) -> None:
    p = proxy(auth_config(backends().url))
    raw = p.raw(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 401") and b"Content-Length: " in first and rest.startswith(b"HTTP/1.1 401")
