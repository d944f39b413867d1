"""Reloading the configuration while serving: nothing dropped, nothing half-applied."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT, SHORT_TIMEOUT
from simpleproxy.config import load_config
from simpleproxy.server import ProxyServer

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, a_url: str, b_url: str, extra_route: str = "", cache: bool = False) -> None:
    path.write_text(
        "listen: {http: '127.0.0.1:0'}\nlog: {access: 'off'}\n"
        f"upstreams:\n  a: {{servers: ['{a_url}']}}\n  b: {{servers: ['{b_url}']}}\n"
        f"routes:\n  - {{path: /, upstream: a{', cache: {default_ttl: 1h}' if cache else ''}}}\n{extra_route}"
    )


@pytest.fixture
def served(tmp_path):
    servers = []

    def start(path: Path) -> ProxyServer:
        server = ProxyServer(load_config(path), config_path=str(path))
        thread = server.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.stop()
        thread.join(SHORT_TIMEOUT)


def get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=LONG_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if response.status == 200 and body.startswith(b"{") else {}
    finally:
        conn.close()


def test_a_reload_under_load_drops_nothing_and_the_new_route_is_live(tmp_path, backends, served) -> None:
    a, b = backends("A"), backends("B")
    config = tmp_path / "proxy.yaml"
    write(config, a.url, b.url)
    server = served(config)
    port = server.addresses[0][1]
    stop, failures, done = threading.Event(), [], []

    def client() -> None:
        for _ in range(5000):  # bounded; the test stops it much sooner
            if stop.is_set():
                return
            status, body = get(port, "/steady")
            if status != 200 or body.get("name") != "A":
                failures.append(status)
            done.append(1)

    thread = threading.Thread(target=client)
    thread.start()
    assert get(port, "/new/x")[1]["name"] == "A"  # before: the catch-all route
    write(config, a.url, b.url, "  - {path: /new, upstream: b}\n")
    assert server.reload() == []
    before = len(done)
    assert get(port, "/new/x")[1]["name"] == "B"  # after: the new route
    while len(done) < before + 20 and thread.is_alive():  # a few more requests through the new state
        get(port, "/new/x")
    stop.set()
    thread.join(LONG_TIMEOUT)
    assert failures == [] and len(done) > before


def test_an_invalid_reload_keeps_the_running_configuration(tmp_path, backends, served, caplog) -> None:
    a, b = backends("A"), backends("B")
    config = tmp_path / "proxy.yaml"
    write(config, a.url, b.url)
    server = served(config)
    config.write_text(config.read_text().replace("upstream: a", "upstream: aa"))
    problems = server.reload()
    assert problems == ["routes[0].upstream: no upstream named 'aa' (did you mean 'a'?)"]
    assert "reload refused" in caplog.text and "routes[0].upstream" in caplog.text
    assert get(server.addresses[0][1], "/")[1]["name"] == "A"


def test_stored_responses_and_upstream_pools_survive_a_reload(tmp_path, backends, served) -> None:
    a, b = backends("A"), backends("B")
    config = tmp_path / "proxy.yaml"
    write(config, a.url, b.url, cache=True)
    server = served(config)
    port = server.addresses[0][1]
    get(port, "/plain/page")
    pool_before = server.app.state.upstreams["a"]
    write(config, a.url, b.url, "  - {path: /other, upstream: b}\n", cache=True)
    assert server.reload() == []
    assert server.app.state.upstreams["a"] is pool_before
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SHORT_TIMEOUT)
    conn.request("GET", "/plain/page")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.getheader("Cache-Status").startswith("simpleproxy; hit")
    assert [path for _, path in a.seen.queue] == ["/plain/page"]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX: SIGHUP")
def test_sighup_reloads_the_file(tmp_path, backends) -> None:
    a, b = backends("A"), backends("B")
    config = tmp_path / "proxy.yaml"
    write(config, a.url, b.url)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "simpleproxy", "run", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = 0
        for line in proc.stderr:  # type: ignore[union-attr]
            if "listening on http://" in line:
                port = int(line.split("listening on http://127.0.0.1:")[1].split()[0])
                break
        write(config, a.url, b.url, "  - {path: /new, upstream: b}\n")
        proc.send_signal(signal.SIGHUP)
        for line in proc.stderr:  # type: ignore[union-attr]
            if "configuration reloaded" in line:
                break
        assert get(port, "/new")[1]["name"] == "B"
    finally:
        proc.terminate()
        proc.wait(LONG_TIMEOUT)
        proc.stderr.close()  # type: ignore[union-attr]


def test_watch_config_reloads_when_the_file_changes(tmp_path, backends, served, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO)
    a, b = backends("A"), backends("B")
    config = tmp_path / "proxy.yaml"
    write(config, a.url, b.url)
    config.write_text(config.read_text() + "server: {watch_config: true}\n")
    server = served(config)
    reloaded = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "configuration reloaded" in record.getMessage():
                reloaded.set()

    handler = Seen()
    logging.getLogger("simpleproxy").addHandler(handler)
    try:
        write(config, a.url, b.url, "  - {path: /new, upstream: b}\n")
        config.write_text(config.read_text() + "server: {watch_config: true}\n")
        assert reloaded.wait(LONG_TIMEOUT)
        assert get(server.addresses[0][1], "/new")[1]["name"] == "B"
    finally:
        logging.getLogger("simpleproxy").removeHandler(handler)


def test_rate_limit_buckets_and_bans_survive_a_reload(tmp_path, backends, served) -> None:
    a, b = backends("A"), backends("B")
    config = tmp_path / "proxy.yaml"

    def write_limited(extra: str = "") -> None:
        write(config, a.url, b.url, "  - {path: /limited, upstream: a, rate_limit: {rate: 1/h, burst: 1}}\n" + extra)
        config.write_text(config.read_text() + "bots: {ban: {after: 100}}\n")

    write_limited()
    server = served(config)
    port = server.addresses[0][1]
    assert get(port, "/limited")[0] == 200
    bans = server.app.state.bots.bans
    write_limited("  - {path: /other, upstream: b}\n")  # another route: a new state, the same limit
    assert server.reload() == []
    assert get(port, "/limited")[0] == 429  # the bucket is the one it had
    assert server.app.state.bots.bans is bans
