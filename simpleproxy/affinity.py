"""Binding the proxy's process to one CPU (``server.cpu_affinity``), as nginx's ``worker_cpu_affinity`` does.

Why a proxy written in Python wants it: waitress's loop thread and its worker
threads hand every request to one another, and each of them lets go of the
GIL at every socket call. On one CPU a thread that lets go usually takes the
GIL straight back, because the thread it woke cannot run until it blocks. With
a second CPU free, the woken thread runs at once and takes the GIL, and the
first one, back from its short system call, has to wait: every hand-off
becomes a sleep and a wake-up across CPUs. Measured on a 2-core machine, the
same proxy served 2,600-3,300 requests a second unbound and 6,500-8,900 bound
(README, Performance). One Python process can run Python on one CPU at a time
anyway; more CPUs are for more processes, each bound to one of them.

``auto`` (the default) binds to the last CPU this process may run on, so that a
backend started on the same machine, unbound, keeps the first ones (the kernel
moves it away from a busy CPU), and does nothing when only one CPU is
allowed. A number binds to that CPU; ``none`` leaves the process where the
system puts it. Linux binds every thread of the process
(``sched_setaffinity``); Windows the process (``SetProcessAffinityMask``, CPU
numbers within the process's processor group); elsewhere (macOS has no
binding call) the setting is reported and has no effect.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from .errors import ConfigError

#: ``auto``, ``none`` or one CPU number
Setting = Union[str, int]


@dataclass(frozen=True)
class Binding:
    """What :func:`bind_process` decided: the CPU bound to (None: not bound) and why, for the log."""

    cpu: int | None
    reason: str
    #: the setting asked for something that could not be done (logged as a warning)
    failed: bool = False

    def describe(self) -> str:
        if self.cpu is not None:
            return f"bound to CPU {self.cpu} ({self.reason})"
        return f"not bound to a CPU: {self.reason}"


def describe_cpus(cpus: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``, as taskset and /proc write CPU lists."""
    parts: list[str] = []
    ordered = sorted(set(cpus))
    start = prev = None
    for cpu in ordered + [None]:  # type: ignore[list-item]
        if start is not None and cpu == prev + 1:  # type: ignore[operator]
            prev = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(parts)


def choose(setting: Setting, allowed: Sequence[int]) -> Binding:
    """The CPU ``setting`` names among ``allowed`` (the CPUs this process may use); pure.

    Raises ConfigError, naming the key, for a CPU outside ``allowed``.
    """
    if setting == "none":
        return Binding(None, "server.cpu_affinity is none")
    if isinstance(setting, int):
        if setting not in allowed:
            raise ConfigError(
                f"server.cpu_affinity: CPU {setting} is not one this process may run on ({describe_cpus(allowed)})"
            )
        if len(allowed) == 1:
            return Binding(None, f"already on CPU {setting} alone")
        return Binding(setting, f"server.cpu_affinity is {setting}")
    if len(allowed) <= 1:
        return Binding(None, "only one CPU to run on" if allowed else "no CPU list")
    cpu = max(allowed)
    return Binding(cpu, f"auto: the last of CPUs {describe_cpus(allowed)}")


def mask_cpus(mask: int) -> list[int]:
    """A Windows affinity mask -> the CPU numbers whose bits are set."""
    return [bit for bit in range(mask.bit_length()) if mask >> bit & 1]


def allowed_cpus() -> list[int] | None:
    """The CPUs this process may run on now; None where the platform cannot bind."""
    if sys.platform == "win32":
        process_mask, _ = _windows_masks()
        return mask_cpus(process_mask) if process_mask else None
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return None


def bind_process(setting: Setting) -> Binding:
    """Bind this process (every thread it has and will have) to the CPU ``setting`` chooses.

    Call it before the server starts its threads: on Linux new threads inherit
    the mask of the thread that starts them, and the ones already running are
    bound here one by one. Returns the decision for the caller to log; raises
    ConfigError as :func:`choose`.
    """
    allowed = allowed_cpus()
    if allowed is None:
        return Binding(None, f"server.cpu_affinity is not supported on {sys.platform}", failed=setting != "auto")
    binding = choose(setting, allowed)
    if binding.cpu is not None:
        try:
            _bind(binding.cpu)
        except OSError as exc:
            return Binding(None, f"binding to CPU {binding.cpu} failed: {exc}", failed=True)
    return binding


def _bind(cpu: int) -> None:
    if sys.platform == "win32":
        import ctypes

        kernel32 = _kernel32()
        if not kernel32.SetProcessAffinityMask(kernel32.GetCurrentProcess(), 1 << cpu):
            raise ctypes.WinError(ctypes.get_last_error())
        return
    # sched_setaffinity(0) binds the calling thread only: bind every thread there is.
    os.sched_setaffinity(0, {cpu})
    tasks = Path("/proc/self/task")
    if tasks.is_dir():
        for task in tasks.iterdir():
            try:
                os.sched_setaffinity(int(task.name), {cpu})
            except (ProcessLookupError, ValueError):  # a thread that ended meanwhile
                pass


def _kernel32():  # type: ignore[no-untyped-def]
    """kernel32 with the affinity calls' signatures (handles and masks are pointer-sized)."""
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.GetCurrentProcess.restype = ctypes.c_void_p
    kernel32.GetProcessAffinityMask.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t),
    ]
    kernel32.SetProcessAffinityMask.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return kernel32


def _windows_masks() -> tuple[int, int]:
    """(process mask, system mask) from GetProcessAffinityMask; (0, 0) if it fails."""
    import ctypes

    kernel32 = _kernel32()
    process, system = ctypes.c_size_t(0), ctypes.c_size_t(0)
    if not kernel32.GetProcessAffinityMask(kernel32.GetCurrentProcess(), ctypes.byref(process), ctypes.byref(system)):
        return 0, 0
    return process.value, system.value
