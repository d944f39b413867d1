"""Windows is part of the design though CI runs on Linux: POSIX-only calls must stay guarded.

Three checks, so that a regression fails here rather than on a user's Windows
machine: a scan of the package's syntax for POSIX-only names outside guarded
places; ``mypy --platform win32`` (which knows what the Windows stdlib lacks);
and the proxy imported and serving in a process whose POSIX-only names were
removed before anything imported them.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import simpleproxy
from simpleproxy import load_config
from simpleproxy.frontend import listeners

PACKAGE = Path(simpleproxy.__file__).parent
POSIX_MODULES = {"fcntl", "resource", "pwd", "grp", "termios", "tty", "pty", "posix", "syslog"}
#: removed in the serving test: all of them but ``posix``, which the stdlib itself imports on Linux
#: (where ``os.name`` stays "posix"); the scan still forbids importing it
REMOVED_MODULES = POSIX_MODULES - {"posix"}
POSIX_ATTRIBUTES = {
    "os": {"fork", "forkpty", "register_at_fork", "getuid", "geteuid", "getgid", "getegid", "setsid", "killpg",
           "getpgid", "setuid", "setgid", "chown", "wait3", "wait4", "sysconf", "getloadavg", "nice",
           "sched_setaffinity", "sched_getaffinity"},
    "signal": {"SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGCHLD", "SIGALRM", "SIGPIPE", "SIGKILL", "alarm",
               "setitimer", "pthread_kill", "pthread_sigmask", "sigwait"},
    "select": {"poll", "epoll", "kqueue"},
    "socket": {"AF_UNIX", "SO_REUSEPORT"},
}


_PLATFORM_TESTS = ("hasattr(", "sys.platform", "os.name", "getattr(")


def _returns_early(statements: list[ast.stmt], node: ast.AST) -> bool:
    """After ``if sys.platform == "win32": return`` (or raise) earlier in the same block."""
    for statement in statements:
        if statement is node:
            return False
        if (isinstance(statement, ast.If) and any(w in ast.unparse(statement.test) for w in _PLATFORM_TESTS)
                and isinstance(statement.body[-1], (ast.Return, ast.Raise))):
            return True
    return False


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside ``if hasattr(...)``/``if sys.platform ...``/``os.name``, after such an early return,
    or in a try that catches the absence."""
    while node in parents:
        parent = parents[node]
        if node in getattr(parent, "body", ()) and _returns_early(parent.body, node):  # type: ignore[attr-defined]
            return True
        if isinstance(parent, (ast.If, ast.IfExp)):
            test = ast.unparse(parent.test)
            if any(word in test for word in _PLATFORM_TESTS):
                return True
        if isinstance(parent, ast.Try) and node in parent.body:
            caught = " ".join(ast.unparse(h.type) for h in parent.handlers if h.type is not None)
            if any(name in caught for name in ("ImportError", "AttributeError", "ModuleNotFoundError")):
                return True
        node = parent
    return False


def posix_only_uses(source: str) -> list[str]:
    """``line: name`` for every POSIX-only module or attribute used outside a guard."""
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] in POSIX_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in POSIX_MODULES:
                names = [node.module]
            names += [f"{node.module}.{a.name}" for a in node.names if a.name in POSIX_ATTRIBUTES.get(node.module, ())]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in POSIX_ATTRIBUTES.get(node.value.id, ()):
                names = [f"{node.value.id}.{node.attr}"]
        found += [f"{node.lineno}: {name}" for name in names if not _guarded(node, parents)]
    return found


def test_the_scan_finds_unguarded_posix_calls_and_accepts_guarded_ones() -> None:
    assert posix_only_uses("import fcntl\nos.fork()\nsignal.signal(signal.SIGHUP, f)\n") == [
        "1: fcntl", "2: os.fork", "3: signal.SIGHUP",
    ]
    assert posix_only_uses(textwrap.dedent("""
        if hasattr(os, "fork"):
            os.fork()
        if sys.platform != "win32":
            import pwd
        try:
            import resource
        except ImportError:
            resource = None
        hup = getattr(signal, "SIGHUP", None)
        def limits():
            if sys.platform == "win32":
                return 0
            import resource
    """)) == []
    assert posix_only_uses("def f():\n    if x:\n        return 0\n    import resource\n") == ["4: resource"]


def test_no_unguarded_posix_only_calls_in_the_package() -> None:
    problems = [
        f"{path.relative_to(PACKAGE.parent)}:{use}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for use in posix_only_uses(path.read_text(encoding="utf-8"))
    ]
    assert problems == []


def test_mypy_for_windows_finds_nothing() -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extras")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--platform", "win32", "--ignore-missing-imports", "--no-incremental",
         "--cache-dir", os.devnull, str(PACKAGE)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Run in a fresh interpreter: the POSIX-only names go before anything imports them.
WITHOUT_POSIX = """
import os, select, signal, socket, sys
for module, names in {attributes!r}.items():
    for name in names:
        if hasattr(sys.modules[module], name):
            delattr(sys.modules[module], name)
for name in {modules!r}:
    sys.modules[name] = None  # "import fcntl" now raises ImportError, as on Windows
import http.client, pkgutil, importlib, threading
import simpleproxy
for info in pkgutil.walk_packages(simpleproxy.__path__, "simpleproxy."):
    importlib.import_module(info.name)
from simpleproxy.config import load_config
from simpleproxy.server import ProxyServer, install_reload_signal, install_stop_signals
server = ProxyServer(load_config(sys.argv[1]))
install_stop_signals(server, 1.0)
install_reload_signal(server)
thread = server.start()
host, port = server.addresses[0]
conn = http.client.HTTPConnection(host, port, timeout=10)
conn.request("GET", "/hello")
response = conn.getresponse()
print(response.status, response.read().decode())
conn.close()
server.stop()
"""


def test_the_proxy_imports_and_serves_without_posix_only_names(tmp_path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({
        "listen": {"http": "127.0.0.1:0"},
        "routes": [{"path": "/", "respond": {"status": 200, "body": "served without POSIX"}}],
        "log": {"access": "off"},
    }))
    code = WITHOUT_POSIX.format(attributes={k: sorted(v) for k, v in POSIX_ATTRIBUTES.items()},
                                modules=sorted(REMOVED_MODULES))
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    result = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "200 served without POSIX"


def test_a_config_with_windows_line_endings_reads_the_same(tmp_path) -> None:
    text = "listen:\n  http: 127.0.0.1:8080\nroutes:\n  - path: /\n    respond: {status: 200, body: hi}\n"
    unix, windows = tmp_path / "unix.yaml", tmp_path / "windows.yaml"
    unix.write_bytes(text.encode())
    windows.write_bytes(text.replace("\n", "\r\n").encode())
    assert replace(load_config(windows), source="") == replace(load_config(unix), source="")


class RecordingSocket:
    """Stands in for a socket to see which options are set, and in what order, on Windows."""

    def __init__(self, family: int, kind: int) -> None:
        self.calls: list[tuple] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.calls.append(("setsockopt", option))

    def bind(self, address: tuple) -> None:
        self.calls.append(("bind", address))

    def listen(self, backlog: int) -> None:
        self.calls.append(("listen", backlog))

    def close(self) -> None:
        self.calls.append(("close",))


def test_on_windows_a_listener_is_bound_exclusively_and_never_reusable(monkeypatch) -> None:
    made: list[RecordingSocket] = []
    monkeypatch.setattr(socket, "SO_EXCLUSIVEADDRUSE", -5, raising=False)  # as on Windows,
    monkeypatch.setattr(listeners, "NOTSENT_LOWAT", None)  # which has no bound on unsent bytes
    monkeypatch.setattr(socket, "socket", lambda family, kind: made.append(RecordingSocket(family, kind)) or made[-1])
    listeners.bind_listener(socket.AF_INET, ("127.0.0.1", 8080), 128)
    assert made[0].calls == [("setsockopt", -5), ("bind", ("127.0.0.1", 8080)), ("listen", 128)]


@pytest.mark.skipif(hasattr(socket, "SO_EXCLUSIVEADDRUSE"), reason="POSIX behaviour")
def test_a_second_listener_on_the_same_port_is_refused() -> None:
    (first,) = listeners.bind_all([("127.0.0.1", 0)], 16)
    try:
        with pytest.raises(OSError):
            listeners.bind_all([("127.0.0.1", first.getsockname()[1])], 16)
    finally:
        first.close()



def test_a_kernel_that_refuses_the_unsent_bound_still_gets_a_listener(monkeypatch) -> None:
    """WSL 1 and some sandboxes define TCP_NOTSENT_LOWAT but refuse it: the proxy starts unbounded."""
    monkeypatch.setattr(listeners, "NOTSENT_LOWAT", 0x7FFF)  # an option number no kernel knows
    (sock,) = listeners.bind_all([("127.0.0.1", 0)], 16)
    try:
        assert sock.getsockname()[1]
    finally:
        sock.close()
