"""The admin listener: health, readiness, metrics, configuration, reload, purge, the status page."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT
from simpleproxy.admin import AdminApp
from simpleproxy.config import AdminSettings, load_config
from simpleproxy.server import ProxyServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-admin-token-0123456789"


def write(path: Path, backend_url: str, admin: str = "{listen: '127.0.0.1:0'}", extra: str = "",
          other_url: str = "http://127.0.0.1:9") -> Path:
    path.write_text(
        "listen: {http: '127.0.0.1:0'}\nlog: {access: 'off'}\n"
        f"admin: {admin}\n"
        f"upstreams: {{app: {{servers: ['{backend_url}']}}, other: {{servers: ['{other_url}']}}}}\n"
        "routes:\n  - {path: /, upstream: app, cache: {default_ttl: 1m}}\n" + extra
    )
    return path


@pytest.fixture
def served():
    servers = []

    def start(path: Path) -> ProxyServer:
        server = ProxyServer(load_config(path), config_path=str(path))
        servers.append((server, server.start()))
        return server

    yield start
    for server, thread in servers:
        server.stop()
        thread.join(SHORT_TIMEOUT)


def call(address: tuple[str, int], method: str, path: str, headers: dict | None = None) -> tuple[int, bytes, Any]:
    """-> (status, body, the response's fields, looked up without regard to case)."""
    conn = http.client.HTTPConnection(*address, timeout=LONG_TIMEOUT)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response.msg
    finally:
        conn.close()


def until_closed(server: ProxyServer) -> None:
    """Ready-check: every client connection the proxy had is closed on its side too."""
    deadline = time.monotonic() + LONG_TIMEOUT
    while server.open_connections():
        assert time.monotonic() < deadline, "client connections stayed open"
        threading.Event().wait(0.01)


def proxy_get(server: ProxyServer, path: str) -> int:
    return call(("127.0.0.1", server.addresses[0][1]), "GET", path)[0]


def test_health_ready_and_the_redacted_configuration(tmp_path, backends, served) -> None:
    server = served(write(tmp_path / "c.yaml", backends().url, f"{{listen: '127.0.0.1:0', token: '{TOKEN}'}}"))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert call(server.admin_address, "GET", "/health", auth)[:2] == (200, b"ok\n")
    assert call(server.admin_address, "GET", "/ready", auth)[:2] == (200, b"ready\n")
    status, body, _ = call(server.admin_address, "GET", "/config", auth)
    config = json.loads(body)
    assert status == 200 and config["admin"]["token"] == "[redacted]" and TOKEN.encode() not in body
    assert config["routes"][0]["upstream"] == "app"


def test_a_token_is_required_when_configured(tmp_path, backends, served) -> None:
    server = served(write(tmp_path / "c.yaml", backends().url, f"{{listen: '127.0.0.1:0', token: '{TOKEN}'}}"))
    status, _, headers = call(server.admin_address, "GET", "/metrics")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert call(server.admin_address, "GET", "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert call(server.admin_address, "GET", "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_without_a_token_only_local_clients_are_served(tmp_path, backends, served) -> None:
    server = served(write(tmp_path / "c.yaml", backends().url))
    client = Client(AdminApp(server, AdminSettings(("127.0.0.1", 0))))
    answers = [
        client.get("/health", headers={"Host": host}, environ_base={"REMOTE_ADDR": address}).status_code
        for address, host in (("10.1.2.3", "127.0.0.1"), ("192.168.0.9", "localhost"), ("::1", "[::1]:9901"),
                              ("127.0.0.1", "127.0.0.1:9901"), ("127.0.0.1", "evil.example:9901"))  # DNS rebinding
    ]
    assert answers == [403, 403, 200, 200, 403]


def test_head_allow_fields_and_plain_text_errors_with_a_token(tmp_path, backends, served) -> None:
    server = served(write(tmp_path / "c.yaml", backends().url))
    client = Client(AdminApp(server, AdminSettings(("127.0.0.1", 0), token=TOKEN)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    head = client.head("/health", headers=auth)  # RFC 9110 section 9.3.2: HEAD wherever GET is
    assert (head.status, head.data, head.headers["Content-Length"]) == ("200 OK", b"", "3")
    assert client.get("/health", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200  # any case
    unknown = client.get("/no-such-thing")  # 401 before 404: unknown paths tell nothing either
    assert unknown.status == "401 Unauthorized" and unknown.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/reload", headers=auth)
    assert (wrong.status, wrong.headers["Allow"], wrong.data) == ("405 Method Not Allowed", "POST", b"/reload takes POST\n")
    missing = client.get("/nothing", headers=auth)
    assert (missing.status_code, missing.data) == (404, b"no such admin endpoint\n")
    for answer in (head, unknown, wrong, missing):
        assert answer.headers["Cache-Control"] == "no-store" and answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer is head or answer.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_config_redacts_credentials_in_urls() -> None:
    from simpleproxy.admin.app import redacted
    from simpleproxy.config import config_from_dict

    config = config_from_dict({"routes": [{"respond": {}, "rate_limit": {"rate": "1/s", "store": "redis://:hunter2@127.0.0.1:6379/0"}}]})
    assert "hunter2" not in json.dumps(redacted(config))


def test_metrics_parse_and_count_the_traffic_sent(tmp_path, backends, served) -> None:
    server = served(write(tmp_path / "c.yaml", backends().url))
    for path in ("/plain/a", "/plain/a", "/plain/b"):
        assert proxy_get(server, path) == 200
    until_closed(server)  # the loop has seen each client's close
    status, body, headers = call(server.admin_address, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = {(s.labels["route"], s.labels["status"]): s.value
                for s in families["simpleproxy_requests"].samples if s.name == "simpleproxy_requests_total"}
    assert requests == {("*/", "200"): 3}
    cache = {s.labels["result"]: s.value for s in families["simpleproxy_cache_results"].samples
             if s.name == "simpleproxy_cache_results_total"}
    assert cache == {"miss": 2, "hit": 1}
    count = [s.value for s in families["simpleproxy_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert count == [3]
    up = {s.labels["upstream"]: s.value for s in families["simpleproxy_upstream_server_up"].samples}
    assert up == {"app": 1, "other": 1}
    assert [s.value for s in families["simpleproxy_cache_entries"].samples] == [2]
    assert [s.value for s in families["simpleproxy_open_connections"].samples] == [0]


def test_limit_results_and_waf_denials_are_counted(tmp_path, backends, served) -> None:
    extra = ("  - {path: /limited, upstream: app, rate_limit: {rate: 1/h, burst: 1}}\n"
             "  - {path: /guarded, upstream: app, waf: {baseline: true}}\n")
    server = served(write(tmp_path / "c.yaml", backends().url, extra=extra))
    assert [proxy_get(server, "/limited/x") for _ in range(2)] == [200, 429]
    assert proxy_get(server, "/guarded/.env") == 403
    body = call(server.admin_address, "GET", "/metrics")[1].decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    limits = {s.labels["result"]: s.value for s in families["simpleproxy_rate_limit_results"].samples
              if s.name.endswith("_total")}
    assert limits == {"passed": 1, "rejected": 1}
    denials = [(s.labels["route"], s.labels["rule"], s.value) for s in families["simpleproxy_waf_denials"].samples
               if s.name.endswith("_total")]
    assert denials == [("*/guarded", "baseline-scanners", 1)]
    routes = {r["route"]: r["limits"] for r in json.loads(call(server.admin_address, "GET", "/status.json")[1])["routes"]}
    assert routes["*/limited"] == {"passed": 1, "rejected": 1} and routes["*/guarded"] == {"waf baseline-scanners": 1}


def test_reload_and_purge_need_a_post_with_the_admin_header(tmp_path, backends, served) -> None:
    a, b = backends("A"), backends("B")
    path = write(tmp_path / "c.yaml", a.url)
    server = served(path)
    proxy_get(server, "/plain/page")
    assert call(server.admin_address, "POST", "/reload")[0] == 403  # no header: a browser cannot be made to
    assert call(server.admin_address, "GET", "/reload")[0] == 405
    status, body, _ = call(server.admin_address, "POST", f"/cache/purge?url=http://127.0.0.1:{server.addresses[0][1]}/plain/page",
                           {"X-Simpleproxy-Admin": "1"})
    assert status == 200 and json.loads(body)["purged"] == 1
    # The reload command finds the admin listener in the file, so the file names its real port.
    admin = f"{{listen: '127.0.0.1:{server.admin_address[1]}'}}"
    write(path, a.url, admin, extra="  - {path: /b, upstream: other}\n", other_url=b.url)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "simpleproxy", "reload", "--config", str(path)],
                          capture_output=True, text=True, env=env, timeout=LONG_TIMEOUT)
    assert done.returncode == 0 and done.stdout.strip() == "reloaded", done.stderr
    conn = http.client.HTTPConnection("127.0.0.1", server.addresses[0][1], timeout=SHORT_TIMEOUT)
    conn.request("GET", "/b")
    assert json.loads(conn.getresponse().read())["name"] == "B"
    conn.close()
    path.write_text(path.read_text().replace("upstream: other", "upstream: nothere"))
    refused = subprocess.run([sys.executable, "-m", "simpleproxy", "reload", "--config", str(path)],
                             capture_output=True, text=True, env=env, timeout=LONG_TIMEOUT)
    assert refused.returncode == 1 and "routes[1].upstream: no upstream named 'nothere'" in refused.stderr


def test_ready_turns_503_while_draining(tmp_path, backends, served) -> None:
    server = served(write(tmp_path / "c.yaml", backends().url))
    server._draining.set()  # what drain() sets first; the listeners stay for this check
    assert call(server.admin_address, "GET", "/ready")[:2] == (503, b"draining\n")
    server._draining.clear()


def test_status_json_shows_servers_routes_and_caches(tmp_path, backends, served) -> None:
    server = served(write(tmp_path / "c.yaml", backends().url))
    proxy_get(server, "/plain/x")
    status = json.loads(call(server.admin_address, "GET", "/status.json")[1])
    upstream = status["upstreams"][0]
    assert upstream["upstream"] == "app" and upstream["servers"][0]["up"] is True and upstream["servers"][0]["breaker"] == "closed"
    assert status["routes"][0]["statuses"] == {"200": 1} and status["caches"][0]["entries"] == 1


def test_panic_routing_shows_in_metrics_and_status(tmp_path, served) -> None:
    with socket.socket() as held:  # bound, never listening: refused
        held.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{held.getsockname()[1]}"
        path = tmp_path / "c.yaml"
        path.write_text("listen: {http: '127.0.0.1:0'}\nlog: {access: 'off'}\nadmin: {listen: '127.0.0.1:0'}\n"
                        f"upstreams: {{app: {{servers: ['{dead}'], passive: {{failures: 1}}}}}}\n"
                        "routes: [{upstream: app}]\n")
        server = served(path)
        assert [proxy_get(server, "/") for _ in range(3)] == [502, 502, 502]  # ejected, and still tried
        families = {f.name: f for f in text_string_to_metric_families(call(server.admin_address, "GET", "/metrics")[1].decode())}
        assert [(s.labels["upstream"], s.value) for s in families["simpleproxy_upstream_panic"].samples] == [("app", 1)]
        assert [s.value for s in families["simpleproxy_upstream_panic_requests"].samples if s.name.endswith("_total")] == [2]
        upstream = json.loads(call(server.admin_address, "GET", "/status.json")[1])["upstreams"][0]
        assert upstream["panic"] is True and upstream["panicked"] == 2 and upstream["servers"][0]["breaker"] == "open"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium; .ci/run installs it)")
def test_the_status_page_renders_server_health_in_a_headless_browser(tmp_path, backends, served) -> None:
    server = served(write(tmp_path / "c.yaml", backends().url, f"{{listen: '127.0.0.1:0', token: '{TOKEN}'}}"))
    proxy_get(server, "/x")
    url = f"http://127.0.0.1:{server.admin_address[1]}/#token={TOKEN}"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=5000",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    dom = done.stdout
    name = server.app.state.upstreams["app"].servers[0].name
    assert "<td>" + name + "</td>" in dom and '<td class="up">up</td>' in dom, dom[-2000:]
    assert "<td>healthy</td>" in dom and "200: 1" in dom
