"""What users install: the sdist and wheel from ``python -m build``, and the PyInstaller executable.

Both build real artefacts from this checkout and run them from a clean
environment (no PYTHONPATH, no inherited variables, a working directory with
no configuration). They take about a minute together; ``.ci/run`` runs them;
skip them locally with ``-m "not packaging"``.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

import simpleproxy

from conftest import LONG_TIMEOUT

pytestmark = pytest.mark.packaging
CHECKOUT = Path(__file__).resolve().parents[2]
BIN = "Scripts" if sys.platform == "win32" else "bin"


def clean_env(tmp_path: Path) -> dict[str, str]:
    """Only what a fresh login has: no PYTHONPATH, no virtual environment, a home of its own."""
    env = {"PATH": os.defpath, "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    if sys.platform == "win32":
        env["SYSTEMROOT"] = os.environ.get("SYSTEMROOT", "")
    return env


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


def _frozen_installation_problem() -> str | None:
    """packaging/build.py freezes the installed simpleproxy: it must be a real install of this checkout."""
    try:
        distribution = importlib.metadata.distribution("simpleproxy")
    except importlib.metadata.PackageNotFoundError:
        return "simpleproxy is not installed (pip install '.[test]')"
    direct_url = json.loads(distribution.read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable"):
        return "an editable install cannot be frozen (pip install '.[test]' without -e)"
    return None


def test_the_wheel_installs_into_a_fresh_environment_and_checks_the_shipped_config(tmp_path) -> None:
    out = tmp_path / "dist"
    built = run([sys.executable, "-m", "build", "--outdir", str(out), str(CHECKOUT)])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"simpleproxy/conf/simpleproxy.yaml", "simpleproxy/admin/status.html"} <= set(names)
    assert any(name.endswith("conf/simpleproxy.yaml") for name in tarfile.open(sdist).getnames())

    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    python = venv / BIN / "python"
    installed = run([str(python), "-m", "pip", "install", "--quiet", str(wheel)])
    assert installed.returncode == 0, installed.stderr[-3000:]
    workdir = tmp_path / "work"
    workdir.mkdir()
    checked = run([str(venv / BIN / "simpleproxy"), "check"], cwd=workdir, env=clean_env(tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "configuration is valid" in checked.stdout and "site-packages" in checked.stdout
    version = run([str(python), "-m", "simpleproxy", "--version"], cwd=workdir, env=clean_env(tmp_path))
    assert version.stdout.strip() == f"simpleproxy {simpleproxy.__version__}"


@pytest.mark.skipif(sys.platform == "win32", reason="the Linux build; packaging/windows/ covers Windows")
def test_the_single_executable_serves_and_checks_from_a_clean_environment(tmp_path, backends) -> None:
    problem = _frozen_installation_problem()
    if problem:
        pytest.skip(problem)
    pytest.importorskip("PyInstaller", reason="pip install '.[test]' installs PyInstaller")
    dist = tmp_path / "dist"
    built = run([sys.executable, str(CHECKOUT / "packaging" / "build.py"), "--dist", str(dist)])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    binary = dist / "simpleproxy"
    print(f"\nexecutable: {binary.stat().st_size / 1024**2:.1f} MiB")  # quoted in the closing note (-s)

    # Copied elsewhere: nothing next to it, no Python on the PATH it could lean on.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    exe = workdir / "simpleproxy"
    exe.write_bytes(binary.read_bytes())
    exe.chmod(0o755)
    env = clean_env(tmp_path)

    version = run([str(exe), "--version"], cwd=workdir, env=env)
    assert version.stdout.strip() == f"simpleproxy {simpleproxy.__version__}"
    checked = run([str(exe), "check"], cwd=workdir, env=env)  # the shipped default, packed inside
    assert checked.returncode == 0 and "configuration is valid" in checked.stdout, checked.stdout + checked.stderr
    (workdir / "bad.yaml").write_text("routes:\n  - path: /api\n    upstream: apii\n")
    refused = run([str(exe), "check", "--config", "bad.yaml"], cwd=workdir, env=env)
    assert refused.returncode == 1 and "routes[0].upstream" in refused.stdout + refused.stderr

    backend = backends("frozen")
    (workdir / "proxy.yaml").write_text(yaml.safe_dump({
        "listen": {"http": "127.0.0.1:0"},
        "upstreams": {"app": {"servers": [{"url": backend.url}]}},
        "routes": [{"path": "/", "upstream": "app"}],
        "server": {"drain_time": "1s"},
    }))
    started = time.perf_counter()
    proc = subprocess.Popen([str(exe), "run", "--config", "proxy.yaml"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    listening = threading.Event()
    port: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match and not port:
                port.append(int(match.group(1)))
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(LONG_TIMEOUT), "".join(output)
        print(f"start-up to listening: {time.perf_counter() - started:.2f} s")
        conn = http.client.HTTPConnection("127.0.0.1", port[0], timeout=LONG_TIMEOUT)
        conn.request("GET", "/through/the/binary")
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        assert response.status == 200 and (answer["name"], answer["path"]) == ("frozen", "/through/the/binary")
    finally:
        proc.terminate()
        code = proc.wait(LONG_TIMEOUT)
        reader.join(LONG_TIMEOUT)  # to the end of its output, before the pipe is closed
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0, "".join(output)
