"""simpleproxy inside someone else's WSGI server: gunicorn, uWSGI, mod_wsgi, waitress-serve.

- ``simpleproxy.wsgi:application`` for servers that import an application
  (``gunicorn simpleproxy.wsgi:application``); it is built on first access from
  the file named by ``SIMPLEPROXY_CONFIG`` (else ``./simpleproxy.yaml``, else
  the shipped default, as ``simpleproxy run`` chooses), so importing this module
  costs nothing and a bad file fails the worker's start with the key named.
- ``simpleproxy.wsgi:make_application`` for servers that call a factory
  (``waitress-serve --call simpleproxy.wsgi:make_application``).
- ``paste_app_factory`` for PasteDeploy (``use = egg:simpleproxy``).
- :class:`ProxyMiddleware` to put the proxy in front of an existing WSGI app.

Under a host server the host owns the sockets: the ``listen``, ``server`` and
``admin`` sections do not apply (their listeners are the host's to make), and
only ``simpleproxy run`` serves TLS and the strict request parser. Everything
per request (routes, filters, cache, limits, upstreams) is the same. Background
threads (health checks, the access-log flusher) start on a worker's first
request, so pre-forking servers give each worker its own.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from .app import ProxyApp
from .config import Config, load_config
from .observe.accesslog import flush_all

log = logging.getLogger("simpleproxy")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_lock = threading.Lock()
_application: ProxyApp | None = None


def _config_path() -> Path:
    from .cli import default_config_path

    named = os.environ.get("SIMPLEPROXY_CONFIG")
    return Path(named) if named else default_config_path()


def _flush_logs_before_sigterm() -> None:
    """Under a host that leaves SIGTERM to its default (``waitress-serve``), the process would die on
    it without running atexit, and the access-log lines still queued would be lost: flush them,
    then let SIGTERM do what it did. Hosts with a handler of their own (gunicorn) exit through
    atexit, which flushes too; the handler is only installed from the main thread (the only one
    that may), and not on Windows, where SIGTERM is never delivered."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def flush_then_terminate(signum: int, frame: Any) -> None:
        flush_all()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, flush_then_terminate)


def _load(config: Config | str | Path) -> Config:
    _flush_logs_before_sigterm()
    loaded = config if isinstance(config, Config) else load_config(config)
    ignored = [name for name, set_ in (
        ("listen.https", loaded.https is not None), ("admin.listen", loaded.admin.listen is not None),
    ) if set_]
    if ignored:
        log.warning("under a WSGI server, %s is not served (the host server owns the sockets)", ", ".join(ignored))
    return loaded


def make_application() -> ProxyApp:
    """A new proxy app from ``SIMPLEPROXY_CONFIG`` (or the default file): a factory for servers that call one."""
    return ProxyApp(_load(_config_path()))


def __getattr__(name: str) -> Any:
    """``application``, made once per process on first access (PEP 562)."""
    global _application
    if name != "application":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:
        if _application is None:
            _application = make_application()
        return _application


def paste_app_factory(global_config: dict[str, Any], config: str | None = None, **settings: Any) -> ProxyApp:
    """PasteDeploy's ``paste.app_factory``: ``[app:main] use = egg:simpleproxy`` and ``config = FILE``.

    A relative ``config`` is read from the directory of the ``.ini`` file, as
    PasteDeploy's own ``%(here)s`` would.
    """
    if settings:
        raise TypeError(f"unknown simpleproxy settings in the [app] section: {', '.join(sorted(settings))}")
    if config is None:
        return make_application()
    path = Path(config)
    if not path.is_absolute() and global_config.get("here"):
        path = Path(global_config["here"]) / path
    return ProxyApp(_load(path))


class ProxyMiddleware:
    """Proxies the requests its routes match and passes every other request to ``app``.

    ``ProxyMiddleware(flask_app.wsgi_app, "proxy.yaml")`` hands ``/api`` to
    another service while the Flask app keeps the rest. A request the proxy
    cannot parse (a bad Host, an unsafe target) is answered 400 by the proxy
    rather than handed on. Give the configuration no catch-all route (``path: /``
    on every host), or the wrapped app is never reached.
    """

    def __init__(self, app: WSGIApp, config: Config | str | Path) -> None:
        self.app = app
        self.proxy = ProxyApp(_load(config))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.proxy.claims(environ):
            return self.proxy(environ, start_response)
        return self.app(environ, start_response)

    def close(self) -> None:
        """Close the proxy's upstream pools (the wrapped app is its owner's to close)."""
        self.proxy.close()
