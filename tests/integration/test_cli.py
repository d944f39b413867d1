"""The command line, run as a user runs it: a separate process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT

import simpleproxy

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "simpleproxy", *args], capture_output=True, text=True,
        timeout=LONG_TIMEOUT, cwd=cwd, env=env,
    )


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"simpleproxy {simpleproxy.__version__}"


def test_check_prints_the_routes_it_understood(tmp_path: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text(
        "upstreams:\n  api:\n    servers:\n      - url: http://127.0.0.1:9001\n      - url: http://127.0.0.1:9002\n"
        "routes:\n  - host: app.example.com\n    path: /api\n    upstream: api\n    strip_prefix: true\n"
    )
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
    assert re.search(r"routes\[0\] +app\.example\.com +/api +-> upstream api \(round robin: "
                     r"http://127\.0\.0\.1:9001, http://127\.0\.0\.1:9002\)  \[strip_prefix\]", result.stdout)


def test_check_prints_every_listener_and_warns_of_certificates_about_to_expire(tmp_path: Path) -> None:
    import datetime

    import trustme

    ca = trustme.CA()
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10, hours=1)
    for stem, leaf in (("long", ca.issue_cert("app.example.com", "www.example.com")),
                       ("soon", ca.issue_cert("old.example.com", not_after=soon))):
        leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / f"{stem}.pem"))
    config = tmp_path / "tls.yaml"
    config.write_text(
        f"listen:\n  http: 127.0.0.1:8080\n  https:\n    address: 127.0.0.1:8443\n    certificates:\n"
        f"      - {{cert: '{tmp_path / 'long.pem'}'}}\n      - {{cert: '{tmp_path / 'soon.pem'}'}}\n"
        "admin: {listen: '127.0.0.1:9901'}\nroutes: [{respond: {}}]\n"
    )
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "listen: http://127.0.0.1:8080" in lines
    assert "listen.https: https://127.0.0.1:8443 (TLS 1.2+, client certificates off)" in lines
    assert re.search(r"^  certificates\[0\] .*long\.pem: app\.example\.com, www\.example\.com; expires \d{4}-\d\d-\d\d, the default$",
                     result.stdout, re.M)
    assert f"  certificates[1] {tmp_path / 'soon.pem'}: old.example.com; expires {soon:%Y-%m-%d}" in lines
    assert "admin.listen: http://127.0.0.1:9901 (loopback clients only)" in lines
    assert result.stderr.strip() == f"warning: listen.https.certificates[1]: {tmp_path / 'soon.pem'} expires in 10 days"


def test_check_names_every_error_by_key_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "upstreams:\n  api:\n    servers: [http://127.0.0.1:9001]\n"
        "routes:\n  - path: /api\n    upstream: apii\n  - path: /x\n    upstream: api\n    strip: true\n"
    )
    result = cli("check", "--config", str(config))
    assert result.returncode == 1
    assert "routes[0].upstream: no upstream named 'apii' (did you mean 'api'?)" in result.stderr
    assert "routes[1].strip: unknown key (did you mean 'strip_prefix'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_config_the_local_file_then_the_shipped_default_is_used(tmp_path: Path) -> None:
    result = cli("check", cwd=tmp_path)
    assert result.returncode == 0 and "conf" in result.stdout and "/app" in result.stdout
    (tmp_path / "simpleproxy.yaml").write_text("routes:\n  - path: /local\n    respond: {body: hi}\n")
    result = cli("check", cwd=tmp_path)
    assert result.returncode == 0 and "/local" in result.stdout


def test_run_serves_and_stops_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("listen: {http: '127.0.0.1:0'}\nroutes:\n  - respond: {body: up}\nlog: {access: off}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "simpleproxy", "run", "--config", str(config)],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stderr.readline()  # the "listening on" line, once the socket is bound
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert port, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/", timeout=SHORT_TIMEOUT) as response:
            assert response.read() == b"up"
        if sys.platform == "win32":
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # pragma: no cover
        else:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=LONG_TIMEOUT) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        proc.kill()
        proc.stderr.close()


def test_run_with_a_bad_config_exits_1_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("listen: {http: 'nowhere'}\nroutes: []\n")
    result = cli("run", "--config", str(config))
    assert result.returncode == 1 and "listen.http[0]:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("key", "listeners"), [
    ("listen.http", "listen: {{http: '127.0.0.1:{busy}'}}\n"),
    ("admin.listen", "listen: {{http: '127.0.0.1:0'}}\nadmin: {{listen: '127.0.0.1:{busy}'}}\n"),
    ("listen.https.address", "listen: {{http: '127.0.0.1:0', https: {{address: '127.0.0.1:{busy}', "
                             "certificates: [{{cert: '{cert}', key: '{key}'}}]}}}}\n"),
])
def test_run_on_a_busy_port_names_the_listener_that_failed(tmp_path: Path, key: str, listeners: str) -> None:
    import socket

    import trustme

    leaf = trustme.CA().issue_cert("localhost")
    cert, pem_key = tmp_path / "c.pem", tmp_path / "c.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(pem_key))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "busy.yaml"
        config.write_text(listeners.format(busy=port, cert=cert, key=pem_key) + "routes:\n  - respond: {}\n")
        result = cli("run", "--config", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {key}: cannot listen on 127.0.0.1:{port}: " in result.stderr, result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGINT to stop the demo")
def test_demo_shows_host_path_routing_and_round_robin() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "simpleproxy", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert "simpleproxy demo" in proc.stdout.readline()
        while "listening on" not in proc.stderr.readline():
            assert proc.poll() is None
        base = f"http://127.0.0.1:{port}"

        def get(path: str, host: str | None = None) -> str:
            request = urllib.request.Request(base + path, headers={"Host": host} if host else {})
            with urllib.request.urlopen(request, timeout=SHORT_TIMEOUT) as response:
                return response.read().decode()

        first, second = get("/"), get("/")
        assert {first.split()[1], second.split()[1]} == {"A", "B"}
        assert get("/b/hello").startswith("backend B answered\n  GET /hello")
        assert get("/x", host="a.localhost").startswith("backend A")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=LONG_TIMEOUT) == 0
    finally:
        proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def test_route_explains_a_request_and_exits_by_outcome(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("upstreams: {app: {servers: ['http://127.0.0.1:9']}}\nroutes: [{path: /api, upstream: app}]\n")
    done = cli("route", "--config", str(config), "http://x/api/a", "-X", "DELETE", "-H", "Cookie: a=b")
    assert done.returncode == 0 and "route     routes[0]" in done.stdout and "forwarded DELETE /api/a" in done.stdout
    missing = cli("route", "--config", str(config), "http://x/other")
    assert missing.returncode == 3 and "404 Not Found" in missing.stdout
    assert cli("route", "--config", str(config), "http://x/", "-H", "nocolon").returncode == 2
