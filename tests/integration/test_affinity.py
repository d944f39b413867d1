"""`simpleproxy run` binds its process to one CPU (server.cpu_affinity), every thread of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT
from simpleproxy.affinity import describe_cpus

ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

pytestmark = pytest.mark.skipif(len(ALLOWED) < 2 or not Path("/proc/self/task").is_dir(),
                                reason="needs Linux and two CPUs to choose from")


def config(affinity: str) -> str:
    return f"server: {{cpu_affinity: {affinity}, threads: 4}}\nroutes: [{{respond: {{status: 200}}}}]\nlog: {{access: 'off'}}\n"


def thread_cpus(pid: int) -> set[str]:
    """The CPU list each thread of ``pid`` may run on (as /proc writes it), all of them."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split(":", 1)[1].strip())
    return lists


def test_auto_binds_every_thread_to_the_last_cpu(run_process) -> None:
    proxy = run_process(config("auto"))
    assert f"INFO simpleproxy: bound to CPU {ALLOWED[-1]} (auto: the last of CPUs {describe_cpus(ALLOWED)})" in proxy.said[-1]
    assert len(list(Path(f"/proc/{proxy.proc.pid}/task").iterdir())) >= 5  # the loop and 4 workers
    assert thread_cpus(proxy.proc.pid) == {str(ALLOWED[-1])}


def test_a_number_binds_to_that_cpu_and_none_to_nothing(run_process) -> None:
    assert thread_cpus(run_process(config(str(ALLOWED[0]))).proc.pid) == {str(ALLOWED[0])}
    unbound = run_process(config("none"))
    assert "INFO simpleproxy: not bound to a CPU: server.cpu_affinity is none" in unbound.said[-1]
    assert thread_cpus(unbound.proc.pid) == {describe_cpus(ALLOWED)}


def test_a_cpu_the_process_may_not_use_is_a_clear_error(run_process) -> None:
    missing = max(ALLOWED) + 1
    proxy = run_process(config(str(missing)))
    assert proxy.proc.wait(LONG_TIMEOUT) == 1 and not proxy.started
    assert f"server.cpu_affinity: CPU {missing} is not one this process may run on ({describe_cpus(ALLOWED)})" in "".join(proxy.said)
