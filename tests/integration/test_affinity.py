"""`simpleproxy run` binds its process to one CPU (server.cpu_affinity), every thread of it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT
from simpleproxy.affinity import describe_cpus

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

pytestmark = pytest.mark.skipif(len(ALLOWED) < 2 or not Path("/proc/self/task").is_dir(),
                                reason="needs Linux and two CPUs to choose from")


def run(tmp_path: Path, affinity: str) -> tuple[subprocess.Popen, list[str]]:
    """``simpleproxy run`` with ``server.cpu_affinity: affinity``; -> (the process, what it logged until it listened)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "c.yaml"
    config.write_text(f"listen: {{http: '127.0.0.1:{port}'}}\nserver: {{cpu_affinity: {affinity}, threads: 4}}\n"
                      "routes: [{respond: {status: 200}}]\nlog: {access: 'off'}\n")
    proc = subprocess.Popen([sys.executable, "-m", "simpleproxy", "run", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    said = []
    for line in proc.stderr:  # type: ignore[union-attr]
        said.append(line)
        if "listening on" in line:
            said.append(proc.stderr.readline())  # type: ignore[union-attr]  # then what it did about CPUs
            break
    return proc, said


def thread_cpus(pid: int) -> set[str]:
    """The CPU list each thread of ``pid`` may run on (as /proc writes it), all of them."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split(":", 1)[1].strip())
    return lists


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(LONG_TIMEOUT)
    proc.stderr.close()  # type: ignore[union-attr]


def test_auto_binds_every_thread_to_the_last_cpu(tmp_path) -> None:
    proc, said = run(tmp_path, "auto")
    try:
        assert f"INFO simpleproxy: bound to CPU {ALLOWED[-1]} (auto: the last of CPUs {describe_cpus(ALLOWED)})" in said[-1]
        assert len(list(Path(f"/proc/{proc.pid}/task").iterdir())) >= 5  # the loop and 4 workers
        assert thread_cpus(proc.pid) == {str(ALLOWED[-1])}
    finally:
        stop(proc)


def test_a_number_binds_to_that_cpu_and_none_to_nothing(tmp_path) -> None:
    proc, said = run(tmp_path, str(ALLOWED[0]))
    try:
        assert thread_cpus(proc.pid) == {str(ALLOWED[0])}
    finally:
        stop(proc)
    proc, said = run(tmp_path, "none")
    try:
        assert "INFO simpleproxy: not bound to a CPU: server.cpu_affinity is none" in said[-1]
        assert thread_cpus(proc.pid) == {describe_cpus(ALLOWED)}
    finally:
        stop(proc)


def test_a_cpu_the_process_may_not_use_is_a_clear_error(tmp_path) -> None:
    missing = max(ALLOWED) + 1
    proc, said = run(tmp_path, str(missing))
    try:
        assert proc.wait(LONG_TIMEOUT) == 1
        assert f"server.cpu_affinity: CPU {missing} is not one this process may run on ({describe_cpus(ALLOWED)})" in "".join(said)
    finally:
        stop(proc)
